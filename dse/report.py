"""The sweep report: one self-contained `index.html`, a `README.md` with the same tables, the
figures as PNG files and the CSVs, all rendered from the store alone (two renders of one store
are byte-identical: rows come in key order, PNGs carry no timestamps or versions).

Per workload (a `.q` file: a weight format): the Pareto fronts of decode tokens/s vs area,
prefill tokens/s vs area and energy per token vs tokens/s; the front on the roofline; each
axis' sensitivity; which PE kind wins on tokens/s per area and per joule; the SimPy/roofline
ratio of the promoted points; the top points with why they win; a GPU row beside them. For
workloads with a decode context (`ctx`, `kv`): per weight format and context, which PE kind wins
decode tokens/s per area and per joule, at which KV format, and the KV cache's share of the
DRAM bytes; and how many points could not run a context or KV format, and why.
"""

import base64
import csv
import functools
import html
import io
import math
import re
from pathlib import Path

from bitlut.fileio import atomic_write
from dse import area as area_model
from dse import driver, evaluate, pareto

FIGURES = (("front_decode", "decode tokens/s vs area"),
           ("front_prefill", "prefill tokens/s vs area"),
           ("front_energy", "decode energy per token vs decode tokens/s"),
           ("roofline", "the fronts on the roofline"),
           ("sensitivity", "per-axis sensitivity"),
           ("sim_ratio", "SimPy / roofline of the promoted points"),
           ("area_parity", "area model vs synthesis (CMOS transistors)"))
KIND_COLORS = {"lut": "tab:blue", "bitserial": "tab:orange", "mac": "tab:green"}
WIN_METRICS = (("decode_tok_s_per_mtr", "max"), ("prefill_tok_s_per_mtr", "max"),
               ("decode_tok_per_j", "max"), ("prefill_tok_per_j", "max"))
CONTEXT_METRICS = ("decode_tok_s_per_mtr", "decode_tok_per_j")
SUBPLOTS_PER_ROW = 6


def fmt(v):
    """A table cell: 4 significant digits for floats, thousands separators for big ones."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


class Table:
    def __init__(self, title, header, rows, note=""):
        self.title, self.header, self.rows, self.note = title, header, rows, note

    def markdown(self):
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def html(self):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r)
                       + "</tr>" for r in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3>{note}<table><thead><tr>{head}</tr>"
                f"</thead><tbody>{body}</tbody></table>")

    def csv(self):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header)
        w.writerows([[c if not isinstance(c, float) else repr(c) for c in r]
                     for r in self.rows])
        return buf.getvalue()


class Data:
    """The store's results joined with the sweep's points: one record per unique point."""

    def __init__(self, sweep, store):
        self.sweep = sweep
        self.points = driver.unique_points(sweep.points(evaluate.model_version()))
        self.table = driver.merged(store, self.points)
        self.roof = {r["key"]: r for r in store.rows("roofline")}
        self.sim = {r["key"]: r for r in store.rows("sim")}
        self.manifest = store.manifest()
        self.fronts = driver.fronts(sweep, self.points, self.table)

    def ok(self, wl):
        return self.fronts[wl][0]

    def metrics(self, p):
        return self.table[p.key][2]


def kind_of(p):
    return p.config.pe.kind


def _pair_front(pts, data, x, y, sx, sy):
    vals = [[data.metrics(p)[x], data.metrics(p)[y]] for p in pts]
    return pareto.front(vals, [sx, sy])


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def _scatter(data, x, y, sx, sy, xlabel, ylabel, logx=False, logy=False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    wls = data.sweep.workloads
    ncols = min(len(wls), SUBPLOTS_PER_ROW)
    nrows = -(-len(wls) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(wls):]:
        ax.set_axis_off()
    for ax, wl in zip(axes.flat, wls, strict=False):
        pts = data.ok(wl.name)
        for kind, color in KIND_COLORS.items():
            sel = [p for p in pts if kind_of(p) == kind]
            if sel:
                ax.scatter([data.metrics(p)[x] for p in sel], [data.metrics(p)[y] for p in sel],
                           s=8, alpha=0.35, color=color, label=kind)
        front = sorted((pts[i] for i in _pair_front(pts, data, x, y, sx, sy)),
                       key=lambda p: data.metrics(p)[x])
        if front:
            ax.plot([data.metrics(p)[x] for p in front], [data.metrics(p)[y] for p in front],
                    "k.-", lw=1, label="front")
        ax.set_title(wl.name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:      # a workload no point can run has none
            ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def _layer_ops(wl):
    """MACs of one block per token (sum of N*K over the `.q` file's layers)."""
    from quant.qformat import read_meta
    return sum(n * k for n, k in (lm["shape"] for lm in read_meta(wl.path)["layers"]))


def _roofline_fig(data):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    phases = data.sweep.phases
    fig, axes = plt.subplots(1, len(phases), figsize=(4.6 * len(phases), 3.6), squeeze=False)
    for ax, phase in zip(axes[0], phases, strict=True):
        for wl in data.sweep.workloads:
            pts = data.ok(wl.name)
            ops = _layer_ops(wl) * wl.tokens[phase]
            front = _pair_front(pts, data, f"{phase}_tok_s", "area_mtr", "max", "min")
            xs, ys = [], []
            for i in front:
                met = data.metrics(pts[i])
                block_bytes = met[f"{phase}_bytes_per_tok"] * wl.tokens[phase] / wl.blocks
                xs.append(ops / block_bytes)
                ys.append(ops / met[f"{phase}_block_s"] / 1e9)
            ax.scatter(xs, ys, s=14, label=wl.name)
        gbps = sorted({p.config.dram.gbps for p in data.points if p.config is not None})
        for bw in gbps:
            xr = [0.1, 1e4]
            ax.plot(xr, [bw * v for v in xr], lw=0.6, color="gray")
            ax.text(0.12, bw * 0.14, f"{bw:g} GB/s", fontsize=6, color="gray")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MACs per DRAM byte", fontsize=8)
        ax.set_ylabel("GMAC/s", fontsize=8)
        ax.set_title(f"{phase}: front points (tokens/s vs area)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def _sensitivity(data, metric):
    """Rows (workload, axis, value, best metric, relative to the workload's best)."""
    rows = []
    for wl in data.sweep.workloads:
        pts = data.ok(wl.name)
        if not pts:
            continue
        best = max(data.metrics(p)[metric] for p in pts)
        for paths, vals in data.sweep.dims:
            for v in vals:
                sel = [p for p in pts if tuple(p.values[q] for q in paths) == v]
                b = max((data.metrics(p)[metric] for p in sel), default=None)
                label = ", ".join(str(x) for x in v)
                rows.append([wl.name, "+".join(paths), label, b,
                             b / best if b is not None and best else None])
    return rows


def _sensitivity_fig(rows, metric):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes_names = sorted({r[1] for r in rows})
    wls = sorted({r[0] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(axes_names)), figsize=(2.6 * max(1, len(axes_names)),
                                                                  3.0), squeeze=False)
    for ax, name in zip(axes[0], axes_names, strict=False):
        for wl in wls:
            sel = [r for r in rows if r[1] == name and r[0] == wl]
            ax.plot(range(len(sel)), [r[4] if r[4] is not None else float("nan") for r in sel],
                    "o-", ms=3, lw=1, label=wl)
            ax.set_xticks(range(len(sel)), [r[2] for r in sel], fontsize=6, rotation=45)
        ax.set_title(name, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=6)
    axes[0][0].set_ylabel(f"best {metric} / best of sweep", fontsize=7)
    axes[0][0].legend(fontsize=5)
    fig.tight_layout()
    return _png(fig)


def _sim_rows(data):
    rows = []
    for p in data.points:
        s, r = data.sim.get(p.key), data.roof.get(p.key)
        if not s or not r or s["status"] != "ok" or r["status"] != "ok":
            continue
        row = [p.workload.name, kind_of(p), p.label]
        for phase in data.sweep.phases:
            c = f"{phase}_cycles"
            row.append(s["metrics"][c] / r["metrics"][c])
        for phase in data.sweep.phases:
            c = f"{phase}_block_j"
            row.append(s["metrics"][c] / r["metrics"][c])
        rows.append(row)
    return rows


def _sim_fig(rows, phases):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for j in range(len(phases)):
        ax.scatter([j + (i % 7 - 3) * 0.04 for i in range(len(rows))], [r[3 + j] for r in rows],
                   s=10, c=[KIND_COLORS[r[1]] for r in rows])
    ax.axhline(1.0, color="gray", lw=0.6)
    ax.axhline(1.1, color="gray", lw=0.4, ls="--")
    ax.axhline(0.9, color="gray", lw=0.4, ls="--")
    ax.set_xticks(range(len(phases)), phases)
    ax.set_ylabel("SimPy cycles / roofline-rung cycles", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def _parity_rows():
    """(kind, array, role, synthesized, model) of every cached synthesis, by the fitted model."""
    from dse import synth
    fits, _ = synth.fit()
    rows = []
    for name, r in sorted(synth.load_cache()["records"].items()):
        kind = r["spec"][0]
        if kind not in fits:
            continue
        cfg = synth.point_config(*r["spec"][:5])
        c_acc, c_dp, c0 = fits[kind]["coef"]
        lanes = cfg.pe.rows * cfg.pe.cols
        model = lanes * (c_acc * cfg.pe.acc_bits + c_dp * area_model.datapath(cfg)) + c0
        rows.append([kind, name, r["spec"][5], r["transistors"], model,
                     model / r["transistors"] - 1])
    return rows


def _parity_fig(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    for kind, color in KIND_COLORS.items():
        for role, marker in (("fit", "o"), ("holdout", "x")):
            sel = [r for r in rows if r[0] == kind and r[2] == role]
            if sel:
                ax.scatter([r[3] for r in sel], [r[4] for r in sel], color=color, marker=marker,
                           label=f"{kind} {role}")
    if rows:
        hi = max(max(r[3], r[4]) for r in rows) * 1.1
        ax.plot([0, hi], [0, hi], color="gray", lw=0.6)
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no syntheses recorded\n(python -m dse.synth)", ha="center",
                transform=ax.transAxes)
    ax.set_xlabel("synthesized transistors", fontsize=8)
    ax.set_ylabel("model transistors", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def _why(data, p, pts):
    met = data.metrics(p)
    kind = kind_of(p)
    parts = []
    for phase in data.sweep.phases:
        parts.append(f"{phase} {met[f'{phase}_tok_s']:.3g} tok/s, {met[f'{phase}_bound']}-bound")
    parts.append(f"{met['area_mtr']:.3g} Mtr ({met['area_sram_mtr'] / met['area_mtr']:.0%} "
                 "scratchpads)")
    metric = "decode_tok_s_per_mtr"
    others = [q for q in pts if kind_of(q) != kind]
    for other in sorted({kind_of(q) for q in others}):
        best = max(data.metrics(q)[metric] for q in others if kind_of(q) == other)
        parts.append(f"{met[metric] / best:.2f}x the best {other} point's decode tok/s per Mtr")
    return "; ".join(parts)


def _top(data, n=3):
    rows = []
    for wl in data.sweep.workloads:
        pts, front, _ = data.fronts[wl.name]
        if not front:
            continue
        score = driver.scores(data.sweep, pts, data.table)
        ranked = sorted(front, key=lambda i: (-score[i], pts[i].key))
        for rank, i in enumerate(ranked[:n], 1):
            p = pts[i]
            stage = data.table[p.key][0]
            rows.append([wl.name, rank, kind_of(p), p.label, stage, round(score[i], 4),
                         *(data.metrics(p)[m] for m in data.sweep.objectives), _why(data, p, pts)])
    return rows


def _winners(data):
    rows = []
    for wl in data.sweep.workloads:
        pts = data.ok(wl.name)
        for metric, _ in WIN_METRICS:
            if not pts or metric not in data.metrics(pts[0]):
                continue
            best = {}
            for p in pts:
                k = kind_of(p)
                if k not in best or data.metrics(p)[metric] > data.metrics(best[k])[metric]:
                    best[k] = p
            order = sorted(best, key=lambda k: -data.metrics(best[k])[metric])
            win = order[0]
            margin = (data.metrics(best[win])[metric] / data.metrics(best[order[1]])[metric]
                      if len(order) > 1 else None)
            rows.append([wl.name, metric, win, data.metrics(best[win])[metric],
                         order[1] if len(order) > 1 else "", margin, best[win].label])
    return rows


def _contexts(sweep):
    """{(weights, ctx): [workload, ...]} of the workloads with a decode context, in file
    order (one per KV format)."""
    out = {}
    for wl in sweep.workloads:
        if wl.ctx is not None:
            out.setdefault((wl.base, wl.ctx), []).append(wl)
    return out


def _context_winners(data):
    """Per weight format, context and metric (`CONTEXT_METRICS`): the best point of each PE
    kind over every KV format; rows [weights, ctx, metric, winner, its KV, value, runner-up,
    its KV, margin, the winner's KV share of DRAM bytes and attention share of cycles, point]."""
    rows = []
    for (base, ctx), wls in _contexts(data.sweep).items():
        pts = [p for wl in wls for p in data.ok(wl.name)]
        for metric in CONTEXT_METRICS:
            best = {}
            for p in pts:
                k = kind_of(p)
                if k not in best or data.metrics(p)[metric] > data.metrics(best[k])[metric]:
                    best[k] = p
            if not best:            # every point infeasible (or off the constraints)
                rows.append([base, ctx, metric, "", "", None, "", "", None, None, None, ""])
                continue
            order = sorted(best, key=lambda k: (-data.metrics(best[k])[metric], k))
            win = best[order[0]]
            run = best[order[1]] if len(order) > 1 else None
            met = data.metrics(win)
            rows.append([base, ctx, metric, order[0], win.workload.kv, met[metric],
                         order[1] if run else "", run.workload.kv if run else "",
                         met[metric] / data.metrics(run)[metric] if run else None,
                         met["decode_kv_share"], met["decode_attn_share"], win.label])
    return rows


def context_answer(rows):
    """One sentence per weight format and context: who wins decode tokens/s per area and per
    joule, at which KV format, and the KV cache's share of the winner's DRAM bytes."""
    from dse.sweep import ctx_label
    words = {"decode_tok_s_per_mtr": "decode tok/s per Mtr", "decode_tok_per_j": "tok per J"}
    out = []
    for (base, ctx) in dict.fromkeys((r[0], r[1]) for r in rows):
        said = []
        for r in (r for r in rows if (r[0], r[1]) == (base, ctx)):
            if not r[3]:
                said = ["no point can run it (infeasible or off the constraints)"]
                break
            over = f", {r[8]:.2f}x over {r[6]} at {r[7]}" if r[6] else ""
            said.append(f"{words[r[2]]}: {r[3]} at {r[4]} KV ({r[9]:.0%} of its bytes are the "
                        f"KV cache{over})")
        out.append(f"{base} at a {ctx_label(ctx)} context: " + "; ".join(said) + ".")
    return out


def _infeasible_rows(data):
    """[workload, ctx, kv, reason, points] of the points that cannot run a workload's context
    or KV format."""
    count = {}
    for p in data.points:
        st = data.table.get(p.key)
        if st and st[1] == "infeasible":
            k = (p.workload.name, p.workload.ctx, p.workload.kv, st[2].get("reason", ""))
            count[k] = count.get(k, 0) + 1
    return [[*k, v] for k, v in sorted(count.items(), key=lambda kv: (kv[0][0], kv[0][3]))]


def _infeasible_class(reason):
    """A reason in a few words, for the summary line (the table has it whole)."""
    m = re.match(r"KV format (\w+) must be a format the (\w+) array", reason)
    if m:
        return f"{m.group(1)} KV, which the {m.group(2)} array cannot multiply"
    m = re.match(r"a (\d+)-token decode context must fit the scratchpads", reason)
    if m:
        bufs = re.findall(r"`sram\.(\w+)_kib`", reason)
        named = " and ".join([", ".join(bufs[:-1]), bufs[-1]] if len(bufs) > 1 else bufs)
        return (f"a {m.group(1)}-token context whose attention overflows the {named} "
                f"buffer{'s' if len(bufs) > 1 else ''}")
    return reason


def infeasible_answer(rows):
    """One line: how many points were infeasible, by reason (most first)."""
    if not rows:
        return []
    by_class = {}
    for *_, reason, n in rows:
        c = _infeasible_class(reason)
        by_class[c] = by_class.get(c, 0) + n
    total = sum(by_class.values())
    parts = [f"{n} {c}" for c, n in sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0]))]
    return [f"{total} points infeasible (table \"Points that cannot run a context or KV "
            "format\"): " + "; ".join(parts) + "."]


def answer(winner_rows):
    """One sentence per metric: which PE kind wins it on which workloads, with the margins."""
    out = []
    for metric, _ in WIN_METRICS:
        rows = [r for r in winner_rows if r[1] == metric]
        if not rows:
            continue
        by_kind = {}
        for wl, _, win, _, runner, margin, _ in rows:
            by_kind.setdefault(win, []).append(
                f"{wl} ({margin:.2f}x over {runner})" if margin else wl)
        out.append(f"{metric}: " + "; ".join(f"{kind} wins on {', '.join(wls)}"
                                             for kind, wls in sorted(by_kind.items())) + ".")
    return out


@functools.lru_cache(maxsize=1)
def _h100_calibration():
    """The H100 fit to dse/data/h100_calibration.json (seconds of fitting: once a process)."""
    from arch import roofline
    from dse import gpu as gpu_model
    return gpu_model.calibrate(roofline.load_gpus()["h100_sxm"])


def _gpu_rows(data):
    """Each workload's block on the GPUs of `arch/gpus.yaml`: by their default roofline with fp16
    weights, and on the H100 by the model calibrated to dse/data/h100_calibration.json (fp16
    and the int4 weight-only kernel), per model."""
    from arch import roofline
    from dse import gpu as gpu_model
    from quant.qformat import read_meta
    gpus = roofline.load_gpus()
    cal = _h100_calibration()
    rows = []
    # the GPU model prices the linear layers: one row set per weight format, not per context
    firsts = {}
    for wl in data.sweep.workloads:
        firsts.setdefault(wl.base or wl.name, wl)
    for wl in firsts.values():
        shapes = [tuple(lm["shape"]) for lm in read_meta(wl.path)["layers"]]
        for name, g in sorted(gpus.items()):
            rows.append([wl.base or wl.name, f"{name} fp16 (default terms)",
                         *(m / (wl.blocks * sum(g.layer_seconds(m, n, k, 2 * n * k)
                                                for n, k in shapes))
                           for m in wl.tokens.values())])
        for dtype in ("fp16", "int4wo"):
            rows.append([wl.base or wl.name, f"h100_sxm {dtype} (calibrated)",
                         *(m / (wl.blocks * gpu_model.block_seconds(
                             gpus["h100_sxm"], cal["params"], cal["m_tile"], dtype, m, shapes))
                           for m in wl.tokens.values())])
    return rows, cal


def _gpu_fit_rows(cal):
    return [[name, dtype, m, t * 1e6, pred * 1e6, err]
            for name in ("interpolate", "held_out") for dtype, m, _, _, t, pred, err in cal[name]]


def tables(data):
    sw = data.sweep
    obj = list(sw.objectives)
    counts = {}
    for p in data.points:
        st, status, _ = data.table.get(p.key, ("-", "pending", None))
        counts[(p.workload.name, st, status)] = counts.get((p.workload.name, st, status), 0) + 1
    out = {}
    out["counts"] = Table("Points by rung and status", ["workload", "best rung", "status",
                                                         "points"],
                          [[*k, v] for k, v in sorted(counts.items())])
    out["top"] = Table("Top points and why they win",
                       ["workload", "rank", "kind", "point", "rung", "score", *obj, "why"],
                       _top(data),
                       "Front points ranked by the geometric mean over the objectives of "
                       "value / best value (1 = best at everything at once).")
    out["winners"] = Table("Which PE kind wins", ["workload", "metric", "winner", "value",
                                                  "runner-up", "margin", "winning point"],
                           _winners(data),
                           "Per workload (weight format) and metric, the best point of each "
                           "PE kind; margin = winner / best of the runner-up kind. Activations "
                           "are A8 in every config (arch.config.ACT_BITS has no other width).")
    out["contexts"] = Table(
        "Which PE kind wins per context", ["weights", "ctx", "metric", "winner", "KV",
                                           "value", "runner-up", "its KV", "margin",
                                           "KV share of bytes", "attention share of cycles",
                                           "winning point"],
        _context_winners(data),
        "Decode as the whole block after ctx cached tokens (dse/attention.py): per weight format "
        "and context, the best point of each PE kind over every KV format it can serve; "
        "margin = winner / best of the runner-up kind. Prefill is the linear layers alone.")
    out["infeasible"] = Table(
        "Points that cannot run a context or KV format", ["workload", "ctx", "kv", "reason",
                                                          "points"],
        _infeasible_rows(data),
        "A context whose attention does not fit the scratchpads (one query row's scores live "
        "whole in the out buffer: no online softmax), or a KV format the PE array cannot "
        "multiply; stored as infeasible, never evaluated further.")
    front_rows = []
    for wl in sw.workloads:
        pts, front, _ = data.fronts[wl.name]
        for i in front:
            p = pts[i]
            front_rows.append([wl.name, kind_of(p), p.label, data.table[p.key][0],
                               *(data.metrics(p)[m] for m in obj), p.key[:12]])
    out["front"] = Table("Pareto front over all objectives",
                         ["workload", "kind", "point", "rung", *obj, "key"], front_rows)
    pair_rows = []
    for fid, (x, y, sx, sy) in {"decode_vs_area": ("area_mtr", "decode_tok_s", "min", "max"),
                                "prefill_vs_area": ("area_mtr", "prefill_tok_s", "min", "max"),
                                "energy_vs_decode": ("decode_tok_s", "decode_j_per_tok", "max",
                                                     "min")}.items():
        for wl in sw.workloads:
            pts = data.ok(wl.name)
            if not pts or y not in data.metrics(pts[0]) or x not in data.metrics(pts[0]):
                continue
            for i in _pair_front(pts, data, x, y, sx, sy):
                p = pts[i]
                pair_rows.append([fid, wl.name, kind_of(p), p.label, data.metrics(p)[x],
                                  data.metrics(p)[y]])
    out["fronts"] = Table("Two-objective fronts (the figures' black lines)",
                          ["front", "workload", "kind", "point", "x", "y"], pair_rows)
    sens_metric = "decode_tok_s_per_mtr"
    out["sensitivity"] = Table(f"Per-axis sensitivity ({sens_metric})",
                               ["workload", "axis", "value", "best", "relative"],
                               _sensitivity(data, sens_metric),
                               "The best point with the axis at each value, over the best "
                               "point of the workload.")
    out["sim_ratio"] = Table("SimPy / roofline rung, promoted points",
                             ["workload", "kind", "point",
                              *(f"{ph} cycles ratio" for ph in sw.phases),
                              *(f"{ph} energy ratio" for ph in sw.phases)], _sim_rows(data),
                             "The roofline rung prices every instruction the way SimPy does "
                             "(each unit's busy cycles and events are exact); what it leaves "
                             "out is the queues' fill, drain and imperfect overlap, so a "
                             "ratio is at least 1.")
    gpu_rows, cal = _gpu_rows(data)
    out["gpu"] = Table("GPU row", ["workload", "gpu", *(f"{ph} tok/s" for ph in sw.phases)],
                       gpu_rows, "Tokens/s of the whole model's linear layers (no attention, "
                       "no KV cache), per weight format: arch/gpus.yaml's default "
                       "efficiency terms, and the H100 model fitted to measured layer times "
                       "(dse/gpu.py), whose int4 weight-only row charges the kernel's "
                       "dequantization.")
    fit = cal["interpolate"]
    mape = sum(abs(r[6]) for r in fit) / len(fit) if fit else 0.0
    out["gpu_fit"] = Table(
        "GPU fit on shapes it was not fitted on", ["protocol", "dtype", "M", "measured us",
                                                   "model us", "error"],
        _gpu_fit_rows(cal),
        f"interpolate: fitted on the smallest and largest M, MAPE {mape:.1%} on the others; "
        "held_out: each M left out in turn (int8 has two shapes, so leaving one out leaves "
        "one to fit: its held-out rows say how little two shapes pin down).")
    inv = {}
    for p in data.points:
        st = data.table.get(p.key)
        if st and st[1] in ("invalid", "infeasible", "failed"):
            reason = st[2].get("reason", "")
            inv[(st[1], reason)] = inv.get((st[1], reason), 0) + 1
    out["invalid"] = Table("Invalid, infeasible and failed points", ["status", "reason",
                                                                      "points"],
                           [[*k, v] for k, v in sorted(inv.items())])
    from dse import synth
    fits, fresh = synth.fit()
    rows = []
    for kind in synth.DESIGN:
        f = fits.get(kind)
        if f is None:
            rows.append([kind, "uncalibrated (no syntheses)", "", "", "", ""])
            continue
        status = "calibrated" if f["calibrated"] else (
            "uncalibrated: RTL changed since the syntheses" if not fresh else
            f"uncalibrated: held-out error over {synth.GATE:.0%}")
        rows.append([kind, status, f["mape"], f["worst"], *f["coef"][:2]])
    a = area_model.ANCHORS
    out["area"] = Table(
        "Area model (PE arrays, CMOS transistors)",
        ["kind", "status", "held-out MAPE", "worst", "per lane x acc bit", "per lane x datapath"],
        rows, "Calibrated kinds use the lane model fitted to small synthesized arrays "
        "(dse/synth.py, cached in dse/data/synth_cmos.json by a hash of rtl/); the others the "
        f"per-lane anchors of docs/rtl.md (LUT {a.lut_lane_tr:.0f}, bit-serial "
        f"{a.bitserial_lane_tr:.0f}, MAC {a.mac_lane_tr:.0f} per lane) with an assumed split "
        f"({a.acc_bit_tr:g} per accumulator bit). The LUT table unit ({a.table_unit_tr:.0f} "
        "for 2 rows of 16-bit entries) and the scratchpads (tables) are not fitted.")
    fpga, fpga_fresh = synth.fit_fpga()
    fpga_rows = []
    for (target, res), gate in synth.FPGA.items():
        for kind in synth.DESIGN:
            f = fpga.get((target, res), {}).get(kind)
            if f is None:
                fpga_rows.append([target, res, kind, "uncalibrated (no syntheses)", "", ""])
                continue
            status = "calibrated" if f["calibrated"] else (
                "uncalibrated: RTL changed since the syntheses" if not fpga_fresh else
                f"uncalibrated: held-out error over {gate:.0%}")
            fpga_rows.append([target, res, kind, status, f["mape"], f["worst"]])
    out["fpga_area"] = Table(
        "Area model (PE arrays, FPGA resources)",
        ["target", "resource", "kind", "status", "held-out MAPE", "worst"], fpga_rows,
        "The same lane terms fitted per target to the same small arrays synthesized with "
        "Yosys (synth_ecp5, synth_xilinx -family xc7; dse/data/synth_fpga.json); the gate is "
        "5%, 15% for 7-series LUTs. An error where the synthesis has none of a resource (the "
        "DSPs of a LUT array) is the predicted count itself.")
    out["parity"] = Table("Area model vs synthesis", ["kind", "array", "role", "synthesized",
                                                      "model", "error"], _parity_rows())
    return out


def _point_rows(data):
    sw = data.sweep
    names = evaluate.metric_names(sw.phases)
    header = ["key", "workload", "status", "rung", *sw.swept, *names, "reason"]
    rows = []
    for p in data.points:
        st, status, met = data.table.get(p.key, ("", "pending", {}))
        rows.append([p.key, p.workload.name, status, st,
                     *(p.values[q] if not isinstance(p.values[q], tuple) else
                       "/".join(map(str, p.values[q])) for q in sw.swept),
                     *(met.get(n, "") for n in names), met.get("reason", "")])
    return Table("All points", header, rows)


CSS = ("body{font-family:sans-serif;max-width:1400px;margin:1em auto;font-size:13px}"
       "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
       "padding:2px 6px;text-align:right}th{background:#eee}img{max-width:100%}")


def render(sweep, store, out):
    """Write the report of `sweep` from `store` into folder `out`; returns what it wrote."""
    out = Path(out)
    data = Data(sweep, store)
    t = tables(data)
    figs = {
        "front_decode": _scatter(data, "area_mtr", "decode_tok_s", "min", "max",
                                 "area (Mtr)", "decode tokens/s (model)", logy=True),
        "front_prefill": _scatter(data, "area_mtr", "prefill_tok_s", "min", "max",
                                  "area (Mtr)", "prefill tokens/s (model)", logy=True),
        "front_energy": _scatter(data, "decode_tok_s", "decode_j_per_tok", "max", "min",
                                 "decode tokens/s (model)", "J per token (model)", logx=True),
        "roofline": _roofline_fig(data),
        "sensitivity": _sensitivity_fig(t["sensitivity"].rows, "decode_tok_s_per_mtr"),
        "sim_ratio": _sim_fig(t["sim_ratio"].rows, sweep.phases),
        "area_parity": _parity_fig(t["parity"].rows),
    } if all(f"{ph}_tok_s" in evaluate.metric_names(sweep.phases)
             for ph in ("decode", "prefill")) else {}
    files = []
    for name, png in figs.items():
        files.append(atomic_write(out / f"{name}.png", png))
    csvs = {"points": _point_rows(data), "front": t["front"], "fronts": t["fronts"],
            "sensitivity": t["sensitivity"], "top": t["top"], "winners": t["winners"],
            "sim_ratio": t["sim_ratio"], "contexts": t["contexts"],
            "infeasible": t["infeasible"]}
    for name, table in csvs.items():
        files.append(atomic_write(out / f"{name}.csv", table.csv()))
    run = data.manifest.get("last_run", {})
    intro = (f"Sweep `{sweep.source}` ({sweep.name}): {len(data.points)} unique points over "
             f"{len(sweep.workloads)} workloads, base config `{sweep.base}`. Objectives: "
             + ", ".join(f"{m} ({s})" for m, s in sweep.objectives.items())
             + (". Constraints: " + ", ".join(f"{m} {o} {b:g}" for m, o, b in
                                               sweep.constraints) if sweep.constraints else "")
             + f". Last run: {run.get('seconds', 0):.0f} s, {run.get('sim_rounds', 0)} SimPy "
             f"rounds, front {'converged' if run.get('converged') else 'not converged'}. "
             "Per block: `<phase>_cycles`, `_block_s`, `_block_j` (the .q file's layers once"
             + ("; a workload named `-ctx<N>-<kv>` decodes as the whole block, attention and "
                "KV cache included, after N cached tokens" if _contexts(sweep) else "")
             + "). Per model (x blocks): `<phase>_tok_s`, `_j_per_tok`, `_bytes_per_tok`. Area "
             "in millions of transistor-equivalents (Mtr).")
    order = ["counts", "top", "contexts", "winners", "front", "fronts", "sensitivity",
             "sim_ratio", "gpu", "gpu_fit", "area", "fpga_area", "parity", "infeasible",
             "invalid"]
    sections = [("Which PE kind wins per context", "best point of each kind over the KV "
                 "formats, per weight format and decode context",
                 context_answer(t["contexts"].rows) + infeasible_answer(t["infeasible"].rows)),
                ("Which PE kind wins", "best point of each kind per workload",
                 answer(t["winners"].rows))]
    md = [f"# DSE report: {sweep.name}", "", intro, ""]
    body = [f"<h1>DSE report: {html.escape(sweep.name)}</h1><p>{html.escape(intro)}</p>"]
    for title, what, said in sections:
        if not said:
            continue
        md += [f"**{title}** ({what}):", "", *(f"- {line}" for line in said), ""]
        body.append(f"<p><b>{html.escape(title)}</b> ({html.escape(what)}):</p><ul>"
                    + "".join(f"<li>{html.escape(line)}</li>" for line in said) + "</ul>")
    for fid, caption in FIGURES:
        if fid in figs:
            md += [f"![{caption}]({fid}.png)", ""]
            b64 = base64.b64encode(figs[fid]).decode()
            body.append(f"<figure><img alt=\"{html.escape(caption)}\" "
                        f"src=\"data:image/png;base64,{b64}\"><figcaption>"
                        f"{html.escape(caption)}</figcaption></figure>")
    for k in order:
        md.append(t[k].markdown())
        body.append(t[k].html())
    index = atomic_write(out / "index.html",
                         "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>"
                         f"DSE {html.escape(sweep.name)}</title><style>{CSS}</style></head>"
                         f"<body>{''.join(body)}</body></html>\n")
    readme = atomic_write(out / "README.md", "\n".join(md))
    files += [index, readme]
    return {"index": index, "readme": readme, "files": files}
