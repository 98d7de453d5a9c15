"""Running a `Program` on the RTL core (`rtl.core.Core`) with the DRAM model
(`verif.dram_model`) behind its memory port: one driver for the Amaranth simulator (`run`) and
for cocotb on Verilator or Icarus (`verif.cocotb_core`).

`CoreDriver` speaks to the core through two callables over its flat port names (Amaranth's
`<port>__<member>`, as in the Verilog): `get(name) -> int` and `set(name, int)`. Each cycle the
backend calls `begin(cycle)` once the clock edge has passed (it takes the DMA commands, drives the
port's beats and `done` pulses for this cycle and pulls the store beats) and `end(cycle)` once
the inputs have settled (it records the cycle's trace events); `end` says whether the core still
runs. `first_difference` compares the recorded events with the cycle model's `log`.
"""

from dataclasses import dataclass, field

import numpy as np

from arch.isa import Unit
from rtl.core import DMA_CMD, Core, ErrCode, event_layout

from .dram_model import DramModel

__all__ = ["CoreRun", "CoreDriver", "run", "first_difference", "program_depth", "assert_agrees"]


@dataclass
class CoreRun:
    dram: np.ndarray
    cycles: int
    error: ErrCode
    err_index: int
    log: dict = field(default_factory=dict)     # insn -> {"dispatch", "start", "end", "retire"}


def program_depth(n):
    """The program memory a test build gives `n` words: a power of two, at least 16."""
    return max(16, 1 << (n - 1).bit_length())


def _fields(layout, value):
    return {name: (value >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


class CoreDriver:
    """Drives one run of `program` on a core for `cfg`, built with a program memory of
    `prog_depth` words, through `get` and `set`."""

    def __init__(self, cfg, program, get, set, prog_depth):
        self.cfg, self.get, self.set = cfg, get, set
        self.words = list(program.words)
        if len(self.words) > prog_depth:
            raise ValueError(f"a program of {len(self.words)} words must fit the core's "
                             f"{prog_depth}-word program memory")
        self.model = DramModel(cfg, program.dram)
        self.log = {}
        self.event = event_layout(prog_depth)

    def load_steps(self, reverse=False):
        """The host's program writes, one a cycle (word 0 first, or last with `reverse`, so
        that it is written in the cycle before `start`): yields after setting each. The DRAM
        model never fails, so the port's error inputs are held at 0."""
        self.set("rd_error", 0)
        self.set("wr_error", 0)
        order = list(enumerate(self.words))
        for i, w in reversed(order) if reverse else order:
            self.set("prog_we", 1)
            self.set("prog_addr", i)
            self.set("prog_data", w)
            yield
        self.set("prog_we", 0)
        self.set("prog_len", len(self.words))

    def begin(self, cycle):
        get, set, model = self.get, self.set, self.model
        for kind, port in (("load", "rd_cmd"), ("store", "wr_cmd")):     # a load first
            if get(f"{port}__valid"):
                c = _fields(DMA_CMD, get(f"{port}__payload"))
                model.command(cycle, kind, c["dram"], c["rows"], c["row_bytes"],
                              c["dram_stride"])
        beat, rd_done, pull, wr_done = model.outputs(cycle)
        set("rd_data__valid", int(beat is not None))
        set("rd_data__payload", int.from_bytes(beat, "little") if beat else 0)
        set("rd_done", int(rd_done))
        set("wr_data__ready", int(pull is not None))
        set("wr_done", int(wr_done))
        if pull is not None:
            model.store_beat(pull, get("wr_data__valid"), get("wr_data__payload"))
        if wr_done:
            model.check_done(model.pending[0])

    def _event(self, port, u=None):
        value = self.get(port)
        if u is not None:
            value >>= u * self.event.size
        ev = _fields(self.event, value)
        return ev["index"] if ev["valid"] else None

    def end(self, cycle):
        i = self._event("trace_dispatch")
        if i is not None:
            self.log[i] = {"dispatch": cycle}
        for u in Unit:
            for key, port, after in (("start", "trace_start", 0), ("end", "trace_end", 1),
                                     ("retire", "trace_retire", 0)):
                i = self._event(port, u.value)
                if i is not None:
                    self.log.setdefault(i, {})[key] = cycle + after
        return bool(self.get("running"))

    def result(self):
        return CoreRun(self.model.mem, self.get("cycles"), ErrCode(self.get("error")),
                       self.get("err_index"), self.log)


def run_core(cfg, program, max_cycles=200_000, vcd=None, reverse_load=False):
    """Run `program` (an `arch.program.Program`) on the core for `cfg` under the Amaranth
    simulator, its words written in order (or word 0 last: `reverse_load`); returns a
    `CoreRun`."""
    from amaranth.sim import Simulator

    core = Core(cfg, prog_depth=program_depth(len(program.words)))
    flat = {"__".join(map(str, path)): value for path, _, value in core.signature.flatten(core)}
    sim = Simulator(core)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        def get(name):
            return ctx.get(flat[name].as_value() if hasattr(flat[name], "as_value")
                           else flat[name])

        def set(name, value):
            ctx.set(flat[name], value)
        drv = CoreDriver(cfg, program, get, set, core.prog_depth)
        for _ in drv.load_steps(reverse_load):
            await ctx.tick()
        set("start", 1)
        await ctx.tick()
        set("start", 0)
        for cycle in range(max_cycles):
            drv.begin(cycle)
            if not drv.end(cycle):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"the core ran {max_cycles} cycles without stopping")
        await ctx.tick()
        out["run"] = drv.result()

    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return out["run"]


run = run_core


def first_difference(program, rtl_log, model_log):
    """The first instruction (in program order) whose events differ, as one line naming both
    cycles, the tokens it waited for and the instruction that signalled each (the newest
    earlier one of that unit that signals this one's unit), with their cycles; or None."""
    from arch import isa
    insns = [isa.decode(w, i) for i, w in enumerate(program.words)]
    for i in sorted(set(rtl_log) | set(model_log)):
        a, b = rtl_log.get(i, {}), model_log.get(i, {})
        for key in ("dispatch", "start", "end", "retire"):
            if a.get(key) != b.get(key):
                insn = insns[i]
                waits = []
                for u in Unit:
                    if insn.wait >> u.value & 1:
                        j = next((j for j in range(i - 1, -1, -1) if insns[j].unit is u
                                  and insns[j].signal >> insn.unit.value & 1), None)
                        who = (f"insn {j} {insns[j].op.name.lower()} (RTL {rtl_log.get(j)}, "
                               f"model {model_log.get(j)})" if j is not None else "none")
                        waits.append(f"{u.name.lower()} from {who}")
                return (f"insn {i} {insn.op.name.lower()} ({insn.unit.name.lower()}): {key} "
                        f"RTL {a.get(key)} vs model {b.get(key)} (RTL {a}, model {b}); "
                        f"waits: {'; '.join(waits) or 'none'}")
    return None


def assert_agrees(cfg, program, run=None, what="program", nan_words=False):
    """Run `program` on the functional executor and the cycle model (and, unless `run` is
    given, on the core under the Amaranth simulator) and assert that the core stopped normally,
    that its DRAM equals the executor's bit for bit, and that every instruction's events and the
    total equal the model's. With `nan_words`, an aligned 4-byte word that is a binary32 NaN in
    both agrees whatever its bits (the core's NaNs are `rtl.fp32.QNAN`; numpy's may carry another
    sign or payload: only "is a NaN" is the contract). Returns (core run, the model's log)."""
    from sim.cycle import simulate
    from sim.executor import Executor
    ex = Executor(cfg, program)
    ex.run()
    res, model = simulate(cfg, program)
    run = run_core(cfg, program) if run is None else run
    assert run.error is ErrCode.NONE, \
        f"{what}: the core stopped with {run.error.name} at insn {run.err_index}"
    bad = np.flatnonzero(run.dram != ex.dram)
    if nan_words and bad.size:
        words = np.unique(bad // 4)
        both = np.isnan(_f32_words(run.dram)[words]) & np.isnan(_f32_words(ex.dram)[words])
        bad = 4 * words[~both]
    assert bad.size == 0, (f"{what}: the DRAM after the run differs from the executor's at "
                           f"{bad.size} bytes, first {bad[0]:#x}" if bad.size else "")
    diff = first_difference(program, run.log, model.log)
    assert diff is None, f"{what}: {diff}"
    assert run.cycles == res.cycles, f"{what}: RTL {run.cycles} cycles vs model {res.cycles}"
    return run, model.log


def _f32_words(dram):
    """`dram` (bytes) as little-endian binary32 words, zero-padded to a whole word."""
    raw = np.asarray(dram, np.uint8)
    return np.concatenate([raw, np.zeros(-raw.size % 4, np.uint8)]).view("<f4")


def write_traces(path, program, rtl_log, model_log):
    """Chrome/Perfetto trace JSON of one program's run on the cycle model and on the core side by
    side (`sim.trace`): one process each, one track per unit, a span per instruction from its
    start to the cycle its unit is free, a DMA request's time in flight to its retirement on
    tracks of its own; timestamps in cycles."""
    from sim.trace import Trace, UnitTracks
    trace = Trace()
    insns = program.insns()
    for name, log in (("cycle model", model_log), ("RTL core", rtl_log)):
        UnitTracks(trace, trace.process(name)).instructions(insns, log, sorted(log))
    trace.write(path)
