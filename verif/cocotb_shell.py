"""cocotb test of the FPGA shell (run by `verif/test_shell.py`, on Verilator):
cocotbext-axi's `AxiRam` behind `m_axi_*` and its `AxiLiteMaster` on `s_axil_*`, both with
seeded random pauses on every channel. Every program of `BITLUT_SHELL_CASES` (an `.npz` of
words and DRAM images, no pickles) is loaded and started over AXI4-Lite by
`verif.shell_host.ShellHost`, one after another on one build; its DRAM image lies at
`BITLUT_SHELL_BASE` of the RAM. What each did goes to `BITLUT_SHELL_RESULTS` (JSON).

Between programs the scratchpads are cleared through a backdoor, as in `verif/cocotb_core.py`
(the executor starts each program on zeroed scratchpads)."""

import json
import logging
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from .cocotb_core import scrub
from .core_hdl import read_cases
from .shell_host import ShellHost


def _pauses(rng, p):
    while True:
        yield rng.random() < p


def _channels(ram, lite):
    return (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
            ram.read_if.ar_channel, ram.read_if.r_channel,
            lite.write_if.aw_channel, lite.write_if.w_channel, lite.write_if.b_channel,
            lite.read_if.ar_channel, lite.read_if.r_channel)


@cocotb.test()
async def run_programs(dut):
    cfg, programs = read_cases(os.environ["BITLUT_SHELL_CASES"],
                               os.environ["BITLUT_SHELL_CONFIG"])
    base = int(os.environ["BITLUT_SHELL_BASE"])
    s = int(os.environ["BITLUT_SEED"])
    size = base + max(len(p.dram) for p in programs.values()) + 4096
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=size)
    lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    for bfm in (ram.write_if, ram.read_if, lite.write_if, lite.read_if):
        bfm.log.setLevel(logging.WARNING)           # one line per transaction otherwise
    rng = random.Random(s)
    for channel in _channels(ram, lite):
        channel.set_pause_generator(_pauses(random.Random(rng.random()), 0.3))
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    async def read(addr):
        r = await lite.read(addr, 4)
        return int.from_bytes(r.data, "little"), int(r.resp)

    async def write(addr, value, strb):
        assert strb == 0xF, "cocotbext-axi's AxiLiteMaster writes whole words here"
        return int((await lite.write(addr, value.to_bytes(4, "little"))).resp)

    host = ShellHost(read, write)
    results = {}
    for name, prog in programs.items():
        image = np.asarray(prog.dram, np.uint8)
        ram.write(0, bytes(size))
        ram.write(base, image.tobytes())
        scrub(dut.core)
        out = await host.run_program(cfg, prog, base)
        print(f"{name}: {out}")
        results[name] = {"error": out.error.name, "err_index": out.err_index,
                         "cycles": out.cycles, "polls": out.polls,
                         "dram": ram.read(base, image.size).hex()}
    with open(os.environ["BITLUT_SHELL_RESULTS"], "w") as f:
        json.dump(results, f)
