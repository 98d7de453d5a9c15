"""The whole model on the cycle model: a decoder block at a context length, decode and prefill,
per operator, multiplied out to the model (docs/block.md; `bitlut sim --ctx`).

All blocks of a LLaMA-family model have one shape, so the model is one block's program run at
its context and multiplied by the block count, plus the final norm, the lm_head and the
embedding read (the report says so; `full` simulates every block, which gives the same
cycles since every block runs the same program at the same context).

- **Decode** (one token after `ctx` cached ones): the whole block is one program, simulated in
  full; an operator's cycles are what it adds to the block's time (the cycle its last
  instruction ends less the previous operator's), so the operators sum to the block and
  their overlap goes to the earlier one.
- **Prefill** (`prefill` tokens, causal, from an empty cache): the operators are timed apart
  and summed (no overlap between them): the linear layers as `bitlut sim` times them
  (`sim.driver.simulate_layer`, sampled), the vector work on `SAMPLE_ROWS` tokens scaled to
  all, and the attention by two of its chunks (the first and the last, whose cost is affine in
  the context they read) summed over every chunk and KV head.

DRAM bytes are split by the symbol each transfer touches: weights (a layer's image, records,
codebooks, outliers, gather indices), the KV cache, and activations (everything else).
"""

import bisect
import dataclasses

from arch import kv as kvmod
from arch import timing
from arch.isa import Opcode
from compiler import block as blk
from quant.random_layer import gemm_layer
from sim.cycle import simulate
from sim.driver import simulate_layer

SAMPLE_ROWS = 64          # prefill tokens the vector work is simulated on, then scaled
LM_HEAD_ROWS = 4096       # lm_head rows simulated, then scaled to the vocabulary
CATEGORIES = ("weights", "kv", "activations")
_WEIGHT_SUFFIXES = (".w", ".param", ".cb", ".outliers", ".gather", ".ones")


def _category(name):
    if name.startswith("kv."):
        return "kv"
    if name.endswith(_WEIGHT_SUFFIXES):
        return "weights"
    return "activations"


class _Symbols:
    """DRAM address -> the category of the symbol it falls in."""

    def __init__(self, program):
        spans = sorted((s.addr, s.addr + s.nbytes, n) for n, s in program.symbols.items())
        self.starts = [a for a, _, _ in spans]
        self.spans = spans

    def category(self, addr):
        i = bisect.bisect_right(self.starts, addr) - 1
        return _category(self.spans[i][2]) if i >= 0 else "activations"


def _dram_split(config, program, insns, lo, hi, syms):
    out = dict.fromkeys(CATEGORIES, 0)
    for i in range(lo, hi + 1):
        insn = insns[i]
        if insn.op in (Opcode.LOAD, Opcode.STORE):
            a = insn.args
            out[syms.category(a["dram"])] += timing.dram_bytes(config, a["rows"], a["row_bytes"])
    return out


def _events(config, insns, lo, hi):
    ev = {}
    for i in range(lo, hi + 1):
        for k, v in timing.events(config, insns[i]).items():
            ev[k] = ev.get(k, 0) + v
    return ev


def _bound(config, busy, dram):
    """What bounds an operator: the DRAM port (its bytes' transfer cycles) or the busiest
    unit."""
    dram_cycles = sum(dram.values()) / config.dram_bytes_per_cycle
    unit, cycles = max(busy.items(), key=lambda kv: kv[1]) if busy else ("none", 0)
    return ("dram", dram_cycles) if dram_cycles >= cycles else (unit, cycles)


def op_breakdown(config, compiled, res, model):
    """Per operator of a fully simulated block program: cycles (what it adds to the block's
    time), busy cycles per unit, DRAM bytes by category, events, the bound and the largest
    stall (from the model's stall log)."""
    prog = compiled.program
    insns = prog.insns()
    syms = _Symbols(prog)
    log = model.log
    stall = {}
    for i, cause, t0, t1 in model.stall_log or ():
        stall.setdefault(i, {}).setdefault(cause, 0)
        stall[i][cause] += t1 - t0
    ops, prev = [], 0
    for name, lo, hi in compiled.ops:
        if hi < lo:             # a section with nothing to do here (no gather, say)
            ops.append({"name": name, "cycles": 0, "span": 0, "busy": {},
                        "dram": dict.fromkeys(CATEGORIES, 0), "events": {}, "bound": "none",
                        "bound_cycles": 0, "stall": None, "instructions": 0})
            continue
        end = max(log[i].get("retire", log[i].get("end", 0)) for i in range(lo, hi + 1)
                  if i in log)
        start = min(log[i].get("dispatch", end) for i in range(lo, hi + 1) if i in log)
        busy, stalls = {}, {}
        for i in range(lo, hi + 1):
            u = insns[i].unit
            if u is None:
                continue
            busy[u.name.lower()] = busy.get(u.name.lower(), 0) + timing.unit_cycles(config,
                                                                                     insns[i])
            for cause, c in stall.get(i, {}).items():
                key = f"{u.name.lower()}:{cause}"
                stalls[key] = stalls.get(key, 0) + c
        dram = _dram_split(config, prog, insns, lo, hi, syms)
        bound = _bound(config, busy, dram)
        cycles = max(0, end - prev)
        ops.append({"name": name, "cycles": cycles, "span": end - start, "busy": busy,
                    "dram": dram,
                    "events": _events(config, insns, lo, hi), "bound": bound[0],
                    "bound_cycles": int(bound[1]),
                    "stall": max(stalls.items(), key=lambda kv: kv[1]) if stalls else None,
                    "instructions": hi - lo + 1})
        prev = max(prev, end)
    if ops:                     # the program's `finish` (and any drain) closes the last one
        ops[-1]["cycles"] += max(0, res.cycles - prev)
    return ops


def decode(shape, layers, norms, config, ctx, kv_fmt, plans=None, batch=1):
    """One decode step after `ctx` cached tokens, of `batch` sequences (a token each, each
    with its own cache): the whole block simulated in full."""
    cb = blk.lower_block(shape, layers, norms, config, 1, ctx, kv_fmt, image=False,
                         plans=plans, batch=batch)
    res, model = simulate(config, cb.program, data=False, trace=True)
    return {"phase": "decode", "tokens": batch, "batch": batch, "past": ctx,
            "cycles": res.cycles, "sampled": False,
            "instructions": len(cb.program.words), "ops": op_breakdown(config, cb, res, model)}


def _scaled(op, ratio, name=None):
    return {**op, "name": name or op["name"], "cycles": int(round(op["cycles"] * ratio)),
            "span": int(round(op.get("span", op["cycles"]) * ratio)),
            "busy": {k: int(round(v * ratio)) for k, v in op["busy"].items()},
            "dram": {k: int(round(v * ratio)) for k, v in op["dram"].items()},
            "events": {k: int(round(v * ratio)) for k, v in op["events"].items()},
            "bound_cycles": int(round(op.get("bound_cycles", 0) * ratio)),
            "stall": (op["stall"][0], int(round(op["stall"][1] * ratio))) if op["stall"]
            else None}


def _merge(name, parts):
    """One operator from several timed apart (summed)."""
    out = {"name": name, "cycles": 0, "span": 0, "busy": {},
           "dram": dict.fromkeys(CATEGORIES, 0), "events": {}, "stall": None, "instructions": 0}
    for p in parts:
        out["cycles"] += p["cycles"]
        out["span"] += p.get("span", p["cycles"])
        out["instructions"] += p.get("instructions", 0)
        for key in ("busy", "dram", "events"):
            for k, v in p[key].items():
                out[key][k] = out[key].get(k, 0) + v
        if p.get("stall") and (out["stall"] is None or p["stall"][1] > out["stall"][1]):
            out["stall"] = p["stall"]
    return out


def _layer_op(rep, split):
    """A linear layer's `simulate_layer` report as a block operator part; its bytes split as
    `split` (the compiler's estimate per category: `compiler.tiling.estimate`) divides them
    between the layer's constants (weights, records, codebooks, outliers) and its activations
    and outputs."""
    busy = {u: v["busy"] for u, v in rep["units"].items() if v["busy"]}
    stalls = {f"{u}:{c}": v for u, d in rep["units"].items() for c, v in d["stalls"].items()}
    total = sum(split.values()) or 1
    w = sum(split.get(k, 0) for k in ("weights", "params", "codebooks", "outliers"))
    weights = int(round(rep["dram_bytes"] * w / total))
    return {"name": rep["name"], "cycles": rep["cycles"], "busy": busy,
            "dram": {"weights": weights, "kv": 0, "activations": rep["dram_bytes"] - weights},
            "events": rep["events"], "instructions": rep["instructions"],
            "stall": max(stalls.items(), key=lambda kv: kv[1]) if stalls else None}


def _simulate_linear(layer, config, tokens, memo=None):
    """`simulate_layer` timing only, as a block operator part."""
    from compiler import tiling as tiling_mod
    rep = simulate_layer(layer, config, tokens, check=False, memo=memo)
    plan = blk.plan_layer(layer, config)
    est = tiling_mod.estimate(plan, config, tokens, tiling_mod.Tiling(**rep["tiling"]))
    return _layer_op(rep, est["dram_bytes"])


def prefill(shape, layers, norms, config, tokens, kv_fmt, plans=None, memo=None):
    """A causal prefill of `tokens` tokens from an empty cache, operator by operator (module
    docstring)."""
    plans = plans or {r: blk.plan_layer(layers[r], config) for r in blk.ROLES}
    memo = {} if memo is None else memo
    linear = {role: _simulate_linear(layers[role], config, tokens, memo) for role in blk.ROLES}
    ts = min(tokens, SAMPLE_ROWS)
    vec_ops = [o for o in blk.OPERATORS if o != "attention"]
    cb = blk.lower_block(shape, layers, norms, config, ts, 0, kv_fmt, image=False,
                         plans=plans, ops=vec_ops, linear=False)
    res, model = simulate(config, cb.program, data=False, trace=True)
    vec = {o["name"]: _scaled(o, tokens / ts) for o in op_breakdown(config, cb, res, model)}
    attention = _prefill_attention(shape, layers, norms, config, tokens, kv_fmt, plans)
    ops = [vec["attn_norm"],
           _merge("qkv", [vec["qkv"]] + [linear[r] for r in ("q_proj", "k_proj", "v_proj")]),
           vec["rope"], attention,
           _merge("o_proj", [vec["o_proj"], linear["o_proj"]]), vec["mlp_norm"],
           _merge("mlp", [vec["mlp"]] + [linear[r] for r in ("gate_proj", "up_proj",
                                                               "down_proj")]),
           vec["residual"]]
    for op in ops:
        op["bound"], op["bound_cycles"] = _bound(config, op["busy"], op["dram"])
        op["bound_cycles"] = int(op["bound_cycles"])
    return {"phase": "prefill", "tokens": tokens, "batch": 1, "past": 0,
            "cycles": sum(o["cycles"] for o in ops),
            "sampled": True, "ops": ops,
            "instructions": sum(o.get("instructions", 0) for o in ops)}


def _prefill_attention(shape, layers, norms, config, tokens, kv_fmt, plans):
    """The attention of a prefill: every chunk of `query_chunk` tokens of every KV head costs
    an affine function of the tiles of context it reads; the first and the last chunk of one
    head are simulated (each alone, as a block of its tokens after the earlier ones) and the
    rest interpolated."""
    tq = blk.query_chunk(config, shape, tokens, 0, kv_fmt)
    starts = list(range(0, tokens, tq))
    tile = blk.attention_tile(config)

    def probe(t0):
        n = min(tq, tokens - t0)
        cb = blk.lower_block(shape, layers, norms, config, n, t0, kv_fmt, image=False,
                             plans=plans, ops=("attention",), chunks=[(0, 0)])
        res, model = simulate(config, cb.program, data=False, trace=True)
        return op_breakdown(config, cb, res, model)[0], -(-(t0 + n) // tile)

    first, tiles0 = probe(starts[0])
    parts = [first]
    if len(starts) > 1:
        last, tiles1 = probe(starts[-1])
        parts.append(last)
    total = None
    for t0 in starts:
        tiles = -(-(t0 + min(tq, tokens - t0)) // tile)
        if len(starts) == 1 or tiles1 == tiles0:
            w = 0.0
        else:
            w = (tiles - tiles0) / (tiles1 - tiles0)
        est = _lerp(first, parts[-1], w)
        total = est if total is None else _merge("attention", [total, est])
    return _scaled(total, shape.kv_heads, "attention")


def _lerp(a, b, w):
    def mix(x, y):
        return x + (y - x) * w
    return {"name": "attention", "cycles": mix(a["cycles"], b["cycles"]),
            "span": mix(a["span"], b["span"]),
            "busy": {k: mix(a["busy"].get(k, 0), b["busy"].get(k, 0))
                     for k in set(a["busy"]) | set(b["busy"])},
            "dram": {k: mix(a["dram"][k], b["dram"][k]) for k in CATEGORIES},
            "events": {k: mix(a["events"].get(k, 0), b["events"].get(k, 0))
                       for k in set(a["events"]) | set(b["events"])},
            "stall": b["stall"] or a["stall"],
            "instructions": mix(a["instructions"], b["instructions"]),
            "bound_cycles": mix(a["bound_cycles"], b["bound_cycles"]), "bound": b["bound"]}


def _sum_blocks(runs):
    """One decode phase from each block's own run: cycles and every operator's figures summed
    (per block, so that a report's `ops` stay the block's operators)."""
    out = {**runs[0], "cycles": sum(r["cycles"] for r in runs),
           "instructions": sum(r["instructions"] for r in runs), "blocks_simulated": len(runs)}
    out["ops"] = []
    for i, op in enumerate(runs[0]["ops"]):
        merged = _merge(op["name"], [r["ops"][i] for r in runs])
        merged["bound"], merged["bound_cycles"] = op["bound"], op["bound_cycles"]
        out["ops"].append(merged)
    return out


def lm_head(shape, config, tokens):
    """The final norm's cost is the attention norm's; the lm_head [vocab, hidden] at 8 bits
    (as two 4-bit halves of the columns on an array without 8-bit weights), `LM_HEAD_ROWS`
    rows simulated and scaled to the vocabulary. Returns (part, what it was)."""
    bits = 8 if 8 in config.pe.weight_bits else max(config.pe.weight_bits)
    halves = 8 // bits if 8 % bits == 0 else 2
    if 8 in config.pe.weight_bits:
        k, what = shape.hidden, "int8"
    else:
        k, what = shape.hidden * halves, f"int8 as {halves} {bits}-bit parts"
    n = min(shape.vocab, LM_HEAD_ROWS)
    layer = dataclasses.replace(gemm_layer(tokens, k, n, bits), name="lm_head")
    part = _simulate_linear(layer, config, tokens)
    ratio = shape.vocab / n
    part = _scaled({**part, "bound_cycles": 0, "bound": "dram"}, ratio, "lm_head")
    part["bound"], part["bound_cycles"] = _bound(config, part["busy"], part["dram"])
    return part, what


def model_totals(config, shape, phase, blocks, lm):
    """The model's figures for a phase: the block x `blocks` + the lm_head (+ the final norm,
    as the attention norm) + the embedding read."""
    block_cycles = phase["cycles"]
    norm = next(o for o in phase["ops"] if o["name"] == "attn_norm")
    embed_bytes = 2 * shape.hidden * phase["tokens"]
    embed_cycles = timing.dram_transfer_cycles(config, embed_bytes)
    cycles = block_cycles * blocks + norm["cycles"] + lm["cycles"] + embed_cycles
    dram = dict.fromkeys(CATEGORIES, 0)
    events = {}
    for o in phase["ops"]:
        for k in CATEGORIES:
            dram[k] += o["dram"][k] * blocks
        for k, v in o["events"].items():
            events[k] = events.get(k, 0) + v * blocks
    for part in (norm, lm):
        for k in CATEGORIES:
            dram[k] += part["dram"][k]
        for k, v in part["events"].items():
            events[k] = events.get(k, 0) + v
    dram["activations"] += embed_bytes
    events["dram_bytes"] = events.get("dram_bytes", 0) + embed_bytes
    latency = cycles * config.cycle_ns * 1e-9
    energy = timing.energy_pj(config, events, cycles) * 1e-12
    tokens = phase["tokens"]
    total_bytes = sum(dram.values())
    bound_cycles = total_bytes / config.dram_bytes_per_cycle
    return {"blocks": blocks, "cycles": int(cycles), "latency_s": latency,
            "tokens_per_s": tokens / latency if latency else 0.0,
            "energy_j": energy, "energy_j_per_token": energy / tokens,
            "dram_bytes_per_token": {k: v / tokens for k, v in dram.items()},
            "kv_share": dram["kv"] / total_bytes if total_bytes else 0.0,
            "dram_bound_cycles": int(bound_cycles),
            "dram_bound_fraction": bound_cycles / cycles if cycles else 0.0}


def simulate_model(shape, layers, norms, config, ctx, prefill_tokens, kv_fmt, blocks=None,
                   batch=1, every_block=None):
    """`bitlut sim --ctx`: decode at `ctx` (`batch` sequences a step) and a prefill of
    `prefill_tokens` (0: none), per operator and for the model. `every_block` [(layers,
    norms)], one per block of a checkpoint's file (`--full`): the decode simulates each block's
    own program (their bit widths differ) and sums them, instead of block 0 times the count.
    Returns the report's `model` dict."""
    blocks = blocks or shape.blocks
    plans = {r: blk.plan_layer(layers[r], config) for r in blk.ROLES}
    out = {"ctx": ctx, "prefill": prefill_tokens, "kv": kv_fmt.name, "blocks": blocks,
           "batch": batch,
           "kv_bytes_per_token_per_block": kvmod.bytes_per_token(kv_fmt, shape.kv_heads,
                                                                 shape.head_dim),
           "method": "one block simulated and multiplied by the block count, plus the final "
                     "norm, the lm_head and the embedding read", "phases": []}
    memo = {}
    if every_block:
        runs = [decode(shape, lay, nrm, config, ctx, kv_fmt, None, batch)
                for lay, nrm in every_block]
        dec = _sum_blocks(runs)
        blocks = 1                 # the phase is every block already
        out["blocks"] = len(every_block)
        out["method"] = ("every block simulated (its own program) and summed, plus the final "
                         "norm, the lm_head and the embedding read")
    else:
        dec = decode(shape, layers, norms, config, ctx, kv_fmt, plans, batch)
    phases = [dec]
    if prefill_tokens:
        phases.append(prefill(shape, layers, norms, config, prefill_tokens, kv_fmt, plans,
                              memo))
    lm, what = lm_head(shape, config, 1)         # the last token's logits, in either phase
    for ph in phases:
        n = blocks if ph is dec else (out["blocks"] if every_block else blocks)
        if ph["batch"] > 1:                        # a batch's step: every sequence's logits
            lm, what = lm_head(shape, config, ph["batch"])
        ph["lm_head"] = {**lm, "weights": what}
        ph["model"] = model_totals(config, shape, ph, n, lm)
        if ph["phase"] == "prefill":
            ph["model"]["ttft_s"] = ph["model"]["latency_s"]
        out["phases"].append(ph)
    return out

