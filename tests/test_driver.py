"""`bitlut sim`: the report's numbers, sampling's error bound, and the CLI."""

import json

import numpy as np
import pytest

from arch import config
from quant.random_layer import codebook_layer, uniform_layer
from sim import driver

LUT = config.load("lut")


@pytest.mark.parametrize("fmt", ["uniform", "codebook"])
def test_sampled_simulation_within_two_percent_of_full(monkeypatch, fmt):
    rng = np.random.default_rng(0)
    layer = (uniform_layer(rng, 256, 512, 2, group_size=128, outliers=20) if fmt == "uniform"
             else codebook_layer(rng, 256, 512, (2, 2, 4), outliers=20))
    full = driver.simulate_layer(layer, LUT, 40, full=True, check=False)
    monkeypatch.setattr(driver, "FULL_SIM_INSNS", 0)
    sampled = driver.simulate_layer(layer, LUT, 40, check=True)
    assert sampled["sampled"] and not full["sampled"]
    assert abs(sampled["cycles"] - full["cycles"]) <= 0.02 * full["cycles"]
    assert sampled["check"]["passed"] and sampled["check"]["rows"] < 40


def test_layer_report_is_consistent():
    rng = np.random.default_rng(1)
    layer = uniform_layer(rng, 128, 256, 2, group_size=128)
    r = driver.simulate_layer(layer, LUT, 1)
    assert r["latency_s"] == pytest.approx(r["cycles"] * LUT.cycle_ns * 1e-9)
    assert 0 < r["roofline_fraction"] <= 1.0 + 1e-9
    assert r["check"]["passed"] and r["check"]["bit_exact_golden"]
    total, check = driver.summarize([r], 1, LUT)
    assert total["tokens_per_s"] == pytest.approx(1 / r["latency_s"])
    assert check["passed"]


def test_gemm_cli_json_keys(cli, tmp_path):
    out = tmp_path / "r.json"
    r = cli("sim", "--gemm", "3,256,192", "--arch", "lut", "--wbits", "3", "--json", out)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert isinstance(rep["layers"][0]["cycles"], int)
    for key in ("cycles", "latency_s", "tokens_per_s", "roofline_fraction",
                "energy_j_per_token"):
        assert key in rep["total"]
    assert rep["check"]["passed"] is True and "max_rel_err" in rep["check"]
    assert "3x256" not in r.stderr


def test_cli_bad_gemm_spec(cli):
    r = cli("sim", "--gemm", "3,256", "--arch", "lut")
    assert r.returncode == 2
    assert r.stderr.strip() == "bitlut sim: error: argument --gemm: must be 3 comma-separated " \
                               "integers, not '3,256' (see bitlut sim --help)"


def test_a_timing_memo_reuses_only_runs_that_time_alike():
    import dataclasses
    layer = uniform_layer(np.random.default_rng(4), 256, 512, 2, group_size=128, outliers=5)
    memo = {}
    first = driver.simulate_layer(layer, LUT, 8, check=False, memo=memo)
    runs = len(memo)
    assert runs >= 1
    # twice the weight buffer, the same tiling: the same program on hardware that times it
    # alike, so no new run, and the figures a fresh run gives
    big = LUT.replace(sram=dataclasses.replace(LUT.sram, weight_kib=2 * LUT.sram.weight_kib))
    again = driver.simulate_layer(layer, big, 8, check=False, memo=memo)
    fresh = driver.simulate_layer(layer, big, 8, check=False)
    assert again["tiling"] == first["tiling"] and len(memo) == runs
    assert (again["cycles"], again["events"]) == (fresh["cycles"], fresh["events"])
    # twice the DRAM bandwidth times the same program differently: a run of its own
    fast = LUT.replace(dram=dataclasses.replace(LUT.dram, gbps=2 * LUT.dram.gbps))
    quick = driver.simulate_layer(layer, fast, 8, check=False, memo=memo)
    assert len(memo) > runs
    assert quick["cycles"] == driver.simulate_layer(layer, fast, 8, check=False)["cycles"]
    assert quick["cycles"] < first["cycles"]
