"""dse.gpu: the GPU model fitted to measured layer times (dse/data/h100_calibration.json)."""

import json

import pytest

from arch import roofline
from bitlut import cli
from dse import gpu

H100 = roofline.load_gpus()["h100_sxm"]


def test_the_fit_recovers_the_terms_that_generated_the_times():
    truth = {"ce_fp16": 0.6, "ce_int8": 0.3, "be": 0.85, "floor_fp16_us": 4.0,
             "floor_int4wo_us": 6.0, "floor_int8_us": 20.0, "rate": 5e12}
    shapes = [(m, n, k) for m in (1, 16, 128, 2048) for n, k in ((4096, 4096), (11008, 4096))]
    measures = [gpu.Measure(d, m, n, k, 0.0) for d in gpu.DTYPES for m, n, k in shapes
                if d != "int8" or m > 16]
    measures = [gpu.Measure(x.dtype, x.m, x.n, x.k, gpu.predict(H100, truth, 8, x))
                for x in measures]
    params, m_tile, rms = gpu.fit(H100, measures)
    assert m_tile == 8 and rms < 1e-3
    # the terms that shape some time: the memory-bound and compute-bound ones and the floors
    for p in ("ce_fp16", "be", "floor_fp16_us", "floor_int4wo_us", "rate"):
        assert params[p] == pytest.approx(truth[p], rel=0.02), p


def test_the_h100_fit_keeps_the_weight_only_kernels_measured_shape():
    measures = gpu.load_measurements()
    r = gpu.calibrate(H100)
    t = {(x.dtype, x.m): gpu.predict(H100, r["params"], r["m_tile"], x) for x in measures}
    meas = {(x.dtype, x.m): x.seconds for x in measures}
    # measured: int4 weight-only 1.9x faster than fp16 at M = 1, 9.5x and 24.5x slower at 128
    # and 2048; the fitted model says the same, the datasheet roofline cannot (fewer bytes)
    assert meas["int4wo", 1] < meas["fp16", 1] / 1.5 and t["int4wo", 1] < t["fp16", 1] / 1.5
    for m in (128, 2048):
        assert meas["int4wo", m] > 8 * meas["fp16", m] and t["int4wo", m] > 5 * t["fp16", m]
        assert H100.layer_seconds(m, 4096, 4096, 4096 * 4096 // 2) <= \
            H100.layer_seconds(m, 4096, 4096, 2 * 4096 * 4096)
    held = {(row[0], row[1]): row[6] for row in r["interpolate"]}
    assert set(held) == {("fp16", 16), ("int4wo", 16), ("fp16", 128), ("int4wo", 128),
                         ("int8", 128)}                  # only shapes it was not fitted on
    assert abs(held["int4wo", 16]) < 0.15 and abs(held["int4wo", 128]) < 0.15
    print("held-out errors:", {k: f"{v:+.1%}" for k, v in held.items()})


def test_calibrate_gpu_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"linear": [{"M": 1, "fp16_s": 2e-5}]}))     # no K, N
    assert cli.main(["calibrate-gpu", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: calibration file must be JSON" in err
