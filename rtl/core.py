"""The accelerator core: program memory, decoder, dispatch, unit queues, dependency tokens,
scratchpads, the DMA engines and the units, running a compiled `Program` (DESIGN.md section 4).

Ref: VTA (Moreau et al., IEEE Micro 2019) §3: decoupled access/execute with dependency tokens;
docs/core.md: the timing contract that `sim.cycle` follows cycle for cycle.

Every field comes from `arch.isa` (a `data.UnionLayout` of its layouts, `m.Switch` on the
opcode) and every size from the `ArchConfig`; the timing facts are the core's own construction
(`pipeline_for`), which `rtl.units` compares with `cfg.timing`.

Cycle 0 is the first cycle after `start`. In cycle t:
- the dispatcher looks at word `pc` (prefetched from the program memory): a `nop` advances `pc`;
  `finish` ends dispatch; any other word is written to its unit's queue if the queue has room or
  its head leaves in this cycle. The entry is visible to the unit from cycle t + 1;
- a unit with no instruction starts its queue head if every token it waits for is there (and, on
  a DMA unit, a request slot is free): the head and the tokens leave in this cycle;
- a unit in the last cycle of an instruction pushes all its signals if every target counter has
  room (or is popped in this cycle), else it stays occupied until one cycle does;
- a DMA request retires (frees its slot, pushes its signals) in its last transfer cycle, which
  the memory port's `done` marks, or later while its signals find no room; in order, one a cycle.
`cycles` counts the cycles before the first one in which dispatch has ended and everything is
idle; then `done` rises. An illegal word, an address outside its scratchpad, an opcode this core
does not run yet, running past `prog_len`, a cycle in which nothing can ever move again
(deadlock), or an error on the memory port (`rd_error` / `wr_error`: the AXI bus answered a DMA
transfer with an error) stops the core with `error` and the instruction index in `err_index`.

The memory port (a DRAM model or the FPGA shell of a later issue drives it): one command per
DMA instruction on `rd_cmd` / `wr_cmd` (always accepted, in the last setup cycle), `W`-byte data
beats per row in order (`W` = `dram.burst_bytes`; a row of `row_bytes` is `ceil(row_bytes / W)`
beats, its last one partial) on `rd_data` (the core always accepts) and `wr_data` (the port pulls),
and one `rd_done` / `wr_done` pulse per command, in order, in its last transfer cycle, by which all
its beats have moved.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from arch.config import ConfigError
from arch.isa import FORMATS, HEADER, LAYOUTS, PE_KIND_OF, UNIT_OF, WORD_BITS, Buffer, Opcode, Unit
from arch.regs import ErrCode

from . import matmul_unit, table_seq, vector_unit
from .common import INSN, Pipeline, valid_signature
from .scratchpad import Scratchpad

__all__ = ["Core", "ErrCode", "DMA_CMD", "SUPPORTED", "DMA_SETUP", "UNIT_MODULES", "event_layout"]

#: The datapaths of the units, each a module with `OPCODES`, `in_range` and `build`.
UNIT_MODULES = (table_seq, matmul_unit, vector_unit)

#: One DMA command on the memory port, its fields as wide as the ISA's.
DMA_CMD = data.StructLayout({f: LAYOUTS[Opcode.LOAD][f].shape
                             for f in ("dram", "rows", "row_bytes", "dram_stride")})

#: Opcodes this core runs; the others stop it with `ErrCode.UNSUPPORTED` (issue 10 goes on).
SUPPORTED = (Opcode.NOP, Opcode.FINISH, Opcode.LOAD, Opcode.STORE) + tuple(
    op for unit in UNIT_MODULES for op in unit.OPCODES)


#: The opcodes whose datapath exists in one PE kind's core only: its matmul (the core has only
#: that array) and `tbl` (the table unit feeds the LUT array).
KIND_OF = {**PE_KIND_OF, Opcode.TBL: "lut"}


def runs(op, cfg):
    """True when the core for `cfg` runs `op`: a `SUPPORTED` opcode of `cfg`'s PE kind."""
    return op in SUPPORTED and KIND_OF.get(op, cfg.pe.kind) == cfg.pe.kind


#: Cycles a DMA instruction holds its unit: the command is formed in a pipeline of this many
#: stages (field decode, beats per row, extent, issue) and issued in the last.
DMA_SETUP = 4

#: Cycles from a queue write to the earliest start of the instruction (the queue's latency).
DISPATCH_LATENCY = 1


class Core(wiring.Component):
    """The core for `cfg`, with a program memory of `prog_depth` words.

    Members
    -------
    prog_we, prog_addr, prog_data : In
        Host write port of the program memory (used while the core is idle).
    prog_len : In
        Words of the loaded program.
    start : In
        A pulse: run from word 0.
    running, done : Out
        `done` rises when the run ends (with or without an error) and stays until `start`.
    cycles : Out(32)
        Cycles of the last run (docs/core.md: time origin and end).
    error : Out(ErrCode), err_index : Out
        Why and where the run stopped, if it did not end normally.
    rd_cmd, rd_data, rd_done, wr_cmd, wr_data, wr_done
        The memory port (module docstring).
    rd_error, wr_error : In
        The memory port's error pulses (the FPGA shell's AXI master: `rtl.axi.AxiDma`), in place
        of the `done` of the oldest load or store command: the run stops with `ErrCode.BUS`
        and that DMA instruction's index. Drive them 0 where the memory cannot fail.
    trace_dispatch : Out(event_layout)
        `valid` and the index of the instruction dispatched in this cycle.
    trace_start, trace_end, trace_retire : Out, one per unit
        Index of the instruction that starts on the unit in this cycle, that occupies it for the
        last cycle, and (DMA units) that retires; each with `valid`.
    """

    def __init__(self, cfg, prog_depth=4096, *, src_loc_at=0):
        if cfg.pe.kind == "mac" and cfg.pe.saturate:
            # verif/test_core_compiled.py::test_saturating_accumulators_on_the_amaranth_simulator
            # (its strict xfail): the core would run, but not as the executor does
            raise ConfigError(
                f"{cfg.source}: `pe.saturate` must be false for the RTL core's MAC array (it "
                "clamps every K fold's running sum, the executor an instruction's exact sum "
                "once), not true")
        self.cfg = cfg
        self.prog_depth = prog_depth
        self.word_bytes = cfg.dram.burst_bytes
        idx = range(prog_depth)
        event = event_layout(prog_depth)
        super().__init__({
            "prog_we": In(1), "prog_addr": In(idx), "prog_data": In(WORD_BITS),
            "prog_len": In(range(prog_depth + 1)),
            "start": In(1),
            "running": Out(1), "done": Out(1), "cycles": Out(32),
            "error": Out(ErrCode), "err_index": Out(idx),
            "rd_cmd": Out(valid_signature(DMA_CMD)),
            "rd_data": In(valid_signature(8 * self.word_bytes)),
            "rd_done": In(1),
            "wr_cmd": Out(valid_signature(DMA_CMD)),
            "wr_data": Out(stream.Signature(8 * self.word_bytes)),
            "wr_done": In(1),
            "rd_error": In(1), "wr_error": In(1),
            "trace_dispatch": Out(event),
            "trace_start": Out(data.ArrayLayout(event, len(Unit))),
            "trace_end": Out(data.ArrayLayout(event, len(Unit))),
            "trace_retire": Out(data.ArrayLayout(event, len(Unit))),
        }, src_loc_at=1 + src_loc_at)

    @classmethod
    def pipeline_for(cls, cfg):
        """The timing facts of the core's construction that `cfg.timing` must state."""
        return CorePipeline()

    def elaborate(self, platform):
        m = Module()
        build = _Build(self, m)
        build.run()
        #: `{Buffer: Scratchpad}` of the last elaboration, with their ports (the synthesis
        #: report reads which buffers have one writer and map to block RAM).
        self.scratchpads = build.spad
        return m


def event_layout(prog_depth):
    """One trace event: `valid` and the instruction `index`."""
    return data.StructLayout({"valid": 1, "index": Shape.cast(range(prog_depth)).width})


class CorePipeline(Pipeline):
    """`Pipeline` of the core: depth is the vector unit's, plus the core's own hand-overs."""

    def __init__(self):
        depth = vector_unit.DEPTH
        super().__init__(depth=depth, ii=1, latency=depth)

    @property
    def dma_setup(self):
        return DMA_SETUP

    @property
    def dispatch_latency(self):
        return DISPATCH_LATENCY


def _raw(word, op, name):
    """The raw bits of field `name` of `op`'s format in `word` (offsets from the layout)."""
    f = LAYOUTS[op][name]
    return word[f.offset:f.offset + f.width]


def legal(word, op):
    """1 when `word`, known to carry opcode `op`, passes every rule of `isa.decode` and the
    executor's `finish` rule. Generated from the field table."""
    ok = []
    fields = {f.name: f for f in HEADER + FORMATS[op]}
    if "reserved" in LAYOUTS[op].members:
        ok.append(_raw(word, op, "reserved") == 0)
    for name, f in fields.items():
        if name == "op":
            continue
        raw = _raw(word, op, name)
        if f.enum is not None:
            ok.append(Cat(*(raw == v.value for v in f.enum)).any())
        if f.kind == "count":
            ok.append(raw != 0)
    unit = UNIT_OF[op]
    if unit is not None:
        own = 1 << unit.value
        ok += [(_raw(word, op, "wait") & own) == 0, (_raw(word, op, "signal") & own) == 0]
    if op is Opcode.FINISH:
        ok += [_raw(word, op, "wait") == 0, _raw(word, op, "signal") == 0]
    return Cat(*ok).all() if ok else Const(1)


class _Products:
    """The products of an instruction word's fields that its extent checks multiply
    (`_Build._in_range` and the units' `in_range`, through their `mul`), computed in the fetch
    stage before the check and registered there: the chains of multipliers the checks need
    would otherwise sit between the program memory and the check's register in one cycle.

    The checks are elaborated twice with the same calls in the same order: once over the
    fetched word to list the products (`values`), once over the registered word with `replay`,
    whose `mul` returns the registered products one by one."""

    def __init__(self, build, word):
        self.word = word
        self._values = []

        def collect(a, b):
            self._values.append(a * b)
            return self._values[-1]
        view = data.View(INSN, word)
        for op in Opcode:
            build._in_range(op, getattr(view, op.name.lower()), collect)
        self.layout = data.StructLayout({"word": WORD_BITS, **{
            f"p{i}": p.shape() for i, p in enumerate(self._values)}})

    def stage(self, name, reset_less=False):
        """A register of one word and its products."""
        return Signal(self.layout, name=name, reset_less=reset_less)

    def values(self):
        """The word and its products, as a value of `layout`."""
        return Cat(self.word, *self._values)

    def replay(self, stage):
        """A `mul` that returns the products registered in `stage`, in the order they were
        listed (and checks that each call is the one listed)."""
        it = iter(enumerate(self._values))

        def mul(a, b):
            i, listed = next(it)
            assert (a * b).shape() == listed.shape(), \
                f"product {i}: {(a * b).shape()} vs {listed.shape()}"
            return stage[f"p{i}"]
        return mul


class _Build:
    """The elaboration of one `Core`, one method per block of the diagram."""

    def __init__(self, core, m):
        self.core, self.m, self.cfg = core, m, core.cfg
        self.W = core.word_bytes
        self.units = tuple(Unit)
        depth = self.cfg.queues.token_depth
        pairs = [(a, b) for a in Unit for b in Unit if a != b]
        self.count = {p: Signal(range(depth + 1), name=f"tok_{p[0].name}_{p[1].name}".lower())
                      for p in pairs}
        self.push = {p: Signal(name=f"push_{p[0].name}_{p[1].name}".lower()) for p in pairs}
        self.pop = {p: Signal(name=f"pop_{p[0].name}_{p[1].name}".lower()) for p in pairs}
        self.busy = {}                  # unit -> occupied by an instruction (unit_control)
        self.inflight_room = {}         # DMA unit -> a request slot is free (its engine)
        self.inflight = {}              # DMA unit -> requests in flight (its engine)
        self.starting = {u: Signal(name=f"starting_{u.name.lower()}") for u in Unit}
        self.blocked = {u: Signal(name=f"blocked_{u.name.lower()}") for u in Unit}
        self.ctl = {}
        self.failing = {}               # DMA unit -> index of the command a bus error names

    def run(self):
        m, core = self.m, self.core
        self.state()
        self.scratchpads()
        self.queues()
        self.dispatcher()
        self.tokens()
        for u in Unit:
            self.unit_control(u)
        for unit in UNIT_MODULES:
            unit.build(self)
        self.load_engine()
        self.store_engine()
        self.termination()
        m.d.comb += core.running.eq(self.run_state)

    # -- run state ------------------------------------------------------------------------
    def state(self):
        m, core = self.m, self.core
        self.run_state = Signal()
        self.stop = Signal()            # this cycle is the run's last (end or error)
        self.fail = Signal(ErrCode)
        self.fail_index = Signal.like(core.err_index)
        with m.If(core.start & ~self.run_state):
            m.d.sync += [self.run_state.eq(1), core.done.eq(0), core.cycles.eq(0),
                         core.error.eq(ErrCode.NONE)]
        with m.Elif(self.run_state):
            with m.If(self.stop):
                m.d.sync += [self.run_state.eq(0), core.done.eq(1)]
                with m.If(self.fail != ErrCode.NONE):
                    m.d.sync += [core.error.eq(self.fail), core.err_index.eq(self.fail_index)]
            with m.Else():
                m.d.sync += core.cycles.eq(core.cycles + 1)

    # -- scratchpads ----------------------------------------------------------------------
    def scratchpads(self):
        m, cfg, W = self.m, self.cfg, self.W
        self.spad = {}
        for b in Buffer:
            sp = Scratchpad(cfg.sram.bytes(b.name.lower()), W, name=b.name.lower())
            self.spad[b] = sp
            m.submodules[f"spad_{b.name.lower()}"] = sp
        self.dma_w = {b: self.spad[b].write_port(W) for b in Buffer}
        self.dma_r = {b: self.spad[b].read_port(W) for b in Buffer}

    # -- unit queues ----------------------------------------------------------------------
    def queues(self):
        m, core, depth = self.m, self.core, self.cfg.queues.insn_depth
        entry = data.StructLayout({"word": WORD_BITS, "index": core.err_index.shape()})
        self.q = {}
        for u in Unit:
            mem = Memory(shape=entry, depth=depth, init=[])
            m.submodules[f"queue_{u.name.lower()}"] = mem
            wp, rp = mem.write_port(), mem.read_port(domain="comb")
            head, tail = Signal(range(depth)), Signal(range(depth))
            level = Signal(range(depth + 1), name=f"level_{u.name.lower()}")
            q = {"we": Signal(name=f"qwe_{u.name.lower()}"), "entry": Signal(entry),
                 "head": rp.data, "valid": level != 0, "level": level,
                 "pop": self.starting[u]}
            q["room"] = (level != depth) | q["pop"]
            m.d.comb += [wp.addr.eq(tail), wp.data.eq(q["entry"]), wp.en.eq(q["we"]),
                         rp.addr.eq(head)]

            def wrap(p):
                return Mux(p == depth - 1, 0, p + 1)
            with m.If(q["we"]):
                m.d.sync += tail.eq(wrap(tail))
            with m.If(q["pop"]):
                m.d.sync += head.eq(wrap(head))
            m.d.sync += level.eq(level + q["we"] - q["pop"])
            with m.If(core.start & ~self.run_state):
                m.d.sync += [head.eq(0), tail.eq(0), level.eq(0)]
            self.q[u] = q

    # -- fetch, decode, dispatch -----------------------------------------------------------
    def dispatcher(self):
        """Fetch runs two words ahead of dispatch (docs/core.md, Fetch and decode): a word's
        check (legal fields, extents inside their buffers, an opcode this core runs) is
        computed in two stages, the products of its fields in the first (`_Products`), the
        sums, comparisons and the resulting `ErrCode` in the second, and registered, so none
        of it lies on the path from the program memory through the dispatch decision back to
        its address. In cycle t the register `word` holds word `pc` and its check (`code`),
        `s1` word `pc + 1` and its products, and the memory's read port word `pc + 2`.

        Words 0 and 1 have shadow copies (`sh0`, `sh1`: word and products), written with the
        host's writes, from which the start cycle fills the stages, so that rule 1 holds
        unchanged (cycle 0 dispatches word 0). While idle, `s1` holds word 0."""
        m, core = self.m, self.core
        mem = Memory(shape=WORD_BITS, depth=core.prog_depth, init=[])
        m.submodules.prog = mem
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(core.prog_addr), wp.data.eq(core.prog_data),
                     wp.en.eq(core.prog_we & ~self.run_state)]
        pc = Signal(range(core.prog_depth + 1))
        self.pc = pc
        self.finished = Signal()
        advance = Signal()
        self.dispatch_stall = Signal()
        self.finishing = Signal()
        starting = core.start & ~self.run_state
        word = Signal(WORD_BITS, name="dispatch_word")
        code = Signal(ErrCode, name="dispatch_check")
        view = data.View(INSN, word)
        pc_next = Signal.like(pc)
        m.d.comb += pc_next.eq(Mux(advance, pc + 1, pc))
        with m.If(starting):
            m.d.comb += pc_next.eq(0)
        m.d.sync += pc.eq(pc_next)
        m.d.comb += [rp.en.eq(1), rp.addr.eq(Mux(starting, 2, pc_next + 2))]

        # stage 1: the products of the word from the memory, or of the host's word
        fetched = Mux(wp.en, core.prog_data, rp.data)
        products = _Products(self, fetched)
        # the shadows are part of the program store: a reset of the core (the shell's soft
        # reset) keeps them, as it keeps the memory
        s1 = products.stage("fetch_s1")
        sh0, sh1 = (products.stage(name, reset_less=True) for name in ("fetch_sh0", "fetch_sh1"))
        new = products.values()
        with m.If(wp.en & (wp.addr == 0)):
            m.d.sync += [sh0.eq(new), s1.eq(new)]
        with m.Elif(wp.en & (wp.addr == 1)):
            m.d.sync += sh1.eq(new)
        with m.Elif(starting):
            m.d.sync += s1.eq(sh1)
        with m.Elif(~self.run_state):
            m.d.sync += s1.eq(sh0)
        with m.Elif(advance):
            m.d.sync += s1.eq(new)
        # stage 2: the check of the word in s1, from its products
        with m.If(starting | advance):
            m.d.sync += [word.eq(s1.word), code.eq(self._check(s1.word, products.replay(s1)))]

        with m.If(starting):
            m.d.sync += self.finished.eq(0)
        self.dispatch_fail = Signal(ErrCode)
        active = self.run_state & ~self.finished
        with m.If(active):
            with m.If(pc >= core.prog_len):
                m.d.comb += self.dispatch_fail.eq(ErrCode.OVERRUN)
            with m.Elif(code != ErrCode.NONE):
                m.d.comb += self.dispatch_fail.eq(code)
            with m.Else():
                with m.Switch(view.nop.op):
                    for op in Opcode:
                        with m.Case(op):
                            self._dispatch_one(op, word, advance)
        m.d.comb += [core.trace_dispatch.index.eq(pc)]

    def _check(self, word, mul):
        """The `ErrCode` that dispatching `word` stops the run with, `NONE` for a word that
        can be dispatched: an illegal opcode or field, an extent outside its buffer, an opcode
        this core does not run (in that order of precedence); `mul` gives the products of its
        fields."""
        m = self.m
        code = Signal(ErrCode, name="fetch_check")
        view = data.View(INSN, word)
        extents = {op: self._in_range(op, getattr(view, op.name.lower()), mul) for op in Opcode}
        with m.Switch(view.nop.op):
            for op in Opcode:
                with m.Case(op):
                    # The checks that cannot fail for `op` are left out in Python, not as
                    # constant conditions (Yosys writes an empty case arm for those, which is
                    # not Verilog).
                    checks = [(~legal(word, op), ErrCode.ILLEGAL)]
                    if extents[op] is not None:
                        checks.append((~extents[op], ErrCode.RANGE))
                    for k, (cond, err) in enumerate(checks):
                        with (m.If if k == 0 else m.Elif)(cond):
                            m.d.comb += code.eq(err)
                    if not runs(op, self.cfg):
                        with m.Else():
                            m.d.comb += code.eq(ErrCode.UNSUPPORTED)
            with m.Default():
                m.d.comb += code.eq(ErrCode.ILLEGAL)
        return code

    def _dispatch_one(self, op, word, advance):
        m, core = self.m, self.core
        if op is Opcode.NOP:
            m.d.comb += advance.eq(1)
        elif op is Opcode.FINISH:
            m.d.comb += self.finishing.eq(1)
            m.d.sync += self.finished.eq(1)
        elif runs(op, self.cfg):
            q = self.q[UNIT_OF[op]]
            with m.If(q["room"]):
                m.d.comb += [advance.eq(1), q["we"].eq(1), q["entry"].word.eq(word),
                             q["entry"].index.eq(self.pc[:len(core.err_index)]),
                             core.trace_dispatch.valid.eq(1)]
            with m.Else():
                m.d.comb += self.dispatch_stall.eq(1)

    def _in_range(self, op, v, mul):
        """1 when every scratchpad extent of the instruction lies inside its buffer (None for
        an instruction without extents); `mul` gives the products of its fields."""
        cfg = self.cfg
        if op in (Opcode.LOAD, Opcode.STORE):
            caps = Array(Const(cfg.sram.bytes(b.name.lower()), 32) for b in Buffer)
            return v.sram + mul(v.rows, v.row_bytes) <= caps[v.buf.as_value()]
        for unit in UNIT_MODULES:
            if op in unit.OPCODES:
                return unit.in_range(op, v, cfg, mul)
        return None

    # -- dependency tokens -----------------------------------------------------------------
    def tokens(self):
        m = self.m
        for p, count in self.count.items():
            m.d.sync += count.eq(count + self.push[p] - self.pop[p])
            with m.If(self.core.start & ~self.run_state):
                m.d.sync += count.eq(0)

    def room_for(self, u, signal):
        depth = self.cfg.queues.token_depth
        return Cat(*((~signal[v.value]) | (self.count[(u, v)] != depth) | self.pop[(u, v)]
                     for v in Unit if v != u)).all()

    def push_all(self, u, signal):
        for v in Unit:
            if v != u:
                self.m.d.comb += self.push[(u, v)].eq(signal[v.value])

    # -- unit control ----------------------------------------------------------------------
    def unit_control(self, u):
        """Start, occupancy and the signal push of unit `u` (DMA units push at retirement)."""
        m, core = self.m, self.core
        q = self.q[u]
        head = q["head"]
        wait = _raw(head.word, Opcode.NOP, "wait")
        dma = u in (Unit.LOAD, Unit.STORE)
        slot_ok = Const(1)
        if dma:
            slot_ok = Signal(name=f"slot_ok_{u.name.lower()}")
            self.inflight_room[u] = slot_ok
        occupied = Signal(name=f"occupied_{u.name.lower()}")
        self.busy[u] = occupied
        waits = Cat(*((~wait[v.value]) | (self.count[(v, u)] != 0) for v in Unit if v != u))
        can = self.run_state & q["valid"] & ~occupied & waits.all() & slot_ok
        m.d.comb += self.starting[u].eq(can)
        with m.If(can):
            for v in Unit:
                if v != u:
                    m.d.comb += self.pop[(v, u)].eq(wait[v.value])
        m.d.comb += [core.trace_start[u.value].valid.eq(can),
                     core.trace_start[u.value].index.eq(head.index)]
        m.d.comb += self.blocked[u].eq(self.run_state & q["valid"] & ~occupied & ~can)
        # the running instruction
        cur = Signal(q["entry"].shape(), name=f"cur_{u.name.lower()}")
        with m.If(can):
            m.d.sync += cur.eq(head)
        last = Signal(name=f"last_{u.name.lower()}")       # the datapath's last busy cycle
        pushing = Signal(name=f"pushwait_{u.name.lower()}")
        ctl = {"start": can, "insn": head.word, "index": head.index, "cur": cur,
               "last": last, "occupied": occupied}
        self.ctl[u] = ctl
        signal = _raw(cur.word, Opcode.NOP, "signal")
        if dma:
            signal = Const(0, len(Unit))            # DMA units push at retirement
        room = self.room_for(u, signal)
        end = Signal(name=f"end_{u.name.lower()}")
        m.d.comb += end.eq((last | pushing) & room)
        if not dma:
            with m.If(end):
                self.push_all(u, signal)
        m.d.comb += [core.trace_end[u.value].valid.eq(end),
                     core.trace_end[u.value].index.eq(cur.index)]
        run = Signal(name=f"run_{u.name.lower()}")   # between start and the last cycle
        with m.If(can):
            m.d.sync += run.eq(1)
        with m.If(last):
            m.d.sync += run.eq(0)
        with m.If((last | pushing) & ~room):
            m.d.sync += pushing.eq(1)
        with m.Elif(end):
            m.d.sync += pushing.eq(0)
        with m.If(core.start & ~self.run_state):
            m.d.sync += [run.eq(0), pushing.eq(0)]
        m.d.comb += occupied.eq(run | pushing)
        ctl["run"] = run

    # -- DMA -------------------------------------------------------------------------------
    def _dma_common(self, u, cmd, done):
        """Setup, command issue, the in-flight list and retirement of DMA unit `u`. Returns
        the in-flight list (an `Array` of entries) and the pointer of the oldest request whose
        data has not all moved, which the engine advances."""
        m, core, cfg = self.m, self.core, self.cfg
        ctl = self.ctl[u]
        n = cfg.dram.outstanding
        entry = data.StructLayout({"buf": Buffer, "sram": 32, "rows": DMA_CMD["rows"].shape,
                                   "row_bytes": DMA_CMD["row_bytes"].shape,
                                   "signal": len(Unit), "insn": core.err_index.shape(),
                                   "done": 1})
        slots = Array(Signal(entry, name=f"{u.name.lower()}_slot{i}") for i in range(n))
        head, tail = Signal(range(n)), Signal(range(n))
        used = Signal(range(n + 1), name=f"{u.name.lower()}_inflight")
        done_ptr, data_ptr = Signal(range(n)), Signal(range(n))
        retire = Signal(name=f"{u.name.lower()}_retire")
        m.d.comb += self.inflight_room[u].eq(used != n)
        self.inflight[u] = used

        def wrap(p):
            return Mux(p == n - 1, 0, p + 1)
        v = data.View(INSN, ctl["insn"]).load
        with m.If(ctl["start"]):
            m.d.sync += [slots[tail].buf.eq(v.buf), slots[tail].sram.eq(v.sram),
                         slots[tail].rows.eq(v.rows), slots[tail].row_bytes.eq(v.row_bytes),
                         slots[tail].signal.eq(_raw(ctl["insn"], Opcode.NOP, "signal")),
                         slots[tail].insn.eq(ctl["index"]), slots[tail].done.eq(0),
                         tail.eq(wrap(tail))]
        # setup: DMA_SETUP cycles, the command issued in the last
        left = Signal(range(DMA_SETUP + 1))
        with m.If(ctl["start"]):
            m.d.sync += left.eq(DMA_SETUP - 1)      # the start cycle is the first of DMA_SETUP
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
        cur = data.View(INSN, ctl["cur"].word).load
        m.d.comb += [ctl["last"].eq(left == 1), cmd.valid.eq(left == 1),
                     cmd.payload.dram.eq(cur.dram), cmd.payload.rows.eq(cur.rows),
                     cmd.payload.row_bytes.eq(cur.row_bytes),
                     cmd.payload.dram_stride.eq(cur.dram_stride)]
        # completion and retirement, in order
        # the command a memory error belongs to: the oldest not done (the next one if `done`
        # completes the oldest in this very cycle)
        self.failing[u] = slots[Mux(done, wrap(done_ptr), done_ptr)].insn
        with m.If(done):
            m.d.sync += [slots[done_ptr].done.eq(1), done_ptr.eq(wrap(done_ptr))]
        h = slots[head]
        is_done = Signal(name=f"{u.name.lower()}_headdone")
        m.d.comb += is_done.eq((used != 0) & (h.done | (done & (done_ptr == head))))
        room = self.room_for(u, h.signal)
        m.d.comb += retire.eq(is_done & room)
        with m.If(retire):
            self.push_all(u, h.signal)
            m.d.sync += head.eq(wrap(head))
        m.d.sync += used.eq(used + ctl["start"] - retire)
        m.d.comb += [core.trace_retire[u.value].valid.eq(retire),
                     core.trace_retire[u.value].index.eq(h.insn)]
        with m.If(core.start & ~self.run_state):
            m.d.sync += [head.eq(0), tail.eq(0), used.eq(0), done_ptr.eq(0), data_ptr.eq(0),
                         left.eq(0)]
        return slots, data_ptr, wrap

    def _walker(self, name, slots, ptr, wrap, step):
        """Walks the beats of the request at `ptr`: (slot, row base address, beat offset, bytes
        in the beat, last beat of the request); `step` high moves to the next beat."""
        m, W = self.m, self.W
        shift = (W - 1).bit_length()
        e = slots[ptr]
        row = Signal.like(e.rows, name=f"{name}_row")
        beat = Signal(16, name=f"{name}_beat")
        base = Signal(32, name=f"{name}_base")
        started = Signal(name=f"{name}_started")
        beats = (e.row_bytes + W - 1).shift_right(shift)
        off = beat.shift_left(shift)
        count = Mux(beat == beats - 1, e.row_bytes - off, W)
        last_beat = (beat == beats - 1) & (row == e.rows - 1)
        row_base = Mux(started, base, e.sram)
        with m.If(step):
            m.d.sync += started.eq(1)
            with m.If(beat == beats - 1):
                m.d.sync += [beat.eq(0), row.eq(row + 1), base.eq(row_base + e.row_bytes)]
                with m.If(row == e.rows - 1):
                    m.d.sync += [row.eq(0), started.eq(0), ptr.eq(wrap(ptr))]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), base.eq(row_base)]
        with m.If(self.core.start & ~self.run_state):
            m.d.sync += [row.eq(0), beat.eq(0), started.eq(0)]
        return e, row_base + off, count, last_beat

    def load_engine(self):
        """Beats from `rd_data` into the scratchpad of the oldest request still receiving."""
        m, core = self.m, self.core
        slots, ptr, wrap = self._dma_common(Unit.LOAD, core.rd_cmd, core.rd_done)
        beat = core.rd_data
        e, addr, count, _ = self._walker("ld", slots, ptr, wrap, beat.valid)
        for b, wp in self.dma_w.items():
            m.d.comb += [wp.addr.eq(addr), wp.data.eq(beat.payload),
                         wp.count.eq(Mux(beat.valid & (e.buf == b), count, 0))]

    def store_engine(self):
        """Reads the oldest request's bytes, a beat a cycle, into a small FIFO that `wr_data`
        drains when the port pulls (the port starts pulling a DRAM latency after the command,
        so the FIFO is full by then)."""
        m, core, W = self.m, self.core, self.W
        slots, ptr, wrap = self._dma_common(Unit.STORE, core.wr_cmd, core.wr_done)
        depth = 4
        fifo = Array(Signal(8 * W, name=f"st_fifo{i}") for i in range(depth))
        rd_p, wr_p = Signal(range(depth)), Signal(range(depth))
        level = Signal(range(depth + 1))
        pending = Signal()                              # a read in flight (data next cycle)
        has = Signal()
        # a request has beats left to read while ptr has not caught up with the tail
        reads_left = Signal(range(8 + 1))
        m.d.comb += has.eq(reads_left != 0)
        pull = core.wr_data.valid & core.wr_data.ready
        step = Signal()
        m.d.comb += step.eq(has & (level + pending < depth))
        e, addr, _, last_beat = self._walker("st", slots, ptr, wrap, step)
        m.d.sync += reads_left.eq(reads_left + self.starting[Unit.STORE] - (step & last_beat))
        with m.If(core.start & ~self.run_state):
            m.d.sync += reads_left.eq(0)
        for b, rp in self.dma_r.items():
            m.d.comb += [rp.addr.eq(addr), rp.en.eq(step & (e.buf == b))]
        buf_q = Signal(Buffer)
        m.d.sync += [pending.eq(step), buf_q.eq(e.buf)]
        rdata = Array(self.dma_r[b].data for b in Buffer)[buf_q.as_value()]

        def wrap4(p):
            return Mux(p == depth - 1, 0, p + 1)
        with m.If(pending):
            m.d.sync += [fifo[wr_p].eq(rdata), wr_p.eq(wrap4(wr_p))]
        with m.If(pull):
            m.d.sync += rd_p.eq(wrap4(rd_p))
        m.d.sync += level.eq(level + pending - pull)
        m.d.comb += [core.wr_data.valid.eq(level != 0), core.wr_data.payload.eq(fifo[rd_p])]
        with m.If(core.start & ~self.run_state):
            m.d.sync += [rd_p.eq(0), wr_p.eq(0), level.eq(0), pending.eq(0)]

    # -- end of a run ----------------------------------------------------------------------
    def termination(self):
        m = self.m
        idle = Cat(*(~self.busy[u] & ~self.q[u]["valid"] for u in Unit),
                   self.inflight[Unit.LOAD] == 0, self.inflight[Unit.STORE] == 0).all()
        finished = self.finished | self.finishing
        moving = Cat(*(self.starting[u] | self.busy[u] for u in Unit),
                     self.inflight[Unit.LOAD] != 0, self.inflight[Unit.STORE] != 0,
                     ~finished & ~self.dispatch_stall).any()
        deadlock = Signal()
        m.d.comb += deadlock.eq(self.run_state & ~moving & ~(finished & idle))
        # the instruction to blame: the first blocked unit's head, else the dispatcher's word
        blame = self.pc
        for u in reversed(Unit):
            blame = Mux(self.blocked[u], self.q[u]["head"].index, blame)
        core = self.core
        with m.If(self.run_state):
            with m.If(core.rd_error | core.wr_error):
                m.d.comb += [self.stop.eq(1), self.fail.eq(ErrCode.BUS),
                             self.fail_index.eq(Mux(core.rd_error, self.failing[Unit.LOAD],
                                                    self.failing[Unit.STORE]))]
            with m.Elif(self.dispatch_fail != ErrCode.NONE):
                m.d.comb += [self.stop.eq(1), self.fail.eq(self.dispatch_fail),
                             self.fail_index.eq(self.pc)]
            with m.Elif(deadlock):
                m.d.comb += [self.stop.eq(1), self.fail.eq(ErrCode.DEADLOCK),
                             self.fail_index.eq(blame)]
            with m.Elif(finished & idle):
                m.d.comb += self.stop.eq(1)

