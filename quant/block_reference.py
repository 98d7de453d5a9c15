"""The PyTorch float reference of one LLaMA decoder block, the unit the accelerator runs end to end.

Ref: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023) §2.2 (pre-norm
RMSNorm, SwiGLU, rotary embeddings); Su et al., "RoFormer" (2021) §3.4.2 Eq. 34 (RoPE, here in
transformers' duplicated-halves layout); Ainslie et al., "GQA" (2023) §2.2 (grouped-query
attention).

The block's outputs on the accelerator are checked against this computation with the DEQUANTIZED
weights, so it follows transformers' `LlamaDecoderLayer` operator for operator (RMSNorm weight
applied after the normalization, scores scaled by `head_dim ** -0.5`, keys cached after RoPE), but
computes everything in one dtype: float32 by default, float64 for checking the reference itself.
(transformers rounds the norms, the RoPE tables and the softmax through float32 even in a float64
model; we do not.)

    out = block_forward(x, w, shape, past_k, past_v)    # BlockOutputs: out, k, v, intermediates
    cos, sin = rope_cos_sin(positions, head_dim, theta, scaling)
"""

import math
from typing import NamedTuple

import numpy as np
import torch

ROPE_TYPES = ("default", "linear", "llama3")
_ROPE_KEYS = {"default": (), "linear": ("factor",),
              "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings")}
DTYPES = (torch.float32, torch.float64)


def _as(a, dtype):
    if isinstance(a, torch.Tensor):
        return a.detach().to(dtype)
    return torch.as_tensor(np.asarray(a)).to(dtype)


def _rope_type(scaling):
    """The RoPE type of a rope_scaling dict (transformers' `rope_type`, or the older `type`)."""
    if scaling is None:
        return "default"
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling type must be one of {ROPE_TYPES}, not {kind!r}")
    missing = [key for key in _ROPE_KEYS[kind] if key not in scaling]
    if missing:
        raise ValueError(f"rope_scaling {kind!r} must have {list(_ROPE_KEYS[kind])}, "
                         f"not lack {missing}")
    return kind


def rope_inv_freq(head_dim, theta, scaling=None):
    """float64 [head_dim // 2]: the inverse frequencies of transformers' LlamaRotaryEmbedding.

    scaling: None, or a rope_scaling dict: {"rope_type": "linear", "factor"}, or {"rope_type":
    "llama3", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}.
    The same formulas as transformers' `ROPE_INIT_FUNCTIONS`, evaluated in float64 (transformers
    evaluates them in float32). Raises ValueError for an odd head_dim or another scaling type."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, not {head_dim}")
    kind = _rope_type(scaling)
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if kind == "linear":
        return inv / scaling["factor"]
    if kind == "default":
        return inv
    # Llama 3.1: wavelengths shorter than the pre-training context / high_freq_factor keep their
    # frequency, longer than context / low_freq_factor are slowed by `factor`, and the band
    # between is interpolated linearly in context / wavelength.
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    slowed = torch.where(wavelen > context / low, inv / factor, inv)
    smooth = (context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * slowed / factor + smooth * slowed
    medium = (wavelen >= context / high) & (wavelen <= context / low)
    return torch.where(medium, smoothed, slowed)


def rope_cos_sin(positions, head_dim, theta, scaling=None, dtype=torch.float32):
    """cos, sin [len(positions), head_dim] of RoPE at integer `positions`, computed in float64.

    The layout is transformers': the angles of the head_dim // 2 frequencies, repeated for the two
    halves (`cat(freqs, freqs)`), to be used with `rotate_half`. See `rope_inv_freq` for
    `scaling`; all three supported types have transformers' attention_scaling of 1."""
    pos = _as(positions, torch.float64).reshape(-1)
    freqs = pos[:, None] * rope_inv_freq(head_dim, theta, scaling)[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    """x [T, heads, head_dim] rotated by cos, sin [T, head_dim]: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def rms_norm(x, weight, eps):
    """weight * x / sqrt(mean(x^2) + eps) over the last axis, in x's dtype."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def kv_head_index(heads, kv_heads):
    """[heads] long: the KV head each query head reads. GQA groups consecutive query heads, as
    transformers' `repeat_kv` does: query head h uses KV head h // (heads // kv_heads)."""
    return torch.arange(heads) // (heads // kv_heads)


def block_weight_shapes(shape):
    """{name: (rows, cols) or (n,)} of the nine weights of one block, as `block_forward` takes them
    (torch's nn.Linear layout, [out_features, in_features])."""
    q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    hidden, inter = shape.hidden, shape.intermediate
    return {"q_proj": (q_dim, hidden), "k_proj": (kv_dim, hidden), "v_proj": (kv_dim, hidden),
            "o_proj": (hidden, q_dim), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
            "down_proj": (hidden, inter), "input_layernorm": (hidden,),
            "post_attention_layernorm": (hidden,)}


class BlockOutputs(NamedTuple):
    """What one decoder block computed, for a checker to compare operator by operator.

    T new tokens, L cached ones, S = L + T; hd = head_dim; q_dim = heads * hd.

    Members:
        out: [T, hidden], the block's output (after the second residual).
        k, v: [T, kv_heads, hd], the new cache rows (k after RoPE; both after kv_roundtrip).
        attn_in: [T, hidden], RMSNorm(x) with input_layernorm.
        q: [T, heads, hd], queries after RoPE.
        scores: [heads, T, S], q . k * hd ** -0.5; -inf where the causal mask forbids.
        probs: [heads, T, S], softmax of scores over S.
        attn: [T, q_dim], the heads' outputs concatenated, before o_proj.
        h: [T, hidden], x + o_proj(attn) (after the first residual).
        mlp_in: [T, hidden], RMSNorm(h) with post_attention_layernorm.
        act: [T, intermediate], silu(gate_proj(mlp_in)) * up_proj(mlp_in), before down_proj.
    """
    out: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    attn_in: torch.Tensor
    q: torch.Tensor
    scores: torch.Tensor
    probs: torch.Tensor
    attn: torch.Tensor
    h: torch.Tensor
    mlp_in: torch.Tensor
    act: torch.Tensor


def _weights(w, shape, dtype):
    out = {}
    for name, expect in block_weight_shapes(shape).items():
        if name not in w:
            raise ValueError(f"w must have a {name!r} weight, not lack it")
        out[name] = _as(w[name], dtype)
        if tuple(out[name].shape) != expect:
            raise ValueError(f"w[{name!r}] must have shape {expect}, "
                             f"not {tuple(out[name].shape)}")
    return out


def _past(past_k, past_v, shape, dtype):
    """The cache as two [L, kv_heads, hd] tensors (L = 0 when there is none)."""
    if (past_k is None) != (past_v is None):
        raise ValueError("past_k and past_v must be given together, not one of them")
    row = (shape.kv_heads, shape.head_dim)
    if past_k is None:
        empty = torch.zeros((0, *row), dtype=dtype)
        return empty, empty
    past_k, past_v = _as(past_k, dtype), _as(past_v, dtype)
    for name, past in (("past_k", past_k), ("past_v", past_v)):
        if past.ndim != 3 or tuple(past.shape[1:]) != row:
            raise ValueError(f"{name} must have shape [L, {row[0]}, {row[1]}], "
                             f"not {list(past.shape)}")
    if past_k.shape[0] != past_v.shape[0]:
        raise ValueError(f"past_k and past_v must hold as many tokens, "
                         f"not {past_k.shape[0]} and {past_v.shape[0]}")
    return past_k, past_v


def _roundtrip(fn, t, name):
    out = _as(fn(t), t.dtype)
    if out.shape != t.shape:
        raise ValueError(f"kv_roundtrip({name}) must keep shape {list(t.shape)}, "
                         f"not {list(out.shape)}")
    return out


def _attention(q, keys, values, shape, n_past):
    """Causal GQA attention of T queries over S = n_past + T keys: scores, probs, attn [T, q_dim].
    """
    t, s = q.shape[0], keys.shape[0]
    group = kv_head_index(shape.heads, shape.kv_heads)
    scores = torch.einsum("thd,shd->hts", q, keys[:, group]) * shape.head_dim ** -0.5
    # new token t sits at sequence index n_past + t and sees every key up to and including it
    future = torch.arange(s)[None, :] > n_past + torch.arange(t)[:, None]
    scores = scores.masked_fill(future, -math.inf)
    probs = torch.softmax(scores, dim=-1)
    attn = torch.einsum("hts,shd->thd", probs, values[:, group])
    return scores, probs, attn.reshape(t, shape.heads * shape.head_dim)


def block_forward(x, w, shape, past_k=None, past_v=None, positions=None, kv_roundtrip=None,
                  dtype=torch.float32):
    """One LLaMA decoder block on the T new tokens `x` [T, hidden] of a single sequence.

    w: the float weights named in `block_weight_shapes` (numpy or torch; dequantized ones when
    checking the accelerator). shape: any object with hidden, intermediate, heads, kv_heads,
    head_dim, rope_theta, rope_scaling (see `rope_inv_freq`) and norm_eps. past_k, past_v:
    [L, kv_heads, head_dim], the cache of the L earlier tokens (keys after RoPE, as transformers
    caches them), or None for L = 0. positions: the T RoPE positions, L .. L + T - 1 by default;
    the causal mask is by sequence index whatever they are. kv_roundtrip: applied to the new k and
    to the new v [T, kv_heads, head_dim] before they are attended to and returned (a quantized KV
    cache: kv_roundtrip(k) -> k'); the past is taken as already round-tripped. dtype: float32 or
    float64, for every operation.

    Returns `BlockOutputs`. Raises ValueError for inconsistent shapes or arguments."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype}")
    if shape.heads % shape.kv_heads:
        raise ValueError(f"heads must be a multiple of kv_heads, "
                         f"not {shape.heads} and {shape.kv_heads}")
    x = _as(x, dtype)
    if x.ndim != 2 or x.shape[1] != shape.hidden or x.shape[0] == 0:
        raise ValueError(f"x must have shape [T >= 1, {shape.hidden}], not {list(x.shape)}")
    w = _weights(w, shape, dtype)
    past_k, past_v = _past(past_k, past_v, shape, dtype)
    t, n_past, hd = x.shape[0], past_k.shape[0], shape.head_dim
    if positions is None:
        positions = torch.arange(n_past, n_past + t)
    positions = _as(positions, torch.int64).reshape(-1)
    if positions.shape[0] != t:
        raise ValueError(f"positions must hold T = {t} positions, not {positions.shape[0]}")

    attn_in = rms_norm(x, w["input_layernorm"], shape.norm_eps)
    cos, sin = rope_cos_sin(positions, hd, shape.rope_theta, shape.rope_scaling, dtype)
    q = apply_rope((attn_in @ w["q_proj"].T).reshape(t, shape.heads, hd), cos, sin)
    k = apply_rope((attn_in @ w["k_proj"].T).reshape(t, shape.kv_heads, hd), cos, sin)
    v = (attn_in @ w["v_proj"].T).reshape(t, shape.kv_heads, hd)
    if kv_roundtrip is not None:
        k, v = _roundtrip(kv_roundtrip, k, "k"), _roundtrip(kv_roundtrip, v, "v")
    scores, probs, attn = _attention(q, torch.cat((past_k, k)), torch.cat((past_v, v)), shape,
                                     n_past)
    h = x + attn @ w["o_proj"].T

    mlp_in = rms_norm(h, w["post_attention_layernorm"], shape.norm_eps)
    act = torch.nn.functional.silu(mlp_in @ w["gate_proj"].T) * (mlp_in @ w["up_proj"].T)
    out = h + act @ w["down_proj"].T
    return BlockOutputs(out=out, k=k, v=v, attn_in=attn_in, q=q, scores=scores, probs=probs,
                        attn=attn, h=h, mlp_in=mlp_in, act=act)
