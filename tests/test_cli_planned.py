"""The `bitlut` command table: every command module imports, and a planned command that is not
built yet fails (exit 2, one line on stderr naming its issue) instead of passing silently."""

import importlib
import subprocess
import sys

import pytest

from bitlut import cli


@pytest.mark.parametrize("name", cli.COMMAND_MODULES)
def test_every_command_module_imports_and_registers(name):
    module = importlib.import_module(name)
    assert callable(module.register)


def test_planned_command_exits_nonzero_with_its_issue(monkeypatch, capsys):
    # no command is planned today (dse, issue 12, is built): a stand-in entry tests the table
    monkeypatch.setattr(cli, "PLANNED", {"fpga": ("FPGA shell", 99)})
    assert cli.main(["fpga", "extra", "--args"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "bitlut: error: `bitlut fpga` (FPGA shell) is not built yet; issue 99 " \
        "builds it\n"


def test_make_dse_runs_a_built_command():
    # the Makefile's target runs `bitlut dse SWEEP`: the command exists and takes a sweep file
    r = subprocess.run([sys.executable, "-m", "bitlut", "dse", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "SWEEP.yaml" in r.stdout
    r = subprocess.run([sys.executable, "-m", "bitlut", "dse", "no-such-sweep.yaml"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == "bitlut: error: no-such-sweep.yaml: sweep file must exist, not missing\n"


def test_a_stale_planned_entry_is_an_error(monkeypatch):
    monkeypatch.setitem(cli.PLANNED, "sim", ("simulate", 5))
    with pytest.raises(ValueError, match=r"PLANNED must name only commands not built yet, "
                       r"not 'sim'"):
        cli.build_parser()


def test_a_missing_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "reports.cli"])
    with pytest.raises(ModuleNotFoundError, match="reports.cli"):
        cli.build_parser()
