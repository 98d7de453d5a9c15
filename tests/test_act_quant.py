"""`pe.act_quant`, the activation quantization options (docs/numerics.md section 1): the config
field, the host's quantization against hand-checked vectors, the token_group epilogue's order,
the SmoothQuant migration, the cost the compiler's estimate charges against the cycle model's,
and the `.q` round trip of the smoothing scales. The bit-exact matrix over PE kinds and formats
is tests/test_compiler.py's, parametrized over every option; the RTL core runs every option
(verif/test_core_compiled.py)."""

import dataclasses

import numpy as np
import pytest
import torch
import yaml

from arch import config, timing
from arch.config import ConfigError
from compiler import tiling
from compiler.lower import lower, write_inputs
from compiler.plan import LoweringError
from quant import qformat, smooth
from quant.layer import QModel
from quant.random_layer import codebook_layer, uniform_layer
from sim import golden
from sim.cycle import simulate
from tests.hostile import assert_one_line, bitlut

LUT = config.load("lut")


def with_act(cfg, act):
    return cfg.replace(pe=dataclasses.replace(cfg.pe, act_quant=act))


def config_file(tmp_path, act, kind="lut"):
    raw = yaml.safe_load(config.resolve(kind).read_text())
    raw["pe"]["act_quant"] = act
    path = tmp_path / f"{kind}_{act}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# -- the config field -----------------------------------------------------------------------------
def test_shipped_configs_keep_per_token_activations():
    for path in config.shipped():
        assert config.load(path).pe.act_quant == "token", path


def test_act_quant_is_validated_and_named_in_the_tag(tmp_path):
    assert with_act(LUT, "token_group").tag == LUT.tag + "tg"
    assert with_act(LUT, "smooth").tag == LUT.tag + "sq"
    path = config_file(tmp_path, "per_channel")
    with pytest.raises(ConfigError, match=r"`pe.act_quant` must be one of token, token_group, "
                                          r"smooth, not 'per_channel'"):
        config.load(path)


# -- the host's quantization ----------------------------------------------------------------------
def test_grouped_quantization_hand_checked():
    # group 0 = columns {0, 1}: amax 4, sx = 4/127, 1/sx = 31.75 -> 32, -4 -> -127;
    # group 1 = columns {2, 3}: amax 254, sx = 2, 127/2 = 63.5 -> 64 (half to even), -254 -> -127
    x = np.array([[1.0, -4.0, 127.0, -254.0]], np.float32)
    xq, sx = golden.quantize_activations_grouped(x, [np.array([0, 1]), np.array([2, 3])])
    assert xq.tolist() == [[32, -127, 64, -127]]
    assert sx.tolist() == [[np.float32(4) / np.float32(127), 2.0]]
    # one per-token scale (sx = 2) flushes column 0 to 0 (0.5 -> 0) and column 1 to -2
    assert golden.quantize_activations(x)[0].tolist() == [[0, -2, 64, -127]]


def test_grouped_quantization_needs_a_partition():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="cover every column exactly once"):
        golden.quantize_activations_grouped(x, [np.array([0, 1]), np.array([1, 2, 3])])
    with pytest.raises(ValueError, match="cover every column exactly once"):
        golden.quantize_activations_grouped(x, [np.array([0, 1])])


def test_token_group_cuts_the_error_an_outlier_channel_causes():
    seed = 11
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    x[:, 7] *= 60                       # one massive channel sets every row's per-token scale
    groups = [np.arange(j, j + 128) for j in range(0, 512, 128)]
    xq, sx = golden.quantize_activations(x)
    err_token = np.abs(xq * sx[:, None] - x)[:, 128:].max()
    xq, sxg = golden.quantize_activations_grouped(x, groups)
    err_group = np.abs(xq * np.repeat(sxg, 128, axis=1) - x)[:, 128:].max()
    # columns outside the outlier's group: their own scale is ~60x finer
    assert err_group < err_token / 10


def test_grouped_epilogue_order_hand_checked():
    # y = (s0·P0)·sx0 + O0·sx0 + (s1·P1)·sx1, each step rounded to float32
    p = np.array([[[3, -5]]])
    s = np.array([[0.5, 0.25]], np.float32)
    sx = np.array([[0.1, 3.0]], np.float32)
    o = np.array([[2.0]], np.float32)
    f = np.float32
    want = f(f(f(0.5) * f(3)) * f(0.1))
    want = f(want + f(f(2.0) * f(0.1)))
    want = f(want + f(f(f(0.25) * f(-5)) * f(3.0)))
    y = golden.epilogue_grouped(p, s, sx, {0: o})
    assert y.dtype == np.float32 and y[0, 0] == want


# -- SmoothQuant ----------------------------------------------------------------------------------
def test_smooth_scales_hand_checked_and_migration_exact():
    s = smooth.smooth_scales(np.array([4.0, 9.0, 0.0]), np.array([1.0, 4.0, 2.0]), alpha=0.5)
    assert s.tolist() == [2.0, 1.5, 1.0]        # sqrt(4)/sqrt(1), sqrt(9)/sqrt(4), no statistic
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((8, 6)))
    x[:, 2] *= 40
    w = torch.from_numpy(rng.standard_normal((5, 6)))
    h = 2 * x.T @ x / len(x)
    ws, hs, s = smooth.migrate(w, h, x.abs().amax(dim=0).numpy())
    xs = x / torch.from_numpy(s).double()
    assert torch.allclose(xs @ ws.T, x @ w.T, rtol=1e-12)
    assert torch.allclose(hs, 2 * xs.T @ xs / len(x), rtol=1e-12)
    # the outlier channel's range shrinks: max|x/s| = sqrt(max|x| * max|w|) per column
    assert xs.abs().amax(dim=0)[2] < x.abs().amax(dim=0)[2] / 3


def test_smooth_scales_round_trip_through_the_q_file(tmp_path):
    rng = np.random.default_rng(3)
    layer = dataclasses.replace(codebook_layer(rng, 16, 40, (2, 3)),
                                smooth=rng.uniform(0.5, 4, 40).astype(np.float32))
    path = qformat.save(tmp_path / "s.q", QModel("m", {"name": "claq", "settings": {}},
                                                   {layer.name: layer}))
    back = qformat.load(path).layers[layer.name]
    assert np.array_equal(back.smooth, layer.smooth)
    plain = qformat.load(qformat.save(tmp_path / "p.q", QModel(
        "m", {"name": "claq", "settings": {}}, {layer.name: dataclasses.replace(layer,
                                                                                smooth=None)})))
    assert plain.layers[layer.name].smooth is None


def test_smooth_without_scales_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    with pytest.raises(LoweringError, match=r"pe.act_quant smooth .* must have the layer's "
                                            r"SmoothQuant scales"):
        lower(uniform_layer(rng, 8, 32, 2, group_size=16), with_act(LUT, "smooth"), 1)


# -- what the options cost ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lut", "bitserial", "mac"])
@pytest.mark.parametrize("m", [1, 12])
def test_estimate_charges_what_the_cycle_model_moves(kind, m):
    """token_group's extra row-scale loads and correction folds, as the compiler's cost model
    prices them, equal what the program does on the cycle model (same tiling)."""
    seed = 21
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    layer = codebook_layer(rng, 96, 300, (2, 3), outliers=25)
    base = config.load(kind)
    tile = tiling.choose(lower(layer, base, m).plan, base, m)
    got = {}
    for act in ("token", "token_group"):
        cfg = with_act(base, act)
        c = lower(layer, cfg, m, tile=tile)
        write_inputs(c, rng.standard_normal((m, 300)).astype(np.float32))
        res, _ = simulate(cfg, c.program)
        got[act] = (c.report["dram_bus_bytes"], c.report["instructions_est"],
                    res.dram_bytes, len(c.program.words))
    est_bytes = got["token_group"][0] - got["token"][0]
    est_insns = got["token_group"][1] - got["token"][1]
    assert est_bytes > 0 and est_insns > 0
    assert est_bytes == got["token_group"][2] - got["token"][2]
    assert est_insns == got["token_group"][3] - got["token"][3]


def test_rowscale_latency_is_the_rtl_multiplier():
    """The cycles the model charges a `vdeq` with `rowscale` are the vector unit's extra taps,
    one more fp32 multiplier (verif/test_core_vector.py measures them on the core)."""
    from rtl import vector_unit
    from rtl.fp32 import FMul
    assert timing.ROWSCALE_CYCLES == vector_unit.ROWSCALE_DEPTH == FMul().latency


def test_smooth_end_to_end_through_the_cli(tmp_path):
    """`bitlut quantize --smooth` keeps the scales; `bitlut sim --act-quant smooth` runs the
    layer bit-exact against the golden model and within the bound of PyTorch on X / s."""
    q = tmp_path / "tiny-sq.q"
    assert bitlut("quantize", "--synthetic", "llama-tiny", "--smooth", "-o", q).ok
    layer = qformat.load(q).layers["q_proj"]
    assert layer.smooth is not None and (layer.smooth > 0).all() and np.ptp(layer.smooth) > 0
    report = tmp_path / "r.json"
    out = bitlut("sim", q, "--act-quant", "smooth", "--tokens", "3", "--layers", "q_proj",
                 "--json", report)
    assert out.ok, out.describe()
    import json
    rep = json.loads(report.read_text())
    assert rep["config"].endswith("sq")
    check = rep["phases"][0]["layers"][0]["check"]
    assert check["bit_exact_golden"] and check["within_tolerance"]
    # the plain file has no scales to divide by: one line, exit 2
    plain = tmp_path / "tiny.q"
    qformat.save(plain, QModel("m", {"name": "claq", "settings": {}},
                               {"q_proj": dataclasses.replace(layer, smooth=None)}))
    assert_one_line(bitlut("sim", plain, "--act-quant", "smooth", "--tokens", "1"),
                    r"must have the layer's SmoothQuant scales")
    assert_one_line(bitlut("quantize", tmp_path, "--smooth", "-o", tmp_path / "x.q"),
                    r"--smooth must go with --synthetic")
