"""A whole decoder block compiled (compiler.block) and run on the functional executor and the
SimPy cycle model, against the golden block model (sim.block_golden) bit for bit: every PE kind,
both weight formats, every KV format the array serves, decode and prefill (with and without a
cached past), on the shipped configs and on one that no other test uses. The golden model is
checked against PyTorch in tests/test_block_golden.py; here the check is that the program
computes exactly what the golden model defines, operator by operator, and that the cache the
program writes is the cache the golden model holds.

Also: the configs' refusals (a context beyond the scratchpads' reach, a KV format the array
cannot serve) and the closed forms of the block's instructions against the cycle model.
"""

import dataclasses

import numpy as np
import pytest

from arch import config, kv
from arch.image import PARAM
from arch.isa import Opcode
from bitlut.errors import UserError
from compiler import block as blk
from compiler.plan import LoweringError
from quant.random_layer import codebook_layer, uniform_layer
from sim import block_golden as bg
from sim.cycle import simulate
from sim.executor import ExecError, Executor
from tests.tiny_models import tiny_block_shape

SHAPE = tiny_block_shape()
DIMS = {"q_proj": (128, 128), "k_proj": (64, 128), "v_proj": (64, 128), "o_proj": (128, 128),
        "gate_proj": (344, 128), "up_proj": (344, 128), "down_proj": (128, 344)}
CASES = {"decode": (1, 37), "prefill": (9, 0), "prefill-past": (5, 11)}   # T, L


def _layers(seed, codebook=("q_proj", "down_proj")):
    """Uniform 4-bit layers (group 32), CLAQ-style codebook layers (mixed 2/3/4-bit columns:
    permuted, padded k-steps) for `codebook`, with a few outliers."""
    rng = np.random.default_rng(seed)
    out = {}
    for role, (n, k) in DIMS.items():
        if role in codebook:
            out[role] = codebook_layer(rng, n, k, (2, 3, 4), name=role, outliers=5)
        else:
            out[role] = uniform_layer(rng, n, k, 4, 32, name=role, outliers=3, scale_min=0.01,
                                      scale_spread=0.02)
    return out


def _norms(seed):
    rng = np.random.default_rng(seed + 1)
    return tuple((1 + 0.1 * rng.standard_normal(SHAPE.hidden)).astype(np.float32)
                 for _ in range(2))


def _run(cfg, fmt_name, tokens, past_len, seed=0, group=kv.DEFAULT_GROUP):
    """Compile, run on the executor and the cycle model; return (program after the run, the
    compiled block, the golden result)."""
    layers, norms = _layers(seed), _norms(seed)
    fmt = kv.check_format(fmt_name, cfg, SHAPE.head_dim, group)
    past, _, _ = bg.make_past(fmt, SHAPE.kv_heads, SHAPE.head_dim, past_len, seed) \
        if past_len else (None, None, None)
    rope = bg.rope_tables(np.arange(past_len, past_len + tokens), SHAPE.head_dim,
                          SHAPE.rope_theta)
    cb = blk.lower_block(SHAPE, layers, norms, cfg, tokens, past_len, fmt, past_cache=past,
                         rope=rope)
    x = np.random.default_rng(seed + 2).standard_normal((tokens, SHAPE.hidden)) \
        .astype(np.float32)
    blk.write_inputs(cb, x)
    ex = Executor(cfg, cb.program)
    ex.run()
    res, model = simulate(cfg, cb.program)
    assert np.array_equal(model.executor.dram, ex.dram), "the cycle model's image differs"
    gold = bg.block_golden(SHAPE, cb.plans, norms, x, past, cb.tile,
                           cfg.timing.vector_lanes, fmt)
    cb.program.dram = ex.dram
    return cb, gold, res


def _same(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    diff = a != b
    assert not diff.any(), (f"{what}: {int(diff.sum())} of {a.size} elements differ, first at "
                            f"{np.argwhere(diff)[0].tolist()}: {a[diff][0]!r} vs {b[diff][0]!r}")


def _check(cb, gold, fmt_name):
    p = cb.program
    for sym, op in (("q_proj.y", "q"), ("k_proj.y", "k"), ("v_proj.y", "v"), ("attn", "attn"),
                    ("o_proj.y", "o"), ("h", "h"), ("gate_proj.y", "gate"),
                    ("up_proj.y", "up"), ("down_proj.y", "down"), ("out", "out")):
        _same(p.read(sym), gold.ops[op], sym)
    _same(p.read("q_rot"), gold.ops["q_rope"], "q_rot")
    # the cache as the program left it: the new rows where the golden model holds them
    lay = cb.kv
    new = gold.ops["kv_new"]
    rows = slice(cb.past, cb.past + cb.tokens)
    for which in ("k", "v"):
        raw = p.read(f"kv.{which}").reshape(SHAPE.kv_heads, lay.ctx_max, lay.row_bytes)[:, rows]
        for h in range(SHAPE.kv_heads):
            if fmt_name == "fp16":
                _same(raw[h].view(np.float16), getattr(new, f"{which}16")[h], f"kv.{which}")
            else:
                codes = kv.decode_rows(raw[h], SHAPE.head_dim, lay.fmt.bits)
                _same(codes, getattr(new, f"{which}_codes")[h], f"kv.{which} codes")
    if fmt_name != "fp16":
        kp = p.read("kv.kp").view(PARAM).reshape(
            SHAPE.kv_heads, lay.k_groups, lay.ctx_max)[:, :, rows]
        _same(kp["scale"], new.k_scales, "kv.kp scales")
        vp = p.read("kv.vp").view(PARAM).reshape(SHAPE.kv_heads, lay.ctx_max)[:, rows]
        _same(vp["scale"], new.v_scales, "kv.vp scales")


MATRIX = [(kind, fmt, case) for kind in ("lut", "bitserial", "mac")
          for fmt in ("fp16", "int8", "int4", "int2") for case in CASES
          if not (kind == "lut" and fmt == "int8")]


@pytest.mark.parametrize("kind,fmt,case", MATRIX)
def test_block_runs_bit_exact_with_the_golden_model(kind, fmt, case):
    cfg = config.load(kind)
    tokens, past = CASES[case]
    cb, gold, _ = _run(cfg, fmt, tokens, past, seed=len(kind) + tokens)
    _check(cb, gold, fmt)


def test_a_config_no_other_test_uses():
    """Odd lanes, array, DRAM and queues: 8 vector lanes, a 2x32 LUT array with 2-entry half
    tables (groups of 2 activations), a slow narrow DRAM with 3 requests in flight, the
    shallowest token FIFOs a block takes (3) and short unit queues; K's scales per 16
    columns."""
    base = config.load("lut")
    cfg = base.replace(
        pe=dataclasses.replace(base.pe, cols=32, group=2),
        timing=dataclasses.replace(base.timing, vector_lanes=8, vector_latency=5),
        dram=dataclasses.replace(base.dram, gbps=3.2, latency_ns=250, outstanding=3),
        queues=dataclasses.replace(base.queues, token_depth=3, insn_depth=5))
    cb, gold, _ = _run(cfg, "int4", 5, 11, seed=7, group=16)
    _check(cb, gold, "int4")
    cb, gold, _ = _run(cfg, "fp16", 1, 70, seed=8)
    _check(cb, gold, "fp16")


def test_a_context_beyond_the_reach_is_refused():
    cfg = config.load("lut")
    fmt = kv.check_format("int4", cfg, SHAPE.head_dim)
    reach = blk.ctx_capacity(cfg, SHAPE, fmt)
    # the reach is what one query token's scores take of the out buffer: scores, query and
    # output rows of its GQA group (2 rows here), hand-checked against the 32 KiB buffer
    g, hd, tile = 2, SHAPE.head_dim, blk.attention_tile(cfg)
    assert reach == (32 * 1024 // (4 * g) - 2 * hd) // tile * tile
    with pytest.raises(LoweringError, match=r"--ctx: a context of .* must be at most"):
        blk.lower_block(SHAPE, _layers(0), _norms(0), cfg, 1, reach, fmt, image=False)
    blk.lower_block(SHAPE, _layers(0), _norms(0), cfg, 1, reach - 1, fmt, image=False)


def test_token_fifos_too_shallow_for_a_block_are_refused():
    """A depth of 2 deadlocks a decode chunk's attention (the executor says so); the compiler
    refuses it in one line instead of emitting that program."""
    base = config.load("lut")
    cfg = base.replace(queues=dataclasses.replace(base.queues, token_depth=2))
    with pytest.raises(LoweringError, match=r"queues.token_depth must be at least 3"):
        _run(cfg, "int4", 1, 70)
    blk.MIN_TOKEN_DEPTH, saved = 2, blk.MIN_TOKEN_DEPTH
    try:
        with pytest.raises(ExecError, match=r"deadlock"):
            _run(cfg, "int4", 1, 70, seed=7)
    finally:
        blk.MIN_TOKEN_DEPTH = saved


def test_a_kv_format_the_array_cannot_serve_is_refused():
    with pytest.raises(UserError, match=r"--kv int8 must be a format the lut array serves"):
        kv.check_format("int8", config.load("lut"), 128)
    with pytest.raises(UserError, match=r"--kv must be one of fp16, int8, int4, int2, not 'int3'"):
        kv.check_format("int3", config.load("mac"), 128)
    with pytest.raises(UserError, match=r"K scale group must be a power of two dividing"):
        kv.check_format("int4", config.load("mac"), 128, group=48)


def test_the_block_instructions_cost_their_closed_forms():
    """The cycle model charges each block instruction its `arch.timing` closed form: checked
    on hand-computed cycles of one instruction each (lanes 16, vector latency 13)."""
    from arch.isa import Insn, Stat
    from arch.timing import ROW_TAIL_CYCLES, unit_cycles
    cfg = config.load("lut")
    lat = cfg.timing.vector_latency
    cases = [
        (Insn(Opcode.VSTAT, {"rows": 3, "n": 40, "stat": Stat.SSQ, "first": 1, "tlog": 0,
                             "src": 0, "acc": 0}), 3 * 3 + lat),
        (Insn(Opcode.VNORM, {"rows": 2, "n": 64, "src": 0, "w": 0, "acc": 0, "consts": 0}),
         2 * 4 + 2 * ROW_TAIL_CYCLES + lat),
        (Insn(Opcode.VSMAX, {"rows": 1, "cols": 128, "valid": 5, "step": 0, "tlog": 0,
                             "colscale": 0, "src": 0, "cs": 0}), 3 * 8 + ROW_TAIL_CYCLES + lat),
        (Insn(Opcode.VMV, {"rows": 2, "n": 64, "k": 32, "trans": 0, "accumulate": 0, "src": 0,
                           "w": 0, "dst": 0}), 2 * 64 * 2 + lat),
        (Insn(Opcode.PACK, {"n": 64, "cols": 128, "width": 128, "col0": 0, "bits": 4,
                            "trans": 1, "src": 0, "dst": 0}),
         64 * 2 + cfg.timing.table_stream_latency),
    ]
    for insn, cycles in cases:
        assert unit_cycles(cfg, insn) == cycles, insn.op


def test_the_decode_block_overlaps_its_operators():
    """The whole block runs as one program: the cycle model's time is below the sum of its
    operators' busiest units taken apart, i.e. the units overlap across operators (and the
    operators' cycles sum to the block's)."""
    from sim import block_driver
    cfg = config.load("lut")
    fmt = kv.check_format("int4", cfg, SHAPE.head_dim)
    rep = block_driver.decode(SHAPE, _layers(0), _norms(0), cfg, 100, fmt)
    assert sum(o["cycles"] for o in rep["ops"]) == rep["cycles"]
    assert {o["name"] for o in rep["ops"]} == set(blk.OPERATORS)
    kv_bytes = sum(o["dram"]["kv"] for o in rep["ops"])
    # the cache read once per decode token: 101 tokens of K and V codes (int4, 32 per head =
    # 16 bytes) and K's and V's records (4 bytes each), two KV heads, padded to whole tiles
    # of 64 tokens (128 read), plus the new row written (16 + 16 + 4 + 4 bytes, in bursts)
    assert kv_bytes >= 2 * 101 * (16 + 16 + 4 + 4)


def test_exec_rtl_refuses_the_block_opcodes_by_name(cli, tmp_path):
    """Until the RTL core runs the block (a later issue), `bitlut exec --rtl` names the
    opcodes it does not build, exit 2, and runs nothing; without --rtl the executor and the
    cycle model agree on the same program."""
    cfg = config.load("mac")
    fmt = kv.check_format("int8", cfg, SHAPE.head_dim)
    cb = blk.lower_block(SHAPE, _layers(0), _norms(0), cfg, 1, 5, fmt,
                         rope=bg.rope_tables([5], SHAPE.head_dim, SHAPE.rope_theta))
    path = tmp_path / "block.prog"
    cb.program.save(path)
    r = cli("exec", path, "--arch", "mac", "--rtl")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    for op in ("pack", "vkvq", "vnorm", "vquant", "vrope", "vsmax", "vstat", "vew"):
        assert op in r.stderr, (op, r.stderr)
    r = cli("exec", path, "--arch", "mac")
    assert r.returncode == 0 and "agree" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind,fmt,tokens,past", [("lut", "int4", 1, 1023), ("mac", "int8", 1, 300),
                                                  ("bitserial", "fp16", 6, 20)])
def test_the_synthetic_llama7b_block_runs_bit_exact(kind, fmt, tokens, past):
    """The shipped example: llama7b.q's block (CLAQ 2.2, LLaMA-7B shapes, 32 heads of 128) on
    the shipped configs, executor and cycle model against the golden block (about 20 s each)."""
    import quant
    from bench.common import ensure_llama
    from quant import model_shape
    model = quant.load(ensure_llama())
    cfg, shape = config.load(kind), model.shape
    fmt_ = kv.check_format(fmt, cfg, shape.head_dim)
    layers, norms = model_shape.block_layers(model, 0), model_shape.norm_weights(model, 0)
    past_kv, _, _ = bg.make_past(fmt_, shape.kv_heads, shape.head_dim, past, 1)
    rope = bg.rope_tables(np.arange(past, past + tokens), shape.head_dim, shape.rope_theta)
    cb = blk.lower_block(shape, layers, norms, cfg, tokens, past, fmt_, past_cache=past_kv,
                         rope=rope)
    x = np.random.default_rng(3).standard_normal((tokens, shape.hidden)).astype(np.float32)
    blk.write_inputs(cb, x)
    ex = Executor(cfg, cb.program)
    ex.run()
    _, model_run = simulate(cfg, cb.program)
    assert np.array_equal(model_run.executor.dram, ex.dram)
    gold = bg.block_golden(shape, cb.plans, norms, x, past_kv, cb.tile,
                           cfg.timing.vector_lanes, fmt_)
    cb.program.dram = ex.dram
    for sym, op in (("attn", "attn"), ("h", "h"), ("out", "out")):
        _same(cb.program.read(sym), gold.ops[op], sym)


@pytest.mark.parametrize("kind,fmt", [("lut", "int4"), ("mac", "fp16")])
def test_a_batch_of_sequences_each_attends_to_its_own_cache(kind, fmt):
    """A batched decode (three sequences, one token each after 29 cached, different caches):
    the rows of sequence b equal the golden block of that sequence alone, and each sequence's
    new row lands in its own cache."""
    cfg = config.load(kind)
    fmt_ = kv.check_format(fmt, cfg, SHAPE.head_dim)
    layers, norms = _layers(4), _norms(4)
    pasts = [bg.make_past(fmt_, SHAPE.kv_heads, SHAPE.head_dim, 29, 10 + b)[0] for b in range(3)]
    rope = bg.rope_tables([29], SHAPE.head_dim, SHAPE.rope_theta)
    cb = blk.lower_block(SHAPE, layers, norms, cfg, 1, 29, fmt_, past_cache=pasts, rope=rope,
                         batch=3)
    x = np.random.default_rng(5).standard_normal((3, SHAPE.hidden)).astype(np.float32)
    blk.write_inputs(cb, x)
    ex = Executor(cfg, cb.program)
    ex.run()
    _, model = simulate(cfg, cb.program)
    assert np.array_equal(model.executor.dram, ex.dram)
    cb.program.dram = ex.dram
    out = cb.program.read("out")
    lay = cb.kv
    for b in range(3):
        gold = bg.block_golden(SHAPE, cb.plans, norms, x[b:b + 1], pasts[b], cb.tile,
                               cfg.timing.vector_lanes, fmt_)
        _same(out[b:b + 1], gold.out, f"sequence {b}")
        raw = cb.program.read("kv.k")[b * len(cb.program.read("kv.k")) // 3:]
        row = raw[:lay.kv_heads * lay.head_bytes].reshape(lay.kv_heads, lay.ctx_max,
                                                          lay.row_bytes)[:, 29]
        new = gold.ops["kv_new"]
        if fmt == "fp16":
            _same(row.view(np.float16)[:, None], new.k16, f"sequence {b}'s cache")
        else:
            codes = kv.decode_rows(row, SHAPE.head_dim, lay.fmt.bits)
            _same(codes[:, None], new.k_codes, f"sequence {b}'s cache")


def test_the_kv_rows_pack_lsb_first_and_round_trip():
    """arch.kv's row image: a hand-checked row (2-bit codes 1, 2, 3, 0 are the byte 0b00111001,
    LSB first, as arch.packing packs weights), and random rows of every width round trip."""
    assert kv.encode_rows(np.array([[1, 2, 3, 0]], np.uint8), 2).tolist() == [[0b00111001]]
    assert kv.encode_rows(np.array([[0xA, 0x5]], np.uint8), 4).tolist() == [[0x5A]]
    rng = np.random.default_rng(0)
    for bits in (2, 4, 8):
        codes = rng.integers(0, 1 << bits, (7, 32)).astype(np.uint8)
        raw = kv.encode_rows(codes, bits)
        assert raw.shape == (7, 32 * bits // 8)
        assert np.array_equal(kv.decode_rows(raw, 32, bits), codes)
    # bytes a token adds to a block's cache: LLaMA-7B fp16 is 0.5 MiB over 32 blocks (2 x 32
    # heads x 128 x 2 bytes = 16 KiB a block); int4 with 128-column K groups: codes 2 x 64 bytes
    # and two 4-byte records per head
    assert kv.bytes_per_token(kv.KVFormat("fp16"), 32, 128) * 32 == 2**19
    assert kv.bytes_per_token(kv.KVFormat("int4"), 32, 128) == 32 * (128 + 8)
