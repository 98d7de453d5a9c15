"""The core's vector unit (`vdeq`, `vscale`, `vout`, and `vsum` beside them) against the
functional executor (the DRAM after the run, bit for bit) and the SimPy cycle model (every
instruction's events and the total), under the Amaranth simulator: directed corners and seeded
random programs (BITLUT_SEED, printed).

Each program loads its operands by DMA, runs its vector instructions back to back on disjoint
outputs and stores every output region; a core costs seconds to build for the simulator, so one
program holds many cases.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import data
from amaranth.sim import Simulator

from arch import config, isa, timing
from arch.image import ACC, ACT, BLOCK_PARAM, OUT, OUTLIER, PARAM, ROW_SCALE, SUMS
from arch.isa import WORD_BITS, Buffer, Deq, Insn, Opcode, Unit
from arch.program import Program
from rtl import vector_unit
from rtl.common import INSN
from rtl.core import Core, ErrCode
from sim.executor import ExecError, Executor

from . import core_tb
from .configs import small
from .core_programs import load, store
from .harness import seed

CFG = small("lut")
L, V, S = Unit.LOAD, Unit.VECTOR, Unit.STORE
ALIGN = 16                      # the compiler's region alignment


def agree(prog, cfg=CFG, nan_words=False):
    """Run `prog` on the executor, the cycle model and the core; assert they agree; return the
    core's run."""
    return core_tb.assert_agrees(cfg, prog, nan_words=nan_words)[0]


class Bench:
    """A program under construction: operands placed in the DRAM image and loaded into the
    scratchpads, vector instructions, then a store of every region they may write."""

    def __init__(self, cfg=CFG):
        self.cfg = cfg
        self.dram = bytearray()
        self.top = dict.fromkeys(Buffer, 0)
        self.loads, self.ops, self.outputs = [], [], []

    def _alloc(self, buf, nbytes):
        addr = self.top[buf]
        self.top[buf] = -(-(addr + nbytes) // ALIGN) * ALIGN
        assert self.top[buf] <= self.cfg.sram.bytes(buf.name.lower()), f"{buf.name} is full"
        return addr

    def put(self, buf, array, output=False):
        """Load `array` into a fresh region of `buf`; return its scratchpad address."""
        raw = np.ascontiguousarray(array).view(np.uint8).ravel()
        addr = self._alloc(buf, raw.size)
        self.loads.append(load(buf, addr, len(self.dram), 1, raw.size))
        self.dram += raw.tobytes()
        self.dram += bytes(-len(self.dram) % 64)
        if output:
            self.outputs.append((buf, addr, raw.size))
        return addr

    def space(self, buf, nbytes):
        """A fresh region of `buf` that an instruction writes (stored at the end)."""
        addr = self._alloc(buf, nbytes)
        self.outputs.append((buf, addr, nbytes))
        return addr

    def op(self, opcode, **fields):
        self.ops.append(Insn(opcode, fields))

    def program(self):
        loads = [dataclasses.replace(i) for i in self.loads]
        loads[-1] = dataclasses.replace(loads[-1], signal=1 << V.value)
        ops = list(self.ops)
        ops[0] = dataclasses.replace(ops[0], wait=1 << L.value)
        ops[-1] = dataclasses.replace(ops[-1], signal=1 << S.value)
        base = len(self.dram)
        stores, at = [], base
        for buf, addr, nbytes in self.outputs:
            stores.append(store(buf, addr, at, 1, nbytes))
            at += -(-nbytes // 64) * 64
        stores[0] = dataclasses.replace(stores[0], wait=1 << V.value)
        dram = np.zeros(at, np.uint8)
        dram[:base] = np.frombuffer(bytes(self.dram), np.uint8)
        words = [isa.encode(i) for i in loads + ops + stores + [Insn(Opcode.FINISH)]]
        return Program(words, dram, {})


# -- operands ---------------------------------------------------------------------------------
def f16(values):
    return np.asarray(values, np.float16)


def params(scale, zero):
    rec = np.zeros(len(scale), PARAM)
    rec["scale"], rec["zero"] = f16(scale), zero
    return rec


def outliers(n, k, v):
    rec = np.zeros(len(n), OUTLIER)
    rec["n"], rec["k"], rec["v"] = n, k, f16(v)
    return rec


def fp32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(OUT)


def lut_acc(rng, zero, sums):
    """Accumulators whose LUT partial acc - zero * sums is even (as `lmma` makes them)."""
    rows, n = len(sums), len(zero)
    half = rng.integers(-2**29, 2**29, (rows, n))
    return (zero.astype(np.int64)[None, :] * sums.astype(np.int64)[:, None] + 2 * half) \
        .astype(np.int64).astype(np.uint64).astype(np.uint32).view(ACC)


def vdeq(b, rows, n, deq, first, acc, param, sums=None, out=None, rowscale=None):
    """A `vdeq`; with `rowscale` (fp32 [rows]) its row scales follow the records, as the
    compiler places them (`arch.image.rowscale_offset`)."""
    size = rows * n * OUT.itemsize
    out_addr = b.put(Buffer.OUT, out, output=True) if out is not None else \
        b.space(Buffer.OUT, size)
    scale = param.view(np.uint8).ravel()
    if rowscale is not None:
        assert len(rowscale) == rows
        scale = np.concatenate([scale, np.ascontiguousarray(rowscale, ROW_SCALE).view(np.uint8)])
    b.op(Opcode.VDEQ, rows=rows, n=n, deq=deq, first=first, acc=b.put(Buffer.ACC, acc),
         out=out_addr, param=b.put(Buffer.SCALE, scale), rowscale=int(rowscale is not None),
         sums=0 if sums is None else b.put(Buffer.TABLE, sums))


def vscale(b, out, scale, corr=None):
    rows, n = out.shape
    b.op(Opcode.VSCALE, rows=rows, n=n, add=int(corr is not None),
         out=b.put(Buffer.OUT, out, output=True), scale=b.put(Buffer.SCALE, scale),
         corr=0 if corr is None else b.put(Buffer.OUT, corr))


def vout(b, rows, n, k, act, rec, first, out=None):
    out_addr = b.put(Buffer.OUT, out, output=True) if out is not None else \
        b.space(Buffer.OUT, rows * n * OUT.itemsize)
    b.op(Opcode.VOUT, rows=rows, n=n, k=k, count=len(rec), first=first,
         list=b.put(Buffer.OUTLIER, rec), act=b.put(Buffer.ACT, act), out=out_addr)


# -- the construction's facts -----------------------------------------------------------------
def test_depth_is_the_configs_vector_latency():
    """`DEPTH` is derived from the fp32 units' latencies and the scratchpad's; the shipped
    configs state it, and the closed form's record spacing is the RTL's."""
    for kind in ("lut", "bitserial", "mac"):
        assert config.load(kind).timing.vector_latency == vector_unit.DEPTH, kind
    assert Core.pipeline_for(CFG).depth == vector_unit.DEPTH
    assert timing.VOUT_RECORD_CYCLES == vector_unit.RECORD_SLOTS
    assert timing.ROWSCALE_CYCLES == vector_unit.ROWSCALE_DEPTH


def _range_cases(rng):
    """Vector instructions whose extents end, now and then, just inside, at or just past the
    end of their buffers (aligned, as the executor requires)."""
    def addr(buf, nbytes, item):
        if rng.random() < 0.7:
            return 0
        end = CFG.sram.bytes(buf.name.lower()) + int(rng.choice([-2, -1, 0, 0, 1])) * 4 * item
        return max(0, (end - nbytes) // item * item)
    for _ in range(40):
        rows, n, k = (int(x) for x in rng.integers(1, [9, 40, 40]))
        count, cols = int(rng.integers(1, 20)), int(rng.integers(1, 99))
        deq, add = Deq(int(rng.integers(0, 3))), int(rng.integers(0, 2))
        rowscale = int(rng.integers(0, 2))
        out = 4 * rows * n
        yield Insn(Opcode.VSUM, dict(rows=rows, cols=cols, act=addr(Buffer.ACT, rows * cols, 1),
                                     sums=addr(Buffer.TABLE, 4 * rows, 4)))
        params_end = (4 if deq is Deq.BLOCK else 4 * n) + rowscale * 4 * rows   # + row scales
        yield Insn(Opcode.VDEQ, dict(
            rows=rows, n=n, deq=deq, first=1, rowscale=rowscale, acc=addr(Buffer.ACC, out, 4),
            out=addr(Buffer.OUT, out, 4), param=addr(Buffer.SCALE, params_end, 4),
            sums=addr(Buffer.TABLE, 4 * rows, 4)))
        yield Insn(Opcode.VSCALE, dict(rows=rows, n=n, add=add, out=addr(Buffer.OUT, out, 4),
                                       scale=addr(Buffer.SCALE, 4 * rows, 4),
                                       corr=addr(Buffer.OUT, out, 4)))
        yield Insn(Opcode.VOUT, dict(rows=rows, n=n, k=k, count=count, first=1,
                                     list=addr(Buffer.OUTLIER, 8 * count, 8),
                                     act=addr(Buffer.ACT, rows * k, 1),
                                     out=addr(Buffer.OUT, out, 4)))


def test_in_range_agrees_with_the_executor():
    """`in_range` passes exactly the vector instructions whose extents the executor accepts
    (zeroed scratchpads: every other rule of the executor holds)."""
    s = seed()
    print(f"seed={s}")
    cases = list(_range_cases(np.random.default_rng(s)))
    word = Signal(WORD_BITS)
    view = data.View(INSN, word)
    m = Module()
    ok = {op: Signal(name=f"ok_{op.name.lower()}") for op in vector_unit.OPCODES}
    for op, sig in ok.items():
        m.d.comb += sig.eq(vector_unit.in_range(op, getattr(view, op.name.lower()), CFG))
    got = []

    async def bench(ctx):
        for insn in cases:
            ctx.set(word, isa.encode(insn))
            got.append(ctx.get(ok[insn.op]))
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    passed = 0
    for insn, rtl_ok in zip(cases, got, strict=True):
        prog = Program([isa.encode(insn), isa.encode(Insn(Opcode.FINISH))])
        try:
            Executor(CFG, prog).run()
            ex_ok = True
        except ExecError:
            ex_ok = False
        assert bool(rtl_ok) == ex_ok, f"seed={s}: {insn}: in_range {rtl_ok}, executor {ex_ok}"
        passed += ex_ok
    assert 0 < passed < len(cases)          # both kinds occurred


def test_range_error_stops_the_core():
    """A vector extent past its buffer stops the core with `RANGE` at that instruction."""
    n = 16
    prog = Program([isa.encode(Insn(Opcode.VSUM, dict(rows=1, cols=4, act=0, sums=0))),
                    isa.encode(Insn(Opcode.VDEQ, dict(
                        rows=1, n=n, deq=Deq.ZERO, first=1, acc=CFG.sram.bytes("acc") - 4 * n + 4,
                        out=0, param=0, sums=0))),
                    isa.encode(Insn(Opcode.FINISH))], np.zeros(64, np.uint8))
    with pytest.raises(ExecError, match="`acc` range"):
        Executor(CFG, prog).run()
    rtl = core_tb.run(CFG, prog)
    assert (rtl.error, rtl.err_index) == (ErrCode.RANGE, 1)


# -- directed ---------------------------------------------------------------------------------
def test_vdeq_directed():
    """LUT, ZERO and BLOCK; first 0 and 1; one element, odd n over several chunks, rows past
    the lanes; zero, negative, and partials far past 2^24 that must round; fp16 scales that are
    zero, -0, subnormal and the largest."""
    rng = np.random.default_rng(1)
    b = Bench()
    # one element
    vdeq(b, 1, 1, Deq.ZERO, 1, np.array([[7]], ACC), params([0.5], [3]), np.array([2], SUMS))
    # large partials: |zero * sums| up to 2^46, not representable: rounded to nearest even
    rows, n = 3, 37
    zero = rng.integers(-2**15, 2**15, n).astype(np.int16)
    zero[:4] = [-2**15, 2**15 - 1, 0, -1]
    sums = rng.integers(-2**31, 2**31, rows).astype(SUMS)
    sums[0] = -2**31
    acc = rng.integers(-2**31, 2**31, (rows, n)).astype(ACC)
    acc[0, :3] = [-2**31, 2**31 - 1, 0]
    scale = rng.standard_normal(n) * 4
    scale[4:10] = [0.0, -0.0, 2**-24, -(2**-20), 65504.0, 1.0]
    vdeq(b, rows, n, Deq.ZERO, 1, acc, params(scale, zero), sums)
    # the same partials added to an output (first = 0), the sum rounding again
    vdeq(b, rows, n, Deq.ZERO, 0, acc, params(scale[::-1], zero), sums,
         out=fp32(rng, (rows, n), 1e9))
    # LUT: the halving shift of an even partial; rows past the lanes, an exact chunk count
    rows, n = CFG.timing.vector_lanes + 1, 2 * CFG.timing.vector_lanes
    zero = (2 * rng.integers(-2**13, 2**13, n) + 1).astype(np.int16)       # z' = 2z + 1 - 2^b
    sums = rng.integers(-2**17, 2**17, rows).astype(SUMS)
    vdeq(b, rows, n, Deq.LUT, 1, lut_acc(rng, zero, sums), params(rng.standard_normal(n), zero),
         sums)
    vdeq(b, 2, 5, Deq.LUT, 0, lut_acc(rng, zero[:5], sums[:2]),
         params(rng.standard_normal(5), zero[:5]), sums[:2], out=fp32(rng, (2, 5)))
    # BLOCK: one fp32 scale, P = acc (the sums are not read)
    acc = rng.integers(-2**31, 2**31, (2, 33)).astype(ACC)
    acc[0, :4] = [0, -1, 2**24 + 1, -(2**31)]
    block = np.array([np.float32(3.0517578e-05)], BLOCK_PARAM)
    vdeq(b, 2, 33, Deq.BLOCK, 1, acc, block)
    vdeq(b, 1, 3, Deq.BLOCK, 0, acc[:1, :3], np.array([-1.5e-3], BLOCK_PARAM),
         out=np.array([[0.0, -0.0, 1e30]], OUT))
    agree(b.program())


def _f32(words):
    """float32 values of IEEE 754 binary32 bit patterns."""
    return np.asarray(words, np.uint32).view(ROW_SCALE)


#: Row scales at the corners of binary32: signed zeros, the least subnormal, a subnormal, the
#: least normal, the largest finite, the infinities, the default quiet NaN (`rtl.fp32.QNAN`,
#: which numpy's multiply and add pass on unchanged as the only NaN operand).
EXTREME_ROW_SCALES = _f32([0x0000_0000, 0x8000_0000, 0x0000_0001, 0x0004_0000, 0x0080_0000,
                           0x7F7F_FFFF, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000])


def _rowscale_busy(rows, n, lanes=CFG.timing.vector_lanes):
    """Cycles a `vdeq` with `rowscale` holds the vector unit, from docs/rtl.md's description of
    the walk: a chunk a cycle, then the pipeline, the row-scale multiplier in it."""
    return rows * -(-n // lanes) + vector_unit.DEPTH + vector_unit.ROWSCALE_DEPTH


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_vdeq_rowscale_directed():
    """`rowscale` on LUT, ZERO and BLOCK; first 0 and 1; one element, a partial last chunk, rows
    past the lanes; row scales at every binary32 corner (zeros, subnormals, the largest, inf,
    NaN) and products that round, underflow to subnormals or overflow to inf; after and before
    a `vdeq` without it (whose last steps must not reach the deeper taps). Each takes its steps
    plus the deeper pipeline, back to back with the next.

    The last cases make invalid operations: inf * 0 (a zero partial or scale times an infinite
    row scale), 0 * inf (a BLOCK product that overflows, times a zero row scale), and inf - inf
    with the old output. numpy's NaN of an invalid operation is negative, the core's `QNAN`
    positive: only "is a NaN" is the contract (rtl/fp32.py), so NaN words agree up to their
    bits (`nan_words`); every other word is compared bit for bit."""
    rng = np.random.default_rng(5)
    lanes = CFG.timing.vector_lanes
    b = Bench()
    shapes = {}

    def case(rows, n, deq, first, acc, param, sums, rs, out=None):
        if rs is not None:
            shapes[len(b.ops)] = (rows, n)
        vdeq(b, rows, n, deq, first, acc, param, sums, out, rowscale=rs)
    plain = (3, 2 * lanes, Deq.BLOCK, 1, rng.integers(-99, 99, (3, 2 * lanes)).astype(ACC),
             np.array([0.25], BLOCK_PARAM), None, None)
    case(*plain)
    case(1, 1, Deq.ZERO, 1, np.array([[7]], ACC), params([0.5], [3]), np.array([2], SUMS),
         [3.0])
    # every corner row scale on a row of nonzero products (inf * finite is inf, never NaN)
    rows, n = len(EXTREME_ROW_SCALES), lanes + 3                  # a partial last chunk
    zero = rng.integers(-2**15, 2**15, n).astype(np.int16)
    sums = rng.integers(-2**31, 2**31, rows).astype(SUMS)
    acc = rng.integers(1, 2**31, (rows, n)).astype(ACC)
    scale = rng.standard_normal(n) * 4
    scale[:3] = [2**-24, 65504.0, -(2**-14)]
    p = params(scale, zero)
    z = zero.astype(np.int64)[None, :] * sums.astype(np.int64)[:, None]
    assert np.all(acc != z)                                       # no zero partial
    case(rows, n, Deq.ZERO, 1, acc, p, sums, EXTREME_ROW_SCALES)
    case(rows, n, Deq.ZERO, 0, acc, p, sums, EXTREME_ROW_SCALES[::-1],
         out=fp32(rng, (rows, n), 1e30))
    # LUT, rows past the lanes, random row scales of wide range
    rows, n = lanes + 1, 2 * lanes - 1
    zero = (2 * rng.integers(-2**13, 2**13, n) + 1).astype(np.int16)
    sums = rng.integers(-2**17, 2**17, rows).astype(SUMS)
    rs = (rng.standard_normal(rows) * 10.0 ** rng.integers(-40, 38, rows)).astype(ROW_SCALE)
    case(rows, n, Deq.LUT, 1, lut_acc(rng, zero, sums), params(rng.standard_normal(n), zero),
         sums, rs)
    case(2, 5, Deq.LUT, 0, lut_acc(rng, zero[:5], sums[:2]),
         params(rng.standard_normal(5), zero[:5]), sums[:2], rs[:2], out=fp32(rng, (2, 5)))
    # BLOCK: one fp32 scale, the row scales right after it; products that underflow
    acc = rng.integers(-2**31, 2**31, (3, 33)).astype(ACC)
    acc[0, :4] = [0, -1, 2**24 + 1, -(2**31)]
    case(3, 33, Deq.BLOCK, 1, acc, np.array([np.float32(3.0517578e-05)], BLOCK_PARAM), None,
         _f32([0x0000_0001, 0x8080_0000, 0x3F80_0001]))
    case(1, 3, Deq.BLOCK, 0, acc[:1, :3], np.array([-1.5e-3], BLOCK_PARAM), None, [-0.0],
         out=np.array([[0.0, -0.0, 1e30]], OUT))
    case(*plain)
    inf = np.float32(np.inf)
    case(2, 3, Deq.ZERO, 1, np.array([[0, 5, 0], [9, 0, -3]], ACC),
         params([1.0, 0.0, 2.0], [0, 0, 0]), np.zeros(2, SUMS), [inf, -inf])
    big = np.array([[2**31 - 1, -(2**31), 1]], ACC)
    case(1, 3, Deq.BLOCK, 1, big, np.array([3e38], BLOCK_PARAM), None, [0.0])
    case(1, 3, Deq.BLOCK, 0, big, np.array([3e38], BLOCK_PARAM), None, [1.0],
         out=np.array([[-inf, inf, 1.0]], OUT))
    rtl = agree(b.program(), nan_words=True)
    out = rtl.dram[-64 * 3:].view(OUT)          # the last three stores, 64-byte aligned
    assert np.isnan(out[[0, 1, 2, 4, 16, 17, 32, 33]]).all(), out
    first = len(b.loads)
    for i in range(1, len(b.ops)):
        assert rtl.log[first + i]["start"] == rtl.log[first + i - 1]["end"]    # no bubble
    for i, (rows, n) in shapes.items():
        ev = rtl.log[first + i]
        assert ev["end"] - ev["start"] == _rowscale_busy(rows, n), (i, rows, n, ev)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_vscale_directed():
    """add 0 and 1, one element, odd n, rows past the lanes; row scales that are zero, -0,
    subnormal and large enough to overflow to inf."""
    rng = np.random.default_rng(2)
    lanes = CFG.timing.vector_lanes
    b = Bench()
    vscale(b, np.array([[1.5]], OUT), np.array([-2.0], ROW_SCALE))
    vscale(b, fp32(rng, (3, 37)), fp32(rng, 3), corr=fp32(rng, (3, 37)))
    shape = (lanes + 1, lanes)
    vscale(b, fp32(rng, shape), fp32(rng, lanes + 1), corr=fp32(rng, shape))
    out = fp32(rng, (4, 17), 1e30)
    out[0, :3] = [0.0, -0.0, 1e-40]
    vscale(b, out, np.array([0.0, -0.0, 1e-39, 1e10], ROW_SCALE))
    corr = -out.copy()
    corr[1] = fp32(rng, 17)
    vscale(b, out.copy(), np.array([1.0, 3.0, -1e-30, 7.0], ROW_SCALE), corr=corr)
    agree(b.program())


def test_vout_directed():
    """Records in list order with repeated outputs one to seven records apart, around
    `RECORD_SLOTS` rows (the forwarding distances), one record, rows past the lanes, first 0
    and 1, and values that are zero, subnormal or negative."""
    rng = np.random.default_rng(3)
    lanes = CFG.timing.vector_lanes
    b = Bench()
    act = np.array([[-128]], ACT)
    vout(b, 1, 1, 1, act, outliers([0], [0], [0.3333]), 1)
    for rows in (1, 2, vector_unit.RECORD_SLOTS - 1, vector_unit.RECORD_SLOTS,
                 vector_unit.RECORD_SLOTS + 1, lanes + 1):
        n, k = 7, 9
        ns = [3, 3, 3, 1, 3, 2, 1, 3, 0, 0, 5, 6, 4, 2, 6, 3, 3]
        ks = rng.integers(0, k, len(ns))
        v = rng.standard_normal(len(ns)) * 8
        v[:3] = [-0.0, 2**-24, -65504.0]
        act = rng.integers(-128, 128, (rows, k)).astype(ACT)
        first = int(rows % 2 == 1)
        vout(b, rows, n, k, act, outliers(ns, ks, v), first,
             out=None if first else fp32(rng, (rows, n), 100.0))
    agree(b.program())


def test_kernel_chain():
    """A tile's epilogue back to back: vsum (the zero-point sums), vdeq LUT on them, the outlier
    correction, and vscale adding it."""
    rng = np.random.default_rng(4)
    b = Bench()
    rows, n, k = 3, 21, 40
    act = rng.integers(-128, 128, (rows, k)).astype(ACT)
    act_addr = b.put(Buffer.ACT, act)
    sums_addr = b.space(Buffer.TABLE, rows * SUMS.itemsize)
    b.op(Opcode.VSUM, rows=rows, cols=k, act=act_addr, sums=sums_addr)
    zero = (2 * rng.integers(-8, 8, n) + 1).astype(np.int16)
    sums = act.astype(np.int64).sum(axis=1).astype(SUMS)
    out = b.space(Buffer.OUT, rows * n * OUT.itemsize)
    b.op(Opcode.VDEQ, rows=rows, n=n, deq=Deq.LUT, first=1, acc=b.put(Buffer.ACC, lut_acc(
        rng, zero, sums)), out=out, param=b.put(Buffer.SCALE, params(rng.random(n), zero)),
         sums=sums_addr)
    corr = b.space(Buffer.OUT, rows * n * OUT.itemsize)
    rec = outliers(rng.integers(0, n, 9), rng.integers(0, k, 9), rng.standard_normal(9))
    b.op(Opcode.VOUT, rows=rows, n=n, k=k, count=len(rec), first=1,
         list=b.put(Buffer.OUTLIER, rec), act=act_addr, out=corr)
    b.op(Opcode.VSCALE, rows=rows, n=n, add=1, out=out,
         scale=b.put(Buffer.SCALE, fp32(rng, rows)), corr=corr)
    rtl = agree(b.program())
    first = len(b.loads)
    ends = [rtl.log[first + i]["end"] for i in range(4)]
    starts = [rtl.log[first + i]["start"] for i in range(4)]
    assert starts[1:] == ends[:-1]          # back to back, no bubble


# -- random -----------------------------------------------------------------------------------
def random_bench(cfg, rng, ops=10):
    """Random vector instructions of random shapes and fields, each on its own operands."""
    b = Bench(cfg)
    lanes = cfg.timing.vector_lanes
    for _ in range(ops):
        kind = rng.choice(["vdeq", "vscale", "vout", "vsum"])
        rows = int(rng.choice([1, 2, 3, int(rng.integers(1, 2 * lanes + 2))]))
        n = int(rng.integers(1, 2 * lanes + 3))
        if kind == "vdeq":
            deq = Deq(int(rng.integers(0, 3)))
            zero = rng.integers(-2**15, 2**15, n).astype(np.int16)
            sums = rng.integers(-2**31, 2**31, rows).astype(SUMS)
            acc = rng.integers(-2**31, 2**31, (rows, n)).astype(ACC)
            if deq is Deq.LUT:
                zero |= 1
                sums = (sums >> 14).astype(SUMS)
                acc = lut_acc(rng, zero, sums)
            param = np.array([rng.standard_normal()], BLOCK_PARAM) if deq is Deq.BLOCK \
                else params(rng.standard_normal(n), zero)
            first = int(rng.integers(0, 2))
            rs = fp32(rng, rows, 10.0 ** int(rng.integers(-3, 4))) if rng.random() < 0.5 \
                else None
            vdeq(b, rows, n, deq, first, acc, param, None if deq is Deq.BLOCK else sums,
                 out=None if first else fp32(rng, (rows, n), 1e6), rowscale=rs)
        elif kind == "vscale":
            vscale(b, fp32(rng, (rows, n)), fp32(rng, rows),
                   corr=fp32(rng, (rows, n)) if rng.random() < 0.5 else None)
        elif kind == "vout":
            rows = min(rows, 255)
            k, count = int(rng.integers(1, 50)), int(rng.integers(1, 24))
            # few distinct outputs, so that repeats come at every distance
            ns = rng.integers(0, min(n, int(rng.integers(1, 5))), count)
            first = int(rng.integers(0, 2))
            vout(b, rows, n, k, rng.integers(-128, 128, (rows, k)).astype(ACT),
                 outliers(ns, rng.integers(0, k, count), rng.standard_normal(count)), first,
                 out=None if first else fp32(rng, (rows, n)))
        else:
            act = rng.integers(-128, 128, (rows, n)).astype(ACT)
            b.op(Opcode.VSUM, rows=rows, cols=n, act=b.put(Buffer.ACT, act),
                 sums=b.space(Buffer.TABLE, rows * SUMS.itemsize))
    return b


@pytest.mark.parametrize("kind", ["lut", "mac"])
def test_random_programs(kind):
    """Random vector instructions (BITLUT_SEED) on the small `lut` and `mac` cores."""
    s = seed()
    print(f"seed={s}")
    cfg = small(kind)
    rng = np.random.default_rng([s, ord(kind[0])])
    prog = random_bench(cfg, rng, ops=16 if kind == "lut" else 8).program()
    try:
        agree(prog, cfg)
    except AssertionError as e:
        raise AssertionError(f"{kind} seed={s}: {e}") from e
