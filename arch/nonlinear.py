"""The vector unit's nonlinear functions, each a fixed sequence of float32 operations.

The fp32 vector unit runs a whole LLaMA decoder block on chip: RMSNorm, RoPE, softmax, SiLU, the
residual adds, and the int8 and KV-cache quantization of rows. Each function here is the golden
definition of one of them, written as IEEE float32 multiplies, adds, subtracts, compares, min/max
and integer operations on the exponent field, every one rounded to nearest even on its own (no
fused multiply-add, no library transcendental, no division). The golden model, the executor, the
cycle model and the RTL compute the same sequence, so they agree bit for bit. numpy ufuncs on
float32 arrays with float32 constants are exactly these operations, vectorised.

Host data is the exception: `rope_table` (cos/sin written to DRAM) and the constants `1/n`,
`1/127`, `1/qmax` are computed on the host in float64 and rounded to float32 once.

The operation sequences, constants (as bit patterns), domains and measured errors are listed in
docs/numerics.md section 9.

Ref: Cody & Waite, Software Manual for the Elementary Functions (1980) ch. 6 (exp's range
reduction); Lomont, Fast Inverse Square Root (2003) (0x5F375A86); HF transformers
`modeling_llama` and `modeling_rope_utils` (rotate-half RoPE, llama3 and linear rope scaling).

This is internal code: a bad argument is a bug in the caller, so it raises `ValueError`.
"""

from __future__ import annotations

import numpy as np

from arch.numerics import check_shape, in_range, int_array, one_of, positive_int


def _f32(bits):
    """The float32 with IEEE bit pattern `bits`."""
    return np.uint32(bits).view(np.float32)


F32_MIN_NORMAL = _f32(0x00800000)  # 2^-126, the least normal float32

# exp: x = n*ln2 + r, n = rint(x*log2(e)), ln2 = LN2_HI + LN2_LO (Cody-Waite). LN2_HI has 15
# significant bits, so n*LN2_HI is exact for |n| <= 2^9 (|n| <= 128 here).
EXP_LOG2E = _f32(0x3FB8AA3B)  # 1.44269502
EXP_LN2_HI = _f32(0x3F317200)  # 0.693145752
EXP_LN2_LO = _f32(0x35BFBE8E)  # 1.42860677e-06
# e^r on |r| <= ln2/2, Horner from the highest degree: a near-minimax fit of the relative error
# with c0 = c1 = 1, each coefficient rounded to float32 before the next ones were refitted
# (max relative error 3.1e-9 in exact arithmetic, 0.03 ulp).
EXP_POLY = tuple(_f32(b) for b in (0x3AB52597, 0x3C091CC9, 0x3D2AAC59, 0x3E2AAA49, 0x3EFFFFFE,
                                   0x3F800000, 0x3F800000))
EXP_X_MIN = _f32(0xC2AEAC4F)  # -87.33654: the least float32 with e^x >= 2^-126; below, 0
EXP_X_MAX = _f32(0x42B17217)  # 88.72283: the greatest float32 with e^x rounding to a finite float32

RECIP_MAGIC = np.uint32(0x7EF311C7)  # the initial estimate's bits: RECIP_MAGIC - bits(|x|)
RECIP_STEPS = 3
RECIP_X_MAX_BITS = np.uint32(0x7E800000)  # |x| = 2^126; 1/x above it is subnormal: flushed to 0

RSQRT_MAGIC = np.uint32(0x5F375A86)  # the initial estimate's bits: RSQRT_MAGIC - (bits(x) >> 1)
RSQRT_STEPS = 3

SILU_EXP_MAX = np.float32(88.0)  # exp(-g) is clamped here: e^88 < FLT_MAX keeps 1 + e^-g finite
SOFTMAX_D_MIN = np.float32(-88.0)  # s - m is clamped here: only an overflow to -inf reaches it

XQ_MAX = 127
KV_FORMATS = {"fp16": None, "int8": 8, "int4": 4, "int2": 2}
FP16_MIN_NORMAL = np.float16(2.0 ** -14)  # the least KV scale: smaller ones would lose precision

_ONE, _HALF = np.float32(1.0), np.float32(0.5)


# -- argument checks ------------------------------------------------------------------------------

def _float32(x):
    return np.asarray(x, dtype=np.float32)


def _finite(what, x):
    x = _float32(x)
    if not np.isfinite(x).all():
        raise ValueError(f"`{what}` must be finite, not {x[~np.isfinite(x)].flat[0]!s}")
    return x


def _normal(what, x, positive=False):
    """`x` as float32, checked finite and normal (|x| >= 2^-126), and positive if asked."""
    x = _finite(what, x)
    bad = np.abs(x) < F32_MIN_NORMAL
    if positive:
        bad |= x < 0
    if bad.any():
        rule = "positive and normal (x >= 2^-126)" if positive else "normal (|x| >= 2^-126)"
        raise ValueError(f"`{what}` must be {rule}, not {x[bad].flat[0]!s}")
    return x


def _bits(x):
    return x.view(np.uint32)


def _rows(what, x):
    x = _finite(what, x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"`{what}` must be 2-D [rows, n] with n >= 1, not shape {x.shape}")
    return x


# -- exp, reciprocal, rsqrt -----------------------------------------------------------------------

def exp(x):
    """e^x in float32, within 1 ulp of the correctly rounded result.

    `x` float32, finite (else `ValueError`). Results below 2^-126 are flushed: `x < EXP_X_MIN`
    (-87.33654) returns +0.0; `x > EXP_X_MAX` (88.72283) returns +inf. In order, in float32:
    `n = rint(x·LOG2E)`, `r = (x − n·LN2_HI) − n·LN2_LO` (the first difference is exact),
    `p = (…((c6·r + c5)·r + c4)…)·r + c0`, and the result's bits are `bits(p) + (n << 23)`
    (2^n scaled into the exponent field; exact, as the result is normal).
    """
    x = _finite("x", x)
    xc = np.minimum(np.maximum(x, EXP_X_MIN), EXP_X_MAX)
    n = np.rint(xc * EXP_LOG2E)
    r = (xc - n * EXP_LN2_HI) - n * EXP_LN2_LO
    p = EXP_POLY[0]
    for c in EXP_POLY[1:]:
        p = p * r + c
    y = (_bits(np.asarray(p, np.float32)) + (n.astype(np.int32) << 23).view(np.uint32))
    y = y.view(np.float32)
    y = np.where(x < EXP_X_MIN, np.float32(0.0), y)
    return np.where(x > EXP_X_MAX, np.float32(np.inf), y).astype(np.float32)


def reciprocal(x):
    """1/x in float32, within 1 ulp of the correctly rounded result.

    `x` float32, finite and normal, either sign (`ValueError` for zero, subnormal, inf, nan).
    For |x| > 2^126, where 1/x is subnormal, the result is ±0.0. In order: the estimate's bits
    are `(RECIP_MAGIC − bits(|x|)) | sign(x)`, then `RECIP_STEPS` Newton steps written as a
    correction, `y = y + y·(1 − x·y)`, each operation rounded to float32 (`1 − x·y` is exact).
    The correction form rounds only a small term last; the textbook `y·(2 − x·y)` measures
    2 ulp with 3 steps and 1.5 ulp with 4.
    """
    x = _normal("x", x)
    return _reciprocal(x)


def _reciprocal(x):
    """`reciprocal` without the domain check, for callers that have checked or clamped."""
    mag = _bits(x) & np.uint32(0x7FFFFFFF)
    sign = _bits(x) & np.uint32(0x80000000)
    y = ((RECIP_MAGIC - np.minimum(mag, RECIP_X_MAX_BITS)) | sign).view(np.float32)
    for _ in range(RECIP_STEPS):
        y = y + y * (_ONE - x * y)
    return np.where(mag > RECIP_X_MAX_BITS, sign.view(np.float32), y).astype(np.float32)


def rsqrt(x):
    """1/sqrt(x) in float32, within 1 ulp of the correctly rounded result.

    `x` float32, finite, positive and normal (`ValueError` otherwise). In order: the estimate's
    bits are `RSQRT_MAGIC − (bits(x) >> 1)`, then `RSQRT_STEPS` Newton steps written as a
    correction, `t = (x·y)·y; y = y + (0.5·y)·(1 − t)`, each operation rounded to float32
    (`0.5·y` and `1 − t` are exact). The textbook `y·(1.5 − (0.5·x)·y·y)` measures 2.2 ulp.
    """
    x = _normal("x", x, positive=True)
    return _rsqrt(x)


def _rsqrt(x):
    y = (RSQRT_MAGIC - (_bits(x) >> np.uint32(1))).view(np.float32)
    for _ in range(RSQRT_STEPS):
        t = (x * y) * y
        y = y + (_HALF * y) * (_ONE - t)
    return np.asarray(y, np.float32)


# -- reductions -----------------------------------------------------------------------------------

def lane_sum(x, lanes):
    """The vector unit's sum over the last axis of `x`, with `lanes` float32 accumulators.

    Element i goes to accumulator `i % lanes`, which adds its elements in increasing i starting
    from +0.0 (`acc[j] = ((0 + x[j]) + x[j + lanes]) + …`); then the accumulators are folded left
    to right, `((acc[0] + acc[1]) + acc[2]) + …`. The last chunk is zero-padded; adding +0.0 is
    exact (and an accumulator is never −0.0), so the padding is skipped. Returns float32 of
    shape `x.shape[:-1]`; an empty last axis sums to +0.0.
    """
    x = _float32(x)
    lanes = positive_int("lanes", lanes)
    if x.ndim < 1:
        raise ValueError(f"`x` must have at least one axis, not shape {x.shape}")
    acc = np.zeros(x.shape[:-1] + (lanes,), np.float32)
    for start in range(0, x.shape[-1], lanes):
        chunk = x[..., start : start + lanes]
        acc[..., : chunk.shape[-1]] += chunk
    total = acc[..., 0]
    for j in range(1, lanes):
        total = total + acc[..., j]
    return total


def lane_max(x):
    """The max over the last axis (order-independent, so the lanes do not matter); n >= 1."""
    x = _float32(x)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"`x` must have a non-empty last axis, not shape {x.shape}")
    return x.max(axis=-1)


# -- the decoder block's functions ----------------------------------------------------------------

def silu_mul(g, u):
    """The gated MLP's `silu(g) · u`, elementwise over same-shaped float32 `g`, `u`.

    In order: `e = exp(min(−g, 88.0))`, `d = 1 + e`, `s = g · reciprocal(d)`, `out = s · u`.
    The clamp keeps `d` finite (e^88 < FLT_MAX); where `d > 2^126` (g < −87.34) `reciprocal`
    flushes to 0 and `out` is ±0.0, against a true |silu(g)| < 1.1e-36. Total for finite `g`
    (else `ValueError`).
    """
    g = _finite("g", g)
    u = _float32(u)
    check_shape("u", u, g.shape)
    e = exp(np.minimum(-g, SILU_EXP_MAX))
    return (g * _reciprocal(_ONE + e)) * u


def rmsnorm(x, w, eps, lanes):
    """LLaMA's RMSNorm of each row of `x [rows, n]` with weight `w [n]`.

    In order: `ss = lane_sum(x·x, lanes)`, `mean = ss · float32(1/n)` (the host rounds 1/n to
    float32 once), `r = rsqrt(mean + float32(eps))`, `out = (x · r) · w`. `eps` must be positive
    with a normal float32; a row whose `mean + eps` overflows raises `ValueError`.
    """
    x = _rows("x", x)
    w = _float32(w)
    check_shape("w", w, x.shape[1:])
    eps32 = np.float32(eps)
    if not (np.isfinite(eps32) and eps32 >= F32_MIN_NORMAL):
        raise ValueError(f"`eps` must be positive and normal in float32 (>= 2^-126), not {eps!r}")
    with np.errstate(over="ignore"):  # an overflowing row is refused just below
        mean = lane_sum(x * x, lanes) * np.float32(1.0 / x.shape[1])
        den = mean + eps32
    if not np.isfinite(den).all():
        raise ValueError("`x` must have a finite mean square per row, not inf")
    r = _rsqrt(den)
    return (x * r[:, None]) * w


def rope(x, cos, sin):
    """Rotate-half RoPE (HF transformers' LLaMA `rotate_half`), float32.

    `x [rows, hd]` or `[rows, heads, hd]` (hd even); `cos`, `sin [rows, hd/2]` from `rope_table`.
    With `x1, x2` the first and second halves of the head dimension and `c, s` the row's tables:
    `out[:hd/2] = x1·c − x2·s`, `out[hd/2:] = x2·c + x1·s`, each product rounded, then the add.
    This equals HF's `x·cos + rotate_half(x)·sin` bit for bit.
    """
    x = _float32(x)
    if x.ndim not in (2, 3) or x.shape[-1] % 2:
        raise ValueError(f"`x` must be [rows, hd] or [rows, heads, hd] with hd even, "
                         f"not shape {x.shape}")
    half = x.shape[-1] // 2
    c, s = _float32(cos), _float32(sin)
    check_shape("cos", c, (x.shape[0], half))
    check_shape("sin", s, (x.shape[0], half))
    if x.ndim == 3:
        c, s = c[:, None, :], s[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def rope_table(positions, head_dim, theta, scaling=None):
    """The host's RoPE tables: `(cos, sin)`, float32 `[len(positions), head_dim/2]`.

    Computed in float64 and rounded to float32 once. `inv_freq[i] = 1 / theta^(2i/head_dim)`, as
    HF's `LlamaRotaryEmbedding` computes it, then rescaled by `scaling`: None (or
    `{"rope_type": "default"}`), `{"rope_type": "linear", "factor"}` (inv_freq / factor), or HF's
    `{"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"}`. The angle is `position · inv_freq[i]`. Other rope types
    raise `ValueError`.
    """
    positions = int_array("positions", positions, 1)
    head_dim = positive_int("head_dim", head_dim)
    if head_dim % 2:
        raise ValueError(f"`head_dim` must be even, not {head_dim}")
    if not (np.isfinite(theta) and theta > 1):
        raise ValueError(f"`theta` must be a finite number above 1, not {theta!r}")
    inv_freq = 1.0 / float(theta) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    inv_freq = _scaled_inv_freq(inv_freq, scaling)
    angle = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


_ROPE_KEYS = {"default": (), "linear": ("factor",),
              "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings")}


def _scaled_inv_freq(inv_freq, scaling):
    """HF's `_compute_linear_scaling_rope_parameters` / `_compute_llama3_parameters`, in float64."""
    if scaling is None:
        return inv_freq
    if not isinstance(scaling, dict):
        raise ValueError(f"`scaling` must be None or a dict, not {scaling!r}")
    kind = scaling.get("rope_type")
    one_of("scaling['rope_type']", kind, tuple(_ROPE_KEYS))
    missing = [k for k in _ROPE_KEYS[kind] if k not in scaling]
    if missing:
        raise ValueError(f"`scaling` must have {', '.join(_ROPE_KEYS[kind])} for {kind}, "
                         f"not missing {missing[0]}")
    if kind == "default":
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * np.pi / inv_freq
    # long wavelengths are divided by `factor`, short ones kept, the band between interpolated
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled)


def softmax(s, valid, lanes):
    """Masked softmax of each row of the (already scaled) scores `s [rows, cols]`, float32.

    Columns `>= valid[r]` are masked (the causal mask and the unused tail); `1 <= valid[r] <=
    cols`, and only valid scores must be finite. In order: `m = max(s[r, :valid[r]])`,
    `d = max(s − m, −88.0)` (the clamp only catches an overflow to −inf), `e = exp(d)` on valid
    columns and +0.0 on masked ones, `z = lane_sum(e, lanes)` (>= 1), `out = e · reciprocal(z)`.
    Masked columns are exactly 0.
    """
    s = _float32(s)
    if s.ndim != 2:
        raise ValueError(f"`s` must be 2-D [rows, cols], not shape {s.shape}")
    valid = int_array("valid", valid, 1)
    check_shape("valid", valid, s.shape[:1])
    if valid.size and (valid.min() < 1 or valid.max() > s.shape[1]):
        bad = valid[(valid < 1) | (valid > s.shape[1])][0]
        raise ValueError(f"`valid` must be in [1, {s.shape[1]}], not {bad}")
    mask = np.arange(s.shape[1])[None, :] < valid[:, None]
    _finite("s", s[mask])
    m = np.where(mask, s, np.float32(-np.inf)).max(axis=1, initial=np.float32(-np.inf))
    with np.errstate(over="ignore"):
        d = np.maximum(np.where(mask, s - m[:, None], np.float32(0.0)), SOFTMAX_D_MIN)
    e = np.where(mask, exp(d), np.float32(0.0))
    return e * _reciprocal(lane_sum(e, lanes))[:, None]


# -- on-chip quantization -------------------------------------------------------------------------

def quantize_rows(x, lanes):
    """The vector unit's symmetric int8 quantization of each row of `x [rows, n]` (float32, finite).

    `amax = max|x_row|`, `sx = amax · float32(1/127)` (the constant rounded once), `inv =
    reciprocal(sx)`, `xq = clip(rint(x · inv), −127, 127)`. A row whose `sx` is below 2^-126
    (a zero row, or max|x| < 1.5e-36) gets `sx = 1.0` and codes 0. Returns `(xq int8 [rows, n],
    sx float32 [rows])`. `lanes` is the reduction's width; the max does not depend on it.

    This is not `arch.numerics.quantize_activations`, the host's version: that one divides
    (`amax / 127`, `x / sx`), this one multiplies by rounded reciprocals, so a scale can differ by
    an ulp and a code by one where `x / sx` is near a half.
    """
    x = _rows("x", x)
    positive_int("lanes", lanes)
    sx = lane_max(np.abs(x)) * np.float32(1.0 / XQ_MAX)
    sx = np.where(sx < F32_MIN_NORMAL, _ONE, sx).astype(np.float32)
    xq = np.clip(np.rint(x * _reciprocal(sx)[:, None]), -XQ_MAX, XQ_MAX)
    return xq.astype(np.int8), sx


def _kv_bits(bits):
    one_of("bits", bits, sorted(b for b in KV_FORMATS.values() if b))
    return bits, 2 ** (bits - 1) - 1, 2 ** (bits - 1)  # bits, qmax, the codes' zero


def _kv_groups(what, shape, group):
    group = positive_int("group", group)
    if shape[1] % group:
        raise ValueError(f"`group` must divide {what}'s {shape[1]} columns, not {group}")
    return group


def quantize_kv(x, bits, group):
    """The KV cache's symmetric quantization with one fp16 scale per row and group of columns.

    `x [rows, n]` float32 finite, `n % group == 0`, `bits` in (2, 4, 8); `qmax = 2^(bits−1) − 1`.
    Per group: `amax = max|x|`, `s = float16(amax · float32(1/qmax))`; a zero group gets 1.0, a
    scale below the least normal fp16 (2^-14, so also one that would underflow to 0) is raised
    to 2^-14 (a subnormal scale would round too coarsely to bound the codes), and one that
    overflows fp16 raises `ValueError`. Then `inv = reciprocal(float32(s))` and the code is
    `clip(rint(x · inv), −qmax, qmax) + 2^(bits−1)`, unsigned. Returns `(codes uint8 [rows, n],
    scales float16 [rows, n/group])`.
    """
    x = _rows("x", x)
    bits, qmax, zero = _kv_bits(bits)
    group = _kv_groups("x", x.shape, group)
    xg = x.reshape(x.shape[0], -1, group)
    amax = lane_max(np.abs(xg))
    s32 = amax * np.float32(1.0 / qmax)
    with np.errstate(over="ignore"):
        s16 = s32.astype(np.float16)
    if np.isinf(s16).any():
        raise ValueError(f"`x` must have max|x| per group below {qmax * 65520} for an fp16 "
                         f"scale at {bits} bits, not {amax[np.isinf(s16)][0]!s}")
    s16 = np.where(s16 < FP16_MIN_NORMAL, FP16_MIN_NORMAL, s16)
    s16 = np.where(amax == 0, np.float16(1.0), s16).astype(np.float16)
    inv = _reciprocal(s16.astype(np.float32))
    q = np.clip(np.rint(xg * inv[..., None]), -qmax, qmax) + zero
    return q.reshape(x.shape).astype(np.uint8), s16


def dequantize_kv(codes, scales, bits, group):
    """`(codes − 2^(bits−1)) · float32(scale)` in float32 (one rounding), `[rows, n]`.

    `codes [rows, n]` integers in [0, 2^bits − 1], `scales [rows, n/group]` fp16 (other float
    dtypes are rounded to fp16 first), as `quantize_kv` returns them.
    """
    codes = int_array("codes", codes, 2)
    bits, _, zero = _kv_bits(bits)
    group = _kv_groups("codes", codes.shape, group)
    in_range("codes", codes, 0, 2 * zero - 1)
    scales = np.asarray(scales).astype(np.float16).astype(np.float32)
    check_shape("scales", scales, (codes.shape[0], codes.shape[1] // group))
    q = (codes - zero).astype(np.float32).reshape(codes.shape[0], -1, group)
    return (q * scales[..., None]).reshape(codes.shape)


def kv_bytes_per_element(fmt, group=None):
    """Bytes per cached K or V element: fp16 2; int<b> `b/8 + 2/group` (the fp16 group scale)."""
    one_of("fmt", fmt, tuple(KV_FORMATS))
    bits = KV_FORMATS[fmt]
    if bits is None:
        return 2.0
    return bits / 8 + 2 / positive_int("group", group)
