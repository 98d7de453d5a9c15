"""The vector unit of the core: `vsum` (and, to come, `vdeq`, `vscale`, `vout` in fp32 with
`rtl.fp32`).

A unit module of `rtl.core` gives its `OPCODES`, an `in_range(op, view, cfg)` check of the
instruction's scratchpad extents, and `build(b)`, which adds its datapath to the core being
elaborated (`b`, an `rtl.core._Build`): it reads the unit's control `b.ctl[unit]` (`start`,
`insn`, `cur`, and drives `last` in the instruction's last busy cycle, never in its start
cycle) and adds the scratchpad ports it needs (`b.spad[Buffer.X].read_port(nbytes)`).

Timing: every vector instruction takes its read cycles plus `DEPTH`, the register stages after
its last read address, whatever the op (one pipeline depth for the unit, `timing.vector_latency`).
"""

from amaranth.hdl import Mux, Signal, signed
from amaranth.lib import data

from arch.isa import Buffer, Opcode, Unit

from .common import INSN
from .scratchpad import LATENCY as SPAD_LATENCY

__all__ = ["OPCODES", "DEPTH", "in_range", "build"]

OPCODES = (Opcode.VSUM,)

#: Register stages after a vector instruction's last read address (`timing.vector_latency`).
DEPTH = 4


def in_range(op, v, cfg):
    """1 when the instruction's extents lie inside their scratchpads."""
    return ((v.act + v.rows * v.cols <= cfg.sram.bytes("act"))
            & (v.sums + 4 * v.rows <= cfg.sram.bytes("table")))


def build(b):
    """`vsum`: each row's `cols` int8 activations, `vector_lanes` a cycle, summed into an
    int32 in the table buffer. The unit walks rows one after another (a row's last chunk
    may be partial), so it takes rows * ceil(cols / lanes) + DEPTH cycles."""
    m, cfg = b.m, b.cfg
    ctl = b.ctl[Unit.VECTOR]
    lanes = cfg.timing.vector_lanes
    rd = b.spad[Buffer.ACT].read_port(min(lanes, b.W))
    wr = b.spad[Buffer.TABLE].write_port(4)
    v = data.View(INSN, ctl["cur"].word).vsum
    vs = data.View(INSN, ctl["insn"]).vsum
    row, col = Signal.like(v.rows), Signal.like(v.cols)       # next chunk to read
    addr = Signal(32)
    reading = Signal()
    left = Signal(range(DEPTH + 1))                   # drain after the last read
    with m.If(ctl["start"]):
        m.d.sync += [row.eq(0), col.eq(0), addr.eq(vs.act), reading.eq(1)]
    rows, cols = v.rows, v.cols
    last_chunk = col + lanes >= cols
    last_read = reading & last_chunk & (row == rows - 1)
    m.d.comb += [rd.addr.eq(addr), rd.en.eq(reading)]
    with m.If(reading):
        with m.If(last_chunk):
            m.d.sync += [col.eq(0), row.eq(row + 1), addr.eq(addr + cols - col)]
            with m.If(row == rows - 1):
                m.d.sync += reading.eq(0)
        with m.Else():
            m.d.sync += [col.eq(col + lanes), addr.eq(addr + lanes)]
    # stage 1: the chunk's bytes (those inside the row) summed
    valid_q = Signal()
    count_q = Signal(range(lanes + 1))
    end_q = Signal()
    row_q = Signal.like(row)
    m.d.sync += [valid_q.eq(reading),
                 count_q.eq(Mux(last_chunk, cols - col, lanes)),
                 end_q.eq(last_chunk), row_q.eq(row)]
    part = Signal(signed(8 + lanes.bit_length()))
    terms = [Mux(i < count_q, rd.data.word_select(i, 8).as_signed(), 0) for i in range(lanes)]
    m.d.comb += part.eq(sum(terms))
    acc = Signal(32)
    total = Signal(32)
    m.d.comb += total.eq(acc + part)
    with m.If(valid_q):
        m.d.sync += acc.eq(Mux(end_q, 0, total))
    with m.If(ctl["start"]):
        m.d.sync += acc.eq(0)
    # a row's sum goes to the table buffer through DEPTH - SPAD_LATENCY - 1 registers
    pipe = [(valid_q & end_q, total, v.sums + 4 * row_q)]
    for k in range(DEPTH - SPAD_LATENCY - 1):
        en, val, a = Signal(name=f"vsum_en{k}"), Signal(32, name=f"vsum_v{k}"), \
            Signal(32, name=f"vsum_a{k}")
        m.d.sync += [en.eq(pipe[-1][0]), val.eq(pipe[-1][1]), a.eq(pipe[-1][2])]
        pipe.append((en, val, a))
    en, val, a = pipe[-1]
    m.d.comb += [wr.addr.eq(a), wr.data.eq(val), wr.count.eq(Mux(en, 4, 0))]
    # occupancy: reads, then DEPTH cycles; the last one writes the last sum
    draining = Signal()
    with m.If(last_read):
        m.d.sync += [draining.eq(1), left.eq(DEPTH - 1)]
    with m.If(draining):
        m.d.sync += left.eq(left - 1)
        with m.If(left == 1):
            m.d.sync += draining.eq(0)
    m.d.comb += ctl["last"].eq(draining & (left == 1))
