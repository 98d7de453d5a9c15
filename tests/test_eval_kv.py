"""`bitlut eval` on a LLaMA-family checkpoint: the block's numerics on the accelerator (on-chip
rounding, the vector unit's rmsnorm, softmax and silu_mul) and a perplexity per KV cache format,
on a tiny GQA LLaMA trained for a few steps (tests/tiny_models.py)."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

import quant
from arch import nonlinear
from bitlut.cli import main
from bitlut.errors import UserError
from quant.checkpoint import Calibration, quantize_checkpoint
from quant.method import Method
from sim import accuracy
from tests.tiny_models import save_bert, save_llama

SEQLEN, SAMPLES = 128, 8    # long windows: attention (and so the KV cache) matters to the score
LANES = 16                  # the shipped lut.yaml's timing.vector_lanes


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(checkpoint, an 8-bit RTN .q of it): the weights cost little, so the KV rows show the
    cache's own error. 150 Adam steps make attention matter at 128 tokens (after 60, a cache of
    zeroed codes costs no more than int2: the model hardly reads its context yet)."""
    path = tmp_path_factory.mktemp("llama-kv")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)           # two shared cores: more threads only contend
    try:
        save_llama(path / "ckpt", train_steps=150)
        q = path / "rtn8.q"
        quant.save(q, quantize_checkpoint(path / "ckpt", Method("rtn", 8, group_size=None),
                                          calibration=Calibration(samples=2, seqlen=16)))
        yield path / "ckpt", q
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(llama, tmp_path_factory):
    """`bitlut eval` with its defaults (every KV format, golden vector numerics), as JSON."""
    folder, q = llama
    out = tmp_path_factory.mktemp("eval") / "r.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["eval", str(folder), str(q), "--samples", str(SAMPLES), "--seqlen",
                     str(SEQLEN), "--json", str(out)]) == 0
    return json.loads(out.read_text()), buf.getvalue()


def _model(folder):
    model = accuracy._load_model(folder, "causal")
    vec = accuracy.Vector(LANES)
    accuracy.install_block_numerics(model, vec)
    return model, vec


def _windows(n=2, seqlen=64, seed=0):
    """Random token ids of the tiny LLaMA's 92-word vocabulary."""
    return torch.randint(0, 92, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def test_every_kv_format_is_scored(report):
    r, table = report
    kv = r["kv"]
    assert list(kv["formats"]) == ["fp16", "int8", "int4", "int2"]
    assert kv["k_group"] == 16 and kv["v_group"] == 16          # 128 capped at the head dim
    assert r["vector"] == "golden" and r["vector_lanes"] == LANES
    assert "quantize_rows" in r["act_rounding"]
    assert "perplexity by KV format" in table and "dPPL vs fp32" in table
    for name, x in kv["formats"].items():
        assert math.isfinite(x["perplexity"]) and x["kl_from_fp32"] >= 0
        assert x["delta_ppl"] == pytest.approx(x["perplexity"] - r["fp32"])
        assert f"  {name:<28} {x['perplexity']:>10.3f} {x['delta_ppl']:>+13.3f}" in table
    assert r["fp32"] < 40            # trained: far from chance (92)


def test_fp16_is_close_to_an_fp32_cache_and_int2_is_worse_than_int8(report):
    r, _ = report
    acc, f = r["accelerator"], r["kv"]["formats"]       # acc.: the same run, cache in fp32
    assert f["fp16"]["perplexity"] == pytest.approx(acc["perplexity"], rel=1e-3)
    assert abs(f["fp16"]["kl_from_fp32"] - acc["kl_from_fp32"]) < 1e-4
    assert f["int2"]["perplexity"] > f["int8"]["perplexity"] + 0.05
    assert f["int2"]["kl_from_fp32"] > 20 * f["int8"]["kl_from_fp32"]
    assert f["int4"]["kl_from_fp32"] < f["int2"]["kl_from_fp32"]


def test_a_broken_kv_format_scores_clearly_worse(llama, report, monkeypatch):
    # The acceptance test: codes zeroed (every element -z·s) in the cache must ruin the score,
    # which proves the runs really read K and V back through the format.
    folder, q = llama

    def zero_codes(x, bits, group):
        codes, scales = real(x, bits, group)
        return np.zeros_like(codes), scales
    real = nonlinear.quantize_kv
    monkeypatch.setattr(nonlinear, "quantize_kv", zero_codes)
    bad = accuracy.evaluate(folder, q, samples=SAMPLES, seqlen=SEQLEN, kv=["int8"])
    broken = bad["kv"]["formats"]["int8"]
    good = report[0]["kv"]["formats"]
    assert broken["perplexity"] > 1.3 * max(x["perplexity"] for x in good.values())
    assert broken["kl_from_fp32"] > 10 * max(x["kl_from_fp32"] for x in good.values())
    assert bad["accelerator"] == report[0]["accelerator"]     # only the KV run changed


def test_the_cache_stores_k_after_rope_and_v_in_the_format(llama):
    # Layer 0 sees the same input in every run: what the format's cache holds is exactly
    # quantize_kv -> dequantize_kv of transformers' own post-RoPE K (group 8) and V (group 16).
    from transformers import DynamicCache
    folder, _ = llama
    model = accuracy._load_model(folder, "causal")
    ids = _windows()
    plain = DynamicCache(config=model.config)
    fmt = accuracy.kv_formats(["int4"], group=8)[0]
    cache = accuracy.kv_cache(model.config, fmt, 16)
    with torch.no_grad():
        model(input_ids=ids, past_key_values=plain, use_cache=True)
        model(input_ids=ids, past_key_values=cache, use_cache=True)
    k, v = plain.layers[0].keys, plain.layers[0].values           # [2, kv_heads, 64, 16]
    rows_k = k.numpy().reshape(-1, 16)
    want_k = nonlinear.dequantize_kv(*nonlinear.quantize_kv(rows_k, 4, 8), 4, 8)
    want_v = nonlinear.dequantize_kv(*nonlinear.quantize_kv(v.numpy().reshape(-1, 16), 4, 16),
                                     4, 16)
    assert np.array_equal(cache.layers[0].keys.numpy().reshape(-1, 16), want_k)
    assert np.array_equal(cache.layers[0].values.numpy().reshape(-1, 16), want_v)
    assert not np.array_equal(want_k, rows_k)
    fp16 = accuracy.kv_roundtrip(k, None, 16)
    assert torch.equal(fp16, k.half().float())


def test_golden_vector_numerics_are_close_to_float_and_really_applied(llama, monkeypatch):
    from transformers import AutoModelForCausalLM
    folder, _ = llama
    model, vec = _model(folder)
    ids = _windows()
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=ids).logits
        off = model(input_ids=ids).logits
        vec.on = True
        golden = model(input_ids=ids).logits
    assert torch.equal(off, hf)                  # switched off, the wrappers are transformers'
    scale = float(hf.abs().max())
    diff = float((golden - hf).abs().max())
    print("golden vs float: max |d logit|", diff, "of", scale)
    assert 0 < diff < 1e-5 * scale               # ~1 ulp functions: a few ulp of the logits

    def changed(attr, fn):
        """The logits' change when nonlinear.`attr` is replaced by `fn(original)`."""
        with monkeypatch.context() as m:
            m.setattr(nonlinear, attr, fn(getattr(nonlinear, attr)))
            with torch.no_grad():
                return float((model(input_ids=ids).logits - golden).abs().max())
    # each hook is live: a mutated function moves the logits far more than golden vs float
    assert changed("rmsnorm", lambda f: lambda x, w, eps, lanes: f(x, w, eps + 1e-2, lanes)) \
        > 100 * diff
    assert changed("softmax", lambda f: lambda s, valid, lanes: f(s * 0.5, valid, lanes)) \
        > 100 * diff
    assert changed("silu_mul", lambda f: lambda g, u: f(g, u) * 1.01) > 100 * diff


def test_llama_layers_round_on_chip(monkeypatch):
    # a LLaMA-family model's layers take the vector unit's quantize_rows, not the host's rounding
    seen = []

    def spy(x, lanes):
        seen.append(lanes)
        return real(x, lanes)
    real = nonlinear.quantize_rows
    monkeypatch.setattr(nonlinear, "quantize_rows", spy)
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 8)
    ql = accuracy.QuantLinear(lin, lin.weight.detach(), {"mode": "kv", "mask": None},
                              lanes=LANES)
    x = torch.randn(3, 5, 32) * torch.tensor([1.0, 1e3, 1e-3, 7.0, 0.1])[None, :, None]
    xq, sx = real(x.reshape(-1, 32).numpy(), LANES)
    want = torch.from_numpy(xq.astype(np.float32) * sx[:, None]).reshape(x.shape)
    assert torch.equal(accuracy.round_rows(x, LANES), want)
    torch.testing.assert_close(ql(x), torch.nn.functional.linear(want, lin.weight, lin.bias))
    assert seen == [LANES, LANES]


def test_golden_attention_is_sdpa_with_the_vector_units_softmax():
    # GQA (4 query heads on 2 KV heads) and a cache of 3 earlier tokens: the causal mask is
    # `valid = s - t + i + 1` per query row i
    from transformers.models.llama.modeling_llama import repeat_kv
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, h, t, 16, generator=g) for h, t in ((4, 5), (2, 8), (2, 8)))
    out = accuracy.golden_attention(q, k, v, 0.25, LANES)
    kr, vr = repeat_kv(k, 2), repeat_kv(v, 2)
    mask = torch.arange(8)[None, :] <= torch.arange(5)[:, None] + 3
    s = (q @ kr.transpose(2, 3)) * 0.25
    want = torch.softmax(s.masked_fill(~mask, -torch.inf), -1) @ vr
    torch.testing.assert_close(out, want.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_float_vector_keeps_transformers_functions(llama, report):
    folder, q = llama
    r = accuracy.evaluate(folder, q, samples=SAMPLES, seqlen=SEQLEN, kv=["fp16"],
                          vector="float")
    assert r["vector"] == "float" and list(r["kv"]["formats"]) == ["fp16"]
    gold = report[0]
    assert r["fp32"] == gold["fp32"] and r["weights"] == gold["weights"]
    assert r["accelerator"]["perplexity"] == pytest.approx(gold["accelerator"]["perplexity"],
                                                           rel=1e-3)
    assert "vector unit: float32" in accuracy.format_report(r)


def test_kv_errors_in_one_line(llama, tmp_path, cli):
    folder, q = llama
    run = cli("eval", folder, q, "--kv", "int8,int3")
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "--kv must be one of fp16, int8, int4, int2, not 'int3'" in run.stderr
    save_bert(tmp_path / "bert")
    run = cli("eval", tmp_path / "bert", q, "--kv", "int8")
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert (f"{tmp_path / 'bert'}: --kv must be given only for a LLaMA-family checkpoint "
            "(model_type llama or mistral), not model_type 'bert'") in run.stderr
    with pytest.raises(UserError, match=r"--vector golden must be given only for a LLaMA-family "
                                        r"checkpoint .*, not model_type 'bert'"):
        accuracy.evaluate(tmp_path / "bert", q, vector="golden")
    with pytest.raises(UserError, match=r"--kv must be one of fp16, int8, int4, int2, not ''"):
        accuracy.evaluate(folder, q, kv=[""])
    with pytest.raises(UserError, match=r"--kv-group: the K scale group must be a power of two "
                                        r"dividing the head dim \(16\), not 12"):
        accuracy.evaluate(folder, q, kv=["int4"], kv_group=12)


def test_an_encoder_stays_on_the_host_path(tmp_path):
    save_bert(tmp_path / "bert", init=0.2)
    q = tmp_path / "bert.q"
    quant.save(q, quantize_checkpoint(tmp_path / "bert", Method("rtn", 8, group_size=None),
                                      calibration=Calibration(samples=2, seqlen=16)))
    r = accuracy.evaluate(tmp_path / "bert", q, samples=4)
    assert r["kv"] is None and r["vector"] is None
    assert r["act_rounding"] == "int8 per token row (golden model)"
    table = accuracy.format_report(r)
    assert "KV formats: not applicable (not LLaMA-family)" in table
    assert "vector unit" not in table
