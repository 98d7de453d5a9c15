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

__all__ = ["CoreRun", "CoreDriver", "run", "first_difference", "program_depth"]


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

    def load_steps(self):
        """The host's program writes, one a cycle: yields after setting each."""
        for i, w in enumerate(self.words):
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


def run(cfg, program, max_cycles=200_000, vcd=None):
    """Run `program` (an `arch.program.Program`) on the core for `cfg` under the Amaranth
    simulator; returns a `CoreRun`."""
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
        for _ in drv.load_steps():
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


def first_difference(program, rtl_log, model_log):
    """The first instruction (in program order) whose events differ, as one line, or None."""
    from arch import isa
    for i in sorted(set(rtl_log) | set(model_log)):
        a, b = rtl_log.get(i, {}), model_log.get(i, {})
        for key in ("dispatch", "start", "end", "retire"):
            if a.get(key) != b.get(key):
                name = isa.decode(program.words[i]).op.name.lower()
                return (f"insn {i} {name}: {key} RTL {a.get(key)} vs model {b.get(key)} "
                        f"(RTL {a}, model {b})")
    return None
