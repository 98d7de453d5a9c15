"""AXI4 for the FPGA shell: the bus signatures, and `AxiDma`, which serves the core's memory port
(docs/core.md, Memory port) as an AXI4 master.

Ref: AMBA AXI and ACE Protocol Specification (ARM IHI 0022E), A3.4: an INCR burst has at most 256
beats and must not cross a 4 KiB boundary; A3.3: a write's data may not be assumed to move
before its address (this master sends a burst's data only after its address was accepted); A5:
one ID, so responses return in order.

`AxiDma` takes the core's commands (one 2-D request per DMA instruction, always accepted: the
core never has more than `dram.outstanding` of each kind in flight, so a queue that deep never
overflows) and turns each row into bursts of bus words, `W = dram.burst_bytes` bytes wide (the
bus is as wide as the core's beats):

- reads: the rows' aligned words are requested burst by burst, running ahead of the data (one
  address walker); a second walker over the same commands takes the data, realigns it to the
  row's byte address and hands the core its beats (a row that starts at offset `o` in a word
  and whose last beat lies inside its last word needs one more beat than words: the walker then
  holds `rready` low for a cycle). `rd_done` follows the command's last beat by one cycle;
- writes: each burst's address is sent, then its words, built from the core's beats rotated to
  the row's offset, with `wstrb` covering only the row's bytes; `wr_done` when the command's
  last burst has its response;
- an error response (`SLVERR`, `DECERR`) ends the command with `rd_error` / `wr_error` instead of
  its done (the core then stops with `ErrCode.BUS`), no further address is sent, and every
  transaction already sent is still completed, so the bus is left idle (`idle`), never hung.

The DRAM address on the bus is `base + dram` (32-bit), so the image can live anywhere.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import valid_signature

__all__ = ["axi4_signature", "axi4_lite_signature", "AxiDma", "BURST_MAX", "BOUNDARY",
           "RESP_OKAY"]

BURST_MAX = 256        # beats in one INCR burst (AXI4)
BOUNDARY = 4096        # bytes: a burst never crosses one
RESP_OKAY = 0


def axi4_signature(addr_width, data_bytes, id_width=1):
    """An AXI4 master's signature (flows as seen from the master): the five channels,
    INCR bursts, one ID."""
    def addr_channel(p):
        return {f"{p}id": Out(id_width), f"{p}addr": Out(addr_width), f"{p}len": Out(8),
                f"{p}size": Out(3), f"{p}burst": Out(2), f"{p}cache": Out(4),
                f"{p}prot": Out(3), f"{p}valid": Out(1), f"{p}ready": In(1)}
    return wiring.Signature({
        **addr_channel("aw"),
        "wdata": Out(8 * data_bytes), "wstrb": Out(data_bytes), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        **addr_channel("ar"),
        "rid": In(id_width), "rdata": In(8 * data_bytes), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def axi4_lite_signature(addr_width=8):
    """An AXI4-Lite master's signature, 32-bit data (a slave uses it flipped)."""
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


class AxiDma(wiring.Component):
    """The core's memory port (`cmd_layout` commands, `W`-byte beats) as an AXI4 master.

    Members
    -------
    rd_cmd, rd_data, rd_done, rd_error, wr_cmd, wr_data, wr_done, wr_error
        The core's memory port, flipped (module docstring of `rtl.core`), plus the two errors.
    base : In(32)
        Added to every DRAM address.
    reset : In(1)
        Forget every command (the core's `start`); only while `idle`.
    abort : In(1)
        Stop as after an error response, without reporting one (a soft reset): no further
        address is sent, every transaction already sent is completed (write data as empty
        words), then `idle` rises; `reset` ends it.
    idle : Out(1)
        No command queued and no transaction on the bus.
    axi : Out(axi4_signature(32, W))
    """

    def __init__(self, cmd_layout, W, depth):
        if W & (W - 1) or not 1 <= W <= BOUNDARY:
            raise ValueError(f"the bus width must be a power of two up to {BOUNDARY} bytes, "
                             f"not {W}")
        self.cmd_layout, self.W, self.depth = cmd_layout, W, depth
        super().__init__({
            "rd_cmd": In(valid_signature(cmd_layout)),
            "rd_data": Out(valid_signature(8 * W)),
            "rd_done": Out(1), "rd_error": Out(1),
            "wr_cmd": In(valid_signature(cmd_layout)),
            "wr_data": In(stream.Signature(8 * W)),
            "wr_done": Out(1), "wr_error": Out(1),
            "base": In(32), "reset": In(1), "abort": In(1), "idle": Out(1),
            "axi": Out(axi4_signature(32, W)),
        })

    def elaborate(self, platform):
        m = Module()
        self._failed = Signal()          # an error response came: send no more addresses
        self._read(m)
        self._write(m)
        with m.If(self.abort):
            m.d.sync += self._failed.eq(1)
        with m.If(self.reset):
            m.d.sync += self._failed.eq(0)
        m.d.comb += self.idle.eq(self._read_quiet & self._write_quiet)
        return m

    # -- shared pieces ----------------------------------------------------------------------
    def _wrap(self, p):
        return Mux(p == self.depth - 1, 0, p + 1)

    def _queue(self, m, name, cmd):
        """The commands of one direction, written as they come (the core never has more than
        `depth` in flight), read by the walkers."""
        slots = Array(Signal(self.cmd_layout, name=f"{name}_cmd{i}") for i in range(self.depth))
        tail = Signal(range(self.depth), name=f"{name}_tail")
        with m.If(cmd.valid):
            m.d.sync += [slots[tail].eq(cmd.payload), tail.eq(self._wrap(tail))]
        with m.If(self.reset):
            m.d.sync += tail.eq(0)
        return slots

    def _burst_len(self, m, name, addr, left):
        """Words in the burst that starts at word address `addr` with `left` words of the row
        to go: at most `BURST_MAX`, never across a `BOUNDARY`."""
        shift = (self.W - 1).bit_length()
        capped = Signal(range(BURST_MAX + 1), name=f"{name}_capped")
        to_boundary = Signal(range(BOUNDARY // self.W + 1), name=f"{name}_to_boundary")
        n = Signal(range(BURST_MAX + 1), name=f"{name}_len")
        m.d.comb += [capped.eq(Mux(left < BURST_MAX, left, BURST_MAX)),
                     to_boundary.eq((BOUNDARY - addr[:12]) >> shift),
                     n.eq(Mux(to_boundary < capped, to_boundary, capped))]
        return n

    def _aligned(self, addr):
        shift = (self.W - 1).bit_length()
        return Cat(Const(0, shift), addr[shift:]) if shift else addr

    def _addresses(self, m, ch, slots, pushed, room):
        """The address walker of channel `ch` (`"ar"` or `"aw"`): the bursts of every row of
        every queued command, sent while `room` and no error came (a valid already up stays
        up until its handshake). Returns the handshake, the burst's length, and whether it
        ends its command."""
        W, axi = self.W, self.axi
        rows = _Rows(self, m, ch, slots, pushed)
        sent = Signal(18, name=f"{ch}_sent")          # words of the row already requested
        addr = Signal(32, name=f"{ch}_addr")
        m.d.comb += addr.eq(self._aligned(rows.start) + sent * W)
        n = self._burst_len(m, ch, addr, rows.words - sent)
        valid, ready = getattr(axi, f"{ch}valid"), getattr(axi, f"{ch}ready")
        fire = Signal(name=f"{ch}_fire")
        held = Signal(name=f"{ch}_held")
        m.d.sync += held.eq(valid & ~ready)
        m.d.comb += [valid.eq(held | (rows.pending & ~self._failed & room)),
                     getattr(axi, f"{ch}addr").eq(addr), getattr(axi, f"{ch}len").eq(n - 1),
                     getattr(axi, f"{ch}size").eq((W - 1).bit_length()),
                     getattr(axi, f"{ch}burst").eq(1), getattr(axi, f"{ch}cache").eq(0b0011),
                     fire.eq(valid & ready)]
        row_end = sent + n == rows.words
        m.d.comb += rows.step.eq(fire & row_end)
        with m.If(fire):
            m.d.sync += sent.eq(Mux(row_end, 0, sent + n))
        with m.If(self.reset):
            m.d.sync += sent.eq(0)
        return fire, n, row_end & rows.last_row

    # -- reads -------------------------------------------------------------------------------
    def _read(self, m):
        W = self.W
        slots = self._queue(m, "rd", self.rd_cmd)
        axi = self.axi

        bursts = Signal(range(self.depth + 1), name="ar_outstanding")
        fire, _, _ = self._addresses(m, "ar", slots, self.rd_cmd.valid, bursts != self.depth)
        beat_in = axi.rvalid & axi.rready
        m.d.sync += bursts.eq(bursts + fire - (beat_in & axi.rlast))

        # data walker: realign each row's words into the core's beats
        r = _Rows(self, m, "r", slots, self.rd_cmd.valid)
        word = Signal(18, name="r_word")
        prev = Signal(8 * W, name="r_prev")
        extra = Signal(name="r_extra")     # the row's last beat lies in its last word: send it
        emit = Signal()
        beat = Signal(8 * W)
        last_word = word == r.words - 1
        m.d.comb += axi.rready.eq(~extra)
        pair = Mux(extra, Cat(prev, Const(0, 8 * W)), Cat(prev, axi.rdata))
        with m.If(r.off == 0):
            m.d.comb += [beat.eq(axi.rdata), emit.eq(beat_in)]
        with m.Else():
            m.d.comb += [beat.eq((pair >> (r.off * 8))[:8 * W]),
                         emit.eq((beat_in & (word != 0)) | extra)]
        row_done = Signal()
        with m.If(extra):
            m.d.sync += extra.eq(0)
            m.d.comb += row_done.eq(1)
        with m.Elif(beat_in):
            m.d.sync += prev.eq(axi.rdata)
            with m.If(last_word):
                m.d.sync += word.eq(0)
                with m.If((r.off != 0) & (r.beats == r.words)):
                    m.d.sync += extra.eq(1)
                with m.Else():
                    m.d.comb += row_done.eq(1)
            with m.Else():
                m.d.sync += word.eq(word + 1)
        m.d.comb += r.step.eq(row_done)
        error = beat_in & (axi.rresp != RESP_OKAY) & ~self._failed
        with m.If(error):
            m.d.sync += self._failed.eq(1)
        m.d.comb += [self.rd_data.valid.eq(emit & ~self._failed & ~error),
                     self.rd_data.payload.eq(beat), self.rd_error.eq(error)]
        m.d.sync += self.rd_done.eq(row_done & r.last_row & ~self._failed & ~error)
        with m.If(self.reset):
            m.d.sync += [bursts.eq(0), word.eq(0), extra.eq(0)]
        self._read_quiet = Signal()
        m.d.comb += self._read_quiet.eq((bursts == 0) & (self._failed | ~r.pending) & ~extra)

    # -- writes ------------------------------------------------------------------------------
    def _write(self, m):
        W, depth = self.W, self.depth
        slots = self._queue(m, "wr", self.wr_cmd)
        axi = self.axi

        # the bursts whose address was sent: their lengths for the data walker and, for the
        # responses, whether each ends its command (one array, three pointers)
        entry = data.StructLayout({"len": range(BURST_MAX + 1), "last": 1})
        bursts = Array(Signal(entry, name=f"aw_burst{i}") for i in range(depth))
        aw_tail, w_head, b_head = (Signal(range(depth), name=n)
                                   for n in ("aw_tail", "w_head", "b_head"))
        unanswered = Signal(range(depth + 1), name="aw_unanswered")
        unwritten = Signal(range(depth + 1), name="aw_unwritten")

        fire, n, last = self._addresses(m, "aw", slots, self.wr_cmd.valid, unanswered != depth)
        with m.If(fire):
            m.d.sync += [bursts[aw_tail].len.eq(n), bursts[aw_tail].last.eq(last),
                         aw_tail.eq(self._wrap(aw_tail))]

        # data walker: each word from the core's beats, rotated to the row's offset
        w = _Rows(self, m, "w", slots, self.wr_cmd.valid)
        word = Signal(18, name="w_word")
        in_burst = Signal(range(BURST_MAX), name="w_in_burst")
        prev = Signal(8 * W, name="w_prev")
        needs_beat = word < w.beats
        # after an error: empty words and no beats, from the next word on (a word waiting for
        # `wready` keeps its payload, as AXI asks)
        stop = Signal(name="w_stop")
        with m.If(~(axi.wvalid & ~axi.wready)):
            m.d.sync += stop.eq(self._failed)
        take = needs_beat & ~stop
        cur = Mux(take, self.wr_data.payload, 0)
        pair = Cat(prev, cur)
        lo = Mux(word == 0, w.off, 0)
        hi = Signal(range(W + 1), name="w_hi")       # bytes of this word up to the row's end
        m.d.comb += hi.eq(Mux(word == w.words - 1, w.off + w.cmd.row_bytes - (w.words - 1) * W,
                              W))
        rot = Signal(range(W), name="w_rot")          # W - off: the previous beat's share
        m.d.comb += rot.eq(W - w.off)
        strobe = Signal(W)
        m.d.comb += strobe.eq((((Const(1, W + 1) << hi) - 1) & ~((Const(1, W + 1) << lo) - 1))
                              [:W])
        m.d.comb += [
            axi.wvalid.eq((unwritten != 0) & (~take | self.wr_data.valid)),
            axi.wdata.eq(Mux(w.off == 0, cur, (pair >> (rot * 8))[:8 * W])),
            axi.wstrb.eq(Mux(stop, 0, strobe)),
            axi.wlast.eq(in_burst == bursts[w_head].len - 1),
            self.wr_data.ready.eq(axi.wvalid & axi.wready & take),
        ]
        sent_word = axi.wvalid & axi.wready
        with m.If(sent_word):
            m.d.sync += prev.eq(cur)
            with m.If(word == w.words - 1):
                m.d.sync += word.eq(0)
            with m.Else():
                m.d.sync += word.eq(word + 1)
            with m.If(axi.wlast):
                m.d.sync += [in_burst.eq(0), w_head.eq(self._wrap(w_head))]
            with m.Else():
                m.d.sync += in_burst.eq(in_burst + 1)
        m.d.comb += w.step.eq(sent_word & (word == w.words - 1))
        m.d.sync += unwritten.eq(unwritten + fire - (sent_word & axi.wlast))

        # responses, in order
        m.d.comb += axi.bready.eq(1)
        answer = axi.bvalid & (unanswered != 0)
        error = answer & (axi.bresp != RESP_OKAY) & ~self._failed
        with m.If(answer):
            m.d.sync += b_head.eq(self._wrap(b_head))
        with m.If(error):
            m.d.sync += self._failed.eq(1)
        m.d.comb += self.wr_error.eq(error)
        m.d.sync += self.wr_done.eq(answer & bursts[b_head].last & ~error & ~self._failed)
        m.d.sync += unanswered.eq(unanswered + fire - answer)
        with m.If(self.reset):
            m.d.sync += [aw_tail.eq(0), w_head.eq(0), b_head.eq(0),
                         unanswered.eq(0), unwritten.eq(0), word.eq(0), in_burst.eq(0),
                         stop.eq(0)]
        self._write_quiet = Signal()
        m.d.comb += self._write_quiet.eq((unanswered == 0) & (self._failed | ~w.pending))


class _Rows:
    """A walker over the rows of the queued commands of one direction: `start` (the row's bus
    address), `off` (its byte offset in the first word), `words`, `beats`, `last_row`, and
    `pending` while a command is left; drive `step` to go to the next row (and command)."""

    def __init__(self, dma, m, name, slots, pushed):
        W = dma.W
        shift = (W - 1).bit_length()
        self.step = Signal(name=f"{name}_step")
        ptr = Signal(range(dma.depth), name=f"{name}_ptr")
        todo = Signal(range(dma.depth + 1), name=f"{name}_todo")
        self.cmd = c = slots[ptr]
        row = Signal.like(c.rows, name=f"{name}_row")
        self.start = Signal(32, name=f"{name}_start")
        self.off = Signal(range(W), name=f"{name}_off")
        self.words = Signal(18, name=f"{name}_words")
        self.beats = Signal(18, name=f"{name}_beats")
        self.last_row = row == c.rows - 1
        self.pending = todo != 0
        m.d.comb += [self.start.eq(dma.base + c.dram + row * c.dram_stride),
                     self.off.eq(self.start[:shift] if shift else 0),
                     self.words.eq((self.off + c.row_bytes + W - 1) >> shift),
                     self.beats.eq((c.row_bytes + W - 1) >> shift)]
        done = self.step & self.last_row
        with m.If(self.step):
            m.d.sync += row.eq(Mux(self.last_row, 0, row + 1))
        with m.If(done):
            m.d.sync += ptr.eq(dma._wrap(ptr))
        m.d.sync += todo.eq(todo + pushed - done)
        with m.If(dma.reset):
            m.d.sync += [row.eq(0), ptr.eq(0), todo.eq(0)]
