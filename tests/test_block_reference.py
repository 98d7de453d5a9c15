"""quant.block_reference against transformers' own LlamaDecoderLayer and LlamaRotaryEmbedding.

A float64 LlamaDecoderLayer in transformers 5.23 still rounds three steps through float32:
LlamaRMSNorm casts its input to float32, LlamaRotaryEmbedding computes the angles in float32, and
eager attention's softmax runs with dtype=float32. So every block is compared twice:

- with the layer as shipped, at SHIPPED_TOL (the float32 steps measured 1.7e-7 relative);
- with those three steps in float64, at EXACT_TOL (measured 0): cos/sin from `rope_cos_sin`
  (checked against LlamaRotaryEmbedding on its own below), LlamaRMSNorm.forward without its float32
  round trip (its formula is checked at a large eps below), softmax without dtype=float32.
  Everything else is transformers' code: the projections, rotate_half, the DynamicCache,
  repeat_kv's GQA grouping, create_causal_mask, the residuals and the MLP.

Errors are relative to the largest magnitude of transformers' result.
"""

import contextlib
import dataclasses
import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from quant import block_reference
from quant.block_reference import block_forward, rope_cos_sin, rope_inv_freq

EXACT_TOL = 1e-12
SHIPPED_TOL = 2e-6
F64 = torch.float64
EPS32 = float(np.finfo(np.float32).eps)

THETA = 10000.0
LINEAR = {"rope_type": "linear", "factor": 4.0}
# head_dim 16 at theta 1e4 has wavelengths 6.3 .. 19869: with a 2048-token context the 8
# frequencies fall 4 kept, 2 interpolated (628, 1987), 2 slowed, so every branch is exercised.
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 2048}
CASES = {"gqa": (2, None), "mha": (4, None), "gqa-linear": (2, LINEAR), "gqa-llama3": (2, LLAMA3)}
N_PROMPT, N_PAST = 7, 9   # prefill length; cached tokens before the decoded one


@dataclasses.dataclass(frozen=True)
class Shape:
    """The attributes block_forward reads (the real ModelShape lives elsewhere)."""
    kv_heads: int = 2
    rope_scaling: dict | None = None
    hidden: int = 64
    intermediate: int = 172
    heads: int = 4
    head_dim: int = 16
    rope_theta: float = THETA
    norm_eps: float = 1e-6


@functools.cache
def hf():
    """transformers' pieces, imported on first use (the import takes seconds)."""
    from transformers import LlamaConfig
    from transformers.cache_utils import DynamicCache
    from transformers.masking_utils import create_causal_mask
    from transformers.models.llama import modeling_llama
    return SimpleNamespace(LlamaConfig=LlamaConfig, DynamicCache=DynamicCache,
                           create_causal_mask=create_causal_mask, ml=modeling_llama)


def llama_config(shape):
    rope = {"rope_type": "default"} if shape.rope_scaling is None else shape.rope_scaling
    return hf().LlamaConfig(
        hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, rms_norm_eps=shape.norm_eps, num_hidden_layers=1, vocab_size=32,
        max_position_embeddings=8192, rope_parameters={**rope, "rope_theta": shape.rope_theta},
        attn_implementation="eager")


@contextlib.contextmanager
def float64_throughout():
    """transformers' layer with its three float32 steps in the input's dtype (module docstring)."""
    softmax = torch.nn.functional.softmax

    def softmax_in_input_dtype(input, dim=None, _stacklevel=3, dtype=None):
        return softmax(input, dim=dim)

    def rms_norm_in_input_dtype(self, hidden_states):
        # LlamaRMSNorm.forward less `.to(torch.float32)` and back
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "softmax", softmax_in_input_dtype)
        mp.setattr(hf().ml.LlamaRMSNorm, "forward", rms_norm_in_input_dtype)
        yield


class Block:
    """A seeded float64 LlamaDecoderLayer, its weights as block_forward takes them, 10 tokens."""

    def __init__(self, shape, seed=0):
        self.shape, self.config = shape, llama_config(shape)
        self.layer = hf().ml.LlamaDecoderLayer(self.config, layer_idx=0).to(F64).eval()
        self.rotary = hf().ml.LlamaRotaryEmbedding(self.config)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.layer.parameters():
                # norm weights away from 1 so a forgotten one shows; projections keep x at O(1)
                noise = torch.randn(p.shape, generator=g, dtype=F64)
                p.copy_(1 + 0.2 * noise if p.ndim == 1 else noise / p.shape[1] ** 0.5)
        attn, mlp = self.layer.self_attn, self.layer.mlp
        modules = {"q_proj": attn.q_proj, "k_proj": attn.k_proj, "v_proj": attn.v_proj,
                   "o_proj": attn.o_proj, "gate_proj": mlp.gate_proj, "up_proj": mlp.up_proj,
                   "down_proj": mlp.down_proj, "input_layernorm": self.layer.input_layernorm,
                   "post_attention_layernorm": self.layer.post_attention_layernorm}
        self.w = {name: m.weight.detach() for name, m in modules.items()}
        self.x = torch.randn(N_PAST + 1, shape.hidden, generator=g, dtype=F64)

    def run(self, x, start=0, cache=None, exact=True, rope_positions=None):
        """transformers' layer on x [T, hidden] at sequence indices start.., causally: [T, hidden].

        cache: a DynamicCache holding the `start` earlier tokens (it is extended). rope_positions:
        RoPE positions when they differ from the sequence indices."""
        big_x = x[None]
        seq = torch.arange(start, start + x.shape[0])[None]
        pos = seq if rope_positions is None else torch.as_tensor(rope_positions)[None]
        mask = hf().create_causal_mask(config=self.config, inputs_embeds=big_x,
                                       attention_mask=None, past_key_values=cache,
                                       position_ids=seq)
        with torch.no_grad(), (float64_throughout() if exact else contextlib.nullcontext()):
            if exact:
                s = self.shape
                cos, sin = rope_cos_sin(pos[0], s.head_dim, s.rope_theta, s.rope_scaling, F64)
                embeddings = cos[None], sin[None]
            else:
                embeddings = self.rotary(big_x, pos)
            return self.layer(big_x, attention_mask=mask, position_embeddings=embeddings,
                              past_key_values=cache, use_cache=cache is not None)[0]

    def cached(self, x, cache=None):
        """(past_k, past_v) [L, kv_heads, hd] of a DynamicCache filled by the exact layer on x."""
        cache = cache or hf().DynamicCache(config=self.config)
        self.run(x, cache=cache)
        keys, values = cache.layers[0].keys, cache.layers[0].values   # [1, kv_heads, L, hd]
        return keys[0].transpose(0, 1), values[0].transpose(0, 1)

    def ours(self, x, **kwargs):
        return block_forward(x, self.w, self.shape, dtype=F64, **kwargs)


@functools.cache
def make_block(case):
    kv_heads, scaling = CASES[case]
    return Block(Shape(kv_heads=kv_heads, rope_scaling=scaling))


@pytest.fixture(params=CASES, scope="module")
def block(request):
    return make_block(request.param)


def rel_err(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


# ---- RoPE tables -------------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", [None, LINEAR, LLAMA3], ids=["default", "linear", "llama3"])
def test_rope_matches_llama_rotary_embedding(scaling):
    shape = Shape(rope_scaling=scaling)
    rotary = hf().ml.LlamaRotaryEmbedding(llama_config(shape))
    assert rotary.attention_scaling == 1.0   # rope_cos_sin applies none
    inv = rope_inv_freq(shape.head_dim, THETA, scaling)
    # transformers evaluates the same formulas in float32: a few roundings
    assert rel_err(inv, rotary.inv_freq.to(F64)) < 4 * EPS32

    pos = torch.cat((torch.arange(64), torch.tensor([1000, 4095, 8191])))
    cos_hf, sin_hf = rotary(torch.zeros(1, dtype=F64), pos[None])
    cos, sin = rope_cos_sin(pos, shape.head_dim, THETA, scaling, F64)
    assert cos.shape == sin.shape == (len(pos), shape.head_dim)
    # its float32 angle p * inv_freq is off by a few roundings of the angle itself
    angle = pos[:, None].to(F64) * torch.cat((inv, inv))
    allowed = 4 * EPS32 * (1 + angle)
    assert ((cos - cos_hf[0]).abs() <= allowed).all()
    assert ((sin - sin_hf[0]).abs() <= allowed).all()


def test_rope_scalings_change_the_frequencies():
    # what the comparison above would miss if the scaling were ignored on both sides
    base = rope_inv_freq(16, THETA)
    assert torch.equal(rope_inv_freq(16, THETA, LINEAR), base / LINEAR["factor"])
    llama3 = rope_inv_freq(16, THETA, LLAMA3)
    kept, slowed = llama3 == base, llama3 == base / LLAMA3["factor"]
    between = (llama3 < base) & (llama3 > base / LLAMA3["factor"])
    assert (kept.sum(), between.sum(), slowed.sum()) == (4, 2, 2)


def test_rope_cos_sin_is_float32_by_default():
    cos, sin = rope_cos_sin([0, 5], 16, THETA)
    assert cos.dtype == sin.dtype == torch.float32
    assert torch.equal(cos[0], torch.ones(16)) and torch.equal(sin[0], torch.zeros(16))


def test_rms_norm_matches_llama_rms_norm():
    # in float32, where LlamaRMSNorm has no cast to skip, and at an eps large enough to matter
    norm = hf().ml.LlamaRMSNorm(64, eps=0.5)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.2 * torch.randn(64, generator=g))
        x = torch.randn(5, 64, generator=g)
        assert rel_err(block_reference.rms_norm(x, norm.weight, 0.5), norm(x)) < 4 * EPS32


# ---- the block ---------------------------------------------------------------------------------


def test_prefill_matches_transformers(block):
    x = block.x[:N_PROMPT]
    ours = block.ours(x)
    assert rel_err(ours.out, block.run(x)) <= EXACT_TOL
    assert rel_err(ours.out, block.run(x, exact=False)) <= SHIPPED_TOL
    past_k, past_v = block.cached(x)
    assert rel_err(ours.k, past_k) <= EXACT_TOL and rel_err(ours.v, past_v) <= EXACT_TOL


def test_decode_matches_transformers(block):
    """The 10th token after a cache of 9: the last row of the layer run on all 10 causally."""
    full = block.run(block.x)
    cache = hf().DynamicCache(config=block.config)
    past_k, past_v = block.cached(block.x[:N_PAST], cache)
    ours = block.ours(block.x[N_PAST:], past_k=past_k, past_v=past_v)
    assert ours.scores.shape == (block.shape.heads, 1, N_PAST + 1)
    assert rel_err(ours.out[0], full[N_PAST]) <= EXACT_TOL
    assert rel_err(ours.out[0], block.run(block.x, exact=False)[N_PAST]) <= SHIPPED_TOL
    # and transformers' own decode step on that cache
    assert rel_err(ours.out, block.run(block.x[N_PAST:], start=N_PAST, cache=cache)) <= EXACT_TOL
    # the cache our own prefill returns serves as well as transformers'
    own = block.ours(block.x[:N_PAST])
    again = block.ours(block.x[N_PAST:], past_k=own.k, past_v=own.v)
    assert rel_err(again.out[0], full[N_PAST]) <= EXACT_TOL


def test_intermediates_match_transformers():
    """Each operator's output against the same tensor inside transformers' layer (forward hooks)."""
    block, x = make_block("gqa"), make_block("gqa").x[:N_PROMPT]
    layer, seen = block.layer, {}

    def keep(name, which):
        return lambda module, args, out: seen.__setitem__(name, which(args, out))

    hooks = [(layer.input_layernorm, "attn_in", lambda a, o: o),
             (layer.self_attn.q_proj, "q_proj", lambda a, o: o),
             (layer.self_attn, "probs", lambda a, o: o[1]),
             (layer.self_attn.o_proj, "attn", lambda a, o: a[0]),
             (layer.post_attention_layernorm, "h", lambda a, o: a[0]),
             (layer.post_attention_layernorm, "mlp_in", lambda a, o: o),
             (layer.mlp.down_proj, "act", lambda a, o: a[0])]
    handles = [module.register_forward_hook(keep(name, which)) for module, name, which in hooks]
    try:
        block.run(x)
    finally:
        for handle in handles:
            handle.remove()
    ours = block.ours(x)
    for name in ("attn_in", "attn", "h", "mlp_in", "act"):
        assert rel_err(getattr(ours, name), seen[name][0]) <= EXACT_TOL, name
    assert rel_err(ours.probs, seen["probs"][0]) <= EXACT_TOL
    assert rel_err(torch.softmax(ours.scores, -1), seen["probs"][0]) <= EXACT_TOL
    assert torch.isinf(ours.scores).sum() == block.shape.heads * N_PROMPT * (N_PROMPT - 1) // 2

    s = block.shape
    cos, sin = rope_cos_sin(range(N_PROMPT), s.head_dim, THETA, None, F64)
    q = seen["q_proj"].view(1, N_PROMPT, s.heads, s.head_dim).transpose(1, 2)
    q, _ = hf().ml.apply_rotary_pos_emb(q, q, cos[None], sin[None])
    assert rel_err(ours.q, q[0].transpose(0, 1)) <= EXACT_TOL


def test_rope_positions_move_rope_not_the_mask():
    # RoPE sees only differences of positions, so these are spread out, not merely shifted
    block = make_block("gqa-llama3")
    x, positions = block.x[:N_PROMPT], 3000 + 37 * torch.arange(N_PROMPT)
    ours = block.ours(x, positions=positions)
    assert rel_err(ours.out, block.run(x, rope_positions=positions)) <= EXACT_TOL
    assert rel_err(ours.out, block.ours(x).out) > 1e-3


def test_kv_roundtrip_models_a_quantized_cache():
    """transformers with a cache that rounds what it stores is the reference for kv_roundtrip."""
    def to_fp16(t):
        return t.to(torch.float16).to(t.dtype)

    class Fp16Cache(hf().DynamicCache):
        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(to_fp16(key_states), to_fp16(value_states), *args, **kwargs)

    block = make_block("gqa")
    x = block.x[:N_PROMPT]
    cache = Fp16Cache(config=block.config)
    theirs = block.run(x, cache=cache)
    ours = block.ours(x, kv_roundtrip=to_fp16)
    assert rel_err(ours.out, theirs) <= EXACT_TOL
    assert torch.equal(ours.k, to_fp16(block.ours(x).k))
    assert torch.equal(ours.k, cache.layers[0].keys[0].transpose(0, 1))
    assert rel_err(ours.out, block.ours(x).out) > 1e-6   # the rounding did reach the output


def test_a_wrong_gqa_mapping_fails(monkeypatch):
    # query head h reading KV head h % kv_heads, not h // group: the comparison must notice
    block = make_block("gqa")
    x = block.x[:N_PROMPT]
    monkeypatch.setattr(block_reference, "kv_head_index",
                        lambda heads, kv_heads: torch.arange(heads) % kv_heads)
    wrong = block.ours(x).out
    assert rel_err(wrong, block.run(x)) > 1e3 * SHIPPED_TOL
    assert rel_err(wrong, block.run(x, exact=False)) > 1e3 * SHIPPED_TOL


def test_float32_default_and_numpy_weights():
    block = make_block("gqa")
    w = {name: t.numpy() for name, t in block.w.items()}
    ours = block_forward(block.x[:N_PROMPT].numpy(), w, block.shape)
    assert ours.out.dtype == torch.float32
    assert rel_err(ours.out.to(F64), block.ours(block.x[:N_PROMPT]).out) < 1e-5


def _broken(**change):
    """block_forward's arguments for the gqa block, with `change` applied."""
    block = make_block("gqa")
    args = {"x": block.x[:3], "w": dict(block.w), "shape": block.shape}
    for key, value in change.items():
        if key == "w":
            args["w"] = {**args["w"], **value}
            args["w"] = {k: v for k, v in args["w"].items() if v is not None}
        else:
            args[key] = value
    return args


@pytest.mark.parametrize("change, match", [
    ({"w": {"down_proj": None}}, r"w must have a 'down_proj' weight, not lack it"),
    ({"w": {"q_proj": torch.zeros(64, 32)}}, r"w\['q_proj'\] must have shape \(64, 64\), "
                                             r"not \(64, 32\)"),
    ({"shape": Shape(kv_heads=3)}, r"heads must be a multiple of kv_heads, not 4 and 3"),
    ({"x": torch.zeros(3, 60)}, r"x must have shape \[T >= 1, 64\], not \[3, 60\]"),
    ({"past_k": torch.zeros(2, 2, 16)}, r"past_k and past_v must be given together"),
    ({"past_k": torch.zeros(2, 2, 16), "past_v": torch.zeros(2, 4, 16)},
     r"past_v must have shape \[L, 2, 16\], not \[2, 4, 16\]"),
    ({"positions": [0, 1]}, r"positions must hold T = 3 positions, not 2"),
    ({"kv_roundtrip": lambda t: t.reshape(t.shape[0], -1)},
     r"kv_roundtrip\(k\) must keep shape \[3, 2, 16\], not \[3, 32\]"),
    ({"shape": Shape(rope_scaling={"rope_type": "yarn", "factor": 2.0})},
     r"rope_scaling type must be one of \('default', 'linear', 'llama3'\), not 'yarn'"),
    ({"shape": Shape(rope_scaling={"rope_type": "llama3", "factor": 8.0})},
     r"rope_scaling 'llama3' must have \[.*\], not lack \['low_freq_factor'"),
    ({"dtype": torch.float16}, r"dtype must be one of"),
])
def test_bad_arguments_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        block_forward(**_broken(**change))
