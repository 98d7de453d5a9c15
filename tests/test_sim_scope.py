"""`bitlut sim` on a checkpoint's `.q`: readable layer labels, per-block figures and the model's
figure for its linear layers (`--blocks N` or the checkpoint's own block count)."""

import json

import pytest

import quant
from bitlut.cli import main
from quant.checkpoint import Calibration, quantize_checkpoint
from quant.method import Method
from sim import scope
from tests.tiny_models import save_llama


def test_labels_tell_layers_apart():
    names = [f"encoder.layer.{i}.{s}" for i in range(12)
             for s in ("attention.self.query", "attention.output.dense", "output.dense")]
    lab = scope.labels(names)
    assert lab["encoder.layer.0.attention.self.query"] == "L0 attention.self.query"
    assert lab["encoder.layer.11.output.dense"] == "L11 output.dense"
    assert len(set(lab.values())) == len(names)
    assert max(len(v) for v in lab.values()) <= 26
    syn = ["q_proj", "k_proj", "down_proj"]
    assert scope.labels(syn) == dict(zip(syn, syn, strict=True))
    assert scope.labels(["model.layers.3.mlp.up_proj"]) == {
        "model.layers.3.mlp.up_proj": "model.layers.3.mlp.up_proj"}


def test_scope_and_model_figures():
    one = ["q_proj", "k_proj"]
    assert scope.scope(one, {}) == {"blocks_in_file": 1, "model_blocks": None, "from": None}
    sc = scope.scope(one, {}, blocks=32)
    total = {"latency_s": 2e-3, "energy_j_per_token": 1e-3, "bytes_per_token": 1000.0}
    mt = scope.model_totals(total, 1, sc)
    assert mt["latency_s"] == pytest.approx(64e-3) and mt["tokens_per_s"] == pytest.approx(
        1 / 64e-3)
    assert mt["bytes_per_token"] == 32000.0 and mt["blocks"] == 32
    ck = [f"model.layers.{i}.mlp.up_proj" for i in range(4)]
    sc = scope.scope(ck, {"blocks": 4})
    assert sc == {"blocks_in_file": 4, "model_blocks": 4, "from": "checkpoint"}
    assert scope.model_totals(total, 8, sc)["tokens_per_s"] == pytest.approx(8 / 2e-3)
    with pytest.raises(ValueError, match=r"--blocks must be at least the 4 blocks of the file, "
                                         r"not 2"):
        scope.scope(ck, {}, blocks=2)


@pytest.fixture(scope="module")
def tiny_ckpt_q(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim-scope")
    save_llama(path / "ckpt")
    q = path / "tiny.q"
    quant.save(q, quantize_checkpoint(path / "ckpt", Method("claq", 2.2),
                                      calibration=Calibration(samples=2, seqlen=16)))
    return q


def test_sim_report_carries_the_eval_numbers(tiny_ckpt_q, tmp_path, capsys):
    from sim.accuracy import evaluate
    out = tmp_path / "r.json"
    capsys.readouterr()
    assert main(["sim", str(tiny_ckpt_q), "--tokens", "1", "--no-check", "--checkpoint",
                 str(tiny_ckpt_q.parent / "ckpt"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    acc = json.loads(out.read_text())["accuracy"]
    alone = evaluate(tiny_ckpt_q.parent / "ckpt", tiny_ckpt_q)     # what `bitlut eval` reports
    assert acc["accelerator"] == alone["accelerator"] and acc["fp32"] == alone["fp32"]
    assert f"{alone['accelerator']['perplexity']:>10.3f}" in text and "KL from fp32" in text


def test_sim_on_a_checkpoint_q(tiny_ckpt_q, tmp_path, capsys):
    out = tmp_path / "r.json"
    capsys.readouterr()
    assert main(["sim", str(tiny_ckpt_q), "--tokens", "1", "--no-check",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "L0 self_attn.q_proj" in text and "L1 mlp.down_proj" in text
    assert "model, linear layers only (2 blocks, the checkpoint's block count; the file holds " \
           "2 blocks)" in text
    assert scope.NOT_MODELLED in text
    r = json.loads(out.read_text())
    ph = r["phases"][0]
    assert r["scope"] == {"blocks_in_file": 2, "model_blocks": 2, "from": "checkpoint"}
    assert ph["model"]["tokens_per_s"] == pytest.approx(ph["total"]["tokens_per_s"])
    assert ph["layers"][0]["name"] == "model.layers.0.self_attn.q_proj"


def test_sim_on_one_block_says_per_block(tmp_path, capsys):
    q = tmp_path / "tiny.q"
    assert main(["quantize", "--synthetic", "llama-tiny", "-o", str(q)]) == 0
    capsys.readouterr()
    assert main(["sim", str(q), "--tokens", "1", "--no-check"]) == 0
    assert "tokens/s is per block; --blocks N gives the model's figure" in capsys.readouterr().out
    out = tmp_path / "r.json"
    assert main(["sim", str(q), "--tokens", "1", "--no-check", "--blocks", "32",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    ph = json.loads(out.read_text())["phases"][0]
    assert ph["model"]["tokens_per_s"] == pytest.approx(ph["total"]["tokens_per_s"] / 32)
    assert f"{ph['model']['tokens_per_s']:,.2f} tokens/s" in text and "32 blocks, --blocks" \
        in text
