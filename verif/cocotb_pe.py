"""cocotb testbench for the RTL units (run by `verif/test_cocotb.py`).

The unit under test and its config come from the environment: `BITLUT_DESIGN` (a unit name of
`rtl.units.UNITS`), `BITLUT_PE` (JSON of the `pe` fields changed from the shipped config, as in
`verif.configs.small`), `BITLUT_SEED`. The scenarios, the golden expectations, the cycle driver
and the checks are the Amaranth-simulator tests' own (`verif.benches`, `verif.harness`); the
port layouts come from the unit's signature (`rtl.units.payload_layouts`), the Verilog having
been built from the same component.
"""

import json
import os

import cocotb
import numpy as np
from amaranth.lib import wiring
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from rtl import units

from .benches import BENCHES, tiles, verify
from .configs import long_run, small
from .harness import drive


class CocotbAdapter:
    """Drives the flattened stream ports (`<port>__valid`, `__ready`, `__payload`)."""

    def __init__(self, dut):
        self.dut = dut

    async def cycle_start(self):
        await FallingEdge(self.dut.clk)

    async def settle(self):
        await ReadOnly()

    async def cycle_end(self):
        pass

    def set(self, port, field, value):
        getattr(self.dut, f"{port}__{field}").value = value

    def get(self, port, field):
        value = getattr(self.dut, f"{port}__{field}").value
        return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


async def _reset(dut, signature):
    Clock(dut.clk, 10, unit="ns").start()
    for port, member in signature.members.items():
        field = "valid" if member.flow == wiring.In else "ready"
        getattr(dut, f"{port}__{field}").value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def matches_golden(dut):
    """Corners and random tiles back to back with the source always valid and the sink always
    ready, then a stalled output against a random-valid source: bit-exact results, nothing lost
    or duplicated, and in the unstalled runs the latency and intervals of the unit's pipeline,
    which equals the config's timing."""
    unit = units.unit(os.environ["BITLUT_DESIGN"])
    cfg = small(unit.kind, **json.loads(os.environ.get("BITLUT_PE", "{}")))
    s = int(os.environ.get("BITLUT_SEED", "1"))
    bench, signature = BENCHES[unit.name], unit.signature(cfg)
    dut._log.info(f"design={unit.name} config={cfg.tag} seed={s} (override with BITLUT_SEED)")
    await _reset(dut, signature)
    layouts, out_port = units.payload_layouts(signature), units.output_port(signature)
    adapter = CocotbAdapter(dut)
    scenarios = bench.scenarios(cfg, np.random.default_rng(s), tiles(bench))
    traces = []
    for k, sc in enumerate(scenarios):
        dut._log.info(f"scenario {sc.name!r}: {len(sc.items)} input beats, "
                      f"{len(sc.expected)} outputs, long={long_run()}")
        traces.append(await drive(adapter, layouts, out_port, sc, rng_seed=s + k))
    verify(unit, cfg, scenarios, traces, f"{unit.name} seed={s}")
