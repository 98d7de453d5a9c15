"""The evaluators of the ladder: what one point of a sweep measures.

`roofline` (every point, batched, in process): each layer of the workload at each phase's token
count is tiled by the compiler's own search (`compiler.tiling.choose`) and priced by its
per-unit cost model (`compiler.tiling.estimate`: PE array, table unit, vector unit, DRAM port
and dispatch, the slowest bounding the run). That model is within 7% of SimPy on the shipped
configs, where the plain `arch.roofline` bound is up to 9x optimistic (papers/dse.md, "which
analytic model can be the sweep's first rung"). Energy is the estimate's event counts priced by
the config's energy table, scratchpad bytes by each buffer's capacity (`dse.area`).
`sim` (the points near the front): the SimPy cycle model (`sim.driver.simulate_layer`, timing
only, layers of one program shape once, sampled above `SIM_SAMPLE_ABOVE` instructions), priced
the same way from its own event counts.

Figures per block are the `.q` file's layers once (`<phase>_cycles`, `<phase>_block_s`,
`<phase>_block_j`); figures per model multiply by the workload's `blocks` (`<phase>_tok_s`,
`<phase>_j_per_tok`, `<phase>_bytes_per_tok`). A workload with a decode context (`ctx`, `kv`)
adds to its one-token phase the rest of the block, the attention over the KV cache and the
vector operators (`dse.attention`: closed forms on the roofline rung, SimPy on the sim rung),
and `<phase>_kv_bytes_per_tok`, `_kv_share` (of the DRAM bytes) and `_attn_share` (of the
cycles) say what the cache costs; they are 0 for the other phases (the linear layers alone). A
point that cannot run such a workload (a context beyond its scratchpads, a KV format its array
cannot multiply) is `infeasible`, with its reason. Workers return plain dicts and never write
the store (`dse.driver` does).
"""

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np

from bitlut.errors import UserError
from dse import area as area_model
from dse import keys

STAGES = ("roofline", "sim")
AREA_METRICS = ("area_mtr", "area_pe_mtr", "area_table_unit_mtr", "area_sram_mtr",
                "ecp5_luts", "ecp5_dsps", "ecp5_ebr")
PHASE_METRICS = ("tok_s", "j_per_tok", "bytes_per_tok", "cycles", "block_s", "block_j",
                 "tok_s_per_mtr", "tok_per_j", "kv_bytes_per_tok", "kv_share", "attn_share")
# The sources whose behaviour a stored result depends on: their hash is the model version.
MODEL_SOURCES = ("arch/config.py", "arch/timing.py", "arch/image.py", "arch/isa.py",
                 "compiler/plan.py", "compiler/tiling.py", "compiler/lower.py",
                 "sim/cycle.py", "sim/driver.py", "sim/executor.py", "dse/area.py",
                 "dse/evaluate.py", "dse/synth.py", "dse/attention.py", "compiler/block.py",
                 "compiler/builder.py", "arch/kv.py")
# The sim rung samples a layer of more than this many instructions (and more than two output
# tiles): one and two tiles simulated, the rest extrapolated (`sim.driver`). On llama7b.q's
# layers, the three shipped configs, decode and prefill, it is within 0.07% of `bitlut sim`'s
# default (20,000) and up to 10x faster (the bit-serial and MAC arrays' codebook decode).
SIM_SAMPLE_ABOVE = 1000
ROOT = Path(__file__).resolve().parent.parent
_version = None
_models = {}
_blocks = {}
_layer_memo = {}
# the linear layers' SimPy figures per (config less its energy table, .q file, m): the workloads
# of one file at several contexts and KV formats share them
_layer_sims = {}
# SimPy runs a worker keeps: points whose programs and timing agree (a bigger weight buffer
# that tiles alike, a centroid width on a uniform workload's bit-serial array) share one run
_sim_memo = {}


def metric_names(phases):
    """The numeric metrics a point has, for objectives and constraints."""
    return [f"{p}_{m}" for p in phases for m in PHASE_METRICS] + list(AREA_METRICS)


def model_version():
    """sha256 (16 hex digits) of the model sources: any change to how a point is priced makes
    new keys, so a store never mixes results of two model versions."""
    global _version
    if _version is None:
        h = hashlib.sha256()
        for rel in MODEL_SOURCES:
            h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
        from dse import synth  # the area fits: their syntheses and their RTL
        for cache in (synth.CACHE, synth.FPGA_CACHE):
            h.update(cache.read_bytes() if cache.exists() else b"no syntheses")
        h.update(synth.rtl_hash().encode() + synth.fpga_hash().encode())
        _version = h.hexdigest()[:16]
    return _version


def _model(workload):
    """The workload's layers, loaded once per process and checked against the sweep's checksum."""
    import quant
    qm = _models.get(workload.checksum)
    if qm is None:
        qm = quant.load(workload.path)
        from quant.qformat import read_meta
        found = read_meta(workload.path)["checksum"]
        if found != workload.checksum:
            raise UserError(f"{workload.path}: checksum must be {workload.checksum} as when the "
                            f"sweep was loaded, not {found}: the file changed")
        _models[workload.checksum] = qm
    return qm


def _signature(plan):
    """What `tiling.choose`/`estimate` read of a plan: equal signatures, equal costs (the
    uniform layers q, k, v, o of a block share one)."""
    return (plan.kind, plan.n, plan.k, plan.kp,
            tuple((ks.width, ks.bits, ks.g) for ks in plan.ksteps),
            0 if plan.ol_vals is None else len(plan.ol_vals))


def _program_signature(plan):
    """What a timing-only program of `plan` depends on: `_signature` and where the outliers
    are (they set the lengths of the `vout` lists); the weights' values do not matter."""
    ol = b"" if plan.ol_vals is None else (np.asarray(plan.ol_rows, np.int64).tobytes()
                                           + np.asarray(plan.ol_cols, np.int64).tobytes())
    return _signature(plan), hashlib.sha256(ol).hexdigest()


def _block(workload):
    """(model shape, {role: layer name}) of the workload's first decoder block."""
    if workload.checksum not in _blocks:
        from quant import model_shape
        qm = _model(workload)
        shape = model_shape.require_shape(qm, workload.path, "a sweep workload with `ctx`")
        roles = model_shape.block_layers(qm, 0, workload.path)
        _blocks[workload.checksum] = shape, {r: layer.name for r, layer in roles.items()}
    return _blocks[workload.checksum]


def _plans(layers, cfg):
    from compiler.plan import plan_layer
    return {layer.name: plan_layer(layer, cfg) for layer in layers}


def _estimates(layers, plans, cfg, m, checksum):
    """(plan, tiling, estimate) of every layer at m tokens; equal plans are priced once, and a
    process keeps them per (config less its energy table, `.q` file, m): the workloads of one
    file at several contexts and KV formats share them."""
    from compiler import tiling
    key = (_config_key(cfg), checksum, m)
    if key not in _layer_memo:
        found, seen = [], {}
        for layer in layers:
            plan = plans[layer.name]
            sig = _signature(plan)
            if sig not in seen:
                tile = tiling.choose(plan, cfg, m)
                seen[sig] = (tile, tiling.estimate(plan, cfg, m, tile))
            found.append(seen[sig])
        _layer_memo[key] = found
    return [(plans[layer.name], *te) for layer, te in zip(layers, _layer_memo[key],
                                                           strict=True)]


def _config_key(cfg):
    """The config as the tiling and its estimate read it: less its energy table and names."""
    d = dataclasses.asdict(cfg)
    for k in ("name", "source", "energy"):
        d.pop(k, None)
    return keys.key(d)


def _sram_pj(cfg, ests):
    """Energy of the scratchpad traffic of `ests`, each buffer at its capacity's energy."""
    pj = 0.0
    for _, _, est in ests:
        for buf, nbytes in est["sram_bytes"].items():
            if nbytes:
                pj += nbytes * area_model.sram_byte_pj(cfg, buf)
    return pj


def _sram_bytes(ests):
    return sum(sum(est["sram_bytes"].values()) for _, _, est in ests)


def _phase_metrics(phase, m, blocks, cycles, energy_pj, dram_bytes, bound, cfg, area_mtr,
                   kv_bytes=0, attn_cycles=0):
    block_s = cycles * cfg.cycle_ns * 1e-9
    model_j = energy_pj * 1e-12 * blocks
    tok_s = m / (block_s * blocks)
    return {f"{phase}_cycles": cycles, f"{phase}_block_s": block_s,
            f"{phase}_block_j": energy_pj * 1e-12, f"{phase}_tok_s": tok_s,
            f"{phase}_j_per_tok": model_j / m, f"{phase}_tok_per_j": m / model_j,
            f"{phase}_bytes_per_tok": dram_bytes * blocks / m,
            f"{phase}_tok_s_per_mtr": tok_s / area_mtr, f"{phase}_bound": bound,
            f"{phase}_kv_bytes_per_tok": kv_bytes * blocks / m,
            f"{phase}_kv_share": kv_bytes / dram_bytes if dram_bytes else 0.0,
            f"{phase}_attn_share": attn_cycles / cycles if cycles else 0.0}


def _bound(ests, parts=()):
    """The unit that bounds the phase: the largest summed per-unit cycles over its layers (and
    the block's other parts)."""
    units = {}
    for unit_cycles in [est["unit_cycles"] for _, _, est in ests] + [p.units for p in parts]:
        for u, c in unit_cycles.items():
            units[u] = units.get(u, 0) + c
    return max(sorted(units), key=lambda u: units[u])


def _context(cfg, workload):
    """(shape, {role: layer name}, KV format) of a workload with a decode context, checked
    before any work (`dse.attention.Infeasible` if the point cannot run it); None without."""
    if workload.ctx is None:
        return None
    from dse import attention
    shape, roles = _block(workload)
    fmt = attention.kv_format(cfg, shape, workload.kv)
    attention.check_context(cfg, shape, fmt, workload.ctx)
    return shape, roles, fmt


def _decode_parts(cfg, workload, plans, stage, context):
    """{part: `dse.attention.Part`} of the block's attention and vector operators at the
    workload's decode context, by the closed forms or SimPy."""
    from dse import attention
    shape, roles, fmt = context
    fn = attention.estimate if stage == "roofline" else attention.simulate
    return fn(cfg, shape, {r: plans[name] for r, name in roles.items()}, workload.ctx, fmt,
              workload.checksum)


def _with_parts(parts, cycles, events, sram_pj, cfg):
    """The phase's cycles, events and scratchpad energy with the block's other parts {name:
    Part} added (they run after the linear layers: their cycles add up), and their KV bytes and
    attention cycles."""
    for p in parts.values():
        cycles += p.cycles
        for k, v in p.events.items():
            events[k] = events.get(k, 0) + v
        sram_pj += sum(v * area_model.sram_byte_pj(cfg, b) for b, v in p.sram.items())
    kv = sum(p.dram["kv"] for p in parts.values())
    attn = parts["attention"].cycles if parts else 0
    return cycles, sram_pj, kv, attn


def _point(cfg, workload, stage, phase_fn):
    """Area, then each phase's metrics by `phase_fn(layers, ests, m)` -> (cycles, events,
    scratchpad pJ); the decode phase of a workload with a context adds the block's parts."""
    from arch import timing
    context = _context(cfg, workload)
    layers = list(_model(workload).layers.values())
    plans = _plans(layers, cfg)
    metrics = area_model.area(cfg)
    for phase, m in workload.tokens.items():
        ests = _estimates(layers, plans, cfg, m, workload.checksum)
        cycles, events, sram_pj = phase_fn(layers, ests, m)
        parts = {}
        if context is not None and m == 1:
            parts = _decode_parts(cfg, workload, plans, stage, context)
        cycles, sram_pj, kv_bytes, attn = _with_parts(parts, cycles, events, sram_pj, cfg)
        energy = timing.energy_pj(cfg, events, cycles) + sram_pj
        metrics.update(_phase_metrics(phase, m, workload.blocks, cycles, energy,
                                      events.get("dram_bytes", 0),
                                      _bound(ests, parts.values()), cfg,
                                      metrics["area_mtr"], kv_bytes, attn))
    return metrics


def _roofline_phase(cfg):
    def phase(layers, ests, m):
        cycles = sum(est["cycles"] for _, _, est in ests)
        counts = {"table_entries": 0, "vector_ops": 0, "dram_bytes": 0}
        for _, _, est in ests:
            for counter in ("lookups", "bitserial_steps", "macs"):
                if counter in est:
                    counts[counter] = counts.get(counter, 0) + est[counter]
            counts["table_entries"] += est["table_entries"]
            counts["vector_ops"] += est["vector_ops"]
            counts["dram_bytes"] += est["dram_bus_bytes"]
        return cycles, counts, _sram_pj(cfg, ests)
    return phase


def _sim_phase(cfg, checksum):
    from sim.driver import simulate_layer

    def phase(layers, ests, m):
        key = (_config_key(cfg), checksum, m)
        if key not in _layer_sims:
            cycles, events, seen = 0, {}, {}
            for i, (layer, (plan, _, _)) in enumerate(zip(layers, ests, strict=True)):
                # a timing-only run depends on the program's shape alone: layers of one shape
                # (the uniform q, k, v, o of a block) are simulated once
                sig = _program_signature(plan)
                if sig not in seen:
                    seen[sig] = simulate_layer(layer, cfg, m, seed=i, check=False,
                                               sample_above=SIM_SAMPLE_ABOVE, memo=_sim_memo)
                r = seen[sig]
                cycles += r["cycles"]
                for k, v in r["events"].items():
                    events[k] = events.get(k, 0) + v
            _layer_sims[key] = cycles, events
        cycles, events = _layer_sims[key]
        events = dict(events)
        # scratchpad bytes at the estimate's per-buffer mix of capacities
        sram = events.pop("sram_bytes", 0)
        mix = _sram_bytes(ests)
        return cycles, events, _sram_pj(cfg, ests) * sram / mix if mix else 0.0
    return phase


def roofline_point(cfg, workload):
    """Metrics of one config on one workload by the per-unit cost model."""
    return _point(cfg, workload, "roofline", _roofline_phase(cfg))


def sim_point(cfg, workload):
    """Metrics of one config on one workload by the SimPy cycle model (timing only)."""
    return _point(cfg, workload, "sim", _sim_phase(cfg, workload.checksum))


POINT = {"roofline": roofline_point, "sim": sim_point}


def evaluate(stage, workload, items):
    """Evaluate `items` [(key, config)] of one workload at `stage`; returns one result dict per
    item: {key, stage, status ("ok" | "infeasible" | "invalid" | "failed"), metrics or reason,
    seconds}. A point that cannot run the workload's decode context or KV format is infeasible
    (`dse.attention.Infeasible`); a config that cannot run the workload otherwise (a
    `UserError` such as no tiling fitting) is invalid with that line; anything else is a
    failure with its exception, so a bug shows."""
    from dse.attention import Infeasible
    out = []
    for key, cfg in items:
        t0 = time.perf_counter()
        res = {"key": key, "stage": stage}
        try:
            res.update(status="ok", metrics=POINT[stage](cfg, workload))
        except Infeasible as e:
            res.update(status="infeasible", reason=str(e))
        except UserError as e:
            res.update(status="invalid", reason=str(e))
        except Exception as e:             # noqa: BLE001  (recorded, counted, exit 1)
            res.update(status="failed", reason=f"{type(e).__name__}: {e}")
        res["seconds"] = time.perf_counter() - t0
        out.append(res)
    return out
