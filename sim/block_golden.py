"""The golden model of one LLaMA decoder block on the accelerator: docs/block.md's "What the
block computes", operator for operator, in numpy.

Ref: LLaMA (Touvron et al. 2023) §2; RoFormer §3.4 (RoPE); GQA (Ainslie et al. 2023) §2; KIVI
(Liu et al. 2024) for the low-bit KV cache; LUT Tensor Core (ISCA'25) §3 for the mixed-precision
product that attention reuses.

Every fp32 step is one of `arch.nonlinear`'s fixed sequences, every product an exact integer
partial followed by `sim.golden.epilogue`, and the linear layers are `sim.check.golden_output`,
so a backend that runs the block's program can match each operator bit for bit. One function
per operator; `block_golden` composes them and records each output under its name in `.ops`.

    cs_k, cs_q = rope_tables(positions, head_dim, theta)    # the host-written RoPE tables
    past, k_ref, v_ref = make_past(KVFormat("int4"), kv_heads, head_dim, L, seed=0)
    res = block_golden(shape, plans, norms, x, past, tile=16, lanes=16)
    res.out, res.ops["attn"], res.cache                     # cache: past + the new rows

Internal code: a bad argument raises `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from arch import nonlinear
from arch.kv import KVFormat
from arch.numerics import positive_int
from sim import golden
from sim.check import golden_output

ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# -- the host-written RoPE table -------------------------------------------------------------------

def softmax_scale(head_dim):
    """`c = float32(1/sqrt(head_dim))`: computed in float64, rounded once."""
    return np.float32(1.0 / np.sqrt(head_dim))


def rope_tables(positions, head_dim, theta, scaling=None):
    """The RoPE tables the host writes: `(cs_k, cs_q)`, each float32 `[T, head_dim]`.

    Row t of `cs_k` is `concat(cos_t, sin_t)` (head_dim/2 each) of `nonlinear.rope_table`;
    `cs_q = cs_k · c` elementwise in float32, `c = softmax_scale(head_dim)`: the softmax's
    scaling folded into the query's rotation."""
    cos, sin = nonlinear.rope_table(positions, head_dim, theta, scaling)
    cs_k = np.concatenate([cos, sin], axis=1)
    return cs_k, cs_k * softmax_scale(head_dim)


def _rope(x, cs):
    """`nonlinear.rope` of `x [T, heads, hd]` with a `rope_tables` table `[T, hd]`."""
    half = cs.shape[1] // 2
    return nonlinear.rope(x, cs[:, :half], cs[:, half:])


# -- the KV cache ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PastKV:
    """The KV cache of L tokens of one block, as the memory image stores it (`arch.kv`).

    Members: `fmt` (`arch.kv.KVFormat`); int-b formats: `k_codes [kvh, L, hd]` uint8,
    `k_scales [kvh, hd / group, L]` float16 (group = `fmt.k_group(hd)`), `v_codes [kvh, L, hd]`
    uint8, `v_scales [kvh, L]` float16; fp16: `k16`, `v16 [kvh, L, hd]` float16. Codes are
    symmetric around `zero` = 2^(b-1)."""
    fmt: KVFormat
    k_codes: np.ndarray = None
    k_scales: np.ndarray = None
    v_codes: np.ndarray = None
    v_scales: np.ndarray = None
    k16: np.ndarray = None
    v16: np.ndarray = None

    @property
    def _rows(self):
        return self.k16 if self.fmt.fp16 else self.k_codes

    @property
    def kv_heads(self):
        return self._rows.shape[0]

    @property
    def length(self):
        return self._rows.shape[1]

    @property
    def head_dim(self):
        return self._rows.shape[2]

    @property
    def zero(self):
        return 1 << (self.fmt.bits - 1)

    def dequant(self):
        """`(k, v)` float32 `[L, kvh, hd]`: the values the cache holds (`dequantize_kv` per
        head; fp16 widened), the past a float reference attends to."""
        if self.fmt.fp16:
            return (self.k16.astype(np.float32).transpose(1, 0, 2),
                    self.v16.astype(np.float32).transpose(1, 0, 2))
        hd, b = self.head_dim, self.fmt.bits
        if self.length == 0:
            z = np.zeros((0, self.kv_heads, hd), np.float32)
            return z, z
        k = [nonlinear.dequantize_kv(self.k_codes[h], self.k_scales[h].T, b,
                                     self.fmt.k_group(hd)) for h in range(self.kv_heads)]
        v = [nonlinear.dequantize_kv(self.v_codes[h], self.v_scales[h][:, None], b, hd)
             for h in range(self.kv_heads)]
        return np.stack(k, axis=1), np.stack(v, axis=1)


def kv_write(fmt, k, v):
    """The cache write (`vkvq`) of T new rows `k`, `v` `[T, kvh, hd]` float32 (k after RoPE): a
    `PastKV` of length T. int-b: `quantize_kv(k, b, fmt.k_group(hd))` and
    `quantize_kv(v, b, hd)` of every (token, head) row; fp16: `float16(k)`, `float16(v)`."""
    k, v = np.asarray(k, np.float32), np.asarray(v, np.float32)
    if k.ndim != 3 or v.shape != k.shape:
        raise ValueError(f"`k` and `v` must be [T, kv_heads, head_dim] alike, "
                         f"not {k.shape} and {v.shape}")
    t, kvh, hd = k.shape
    if t == 0:
        return empty_past(fmt, kvh, hd)
    if fmt.fp16:
        return PastKV(fmt, k16=k.astype(np.float16).transpose(1, 0, 2),
                      v16=v.astype(np.float16).transpose(1, 0, 2))
    b, g = fmt.bits, fmt.k_group(hd)
    kc, ks = nonlinear.quantize_kv(k.reshape(t * kvh, hd), b, g)
    vc, vs = nonlinear.quantize_kv(v.reshape(t * kvh, hd), b, hd)
    return PastKV(fmt, k_codes=kc.reshape(t, kvh, hd).transpose(1, 0, 2),
                  k_scales=ks.reshape(t, kvh, hd // g).transpose(1, 2, 0),
                  v_codes=vc.reshape(t, kvh, hd).transpose(1, 0, 2),
                  v_scales=vs.reshape(t, kvh).T)


def empty_past(fmt, kv_heads, head_dim):
    """A `PastKV` of no tokens."""
    if fmt.fp16:
        z = np.zeros((kv_heads, 0, head_dim), np.float16)
        return PastKV(fmt, k16=z, v16=z)
    z = np.zeros((kv_heads, 0, head_dim), np.uint8)
    return PastKV(fmt, k_codes=z, v_codes=z, v_scales=np.zeros((kv_heads, 0), np.float16),
                  k_scales=np.zeros((kv_heads, head_dim // fmt.k_group(head_dim), 0),
                                    np.float16))


# Token axis of each cache array: rows [kvh, L, hd], K's records [kvh, J, L], V's [kvh, L].
_TOKEN_AXIS = {"k_codes": 1, "k_scales": 2, "v_codes": 1, "v_scales": 1, "k16": 1, "v16": 1}


def append(past, new):
    """`past` followed by the rows of `new` (two `PastKV` of one format and head shape)."""
    if new.fmt != past.fmt:
        raise ValueError(f"`new` must have the cache's format {past.fmt}, not {new.fmt}")
    if (new.kv_heads, new.head_dim) != (past.kv_heads, past.head_dim):
        raise ValueError(f"`new` must have {past.kv_heads} heads of {past.head_dim}, not "
                         f"{new.kv_heads} of {new.head_dim}")
    parts = {name: np.concatenate([getattr(past, name), getattr(new, name)], axis=axis)
             for name, axis in _TOKEN_AXIS.items() if getattr(past, name) is not None}
    return PastKV(past.fmt, **parts)


#: make_past's keys: this many channels of each head are `KEY_OUTLIER_GAIN` times larger.
KEY_OUTLIER_CHANNELS = 2
KEY_OUTLIER_GAIN = 6.0


def make_past(fmt, kv_heads, head_dim, length, seed, scale=1.0):
    """A seeded cache of `length` tokens: `(past, k, v)`, `past` a `PastKV` and `k`, `v` the
    float32 `[L, kvh, hd]` values it holds (`past.dequant()`), for the float reference.

    The rows are drawn in float32: V normal with standard deviation `scale`, K the same with
    `KEY_OUTLIER_CHANNELS` channels per head `KEY_OUTLIER_GAIN` times larger (real keys have a
    few large channels, which set the scale of their group), then written by `kv_write`."""
    rng = np.random.default_rng(seed)
    shape = (length, kv_heads, head_dim)
    k = rng.standard_normal(shape) * scale
    v = rng.standard_normal(shape) * scale
    for h in range(kv_heads):
        chans = rng.choice(head_dim, min(KEY_OUTLIER_CHANNELS, head_dim), replace=False)
        k[:, h, chans] *= KEY_OUTLIER_GAIN
    past = kv_write(fmt, k.astype(np.float32), v.astype(np.float32))
    return (past, *past.dequant())


# -- attention ------------------------------------------------------------------------------------

def query_heads(h, heads, kv_heads):
    """The query heads of KV head `h`: GQA groups `G = heads / kv_heads` consecutive ones."""
    g = heads // kv_heads
    return np.arange(h * g, (h + 1) * g)


def causal_valid(past_len, t, g):
    """`valid [T·G]` of the rows `r = t·G + g`: the new token t (position L + t) attends to the
    cache's first L + t + 1 tokens, itself included."""
    return past_len + np.arange(t * g) // g + 1


class HeadOutputs(NamedTuple):
    """One KV head's attention. Members: `scores [R, ctx_pad]` (0 past the context), `probs
    [R, ctx_pad]` (the softmax; masked columns 0), `out [R, head_dim]`; R = T·G rows."""
    scores: np.ndarray
    probs: np.ndarray
    out: np.ndarray


def _int_scores(q_h, cache, h, lanes):
    """`epilogue(P, s_K, sq)`, P[r, c, j] = Σ_{k in group j} qq[r, k]·(codeK[c, k] − z)."""
    hd, group = cache.head_dim, cache.fmt.k_group(cache.head_dim)
    qq, sq = nonlinear.quantize_rows(q_h, lanes)
    w = cache.k_codes[h].astype(np.float64) - cache.zero                 # [ctx, hd]
    qf = qq.astype(np.float64)
    # float64 products of integers below 2^53 are exact in any order (|P| < 127·128·hd)
    p = np.stack([qf[:, j:j + group] @ w[:, j:j + group].T for j in range(0, hd, group)],
                 axis=-1)
    return golden.epilogue(p.astype(np.int64), cache.k_scales[h].T, sq)


def _int_values(p, cache, h, tile, lanes):
    """`colscale` by V's token scales, `quantize_rows`, then `epilogue(P', 1, sp)` with
    P'[r, d, j] = Σ_{c in tile j} pq[r, c]·(codeV[c, d] − z)."""
    ctx, ctx_pad = cache.length, p.shape[1]
    s_v = np.zeros(ctx_pad, np.float32)
    s_v[:ctx] = cache.v_scales[h]
    pq, sp = nonlinear.quantize_rows(p * s_v[None, :], lanes)
    w = np.zeros((ctx_pad, cache.head_dim))
    w[:ctx] = cache.v_codes[h].astype(np.float64) - cache.zero            # padding: code z
    nt, rows = ctx_pad // tile, p.shape[0]
    a = np.ascontiguousarray(pq.reshape(rows, nt, tile).transpose(1, 0, 2), np.float64)
    pv = (a @ w.reshape(nt, tile, -1)).transpose(1, 2, 0)                 # [R, hd, nt], exact
    return golden.epilogue(pv.astype(np.int64), np.ones((cache.head_dim, nt), np.float32), sp)


def _fp16_scores(q_h, cache, h, lanes):
    """`S[r, c] = lane_sum(q_h[r]·float32(K16[c]), lanes)` (`vmv`)."""
    k = cache.k16[h].astype(np.float32)
    return nonlinear.lane_sum(q_h[:, None, :] * k[None, :, :], lanes)


def _fp16_values(p, cache, h, tile, lanes):
    """`out = Σ_j lane_sum(p[r, tile j]·float32(V16[tile j, d]))`, tiles in order: the first
    tile's sum is the result, each later one is added to it (`vmv` with `accumulate`)."""
    ctx, ctx_pad = cache.length, p.shape[1]
    v = np.zeros((ctx_pad, cache.head_dim), np.float32)
    v[:ctx] = cache.v16[h]
    nt, rows = ctx_pad // tile, p.shape[0]
    vt = np.ascontiguousarray(v.reshape(nt, tile, -1).transpose(0, 2, 1))  # [nt, hd, tile]
    part = nonlinear.lane_sum(p.reshape(rows, nt, 1, tile) * vt[None], lanes)  # [R, nt, hd]
    out = part[:, 0]
    for j in range(1, nt):
        out = out + part[:, j]
    return out


def attention_head(q_h, cache, h, t, g, tile, lanes):
    """The attention of KV head `h` (docs/block.md step 5) for its rows `r = t·G + g`.

    `q_h [T·G, hd]` float32: the rotated queries (softmax scale folded in) of the head's G
    query heads, row `t·G + g` = token t, query head `h·G + g`; `cache` the `PastKV` with the
    T new rows already appended (L_total = L + T tokens); `tile` tokens per k-step of the
    value product (the context is padded to a whole number of tiles, padded columns masked);
    `lanes` the vector unit's. Returns `HeadOutputs`."""
    q_h = np.asarray(q_h, np.float32)
    ctx = cache.length
    if q_h.shape != (t * g, cache.head_dim):
        raise ValueError(f"`q_h` must be [T·G, head_dim] = {(t * g, cache.head_dim)}, "
                         f"not {q_h.shape}")
    if not 1 <= t <= ctx:
        raise ValueError(f"`t` must be in [1, {ctx}] (the new rows are in the cache), not {t}")
    ctx_pad = -(-ctx // positive_int("tile", tile)) * tile
    int_path = not cache.fmt.fp16
    s = (_int_scores if int_path else _fp16_scores)(q_h, cache, h, lanes)
    scores = np.zeros((t * g, ctx_pad), np.float32)
    scores[:, :ctx] = s
    probs = nonlinear.softmax(scores, causal_valid(ctx - t, t, g), lanes)
    out = (_int_values if int_path else _fp16_values)(probs, cache, h, tile, lanes)
    return HeadOutputs(scores, probs, out)


def attention(q, cache, t, heads, tile, lanes):
    """All heads: `q [T, heads, hd]` rotated queries, `cache` with the new rows appended.
    Returns `(attn [T, heads·hd], scores, probs)`, the last two `[kvh, T·G, ctx_pad]`."""
    kvh, hd = cache.kv_heads, cache.head_dim
    g = heads // kvh
    attn = np.zeros((t, heads, hd), np.float32)
    scores, probs = [], []
    for h in range(kvh):
        qh = query_heads(h, heads, kvh)
        res = attention_head(q[:, qh].reshape(t * g, hd), cache, h, t, g, tile, lanes)
        attn[:, qh] = res.out.reshape(t, g, hd)
        scores.append(res.scores)
        probs.append(res.probs)
    return attn.reshape(t, heads * hd), np.stack(scores), np.stack(probs)


# -- the block ------------------------------------------------------------------------------------

class BlockResult(NamedTuple):
    """Members: `out [T, hidden]` float32; `ops` {operator: its output} (see `block_golden`);
    `cache` the `PastKV` after the write (past + the T new rows)."""
    out: np.ndarray
    ops: dict
    cache: PastKV


def linear(plan, a, lanes):
    """A linear layer on float32 rows `a`: `quantize_rows` (the on-chip `vquant`), then the
    layer's golden output. Returns `(y, (aq, sa))`."""
    aq, sa = nonlinear.quantize_rows(a, lanes)
    return golden_output(plan, aq, sa), (aq, sa)


def _check(shape, plans, x, past):
    hd = shape.head_dim
    want = {"q_proj": (shape.heads * hd, shape.hidden), "k_proj": (shape.kv_heads * hd,
            shape.hidden), "v_proj": (shape.kv_heads * hd, shape.hidden),
            "o_proj": (shape.hidden, shape.heads * hd),
            "gate_proj": (shape.intermediate, shape.hidden),
            "up_proj": (shape.intermediate, shape.hidden),
            "down_proj": (shape.hidden, shape.intermediate)}
    for role, nk in want.items():
        if role not in plans:
            raise ValueError(f"`plans` must have a {role!r} plan, not lack it")
        if (plans[role].n, plans[role].k) != nk:
            raise ValueError(f"`plans[{role!r}]` must be [N, K] = {nk}, "
                             f"not {(plans[role].n, plans[role].k)}")
    if shape.heads % shape.kv_heads:
        raise ValueError(f"`heads` must be a multiple of kv_heads ({shape.kv_heads}), "
                         f"not {shape.heads}")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] != shape.hidden:
        raise ValueError(f"`x` must be [T >= 1, {shape.hidden}], not {x.shape}")
    if (past.kv_heads, past.head_dim) != (shape.kv_heads, hd):
        raise ValueError(f"`past` must have {shape.kv_heads} heads of {hd}, "
                         f"not {past.kv_heads} of {past.head_dim}")


def block_golden(shape, plans, norms, x, past, tile, lanes, kv_fmt=None):
    """The decoder block on T new tokens (docs/block.md, "What the block computes").

    `shape`: any object with `hidden`, `intermediate`, `heads`, `kv_heads`, `head_dim`,
    `rope_theta`, `rope_scaling`, `norm_eps`; `plans` {role: `compiler.plan.Plan`} for the seven
    `ROLES`; `norms` `(w_attn_norm, w_mlp_norm)` float32 `[hidden]`; `x [T, hidden]` float32
    at positions L .. L+T-1; `past` the `PastKV` of the L earlier tokens, or None for L = 0
    (then `kv_fmt` names the format; given with `past`, it must be `past.fmt`); `tile` the
    value product's token tile; `lanes` `timing.vector_lanes`.

    Returns `BlockResult`. `ops`: "attn_norm" `(xq, sx)`, "q", "k", "v" (linear outputs
    `[T, heads·hd]` / `[T, kvh·hd]`, before RoPE), "q_rope", "k_rope" (same shapes),
    "kv_new" (a `PastKV` of the T new rows as stored), "scores", "probs" (`[kvh, T·G,
    ctx_pad]`), "attn" `[T, heads·hd]`, "attn_quant" `(aq, sa)`, "o", "h", "mlp_norm"
    `(mq, sm)`, "gate", "up", "act", "act_quant" `(actq, sact)`, "down", "out"."""
    x = np.asarray(x, np.float32)
    if past is None:
        if kv_fmt is None:
            raise ValueError("`kv_fmt` must be given when `past` is None, not None")
        past = empty_past(kv_fmt, shape.kv_heads, shape.head_dim)
    elif kv_fmt is not None and kv_fmt != past.fmt:
        raise ValueError(f"`kv_fmt` must be the cache's format {past.fmt}, not {kv_fmt}")
    _check(shape, plans, x, past)
    t, hd, eps = x.shape[0], shape.head_dim, np.float32(shape.norm_eps)
    w_attn, w_mlp = (np.asarray(w, np.float32) for w in norms)
    ops = {}

    a = nonlinear.rmsnorm(x, w_attn, eps, lanes)
    ops["q"], ops["attn_norm"] = linear(plans["q_proj"], a, lanes)
    xq, sx = ops["attn_norm"]
    ops["k"] = golden_output(plans["k_proj"], xq, sx)
    ops["v"] = golden_output(plans["v_proj"], xq, sx)

    positions = np.arange(past.length, past.length + t)
    cs_k, cs_q = rope_tables(positions, hd, shape.rope_theta, shape.rope_scaling)
    q = _rope(ops["q"].reshape(t, shape.heads, hd), cs_q)
    k = _rope(ops["k"].reshape(t, shape.kv_heads, hd), cs_k)
    ops["q_rope"], ops["k_rope"] = q.reshape(t, -1), k.reshape(t, -1)

    ops["kv_new"] = kv_write(past.fmt, k, ops["v"].reshape(t, shape.kv_heads, hd))
    cache = append(past, ops["kv_new"])
    ops["attn"], ops["scores"], ops["probs"] = attention(q, cache, t, shape.heads, tile, lanes)

    ops["o"], ops["attn_quant"] = linear(plans["o_proj"], ops["attn"], lanes)
    ops["h"] = x + ops["o"]
    m = nonlinear.rmsnorm(ops["h"], w_mlp, eps, lanes)
    ops["gate"], ops["mlp_norm"] = linear(plans["gate_proj"], m, lanes)
    ops["up"] = golden_output(plans["up_proj"], *ops["mlp_norm"])
    ops["act"] = nonlinear.silu_mul(ops["gate"], ops["up"])
    ops["down"], ops["act_quant"] = linear(plans["down_proj"], ops["act"], lanes)
    ops["out"] = ops["h"] + ops["down"]
    return BlockResult(ops["out"], ops, cache)
