"""Amaranth-simulator tests of the bit-serial PE array against `sim.golden`.

Seeded: `BITLUT_SEED` (printed).
"""

import numpy as np
import pytest

from rtl.bitserial_pe import BitSerialPEArray

from . import amaranth_backend, vectors
from .configs import long_run, small
from .harness import check, seed

VARIANTS = {
    "g4": {},
    "g1": {"group": 1},
    "g8_acc24": {"group": 8, "acc_bits": 24},
    "cb16": {"centroid_bits": 16},
}


def _run(cfg, scenarios, s, name):
    dut = BitSerialPEArray(cfg)
    layouts = {"i": dut.beat_layout, "o": dut.result_layout}
    return amaranth_backend.run(dut, layouts, "o", scenarios, s, name)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bitserial_pe_matches_golden(variant):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    cfg = small("bitserial", **VARIANTS[variant])
    rng = np.random.default_rng(s)
    n = 200 if long_run() else 10
    scenarios = [
        vectors.bitserial_corners(cfg, rng, "corners"),
        vectors.bitserial_random(cfg, rng, "back-to-back random", n=n),
        vectors.bitserial_random(cfg, rng, "stalled output", n=n, ready="stall", valid="random"),
    ]
    traces = _run(cfg, scenarios, s, f"bitserial_pe_{variant}")
    for sc, tr in zip(scenarios[:2], traces[:2], strict=True):
        lat, ii = check(sc, tr, f"seed={s} {variant}")
        assert set(ii) == {cfg.timing.pe_ii}, f"{sc.name}: intervals {sorted(set(ii))}"
        assert set(lat) == {cfg.timing.pe_latency}, f"{sc.name}: latencies {sorted(set(lat))}"
    check(scenarios[2], traces[2], f"seed={s} {variant}")


def test_bitserial_pe_rejects_other_kinds():
    with pytest.raises(ValueError, match=r"`cfg.pe.kind` must be 'bitserial' for a Bit"):
        BitSerialPEArray(small("lut"))
