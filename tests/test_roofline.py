"""The roofline estimator: hand-checked bounds, GPU estimates, the CLI and its figure."""

import numpy as np
import pytest

from arch import config, roofline

LUT, MAC = config.load("lut"), config.load("mac")


def test_peaks_by_kind_hand_checked():
    # LUT 2x64, g=4: uniform 2-bit -> 2*64*4/2 = 256 MACs/cycle; 1-bit -> 512
    assert roofline.peak_macs_per_cycle(LUT, "uniform", 2) == 256
    assert roofline.peak_macs_per_cycle(LUT, "uniform", 1) == 512
    # codebook 2-bit: two columns per 4-bit index -> 2*64*2 = 256, 4-bit: one -> 128
    assert roofline.peak_macs_per_cycle(LUT, "codebook", 2) == 256
    assert roofline.peak_macs_per_cycle(LUT, "codebook", 4) == 128
    assert roofline.peak_macs_per_cycle(MAC, "uniform", 4) == 32 * 32


def test_layer_bound_hand_checked():
    # decode of a 4096x4096 2-bit layer: 4 MiB of weights + 4 KiB x + 4 B sx + 16 KiB y
    b = roofline.layer_bound(LUT, 1, 4096, 4096, "uniform", 2, 4096 * 4096 // 4)
    assert b.dram_bytes == 4096 * 4096 // 4 + 4096 + 4 + 4 * 4096
    assert b.memory_cycles == pytest.approx(b.dram_bytes / 25.6)
    assert b.compute_cycles == pytest.approx(4096 * 4096 / 256)
    assert b.bound == "memory"
    big = roofline.layer_bound(LUT, 2048, 4096, 4096, "uniform", 2, 4096 * 4096 // 4)
    assert big.bound == "compute"


def test_gpu_estimate_hand_checked():
    h100 = roofline.load_gpus()["h100_sxm"]
    m, n, k = 1, 4096, 4096
    t = h100.layer_seconds(m, n, k, 2 * n * k)
    memory = (2 * n * k + 2 * k + 2 * n) / (3350e9 * 0.8)
    assert t == pytest.approx(memory + 5e-6)
    with pytest.raises(Exception, match=r"dtype must be one of fp16, fp8, int8, not 'fp4'"):
        h100.layer_seconds(m, n, k, 1, dtype="fp4")


def test_cli_table_and_plot(cli, tmp_path):
    import quant
    from quant.layer import QModel
    from quant.random_layer import codebook_layer
    rng = np.random.default_rng(0)
    q = QModel("t", {"name": "claq", "settings": {}},
               {"a": codebook_layer(rng, 64, 128, (2, 4), name="a")})
    path = tmp_path / "t.q"
    quant.save(path, q)
    png = tmp_path / "r.png"
    r = cli("roofline", path, "--arch", "lut", "--tokens", "1,64", "--plot", png)
    assert r.returncode == 0, r.stderr
    assert "memory" in r.stdout and "h100_sxm" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
