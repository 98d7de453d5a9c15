# amaranth: UnusedElaboratable=no
# (the rejection tests construct components that raise, and so are never elaborated)
"""Amaranth-simulator tests of every RTL unit (`rtl.units.UNITS`) against `sim.golden`, and the
unit table's timing contract: each unit's pipeline, as built, is what `cfg.timing` states.

One body for every unit and config variant (`verif.benches`): seeded random tiles plus the
directed corners, bit-exact outputs, the measured latency and intervals. Seeded: `BITLUT_SEED`
(printed).
"""

import dataclasses

import numpy as np
import pytest

from arch import config
from rtl import units
from rtl.table_unit import table_geometry

from . import amaranth_backend, vectors
from .benches import BENCHES, tiles, verify
from .configs import small
from .harness import check, seed

CASES = [pytest.param(u.name, v, id=f"{u.name}-{v}")
         for u in units.UNITS for v in BENCHES[u.name].variants]


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_matches_golden(name, variant):
    s = seed()
    print(f"seed={s} (override with BITLUT_SEED)")
    unit, bench = units.unit(name), BENCHES[name]
    cfg = small(unit.kind, **bench.variants[variant])
    scenarios = bench.scenarios(cfg, np.random.default_rng(s), tiles(bench))
    traces = amaranth_backend.run(unit.build(cfg), scenarios, s, f"{name}_{variant}")
    verify(unit, cfg, scenarios, traces, f"{name} {variant} seed={s}")


def test_lut_pe_saturates_when_configured():
    # The directed corners (psums at the int16 limits). The array clamps a tile's exact sum
    # once, as the expected value does; the `acc16_sat` variants of test_matches_golden check
    # it on random tiles, and verif/test_core_compiled.py on sums that leave int16 and return.
    s = seed()
    cfg = small("lut", acc_bits=16, saturate=True)
    rng = np.random.default_rng(s)
    sc = vectors.lut_corners(cfg, table_geometry(cfg), rng, "saturating corners")
    (tr,) = amaranth_backend.run(units.unit("lut_pe").build(cfg), [sc], s, "lut_pe_saturate")
    check(sc, tr, f"seed={s} saturate")


def test_every_unit_has_a_bench():
    assert set(BENCHES) == {u.name for u in units.UNITS}


@pytest.mark.parametrize(("name", "other", "message"), [
    ("table_unit", "mac", r"`cfg.pe.kind` must be 'lut' for a TableUnit, not 'mac'"),
    ("lut_pe", "bitserial", r"`cfg.pe.kind` must be 'lut' for a LutPEArray, not 'bitserial'"),
    ("bitserial_pe", "lut", r"`cfg.pe.kind` must be 'bitserial' for a BitSerialPEArray, not"),
    ("mac_pe", "lut", r"`cfg.pe.kind` must be 'mac' for a MacPEArray, not 'lut'"),
])
def test_rejects_other_kinds(name, other, message):
    unit = units.unit(name)
    with pytest.raises(ValueError, match=message):
        unit.build(small(other))
    with pytest.raises(ValueError, match=message):
        unit.signature(small(other))


@pytest.mark.parametrize("path", config.shipped(), ids=lambda p: p.stem)
def test_shipped_configs_state_the_rtl_timing(path):
    cfg = config.load(path)
    assert units.timing_errors(cfg) == []
    assert units.units_of(cfg), f"no RTL unit for kind {cfg.pe.kind!r}"


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("mac", {"pe_latency": 0}, r"`timing\.pe_latency` must be 2, the pipeline depth in cycles "
                               r"of the MacPEArray built for mac2x2_w8a8, not 0"),
    ("lut", {"table_latency": 3}, r"`timing\.table_latency` must be 2, the pipeline depth in "
                                  r"cycles of the TableUnit built for lut2x4_\w+, not 3"),
    ("bitserial", {"pe_ii": 2}, r"`timing\.pe_ii` must be 1, the initiation interval in cycles "
                                r"of the BitSerialPEArray built for bs2x4_\w+, not 2"),
])
def test_config_timing_must_equal_the_pipeline(kind, change, message):
    # The latency-ownership contract: the RTL's timing is its construction, `cfg.timing` is what
    # the cycle model assumes, and a config that states other numbers fails, naming both.
    cfg = small(kind, **({"rows": 2, "cols": 2} if kind == "mac" else {}))
    wrong = cfg.replace(timing=dataclasses.replace(cfg.timing, **change))
    with pytest.raises(ValueError, match=message):
        units.check_timing(wrong)
    assert len(units.timing_errors(wrong)) == 1
    units.check_timing(cfg)


def test_mac_array_is_built_from_its_geometry_not_the_config_timing():
    # With `pe_latency: 0` a 2x2 MAC array still has its two register stages: it reports and
    # measures 2 + (2 + 2 - 2) = 4 cycles, whatever the config says.
    s = seed()
    cfg = small("mac", rows=2, cols=2)
    wrong = cfg.replace(timing=dataclasses.replace(cfg.timing, pe_latency=0))
    unit = units.unit("mac_pe")
    assert unit.pipeline(wrong) == unit.pipeline(cfg)
    dut = unit.build(wrong)
    assert dut.latency == 4
    sc = vectors.mac_scenarios(wrong, np.random.default_rng(s), 2)[0]
    (tr,) = amaranth_backend.run(dut, [sc], s, "mac_pe_wrong_timing")
    lat, _ = check(sc, tr, f"seed={s} pe_latency=0")
    assert set(lat) == {dut.latency}


def test_mac_latency_grows_with_the_skew_not_the_depth():
    # The MAC array's latency is its depth plus the systolic skew rows + cols - 2 (the other
    # kinds have a size-independent depth); measured at full size by test_shipped.py.
    cfg = config.load("mac")
    mac = units.unit("mac_pe")
    for n in (1, 4, 32):
        c = cfg.replace(pe=dataclasses.replace(cfg.pe, rows=n, cols=n))
        pipeline = mac.pipeline(c)
        assert pipeline.depth == cfg.timing.pe_latency
        assert pipeline.latency == cfg.timing.pe_latency + 2 * n - 2


def test_port_layouts_come_from_the_signature():
    cfg = small("mac")
    layouts = units.payload_layouts(units.unit("mac_pe").signature(cfg))
    assert list(layouts) == ["w", "i", "o"]
    assert layouts["o"].length == cfg.pe.cols
    assert units.output_port(units.unit("mac_pe").signature(cfg)) == "o"
