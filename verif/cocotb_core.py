"""cocotb test of the core (run by `verif/test_core.py::test_core_on_hdl_simulator`): runs every
program of `BITLUT_CORE_CASES` (an `.npz` of words and DRAM images, no pickles) one after another
on one build, through the same `verif.core_tb.CoreDriver` as the Amaranth-simulator runs, and
writes what each did to `BITLUT_CORE_RESULTS` (JSON) for the pytest side to compare.

Between programs the scratchpads are cleared through a backdoor (the simulator's handles on
the banks' arrays), as the functional executor starts each program on zeroed scratchpads; the
hardware's scratchpads are undefined after power-up and a compiled program writes before it
reads."""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from arch.isa import Buffer

from .core_hdl import read_cases
from .core_tb import CoreDriver


def _get(dut):
    def get(name):
        value = getattr(dut, name).value
        return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)
    return get


def _set(dut):
    def set(name, value):
        getattr(dut, name).value = value
    return set


def _banks(spad, name):
    """The memories of a scratchpad: `<buffer>_even` / `_odd`, or with several writers their
    XOR memories `<buffer>_even_x0`, `_x1`, ... (`rtl.scratchpad._bank`)."""
    for half in ("even", "odd"):
        if hasattr(spad, f"{name}_{half}"):
            yield getattr(spad, f"{name}_{half}")
            continue
        w = 0
        while hasattr(spad, f"{name}_{half}_x{w}"):
            yield getattr(spad, f"{name}_{half}_x{w}")
            w += 1
        assert w > 1, f"no memories of {name}_{half} in {spad._path}"


def scrub(dut):
    """Zero every scratchpad memory (the XOR of zeros is zero: so are the XOR banks)."""
    for b in Buffer:
        name = b.name.lower()
        for rows in _banks(getattr(dut, f"spad_{name}"), name):
            for i in range(len(rows)):
                rows[i].value = 0


@cocotb.test()
async def run_programs(dut):
    cfg, programs = read_cases(os.environ["BITLUT_CORE_CASES"], os.environ["BITLUT_CORE_CONFIG"])
    depth = int(os.environ["BITLUT_CORE_DEPTH"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    results = {}
    for name, prog in programs.items():
        drv = CoreDriver(cfg, prog, _get(dut), _set(dut), depth)
        await FallingEdge(dut.clk)
        scrub(dut)
        for _ in drv.load_steps():
            await FallingEdge(dut.clk)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        for cycle in range(200_000):
            drv.begin(cycle)
            await ReadOnly()
            running = drv.end(cycle)
            await FallingEdge(dut.clk)
            if not running:
                break
        r = drv.result()
        results[name] = {"cycles": r.cycles, "error": r.error.name, "err_index": r.err_index,
                         "log": {str(k): v for k, v in r.log.items()},
                         "dram": r.dram.tobytes().hex()}
    with open(os.environ["BITLUT_CORE_RESULTS"], "w") as f:
        json.dump(results, f)
