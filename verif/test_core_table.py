"""The core's table unit (`rtl.table_seq`) on whole programs: DMA the operands in, run `tbl`,
`gather` or `cbx`, store the results, and compare with the executor (the DRAM image, bit for
bit) and with the cycle model (total cycles and every instruction's events).

One program per config holds many cases (a core takes seconds to elaborate): directed corners
(extreme activations and centroids, every codebook width, int8 and int16 centroids, symmetric
and full tables, group sizes, one row, odd group counts, partial chunks) and seeded random
cases (`BITLUT_SEED`, printed).
"""

import dataclasses

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from arch import config, timing
from arch.isa import Buffer, Insn, Mode, Opcode, Unit, encode
from arch.program import Program
from bitlut.formats import CODEBOOK_BITS
from rtl import table_seq
from rtl.common import INSN
from rtl.core import ErrCode
from rtl.table_unit import TableUnit, codebook_bits
from sim.executor import Executor

from . import core_tb
from .configs import small
from .harness import seed

LOAD, TABLE, STORE = (1 << u.value for u in (Unit.LOAD, Unit.TABLE, Unit.STORE))


class Programs:
    """A program built case by case: each case loads its operands into fresh scratchpad
    regions, runs one or more table-unit instructions on them and stores every result."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.dram = bytearray()
        self.insns = []
        self.next = {b: 0 for b in Buffer}
        self.ops = []                          # index of each case's table-unit instructions

    def _dram(self, raw):
        addr = -(-len(self.dram) // 64) * 64
        self.dram += bytes(addr - len(self.dram)) + raw
        return addr

    def _sram(self, buf, nbytes, skew):
        """A fresh region of `buf`, `skew` bytes past a 64-byte boundary (unaligned ports)."""
        addr = -(-self.next[buf] // 64) * 64 + skew
        self.next[buf] = addr + nbytes
        return addr

    def _dma(self, op, buf, sram, dram, nbytes, **tok):
        self.insns.append(Insn(op, dict(buf=buf, sram=sram, dram=dram, rows=1, row_bytes=nbytes,
                                        dram_stride=nbytes), **tok))

    def case(self, loads, ops, outs):
        """`loads`: (buffer, skew, array) operands; `ops(addrs, outs)` -> the instructions given
        the operands' and the outputs' scratchpad addresses; `outs`: (buffer, skew, bytes)."""
        addrs = []
        for k, (buf, skew, arr) in enumerate(loads):
            raw = np.ascontiguousarray(arr).tobytes()
            addrs.append(self._sram(buf, len(raw), skew))
            self._dma(Opcode.LOAD, buf, addrs[-1], self._dram(raw), len(raw),
                      signal=TABLE if k == len(loads) - 1 else 0)
        out_addrs = [self._sram(buf, nbytes, skew) for buf, skew, nbytes in outs]
        insns = ops(addrs, out_addrs)
        for k, insn in enumerate(insns):
            self.insns.append(dataclasses.replace(insn, wait=LOAD if k == 0 else 0,
                                                  signal=STORE if k == len(insns) - 1 else 0))
        self.ops.append(tuple(range(len(self.insns) - len(insns), len(self.insns))))
        for k, ((buf, _, nbytes), addr) in enumerate(zip(outs, out_addrs, strict=True)):
            self._dma(Opcode.STORE, buf, addr, self._dram(bytes(nbytes)), nbytes,
                      wait=TABLE if k == 0 else 0)

    def program(self):
        words = [encode(i) for i in self.insns + [Insn(Opcode.FINISH)]]
        return Program(words, np.frombuffer(bytes(self.dram) + bytes(64), np.uint8).copy(), {})


def add_tbl(p, mode, rows, ngroups, x, cb=None, bits=1, repeat=1):
    """A `tbl` case (`repeat` back-to-back `tbl`s over the same operands, each with its own
    outputs)."""
    cfg = p.cfg
    lay = table_seq.tbl_layout(cfg, mode, bits)
    tbytes = rows * ngroups * lay["entries"] * cfg.table_entry_bytes
    loads = [(Buffer.ACT, 5, x.astype(np.int8))]
    if cb is not None:
        loads.append((Buffer.CODEBOOK, 2 * cfg.table_entry_bytes,
                      cb.astype(cfg.centroid_dtype)))
    outs = [(Buffer.TABLE, 2 * cfg.table_entry_bytes, tbytes)] * repeat
    if mode is Mode.UNIFORM:
        outs += [(Buffer.TABLE, 12, 4 * rows)] * repeat

    def ops(a, o):
        return [Insn(Opcode.TBL, dict(mode=mode, bits=bits, rows=rows, ngroups=ngroups,
                                      act=a[0], cb=a[1] if cb is not None else 0, tbl=o[k],
                                      sums=o[repeat + k] if mode is Mode.UNIFORM else 0))
                for k in range(repeat)]
    p.case(loads, ops, outs)


def add_gather(p, rows, cols, x, idx):
    p.case([(Buffer.ACT, 3, x.astype(np.int8)), (Buffer.CODEBOOK, 6, idx.astype("<u2"))],
           lambda a, o: [Insn(Opcode.GATHER, dict(rows=rows, cols=cols, src=a[0], dst=o[0],
                                                  idx=a[1]))],
           [(Buffer.ACT, 7, rows * cols)])


def add_cbx(p, n, cols, bits, codes, cb):
    from arch import image
    cfg = p.cfg
    cb = cb.astype(cfg.centroid_dtype)
    packed = image.codes_layout(n, cols, bits).encode(codes)
    p.case([(Buffer.WEIGHT, 9, packed), (Buffer.CODEBOOK, 4, cb)],
           lambda a, o: [Insn(Opcode.CBX, dict(n=n, cols=cols, bits=bits, src=a[0], dst=o[0],
                                               cb=a[1]))],
           [(Buffer.WEIGHT, 2 * cb.itemsize, n * cols * cb.itemsize)])


def check(p, what):
    """Run `p`'s program on the executor, the cycle model and the core; compare all three."""
    cfg, prog = p.cfg, p.program()
    ex = Executor(cfg, prog)
    ex.run()
    assert not np.array_equal(ex.dram, prog.dram), f"{what}: the program stores nothing new"
    return core_tb.assert_agrees(cfg, prog, what=what)[0]


def acts(rng, shape, kind="random"):
    """int8 activations: random, all +127 / -127, or alternating +-127."""
    if kind == "max":
        return np.full(shape, 127)
    if kind == "min":
        return np.full(shape, -127)
    if kind == "alt":
        return np.where(np.indices(shape).sum(0) % 2, 127, -127)
    return rng.integers(-128, 128, shape)


def centroids(cfg, rng, n, bits, kind="random"):
    """Centroids [n, 2^bits]: random, or the extremes +-max alternating."""
    hi = (1 << (cfg.pe.centroid_bits - 1)) - 1
    if kind == "max":
        return np.where(np.arange(1 << bits) % 2, hi, -hi - 1)[None, :].repeat(n, 0)
    return rng.integers(-hi - 1, hi + 1, (n, 1 << bits))


def add_codebook(p, rng, rows, ngroups, bits, kind="random"):
    gc = p.cfg.codebook_group(bits)
    x = acts(rng, (rows, ngroups * gc), "alt" if kind == "max" else kind)
    add_tbl(p, Mode.CODEBOOK, rows, ngroups, x, centroids(p.cfg, rng, ngroups * gc, bits, kind),
            bits)


def add_stream_cases(p, rng):
    """gather and cbx: one row, partial chunks, chunks that span several rows' worth."""
    lanes = p.cfg.pe.cols
    for rows, cols in ((1, 1), (2, lanes), (3, 2 * lanes + 1), (2, lanes - 1)):
        idx = rng.permutation(cols) if rows != 2 else rng.integers(0, cols, cols)
        add_gather(p, rows, cols, acts(rng, (rows, cols)), idx)
    for bits in CODEBOOK_BITS:
        for n, cols in ((1, 1), (3, 2 * lanes + 3), (2, lanes)):
            codes = rng.integers(0, 1 << bits, (n, cols))
            kind = "max" if n == 1 else "random"
            add_cbx(p, n, cols, bits, codes, centroids(p.cfg, rng, cols, bits, kind))


# -- directed ----------------------------------------------------------------------------------
def test_table_unit_on_the_shipped_lut_shape():
    """Uniform corners, every codebook width with int16 centroids, back-to-back tbls, gather
    and cbx, in one program."""
    cfg = small("lut")
    rng = np.random.default_rng(seed())
    p = Programs(cfg)
    g = cfg.pe.group
    for rows, ngroups, kind in ((2, 3, "random"), (1, 1, "max"), (1, 5, "min"), (3, 1, "alt")):
        add_tbl(p, Mode.UNIFORM, rows, ngroups, acts(rng, (rows, ngroups * g), kind))
    add_tbl(p, Mode.UNIFORM, 2, 3, acts(rng, (2, 3 * g)), repeat=2)
    for bits in codebook_bits(cfg):
        add_codebook(p, rng, 2, 3, bits)
        add_codebook(p, rng, 1, 1, bits, "max")
    add_stream_cases(p, rng)
    r = check(p, "lut")
    first, second = p.ops[4]                  # the back-to-back pair: no bubble between them
    assert r.log[second]["start"] == r.log[first]["end"]
    assert r.log[first]["end"] - r.log[first]["start"] == 2 * 3 + table_seq.tbl_latency(cfg)


@pytest.mark.parametrize("pe", [{"centroid_bits": 8}, {"symmetric": False},
                                {"group": 2}, {"group": 3, "symmetric": False}],
                         ids=lambda pe: "-".join(f"{k}={v}" for k, v in pe.items()))
def test_table_unit_variants(pe):
    cfg = small("lut", **pe)
    rng = np.random.default_rng(seed())
    p = Programs(cfg)
    g = cfg.pe.group
    for rows, ngroups, kind in ((3, 5, "random"), (1, 7, "max"), (2, 1, "alt")):
        add_tbl(p, Mode.UNIFORM, rows, ngroups, acts(rng, (rows, ngroups * g), kind))
    for bits in codebook_bits(cfg):
        add_codebook(p, rng, 3, 1, bits, "max")
        add_codebook(p, rng, 1, 5, bits)
    if "centroid_bits" in pe:
        add_stream_cases(p, rng)
    check(p, f"lut {pe}")


@pytest.mark.parametrize("kind", ["mac", "bitserial"])
def test_gather_and_cbx_on_other_arrays(kind):
    cfg = small(kind)
    p = Programs(cfg)
    add_stream_cases(p, np.random.default_rng(seed()))
    check(p, kind)


# -- seeded random -----------------------------------------------------------------------------
def test_table_unit_random():
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    rng = np.random.default_rng(s)
    pe = dict(group=int(rng.choice([2, 3, 4])), symmetric=bool(rng.integers(2)),
              centroid_bits=int(rng.choice([8, 16])))
    cfg = small("lut", **pe)
    p = Programs(cfg)
    for _ in range(12):
        rows, ngroups = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        op = rng.choice(["uniform", "codebook", "gather", "cbx"])
        if op == "uniform":
            add_tbl(p, Mode.UNIFORM, rows, ngroups, acts(rng, (rows, ngroups * cfg.pe.group)))
        elif op == "codebook":
            add_codebook(p, rng, rows, ngroups, int(rng.choice(codebook_bits(cfg))))
        elif op == "gather":
            cols = int(rng.integers(1, 4 * cfg.pe.cols))
            add_gather(p, rows, cols, acts(rng, (rows, cols)), rng.integers(0, cols, cols))
        else:
            cols, bits = int(rng.integers(1, 4 * cfg.pe.cols)), int(rng.choice(CODEBOOK_BITS))
            add_cbx(p, rows, cols, bits, rng.integers(0, 1 << bits, (rows, cols)),
                    centroids(cfg, rng, cols, bits))
    check(p, f"random {pe} seed={s}")


# -- errors ------------------------------------------------------------------------------------
def _in_range(cfg, insn):
    """`table_seq.in_range` of `insn`'s word, evaluated in the simulator."""
    word, ok = Signal(INSN), Signal()
    m = Module()
    m.d.comb += ok.eq(table_seq.in_range(insn.op, getattr(word, insn.op.name.lower()), cfg))
    sim, out = Simulator(m), {}

    async def bench(ctx):
        ctx.set(word.as_value(), encode(insn))
        out["ok"] = ctx.get(ok)
    sim.add_testbench(bench)
    sim.run()
    return out["ok"]


def _tbl(cfg, **f):
    return Insn(Opcode.TBL, dict(mode=Mode.UNIFORM, bits=1, rows=1, ngroups=1, act=0, tbl=0,
                                 cb=0, sums=0) | f)


def _extents(cfg):
    """(instruction, in range) pairs at the edges of each extent."""
    table, act = cfg.sram.bytes("table"), cfg.sram.bytes("act")
    weight, cb = cfg.sram.bytes("weight"), cfg.sram.bytes("codebook")
    tb = cfg.table_entries * cfg.table_entry_bytes
    cb2 = 2 * 4 * cfg.pe.centroid_bits // 8           # 2-bit codebook: 2 columns of 4
    for edge, ok in ((0, True), (1, False)):
        yield _tbl(cfg, rows=2, ngroups=3, tbl=table - 6 * tb + edge), ok
        yield _tbl(cfg, rows=3, sums=table - 12 + edge), ok
        yield _tbl(cfg, ngroups=2, act=act - 2 * cfg.pe.group + edge), ok
        yield _tbl(cfg, mode=Mode.CODEBOOK, bits=2, ngroups=2, cb=cb - 2 * cb2 + edge), ok
        yield Insn(Opcode.GATHER, dict(rows=2, cols=8, src=act - 16 + edge, dst=0, idx=0)), ok
        yield Insn(Opcode.GATHER, dict(rows=2, cols=8, src=0, dst=0, idx=cb - 16 + edge)), ok
        yield Insn(Opcode.CBX, dict(n=1, cols=8, bits=3, src=weight - 3 + edge, dst=0,
                                    cb=0)), ok
        yield Insn(Opcode.CBX, dict(n=2, cols=8, bits=2, src=0, dst=weight - 32 + edge,
                                    cb=0)), ok
    yield _tbl(cfg, mode=Mode.CODEBOOK, bits=1), False            # no 1-bit codebook tables
    yield Insn(Opcode.CBX, dict(n=1, cols=4, bits=5, src=0, dst=64, cb=0)), False


def test_in_range_is_every_extent():
    cfg = small("lut")
    for insn, ok in _extents(cfg):
        assert _in_range(cfg, insn) == ok, insn
    assert _in_range(small("mac"), _tbl(small("mac"))) == 0       # no table unit, no tables


def test_out_of_range_stops_the_core():
    cfg = small("lut")
    p = Programs(cfg)
    p.insns += [Insn(Opcode.NOP), _tbl(cfg, tbl=cfg.sram.bytes("table") - 4)]
    r = core_tb.run(cfg, p.program())
    assert (r.error, r.err_index) == (ErrCode.RANGE, 1)


# -- timing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", config.shipped(), ids=lambda p: p.stem)
def test_shipped_configs_state_the_table_unit_timing(path):
    t = config.load(path).timing
    assert (t.table_read_latency, t.table_stream_latency) == (table_seq.READ_LATENCY,
                                                              table_seq.STREAM_LATENCY)


def test_closed_forms_are_the_sequencers():
    cfg = small("lut")
    t = cfg.timing
    assert table_seq.tbl_latency(cfg) == t.table_read_latency + t.table_latency
    assert TableUnit.pipeline_for(cfg).latency == t.table_latency
    assert timing.table_cycles(cfg, _tbl(cfg, rows=3, ngroups=5)) == 15 + 3
    lanes = cfg.pe.cols
    gather = Insn(Opcode.GATHER, dict(rows=3, cols=2 * lanes + 1, src=0, dst=0, idx=0))
    cbx = Insn(Opcode.CBX, dict(n=3, cols=2 * lanes + 1, bits=2, src=0, dst=0, cb=0))
    for insn in (gather, cbx):
        assert timing.table_unit_stream_cycles(cfg, insn) == 3 * 3 + table_seq.STREAM_LATENCY
