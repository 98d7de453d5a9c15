"""`bitlut quantize` / `bitlut inspect` and the synthetic models."""

import re
import subprocess
import sys

import pytest
import torch

import quant
from bitlut.cli import main
from quant import synthetic


@pytest.fixture(scope="module")
def tiny_q(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.q"
    assert main(["quantize", "--synthetic", "llama-tiny", "--outliers", "-o", str(path)]) == 0
    return path


def test_quantize_synthetic_and_inspect(tiny_q, capsys):
    qm = quant.load(tiny_q)
    assert list(qm.layers) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj"]
    assert qm.layers["gate_proj"].shape == (688, 256)
    assert qm.layers["down_proj"].shape == (256, 688)
    # grouped-query attention: 4 heads of 64, 2 KV heads
    assert qm.layers["k_proj"].shape == qm.layers["v_proj"].shape == (128, 256)
    assert qm.shape == synthetic.SHAPES["llama-tiny"] and len(qm.norms) == 3
    assert qm.quantizer["name"] == "claq" and qm.quantizer["settings"]["bits"] == 2.2
    assert all(abs(q.bits.mean() - 2.2) <= 0.01 and q.n_outliers > 0 for q in qm.layers.values())
    capsys.readouterr()
    assert main(["inspect", str(tiny_q)]) == 0
    out = capsys.readouterr().out
    assert "q_proj" in out and "688x256" in out and "bits/weight on disk" in out
    assert "\nshape: llama, hidden 256, heads 4 (KV 2), head dim 64, " in out
    assert f"{qm.bits_per_weight(True):.4f} bits/weight" in out


def test_inspect_rejects_a_bad_file_with_exit_code_2(tiny_q, tmp_path, capsys):
    bad = tmp_path / "bad.q"
    bad.write_bytes(tiny_q.read_bytes()[:1000])
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bitlut: error: ") and err.count("\n") == 1 and str(bad) in err


@pytest.mark.parametrize("argv, message", [
    (["quantize", "-o", "x.q"], "exactly one of CHECKPOINT_DIR or --synthetic NAME, not neither"),
    (["quantize", "--synthetic", "llama-tiny", "--bits", "1.5", "-o", "x.q"],
     r"CLAQ bits must be in \[2, 4\], not 1.5"),
    (["quantize", "--synthetic", "llama-tiny", "--method", "gptq", "--bits", "2.5", "-o", "x.q"],
     "gptq bits must be an integer in 1..8, not 2.5"),
    (["quantize", "--synthetic", "llama-tiny", "--method", "rtn", "--outliers", "-o", "x.q"],
     "--outliers/--outlier-ratio must go with --method claq, not rtn"),
    (["quantize", "--synthetic", "llama-tiny", "--outlier-ratio", "a,b", "-o", "x.q"],
     "--outlier-ratio must be TOP or TOP,REST numbers, not 'a,b'"),
])
def test_bad_arguments(argv, message, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_gptq_and_rtn_from_the_command_line(tmp_path):
    for method in ("gptq", "rtn"):
        out = tmp_path / f"{method}.q"
        assert main(["quantize", "--synthetic", "llama-tiny", "--method", method, "--bits", "4",
                     "--group-size", "64", "-o", str(out)]) == 0
        q = quant.load(out).layers["o_proj"]
        assert q.kind == "uniform" and q.group_size == 64 and set(q.bits) == {4}


def test_cli_module_is_cheap_to_import():
    code = "import sys, quant.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_synthetic_weights_are_seeded_and_heavy_tailed():
    spec = synthetic.LayerSpec("t", 512, 1024, "attn_in")
    a, b = synthetic.weight(spec, seed=1), synthetic.weight(spec, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, synthetic.weight(spec, seed=2))
    w = a.double()
    kurt = float(((w - w.mean()) ** 4).mean() / w.var() ** 2)
    assert kurt > 4                                    # Gaussian: 3
    assert float(w.std()) == pytest.approx(spec.std, rel=0.3)
    col = w.abs().mean(0)
    assert float(col.max() / col.median()) > 3         # outlier input channels
    x = synthetic.activations(1024, "attn_in", tokens=256)
    ch = x.abs().mean(0)
    assert float(ch.max() / ch.median()) > 10          # massive activation channels


def test_llama7b_shapes():
    specs = synthetic.MODELS["llama7b"]()
    assert [(s.name, s.n, s.k) for s in specs] == [
        ("q_proj", 4096, 4096), ("k_proj", 4096, 4096), ("v_proj", 4096, 4096),
        ("o_proj", 4096, 4096), ("gate_proj", 11008, 4096), ("up_proj", 11008, 4096),
        ("down_proj", 4096, 11008)]
    assert sum(s.k for s in specs) == 35584 == synthetic.total_columns("llama7b")


@pytest.mark.slow
def test_llama7b_block_end_to_end(tmp_path):
    # `make llama7b.q`: the full synthetic block (~2-3 minutes on 2 CPU cores)
    out = tmp_path / "llama7b.q"
    assert main(["quantize", "--synthetic", "llama7b", "-o", str(out)]) == 0
    qm = quant.load(out)
    assert [q.shape for q in qm.layers.values()] == [
        (4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]
    assert all(abs(q.bits.mean() - 2.2) <= 0.01 for q in qm.layers.values())
    assert 2.2 < qm.bits_per_weight() < 2.23
