"""The SimPy cycle model: a compiled program with timing (DESIGN.md section 4).

The model mirrors the block diagram: one process per hardware unit (the dispatcher, `load`,
`table`, `matmul`, `vector`, `store`), every instruction queue a `simpy.Store` of
`queues.insn_depth`, every dependency-token FIFO a `simpy.Store` of `queues.token_depth`, and the
DRAM data port a `simpy.Resource` that the two DMA units share. Time is in integer cycles. Each
instruction is one event of its unit, its duration the closed form of `arch.timing`; DMA units
keep up to `dram.outstanding` requests in flight, each paying the DRAM latency, holding the port
for its bursts, and completing in order.

Data values come from the functional executor: when `data=True` each unit applies its
instruction's semantics (`sim.executor.Executor.execute`) as the instruction starts, in simulated
time order, so the outputs equal the executor's only if the tokens order every hazard.

Every cycle of every unit is accounted: busy, waiting for a token (by producer), waiting on a
full token FIFO (by consumer), waiting for the DRAM port, waiting for a DMA slot, or idle (empty
queue). A run whose units are all blocked with instructions left ends with `SimDeadlock` naming
each blocked unit and instruction, never a hang.
"""

from collections import Counter, deque
from dataclasses import dataclass, field

import simpy

from arch import timing
from arch.isa import Opcode, Unit
from bitlut.errors import UserError
from sim.executor import Executor

UNITS = tuple(Unit)


class SimDeadlock(UserError):
    """Every unit is blocked and instructions remain."""


@dataclass
class UnitCounters:
    """Cycles of one unit by cause; `busy + sum(stalls) + idle == total` at the end."""
    insns: int = 0
    busy: int = 0
    idle: int = 0
    wait_token: Counter = field(default_factory=Counter)      # producer unit -> cycles
    full_token: Counter = field(default_factory=Counter)      # consumer unit -> cycles
    wait_dram: int = 0          # request-cycles queued for the DRAM port (requests overlap)
    wait_dma_slot: int = 0

    def stalls(self):
        """{stall class: cycles}; the classes are `STALL_CLASSES` (`stall_words` reads them)."""
        out = {f"token:{k}": v for k, v in self.wait_token.items()}
        out.update({f"full:{k}": v for k, v in self.full_token.items()})
        out["dma_slot"] = self.wait_dma_slot
        return {k: v for k, v in out.items() if v}


# The stall classes of a unit's cycles (README "Stall classes"): what it waits for while an
# instruction is at the head of its queue (a unit with an empty queue is idle, not stalled).
# {class: (the report's words, with the other unit for {}, what they mean)}
STALL_CLASSES = {
    "token": ("waits for a {} token", "its next instruction depends on one of the other "
              "unit's: data not written yet, or a buffer not yet read, that it would overwrite"),
    "full": ("waits for room in its token FIFO to {}", "the other unit has not consumed the "
             "tokens this one signalled it, so the finished instruction cannot hand over"),
    "dma_slot": ("waits for a free DMA slot", "all `dram.outstanding` requests are in flight "
                 "(DRAM latency or bandwidth)"),
}


def stall_words(unit, cause):
    """A stall counter of `unit` (a key of `UnitCounters.stalls`: `token:P`, `full:C` or
    `dma_slot`) in words: `("load", "token:matmul")` -> "load waits for a matmul token"."""
    kind, _, other = cause.partition(":")
    if kind not in STALL_CLASSES or (kind == "dma_slot") == bool(other):
        raise ValueError(f"stall class must be token:UNIT, full:UNIT or dma_slot, not {cause!r}")
    return f"{unit} {STALL_CLASSES[kind][0].format(other)}"


@dataclass
class SimResult:
    cycles: int
    units: dict                      # unit name -> UnitCounters
    dram_bytes: int
    dram_busy: int                   # cycles the DRAM port transferred data
    events: Counter                  # counter (`arch.timing.COUNTERS`) -> count
    insns: int

    def energy_pj(self, config):
        return timing.energy_pj(config, self.events, self.cycles)

    def as_dict(self, config):
        return {
            "cycles": self.cycles,
            "latency_s": self.cycles * config.cycle_ns * 1e-9,
            "instructions": self.insns,
            "dram_bytes": self.dram_bytes,
            "dram_busy_cycles": self.dram_busy,
            "energy_j": self.energy_pj(config) * 1e-12,
            "events": dict(self.events),
            "units": {u: {"insns": c.insns, "busy": c.busy, "idle": c.idle,
                          "utilization": c.busy / self.cycles if self.cycles else 0.0,
                          "stalls": c.stalls(), "dram_queue_request_cycles": c.wait_dram}
                      for u, c in self.units.items()},
        }


# Within one cycle t the model works in phases, so that same-cycle interactions have one order
# whatever order SimPy runs its processes in: at t a unit starts an instruction (pops its queue
# head and the tokens it waits for); at t + PUSH a unit at the end of an instruction pushes its
# signals and the dispatcher writes a queue, both seeing the pops of cycle t (a full queue or
# token counter accepts in the cycle its head leaves) and both visible from t + 1 on, as
# registered counters are. DMA requests reach the DRAM port in phase ISSUE[unit] (a load before
# a store issued in the same cycle).
PUSH = 0.5
ISSUE = {Unit.LOAD: 0.625, Unit.STORE: 0.75}


class CycleModel:
    """Simulate `program` on `config`, cycle for cycle as the RTL core runs it (docs/core.md).

    `data`: also compute the outputs (through the functional executor); `trace`: also record
    every stall (`stall_log`, for `sim.trace`); `unlimited_bandwidth`: DRAM transfers take no
    time and have no latency (compute-only timing, as SCALE-Sim's CALC mode).

    Members: `log` {insn index: {"dispatch", "start", "end", ("retire")}}: the cycle each
    instruction was dispatched, started, and left its unit (DMA: retired, its last transfer
    cycle), the events the RTL trace records too; `stall_log` (with `trace`, else None)
    [(insn index, stall class, from, to)]: each wait of an instruction, in simulated time (a
    token FIFO's room is waited for from a push phase, `PUSH` past the cycle)."""

    def __init__(self, config, program, data=True, trace=False, unlimited_bandwidth=False):
        self.cfg = config
        self.program = program
        self.executor = Executor(config, program)
        self.insns = self.executor.insns
        self.data = data
        self.unlimited = unlimited_bandwidth
        self.env = simpy.Environment()
        self.queues = {u: deque() for u in UNITS}        # (insn, visible from cycle)
        self.tokens = Counter()                          # (producer, consumer) -> count
        self.inflight = {u: deque() for u in UNITS}      # DMA requests not yet retired
        self._wake = {}                                  # process key -> event it sleeps on
        self.port_free = 0                               # first cycle the DRAM port is free
        self.counters = {u: UnitCounters() for u in UNITS}
        self.state = {}                       # unit -> text of what it is blocked on
        self.events = Counter()
        self.dram_bytes = 0
        self.dram_busy = 0
        self.log = {}
        self.stall_log = [] if trace else None
        self.dispatched = False
        self.dispatch_end = 0

    # -- waiting for a change -------------------------------------------------------------------
    def _sleep(self, key):
        ev = self.env.event()
        self._wake[key] = ev
        return ev

    def _notify(self, key):
        ev = self._wake.pop(key, None)
        if ev is not None and not ev.triggered:
            ev.succeed()

    def _align(self, phase):
        """Wait for the next time whose fractional part is `phase` (now included)."""
        now = self.env.now
        t = int(now) + phase
        if t < now:
            t += 1
        return self.env.timeout(t - now)

    # -- processes --------------------------------------------------------------------------
    def _dispatch(self):
        env, depth = self.env, self.cfg.queues.insn_depth
        latency = self.cfg.timing.dispatch_latency
        for i, insn in enumerate(self.insns):
            if insn.op is Opcode.NOP:
                yield env.timeout(1)
                continue
            if insn.op is Opcode.FINISH:
                break
            q = self.queues[insn.unit]
            yield self._align(PUSH)
            while len(q) >= depth:
                self.state["dispatch"] = f"insn {i} ({insn.op.name.lower()}) waits for room " \
                                         f"in the {insn.unit.name.lower()} queue"
                yield self._sleep("dispatch")
                yield self._align(PUSH)
            self.state.pop("dispatch", None)
            d = int(env.now)
            q.append((i, d + latency))
            self.log[i] = {"dispatch": d}
            self._notify(insn.unit)
            yield env.timeout(1 - PUSH)        # one instruction dispatched per cycle
        self.dispatched = True
        self.dispatch_end = int(env.now)          # finish is seen at the start of a cycle
        for u in UNITS:
            self._notify(u)

    def _missing(self, unit, insn):
        """What keeps `insn` from starting on `unit` now: (counter name, text) or None."""
        for u in UNITS:
            if insn.wait >> u.value & 1 and self.tokens[(u, unit)] == 0:
                return (f"token:{u.name.lower()}", f"waits for a token from {u.name.lower()}")
        if unit in (Unit.LOAD, Unit.STORE) and \
                len(self.inflight[unit]) >= self.cfg.dram.outstanding:
            return ("dma_slot", "waits for a DMA slot")
        return None

    def _full(self, unit, insn):
        """The first unit whose token counter from `unit` has no room for `insn`'s signal."""
        depth = self.cfg.queues.token_depth
        for u in UNITS:
            if insn.signal >> u.value & 1 and self.tokens[(unit, u)] >= depth:
                return u
        return None

    def _unit(self, unit):
        env, c = self.env, self.counters[unit]
        q = self.queues[unit]
        dma = unit in (Unit.LOAD, Unit.STORE)
        while True:
            while not q and not self.dispatched:
                yield self._sleep(unit)
            if not q:
                break
            i, visible = q[0]
            if visible > env.now:
                yield env.timeout(visible - env.now)
            yield self._align(0)            # idle time is what `run` leaves over at the end
            insn = self.insns[i]
            name = insn.op.name.lower()
            while True:
                why = self._missing(unit, insn)
                if why is None:
                    break
                self.state[unit] = f"insn {i} ({name}) {why[1]}"
                t0 = env.now
                yield self._sleep(unit)
                yield self._align(0)
                if why[0] == "dma_slot":
                    c.wait_dma_slot += env.now - t0
                else:
                    c.wait_token[why[0].split(":")[1]] += env.now - t0
                self._stalled(i, why[0], t0)
            self.state.pop(unit, None)
            # start: the queue head and the waited tokens leave in this cycle
            start = int(env.now)
            q.popleft()
            self._notify("dispatch")
            for u in UNITS:
                if insn.wait >> u.value & 1:
                    self.tokens[(u, unit)] -= 1
                    self._notify(("push", u))
            self.log[i]["start"] = start
            if self.data:
                self.executor.execute(i, insn)
            for k, v in timing.events(self.cfg, insn).items():
                self.events[k] += v
            c.insns += 1
            busy = timing.unit_cycles(self.cfg, insn)
            c.busy += busy
            if dma:
                req = {"i": i, "insn": insn, "retired": env.event()}
                self.inflight[unit].append(req)
                yield env.timeout(busy - 1 + ISSUE[unit])
                env.process(self._transfer(unit, req, start + busy))
                yield self._align(0)
            else:
                yield env.timeout(busy - 1 + PUSH)
                yield from self._push(unit, i, insn)
                yield env.timeout(1 - PUSH)
            self.log[i]["end"] = int(env.now)

    def _push(self, unit, i, insn):
        """Push `insn`'s signals in the first push phase (now or later) with room for all."""
        env, c = self.env, self.counters[unit]
        while True:
            full = self._full(unit, insn)
            if full is None:
                break
            self.state[unit] = f"insn {i} ({insn.op.name.lower()}) waits for room in the " \
                               f"token counter to {full.name.lower()}"
            t0 = env.now
            yield self._sleep(("push", unit))
            yield self._align(PUSH)
            c.full_token[full.name.lower()] += env.now - t0
            self._stalled(i, f"full:{full.name.lower()}", t0)
        self.state.pop(unit, None)
        for u in UNITS:
            if insn.signal >> u.value & 1:
                self.tokens[(unit, u)] += 1
                self._notify(u)

    def _transfer(self, unit, req, t0):
        """One DMA request from cycle `t0`: the DRAM latency, the port (first come, first
        served) for its bursts, then retirement in order: the slot frees and the signals push
        in the last transfer cycle (or the first after it with room for them)."""
        env, c = self.env, self.counters[unit]
        a = req["insn"].args
        nbytes = timing.dram_bytes(self.cfg, a["rows"], a["row_bytes"])
        self.dram_bytes += nbytes
        if self.unlimited:
            last = t0 - 1
        else:
            arrive = t0 + self.cfg.dram_latency_cycles
            begin = max(arrive, self.port_free)
            cycles = timing.dram_transfer_cycles(self.cfg, nbytes)
            self.port_free = begin + cycles
            self.dram_busy += cycles
            c.wait_dram += begin - arrive
            last = begin + cycles - 1
        if last + PUSH > env.now:
            yield env.timeout(last + PUSH - env.now)
        else:
            yield self._align(PUSH)
        q = self.inflight[unit]
        while q[0] is not req:                 # in order, one a cycle: the older ones first
            yield q[0]["retired"]
            yield env.timeout(1)
        yield from self._push(unit, req["i"], req["insn"])
        q.popleft()
        self.log[req["i"]]["retire"] = int(env.now)
        req["retired"].succeed()
        self._notify(unit)                     # a slot is free from the next cycle

    def _stalled(self, i, cause, t0):
        if self.stall_log is not None and self.env.now > t0:
            self.stall_log.append((i, cause, t0, self.env.now))

    # -- running --------------------------------------------------------------------------------
    def run(self):
        env = self.env
        procs = [env.process(self._unit(u)) for u in UNITS]
        dispatch = env.process(self._dispatch())
        env.run()
        busy = any(self.inflight[u] for u in UNITS) or any(self.queues[u] for u in UNITS)
        if not dispatch.triggered or not all(p.triggered for p in procs) or busy:
            blocked = [f"{k if isinstance(k, str) else k.name.lower()}: {v}"
                       for k, v in self.state.items()]
            raise SimDeadlock(f"deadlock at cycle {int(env.now)}: " + "; ".join(blocked))
        left = {k: v for k, v in self.tokens.items() if v}
        if left:
            desc = ", ".join(f"{a.name.lower()}->{b.name.lower()}: {v}"
                             for (a, b), v in left.items())
            raise SimDeadlock(f"token FIFOs must be empty at finish, not holding {desc}")
        # the first cycle in which every unit is idle and every request retired
        total = max([self.dispatch_end] + [max(e["end"], e.get("retire", -1) + 1)
                                           for e in self.log.values()])
        for c in self.counters.values():
            # time after a unit's last instruction until the end counts as idle
            c.idle = total - c.busy - sum(c.wait_token.values()) - sum(c.full_token.values()) \
                - c.wait_dma_slot
        return SimResult(total, {u.name.lower(): c for u, c in self.counters.items()},
                         self.dram_bytes, self.dram_busy, self.events,
                         len(self.insns))


def simulate(config, program, **kw):
    """Run the cycle model; returns (SimResult, model) (the model holds the DRAM image)."""
    model = CycleModel(config, program, **kw)
    return model.run(), model
