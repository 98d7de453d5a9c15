"""`bitlut sim`: compile every layer, simulate it on the cycle model, check it against PyTorch,
and report (DESIGN.md section 8).

Large programs are simulated by sampling, not in full: every row block of a layer runs the same
instruction stream, so the model simulates one and two row blocks of the chosen tiling and
extrapolates the difference (the steady-state cost of a block) to all further blocks; event
counts (energy, bytes) scale with the rows (`sampled: true` in the report, with the rows
simulated). The functional check then covers
the sampled rows. `tests/test_driver.py` bounds the extrapolation error against full simulation.
"""

import math

import numpy as np

from arch import roofline
from compiler import tiling as tiling_mod
from compiler.check import compare, sample_activations
from compiler.lower import lower, write_inputs
from compiler.plan import plan_layer, weight_bits_total
from sim.cycle import simulate

FULL_SIM_INSNS = 20000       # above this estimated size a layer is simulated by sampling


def stored_weight_bytes(layer):
    """Bytes of the layer's weights as stored: codes, codebooks or scales, outliers."""
    n, k = layer.shape
    return math.ceil(layer.bits_per_weight(outliers=True) * n * k / 8)


def simulate_layer(layer, config, m, seed=0, check=True, trace=None, full=False,
                   unlimited_bandwidth=False):
    """Simulate one layer at `m` tokens; return its report dict."""
    plan = plan_layer(layer, config)
    tile = tiling_mod.choose(plan, config, m)
    est = tiling_mod.estimate(plan, config, m, tile)
    nmb = math.ceil(m / tile.mr)
    sampled = not full and est["instructions_est"] > FULL_SIM_INSNS and nmb > 2
    x = sample_activations(layer.shape[1], m, seed=seed)
    kw = dict(trace=trace is not None, unlimited_bandwidth=unlimited_bandwidth)
    if not sampled:
        compiled_full = lower(layer, config, m, tile=tile, image=check, plan=plan)
        xq, sx = write_inputs(compiled_full, x)
        res, model = simulate(config, compiled_full.program, data=check, **kw)
        cycles, events, dram_bytes = res.cycles, res.events, res.dram_bytes
        units = res.as_dict(config)["units"]
        rows_checked = m
        if trace is not None:
            model.write_trace(trace)
        y = None
        if check:
            compiled_full.program.dram = model.executor.dram
            y = compiled_full.program.read("y")
        instructions = len(compiled_full.program.words)
    else:
        # One and two row blocks: the difference is the steady-state cost of every further
        # block (the first block also carries the pipeline's fill and drain).
        runs = []
        for blocks in (1, 2):
            rows = blocks * tile.mr
            c = lower(layer, config, rows, tile=tile, image=check and blocks == 2, plan=plan)
            write_inputs(c, x[:rows])
            res, model = simulate(config, c.program, data=check and blocks == 2, **kw)
            runs.append((c, res, model))
        (c1, r1, _), (c, res, model) = runs
        per_block = res.cycles - r1.cycles
        more = (m - rows) / tile.mr                   # further row blocks, fractional
        cycles = int(round(res.cycles + more * per_block))
        ratio = m / rows                              # events are per row block, all but a few
        events = {k: int(round(v * ratio)) for k, v in res.events.items()}
        dram_bytes = int(round(res.dram_bytes * ratio))
        units = _scaled_units(res.as_dict(config)["units"], cycles / res.cycles)
        rows_checked = rows
        instructions = int(round(len(c.program.words) * ratio))
        if trace is not None:
            model.write_trace(trace)
        y = None
        if check:
            c.program.dram = model.executor.dram
            y = c.program.read("y")
        compiled_full = c
    n, k = layer.shape
    kind = layer.kind
    bits = float(np.mean(layer.bits))
    bound = roofline.layer_bound(config, m, n, k, kind, layer.bits, stored_weight_bytes(layer))
    e = config.energy
    energy_j = sum(getattr(e, name) * count for name, count in events.items()) * 1e-12
    energy_j += e.static_mw * 1e-3 * cycles * config.cycle_ns * 1e-9
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
        "dram_bytes": dram_bytes, "energy_j": energy_j,
        "weight_image_bits": weight_bits_total(compiled_full.plan, config),
    }
    if check:
        xs = x[:rows_checked]
        from sim import golden
        xq, sx = golden.quantize_activations(xs)
        report["check"] = compare(layer, compiled_full.plan, xs, xq, sx, y)
        report["check"]["rows"] = rows_checked
    return report


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
