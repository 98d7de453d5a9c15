"""`bitlut sim`: compile every layer, simulate it on the cycle model, check it against PyTorch,
and report (DESIGN.md section 8).

Large programs are simulated by sampling, not in full: every output tile of a layer runs the
same instruction stream, so the model simulates one and two tiles of the chosen tiling (on the
layer's first tile of outputs) and extrapolates the difference, the steady-state cost of a tile,
to all tiles; event counts (energy, bytes) scale with the tiles (`sampled: true` in the report,
with the rows and outputs checked). The functional check then covers
the sampled rows. `tests/test_driver.py` bounds the extrapolation error against full simulation.
"""

import dataclasses
import hashlib
import json
import math

import numpy as np

from arch import roofline, timing
from compiler import tiling as tiling_mod
from compiler.lower import host_activations, lower, write_inputs
from compiler.plan import plan_layer, weight_bits_total
from sim.check import compare, sample_activations
from sim.cycle import simulate

FULL_SIM_INSNS = 20000       # above this estimated size a layer is simulated by sampling


def phase_label(m):
    """What a run of `m` tokens is: decode (one token) or a prefill (or a batch)."""
    return "decode, M=1" if m == 1 else f"prefill/batch, M={m}"


def _timing_key(config, program, **kw):
    """What a timing-only run depends on: the program's words and the config less what the
    cycle model does not read for timing (the energy table, the scratchpads' capacities, which
    only bound the addresses, names)."""
    d = dataclasses.asdict(config)
    for k in ("energy", "name", "source"):
        d.pop(k, None)
    d["sram"] = {k: v for k, v in d["sram"].items() if not k.endswith("_kib")}
    words = hashlib.sha256(b"".join(int(w).to_bytes(16, "little") for w in program.words))
    return words.hexdigest(), json.dumps(d, sort_keys=True, default=str), tuple(sorted(kw.items()))


def _simulate(config, program, memo, data, **kw):
    """`sim.cycle.simulate`, through `memo` (a dict) for timing-only runs: a program run once on
    a config runs the same on any config that times it alike. Returns (result, model or None)."""
    if memo is None or data or kw.get("trace"):
        return simulate(config, program, data=data, **kw)
    key = _timing_key(config, program, **kw)
    if key not in memo:
        memo[key] = simulate(config, program, data=False, **kw)[0]
    return memo[key], None


def simulate_layer(layer, config, m, seed=0, check=True, trace=None, full=False,
                   unlimited_bandwidth=False, sample_above=None, memo=None):
    """Simulate one layer at `m` tokens; return its report dict. `trace`: a `sim.trace.RunTrace`
    that gets the simulated run. A layer of more than `sample_above` instructions (default
    `FULL_SIM_INSNS`) and more than two output tiles is simulated by sampling. `memo`: a dict
    that keeps timing-only runs for reuse (`check=False`, no trace)."""
    plan = plan_layer(layer, config)
    tile = tiling_mod.choose(plan, config, m)
    est = tiling_mod.estimate(plan, config, m, tile)
    tiles = math.ceil(m / tile.mr) * math.ceil(layer.shape[0] / tile.nw)
    limit = FULL_SIM_INSNS if sample_above is None else sample_above
    sampled = not full and est["instructions_est"] > limit and tiles > 2
    # a timing-only run (`check=False`) needs no activations: the cycle model runs without data
    x = sample_activations(layer.shape[1], m, seed=seed) if check else None
    kw = dict(trace=trace is not None, unlimited_bandwidth=unlimited_bandwidth)
    check_layer = layer
    if not sampled:
        compiled_full = lower(layer, config, m, tile=tile, image=check, plan=plan)
        if check:
            write_inputs(compiled_full, x)
        res, model = _simulate(config, compiled_full.program, memo, check, **kw)
        cycles, events, dram_bytes = res.cycles, res.events, res.dram_bytes
        units = res.as_dict(config)["units"]
        rows_checked = m
        instructions = len(compiled_full.program.words)
    else:
        # Every output tile (mr tokens x nw outputs) runs the same instruction stream: simulate
        # one tile and two tiles of the layer's first nw outputs, and extrapolate the
        # difference (a tile's steady-state cost) to all tiles; the first tile also carries the
        # pipeline's fill and drain. Event counts (energy, bytes) scale with the tiles.
        rows1 = min(tile.mr, m)
        if m >= 2 * tile.mr:               # the second tile is the next row block
            shapes = [(rows1, tile.nw), (2 * rows1, tile.nw)]
        else:                              # one row block: the second tile is the next outputs
            shapes = [(rows1, tile.nw), (rows1, 2 * tile.nw)]
        runs = []
        for count, (rows, nout) in enumerate(shapes, 1):
            sub = rows_of(layer, nout)
            c = lower(sub, config, rows, tile=tile, image=check and count == 2)
            if check:
                write_inputs(c, x[:rows])
            r, mdl = _simulate(config, c.program, memo, check and count == 2, **kw)
            runs.append((sub, c, r, mdl))
        (_, _, r1, _), (check_layer, compiled_full, res, model) = runs
        total_tiles = (m / rows1) * (layer.shape[0] / tile.nw)      # fractional edges
        cycles = int(round(r1.cycles + (total_tiles - 1) * (res.cycles - r1.cycles)))
        ratio = total_tiles / 2
        events = {k: int(round(v * ratio)) for k, v in res.events.items()}
        dram_bytes = int(round(res.dram_bytes * ratio))
        units = _scaled_units(res.as_dict(config)["units"], cycles / res.cycles)
        rows_checked = shapes[1][0]
        instructions = int(round(len(compiled_full.program.words) * ratio))
    y = None
    if check:
        compiled_full.program.dram = model.executor.dram
        y = compiled_full.program.read("y")
    n, k = layer.shape
    kind = layer.kind
    bits = float(np.mean(layer.bits))
    groups = len(compiled_full.plan.ksteps) if config.pe.act_quant == "token_group" else 1
    bound = roofline.layer_bound(config, m, n, k, kind, layer.bits,
                                 roofline.stored_weight_bytes(layer), scale_groups=groups)
    energy_j = timing.energy_pj(config, events, cycles) * 1e-12
    report = {
        "name": layer.name, "shape": [n, k], "tokens": m, "kind": kind,
        "bits_per_weight": layer.bits_per_weight(outliers=True),
        "tiling": tile.as_dict(), "instructions": instructions,
        "sampled": sampled, "rows_simulated": rows_checked if sampled else m,
        "cycles": cycles, "latency_s": cycles * config.cycle_ns * 1e-9,
        "roofline_cycles": bound.cycles, "roofline_bound": bound.bound,
        "roofline_bytes": bound.dram_bytes, "mean_bits": bits,
        "roofline_fraction": bound.cycles / cycles if cycles else 0.0,
        "utilization": units["matmul"]["busy"] / units_total(units) if units_total(units)
        else 0.0,
        "units": units,
        "dram_bytes": dram_bytes, "energy_j": energy_j, "events": events,
        "weight_image_bits": weight_bits_total(compiled_full.plan, config),
    }
    if check:
        xs = x[:rows_checked]
        xq, sx = host_activations(compiled_full.plan, config.pe.act_quant, xs)
        report["check"] = compare(check_layer, compiled_full.plan, xs, xq, sx, y)
        report["check"]["rows"] = rows_checked
        report["check"]["outputs"] = check_layer.shape[0]
    if trace is not None:
        trace.add_layer(phase_label(m), report, compiled_full.program, model, res.cycles)
    return report


def rows_of(layer, n):
    """The layer restricted to its first `n` outputs (weight rows)."""
    keep = np.asarray(layer.outlier_rows) < n
    sub = dataclasses.replace(
        layer, codes=layer.codes[:n],
        scales=None if layer.scales is None else layer.scales[:n],
        zeros=None if layer.zeros is None else layer.zeros[:n],
        outlier_rows=np.asarray(layer.outlier_rows)[keep],
        outlier_cols=np.asarray(layer.outlier_cols)[keep],
        outlier_vals=np.asarray(layer.outlier_vals)[keep])
    return sub


def _scaled_units(units, ratio):
    """Unit cycle counters of the sampled run scaled to the whole layer."""
    out = {}
    for name, u in units.items():
        out[name] = {**u, "insns": int(round(u["insns"] * ratio)),
                     "busy": int(round(u["busy"] * ratio)), "idle": int(round(u["idle"] * ratio)),
                     "stalls": {k: int(round(v * ratio)) for k, v in u["stalls"].items()},
                     "dram_queue_request_cycles": int(round(u["dram_queue_request_cycles"]
                                                            * ratio))}
    return out


def units_total(units):
    u = units["matmul"]
    return u["busy"] + u["idle"] + sum(u["stalls"].values())


def summarize(layers, m, config):
    cycles = sum(r["cycles"] for r in layers)
    latency = cycles * config.cycle_ns * 1e-9
    bound = sum(r["roofline_cycles"] for r in layers)
    energy = sum(r["energy_j"] for r in layers)
    dram = sum(r["dram_bytes"] for r in layers)
    stalls = {}
    for r in layers:
        for unit, u in r["units"].items():
            for cause, v in u["stalls"].items():
                stalls[f"{unit}:{cause}"] = stalls.get(f"{unit}:{cause}", 0) + v
    total = {
        "cycles": cycles, "latency_s": latency,
        "tokens_per_s": m / latency if latency else 0.0,
        "roofline_cycles": bound, "roofline_fraction": bound / cycles if cycles else 0.0,
        "energy_j": energy, "energy_j_per_token": energy / m,
        "dram_bytes": dram, "bytes_per_token": dram / m,
        "utilization": (sum(r["utilization"] * r["cycles"] for r in layers) / cycles
                        if cycles else 0.0),
        "stalls": dict(sorted(stalls.items(), key=lambda kv: -kv[1])),
    }
    checked = [r["check"] for r in layers if "check" in r]
    check = {}
    if checked:
        check = {"max_rel_err": max(c["max_rel_err"] for c in checked),
                 "rel_fro_err": max(c["rel_fro_err"] for c in checked),
                 "max_abs_err": max(c["max_abs_err"] for c in checked),
                 "passed": all(c["passed"] for c in checked)}
    return total, check
