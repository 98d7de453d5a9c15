"""Amaranth-simulator tests of the LUT PE array against `sim.golden` (seeded: BITLUT_SEED)."""

import numpy as np
import pytest

from rtl.lut_pe import LutPEArray
from rtl.table_unit import table_layouts

from . import amaranth_backend, vectors
from .configs import long_run, small
from .harness import check, seed

VARIANTS = {
    "g4_sym": {},
    "g4_full": {"symmetric": False},
    "g2_sym": {"group": 2},
    "g3_full": {"group": 3, "symmetric": False},
    "g5_sym_ib5": {"group": 5, "index_bits": 5},
    "acc16": {"acc_bits": 16},
    "w1_only": {"weight_bits": (1,)},
}


def _run(cfg, scenarios, s, name):
    dut = LutPEArray(cfg)
    layouts = {"i": dut.beat_layout, "o": dut.result_layout}
    return amaranth_backend.run(dut, layouts, "o", scenarios, s, name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lut_pe_matches_golden(variant):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("lut", **VARIANTS[variant])
    geom = table_layouts(cfg)[2]
    rng = np.random.default_rng(s)
    n = 200 if long_run() else 10
    scenarios = [
        vectors.lut_corners(cfg, geom, rng, "corners"),
        vectors.lut_random(cfg, geom, rng, "back-to-back random", n=n),
        vectors.lut_random(cfg, geom, rng, "stalled output", n=n, ready="stall", valid="random"),
    ]
    traces = _run(cfg, scenarios, s, f"lut_pe_{variant}")
    for sc, tr in zip(scenarios[:2], traces[:2], strict=True):
        lat, ii = check(sc, tr, f"seed={s} {variant}")
        # No bubbles between beats or tiles, and the result follows the last beat by pe_latency.
        assert set(ii) == {cfg.timing.pe_ii}, f"{sc.name}: intervals {sorted(set(ii))}"
        assert set(lat) == {cfg.timing.pe_latency}, f"{sc.name}: latencies {sorted(set(lat))}"
    check(scenarios[2], traces[2], f"seed={s} {variant}")


def test_lut_pe_saturates_when_configured():
    s = seed()
    cfg = small("lut", acc_bits=16, saturate=True)
    geom = table_layouts(cfg)[2]
    rng = np.random.default_rng(s)
    sc = vectors.lut_corners(cfg, geom, rng, "saturating corners")
    (tr,) = _run(cfg, [sc], s, "lut_pe_saturate")
    check(sc, tr, f"seed={s} saturate")


def test_lut_pe_rejects_other_kinds():
    with pytest.raises(ValueError, match=r"`cfg.pe.kind` must be 'lut' for a LutPEArray, not"):
        LutPEArray(small("bitserial"))
