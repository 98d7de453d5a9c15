"""dse.synth: the area model's lane terms fitted to recorded syntheses (dse/data/synth_cmos.json,
dse/data/synth_fpga.json) meet their gates on the held-out arrays (CMOS; the FPGA targets are
marked calibrated exactly where they do); slow tests synthesize small arrays for real."""

import pytest

from dse import area, synth


def test_the_fit_meets_its_gate_on_held_out_syntheses():
    cache = synth.load_cache()
    fits, _ = synth.fit(cache)
    assert set(fits) == set(synth.DESIGN)                 # every kind has recorded arrays
    for kind, f in fits.items():
        held = [r for r in cache["records"].values()
                if r["spec"][0] == kind and r["spec"][5] == "holdout"]
        assert held and set(f["holdout_errors"]) == {synth.point_name(r["spec"]) for r in held}
        print(kind, {k: f"{v:+.2%}" for k, v in f["holdout_errors"].items()})
        assert f["worst"] <= synth.GATE, (kind, f["holdout_errors"])


def test_a_stale_cache_leaves_the_model_uncalibrated(monkeypatch):
    monkeypatch.setattr(synth, "rtl_hash", lambda: "changed")
    fits, fresh = synth.fit()
    assert not fresh and not any(f["calibrated"] for f in fits.values())


def test_the_fitted_model_prices_the_recorded_arrays(monkeypatch):
    # the model `area` uses for a calibrated kind reproduces the syntheses it was fitted to
    # (three terms, three arrays a kind: exact) and the held-out one within the gate
    cache = synth.load_cache()
    monkeypatch.setattr(area, "_fitted", None)
    for r in cache["records"].values():
        cfg = synth.point_config(*r["spec"][:5])
        got = area.pe_transistors(cfg)
        tol = 1e-6 if r["spec"][5] == "fit" else synth.GATE
        assert got == pytest.approx(r["transistors"], rel=tol), r["spec"]


@pytest.mark.slow
def test_two_small_arrays_synthesize_to_the_recorded_counts(tmp_path):
    cache = synth.load_cache()
    if cache["rtl_hash"] != synth.rtl_hash():
        pytest.skip("the RTL changed since the recorded syntheses: run python -m dse.synth")
    for spec in (synth.POINTS[0], synth.POINTS[4]):          # a LUT and a bit-serial array
        got = synth.synthesize(spec, tmp_path)
        assert got["transistors"] == cache["records"][synth.point_name(spec)]["transistors"]


@pytest.mark.parametrize("kind, rows, cols, centroid_bits, transistors", [
    ("lut", 2, 16, 8, 319_686), ("bitserial", 2, 16, 8, 258_670), ("mac", 8, 8, 8, 707_026)])
def test_the_fit_predicts_the_larger_arrays_of_docs_rtl(monkeypatch, kind, rows, cols,
                                                       centroid_bits, transistors):
    # docs/rtl.md "Resource comparison" (int8 centroids): arrays 2-4x the fitted ones' lanes
    monkeypatch.setattr(area, "_fitted", None)
    group = {"lut": 4, "bitserial": 4, "mac": 1}[kind]
    cfg = synth.point_config(kind, rows, cols, group, centroid_bits)
    assert kind in area.fitted()
    assert area.pe_transistors(cfg) == pytest.approx(transistors, rel=synth.GATE)


def test_fpga_fits_are_calibrated_exactly_where_the_held_out_error_meets_the_gate():
    cache = synth.load_cache(synth.FPGA_CACHE)
    fits, fresh = synth.fit_fpga(cache)
    assert fresh, "the FPGA syntheses predate the RTL: run python -m dse.synth"
    assert set(fits) == set(synth.FPGA)
    for (target, res), kinds in fits.items():
        assert set(kinds) == set(synth.DESIGN)
        for kind, f in kinds.items():
            held = {synth.point_name(r["spec"]): r[target][res]
                    for r in cache["records"].values()
                    if r["spec"][0] == kind and r["spec"][5] == "holdout"}
            for name, got in held.items():
                # the error against the recorded synthesis, recomputed from the coefficients
                cfg = synth.point_config(*cache["records"][name]["spec"][:5])
                lanes = cfg.pe.rows * cfg.pe.cols
                pred = (f["coef"][0] * lanes * cfg.pe.acc_bits
                        + f["coef"][1] * lanes * area.datapath(cfg) + f["coef"][2])
                want = pred / got - 1 if got else pred
                assert f["holdout_errors"][name] == pytest.approx(want, abs=1e-9)
            print(target, res, kind, {k: f"{v:+.2%}" for k, v in f["holdout_errors"].items()})
            assert f["calibrated"] == (f["worst"] <= synth.FPGA[(target, res)])


def test_the_mac_arrays_use_one_dsp_per_lane_on_ecp5():
    # a hand-checked property of the recorded syntheses: each int8 MAC lane maps to one
    # MULT18X18D, the LUT and bit-serial arrays to none
    for r in synth.load_cache(synth.FPGA_CACHE)["records"].values():
        kind, rows, cols = r["spec"][:3]
        assert r["ecp5"]["dsps"] == (rows * cols if kind == "mac" else 0), r["spec"]


@pytest.mark.slow
def test_an_array_synthesizes_to_the_recorded_fpga_resources(tmp_path):
    cache = synth.load_cache(synth.FPGA_CACHE)
    if cache["rtl_hash"] != synth.fpga_hash():
        pytest.skip("the RTL changed since the recorded syntheses: run python -m dse.synth")
    spec = synth.POINTS[8]                                    # the 2x2 MAC array
    got = synth.synthesize_fpga(spec, tmp_path)
    want = cache["records"][synth.point_name(spec)]
    assert {t: got[t] for t in synth.FPGA_TARGETS} == {t: want[t] for t in synth.FPGA_TARGETS}
