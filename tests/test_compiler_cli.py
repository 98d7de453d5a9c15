"""`bitlut compile`, `bitlut run` and `bitlut sim` on a small .q file, and their one-line errors."""

import json

import numpy as np
import pytest

import quant
from quant.layer import QModel
from quant.random_layer import codebook_layer, uniform_layer


@pytest.fixture
def qfile(tmp_path):
    rng = np.random.default_rng(0)
    layers = {"a": codebook_layer(rng, 96, 256, (2, 3, 4), name="a", outliers=9),
              "b": uniform_layer(rng, 70, 130, 3, group_size=64, name="b")}
    path = tmp_path / "m.q"
    quant.save(path, QModel("tiny", {"name": "test", "settings": {}}, layers))
    return path


def test_compile_writes_programs_and_report(cli, qfile, tmp_path):
    out = tmp_path / "prog"
    r = cli("compile", qfile, "--arch", "lut", "--tokens", "3", "-o", out)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["layers"]) == {"a", "b"}
    for layer in rep["layers"].values():
        assert {"instructions", "tiling", "dram_bytes", "lookups"} <= set(layer)
    r = cli("disasm", out / "a.prog")
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "finish"


@pytest.mark.parametrize("arch", ["lut", "bitserial", "mac"])
def test_run_matches_pytorch(cli, qfile, arch, tmp_path):
    out = tmp_path / "r.json"
    r = cli("run", qfile, "--arch", arch, "--tokens", "2", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert rep["passed"] and all(v["bit_exact_golden"] for v in rep["layers"].values())


def test_sim_report(cli, qfile, tmp_path):
    out = tmp_path / "s.json"
    trace = tmp_path / "t.json"
    r = cli("sim", qfile, "--arch", "lut", "--tokens", "1,40", "--json", out, "--trace", trace)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert [p["tokens"] for p in rep["phases"]] == [1, 40]
    assert rep["check"]["passed"] and rep["total"]["cycles"] == sum(
        layer["cycles"] for layer in rep["layers"])
    assert "tokens/s" in r.stdout and "of roofline" in r.stdout
    assert json.loads(trace.read_text())["traceEvents"]


def test_layer_that_fits_no_tiling_is_one_line(cli, tmp_path):
    # per-row scales over K = 8192 make one k-step of 8192 columns, which a 4 KiB activation
    # buffer cannot hold twice over
    import yaml

    from arch import config
    raw = yaml.safe_load((config.CONFIG_DIR / "lut.yaml").read_text())
    raw["sram"]["act_kib"] = 4
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    rng = np.random.default_rng(1)
    path = tmp_path / "wide.q"
    quant.save(path, QModel("w", {"name": "test", "settings": {}},
                            {"wide": uniform_layer(rng, 64, 8192, 2, group_size=8192,
                                                   name="wide")}))
    r = cli("compile", path, "--arch", cfg, "-o", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    assert "layer `wide` (K=8192, widest k-step 8192 columns): no tiling fits; the act buffer" \
        in r.stderr


def test_unknown_layer_and_bad_tokens(cli, qfile):
    r = cli("run", qfile, "--layers", "zz")
    assert r.returncode == 2 and "--layers must name layers of the file (a, b), not zz" in r.stderr
    r = cli("sim", qfile, "--tokens", "0")
    assert r.returncode == 2 and "argument --tokens: must be from 1 to 65536, not 0" in r.stderr
