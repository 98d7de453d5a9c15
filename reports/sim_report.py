"""The report `bitlut sim` prints: a table per phase (decode, prefill) with a line per layer, the
phase's totals, and the check against PyTorch; and the rows of its roofline figure.

Every percentage says what it is a fraction of: the roofline column is the roofline's cycles
over the simulated cycles, utilization and stalls are cycles of a unit over the layer's (or the
phase's) cycles, since each unit's cycles are busy + stalled + idle = the run's cycles. The stall
classes are `sim.cycle.STALL_CLASSES`, written out by `sim.cycle.stall_words`.
"""

from arch import kv, roofline
from quant.model_shape import role_of
from sim.cycle import stall_words
from sim.driver import phase_label

CAPTION = ("roofline: the roofline's cycles / simulated cycles; util: cycles the PE array "
           "computes / the layer's cycles; top stall: the unit stall with the most cycles, "
           "% of the layer's cycles (README: stall classes)")


def stall_ranking(stalls, cycles):
    """[(words, fraction of `cycles`)] of `stalls` {"unit:class": cycles}, the largest first."""
    ranked = sorted(stalls.items(), key=lambda kv: -kv[1])
    return [(stall_words(*key.split(":", 1)), v / cycles if cycles else 0.0)
            for key, v in ranked]


def layer_stalls(row):
    """{"unit:class": cycles} of one layer's report."""
    return {f"{u}:{c}": v for u, d in row["units"].items() for c, v in d["stalls"].items()}


def print_report(report, cfg, console=None):
    from rich.console import Console
    from rich.table import Table
    console = console or Console(width=160)
    console.print(f"[bold]bitlut sim[/bold] {report['source']} on {cfg.tag} "
                  f"({cfg.pe.kind} {cfg.pe.rows}x{cfg.pe.cols} @ {cfg.clock_mhz:g} MHz, "
                  f"DRAM {cfg.dram.gbps:g} GB/s)")
    for phase in report["phases"]:
        m = phase["tokens"]
        t = Table(title=f"{phase_label(m)}: {m} token{'s' if m > 1 else ''}",
                  title_justify="left", caption=CAPTION, caption_justify="left")
        for col in ("layer", "N x K", "bits/w", "tile", "cycles", "latency", "roofline",
                    "bound", "util", "top stall (% of cycles)", "energy/tok", "check"):
            t.add_column(col, justify="left" if col in ("layer", "bound") or "stall" in col
                         else "right")
        for r in phase["layers"]:
            ranked = stall_ranking(layer_stalls(r), r["cycles"])
            top = f"{ranked[0][0]}, {ranked[0][1]:.0%}" if ranked else "-"
            ck = r.get("check")
            check = "-" if ck is None else (
                f"ok {ck['rel_fro_err']:.1e}" if ck["passed"] else "[red]MISMATCH[/red]")
            t.add_row(r.get("label", r["name"]) + (" *" if r["sampled"] else ""),
                      f"{r['shape'][0]}x{r['shape'][1]}", f"{r['bits_per_weight']:.2f}",
                      f"{r['tiling']['mr']}x{r['tiling']['nw']}", f"{r['cycles']:,}",
                      _time(r["latency_s"]), f"{r['roofline_fraction']:.0%}",
                      r["roofline_bound"], f"{r['utilization']:.0%}", top,
                      f"{r['energy_j'] / m * 1e6:.1f} uJ", check)
        tot = phase["total"]
        console.print(t)
        stall = "; ".join(f"{words}, {frac:.0%}" for words, frac in
                          stall_ranking(tot["stalls"], tot["cycles"])[:3]) or "none"
        console.print(
            f"  total {tot['cycles']:,} cycles = {_time(tot['latency_s'])}, "
            f"{tot['tokens_per_s']:,.1f} tokens/s, {tot['roofline_fraction']:.0%} of roofline, "
            f"PE utilization {tot['utilization']:.0%}\n"
            f"  energy {tot['energy_j_per_token'] * 1e3:.3f} mJ/token, "
            f"DRAM {tot['bytes_per_token'] / 2**20:.1f} MiB/token\n"
            f"  top stalls, % of the phase's cycles: {stall}")
        if "scope" in report:
            from sim.scope import describe
            console.print(describe(report["scope"], phase.get("model")), highlight=False)
        ck = phase["check"]
        if ck:
            verdict = "[green]match[/green]" if ck["passed"] else "[red]MISMATCH[/red]"
            console.print(f"  outputs vs PyTorch: {verdict}: bit-exact against the golden model "
                          f"and within the bound that int8 activations imply (relative error "
                          f"{ck['rel_fro_err']:.1e} overall, largest element "
                          f"{ck['max_rel_err']:.1e} of max |y|)")
        if any(r["sampled"] for r in phase["layers"]):
            console.print("  * sampled: one and two output tiles simulated, the rest extrapolated "
                          "(--full simulates every block)")


def _time(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def roofline_rows(report, cfg):
    """The rows of `reports.roofline_plot.plot` for every layer of every phase of a `bitlut sim`
    report, and the measured {name@tokens: MACs/cycle} of the simulation. A report with the
    whole model (`model`, `sim.block_driver.simulate_model`) adds its attention in each of the
    model's phases, named with its KV format: the model's other operators are the layers
    already there (qkv, o_proj, mlp) or vector work without MACs (norms, RoPE, the residual)."""
    rows, measured = [], {}
    for phase in report["phases"]:
        for r in phase["layers"]:
            n, k = r["shape"]
            m = r["tokens"]
            ops = m * n * k
            rows.append({"name": r["name"], "tokens": m,
                         "intensity": ops / r["roofline_bytes"],
                         "peak": roofline.peak_macs_per_cycle(cfg, r["kind"], r["mean_bits"]),
                         "attainable": ops / r["roofline_cycles"]})
            measured[f"{r['name']}@{m}"] = ops / r["cycles"]
    if report.get("model"):
        _attention_rows(report, cfg, rows, measured)
    return rows, measured


def _attention_rows(report, cfg, rows, measured):
    """The model's attention, per phase: its closed-form bound (`arch.roofline.attention_bound_of`,
    from q_proj's width and the report's KV bytes per token) and its simulated cycles."""
    from reports.roofline_plot import attention_row  # matplotlib: only for the figure
    model = report["model"]
    q_dim = next((r["shape"][0] for r in report["phases"][0]["layers"]
                  if (role_of(r["name"]) or (None, None))[1] == "q_proj"), None)
    if q_dim is None:
        return
    fmt = kv.KVFormat(model["kv"])
    name = roofline.attention_name(fmt)
    for ph in model["phases"]:
        m = ph["tokens"]
        if ph.get("batch", 1) > 1:          # sequences of their own: not one causal block
            continue
        b = roofline.attention_bound_of(cfg, q_dim, model["kv_bytes_per_token_per_block"],
                                        ph["past"], fmt, m)
        rows.append(attention_row(cfg, fmt, b, m))
        op = next(o for o in ph["ops"] if o["name"] == "attention")
        if op["cycles"]:
            measured[f"{name}@{m}"] = b.ops / op["cycles"]


MODEL_CAPTION = ("cycles: what the operator adds to the block's time (decode: simulated as one "
                 "program; prefill: operators timed apart and summed); bound: the DRAM port or "
                 "the busiest unit over the operator's instructions; top stall: the largest unit "
                 "stall, % of the operator's span (its first dispatch to its last end, which "
                 "overlaps its neighbours')")


def print_model(model, cfg, console=None):
    """The whole model's section of `bitlut sim` (`sim.block_driver.simulate_model`)."""
    from rich.console import Console
    from rich.table import Table
    console = console or Console(width=160)
    console.print(f"[bold]model[/bold]: {model['shape']}; KV cache {model['kv']} "
                  f"({model['kv_bytes_per_token_per_block']:,} bytes per token per block); "
                  f"{model['method']} (x {model['blocks']})", highlight=False)
    for ph in model["phases"]:
        m = ph["tokens"]
        decode = ph.get("phase", "decode" if m == 1 else "prefill") == "decode"
        batch = f" for each of {m} sequences" if decode and m > 1 else ""
        what = (f"decode: 1 token{batch} after {ph['past']:,} cached" if decode else
                f"prefill: {m:,} tokens, causal, from an empty cache")
        t = Table(title=f"{what}, per block", title_justify="left", caption=MODEL_CAPTION,
                  caption_justify="left")
        for col in ("operator", "cycles", "share", "bound", "top stall (% of cycles)",
                    "DRAM weights", "KV", "activations"):
            t.add_column(col, justify="left" if col in ("operator", "bound") or "stall" in col
                         else "right")
        for o in ph["ops"]:
            st = o.get("stall")
            span = o.get("span") or o["cycles"]
            top = "-" if not st or not span else \
                f"{stall_words(*st[0].split(':', 1))}, {st[1] / span:.0%}"
            t.add_row(o["name"], f"{o['cycles']:,.0f}", f"{o['cycles'] / ph['cycles']:.1%}",
                      o["bound"], top, *(_bytes(o["dram"][k]) for k in
                                         ("weights", "kv", "activations")))
        lm = ph["lm_head"]
        t.add_row("block", f"{ph['cycles']:,.0f}", "100%", "", "",
                  *(_bytes(sum(o["dram"][k] for o in ph["ops"]))
                    for k in ("weights", "kv", "activations")))
        t.add_row(f"lm_head ({lm['weights']}, once)", f"{lm['cycles']:,.0f}", "",
                  lm["bound"], "", _bytes(lm["dram"]["weights"]), "", "")
        console.print(t)
        tot = ph["model"]
        per = tot["dram_bytes_per_token"]
        bound_tps = tot["tokens_per_s"] / tot["dram_bound_fraction"] if \
            tot["dram_bound_fraction"] else 0.0
        head = (f"  decode at a {ph['past']:,}-token context{batch}: "
                f"{tot['tokens_per_s']:,.2f} tokens/s" if decode else
                f"  prefill of {m:,} tokens: time to first token {_time(tot['latency_s'])}, "
                f"{tot['tokens_per_s']:,.1f} tokens/s")
        console.print(
            f"{head} ({tot['dram_bound_fraction']:.1%} of the DRAM bound, "
            f"{bound_tps:,.2f} tokens/s); {_energy(tot['energy_j_per_token'])}/token\n"
            f"  DRAM per token: weights {_bytes(per['weights'])}, KV cache {_bytes(per['kv'])} "
            f"({tot['kv_share']:.1%} of the bytes), activations {_bytes(per['activations'])}",
            highlight=False)


def _energy(j):
    return f"{j * 1e3:.2f} mJ" if j >= 1e-3 else f"{j * 1e6:.2f} uJ"


def _bytes(n):
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    if n >= 2**10:
        return f"{n / 2**10:.1f} KiB"
    return f"{n:,.0f} B"
