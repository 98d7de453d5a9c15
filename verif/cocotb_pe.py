"""cocotb testbench for the PE arrays and the table unit (run by `verif/test_cocotb.py`).

The design under test and its config come from the environment: `BITLUT_DESIGN` (`table_unit`,
`lut_pe`, `bitserial_pe`, `mac_pe`), `BITLUT_PE` (JSON of the `pe` fields changed from the shipped
config, as in `verif.configs.small`), `BITLUT_SEED`. The scenarios, the golden expectations and the
cycle driver are the same as in the Amaranth-simulator tests (`verif.harness`, `verif.vectors`).
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from . import vectors
from .configs import long_run, small
from .harness import check, drive


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


def _design():
    kind = os.environ["BITLUT_DESIGN"]
    changes = json.loads(os.environ.get("BITLUT_PE", "{}"))
    s = int(os.environ.get("BITLUT_SEED", "1"))
    if kind == "table_unit":
        from rtl.table_unit import TableUnit
        cfg = small("lut", **changes)
        d = TableUnit(cfg)
        layouts = {"i": d.in_layout, "o": d.out_layout}
    elif kind == "lut_pe":
        from rtl.lut_pe import LutPEArray
        cfg = small("lut", **changes)
        d = LutPEArray(cfg)
        layouts = {"i": d.beat_layout, "o": d.result_layout}
    elif kind == "bitserial_pe":
        from rtl.bitserial_pe import BitSerialPEArray
        cfg = small("bitserial", **changes)
        d = BitSerialPEArray(cfg)
        layouts = {"i": d.beat_layout, "o": d.result_layout}
    else:
        from rtl.mac_pe import MacPEArray
        cfg = small("mac", **changes)
        d = MacPEArray(cfg)
        layouts = {"w": d.weight_layout, "i": d.act_layout, "o": d.result_layout}
    d._MustUse__silence = True   # only its layouts are used here; the Verilog was built already
    return kind, cfg, d, layouts, s


def _scenarios(kind, cfg, d, rng, traffic):
    n = 200 if long_run() else 8
    ready, valid = traffic
    if kind == "table_unit":
        return [vectors.table_scenario(cfg, d.geom, rng, "table", n=n, corners=ready == "always",
                                       ready=ready, valid=valid)]
    if kind == "lut_pe":
        from rtl.table_unit import table_layouts
        geom = table_layouts(cfg)[2]
        sc = [vectors.lut_random(cfg, geom, rng, "random", n=n, ready=ready, valid=valid)]
        return ([vectors.lut_corners(cfg, geom, rng, "corners")] if ready == "always" else []) + sc
    if kind == "bitserial_pe":
        sc = [vectors.bitserial_random(cfg, rng, "random", n=n, ready=ready, valid=valid)]
        return ([vectors.bitserial_corners(cfg, rng, "corners")] if ready == "always" else []) + sc
    scs = vectors.mac_scenarios(cfg, rng, n)
    return scs[:2] if ready == "always" else [scs[2]]


async def _reset(dut, layouts):
    Clock(dut.clk, 10, unit="ns").start()
    for port in layouts:
        if port == "o":
            dut.o__ready.value = 0
        else:
            getattr(dut, f"{port}__valid").value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _run(dut, traffic, seed_offset):
    kind, cfg, d, layouts, s = _design()
    dut._log.info(f"design={kind} config={cfg.tag} seed={s} (override with BITLUT_SEED)")
    await _reset(dut, layouts)
    rng = np.random.default_rng(s + seed_offset)
    adapter = CocotbAdapter(dut)
    results = []
    for k, sc in enumerate(_scenarios(kind, cfg, d, rng, traffic)):
        dut._log.info(f"scenario {sc.name!r}: {len(sc.items)} input beats, "
                      f"{len(sc.expected)} outputs, long={long_run()}")
        trace = await drive(adapter, layouts, "o", sc, rng_seed=s + k)
        results.append((sc, trace, check(sc, trace, f"{kind} seed={s}")))
    return kind, cfg, results


@cocotb.test()
async def back_to_back_latency_and_ii(dut):
    """Corners and random tiles, source always valid, sink always ready: bit-exact results, and
    the measured latency and initiation interval equal the config's timing parameters."""
    kind, cfg, results = await _run(dut, ("always", "always"), 0)
    for sc, _trace, (lat, ii) in results:
        if kind == "table_unit":
            assert set(lat) == {cfg.timing.table_latency} and set(ii) == {cfg.timing.table_ii}
        elif kind == "mac_pe":
            want = cfg.timing.pe_latency + cfg.pe.rows + cfg.pe.cols - 2
            assert set(lat) == {want}, f"{sc.name}: latencies {sorted(set(lat))}, want {want}"
        else:
            assert set(lat) == {cfg.timing.pe_latency}, f"{sc.name}: latencies {set(lat)}"
            assert set(ii) == {cfg.timing.pe_ii}, f"{sc.name}: intervals {set(ii)}"


@cocotb.test()
async def stalled_output_random_input(dut):
    """A long output stall, then random ready and random valid: nothing lost or duplicated."""
    await _run(dut, ("stall", "random"), 1000)
