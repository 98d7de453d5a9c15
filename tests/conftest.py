import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=None):
    """Run `bitlut ARGS` in a subprocess (as a user would) and return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "bitlut", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or ROOT)


@pytest.fixture
def cli():
    return run_cli


def pytest_terminal_summary(terminalreporter):
    """The fuzz suite's seed and counts per surface (tests/test_fuzz.py), when it ran."""
    fuzz = sys.modules.get("tests.test_fuzz")
    for line in (fuzz.summary_lines() if fuzz else []):
        terminalreporter.write_line(line)
