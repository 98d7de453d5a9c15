"""The core's `mma` (`rtl/matmul_unit.py` on the weight-stationary `MacPEArray`) against the
functional executor (the DRAM after the run, bit for bit) and the SimPy cycle model (every
instruction's events and the total), under the Amaranth simulator: uniform codes of every width
1-8 and codebook centroids (int8 and int16), folds at the edges (n not a multiple of C, K not a
multiple of R), one token row and more than R, accumulation (onto loaded accumulators, back to
back, across K tiles), extreme values, regions at the ends of their buffers, the range check
against the executor's, seeded random blocks (BITLUT_SEED) and two compiled layers.

The programs are `verif.test_core_matmul`'s: DMA-load the activations, the weights (the `codes`
image of `arch.image`, or the centroids `cbx` would write) and the old accumulators, run the
matmuls, store the accumulators."""

import numpy as np
import pytest

from arch import config, image, isa, timing
from arch.isa import Insn, Mode, Opcode
from compiler.lower import lower, write_inputs
from quant.random_layer import codebook_layer, uniform_layer
from rtl import matmul_unit
from rtl.mac_pe import MacPEArray

from . import core_tb
from .configs import small
from .harness import seed
from .test_core_matmul import Block, executor_accepts, lmma_program, rtl_in_range

MAC = small("mac")                          # 4 x 4 array, int16 centroids (as shipped)
MAC8 = small("mac", centroid_bits=8)        # int8 centroids


def mma_block(cfg, rng, rows, n, k, bits, mode=Mode.UNIFORM, accumulate=False, values="random"):
    """An `mma` of `cfg` with seeded operands: int8 activations [rows, k], codes [n, k] of `bits`
    (uniform) or centroids of `cfg.centroid_dtype` (codebook), old accumulators [rows, n] when
    `accumulate`. `values`: "random", or "max" / "min": the activations at 127 / -128, the codes
    all ones, the centroids at their most negative / most positive, the accumulators at
    +-2^30 (every product of one sign, the largest the int32 accumulators hold with room)."""
    hi = values == "max"
    if values == "random":
        x = rng.integers(-128, 128, (rows, k))
        acc = rng.integers(-(1 << 20), 1 << 20, (rows, n))
    else:
        x = np.full((rows, k), 127 if hi else -128)
        acc = np.full((rows, n), (1 << 30) if hi else -(1 << 30))
    if mode is Mode.UNIFORM:
        top = (1 << bits) - 1
        w = rng.integers(0, top + 1, (n, k)) if values == "random" else np.full((n, k), top)
    else:
        c = 1 << (cfg.pe.centroid_bits - 1)
        w = rng.integers(-c, c, (n, k)) if values == "random" else np.full((n, k), c - 1 if hi
                                                                             else -c)
        bits = cfg.pe.centroid_bits                 # what the compiler emits
    return Block(Opcode.MMA, rows, n, k, bits, mode, x.astype(image.ACT), w,
                 acc.astype(np.int32) if accumulate else None)


def folds(cfg, blk):
    pe = cfg.pe
    return -(-blk.kgroups * pe.group // pe.rows) * -(-blk.n // pe.cols)


def agree(cfg, prog, mmas=(), blocks=()):
    """Run `prog` on the executor, the cycle model and the core; assert they agree, and that each
    mma occupies the unit for the RTL's folds and overhead and for the closed form; return the
    core's log."""
    rtl, _ = core_tb.assert_agrees(cfg, prog)
    for i, blk in zip(mmas, blocks, strict=True):
        busy = rtl.log[i]["end"] - rtl.log[i]["start"]
        built = folds(cfg, blk) * matmul_unit.mma_fold_cycles(cfg, blk.rows)
        assert busy == built + matmul_unit.OVERHEAD, (i, busy, built)
        assert busy == timing.matmul_cycles(cfg, Opcode.MMA, blk.rows, blk.n, blk.kgroups,
                                            blk.bits)
    return rtl.log


def run_blocks(cfg, blocks, **kw):
    """`agree` on `lmma_program(cfg, blocks)`: (core log, index of each mma)."""
    prog, mmas = lmma_program(cfg, blocks, **kw)
    return agree(cfg, prog, mmas, blocks), mmas


# -- the timing facts ----------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [config.load("mac"), MAC, small("mac", rows=2, cols=2)],
                         ids=["shipped", "4x4", "2x2"])
def test_a_fold_is_the_arrays_and_the_closed_forms(cfg):
    """The sequencer's fold (`mma_fold_cycles`: weight rows, token rows, the array's drain) is
    `arch.timing.mac_fold_cycles`, SCALE-Sim's fold plus `pe_latency`, the array's depth."""
    assert cfg.timing.pe_latency == MacPEArray.DEPTH
    assert cfg.timing.matmul_overhead == matmul_unit.OVERHEAD
    for rows in (1, 3, cfg.pe.rows, 2 * cfg.pe.rows + 1, 4095):
        assert matmul_unit.mma_fold_cycles(cfg, rows) == timing.mac_fold_cycles(cfg, rows)
        assert timing.mac_fold_cycles(cfg, rows) == (2 * cfg.pe.rows + cfg.pe.cols + rows - 2
                                                     + cfg.timing.pe_latency)


def test_one_fold_takes_the_fold_and_the_overhead():
    blk = mma_block(MAC, np.random.default_rng(1), rows=2, n=4, k=4, bits=8)
    log, (i,) = run_blocks(MAC, [blk])
    # R weight rows, 2 token rows, the array's R + C - 2 skew and 2 stages; start and first read
    assert log[i]["end"] - log[i]["start"] == 4 + 2 + (4 + 4 - 2 + 2) + 2


# -- uniform codes and codebook centroids --------------------------------------------------------
SHAPES = [(2, 4, 4), (3, 5, 6), (5, 7, 9), (1, 1, 1), (6, 9, 3), (1, 13, 8), (9, 3, 5),
          (4, 8, 17)]                                                     # rows, n, k


def test_mma_uniform_every_width():
    rng = np.random.default_rng(2)
    run_blocks(MAC, [mma_block(MAC, rng, *SHAPES[b % len(SHAPES)], b) for b in range(1, 9)])


@pytest.mark.parametrize("values", ["max", "min"])
def test_mma_uniform_extremes(values):
    """Max codes at every width times 127 or -128, onto accumulators at +-2^30."""
    rng = np.random.default_rng(3)
    run_blocks(MAC, [mma_block(MAC, rng, 3, 5, 9, b, accumulate=b % 2 == 0, values=values)
                     for b in (1, 4, 7, 8)])


@pytest.mark.parametrize("cfg", [MAC8, MAC], ids=["int8", "int16"])
def test_mma_codebook_centroids_and_the_extremes(cfg):
    rng = np.random.default_rng(4)
    blocks = [mma_block(cfg, rng, *shape, 0, Mode.CODEBOOK) for shape in SHAPES[1:5]]
    blocks += [mma_block(cfg, rng, 5, 6, 7, 0, Mode.CODEBOOK, accumulate=True, values=v)
               for v in ("max", "min")]
    run_blocks(cfg, blocks)


def test_mma_accumulates_back_to_back():
    """Three blocks into the same accumulators, each starting the cycle after the one before
    ends (its first accumulator read sees the last write): the first adds to loaded values, the
    next two to the result of the one before, one of them of centroids."""
    rng = np.random.default_rng(5)
    blocks = [mma_block(MAC, rng, 5, 6, 9, 3, accumulate=True),
              mma_block(MAC, rng, 5, 6, 2, 8),
              mma_block(MAC, rng, 5, 6, 5, 0, Mode.CODEBOOK)]
    prog, idx = lmma_program(MAC, blocks, dst=256)
    log = agree(MAC, prog, idx, blocks)
    assert log[idx[1]]["start"] == log[idx[0]]["end"]
    assert log[idx[2]]["start"] == log[idx[1]]["end"]


def test_mma_regions_at_the_ends_of_their_buffers():
    """Edge folds read past the block (features past K, lanes past `n`) without writing there:
    here past the last byte of the activation, weight and accumulator buffers."""
    rng = np.random.default_rng(6)
    run_blocks(MAC, [mma_block(MAC, rng, 3, 5, 6, 5),
                     mma_block(MAC, rng, 3, 7, 5, 0, Mode.CODEBOOK)], at_end=True)


# -- the range check -----------------------------------------------------------------------------
def test_in_range_is_the_executors_bounds_check():
    """Random blocks placed around the ends of their buffers: the core's range check accepts
    exactly what the executor does (uniform `bits` a width of the config; codebook blocks of
    any `bits`, which the executor does not read; aligned addresses)."""
    s = seed()
    print(f"seed={s}")
    rng = np.random.default_rng(s)
    insns = []
    for _ in range(150):
        mode = Mode(int(rng.integers(0, 2)))
        bits = int(rng.choice(MAC.pe.weight_bits if mode is Mode.UNIFORM else [16, 8, 4]))
        f = dict(rows=int(rng.integers(1, 40)), n=int(rng.integers(1, 40)),
                 kgroups=int(rng.integers(1, 300)), bits=bits, mode=mode,
                 accumulate=int(rng.integers(0, 2)))
        ends = {"src": MAC.sram.bytes("act"), "wgt": MAC.sram.bytes("weight"),
                "dst": MAC.sram.bytes("acc")}
        for key, end in ends.items():
            low = rng.random() < 0.6
            f[key] = int(rng.integers(0, 256) if low else end - rng.integers(4, 8192)) // 4 * 4
        insns.append(Insn(Opcode.MMA, f))
    got = rtl_in_range(MAC, Opcode.MMA, [isa.encode(i) for i in insns])
    assert 20 < sum(got) < 130, sum(got)                # both sides of the check are exercised
    for insn, ok in zip(insns, got, strict=True):
        assert ok == executor_accepts(MAC, insn), insn


# -- random blocks and compiled layers -----------------------------------------------------------
def random_block(cfg, rng):
    mode = Mode.CODEBOOK if rng.random() < 0.35 else Mode.UNIFORM
    return mma_block(cfg, rng, int(rng.integers(1, 10)), int(rng.integers(1, 12)),
                     int(rng.integers(1, 14)), int(rng.choice(cfg.pe.weight_bits)), mode,
                     accumulate=bool(rng.random() < 0.4))


@pytest.mark.parametrize("case", range(2))
def test_random_blocks(case):
    s = seed() * 100 + case
    print(f"seed={s} (BITLUT_SEED={seed()}, case {case})")
    rng = np.random.default_rng(s)
    cfg = (MAC, MAC8)[case]
    run_blocks(cfg, [random_block(cfg, rng) for _ in range(4)])


@pytest.mark.parametrize("fmt", ["uniform", "codebook"])
def test_compiled_layer(fmt):
    """A layer as the compiler lowers it (loads, mma, vdeq, outliers, stores) runs on the core
    bit- and cycle-exact."""
    rng = np.random.default_rng(11)
    if fmt == "uniform":
        layer = uniform_layer(rng, 16, 64, 2, group_size=64)
    else:
        layer = codebook_layer(rng, 16, 64, (2, 3, 4))
    compiled = lower(layer, MAC, 5)
    write_inputs(compiled, rng.standard_normal((5, 64)))
    prog = compiled.program
    assert any(insn.op is Opcode.MMA for insn in prog.insns())
    agree(MAC, prog)
