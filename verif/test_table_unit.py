"""Amaranth-simulator tests of the table precompute unit against `sim.golden`.

Seeded: `BITLUT_SEED` (printed).
"""

import numpy as np
import pytest

from rtl.table_unit import TableUnit

from . import amaranth_backend, vectors
from .configs import long_run, small
from .harness import check, seed

VARIANTS = {
    "g4_sym": {},
    "g4_full": {"symmetric": False},
    "g2_sym": {"group": 2},
    "g3_sym": {"group": 3},
    "g5_sym_ib5": {"group": 5, "index_bits": 5},
    "w1_only": {"weight_bits": (1,)},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_table_unit_matches_golden(variant):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("lut", **VARIANTS[variant])
    dut = TableUnit(cfg)
    rng = np.random.default_rng(s)
    n = 400 if long_run() else 24
    scenarios = [
        vectors.table_scenario(cfg, dut.geom, rng, "corners+random", n=n, corners=True),
        vectors.table_scenario(cfg, dut.geom, rng, "stalled output", n=n, ready="stall",
                               valid="random"),
    ]
    layouts = {"i": dut.in_layout, "o": dut.out_layout}
    traces = amaranth_backend.run(dut, layouts, "o", scenarios, s, f"table_unit_{variant}")
    lat, ii = check(scenarios[0], traces[0], f"seed={s} {variant}")
    # Ready sink, source always valid: every latency and interval is the config's.
    assert set(lat) == {cfg.timing.table_latency}, f"latencies {sorted(set(lat))}"
    assert set(ii) == {cfg.timing.table_ii}, f"intervals {sorted(set(ii))}"
    check(scenarios[1], traces[1], f"seed={s} {variant}")


def test_table_unit_rejects_other_kinds():
    with pytest.raises(ValueError, match=r"`cfg.pe.kind` must be 'lut' for a TableUnit, not 'mac'"):
        TableUnit(small("mac"))
