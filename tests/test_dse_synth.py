"""dse.synth: the area model's lane terms fitted to recorded syntheses (dse/data/synth_cmos.json)
meet the 5% gate on the held-out arrays; a slow test synthesizes two small arrays for real."""

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
