"""Running a `Program` on the RTL core (`rtl.core.Core`) under the Amaranth simulator, with the
DRAM model (`verif.dram_model`) behind its memory port.

`run(cfg, program)` loads the program over the host port, starts the core, serves its memory
port every cycle, and returns a `CoreRun`: the DRAM image after the run, the cycle count, the
error (if the core stopped on one) and the per-instruction events, in the form of the cycle
model's `log` so the two compare directly (`first_difference`).
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from arch.isa import Unit
from rtl.core import Core, ErrCode

from .dram_model import DramModel

__all__ = ["CoreRun", "run", "first_difference"]


@dataclass
class CoreRun:
    dram: np.ndarray
    cycles: int
    error: ErrCode
    err_index: int
    log: dict = field(default_factory=dict)     # insn -> {"dispatch", "start", "end", "retire"}


def _program_depth(n):
    return max(16, 1 << (n - 1).bit_length())


def run(cfg, program, max_cycles=200_000, vcd=None):
    """Run `program` (an `arch.program.Program`) on the core for `cfg`."""
    words = list(program.words)
    core = Core(cfg, prog_depth=_program_depth(len(words)))
    model = DramModel(cfg, program.dram)
    sim = Simulator(core)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        for i, w in enumerate(words):
            ctx.set(core.prog_we, 1)
            ctx.set(core.prog_addr, i)
            ctx.set(core.prog_data, w)
            await ctx.tick()
        ctx.set(core.prog_we, 0)
        ctx.set(core.prog_len, len(words))
        ctx.set(core.start, 1)
        await ctx.tick()
        ctx.set(core.start, 0)
        log = {}
        for cycle in range(max_cycles):
            _serve(ctx, core, model, cycle)
            _record(ctx, core, cycle, log)
            if not ctx.get(core.running):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"the core ran {max_cycles} cycles without stopping")
        await ctx.tick()
        out.update(cycles=ctx.get(core.cycles), error=ErrCode(ctx.get(core.error)),
                   err_index=ctx.get(core.err_index), log=log)

    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return CoreRun(model.mem, out["cycles"], out["error"], out["err_index"], out["log"])


def _serve(ctx, core, model, cycle):
    """The memory port in `cycle`: take the commands, then drive this cycle's beats."""
    for kind, port in (("load", core.rd_cmd), ("store", core.wr_cmd)):    # a load first
        if ctx.get(port.valid):
            p = port.payload
            model.command(cycle, kind, ctx.get(p.dram), ctx.get(p.rows), ctx.get(p.row_bytes),
                          ctx.get(p.dram_stride))
    beat, rd_done, pull, wr_done = model.outputs(cycle)
    ctx.set(core.rd_data.valid, beat is not None)
    ctx.set(core.rd_data.payload, int.from_bytes(beat, "little") if beat else 0)
    ctx.set(core.rd_done, rd_done)
    ctx.set(core.wr_data.ready, pull is not None)
    ctx.set(core.wr_done, wr_done)
    if pull is not None:
        model.store_beat(pull, ctx.get(core.wr_data.valid), ctx.get(core.wr_data.payload))
    if wr_done:
        model.check_done(model.pending[0])


def _record(ctx, core, cycle, log):
    d = core.trace_dispatch
    if ctx.get(d.valid):
        log[ctx.get(d.index)] = {"dispatch": cycle}
    for u in Unit:
        for key, port, after in (("start", core.trace_start, 0), ("end", core.trace_end, 1),
                                 ("retire", core.trace_retire, 0)):
            ev = port[u.value]
            if ctx.get(ev.valid):
                log.setdefault(ctx.get(ev.index), {})[key] = cycle + after


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
