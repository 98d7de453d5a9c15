"""The shipped configs at full size (`arch/configs/*.yaml`): each unit is built as configured, its
config's `timing` is its pipeline, and the measured latency and intervals are the pipeline's (the
numbers the cycle model reads). Short runs; the small-config tests carry the heavy random testing.
"""

import numpy as np
import pytest

from arch import config
from rtl import units

from . import amaranth_backend
from .benches import BENCHES, verify
from .harness import seed


def _shipped(kind):
    return config.load(kind)          # the shipped config named after its kind


@pytest.mark.parametrize("name", [u.name for u in units.UNITS])
def test_shipped_timing(name):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    unit = units.unit(name)
    cfg = _shipped(unit.kind)
    sc = BENCHES[name].shipped(cfg, np.random.default_rng(s))
    traces = amaranth_backend.run(unit.build(cfg), [sc], s, f"shipped_{name}")
    verify(unit, cfg, [sc], traces, f"{name} {cfg.tag} seed={s}")
