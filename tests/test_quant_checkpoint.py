"""The checkpoint path end to end on tiny randomly initialised models saved as safetensors."""

import numpy as np
import pytest
import torch

import quant
from bitlut.errors import UserError
from quant.checkpoint import (
    DEFAULT_TEXT,
    Calibration,
    calibration_batches,
    load_config,
    quantize_checkpoint,
    read_documents,
)
from quant.method import Method
from tests.tiny_models import save_bert, save_llama

LLAMA_LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    model = save_llama(path)              # safetensors by default
    assert list(path.glob("*.safetensors")) and not list(path.glob("*.bin"))
    return path, model


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-bert")
    return path, save_bert(path)


def _calib_outputs_error(model, qm, prefix="model.layers"):
    """Relative error of the final hidden states with the quantized weights swapped in."""
    ids = torch.randint(0, model.config.vocab_size, (2, 16),
                        generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model.model(input_ids=ids).last_hidden_state
        saved = {}
        for name, mod in model.named_modules():
            if name in qm.layers:
                saved[name] = mod.weight.data.clone()
                mod.weight.data = quant.dequant(qm.layers[name])
        out = model.model(input_ids=ids).last_hidden_state
        for name, mod in model.named_modules():
            if name in saved:
                mod.weight.data = saved[name]
    return float((out - ref).norm() / ref.norm())


def test_llama_checkpoint_end_to_end(llama_dir, tmp_path):
    path, model = llama_dir
    qm = quantize_checkpoint(path, Method("claq", 3.0), samples=4, seqlen=32)
    expected = [f"model.layers.{i}.{n}" for i in range(2) for n in LLAMA_LINEARS]
    assert list(qm.layers) == expected
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules() if n in qm.layers}
    assert all(qm.layers[n].shape == shapes[n] for n in expected)
    assert qm.model == path.name and qm.quantizer["name"] == "claq"
    # quantized weights are the originals up to quantization error, and the model still works
    for name, mod in model.named_modules():
        if name in qm.layers:
            w = mod.weight.data
            assert float((quant.dequant(qm.layers[name]) - w).norm() / w.norm()) < 0.3
    e_claq = _calib_outputs_error(model, qm)
    e_rtn = _calib_outputs_error(model, quantize_checkpoint(path, Method("rtn", 3, 32),
                                                            samples=4, seqlen=32))
    assert e_claq < 0.3 and e_claq < e_rtn
    out = tmp_path / "tiny.q"
    quant.save(out, qm)
    back = quant.load(out)
    assert all(torch.equal(quant.dequant(back.layers[n]), quant.dequant(qm.layers[n]))
               for n in expected)


def test_checkpoint_is_deterministic(llama_dir):
    path, _ = llama_dir
    a = quantize_checkpoint(path, Method("gptq", 2, 32), samples=2, seqlen=16)
    b = quantize_checkpoint(path, Method("gptq", 2, 32), samples=2, seqlen=16)
    for n in a.layers:
        np.testing.assert_array_equal(a.layers[n].codes, b.layers[n].codes)


def test_bert_style_encoder(bert_dir):
    path, _ = bert_dir
    qm = quantize_checkpoint(path, Method("claq", 2.2), samples=8, seqlen=16)
    assert len(qm.layers) == 12
    assert "encoder.layer.1.attention.self.query" in qm.layers
    assert qm.layers["encoder.layer.0.intermediate.dense"].shape == (64, 32)
    cal = qm.quantizer["settings"]["calibration"]
    assert cal["kind"] == "encoder" and cal["samples"] == 8 and qm.quantizer["settings"][
        "blocks"] == 2
    assert qm.shape is None and qm.norms is None      # not LLaMA-family: no model_shape


def test_bad_checkpoint_folders(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint folder must contain config.json"):
        quantize_checkpoint(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match=r"checkpoint must hold \*\.safetensors weights, not none"):
        quantize_checkpoint(tmp_path)


# ---- calibration that fits the model -----------------------------------------------------------

def test_documents_are_paragraphs_or_lines(tmp_path):
    para = tmp_path / "para.txt"
    para.write_text("One line\nof a paragraph.\n\n\nAnother  one.\n")
    assert read_documents(para) == ["One line of a paragraph.", "Another  one."]
    lines = tmp_path / "lines.txt"
    lines.write_text("\nFirst sentence.\nSecond sentence.\n\n")   # blank lines at the ends only
    assert read_documents(lines) == ["First sentence.", "Second sentence."]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match=r"empty.txt: text file must hold at least one document"):
        read_documents(tmp_path / "empty.txt")
    with pytest.raises(UserError, match=r"none.txt: text file must exist, not missing"):
        read_documents(tmp_path / "none.txt")


def test_the_shipped_text_is_small_licensed_and_packaged():
    from pathlib import Path
    assert DEFAULT_TEXT.is_file() and DEFAULT_TEXT.stat().st_size < 400_000
    docs = read_documents(DEFAULT_TEXT)
    assert len(docs) > 500 and docs[0].startswith("CHAPTER I.")
    readme = (DEFAULT_TEXT.parent / "README.md").read_text()
    assert "public domain" in readme.lower() and "Lewis Carroll" in readme
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"quant" = ["data/*.txt", "data/*.md"]' in pyproject


def test_default_calibration_is_the_shipped_text(llama_dir, tmp_path):
    path, _ = llama_dir
    h_default, h_text, h_random = {}, {}, {}
    m = Method("rtn", 4)
    qm = quantize_checkpoint(path, m, samples=3, seqlen=32, hessians=h_default)
    quantize_checkpoint(path, m, text=DEFAULT_TEXT, samples=3, seqlen=32, hessians=h_text)
    quantize_checkpoint(path, m, samples=3, seqlen=32, random_tokens=True, hessians=h_random)
    cal = qm.quantizer["settings"]["calibration"]
    assert cal["text"] == "calibration.txt" and not cal["random_tokens"]
    assert cal["kind"] == "causal" and cal["tokens"] == 3 * 32
    for n in h_default:
        assert torch.equal(h_default[n], h_text[n])
        assert not torch.allclose(h_default[n], h_random[n])


def test_causal_segments_are_slices_of_the_tokenized_text(llama_dir):
    from transformers import AutoTokenizer
    path, _ = llama_dir
    config = load_config(path)
    batches = calibration_batches(path, config, Calibration(samples=5, seqlen=24, seed=3,
                                                            batch_size=2))
    assert [ids.shape[0] for ids, _ in batches] == [2, 2, 1]
    assert all(mask is None and ids.shape[1] == 24 for ids, mask in batches)
    tok = AutoTokenizer.from_pretrained(path)
    stream = tok("\n\n".join(read_documents(DEFAULT_TEXT)), add_special_tokens=False)["input_ids"]
    joined = ",".join(map(str, stream))
    starts = set()
    for ids, _ in batches:
        for row in ids.tolist():
            assert ",".join(map(str, row)) in joined
            starts.add(tuple(row[:4]))
    assert len(starts) == 5           # seeded offsets, not one segment five times


def test_encoder_samples_have_special_tokens_and_a_mask(bert_dir):
    from transformers import AutoTokenizer
    path, _ = bert_dir
    tok = AutoTokenizer.from_pretrained(path)
    batches = calibration_batches(path, load_config(path), Calibration(samples=6, seqlen=40,
                                                                       batch_size=3))
    assert len(batches) == 2
    for ids, mask in batches:
        for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
            n = sum(m)
            assert m == [1] * n + [0] * (len(m) - n)          # right padding
            assert row[0] == tok.cls_token_id and row[n - 1] == tok.sep_token_id
            assert all(t == tok.pad_token_id for t in row[n:])
        assert int(mask.sum(1).max()) == ids.shape[1]          # padded to the longest only


def test_padding_never_enters_a_hessian(bert_dir):
    # The same 12 documents one at a time (no padding at all) and in one batch padded to 128
    # tokens (most rows padding): every layer's Hessian must be the same, and count only the
    # real tokens.
    path, _ = bert_dir
    alone, padded = {}, {}
    m = Method("rtn", 4)                       # H does not change RTN's result: all blocks agree
    base = dict(samples=12, seqlen=128, seed=1)
    qa = quantize_checkpoint(path, m, calibration=Calibration(**base, batch_size=1),
                             hessians=alone)
    qp = quantize_checkpoint(path, m, calibration=Calibration(**base, batch_size=12,
                                                              pad_to_seqlen=True),
                             hessians=padded)
    real = qa.quantizer["settings"]["calibration"]["tokens"]
    assert real == qp.quantizer["settings"]["calibration"]["tokens"] < 12 * 128 / 3
    assert set(alone) == set(padded) and len(alone) == 12
    for n in alone:
        torch.testing.assert_close(padded[n], alone[n], rtol=1e-4, atol=1e-5)


def _reference_hessians(path, qm, batches, quantized_before):
    """Hessians of every block's linear layers from one full-model forward pass in plain
    transformers, with the blocks before each one using the .q weights (`quantized_before`) or
    all blocks in fp32: the independent check of the one-block-at-a-time pass."""
    from transformers import AutoModel

    from quant.gptq import Hessian
    out = {}
    n_blocks = load_config(path).num_hidden_layers
    for i in range(n_blocks):
        model = AutoModel.from_pretrained(path).float().eval()
        mods = dict(model.named_modules())
        if quantized_before:
            for name, q in qm.layers.items():
                if int(name.split(".")[2]) < i:
                    mods[name].weight.data = quant.dequant(q)
        hess, hooks, cur = {}, [], {}
        for name in qm.layers:
            if int(name.split(".")[2]) == i:
                hess[name] = Hessian(mods[name].in_features)
                hooks.append(mods[name].register_forward_pre_hook(
                    lambda mod, inp, h=hess[name], c=cur: h.add(inp[0][c["mask"].bool()])))
        with torch.no_grad():
            for ids, mask in batches:
                cur["mask"] = mask
                model(input_ids=ids, attention_mask=mask)
        out.update({n: h.H for n, h in hess.items()})
    return out


@pytest.mark.parametrize("sequential", [True, False])
def test_block_pass_matches_a_full_model_forward(bert_dir, sequential):
    path, _ = bert_dir
    cal = Calibration(samples=10, seqlen=48, batch_size=4)
    got = {}
    qm = quantize_checkpoint(path, Method("claq", 2.2), calibration=cal, sequential=sequential,
                             hessians=got)
    assert qm.quantizer["settings"]["calibration"]["sequential"] is sequential
    ref = _reference_hessians(path, qm, calibration_batches(path, load_config(path), cal),
                              quantized_before=sequential)
    assert set(got) == set(ref)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-5)
    if sequential:
        # block 1 of the sequential pass sees block 0's quantization error
        other = _reference_hessians(path, qm, calibration_batches(path, load_config(path), cal),
                                    quantized_before=False)
        name = "encoder.layer.1.attention.self.query"
        assert not torch.allclose(got[name], other[name], rtol=1e-3, atol=1e-4)


def test_random_tokens_need_the_flag_and_warn(tmp_path, capsys):
    from bitlut.cli import main
    path = tmp_path / "no-tokenizer"
    save_llama(path, tokenizer=False)
    out = tmp_path / "x.q"
    capsys.readouterr()
    assert main(["quantize", str(path), "--method", "rtn", "--samples", "2", "--seqlen", "8",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint must include a tokenizer to calibrate on text (or pass --random-tokens)" \
        in err and err.count("\n") == 1
    assert main(["quantize", str(path), "--method", "rtn", "--samples", "2", "--seqlen", "8",
                 "--random-tokens", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "bitlut: warning: calibrating on random token ids" in err
    assert quant.load(out).quantizer["settings"]["calibration"]["random_tokens"] is True
