"""The MAC baseline's weight-stationary compute cycles equal SCALE-Sim v3's (issue 5).

SCALE-Sim needs numpy < 2.4, so it cannot share this interpreter: the test compares with the
numbers `python -m sim.scalesim_compare --scalesim-python P --record` measured, and runs SCALE-Sim
itself when an interpreter is given in BITLUT_SCALESIM_PYTHON.
"""

import json
import os

import pytest

from sim import scalesim_compare as sc

RECORDED = json.loads(sc.RECORD.read_text())


@pytest.mark.parametrize("spec", sorted(RECORDED["compute_cycles"]))
def test_equal_to_recorded_scalesim(spec):
    m, k, n = (int(v) for v in spec.split(","))
    assert sc.ours(m, k, n) == RECORDED["compute_cycles"][spec]


def test_recorded_numbers_follow_the_closed_form():
    # an independent check of the recording: SCALE-Sim's WS formula (papers/peers.md §3.1)
    for spec, cycles in RECORDED["compute_cycles"].items():
        m, k, n = (int(v) for v in spec.split(","))
        assert cycles == -(-k // 32) * -(-n // 32) * (2 * 32 + 32 + m - 2) - 1


@pytest.mark.skipif(not os.environ.get("BITLUT_SCALESIM_PYTHON"),
                    reason="set BITLUT_SCALESIM_PYTHON to an interpreter with scalesim to run it")
def test_live_scalesim():
    theirs, _ = sc.run_scalesim(os.environ["BITLUT_SCALESIM_PYTHON"], sc.GEMMS[:2])
    for spec, cycles in theirs.items():
        m, k, n = (int(v) for v in spec.split(","))
        assert sc.ours(m, k, n) == cycles
