"""The checkpoint path end to end on tiny randomly initialised models saved as safetensors."""

import numpy as np
import pytest
import torch

import quant
from bitlut.errors import UserError
from quant.checkpoint import quantize_checkpoint
from quant.method import Method

LLAMA_LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)          # safetensors by default
    assert list(path.glob("*.safetensors")) and not list(path.glob("*.bin"))
    return path, model


def _calib_outputs_error(model, qm, prefix="model.layers"):
    """Relative error of the final hidden states with the quantized weights swapped in."""
    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(5))
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


def test_bert_style_encoder(tmp_path):
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(tmp_path)
    qm = quantize_checkpoint(tmp_path, Method("claq", 2.2), samples=2, seqlen=16)
    assert len(qm.layers) == 12
    assert "encoder.layer.1.attention.self.query" in qm.layers
    assert qm.layers["encoder.layer.0.intermediate.dense"].shape == (64, 32)


def test_calibration_text_needs_a_tokenizer(llama_dir, tmp_path):
    path, _ = llama_dir
    text = tmp_path / "calib.txt"
    text.write_text("hello world " * 50)
    with pytest.raises(UserError, match=r"checkpoint must include a tokenizer for --text"):
        quantize_checkpoint(path, Method("rtn", 3), text=text, samples=1, seqlen=8)
    with pytest.raises(UserError, match=r"calibration text file must exist, not missing"):
        quantize_checkpoint(path, Method("rtn", 3), text=tmp_path / "none.txt")


def test_bad_checkpoint_folders(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint folder must contain config.json"):
        quantize_checkpoint(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match=r"checkpoint must hold \*\.safetensors weights, not none"):
        quantize_checkpoint(tmp_path)


def test_calibration_from_a_text_file(llama_dir, tmp_path):
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    path, _ = llama_dir
    folder = tmp_path / "with-tokenizer"
    shutil.copytree(path, folder)
    words = [f"w{i}" for i in range(90)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words + ["[UNK]"])},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(words[i % 7 * 11 % 90] for i in range(300)))
    ids = __import__("quant.checkpoint", fromlist=["x"]).calibration_ids(
        folder, 96, text=text, samples=3, seqlen=20)
    assert ids.shape == (3, 20) and int(ids.max()) < 90
    qa = quantize_checkpoint(folder, Method("gptq", 3, 32), text=text, samples=3, seqlen=20)
    qb = quantize_checkpoint(folder, Method("gptq", 3, 32), samples=3, seqlen=20)
    assert qa.quantizer["settings"]["calibration"]["text"] == str(text)
    # different calibration data, different GPTQ result
    assert any(not np.array_equal(qa.layers[n].codes, qb.layers[n].codes) for n in qa.layers)
