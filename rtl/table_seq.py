"""The table unit of the core: the `tbl` sequencer around `rtl.table_unit.TableUnit`.

Ref: LUT Tensor Core (ISCA'25) §3.1.1–3.1.2 (tables built once per activation group and shared
by every output channel); DESIGN.md section 3 (CLAQ codebook tables).

A unit module of `rtl.core` (see `rtl/vector_unit.py` for the interface). The scratchpad
layouts are `arch.image`'s: uniform mode reads int8 activations [rows, ngroups*g] and writes
tables [rows, ngroups, E] of `table_dtype` and int32 sums [rows]; codebook mode (b = `bits`,
gc = `cfg.codebook_group(b)`) reads activations [rows, ngroups*gc] and centroids
[ngroups*gc, 2^b] of `centroid_dtype` and writes tables [rows, ngroups, 2^(gc*b)].

`tbl` walks its rows x ngroups tables in row-major order, one a cycle, from its start cycle on:
in cycle s + k it reads table k's activations (and, in codebook mode, its group's centroids)
through a scratchpad read port, one cycle later (`SPAD_LATENCY`) feeds them to the table unit
as one beat, and writes the unit's output beat, `TableUnit.DEPTH` cycles after that, straight
into the table buffer. Each row's activation sum (uniform mode) is added up from the same beats
and written after the row's last one, well before the row's last table. So a `tbl` occupies the
unit `rows * ngroups + tbl_latency(cfg)` cycles: its last busy cycle writes its last table.

`gather` and `cbx` walk their rows (`rows`, cbx's `n`) in chunks of `pe.cols` elements, one a
cycle (a row's last chunk may be partial), through two scratchpad reads: the chunk's uint16
indices (gather) or packed codes (cbx), then one read per lane of the element it picks (the
source activation byte, or the centroid of its column's codebook); the chunk is written when
those return. So they occupy the unit `rows * ceil(cols / pe.cols) + STREAM_LATENCY` cycles.
A `cbx` code width must be a codebook width (`bitlut.formats.CODEBOOK_BITS`). The executor's
other checks (gather indices below `cols`, aligned element addresses) are the compiler's to
keep; the core does not repeat them. A `gather` streams, so its `dst` must not overlap its
`src` (the executor copies `src` first).

A `tbl` on a config without a table unit (`pe.kind` other than `lut`) is out of range
(`in_range` is 0): such a config has no table layout to check its extents against.
"""

import operator

from amaranth.hdl import Cat, Const, Mux, Signal, signed
from amaranth.lib import data

from arch.isa import WORD_BITS, Buffer, Mode, Opcode, Unit
from bitlut.formats import CODEBOOK_BITS

from .common import INSN
from .scratchpad import LATENCY as SPAD_LATENCY
from .table_unit import TableUnit, codebook_bits, table_geometry

__all__ = ["OPCODES", "READ_LATENCY", "STREAM_LATENCY", "tbl_layout", "tbl_latency", "in_range",
           "build"]

OPCODES = (Opcode.TBL, Opcode.GATHER, Opcode.CBX)

#: What the sequencer adds to the table unit's pipeline (`timing.table_read_latency`): the
#: scratchpad read of the activations and centroids in front of each beat.
READ_LATENCY = SPAD_LATENCY

#: Cycles `gather` and `cbx` take beyond one per chunk of `pe.cols` elements
#: (`timing.table_stream_latency`): the read of the chunk's indices or codes, then the lanes'
#: reads of the elements they pick; the chunk is written in the cycle those return.
STREAM_LATENCY = 2 * SPAD_LATENCY


def tbl_latency(cfg):
    """Cycles a `tbl` takes beyond one per table: the scratchpad read in front of the table
    unit plus the table unit's own pipeline (`timing.table_latency`); the output is written
    from the unit's output register in the same cycle."""
    return READ_LATENCY + TableUnit.pipeline_for(cfg).latency


def tbl_layout(cfg, mode, bits=None):
    """The per-table sizes of a `tbl` in `mode` (code width `bits` in codebook mode): a dict
    with `x` (activation bytes read per table), `cb` (centroid bytes read per group, 0 in
    uniform mode) and `entries` (table entries written per table)."""
    if Mode(mode) is Mode.UNIFORM:
        return dict(x=cfg.pe.group, cb=0, entries=cfg.table_entries)
    gc = cfg.codebook_group(bits)
    return dict(x=gc, cb=(gc << bits) * (cfg.pe.centroid_bits // 8), entries=1 << (gc * bits))


def _by_mode(cfg, view, key):
    """`tbl_layout(...)[key]` of the instruction in `view`, as a value (the uniform one for a
    code width the config does not support; `in_range` has rejected those)."""
    value = Const(tbl_layout(cfg, Mode.UNIFORM)[key])
    for b in codebook_bits(cfg):
        hit = (view.mode == Mode.CODEBOOK) & (view.bits == b)
        value = Mux(hit, tbl_layout(cfg, Mode.CODEBOOK, b)[key], value)
    return value


def in_range(op, v, cfg, mul=operator.mul):
    """1 when the instruction's extents lie inside their scratchpads (and its code width is
    one the datapath has: `codebook_bits(cfg)` for a codebook `tbl`, `CODEBOOK_BITS` for
    `cbx`); `mul` forms the products of fields (`rtl.core`'s fetch stage registers them)."""
    if op is Opcode.TBL:
        return _tbl_in_range(v, cfg, mul)
    act, weight, cb = (cfg.sram.bytes(n) for n in ("act", "weight", "codebook"))
    if op is Opcode.GATHER:
        elements = mul(v.rows, v.cols)
        return ((v.src + elements <= act) & (v.dst + elements <= act)
                & (v.idx + 2 * v.cols <= cb))
    cbytes = cfg.pe.centroid_bits // 8
    elements = mul(v.n, v.cols)
    return ((v.dst + elements * cbytes <= weight)
            & Cat(*((v.bits == b) & (v.src + ((elements * b + 7) >> 3) <= weight)
                    & (v.cb + v.cols * ((1 << b) * cbytes) <= cb)
                    for b in CODEBOOK_BITS)).any())


def _tbl_in_range(v, cfg, mul):
    if cfg.pe.kind != "lut":
        return Const(0)
    act, table, cb = (cfg.sram.bytes(n) for n in ("act", "table", "codebook"))
    tables = mul(v.rows, v.ngroups)
    eb = cfg.table_entry_bytes
    u = tbl_layout(cfg, Mode.UNIFORM)
    ok = [(v.mode == Mode.UNIFORM) & (v.act + tables * u["x"] <= act)
          & (v.tbl + tables * (u["entries"] * eb) <= table) & (v.sums + 4 * v.rows <= table)]
    for b in codebook_bits(cfg):
        c = tbl_layout(cfg, Mode.CODEBOOK, b)
        ok.append((v.mode == Mode.CODEBOOK) & (v.bits == b) & (v.act + tables * c["x"] <= act)
                  & (v.cb + v.ngroups * c["cb"] <= cb)
                  & (v.tbl + tables * (c["entries"] * eb) <= table))
    return Cat(*ok).any()


def build(b):
    """The table unit's datapaths; `last` is high in the last busy cycle of whichever runs."""
    ctl = b.ctl[Unit.TABLE]
    lasts = [_gather(b, ctl), _cbx(b, ctl)]
    if b.cfg.pe.kind == "lut":
        lasts.append(_tbl(b, ctl))
    b.m.d.comb += ctl["last"].eq(Cat(*lasts).any())


def _fields(b, ctl, op):
    """(go, the running instruction's fields as `op`'s format, its registered fields): `go` is
    its start cycle, in which the fields are the queue head's, then the registered entry's."""
    name = op.name.lower()
    go = ctl["start"] & (data.View(INSN, ctl["insn"]).nop.op == op)
    word = Signal(WORD_BITS, name=f"{name}_word")
    b.m.d.comb += word.eq(Mux(go, ctl["insn"], ctl["cur"].word))
    cur = data.View(INSN, ctl["cur"].word)
    return go, getattr(data.View(INSN, word), name), getattr(cur, name)


def _delay(b, value, stages, name):
    """`value` through `stages` registers (cleared when the core starts a run)."""
    m = b.m
    for k in range(stages):
        q = Signal.like(value, name=f"{name}{k}")
        m.d.sync += q.eq(value)
        with m.If(b.core.start & ~b.run_state):
            m.d.sync += q.eq(0)
        value = q
    return value


def _tbl(b, ctl):
    """The `tbl` sequencer (module docstring); returns its `last`."""
    m, cfg = b.m, b.cfg
    geom = table_geometry(cfg)
    eb = cfg.table_entry_bytes
    tu = TableUnit(cfg)
    m.submodules.table_unit = tu
    x_rd = b.spad[Buffer.ACT].read_port(geom["cols"])
    cq_rd = b.spad[Buffer.CODEBOOK].read_port(geom["slots"] * (cfg.pe.centroid_bits // 8))
    tbl_wr = b.spad[Buffer.TABLE].write_port(geom["entries"] * eb)
    sum_wr = b.spad[Buffer.TABLE].write_port(4)

    go, f, cur = _fields(b, ctl, Opcode.TBL)

    # Read stage: table k's activations and its group's centroids in cycle start + k.
    reading = Signal(name="tbl_reading")
    act_a, cb_a = Signal.like(f.act, name="tbl_act"), Signal.like(f.cb, name="tbl_cb")
    group, row = Signal.like(f.ngroups, name="tbl_group"), Signal.like(f.rows, name="tbl_row")
    active = go | reading
    rd_act, rd_cb = Mux(go, f.act, act_a), Mux(go, f.cb, cb_a)
    rd_group, rd_row = Mux(go, 0, group), Mux(go, 0, row)
    row_end = rd_group == f.ngroups - 1
    last_read = active & row_end & (rd_row == f.rows - 1)
    codebook = f.mode == Mode.CODEBOOK
    m.d.comb += [x_rd.addr.eq(rd_act), x_rd.en.eq(active),
                 cq_rd.addr.eq(rd_cb), cq_rd.en.eq(active & codebook)]
    with m.If(active):
        m.d.sync += [act_a.eq(rd_act + _by_mode(cfg, f, "x")), reading.eq(~last_read)]
        with m.If(row_end):
            m.d.sync += [group.eq(0), row.eq(rd_row + 1), cb_a.eq(f.cb)]
        with m.Else():
            m.d.sync += [group.eq(rd_group + 1), row.eq(rd_row),
                         cb_a.eq(rd_cb + _by_mode(cfg, f, "cb"))]

    # Beat stage (SPAD_LATENCY later): the read data into the table unit.
    beat, beat_row_end = Signal(name="tbl_beat"), Signal(name="tbl_beat_row_end")
    m.d.sync += [beat.eq(active), beat_row_end.eq(row_end)]
    m.d.comb += [tu.i.valid.eq(beat), tu.i.payload.mode.eq(cur.mode),
                 tu.i.payload.bits.eq(cur.bits),
                 tu.i.payload.x.eq(x_rd.data), tu.i.payload.cq.eq(cq_rd.data),
                 tu.o.ready.eq(1)]
    _tbl_sums(b, go, f, beat & (cur.mode == Mode.UNIFORM), beat_row_end, x_rd, sum_wr)

    # Write stage: the table unit's output beat, straight into the table buffer.
    wr_a = Signal.like(f.tbl, name="tbl_wr")
    nbytes = _by_mode(cfg, cur, "entries") * eb
    with m.If(tu.o.valid):
        m.d.sync += wr_a.eq(wr_a + nbytes)
    with m.If(go):
        m.d.sync += wr_a.eq(f.tbl)
    entries = [Signal(signed(8 * eb), name=f"tbl_entry{e}") for e in range(geom["entries"])]
    m.d.comb += [e.eq(tu.o.payload.table[i]) for i, e in enumerate(entries)]
    m.d.comb += [tbl_wr.addr.eq(wr_a), tbl_wr.data.eq(Cat(*entries)),
                 tbl_wr.count.eq(Mux(tu.o.valid, nbytes, 0))]

    # The last busy cycle: the last read's beat leaving the table unit.
    with m.If(b.core.start & ~b.run_state):
        m.d.sync += reading.eq(0)
    return _delay(b, last_read, tbl_latency(cfg), "tbl_last")


def _tbl_sums(b, go, f, valid, row_end, x_rd, wr):
    """Uniform mode: each row's int32 activation sum, from the beats' `g` activations, written
    one cycle after the row's last beat."""
    m, g = b.m, b.cfg.pe.group
    acc, total = Signal(signed(32), name="tbl_acc"), Signal(signed(32), name="tbl_total")
    terms = [x_rd.data.word_select(i, 8).as_signed() for i in range(g)]
    m.d.comb += total.eq(acc + sum(terms))
    en, value = Signal(name="tbl_sum_en"), Signal(32, name="tbl_sum")
    addr = Signal.like(f.sums, name="tbl_sum_addr")
    m.d.sync += [en.eq(valid & row_end), value.eq(total)]
    with m.If(valid):
        m.d.sync += acc.eq(Mux(row_end, 0, total))
    with m.If(en):
        m.d.sync += addr.eq(addr + 4)
    with m.If(go):
        m.d.sync += [acc.eq(0), addr.eq(f.sums)]
    m.d.comb += [wr.addr.eq(addr), wr.data.eq(value), wr.count.eq(Mux(en, 4, 0))]


# -- gather and cbx ----------------------------------------------------------------------------
def _chunks(b, go, rows, cols, name):
    """The walk of `gather` and `cbx`: each of `rows` rows of `cols` elements in chunks of
    `pe.cols`, one chunk a cycle from the start cycle on (a row's last chunk may be partial).
    Returns this cycle's (active, col, flat, count, last): the chunk's first column and its
    first element's row-major index, the elements in it, and whether it is the last."""
    m, lanes = b.m, b.cfg.pe.cols
    reading = Signal(name=f"{name}_reading")
    row_r, col_r = Signal.like(rows, name=f"{name}_row"), Signal.like(cols, name=f"{name}_col")
    flat_r = Signal(32, name=f"{name}_flat")
    active = go | reading
    row, col, flat = Mux(go, 0, row_r), Mux(go, 0, col_r), Mux(go, 0, flat_r)
    row_end = col + lanes >= cols
    last = active & row_end & (row == rows - 1)
    count = Signal(range(lanes + 1), name=f"{name}_count")
    m.d.comb += count.eq(Mux(row_end, cols - col, lanes))
    with m.If(active):
        m.d.sync += [reading.eq(~last), flat_r.eq(flat + count)]
        with m.If(row_end):
            m.d.sync += [row_r.eq(row + 1), col_r.eq(0)]
        with m.Else():
            m.d.sync += [row_r.eq(row), col_r.eq(col + lanes)]
    with m.If(b.core.start & ~b.run_state):
        m.d.sync += reading.eq(0)
    return active, col, flat, count, last


def _stage(b, name, values):
    """`values` ({name: value}) registered: the next pipeline stage's copies."""
    out = {k: Signal(v.shape(), name=f"{name}_{k}") for k, v in values.items()}
    b.m.d.sync += [out[k].eq(v) for k, v in values.items()]
    return out


def _gather(b, ctl):
    """`gather`: in cycle t the chunk's `pe.cols` uint16 indices are read, in t + 1 each lane
    reads the source byte its index picks in the chunk's row, in t + 2 the chunk is written."""
    m, lanes = b.m, b.cfg.pe.cols
    go, f, _ = _fields(b, ctl, Opcode.GATHER)
    idx_rd = b.spad[Buffer.CODEBOOK].read_port(2 * lanes)
    src_rd = [b.spad[Buffer.ACT].read_port(1) for _ in range(lanes)]
    wr = b.spad[Buffer.ACT].write_port(lanes)
    active, col, flat, count, last = _chunks(b, go, f.rows, f.cols, "gather")
    m.d.comb += [idx_rd.addr.eq(f.idx + 2 * col), idx_rd.en.eq(active)]
    s1 = _stage(b, "gather1", {"valid": active, "base": (f.src + flat - col)[:32],
                               "dst": (f.dst + flat)[:32], "count": count})
    for i, rp in enumerate(src_rd):
        m.d.comb += [rp.addr.eq(s1["base"] + idx_rd.data.word_select(i, 16)),
                     rp.en.eq(s1["valid"])]
    s2 = _stage(b, "gather2", {k: s1[k] for k in ("valid", "dst", "count")})
    m.d.comb += [wr.addr.eq(s2["dst"]), wr.data.eq(Cat(*(rp.data for rp in src_rd))),
                 wr.count.eq(Mux(s2["valid"], s2["count"], 0))]
    return _delay(b, last, STREAM_LATENCY, "gather_last")


def _cbx(b, ctl):
    """`cbx`: in cycle t the chunk's `pe.cols` packed codes are read (at any bit offset), in
    t + 1 each lane reads the centroid its code picks in its column's codebook, in t + 2 the
    chunk's centroids are written."""
    m, cfg, lanes = b.m, b.cfg, b.cfg.pe.cols
    cbytes, widest = cfg.pe.centroid_bits // 8, max(CODEBOOK_BITS)
    go, f, cur = _fields(b, ctl, Opcode.CBX)
    code_rd = b.spad[Buffer.WEIGHT].read_port(-(-(7 + lanes * widest) // 8))
    cb_rd = [b.spad[Buffer.CODEBOOK].read_port(cbytes) for _ in range(lanes)]
    wr = b.spad[Buffer.WEIGHT].write_port(lanes * cbytes)
    active, col, flat, count, last = _chunks(b, go, f.n, f.cols, "cbx")
    bit = Signal(36, name="cbx_bit")
    m.d.comb += [bit.eq(flat * f.bits), code_rd.addr.eq(f.src + bit[3:]),
                 code_rd.en.eq(active)]
    s1 = _stage(b, "cbx1", {"valid": active, "shift": bit[:3], "col": col,
                            "dst": (f.dst + flat * cbytes)[:32], "count": count})
    window = Signal(lanes * widest, name="cbx_window")
    m.d.comb += window.eq(code_rd.data >> s1["shift"])
    mask = Signal(widest, name="cbx_mask")
    m.d.comb += mask.eq((Const(1, widest + 1) << cur.bits) - 1)
    for i, rp in enumerate(cb_rd):
        code = window.bit_select(i * cur.bits, widest) & mask
        slot = ((s1["col"] + i) << cur.bits) + code
        m.d.comb += [rp.addr.eq(cur.cb + slot * cbytes), rp.en.eq(s1["valid"])]
    s2 = _stage(b, "cbx2", {k: s1[k] for k in ("valid", "dst", "count")})
    m.d.comb += [wr.addr.eq(s2["dst"]), wr.data.eq(Cat(*(rp.data for rp in cb_rd))),
                 wr.count.eq(Mux(s2["valid"], s2["count"] * cbytes, 0))]
    return _delay(b, last, STREAM_LATENCY, "cbx_last")
