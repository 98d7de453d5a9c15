"""The FPGA shell: the core behind an AXI4-Lite slave (control and status registers,
`arch.regs`) and an AXI4 master (its DMA, `rtl.axi.AxiDma`), as one top with flat `s_axil_*`
and `m_axi_*` ports (the names a Vivado block design or LiteX infers an interface from).
`docs/shell.md` (generated from `arch/regs.py`) lists the ports and the registers.

Ref: AMBA AXI and ACE Protocol Specification (ARM IHI 0022E), B1.1: AXI4-Lite (every
transaction one beat, 32-bit data, byte strobes); A3.3: a slave may wait for both AW and W
before it answers, and accepts them in either order; A3.4.4: OKAY, SLVERR, DECERR.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from arch.regs import ADDR_BITS, DATA_BITS, MAGIC, PROG_DATA, REGS, VERSION, isa_hash, tag_hash

from .axi import AxiDma, axi4_lite_signature, axi4_signature
from .core import DMA_CMD, Core

__all__ = ["AxiLiteSlave", "Shell", "RESP_SLVERR", "RESP_DECERR"]

RESP_OKAY, RESP_SLVERR, RESP_DECERR = 0, 2, 3


class AxiLiteSlave(wiring.Component):
    """An AXI4-Lite slave over the register table `regs` (default `arch.regs.REGS`); it holds
    no register values itself, its owner does.

    A write is performed once its address and its data have both arrived (each channel is
    taken as soon as its holding register is free, in either order) and the previous write's
    response was accepted; its response follows in the next cycle. A read is answered in the
    cycle after its address, with the register's value of the cycle the address arrived.

    Members
    -------
    bus : In(axi4_lite_signature(ADDR_BITS))
    rdata : In(ArrayLayout(32, len(regs)))
        The value of each register as reads return it (a `w1` register's is ignored: 0).
    windex : Out(range(len(regs)))
        The register the waiting write targets (meaningful while an address is held).
    wdata : Out(32)
        The value it would write: the register's bits under `wstrb` replaced.
    deny : In(len(regs))
        A write to register i is refused now (answers SLVERR, changes nothing); may depend on
        `windex` and `wdata`.
    we : Out(len(regs))
        One-hot: the register written in this cycle (with `wdata`).
    """

    def __init__(self, regs=REGS):
        self.regs = regs
        n = len(regs)
        super().__init__({
            "bus": In(axi4_lite_signature(ADDR_BITS)),
            "rdata": In(data.ArrayLayout(DATA_BITS, n)),
            "windex": Out(range(n)), "wdata": Out(DATA_BITS),
            "deny": In(n), "we": Out(n),
        })

    def _decode(self, m, name, addr):
        """(one-hot hits, mapped) of a byte address."""
        hits = Signal(len(self.regs), name=f"{name}_hits")
        m.d.comb += hits.eq(Cat(addr[2:] == r.offset >> 2 for r in self.regs))
        return hits, hits.any()

    def elaborate(self, platform):
        m = Module()
        bus, regs = self.bus, self.regs
        # writes: hold AW and W until both are here and the response channel is free
        aw_full, w_full = Signal(), Signal()
        aw_addr = Signal(ADDR_BITS)
        w_data, w_strb = Signal(DATA_BITS), Signal(DATA_BITS // 8)
        m.d.comb += [bus.awready.eq(~aw_full), bus.wready.eq(~w_full)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        hits, mapped = self._decode(m, "w", aw_addr)
        for i in range(len(regs)):
            with m.If(hits[i]):
                m.d.comb += self.windex.eq(i)
        old = Mux(Const(sum(1 << i for i, r in enumerate(regs) if r.readable),
                        len(regs)).bit_select(self.windex, 1), self.rdata[self.windex], 0)
        mask = Cat(b.replicate(8) for b in w_strb)
        m.d.comb += self.wdata.eq((old & ~mask) | (w_data & mask))
        writable = Cat(Const(int(r.writable)) for r in regs)
        ok = mapped & (hits & writable).any() & ~(hits & self.deny).any()
        perform = aw_full & w_full & ~bus.bvalid
        with m.If(perform):
            m.d.comb += self.we.eq(Mux(ok, hits, 0))
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1),
                         bus.bresp.eq(Mux(~mapped, RESP_DECERR, Mux(ok, RESP_OKAY, RESP_SLVERR)))]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # reads: one at a time, the value of the cycle the address arrived
        m.d.comb += bus.arready.eq(~bus.rvalid)
        rhits, rmapped = self._decode(m, "r", bus.araddr)
        value = Signal(DATA_BITS)
        for i, r in enumerate(regs):
            if r.readable:
                with m.If(rhits[i]):
                    m.d.comb += value.eq(self.rdata[i])
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(value),
                         bus.rresp.eq(Mux(rmapped, RESP_OKAY, RESP_DECERR))]
        with m.Elif(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m


def _flat(prefix, signature):
    return {f"{prefix}_{name}": member for name, member in signature.members.items()}


class Shell(wiring.Component):
    """The core for `cfg` with a program memory of `prog_depth` words, behind AXI.

    Members
    -------
    s_axil_* : AXI4-Lite slave (`axi4_lite_signature(ADDR_BITS)`, flipped), the registers of
        `arch.regs.REGS`.
    m_axi_* : AXI4 master (`axi4_signature(32, dram.burst_bytes)`), the DMA.
    irq : Out(1)
        `STATUS.done` while `IRQ_ENABLE.done`.
    """

    def __init__(self, cfg, prog_depth=4096):
        self.cfg, self.prog_depth = cfg, prog_depth
        self.W = cfg.dram.burst_bytes
        self._axi = axi4_signature(32, self.W)
        self._axil = axi4_lite_signature(ADDR_BITS).flip()
        super().__init__({**_flat("s_axil", self._axil), **_flat("m_axi", self._axi),
                          "irq": Out(1)})

    def _bus(self, m, prefix, signature, inner):
        """Wire the flat ports `<prefix>_*` to the interface `inner` of the same signature."""
        for name, member in signature.members.items():
            port, sub = getattr(self, f"{prefix}_{name}"), getattr(inner, name)
            m.d.comb += sub.eq(port) if member.flow == In else port.eq(sub)

    def elaborate(self, platform):
        m = Module()
        cfg, depth = self.cfg, self.prog_depth
        core_reset = Signal()           # the last cycle of a soft reset
        core = Core(cfg, prog_depth=depth)
        m.submodules.core = ResetInserter(core_reset)(core)
        m.submodules.dma = dma = AxiDma(DMA_CMD, self.W, cfg.dram.outstanding)
        m.submodules.regs = slave = AxiLiteSlave()
        self._bus(m, "m_axi", self._axi, dma.axi)
        self._bus(m, "s_axil", self._axil, slave.bus)
        for port in ("rd_cmd", "rd_data", "wr_cmd", "wr_data"):
            wiring.connect(m, getattr(core, port), getattr(dma, port))
        m.d.comb += [core.rd_done.eq(dma.rd_done), core.wr_done.eq(dma.wr_done),
                     core.rd_error.eq(dma.rd_error), core.wr_error.eq(dma.wr_error)]

        index = {r.name: i for i, r in enumerate(REGS)}
        view = {r.name: data.View(r.layout, slave.rdata[index[r.name]]) for r in REGS}
        written = {r.name: data.View(r.layout, slave.wdata) for r in REGS}

        def we(name):
            return slave.we[index[name]]

        # soft reset: the DMA finishes what it started (abort), then core and DMA are reset
        soft = Signal()
        busy = Signal()
        m.d.comb += busy.eq(core.running | ~dma.idle | soft)
        reset_now = soft & dma.idle
        m.d.comb += [dma.abort.eq(soft & ~dma.idle), core_reset.eq(reset_now)]
        with m.If(we("ctrl") & written["ctrl"].reset):
            m.d.sync += soft.eq(1)
        with m.Elif(reset_now):
            m.d.sync += soft.eq(0)
        start = we("ctrl") & written["ctrl"].start & ~written["ctrl"].reset
        m.d.comb += [core.start.eq(start), dma.reset.eq(start | reset_now)]

        # the host's registers
        stored = {"prog_len": Signal(range(depth + 1)), "prog_addr": Signal(range(depth + 1)),
                  "dram_base": Signal(32), "irq_enable": Signal(1),
                  **{n: Signal(DATA_BITS, name=n) for n in PROG_DATA}}
        for name, sig in stored.items():
            with m.If(we(name)):
                m.d.sync += sig.eq(slave.wdata)
            m.d.comb += view[name].eq(sig)
        commit = we(PROG_DATA[-1])
        with m.If(commit):
            m.d.sync += stored["prog_addr"].eq(stored["prog_addr"] + 1)
        # the word reaches the core a cycle after its write: the write's decode and refusal
        # checks stay off the core's fetch stage, whose products the word feeds (the board
        # top's critical path, docs/rtl.md). The slave performs writes at least two cycles
        # apart, so the next write (a start) still comes after the word has landed.
        m.d.sync += [core.prog_we.eq(commit), core.prog_addr.eq(stored["prog_addr"]),
                     core.prog_data.eq(Cat(*(stored[n] for n in PROG_DATA[:-1]), slave.wdata))]
        m.d.comb += [core.prog_len.eq(stored["prog_len"]), dma.base.eq(stored["dram_base"])]

        m.d.comb += [view["id"].eq(MAGIC), view["version"].eq(VERSION),
                     view["isa"].eq(isa_hash()), view["tag"].eq(tag_hash(cfg)),
                     view["prog_depth"].eq(depth),
                     view["status"].running.eq(busy),
                     view["status"].done.eq(core.done & ~busy),
                     view["status"].error.eq(core.error),
                     view["err_index"].eq(core.err_index), view["cycles"].eq(core.cycles),
                     self.irq.eq(view["status"].done & view["irq_enable"].done)]

        # refusals: nothing changes under a running core, nothing wraps past the memory's end
        deny = {r.name: Const(int(r.idle_only)) & busy for r in REGS}
        deny["ctrl"] = busy & written["ctrl"].start & ~written["ctrl"].reset
        deny["prog_len"] |= slave.wdata > depth
        deny["prog_addr"] |= slave.wdata > depth - 1
        deny[PROG_DATA[-1]] |= stored["prog_addr"] == depth
        m.d.comb += slave.deny.eq(Cat(deny[r.name] for r in REGS))
        return m
