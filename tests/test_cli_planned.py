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


@pytest.mark.parametrize("name", sorted(cli.PLANNED))
def test_planned_command_exits_nonzero_with_its_issue(name, capsys):
    what, issue = cli.PLANNED[name]
    assert cli.main([name, "extra", "--args"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"bitlut: error: `bitlut {name}` ({what}) is not built yet; issue {issue} " \
        "builds it\n"


def test_make_dse_target_fails_while_dse_is_planned():
    # the Makefile's target runs the same command line: the process exit status is what make sees
    r = subprocess.run([sys.executable, "-m", "bitlut", "dse"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "not built yet" in r.stderr


def test_a_stale_planned_entry_is_an_error(monkeypatch):
    monkeypatch.setitem(cli.PLANNED, "sim", ("simulate", 5))
    with pytest.raises(ValueError, match=r"PLANNED must name only commands not built yet, "
                       r"not 'sim'"):
        cli.build_parser()


def test_a_missing_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "reports.cli"])
    with pytest.raises(ModuleNotFoundError, match="reports.cli"):
        cli.build_parser()
