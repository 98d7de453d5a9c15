"""The core's matmul unit (`rtl/matmul_unit.py`) against the functional executor (the DRAM after
the run, bit for bit) and the SimPy cycle model (every instruction's events and the total), under
the Amaranth simulator: `lmma` on the LUT array in uniform mode (half and full tables, every
weight width) and codebook mode (every code width), `bsmm` on the bit-serial array (every width,
codebook centroids), edge tiles, accumulation, extreme values, regions at the ends of their
buffers, the range check against the executor's and the opcode errors, and seeded random blocks
(BITLUT_SEED).

Each program DMA-loads the source (tables or activations), the weights and (to accumulate)
the old accumulators, written into DRAM from numpy in the layouts of `arch.image`, runs its
matmuls and stores the accumulators; `compiler.builder` derives the tokens from the regions."""

from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from arch import config, image, isa, timing
from arch.isa import Buffer, Insn, Mode, Opcode
from arch.program import Program
from compiler.builder import ProgramBuilder, Region
from rtl import matmul_unit
from rtl.common import INSN
from rtl.core import ErrCode
from rtl.scratchpad import LATENCY as SPAD_LATENCY
from sim.executor import ExecError, Executor

from . import core_tb
from .configs import small
from .harness import seed

CFG = small("lut")                          # 2 x 4 array, half tables (symmetric)
FULL = small("lut", symmetric=False)        # full tables


OP_OF = {"lut": Opcode.LMMA, "bitserial": Opcode.BSMM}


@dataclass
class Block:
    """One matmul and its operands: the source (`lmma`: tables [rows, kgroups, E] of
    `table_dtype`; `bsmm`: int8 activations [rows, kgroups * g]), the weights (codes
    [n, kgroups * g], or bsmm's codebook centroids of `centroid_dtype`), the old accumulators
    [rows, n] (accumulate = 1) or None."""
    op: Opcode
    rows: int
    n: int
    kgroups: int
    bits: int
    mode: Mode
    source: np.ndarray
    weights: np.ndarray
    acc: np.ndarray | None = None

    @property
    def source_buffer(self):
        return Buffer.TABLE if self.op is Opcode.LMMA else Buffer.ACT

    def weight_bytes(self, cfg):
        layout = image.matmul_layout(cfg, self.op, self.mode, self.n, self.kgroups, self.bits)
        if layout is None:                      # the centroids `cbx` writes
            return self.weights.astype(cfg.centroid_dtype).tobytes()
        return layout.encode(self.weights).tobytes()

    def planes(self, cfg):
        return timing.matmul_planes(cfg, self.op, self.mode, self.bits)


def block(cfg, rng, rows, n, kgroups, bits, mode=Mode.UNIFORM, accumulate=False, values="random"):
    """A block of `cfg`'s matmul with seeded operands. `values`: "random", or "max" / "min":
    every table entry at the extremes of `table_entry_bits` (activations at those of int8),
    every code all ones / zero (centroids at the extremes of their width), the old
    accumulators near the int32 limits."""
    op = OP_OF[cfg.pe.kind]
    fmt = "uniform" if mode is Mode.UNIFORM else "codebook"
    g = image.group_of(cfg, fmt, bits)
    hi = values == "max"
    if op is Opcode.LMMA:
        top = 1 << (cfg.table_entry_bits - 1)
        shape, dtype = (rows, kgroups, image.table_entries(cfg, mode, bits)), image.table_dtype(cfg)
    else:
        top = 1 << (cfg.pe.act_bits - 1)
        shape, dtype = (rows, kgroups * g), image.ACT
    if values == "random":
        source = rng.integers(-min(top, 1000), min(top, 1000), shape)
        acc = rng.integers(-(1 << 20), 1 << 20, (rows, n))
    else:
        source = np.where(rng.random(shape) < 0.5, top - 1, -top) if hi else np.full(shape, -top)
        acc = np.full((rows, n), (1 << 30) if hi else -(1 << 30))
    wshape = (n, kgroups * g)
    if op is Opcode.BSMM and mode is Mode.CODEBOOK:
        c = 1 << (bits - 1)
        weights = rng.integers(-c, c, wshape) if values == "random" else np.full(
            wshape, -c if hi else c - 1)
    elif values == "random":
        weights = rng.integers(0, 1 << bits, wshape)
    else:
        weights = np.full(wshape, (1 << bits) - 1 if hi else 0)
    return Block(op, rows, n, kgroups, bits, mode, source.astype(dtype), weights,
                 acc.astype(np.int32) if accumulate else None)


def _align(v, a=16):
    return -(-v // a) * a


def lmma_program(cfg, blocks, dst=None, at_end=False):
    """A program that runs `blocks` one after another, each on its own scratchpad regions (or,
    `at_end`, the last block's regions at the ends of their buffers); with `dst` given, every
    block accumulates into or writes the same accumulators (its acc is ignored then). Returns
    (program, index of each lmma)."""
    b = ProgramBuilder(cfg, Program(words=[]))
    dram = bytearray()
    top = dict.fromkeys(Buffer, 0)
    lmmas = []

    def place(buf, raw, last, sram=None):
        nonlocal dram
        raw = bytes(raw)
        src = len(dram)
        dram += raw + bytes(_align(len(raw)) - len(raw))
        if sram is not None:
            pass
        elif last and at_end:
            sram = cfg.sram.bytes(buf.name.lower()) - len(raw)
        else:
            sram, top[buf] = top[buf], _align(top[buf] + len(raw))
        b.emit(Opcode.LOAD, reads=[Region("dram", src, src + len(raw))],
               writes=[Region(buf, sram, sram + len(raw))], buf=buf, sram=sram, dram=src,
               rows=1, row_bytes=len(raw), dram_stride=len(raw))
        return sram

    outs = []
    for k, blk in enumerate(blocks):
        last = k == len(blocks) - 1
        wraw = blk.weight_bytes(cfg)
        src = place(blk.source_buffer, blk.source.tobytes(), last)
        wgt = place(Buffer.WEIGHT, wraw, last)
        nbytes = 4 * blk.rows * blk.n
        accumulate = blk.acc is not None or (dst is not None and k > 0)
        if dst is not None:
            acc = dst
            if k == 0 and blk.acc is not None:
                place(Buffer.ACC, blk.acc.tobytes(), False, sram=dst)
        elif blk.acc is not None:
            acc = place(Buffer.ACC, blk.acc.tobytes(), last)
        elif last and at_end:
            acc = cfg.sram.bytes("acc") - nbytes
        else:
            acc, top[Buffer.ACC] = top[Buffer.ACC], _align(top[Buffer.ACC] + nbytes)
        reads = [Region(blk.source_buffer, src, src + blk.source.nbytes),
                 Region(Buffer.WEIGHT, wgt, wgt + len(wraw))]
        if accumulate:
            reads.append(Region(Buffer.ACC, acc, acc + nbytes))
        writes = [Region(Buffer.ACC, acc, acc + nbytes)]
        lmmas.append(b.emit(blk.op, reads=reads, writes=writes, rows=blk.rows, n=blk.n,
                            kgroups=blk.kgroups, bits=blk.bits, mode=blk.mode,
                            accumulate=int(accumulate), src=src, wgt=wgt, dst=acc))
        outs.append((acc, nbytes))
    out = _align(len(dram))
    for acc, nbytes in outs:
        b.emit(Opcode.STORE, reads=[Region(Buffer.ACC, acc, acc + nbytes)],
               writes=[Region("dram", out, out + nbytes)], buf=Buffer.ACC, sram=acc, dram=out,
               rows=1, row_bytes=nbytes, dram_stride=nbytes)
        out = _align(out + nbytes)
    prog = b.finish()
    # the result region starts with seeded bytes, so every store must overwrite them
    fill = np.random.default_rng(len(dram)).integers(0, 256, out - len(dram), dtype=np.uint8)
    prog.dram = np.concatenate([np.frombuffer(bytes(dram), np.uint8), fill])
    return prog, lmmas


def agree(cfg, prog, lmmas=(), blocks=()):
    """Run `prog` on the executor, the cycle model and the core; assert they agree, and that each
    lmma occupies the unit for its closed form; return (core run, model log)."""
    rtl, log = core_tb.assert_agrees(cfg, prog)
    pe = cfg.pe
    for i, blk in zip(lmmas, blocks, strict=True):
        beats = (-(-blk.rows // pe.rows) * -(-blk.n // pe.cols) * blk.kgroups
                 * blk.planes(cfg))
        busy = rtl.log[i]["end"] - rtl.log[i]["start"]
        assert busy == beats + cfg.timing.pe_latency + matmul_unit.OVERHEAD, (i, busy, beats)
        assert busy == timing.matmul_cycles(cfg, blk.op, blk.rows, blk.n, blk.kgroups,
                                            blk.planes(cfg))
    return rtl, log


def run_blocks(cfg, blocks, **kw):
    """`agree` on `lmma_program(cfg, blocks)`: (core run, model log, index of each lmma)."""
    prog, lmmas = lmma_program(cfg, blocks, **kw)
    return *agree(cfg, prog, lmmas, blocks), lmmas


# -- the timing facts ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", config.shipped(), ids=lambda p: p.stem)
def test_matmul_overhead_is_the_units_construction(path):
    cfg = config.load(path)
    assert matmul_unit.OVERHEAD == matmul_unit.SETUP + SPAD_LATENCY
    assert cfg.timing.matmul_overhead == matmul_unit.OVERHEAD
    assert config.Timing().matmul_overhead == matmul_unit.OVERHEAD


def test_one_tile_takes_its_beats_the_pipeline_and_the_overhead():
    rng = np.random.default_rng(1)
    blk = block(CFG, rng, rows=2, n=4, kgroups=1, bits=1)
    _, log, (i,) = run_blocks(CFG, [blk])
    assert log[i]["end"] - log[i]["start"] == 1 + CFG.timing.pe_latency + 2


# -- lmma ----------------------------------------------------------------------------------------
SHAPES = [(2, 4, 1), (3, 6, 2), (5, 7, 3), (1, 1, 1), (4, 9, 1)]     # rows, n, kgroups


def every_width(cfg, rng, widths, mode=Mode.UNIFORM):
    """A block per width over the odd shapes, then the extremes at the widest."""
    blocks = [block(cfg, rng, *SHAPES[k % len(SHAPES)], bits, mode)
              for k, bits in enumerate(widths)]
    top = max(widths)
    return blocks + [block(cfg, rng, 3, 5, 3, top, mode, accumulate=True, values="max"),
                     block(cfg, rng, 3, 5, 3, top, mode, accumulate=True, values="min"),
                     block(cfg, rng, 1, 3, 2, min(widths), mode, values="max")]


@pytest.mark.parametrize("cfg", [CFG, FULL], ids=["half_tables", "full_tables"])
def test_lmma_uniform_every_width_and_the_extremes(cfg):
    run_blocks(cfg, every_width(cfg, np.random.default_rng(2), cfg.pe.weight_bits))


def test_lmma_codebook_every_width_and_the_extremes():
    widths = [b for b in (2, 3, 4) if b <= CFG.pe.index_bits]
    run_blocks(CFG, every_width(CFG, np.random.default_rng(4), widths, Mode.CODEBOOK))


def back_to_back(cfg, rng, widths):
    """Three blocks into the same accumulators: the first adds to loaded values, the next two
    to the result of the one before."""
    return [block(cfg, rng, 3, 6, 2, widths[0], accumulate=True),
            block(cfg, rng, 3, 6, 1, widths[-1]),
            block(cfg, rng, 3, 6, 2, widths[1], Mode.UNIFORM)]


def check_back_to_back(cfg, blocks):
    """Each block starts the cycle after the one before ends (its first read sees the last
    write)."""
    prog, idx = lmma_program(cfg, blocks, dst=256)
    _, log = agree(cfg, prog, idx, blocks)
    assert log[idx[1]]["start"] == log[idx[0]]["end"]
    assert log[idx[2]]["start"] == log[idx[1]]["end"]


def test_lmma_accumulates_back_to_back():
    rng = np.random.default_rng(5)
    blocks = back_to_back(CFG, rng, [2, 4])
    blocks[2] = block(CFG, rng, 3, 6, 2, 3, Mode.CODEBOOK)
    check_back_to_back(CFG, blocks)


def test_lmma_regions_at_the_ends_of_their_buffers():
    """Edge tiles read past the block (rows past `rows`, lanes past `n`) without writing there:
    here past the last byte of the table, weight and accumulator buffers."""
    rng = np.random.default_rng(6)
    run_blocks(CFG, [block(CFG, rng, 3, 5, 2, 3), block(CFG, rng, 3, 7, 1, 3, Mode.CODEBOOK)],
               at_end=True)


# -- bsmm ----------------------------------------------------------------------------------------
BS = small("bitserial")


def test_bsmm_uniform_every_width_and_the_extremes():
    run_blocks(BS, every_width(BS, np.random.default_rng(7), BS.pe.weight_bits))


def test_bsmm_codebook_centroids_and_the_extremes():
    rng = np.random.default_rng(8)
    cb = BS.pe.centroid_bits
    blocks = [block(BS, rng, *shape, cb, Mode.CODEBOOK) for shape in SHAPES[1:4]]
    blocks += [block(BS, rng, 3, 5, 2, cb, Mode.CODEBOOK, accumulate=True, values=v)
               for v in ("max", "min")]
    run_blocks(BS, blocks)


def test_bsmm_back_to_back_and_at_the_ends_of_the_buffers():
    rng = np.random.default_rng(9)
    blocks = back_to_back(BS, rng, [3, 8])
    blocks[2] = block(BS, rng, 3, 6, 2, BS.pe.centroid_bits, Mode.CODEBOOK)
    check_back_to_back(BS, blocks)
    run_blocks(BS, [block(BS, rng, 3, 5, 2, 5),
                    block(BS, rng, 3, 7, 1, BS.pe.centroid_bits, Mode.CODEBOOK)], at_end=True)


# -- errors --------------------------------------------------------------------------------------
def _word(op, **fields):
    f = dict(rows=2, n=4, kgroups=1, bits=2, mode=Mode.UNIFORM, accumulate=0, src=0, wgt=0,
             dst=0) | fields
    return isa.encode(Insn(op, f))


def _run_words(cfg, words):
    prog = Program(words + [isa.encode(Insn(Opcode.FINISH))], np.zeros(64, np.uint8), {})
    return prog, core_tb.run(cfg, prog)


def test_an_extent_past_its_buffer_stops_the_core():
    prog, rtl = _run_words(CFG, [_word(Opcode.LMMA, src=CFG.sram.bytes("table") - 16)])
    assert (rtl.error, rtl.err_index) == (ErrCode.RANGE, 0)
    with pytest.raises(ExecError, match=r"insn 0 \(lmma\): `src` range"):
        Executor(CFG, prog).run()


def test_a_matmul_of_another_array_stops_the_core():
    for cfg, op in ((CFG, Opcode.MMA), (BS, Opcode.LMMA)):
        _, rtl = _run_words(cfg, [_word(op, bits=1)])
        assert (rtl.error, rtl.err_index) == (ErrCode.UNSUPPORTED, 0), op


def rtl_in_range(cfg, op, words):
    """`matmul_unit.in_range` of each word, evaluated by the Amaranth simulator."""
    word, ok = Signal(isa.WORD_BITS), Signal()
    m = Module()
    m.d.comb += ok.eq(matmul_unit.in_range(op, getattr(data.View(INSN, word), op.name.lower()),
                                           cfg))
    sim = Simulator(m)
    out = []

    async def bench(ctx):
        for w in words:
            ctx.set(word, w)
            out.append(bool(ctx.get(ok)))
    sim.add_testbench(bench)
    sim.run()
    return out


def executor_accepts(cfg, insn):
    ex = Executor(cfg, Program([isa.encode(Insn(Opcode.FINISH))]))
    try:
        ex.execute(0, insn)
    except ExecError:
        return False
    return True


@pytest.mark.parametrize("cfg", [CFG, BS], ids=["lmma", "bsmm"])
def test_in_range_is_the_executors_bounds_check(cfg):
    """Random blocks placed around the ends of their buffers: the core's range check accepts
    exactly what the executor does (with `bits` a width the array walks, or an unknown
    codebook width, and aligned addresses: the core does not check alignment)."""
    s = seed()
    print(f"seed={s}")
    rng = np.random.default_rng(s)
    op = OP_OF[cfg.pe.kind]
    src_buf = "table" if op is Opcode.LMMA else "act"
    insns = []
    for _ in range(150):
        mode = Mode(int(rng.integers(0, 2)))
        if mode is Mode.UNIFORM:
            bits = int(rng.choice(cfg.pe.weight_bits))
        elif op is Opcode.LMMA:
            bits = int(rng.integers(1, 6))                      # 1 and 5: no such width
        else:
            bits = int(rng.choice([cfg.pe.centroid_bits, 8, 4]))
        f = dict(rows=int(rng.integers(1, 9)), n=int(rng.integers(1, 40)),
                 kgroups=int(rng.integers(1, 9)), bits=bits, mode=mode,
                 accumulate=int(rng.integers(0, 2)))
        ends = {"src": cfg.sram.bytes(src_buf), "wgt": cfg.sram.bytes("weight"),
                "dst": cfg.sram.bytes("acc")}
        for key, end in ends.items():
            low = rng.random() < 0.6
            f[key] = int(rng.integers(0, 256) if low else end - rng.integers(4, 4096)) // 4 * 4
        insns.append(Insn(op, f))
    got = rtl_in_range(cfg, op, [isa.encode(i) for i in insns])
    for insn, ok in zip(insns, got, strict=True):
        assert ok == executor_accepts(cfg, insn), insn


# -- random blocks -------------------------------------------------------------------------------
def random_block(cfg, rng):
    mode = Mode.CODEBOOK if rng.random() < 0.4 else Mode.UNIFORM
    if mode is Mode.UNIFORM:
        widths = list(cfg.pe.weight_bits)
    elif cfg.pe.kind == "lut":
        widths = [b for b in (2, 3, 4) if b <= cfg.pe.index_bits]
    else:
        widths = [cfg.pe.centroid_bits]
    return block(cfg, rng, int(rng.integers(1, 7)), int(rng.integers(1, 11)),
                 int(rng.integers(1, 4)), int(rng.choice(widths)), mode,
                 accumulate=bool(rng.random() < 0.4))


@pytest.mark.parametrize("case", range(3))
def test_random_blocks(case):
    s = seed() * 100 + case
    print(f"seed={s} (BITLUT_SEED={seed()}, case {case})")
    rng = np.random.default_rng(s)
    cfg = (CFG, FULL, BS)[case]
    run_blocks(cfg, [random_block(cfg, rng) for _ in range(3)])
