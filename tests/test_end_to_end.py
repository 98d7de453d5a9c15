"""The `make sim` flow end to end on the 1/16-width synthetic LLaMA block: quantize (CLAQ 2.2
with outlier reservation) -> compile -> cycle model -> check against PyTorch -> report."""

import json


def test_quantize_then_sim(cli, tmp_path):
    q = tmp_path / "tiny.q"
    r = cli("quantize", "--synthetic", "llama-tiny", "--outliers", "-o", q)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "sim.json"
    png = tmp_path / "roofline.png"
    r = cli("sim", q, "--arch", "lut", "--tokens", "1,64", "--json", out, "--plot", png)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(out.read_text())
    assert len(rep["layers"]) == 7
    for phase in rep["phases"]:
        assert phase["check"]["passed"]
        assert all(layer["check"]["bit_exact_golden"] for layer in phase["layers"])
        assert 0 < phase["total"]["roofline_fraction"] <= 1.0
    assert png.stat().st_size > 0
    # the outlier reservation reached the hardware: the programs apply corrections (vout)
    r = cli("compile", q, "--arch", "lut", "-o", tmp_path / "prog", "--layers", "q_proj")
    assert r.returncode == 0, r.stderr
    r = cli("disasm", tmp_path / "prog" / "q_proj.prog")
    assert r.returncode == 0 and "\nvout " in r.stdout
