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

import json
from collections import Counter
from dataclasses import dataclass, field

import simpy

from arch import timing
from arch.isa import Opcode, Unit
from bitlut.errors import UserError
from bitlut.fileio import atomic_write
from sim.executor import Executor

UNITS = tuple(Unit)
_STOP = object()


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
        out = {f"token:{k}": v for k, v in self.wait_token.items()}
        out.update({f"full:{k}": v for k, v in self.full_token.items()})
        out["dma_slot"] = self.wait_dma_slot
        return {k: v for k, v in out.items() if v}


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


class CycleModel:
    """Simulate `program` on `config`.

    `data`: also compute the outputs (through the functional executor); `trace`: record a
    Chrome/Perfetto trace (one track per unit); `unlimited_bandwidth`: DRAM transfers take no
    time and have no latency (compute-only timing, as SCALE-Sim's CALC mode)."""

    def __init__(self, config, program, data=True, trace=False, unlimited_bandwidth=False):
        self.cfg = config
        self.program = program
        self.executor = Executor(config, program)
        self.insns = self.executor.insns
        self.data = data
        self.unlimited = unlimited_bandwidth
        self.env = simpy.Environment()
        env = self.env
        self.queues = {u: simpy.Store(env, capacity=config.queues.insn_depth) for u in UNITS}
        self.tokens = {(a, b): simpy.Store(env, capacity=config.queues.token_depth)
                       for a in UNITS for b in UNITS if a != b}
        self.dram = simpy.Resource(env, capacity=1)
        self.counters = {u: UnitCounters() for u in UNITS}
        self.state = {}                       # unit -> text of what it is blocked on
        self.events = Counter()
        self.dram_bytes = 0
        self.dram_busy = 0
        self.trace = [] if trace else None

    # -- processes --------------------------------------------------------------------------
    def _dispatch(self):
        for i, insn in enumerate(self.insns):
            if insn.op is Opcode.NOP:
                yield self.env.timeout(1)
                continue
            if insn.op is Opcode.FINISH:
                break
            self.state["dispatch"] = f"insn {i} ({insn.op.name.lower()}) waits for room in " \
                                     f"the {insn.unit.name.lower()} queue"
            yield self.queues[insn.unit].put(i)
            self.state.pop("dispatch", None)
            yield self.env.timeout(1)          # one instruction dispatched per cycle
        for u in UNITS:
            yield self.queues[u].put(_STOP)

    def _unit(self, unit):
        env, c = self.env, self.counters[unit]
        dma = unit in (Unit.LOAD, Unit.STORE)
        slots = simpy.Resource(env, capacity=self.cfg.dram.outstanding) if dma else None
        last_done = None
        while True:
            t0 = env.now
            i = yield self.queues[unit].get()
            c.idle += env.now - t0
            if i is _STOP:
                break
            insn = self.insns[i]
            name = insn.op.name.lower()
            for u in UNITS:
                if insn.wait >> u.value & 1:
                    self.state[unit] = f"insn {i} ({name}) waits for a token from " \
                                       f"{u.name.lower()}"
                    t0 = env.now
                    yield self.tokens[(u, unit)].get()
                    c.wait_token[u.name.lower()] += env.now - t0
            self.state.pop(unit, None)
            start = env.now
            if self.data:
                self.executor.execute(i, insn)
            for k, v in timing.events(self.cfg, insn).items():
                self.events[k] += v
            c.insns += 1
            busy = timing.unit_cycles(self.cfg, insn)
            if dma:
                t0 = env.now
                req = slots.request()
                yield req
                c.wait_dma_slot += env.now - t0
                yield env.timeout(busy)
                c.busy += busy
                done = env.event()
                env.process(self._transfer(unit, i, insn, req, slots, last_done, done))
                last_done = done
                self._record(unit, name, i, start, env.now - start)
            else:
                yield env.timeout(busy)
                c.busy += busy
                self._record(unit, name, i, start, busy)
                yield from self._signal(unit, i, insn)
        if last_done is not None:
            yield last_done

    def _transfer(self, unit, i, insn, req, slots, previous, done):
        """One DMA request in flight: latency, the DRAM port for its bursts, then in-order
        completion and its signals."""
        env, c = self.env, self.counters[unit]
        a = insn.args
        nbytes = timing.dram_bytes(self.cfg, a["rows"], a["row_bytes"])
        self.dram_bytes += nbytes
        if not self.unlimited:
            yield env.timeout(self.cfg.dram_latency_cycles)
            t0 = env.now
            with self.dram.request() as port:
                yield port
                c.wait_dram += env.now - t0
                cycles = timing.dram_transfer_cycles(self.cfg, nbytes)
                yield env.timeout(cycles)
                self.dram_busy += cycles
        if previous is not None and not previous.triggered:
            yield previous
        slots.release(req)
        yield from self._signal(unit, i, insn)
        done.succeed()

    def _signal(self, unit, i, insn):
        env, c = self.env, self.counters[unit]
        for u in UNITS:
            if insn.signal >> u.value & 1:
                self.state[unit] = f"insn {i} ({insn.op.name.lower()}) waits for room in the " \
                                   f"token FIFO to {u.name.lower()}"
                t0 = env.now
                yield self.tokens[(unit, u)].put(i)
                c.full_token[u.name.lower()] += env.now - t0
                self.state.pop(unit, None)

    def _record(self, unit, name, i, start, dur):
        if self.trace is not None:
            self.trace.append({"name": name, "cat": unit.name.lower(), "ph": "X", "ts": start,
                               "dur": max(dur, 1), "pid": 1, "tid": unit.value,
                               "args": {"insn": i}})

    # -- running --------------------------------------------------------------------------------
    def run(self):
        env = self.env
        procs = [env.process(self._unit(u)) for u in UNITS]
        dispatch = env.process(self._dispatch())
        env.run()
        if not dispatch.triggered or not all(p.triggered for p in procs):
            blocked = [f"{k if isinstance(k, str) else k.name.lower()}: {v}"
                       for k, v in self.state.items()]
            raise SimDeadlock(f"deadlock at cycle {env.now}: " + "; ".join(blocked))
        left = {k: len(s.items) for k, s in self.tokens.items() if s.items}
        if left:
            desc = ", ".join(f"{a.name.lower()}->{b.name.lower()}: {v}"
                             for (a, b), v in left.items())
            raise SimDeadlock(f"token FIFOs must be empty at finish, not holding {desc}")
        total = env.now
        for c in self.counters.values():
            # time after a unit's last instruction until the end counts as idle
            c.idle = total - c.busy - sum(c.wait_token.values()) - sum(c.full_token.values()) \
                - c.wait_dma_slot
        return SimResult(total, {u.name.lower(): c for u, c in self.counters.items()},
                         self.dram_bytes, self.dram_busy, self.events,
                         len(self.insns))

    def write_trace(self, path):
        """Chrome/Perfetto trace JSON: one track per unit, timestamps in cycles (shown as us)."""
        meta = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": u.value,
                 "args": {"name": u.name.lower()}} for u in UNITS]
        atomic_write(path, json.dumps({"traceEvents": meta + (self.trace or []),
                                       "displayTimeUnit": "ns",
                                       "otherData": {"time_unit": "cycles"}}) + "\n")


def simulate(config, program, **kw):
    """Run the cycle model; returns (SimResult, model) (the model holds the DRAM image)."""
    model = CycleModel(config, program, **kw)
    return model.run(), model



