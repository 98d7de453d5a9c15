"""The shipped configs at full size (`arch/configs/*.yaml`): each array is built as configured and
its measured latency and initiation interval equal the config's `timing` (the numbers the cycle
model reads). Short runs; the small-config tests carry the heavy random testing."""

import dataclasses

import numpy as np

from arch import config

from . import amaranth_backend, vectors
from .harness import check, seed


def _shipped(kind):
    return next(config.load(p) for p in config.shipped() if config.load(p).pe.kind == kind)


def test_shipped_lut_timing():
    from rtl.lut_pe import LutPEArray
    from rtl.table_unit import TableUnit
    s = seed()
    cfg = _shipped("lut")
    rng = np.random.default_rng(s)
    dut = LutPEArray(cfg)
    geom = TableUnit(cfg).geom
    tiles = [vectors.lut_uniform_tile(cfg, geom, rng, b) for b in cfg.pe.weight_bits]
    tiles.append(vectors.lut_codebook_tile(cfg, geom, rng, 2, groups=2))
    sc = vectors._tiles_scenario("shipped lut", tiles)
    (tr,) = amaranth_backend.run(dut, {"i": dut.beat_layout, "o": dut.result_layout}, "o", [sc],
                                 s, "shipped_lut")
    lat, ii = check(sc, tr, f"seed={s} {cfg.tag}")
    assert set(lat) == {cfg.timing.pe_latency} and set(ii) == {cfg.timing.pe_ii}

    tu = TableUnit(cfg)
    tsc = vectors.table_scenario(cfg, tu.geom, rng, "shipped table unit", n=8)
    (tr,) = amaranth_backend.run(tu, {"i": tu.in_layout, "o": tu.out_layout}, "o", [tsc], s,
                                 "shipped_table_unit")
    lat, ii = check(tsc, tr, f"seed={s} {cfg.tag}")
    assert set(lat) == {cfg.timing.table_latency} and set(ii) == {cfg.timing.table_ii}


def test_shipped_bitserial_timing():
    from rtl.bitserial_pe import BitSerialPEArray
    s = seed()
    cfg = _shipped("bitserial")
    rng = np.random.default_rng(s)
    dut = BitSerialPEArray(cfg)
    tiles = [vectors.bitserial_tile(cfg, rng, b) for b in (1, 4, 8)]
    tiles.append(vectors.bitserial_tile(cfg, rng, cfg.pe.centroid_bits, signed=True))
    sc = vectors._tiles_scenario("shipped bitserial", tiles)
    (tr,) = amaranth_backend.run(dut, {"i": dut.beat_layout, "o": dut.result_layout}, "o", [sc],
                                 s, "shipped_bitserial")
    lat, ii = check(sc, tr, f"seed={s} {cfg.tag}")
    assert set(lat) == {cfg.timing.pe_latency} and set(ii) == {cfg.timing.pe_ii}


def test_shipped_mac_timing():
    from rtl.mac_pe import MacPEArray, mac_weight_bits
    s = seed()
    cfg = _shipped("mac")
    rng = np.random.default_rng(s)
    dut = MacPEArray(cfg)
    sc = vectors.mac_scenario(cfg, rng, "shipped mac",
                              [dict(wbits=mac_weight_bits(cfg), tokens=3)])
    layouts = {"w": dut.weight_layout, "i": dut.act_layout, "o": dut.result_layout}
    (tr,) = amaranth_backend.run(dut, layouts, "o", [sc], s, "shipped_mac")
    lat, _ = check(sc, tr, f"seed={s} {cfg.tag}")
    assert set(lat) == {cfg.timing.pe_latency + cfg.pe.rows + cfg.pe.cols - 2}


def test_mac_latency_formula_scales_with_the_array():
    # The MAC array's latency is pe_latency plus the systolic skew rows + cols - 2 (the other
    # kinds have a size-independent depth); checked at full size by the slow test above.
    from rtl.mac_pe import MacPEArray, mac_latency
    cfg = _shipped("mac")
    for n in (1, 4, 32):
        c = cfg.replace(pe=dataclasses.replace(cfg.pe, rows=n, cols=n))
        assert mac_latency(c) == cfg.timing.pe_latency + 2 * n - 2
    assert MacPEArray.DEPTH == cfg.timing.pe_latency
