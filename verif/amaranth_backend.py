"""The Amaranth-simulator backend of `verif.harness`: an adapter and a runner.

Waveforms: with `WAVES=1` in the environment each run writes `build/waves/<name>.vcd`.
"""

import os
from pathlib import Path

from amaranth.sim import Simulator

from rtl.units import output_port, payload_layouts

from .harness import drive

ROOT = Path(__file__).resolve().parent.parent


class AmaranthAdapter:
    """Drives a `wiring.Component`'s streams from an async Amaranth testbench."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut

    def _sig(self, port, field):
        sig = getattr(getattr(self.dut, port), field)
        return sig.as_value() if field == "payload" else sig

    async def cycle_start(self):
        pass

    async def settle(self):
        pass

    async def cycle_end(self):
        await self.ctx.tick()

    def set(self, port, field, value):
        self.ctx.set(self._sig(port, field), value)

    def get(self, port, field):
        return self.ctx.get(self._sig(port, field))


def run(dut, scenarios, seed=0, name="dut"):
    """Play `scenarios` back to back through `dut` (its stream ports read from its signature);
    returns their `Trace`s."""
    layouts, out_port = payload_layouts(dut.signature), output_port(dut.signature)
    traces = []

    async def testbench(ctx):
        adapter = AmaranthAdapter(ctx, dut)
        for k, sc in enumerate(scenarios):
            traces.append(await drive(adapter, layouts, out_port, sc, rng_seed=seed + k))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if os.environ.get("WAVES", "") not in ("", "0"):
        out = ROOT / "build" / "waves"
        out.mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(out / f"{name}.vcd")):
            sim.run()
    else:
        sim.run()
    return traces
