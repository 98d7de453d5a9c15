# amaranth: UnusedElaboratable=no
"""The vector unit of the core: `vsum` in integers; `vdeq`, `vscale` and `vout` in IEEE 754
binary32 with `rtl.fp32`, bit-exact with `sim.executor` (`_vsum`, `_vdeq`, `_vscale`, `_vout`).

A unit module of `rtl.core` gives its `OPCODES`, an `in_range(op, view, cfg)` check of the
instruction's scratchpad extents, and `build(b)`, which adds its datapath to the core being
elaborated (`b`, an `rtl.core._Build`): it reads the unit's control `b.ctl[unit]` (`start`,
`insn`, `cur`, and drives `last` in the instruction's last busy cycle, never in its start
cycle) and adds the scratchpad ports it needs (`b.spad[Buffer.X].read_port(nbytes)`).

Datapath. From the cycle after the start, a walker issues one step a cycle: a chunk of up to
`vector_lanes` consecutive elements of one row (`vsum`, `vdeq`, `vscale`, and `vout`'s zeroing
pass), or one (outlier record, row) slot of `vout`. The step's descriptor moves down a line of
registers, one tap a cycle, and every op reads its scratchpads, feeds its fp32 units and writes
its results at fixed taps, placed so that every op writes in tap `DEPTH - 1` (the shorter ops
read later; `vdeq` with `rowscale` writes `ROWSCALE_DEPTH` taps later, below). So an instruction
takes its steps plus `DEPTH` cycles whatever the data (`arch.timing.vector_insn_cycles`; with
`rowscale`, plus `ROWSCALE_DEPTH` more); its last busy cycle writes its last result, after which the
line is empty, and the next instruction can start in the next cycle (the routing of the lanes is
the running instruction's, `cur`, which changes only at a start).

- `vsum`, `vdeq`, `vscale`: rows one after another, ceil(n / lanes) chunks a row (`vsum`: cols),
  so rows * ceil(n / lanes) steps; all lanes (`vsum` an int8 adder tree, the others per lane an
  `IntToF32`, an `F16ToF32`, an `FMul` and an `FAdd`, and `vdeq`'s `rowscale` `FMul`).
- `vdeq` with `rowscale` (`pe.act_quant: token_group`): the product `scale * P` goes through one
  more `FMul`, by the row's fp32 row scale (one word a row, broadcast to the lanes, read by a
  port of its own on the scale buffer: the records' port is busy every step), before the adder.
  Its adder, its read of the old output and its write sit `ROWSCALE_DEPTH` taps later than
  every other op's, so this one instruction takes its steps plus `DEPTH + ROWSCALE_DEPTH`
  cycles (`arch.timing.ROWSCALE_CYCLES`); its last busy cycle is still its last write.
- `vout`: first * rows * ceil(n / lanes) + count * max(rows, RECORD_SLOTS) steps, on lane 0
  only: records in list order, each record its `rows` slots but at least `RECORD_SLOTS` (the
  adder's latency). A record's rows lie `n` outputs and `k` activations apart and its (n, k)
  are data, which contiguous scratchpad ports cannot serve lanes-wide. The float32 sum order is
  the list order, so a record must add to the running sums its predecessor left: with
  `RECORD_SLOTS` slots a record's sums are out of the adder by the time the next record's adder
  input needs them, and the last `SPAD_LATENCY + 1` writes are forwarded there (the scratchpad
  read that went out earlier missed them). With `first`, a zeroing pass of rows * ceil(n /
  lanes) chunks comes first, written straight from the walker.

An op without its addend (`vdeq` with `first`, `vscale` without `add`) adds -0.0, the identity
of IEEE 754 addition (x + -0 = x for every x, zeros included, §6.3), so one path serves both
(a NaN stays a NaN: every NaN result of `rtl.fp32` is `QNAN`).

Hazards the datapath does not check (the executor raises or the compiler never emits them):
`vout` records with n or k past the instruction's `n` / `k`; `vscale` with `corr` overlapping
`out` (the executor reads all of `out + corr` before writing).
"""

import operator
from types import SimpleNamespace

from amaranth.hdl import Cat, Mux, Shape, Signal
from amaranth.lib import data

from arch.image import ACC, ACT, BLOCK_PARAM, OUT, OUTLIER, PARAM, ROW_SCALE, SUMS
from arch.isa import LAYOUTS, Buffer, Deq, Opcode, Unit

from .common import INSN
from .fp32 import F16ToF32, FAdd, FMul, IntToF32
from .scratchpad import LATENCY as SPAD_LATENCY

__all__ = ["OPCODES", "DEPTH", "ROWSCALE_DEPTH", "RECORD_SLOTS", "P_WIDTH", "in_range", "build"]

OPCODES = (Opcode.VSUM, Opcode.VDEQ, Opcode.VSCALE, Opcode.VOUT)


def _bits(dtype, name=None):
    """(bit offset, bit width) of field `name` of a record dtype (or of the whole element)."""
    if name is None:
        return 0, 8 * dtype.itemsize
    field, offset = dtype.fields[name][:2]
    return 8 * offset, 8 * field.itemsize


def _field(value, dtype, name=None):
    offset, width = _bits(dtype, name)
    return value[offset:offset + width]


#: Width of vdeq's P = acc - zero * sums, exact: the product's width, one bit for the difference.
P_WIDTH = max(_bits(ACC)[1], _bits(PARAM, "zero")[1] + _bits(SUMS)[1]) + 1

_I2F, _H2F = IntToF32(P_WIDTH).latency, F16ToF32().latency
_MUL, _ADD = FMul().latency, FAdd().latency

# Taps (cycles after a step's issue) of the longest ops, vdeq and vout: the operands are read in
# tap 0; in the next SPAD_LATENCY taps vout reads the activation its record names (vdeq forms P
# and holds it); then IntToF32, FMul (by the scale or the outlier value) and FAdd (to the running
# output, read SPAD_LATENCY taps before the adder needs it); the write.
T_CONVERT = 2 * SPAD_LATENCY                    # IntToF32 input
T_MUL = T_CONVERT + _I2F                        # FMul input
T_ADD = T_MUL + _MUL                            # FAdd input
T_WRITE = T_ADD + _ADD                          # every op's results go to the scratchpad
#: Register stages from a step's issue to its write, the write included: each vector instruction
#: takes its steps plus `DEPTH` cycles (`timing.vector_latency`).
DEPTH = T_WRITE + 1
# vscale, FAdd then FMul, padded by reading later: out and corr read, then the row scale.
T_SCALE_ADD = T_WRITE - _MUL - _ADD             # FAdd input (out + corr)
T_SCALE_MUL = T_SCALE_ADD + _ADD                # FMul input (by the row scale)
# vsum: the chunk read, summed into the row's sum and written in the data's cycle.
T_VSUM_READ = T_WRITE - SPAD_LATENCY
#: Taps a `vdeq` with `rowscale` adds: the row-scale `FMul` between the scale's and the adder
#: (`arch.timing.ROWSCALE_CYCLES` states it). Its operand, the row scale, is read
#: `SPAD_LATENCY` taps before the multiplier's input, tap `T_ADD`.
ROWSCALE_DEPTH = _MUL

#: Fewest slots of one vout record: the adder's latency, so that a record's running sums have
#: left the adder when the next record's adder input needs them (`arch.timing` states it).
RECORD_SLOTS = _ADD

#: -0.0, the identity of binary32 addition.
NEG_ZERO = 0x8000_0000


def in_range(op, v, cfg, mul=operator.mul):
    """1 when the instruction's extents (those the executor reads or writes) lie inside their
    scratchpads; `mul` forms the products of fields (`rtl.core`'s fetch stage registers
    them)."""
    def fits(addr, nbytes, buf):
        return addr + nbytes <= cfg.sram.bytes(buf.name.lower())
    if op is Opcode.VSUM:
        return (fits(v.act, mul(v.rows, v.cols) * ACT.itemsize, Buffer.ACT)
                & fits(v.sums, v.rows * SUMS.itemsize, Buffer.TABLE))
    if op is Opcode.VDEQ:
        block = v.deq == Deq.BLOCK
        tile = mul(v.rows, v.n)
        return (fits(v.acc, tile * ACC.itemsize, Buffer.ACC)
                & fits(v.out, tile * OUT.itemsize, Buffer.OUT)
                & fits(v.param, _param_bytes(v), Buffer.SCALE)
                & (~v.rowscale | fits(v.param + _param_bytes(v), v.rows * ROW_SCALE.itemsize,
                                      Buffer.SCALE))
                & (block | fits(v.sums, v.rows * SUMS.itemsize, Buffer.TABLE)))
    if op is Opcode.VSCALE:
        tile = mul(v.rows, v.n) * OUT.itemsize
        return (fits(v.out, tile, Buffer.OUT)
                & fits(v.scale, v.rows * ROW_SCALE.itemsize, Buffer.SCALE)
                & (~v.add | fits(v.corr, tile, Buffer.OUT)))
    if op is Opcode.VOUT:
        return (fits(v.list, v.count * OUTLIER.itemsize, Buffer.OUTLIER)
                & fits(v.act, mul(v.rows, v.k) * ACT.itemsize, Buffer.ACT)
                & fits(v.out, mul(v.rows, v.n) * OUT.itemsize, Buffer.OUT))
    raise ValueError(f"`op` must be one of {', '.join(o.name for o in OPCODES)}, not {op!r}")


def _param_bytes(v):
    """Bytes of the scale records a `vdeq` (view `v`) reads: `arch.image.param_bytes`, whose
    end is where its row scales begin (`arch.image.rowscale_offset`)."""
    return Mux(v.deq == Deq.BLOCK, BLOCK_PARAM.itemsize, v.n * PARAM.itemsize)


def _shape(op, name):
    return Shape.cast(LAYOUTS[op][name].shape)


def _step_layout(lanes):
    """What one walker step tells the taps behind it."""
    return data.StructLayout({
        "valid": 1,                                 # the step does work (not a padding slot)
        "end": 1,                                   # the instruction's last step
        "record": 1,                                # vout: a (record, row) slot, not a chunk
        "late": 1,                                  # vdeq with rowscale: written later
        "elem": 32,                                 # a chunk's first element: row * n + col
        "col": _shape(Opcode.VDEQ, "n"),
        "row": _shape(Opcode.VDEQ, "rows"),         # the chunk's row, or the slot's
        "cnt": range(lanes + 1),                    # elements in the chunk
        "row_end": 1,                               # the row's last chunk
        "rec": _shape(Opcode.VOUT, "count"),        # vout: the record
        "rk": 32,                                   # vout: row * k
        "rn": 32,                                   # vout: row * n
    })


def _line(m, value, length, name):
    """`value` and its copies 1 .. `length` cycles late: `line[d]` is `value` d cycles ago."""
    line = [value]
    for d in range(1, length + 1):
        reg = Signal(value.shape(), name=f"{name}_d{d}")
        m.d.sync += reg.eq(line[-1])
        line.append(reg)
    return line


def build(b):
    """Add the vector unit to the core being elaborated (`b`)."""
    m, cfg = b.m, b.cfg
    lanes = cfg.timing.vector_lanes
    cur = data.View(INSN, b.ctl[Unit.VECTOR]["cur"].word)
    op = cur.nop.op
    ports = SimpleNamespace(
        act=b.spad[Buffer.ACT].read_port(lanes),
        sums=b.spad[Buffer.TABLE].read_port(SUMS.itemsize),
        sums_w=b.spad[Buffer.TABLE].write_port(SUMS.itemsize),
        acc=b.spad[Buffer.ACC].read_port(lanes * ACC.itemsize),
        scale=b.spad[Buffer.SCALE].read_port(lanes * PARAM.itemsize),
        outlier=b.spad[Buffer.OUTLIER].read_port(OUTLIER.itemsize),
        rowscale=b.spad[Buffer.SCALE].read_port(ROW_SCALE.itemsize),  # vdeq's row scale
        out=b.spad[Buffer.OUT].read_port(lanes * OUT.itemsize),      # out, or vout's o
        corr=b.spad[Buffer.OUT].read_port(lanes * OUT.itemsize),
        out_w=b.spad[Buffer.OUT].write_port(lanes * OUT.itemsize),
    )
    taps = _walker(b, cur, op, lanes)
    _vsum(m, cur, op, taps, ports, lanes, b.ctl[Unit.VECTOR]["start"])
    _fp32(m, cur, op, taps, ports, lanes)
    late = _rowscale(cur, op)
    m.d.comb += b.ctl[Unit.VECTOR]["last"].eq(
        Mux(late, taps[T_WRITE + ROWSCALE_DEPTH].end, taps[T_WRITE].end))


def _rowscale(cur, op):
    """1 while the running instruction is a `vdeq` with `rowscale` (its write is later)."""
    return (op == Opcode.VDEQ) & cur.vdeq.rowscale


def _walker(b, cur, op, lanes):
    """The steps of the running instruction, one a cycle from the cycle after its start; returns
    the taps: `taps[t]` is the step issued t cycles ago (`taps[0]` this cycle's), up to the
    write of a `vdeq` with `rowscale`."""
    m = b.m
    ctl = b.ctl[Unit.VECTOR]
    restart = b.core.start & ~b.run_state
    rows = Signal(_shape(Opcode.VDEQ, "rows"), name="vec_rows")
    width = Signal(_shape(Opcode.VDEQ, "n"), name="vec_width")    # a row's elements (vsum: cols)
    with m.Switch(op):
        for o in OPCODES:
            with m.Case(o):
                v = getattr(cur, o.name.lower())
                m.d.comb += [rows.eq(v.rows), width.eq(v.cols if o is Opcode.VSUM else v.n)]
    vo = cur.vout
    is_vout = op == Opcode.VOUT
    slots = Mux(vo.rows > RECORD_SLOTS, vo.rows, RECORD_SLOTS)
    layout = _step_layout(lanes)
    active = Signal(name="vec_active")              # steps left to issue
    records = Signal(name="vec_records")            # vout: past its zeroing pass
    row, col = Signal.like(rows, name="vec_row"), Signal.like(width, name="vec_col")
    elem = Signal(32, name="vec_elem")
    rec = Signal(_shape(Opcode.VOUT, "count"), name="vec_rec")
    slot = Signal(_shape(Opcode.VOUT, "rows"), name="vec_slot")
    rk, rn = Signal(32, name="vec_rk"), Signal(32, name="vec_rn")
    step = Signal(layout, name="vec_step")
    row_end = col + lanes >= width
    last_chunk = row_end & (row == rows - 1)
    last_slot = slot == slots - 1
    m.d.comb += [
        step.valid.eq(active & (~records | (slot < vo.rows))),
        step.end.eq(active & Mux(records, last_slot & (rec == vo.count - 1),
                                 last_chunk & ~is_vout)),
        step.record.eq(records), step.late.eq(_rowscale(cur, op)),
        step.elem.eq(elem), step.col.eq(col),
        step.row.eq(Mux(records, slot, row)),
        step.cnt.eq(Mux(row_end, width - col, lanes)), step.row_end.eq(row_end),
        step.rec.eq(rec), step.rk.eq(rk), step.rn.eq(rn),
    ]
    with m.If(active & ~records):
        m.d.sync += elem.eq(elem + step.cnt)
        with m.If(row_end):
            m.d.sync += [col.eq(0), row.eq(row + 1)]
            with m.If(row == rows - 1):
                m.d.sync += [records.eq(is_vout), active.eq(is_vout)]
        with m.Else():
            m.d.sync += col.eq(col + lanes)
    with m.If(active & records):
        with m.If(last_slot):
            m.d.sync += [slot.eq(0), rk.eq(0), rn.eq(0), rec.eq(rec + 1)]
            with m.If(rec == vo.count - 1):
                m.d.sync += active.eq(0)
        with m.Else():
            m.d.sync += [slot.eq(slot + 1), rk.eq(rk + vo.k), rn.eq(rn + vo.n)]
    with m.If(ctl["start"]):
        ins = data.View(INSN, ctl["insn"])
        m.d.sync += [active.eq(1),
                     records.eq((ins.nop.op == Opcode.VOUT) & ~ins.vout.first),
                     row.eq(0), col.eq(0), elem.eq(0), rec.eq(0), slot.eq(0), rk.eq(0),
                     rn.eq(0)]
    with m.If(restart):
        m.d.sync += active.eq(0)
    taps = [step]
    for t in range(1, DEPTH + ROWSCALE_DEPTH):
        tap = Signal(layout, name=f"vec_tap{t}")
        m.d.sync += tap.eq(taps[-1])
        # past every other op's write only a rowscale vdeq's steps go on: a finished op's
        # last steps must not reach the later taps that the next instruction may read
        with m.If(restart | ((t > T_WRITE) & ~taps[-1].late)):
            m.d.sync += [tap.valid.eq(0), tap.end.eq(0)]
        taps.append(tap)
    return taps


def _vsum(m, cur, op, taps, ports, lanes, start):
    """`vsum`: each chunk's int8 activations summed into the row's int32 sum, written to the
    table buffer with the row's last chunk."""
    v = cur.vsum
    mine = op == Opcode.VSUM
    rd, wr = taps[T_VSUM_READ], taps[T_WRITE]
    with m.If(mine):
        m.d.comb += [ports.act.addr.eq(v.act + rd.elem), ports.act.en.eq(rd.valid)]
    terms = [Mux(i < wr.cnt, ports.act.data.word_select(i, 8).as_signed(), 0)
             for i in range(lanes)]
    acc = Signal(32, name="vsum_acc")
    total = Signal(32, name="vsum_total")
    m.d.comb += total.eq(acc + sum(terms))
    with m.If(mine & wr.valid):
        m.d.sync += acc.eq(Mux(wr.row_end, 0, total))
    with m.If(start):
        m.d.sync += acc.eq(0)
    m.d.comb += [ports.sums_w.addr.eq(v.sums + SUMS.itemsize * wr.row),
                 ports.sums_w.data.eq(total),
                 ports.sums_w.count.eq(Mux(mine & wr.valid & wr.row_end, SUMS.itemsize, 0))]


def _fp32(m, cur, op, taps, ports, lanes):
    """`vdeq`, `vscale`, `vout`: the lanes' fp32 units, their operands and the writes."""
    vd, vc, vo = cur.vdeq, cur.vscale, cur.vout
    deq, vout = op == Opcode.VDEQ, op == Opcode.VOUT
    scale_op = op == Opcode.VSCALE
    block = vd.deq == Deq.BLOCK
    w = 8 * OUT.itemsize
    late = _rowscale(cur, op)

    def tap(t, name):
        """Field `name` of tap `t`, or of tap `t + ROWSCALE_DEPTH` for a `vdeq` with
        `rowscale` (its adder and everything after it come later)."""
        return Mux(late, getattr(taps[t + ROWSCALE_DEPTH], name), getattr(taps[t], name))

    # -- reads: vdeq's operands, vout's record in tap 0, its activation when the record is in
    t0, tr = taps[0], taps[SPAD_LATENCY]
    with m.If(deq):
        m.d.comb += [
            ports.acc.addr.eq(vd.acc + ACC.itemsize * t0.elem), ports.acc.en.eq(t0.valid),
            ports.scale.addr.eq(vd.param + Mux(block, 0, PARAM.itemsize * t0.col)),
            ports.scale.en.eq(t0.valid),
            ports.sums.addr.eq(vd.sums + SUMS.itemsize * t0.row), ports.sums.en.eq(t0.valid),
        ]
    record = ports.outlier.data
    rec_n, rec_k = _field(record, OUTLIER, "n"), _field(record, OUTLIER, "k")
    with m.If(vout):
        m.d.comb += [
            ports.outlier.addr.eq(vo.list + OUTLIER.itemsize * t0.rec),
            ports.outlier.en.eq(t0.valid & t0.record),
            ports.act.addr.eq(vo.act + tr.rk + rec_k),
            ports.act.en.eq(tr.valid & tr.record),
        ]
    # vout's output address, from the record's n, for the read of o and the write
    o_addr = _line(m, (vo.out + OUT.itemsize * (tr.rn + rec_n))[:32], T_WRITE - SPAD_LATENCY,
                   "vout_addr")
    # vscale reads out and corr, then (T_SCALE_MUL - SPAD_LATENCY) the row scale
    ts, tm = taps[T_SCALE_ADD - SPAD_LATENCY], taps[T_SCALE_MUL - SPAD_LATENCY]
    t_old = taps[T_ADD - SPAD_LATENCY]
    with m.If(scale_op):
        m.d.comb += [
            ports.out.addr.eq(vc.out + OUT.itemsize * ts.elem), ports.out.en.eq(ts.valid),
            ports.corr.addr.eq(vc.corr + OUT.itemsize * ts.elem), ports.corr.en.eq(ts.valid),
            ports.scale.addr.eq(vc.scale + ROW_SCALE.itemsize * tm.row),
            ports.scale.en.eq(tm.valid),
        ]
    with m.Elif(deq):
        m.d.comb += [ports.out.addr.eq(vd.out + OUT.itemsize * tap(T_ADD - SPAD_LATENCY, "elem")),
                     ports.out.en.eq(tap(T_ADD - SPAD_LATENCY, "valid"))]
    with m.Elif(vout):
        m.d.comb += [ports.out.addr.eq(o_addr[T_ADD - 2 * SPAD_LATENCY]),
                     ports.out.en.eq(t_old.valid & t_old.record)]

    # vdeq's row scale (rowscale), for the row-scale multiplier's input in tap T_ADD
    m.d.comb += [
        ports.rowscale.addr.eq(vd.param + _param_bytes(vd) + ROW_SCALE.itemsize * t_old.row),
        ports.rowscale.en.eq(late & t_old.valid),
    ]
    rs_value = _field(ports.rowscale.data, ROW_SCALE)

    # -- the scale (fp16, or vdeq block's fp32) and vout's value, to their taps
    block_scale = _line(m, _field(ports.scale.data, BLOCK_PARAM, "scale"),
                        T_MUL - SPAD_LATENCY, "vdeq_block")[-1]
    row_scale = _field(ports.scale.data, ROW_SCALE)
    sums = _field(ports.sums.data, SUMS).as_signed()
    writes = []
    for lane in range(lanes):
        param = ports.scale.data.word_select(lane, 8 * PARAM.itemsize)
        acc = ports.acc.data.word_select(lane, 8 * ACC.itemsize).as_signed()
        corr = acc - _field(param, PARAM, "zero").as_signed() * sums
        p = Mux(vd.deq == Deq.BLOCK, acc, Mux(vd.deq == Deq.LUT, corr >> 1, corr))
        p_line = _line(m, p, T_CONVERT - SPAD_LATENCY, f"vdeq_p{lane}")
        half = _field(param, PARAM, "scale")
        if lane == 0:
            half = Mux(vout, _field(record, OUTLIER, "v"), half)
        half_line = _line(m, half, T_MUL - _H2F - SPAD_LATENCY, f"vec_half{lane}")
        i2f, h2f, mul, add = IntToF32(P_WIDTH), F16ToF32(), FMul(), FAdd()
        rsm = FMul()                                # vdeq's rowscale: scale * P, times rs[row]
        for name, unit in (("i2f", i2f), ("h2f", h2f), ("mul", mul), ("add", add),
                           ("rsmul", rsm)):
            m.submodules[f"vec_{name}{lane}"] = unit
        x = ports.act.data[:8].as_signed() if lane == 0 else 0
        m.d.comb += [
            i2f.i.payload.eq(Mux(vout, x, p_line[-1])), i2f.i.valid.eq(taps[T_CONVERT].valid),
            h2f.i.payload.eq(half_line[-1]), h2f.i.valid.eq(taps[T_MUL - _H2F].valid),
        ]
        out_l = ports.out.data.word_select(lane, w)
        corr_l = ports.corr.data.word_select(lane, w)
        with m.If(scale_op):
            m.d.comb += [
                add.i.payload.a.eq(out_l),
                add.i.payload.b.eq(Mux(vc.add, corr_l, NEG_ZERO)),
                add.i.valid.eq(taps[T_SCALE_ADD].valid),
                mul.i.payload.a.eq(add.o.payload), mul.i.payload.b.eq(row_scale),
                mul.i.valid.eq(taps[T_SCALE_MUL].valid),
            ]
        with m.Else():
            old = Mux(vd.first, NEG_ZERO, out_l)
            if lane == 0:
                old = Mux(vout, _forward(m, taps, o_addr, out_l, add.o.payload), old)
            m.d.comb += [
                mul.i.payload.a.eq(Mux(deq & block, block_scale, h2f.o.payload)),
                mul.i.payload.b.eq(i2f.o.payload), mul.i.valid.eq(taps[T_MUL].valid),
                rsm.i.payload.a.eq(mul.o.payload), rsm.i.payload.b.eq(rs_value),
                rsm.i.valid.eq(late & taps[T_ADD].valid),
                add.i.payload.a.eq(old),
                add.i.payload.b.eq(Mux(late, rsm.o.payload, mul.o.payload)),
                add.i.valid.eq(tap(T_ADD, "valid")),
            ]
        writes.append(Mux(scale_op, mul.o.payload, add.o.payload))

    # -- the writes: the lanes in tap T_WRITE; vout's zeroing pass straight from the walker
    tw = taps[T_WRITE]
    wp = ports.out_w
    base = Mux(scale_op, vc.out, vd.out)
    with m.If(vout & t0.valid & ~t0.record):
        m.d.comb += [wp.addr.eq(vo.out + OUT.itemsize * t0.elem), wp.data.eq(0),
                     wp.count.eq(OUT.itemsize * t0.cnt)]
    with m.Elif(vout):
        m.d.comb += [wp.addr.eq(o_addr[T_WRITE - SPAD_LATENCY]), wp.data.eq(writes[0]),
                     wp.count.eq(Mux(tw.valid & tw.record, OUT.itemsize, 0))]
    with m.Elif(deq | scale_op):
        m.d.comb += [wp.addr.eq(base + OUT.itemsize * tap(T_WRITE, "elem")),
                     wp.data.eq(Cat(*writes)),
                     wp.count.eq(Mux(tap(T_WRITE, "valid"), OUT.itemsize * tap(T_WRITE, "cnt"),
                                     0))]


def _forward(m, taps, o_addr, read, result):
    """vout's running sum at the adder's input (tap T_ADD): the scratchpad's word, read
    SPAD_LATENCY cycles before, unless a write it missed (this cycle's, from the adder's output
    `result`, or one of the SPAD_LATENCY before) went to the same address: the latest wins."""
    here = o_addr[T_ADD - SPAD_LATENCY]
    tw = taps[T_WRITE]
    now = SimpleNamespace(valid=tw.valid & tw.record, addr=o_addr[T_WRITE - SPAD_LATENCY],
                          value=result)
    recent = [now]
    for d in range(1, SPAD_LATENCY + 1):
        prev = recent[-1]
        reg = SimpleNamespace(valid=Signal(name=f"vout_fwd{d}_valid"),
                              addr=Signal(32, name=f"vout_fwd{d}_addr"),
                              value=Signal(32, name=f"vout_fwd{d}_value"))
        m.d.sync += [reg.valid.eq(prev.valid), reg.addr.eq(prev.addr), reg.value.eq(prev.value)]
        recent.append(reg)
    value = read
    for w in reversed(recent):                  # the oldest first: later writes override
        value = Mux(w.valid & (w.addr == here), w.value, value)
    return value
