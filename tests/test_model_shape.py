"""The model's shape in the `.q` file (`quant.model_shape`): round trip, one-line errors for every
field and norm tensor, Hugging Face configs, old files without it, and the names of a block's
layers and norms in both namings (synthetic one-block, checkpoint)."""

import dataclasses
import json
import math

import numpy as np
import pytest

import quant
from bitlut.errors import UserError
from quant import model_shape, qformat, synthetic
from quant.layer import QModel
from quant.method import Method
from quant.model_shape import (
    BLOCK_ROLES,
    ModelShape,
    block_layers,
    final_norm,
    norm_weights,
    require_shape,
)
from tests.hostile import assert_one_line, bitlut, q_parts, write_q

TINY = synthetic.SHAPES["llama-tiny"]
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


@pytest.fixture(scope="module")
def tiny():
    """The synthetic llama-tiny block, RTN 4-bit (0.3 s; CLAQ takes about 1 s)."""
    return synthetic.quantize_model("llama-tiny", Method("rtn", 4, 64))


@pytest.fixture
def tiny_file(tiny, tmp_path):
    return quant.save(tmp_path / "tiny.q", tiny)


def _edit(path, edit):
    t, meta = q_parts(path)
    edit(t, meta)
    qformat.write_raw(path, t, meta)
    return path


def _one_line(path, match):
    with pytest.raises(UserError, match=match) as e:
        quant.load(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: ")


# ---- the shape and the synthetic models ---------------------------------------------------------

def test_derived_values_are_properties_not_fields():
    assert (TINY.gqa_group, TINY.q_dim, TINY.kv_dim) == (2, 256, 128)
    assert list(TINY.as_json()) == [f.name for f in dataclasses.fields(ModelShape)]
    assert not {"gqa_group", "q_dim", "kv_dim"} & set(TINY.as_json())
    assert TINY.layer_shapes == {"q_proj": (256, 256), "k_proj": (128, 256),
                                 "v_proj": (128, 256), "o_proj": (256, 256),
                                 "gate_proj": (688, 256), "up_proj": (688, 256),
                                 "down_proj": (256, 688)}
    assert model_shape.DIM_MAX == qformat.DIM_MAX


def test_synthetic_shapes():
    assert synthetic.SHAPES["llama7b"].as_json() == {
        "family": "llama", "hidden": 4096, "intermediate": 11008, "heads": 32, "kv_heads": 32,
        "head_dim": 128, "rope_theta": 10000.0, "rope_scaling": None, "norm_eps": 1e-6,
        "vocab": 32000, "blocks": 32, "tie_embeddings": False}
    assert (TINY.hidden, TINY.intermediate, TINY.heads, TINY.kv_heads, TINY.head_dim,
            TINY.vocab, TINY.blocks) == (256, 688, 4, 2, 64, 512, 2)
    # every synthetic block is sized by its shape; llama7b's is LLaMA-7B's, as before
    for name, shape in synthetic.SHAPES.items():
        assert {s.name: (s.n, s.k) for s in synthetic.MODELS[name]()} == shape.layer_shapes
    assert synthetic.MODELS["llama7b"]() == synthetic.llama_block(4096, 11008)


def test_synthetic_norms_are_seeded_and_near_one(tiny):
    a, b = synthetic.block_norms(TINY, seed=0), synthetic.block_norms(TINY, seed=1)
    assert list(a) == ["input_layernorm", "post_attention_layernorm", "norm"]
    assert all(np.array_equal(a[n], tiny.norms[n]) for n in a)
    assert not any(np.array_equal(a[n], b[n]) for n in a)
    assert not np.array_equal(a["input_layernorm"], a["post_attention_layernorm"])
    for w in a.values():
        assert w.dtype == np.float32 and w.shape == (256,)
        assert 0.5 <= w.min() and w.max() <= 2 and abs(float(w.mean()) - 1) < 0.02


def test_round_trip_through_save_and_load(tiny, tiny_file):
    back = quant.load(tiny_file)
    assert back.shape == tiny.shape == TINY
    assert back.layers["k_proj"].shape == back.layers["v_proj"].shape == (128, 256)
    assert sorted(back.norms) == sorted(tiny.norms)
    assert all(np.array_equal(back.norms[n], tiny.norms[n]) for n in tiny.norms)
    assert qformat.read_meta(tiny_file)["model_shape"] == TINY.as_json()
    again = tiny_file.with_name("again.q")
    quant.save(again, back)
    assert again.read_bytes() == tiny_file.read_bytes()


def test_rope_scaling_round_trips(tiny, tmp_path):
    shape = dataclasses.replace(TINY, rope_theta=500000.0, rope_scaling=LLAMA3)
    assert ModelShape.from_json(shape.as_json(), "x") == shape
    path = quant.save(tmp_path / "r.q", dataclasses.replace(tiny, shape=shape))
    assert quant.load(path).shape.rope_scaling == LLAMA3


@pytest.mark.parametrize("edit", [
    lambda t, m: m["model_shape"].update(rope_theta=20000.0),
    lambda t, m: t.update({"norm.norm": t["norm.norm"] * 2}),
])
def test_the_shape_and_norms_are_in_the_checksum(tiny_file, edit):
    from safetensors.numpy import save_file
    t, meta = q_parts(tiny_file)
    edit(t, meta)
    save_file(t, str(tiny_file), metadata={qformat.META_KEY: json.dumps(meta)})  # not re-signed
    _one_line(tiny_file, r"checksum must be .* the file was modified or corrupted")


# ---- validation: every field --------------------------------------------------------------------

INT = r"must be an integer from 1 to 2147483647, not "
POS = r"must be a finite number > 0, not "


def _field(key):
    return rf"`model_shape\.{key}` "


@pytest.mark.parametrize("field, value, message", [
    ("family", "gpt2", _field("family") + r"must be 'llama', not 'gpt2'"),
    ("hidden", -256, _field("hidden") + INT + "-256"),
    ("hidden", 0, _field("hidden") + INT + "0"),
    ("hidden", True, _field("hidden") + INT + "True"),
    ("hidden", "256", _field("hidden") + INT + "'256'"),
    ("hidden", 2 ** 70, _field("hidden") + INT + str(2 ** 70)),
    ("intermediate", 688.0, _field("intermediate") + INT + "688.0"),
    ("heads", None, _field("heads") + INT + "None"),
    ("kv_heads", False, _field("kv_heads") + INT + "False"),
    ("kv_heads", 3, _field("kv_heads") + r"must be a divisor of `model_shape\.heads` = 4, not 3"),
    ("head_dim", 63, _field("head_dim") + r"must be even \(RoPE rotates pairs of dimensions\), "
                                          r"not 63"),
    ("head_dim", 2 ** 30, _field("head_dim") + r"must be at most 536870911 \(`model_shape\.heads`"
                                               r" x head dim, .*\), not 1073741824"),
    ("vocab", -1, _field("vocab") + INT + "-1"),
    ("blocks", [2], _field("blocks") + INT + r"\[2\]"),
    ("rope_theta", math.nan, _field("rope_theta") + POS + "nan"),
    ("rope_theta", math.inf, _field("rope_theta") + POS + "inf"),
    ("rope_theta", -10000.0, _field("rope_theta") + POS + "-10000.0"),
    ("rope_theta", "1e4", _field("rope_theta") + POS + "'1e4'"),
    ("rope_theta", True, _field("rope_theta") + POS + "True"),
    ("norm_eps", 0.0, _field("norm_eps") + POS + "0.0"),
    ("norm_eps", -math.inf, _field("norm_eps") + POS + "-inf"),
    ("tie_embeddings", 0, _field("tie_embeddings") + r"must be true or false, not 0"),
    ("tie_embeddings", "false", _field("tie_embeddings") + r"must be true or false, not 'false'"),
    ("rope_scaling", [1], _field("rope_scaling") + r"must be null or an object with a "
                                                   r"`rope_type`, not \[1\]"),
    ("rope_scaling", {"rope_type": ["linear"], "factor": 4.0},
     _field(r"rope_scaling\.rope_type") + r"must be one of \['linear', 'llama3'\], "
                                          r"not \['linear'\]"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0},
     _field(r"rope_scaling\.rope_type") + r"must be one of \['linear', 'llama3'\], not 'yarn'"),
    ("rope_scaling", {"type": "linear", "factor": 2.0},
     _field(r"rope_scaling\.rope_type") + r"must be one of \['linear', 'llama3'\], not missing"),
    ("rope_scaling", {"rope_type": "linear"}, _field(r"rope_scaling\.factor") + POS + "missing"),
    ("rope_scaling", {"rope_type": "linear", "factor": math.nan},
     _field(r"rope_scaling\.factor") + POS + "nan"),
    ("rope_scaling", {"rope_type": "linear", "factor": 2.0, "low_freq_factor": 1.0},
     _field("rope_scaling") + r"must be an object of rope_type, factor for 'linear', "
                              r"not also 'low_freq_factor'"),
    ("rope_scaling", {**LLAMA3, "high_freq_factor": 1.0},
     _field(r"rope_scaling\.high_freq_factor") + r"must be greater than low_freq_factor = 1\.0, "
                                                 r"not 1\.0"),
    ("rope_scaling", {**LLAMA3, "original_max_position_embeddings": 8192.5},
     _field(r"rope_scaling\.original_max_position_embeddings") + INT + "8192.5"),
])
def test_every_field_is_checked(field, value, message):
    d = {**TINY.as_json(), field: value}
    with pytest.raises(UserError, match=f"^where: {message}$"):
        ModelShape.from_json(d, "where")
    # the constructor checks the same, as a ValueError (a bug in our own code, not user input)
    with pytest.raises(ValueError, match=message.replace(r"model_shape\.", "")) as e:
        ModelShape(**d)
    assert not isinstance(e.value, UserError)


def test_missing_unknown_and_non_object_shapes():
    d = TINY.as_json()
    del d["heads"]
    with pytest.raises(UserError, match=r"^w: `model_shape\.heads` must be an integer from 1 "
                                        r"to 2147483647, not missing$"):
        ModelShape.from_json(d, "w")
    with pytest.raises(UserError, match=r"^w: `model_shape` keys must be family, hidden, .*, "
                                        r"tie_embeddings, not also 'q_dim'$"):
        ModelShape.from_json({**TINY.as_json(), "q_dim": 256}, "w")
    with pytest.raises(UserError, match=r"^w: `model_shape` must be a JSON object, not None$"):
        ModelShape.from_json(None, "w")


@pytest.mark.parametrize("edit, message", [
    (lambda t, m: m["model_shape"].update(heads=-4),
     r"`model_shape\.heads` must be an integer from 1 to 2147483647, not -4"),
    (lambda t, m: m["model_shape"].update(kv_heads=3),
     r"`model_shape\.kv_heads` must be a divisor of `model_shape\.heads` = 4, not 3"),
    (lambda t, m: m["model_shape"].update(rope_scaling={"rope_type": "dynamic", "factor": 2}),
     r"`model_shape\.rope_scaling\.rope_type` must be one of \['linear', 'llama3'\], "
     r"not 'dynamic'"),
    (lambda t, m: m.update(model_shape="llama"), r"`model_shape` must be a JSON object"),
    (lambda t, m: t.update({"norm.norm": np.ones(255, np.float32)}),
     r"tensor `norm\.norm` shape must be \[256\] \(`model_shape\.hidden`\), not \[255\]"),
    (lambda t, m: t.update({"norm.norm": np.ones((1, 256), np.float32)}),
     r"tensor `norm\.norm` shape must be \[256\] \(`model_shape\.hidden`\), not \[1, 256\]"),
    (lambda t, m: t.update({"norm.input_layernorm": np.full(256, np.nan, np.float32)}),
     r"tensor `norm\.input_layernorm` values must be finite, not inf/nan"),
    (lambda t, m: t.update({"norm.norm": np.full(256, np.inf, np.float32)}),
     r"tensor `norm\.norm` values must be finite, not inf/nan"),
    (lambda t, m: t.update({"norm.norm": np.ones(256, np.float16)}),
     r"tensor `norm\.norm` dtype must be float32, not float16"),
    (lambda t, m: t.update({"norm.final": np.ones(256, np.float32)}),
     r"tensor `norm\.final` must be `norm\.norm` or a block's `norm\.<prefix>input_layernorm` "
     r"or `norm\.<prefix>post_attention_layernorm`, not another name"),
    (lambda t, m: t.update({"norm.x\0": np.ones(256, np.float32)}),
     r"norm tensor name must be printable \(no control characters or NUL\), not 'x\\x00'"),
    (lambda t, m: t.update({"norm.model.layers.7.input_layernorm": np.ones(256, np.float32)}),
     r"tensor `norm\.model\.layers\.7\.input_layernorm` block must be less than "
     r"`model_shape\.blocks` = 2, not 7"),
    (lambda t, m: m.pop("model_shape"),
     r"tensor `norm\.input_layernorm` must go with metadata `model_shape` \(which gives its "
     r"\[hidden\] shape\), not without"),
    (lambda t, m: m["model_shape"].update(kv_heads=4),
     r"layer `k_proj` shape must be \[256, 256\] \(a k_proj of `model_shape`\), "
     r"not \[128, 256\]"),
    (lambda t, m: m["model_shape"].update(intermediate=512),
     r"layer `gate_proj` shape must be \[512, 256\] \(a gate_proj of `model_shape`\)"),
])
def test_malformed_shape_or_norms_give_one_line_errors(tiny_file, edit, message):
    _one_line(_edit(tiny_file, edit), message)
    assert_one_line(bitlut("inspect", tiny_file), message)


def test_a_checkpoint_layer_past_the_models_blocks(tiny, tmp_path):
    renamed = {f"model.layers.5.{model_shape.ROLE_MODULES[r]}": dataclasses.replace(
        q, name=f"model.layers.5.{model_shape.ROLE_MODULES[r]}") for r, q in tiny.layers.items()}
    with pytest.raises(UserError, match=r"being saved\): layer `model\.layers\.5\.self_attn\."
                                        r"q_proj` block must be less than `model_shape\.blocks` "
                                        r"= 2, not 5"):
        quant.save(tmp_path / "b.q", dataclasses.replace(tiny, layers=renamed, norms=None))


def test_norms_without_a_shape_are_refused_on_save(tiny, tmp_path):
    with pytest.raises(UserError, match=r"tensor `norm\.input_layernorm` must go with metadata "
                                        r"`model_shape`"):
        quant.save(tmp_path / "n.q", dataclasses.replace(tiny, shape=None))


# ---- files without the shape --------------------------------------------------------------------

def test_a_file_without_the_shape_loads_and_says_so(tiny, tmp_path):
    # written as before this version: no `model_shape`, no norm tensors, the same metadata keys
    old = write_q(tmp_path / "old.q")
    t, meta = q_parts(old)
    assert "model_shape" not in meta and not any(n.startswith("norm.") for n in t)
    assert set(meta) == {"format", "version", "model", "quantizer", "layers", "bits_per_weight",
                         "bits_per_weight_no_outliers", "checksum"}
    qm = quant.load(old)
    assert qm.shape is None and qm.norms is None
    assert require_shape(tiny, "t.q", "x") is tiny.shape
    message = (f"{old}: bitlut run --block needs the model's shape (model_shape: heads, KV heads, "
               "head dim, RoPE, norms), which this .q file does not record; re-quantize it with "
               "this version of bitlut")
    with pytest.raises(UserError) as e:
        require_shape(qm, old, "bitlut run --block")
    assert str(e.value) == message
    with pytest.raises(UserError, match=r"block 0's RMSNorm needs the model's shape"):
        norm_weights(qm, 0, old)
    with pytest.raises(UserError, match=r"the final RMSNorm needs the model's shape"):
        final_norm(qm, old)
    # its linear layers still run: the plain QModel constructor and the old fields are unchanged
    assert QModel("m", {}, qm.layers).shape is None
    out = bitlut("inspect", old).out
    assert "\nshape: not recorded\n" in out


def test_inspect_prints_the_shape(tiny_file):
    out = bitlut("inspect", tiny_file).out
    assert ("\nshape: llama, hidden 256, heads 4 (KV 2), head dim 64, intermediate 688, RoPE "
            "theta 10000, norm eps 1e-06, vocab 512, 2 blocks, untied embeddings; 3 RMSNorm "
            "weights\n") in out


# ---- Hugging Face configs -----------------------------------------------------------------------

def test_from_a_transformers_llama_config():
    from transformers import LlamaConfig
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=688,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      rms_norm_eps=1e-5).to_dict()
    s = ModelShape.from_hf_config(cfg, "c.json")
    assert s == dataclasses.replace(TINY, norm_eps=1e-5)
    # Llama 3.1's RoPE scaling, and a head_dim that is not hidden / heads
    cfg = LlamaConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=1,
                      head_dim=32, max_position_embeddings=131072, tie_word_embeddings=True,
                      rope_parameters={**LLAMA3, "rope_theta": 500000.0}).to_dict()
    s = ModelShape.from_hf_config(cfg, "c.json")
    assert (s.head_dim, s.q_dim, s.kv_dim, s.gqa_group) == (32, 128, 32, 4)
    assert (s.rope_theta, s.rope_scaling, s.tie_embeddings) == (500000.0, LLAMA3, True)


def test_from_a_transformers_mistral_config():
    from transformers import MistralConfig
    s = ModelShape.from_hf_config(MistralConfig().to_dict(), "c.json")
    assert (s.family, s.hidden, s.intermediate, s.heads, s.kv_heads, s.head_dim, s.vocab,
            s.blocks) == ("llama", 4096, 14336, 32, 8, 128, 32000, 32)


def test_from_a_config_json_before_transformers_5():
    # TinyLlama/SmolLM2-style config.json: rope_theta at the top, rope_scaling with "type",
    # no head_dim (hidden / heads) and, in the oldest files, no num_key_value_heads (= heads)
    cfg = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
           "num_attention_heads": 32, "num_hidden_layers": 22, "vocab_size": 32000,
           "rms_norm_eps": 1e-5, "rope_theta": 10000, "tie_word_embeddings": False,
           "rope_scaling": {"type": "linear", "factor": 2.0}}
    s = ModelShape.from_hf_config(cfg, "c.json")
    assert (s.head_dim, s.kv_heads, s.rope_theta) == (64, 32, 10000.0)
    assert s.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert ModelShape.from_hf_config({**cfg, "rope_scaling": None}, "c").rope_scaling is None


@pytest.mark.parametrize("edit, message", [
    ({"model_type": "bert"}, r"architecture must be LLaMA-family \(llama, mistral\), not 'bert'"),
    ({"model_type": None}, r"architecture must be LLaMA-family \(llama, mistral\), not None"),
    ({"hidden_act": "gelu"}, r"`hidden_act` must be 'silu' \(LLaMA's SwiGLU MLP\), not 'gelu'"),
    ({"attention_bias": True}, r"`attention_bias` must be false \(a \.q file holds no biases\)"),
    ({"num_attention_heads": 0}, r"`num_attention_heads` must be an integer from 1 to"),
    ({"num_key_value_heads": 5}, r"`num_key_value_heads` must be a divisor of "
                                 r"`num_attention_heads` = 32, not 5"),
    ({"hidden_size": 2050}, r"`hidden_size` must be a multiple of `num_attention_heads` = 32 "
                            r"when the config has no `head_dim`, not 2050"),
    ({"rms_norm_eps": -1e-6}, r"`rms_norm_eps` must be a finite number > 0, not -1e-06"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}},
     r"`rope_scaling\.rope_type` must be one of \['linear', 'llama3'\], not 'yarn'"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}},
     r"`rope_parameters\.rope_type` must be one of \['linear', 'llama3'\], not 'dynamic'"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": -1.0}},
     r"`rope_parameters\.rope_theta` must be a finite number > 0, not -1\.0"),
    ({"vocab_size": None}, r"`vocab_size` must be an integer from 1 to 2147483647, not None"),
])
def test_bad_hf_configs(edit, message):
    from transformers import LlamaConfig
    cfg = LlamaConfig().to_dict()
    cfg.pop("head_dim")                    # as in a config.json without it
    cfg.update(edit)
    if "rope_scaling" in edit:
        cfg.pop("rope_parameters")
    with pytest.raises(UserError, match="^cfg/config.json: " + message):
        ModelShape.from_hf_config(cfg, "cfg/config.json")


def test_a_bert_config_is_not_llama_family():
    from transformers import BertConfig
    with pytest.raises(UserError, match=r"^c: architecture must be LLaMA-family \(llama, "
                                        r"mistral\), not 'bert'$"):
        ModelShape.from_hf_config(BertConfig().to_dict(), "c")


# ---- checkpoints --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_ckpt(tmp_path_factory):
    from quant.checkpoint import quantize_checkpoint
    from tests.tiny_models import save_llama
    path = tmp_path_factory.mktemp("tiny-llama-gqa")
    model = save_llama(path, random_norms=True)
    qm = quantize_checkpoint(path, Method("rtn", 4, 16), samples=2, seqlen=16)
    return model, qm


def test_a_llama_checkpoint_records_its_shape_and_norms(llama_ckpt, tmp_path):
    model, qm = llama_ckpt
    cfg = model.config
    assert qm.shape == ModelShape.from_hf_config(cfg.to_dict(), "c")
    assert (qm.shape.hidden, qm.shape.heads, qm.shape.kv_heads, qm.shape.head_dim,
            qm.shape.blocks, qm.shape.vocab) == (64, 4, 2, 16, 2, cfg.vocab_size)
    assert sorted(qm.norms) == ["model.layers.0.input_layernorm",
                                "model.layers.0.post_attention_layernorm",
                                "model.layers.1.input_layernorm",
                                "model.layers.1.post_attention_layernorm", "norm"]
    for i, block in enumerate(model.model.layers):
        a, b = norm_weights(qm, i)
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, block.input_layernorm.weight.detach().numpy())
        np.testing.assert_array_equal(b, block.post_attention_layernorm.weight.detach().numpy())
        layers = block_layers(qm, i)
        assert list(layers) == list(BLOCK_ROLES)
        assert layers["k_proj"].name == f"model.layers.{i}.self_attn.k_proj"
        assert layers["k_proj"].shape == (32, 64) and layers["down_proj"].shape == (64, 160)
    np.testing.assert_array_equal(final_norm(qm), model.model.norm.weight.detach().numpy())
    back = quant.load(quant.save(tmp_path / "c.q", qm))
    assert back.shape == qm.shape and back.norms.keys() == qm.norms.keys()


def test_an_unsupported_llama_config_records_no_shape(tmp_path):
    from transformers import LlamaConfig

    from quant.checkpoint import model_shape as checkpoint_shape
    seen = []
    cfg = LlamaConfig(hidden_act="gelu")
    assert checkpoint_shape(tmp_path, cfg, seen.append) is None
    assert seen == [f"{tmp_path}/config.json: `hidden_act` must be 'silu' (LLaMA's SwiGLU MLP), "
                    "not 'gelu'; the .q file will not record the model's shape (linear layers "
                    "only)"]
    from transformers import BertConfig
    assert checkpoint_shape(tmp_path, BertConfig(), seen.append) is None and len(seen) == 1


# ---- a block's layers and norms -----------------------------------------------------------------

def test_block_layers_of_a_synthetic_block(tiny):
    layers = block_layers(tiny, 0)
    assert list(layers) == list(BLOCK_ROLES)
    assert all(layers[r] is tiny.layers[r] for r in BLOCK_ROLES)
    a, b = norm_weights(tiny, 0)
    assert a is tiny.norms["input_layernorm"] and b is tiny.norms["post_attention_layernorm"]
    assert final_norm(tiny) is tiny.norms["norm"]
    with pytest.raises(UserError, match=r"^model `synthetic-llama-tiny`: block must be 0 \(the "
                                        r"file holds one block, its layers named without a block "
                                        r"number\), not 1$"):
        block_layers(tiny, 1)
    with pytest.raises(UserError, match=r"^t\.q: block must be in 0\.\.1 \(the model's "
                                        r"`model_shape\.blocks` = 2\), not 2$"):
        block_layers(tiny, 2, "t.q")


def test_block_layers_name_the_missing_role(tiny, llama_ckpt):
    no_v = dataclasses.replace(tiny, layers={n: q for n, q in tiny.layers.items()
                                             if n != "v_proj"})
    with pytest.raises(UserError, match=r"^m\.q: block 0's layer `v_proj` must be in the file, "
                                        r"not missing$"):
        block_layers(no_v, 0, "m.q")
    _, qm = llama_ckpt
    gone = "model.layers.1.mlp.up_proj"
    part = dataclasses.replace(qm, layers={n: q for n, q in qm.layers.items() if n != gone})
    assert block_layers(part, 0)["up_proj"].name == "model.layers.0.mlp.up_proj"
    with pytest.raises(UserError, match=r"block 1's layer `up_proj` must be in the file, "
                                        r"not missing"):
        block_layers(part, 1)
    norms = {n: w for n, w in qm.norms.items() if n != "model.layers.1.post_attention_layernorm"}
    with pytest.raises(UserError, match=r"block 1's norm `post_attention_layernorm` must be in "
                                        r"the file, not missing"):
        norm_weights(dataclasses.replace(qm, norms=norms), 1)
    with pytest.raises(UserError, match=r"the final norm `norm` must be in the file"):
        final_norm(dataclasses.replace(qm, norms={}))


def test_names_of_roles_and_norms():
    assert model_shape.role_of("q_proj") == (None, "q_proj")
    assert model_shape.role_of("model.layers.12.mlp.down_proj") == (12, "down_proj")
    assert model_shape.role_of("layers.3.self_attn.o_proj") == (3, "o_proj")
    for other in ("model.layers.1.mlp.q_proj", "encoder.layer.0.attention.self.query",
                  "model.layers.x.mlp.up_proj", "model.layers.01.mlp.up_proj",
                  "model.layers.\u0663.mlp.up_proj", "lm_head"):
        assert model_shape.role_of(other) is None
    assert model_shape.norm_of("norm") == (None, "norm")
    assert model_shape.norm_of("model.layers.0.input_layernorm") == (0, "input_layernorm")
    assert model_shape.norm_of("model.norm") is None
