"""The vector unit's nonlinear functions (`arch.nonlinear`, docs/numerics.md section 9), each
checked against an independent float64 reference, never against itself: exp, reciprocal and
rsqrt in float32 ulps over dense sweeps (whole binades of mantissas, seeded samples, the
corners); lane_sum against a hand-written loop of float32 adds; the decoder block's functions
against float64 numpy and against HF transformers' LLaMA; the on-chip quantizers by their
round-trip bounds, with a mutation that shows the bound can fail."""

import numpy as np
import pytest

from arch import nonlinear as nl
from arch.numerics import quantize_activations

U = 2.0 ** -24  # float32 unit roundoff
MIN_NORMAL = 2.0 ** -126
FLT_MAX = float(np.finfo(np.float32).max)

# The measured maxima over every float32 of each domain (docs/numerics.md section 9): the error
# in ulps of the exact result's binade, and how many float32 steps the result lies from the
# correctly rounded one. A sweep below is a subset of those, so it must stay within them.
EXP_ULP, RECIP_ULP, RSQRT_ULP = 1.17, 1.25, 1.22
MAX_STEPS = 1


def floats(bits):
    return np.asarray(bits, np.uint64).astype(np.uint32).view(np.float32)


def binade(exponent, sign=1):
    """Every float32 with unbiased exponent `exponent` (all 2^23 mantissas), of the given sign."""
    bits = np.arange(1 << 23, dtype=np.uint32) | np.uint32((exponent + 127) << 23)
    return floats(bits) if sign > 0 else -floats(bits)


def ulp_error(got, exact):
    """(max error in ulps of the exact value's binade, max float32 steps from the rounded one)."""
    got, exact = np.asarray(got, np.float32), np.asarray(exact, np.float64)
    assert np.isfinite(got).all() and (got != 0).all()
    _, e = np.frexp(np.abs(exact))
    err = np.abs(got.astype(np.float64) - exact) / np.ldexp(1.0, e - 24)
    rounded = exact.astype(np.float32)
    assert (np.signbit(got) == np.signbit(rounded)).all()
    steps = np.abs(got.view(np.int32).astype(np.int64) - rounded.view(np.int32))
    return float(err.max()), int(steps.max())


def assert_ulps(got, exact, bound):
    err, steps = ulp_error(got, exact)
    assert err <= bound and steps <= MAX_STEPS, (err, steps)
    return err


# -- exp ------------------------------------------------------------------------------------------
def test_exp_cutoffs_are_the_last_normal_and_the_last_finite_result():
    below = np.nextafter(nl.EXP_X_MIN, np.float32(-np.inf))
    above = np.nextafter(nl.EXP_X_MAX, np.float32(np.inf))
    assert np.exp(np.float64(nl.EXP_X_MIN)) >= MIN_NORMAL > np.exp(np.float64(below))
    half_ulp_past_max = FLT_MAX + 2.0 ** (127 - 24)
    assert np.exp(np.float64(nl.EXP_X_MAX)) < half_ulp_past_max <= np.exp(np.float64(above))
    got = nl.exp(np.array([nl.EXP_X_MIN, nl.EXP_X_MAX, below, -1e4, -FLT_MAX, above, 1e4,
                           FLT_MAX], np.float32))
    assert got[0] >= MIN_NORMAL and np.isfinite(got[1])
    assert (got[2:5] == 0).all() and not np.signbit(got[2:5]).any()
    assert np.isposinf(got[5:]).all()


def test_exp_corners():
    ln2 = np.log(2.0)
    # every switch of n = rint(x / ln2): the float32 neighbours of (k + 1/2)·ln2
    mid = ((np.arange(-126, 128) + 0.5) * ln2).astype(np.float32)
    mid = np.concatenate([mid, np.nextafter(mid, np.float32(-np.inf)),
                          np.nextafter(mid, np.float32(np.inf))])
    tiny = floats([1, 0x00800000, 0x0DA24260, 0x33800000, 0x34000000])
    x = np.concatenate([mid, np.arange(-87, 89, dtype=np.float32), tiny, -tiny,
                        [0.0, -0.0, ln2 / 2, -ln2 / 2, nl.EXP_X_MIN, nl.EXP_X_MAX]])
    x = x.astype(np.float32)
    x = x[(x >= nl.EXP_X_MIN) & (x <= nl.EXP_X_MAX)]
    assert_ulps(nl.exp(x), np.exp(x.astype(np.float64)), EXP_ULP)
    assert nl.exp(np.float32(0)) == 1 and nl.exp(np.float32(-0.0)) == 1
    assert (nl.exp(np.concatenate([tiny[:3], -tiny[:3]])) == 1).all()  # |x| < 2^-25


def test_exp_dense_sweep():
    rng = np.random.default_rng(2024)
    uniform = rng.uniform(nl.EXP_X_MIN, nl.EXP_X_MAX, 1 << 22).astype(np.float32)
    uniform = np.clip(uniform, nl.EXP_X_MIN, nl.EXP_X_MAX)
    # every 1024th bit pattern of each sign: dense near 0, where uniform sampling is sparse
    hi = int(nl.EXP_X_MAX.view(np.uint32))
    lo = int(nl.EXP_X_MIN.view(np.uint32)) & 0x7FFFFFFF
    patterns = np.concatenate([floats(np.arange(0, hi + 1, 1024)),
                               -floats(np.arange(0, lo + 1, 1024))])
    for x in (uniform, patterns):
        assert_ulps(nl.exp(x), np.exp(x.astype(np.float64)), EXP_ULP)


# -- reciprocal -----------------------------------------------------------------------------------
@pytest.mark.parametrize("exponent, sign", [(0, 1), (0, -1), (-126, 1), (124, -1)])
def test_reciprocal_whole_binades(exponent, sign):
    # the method scales exactly by powers of 2 except at the ends: 2^-126, where the estimate's
    # exponent is largest, and above 2^103, where the last correction y·(1 − x·y) is subnormal;
    # 2^124 holds the worst input of all
    x = binade(exponent, sign)
    assert_ulps(nl.reciprocal(x), 1 / x.astype(np.float64), RECIP_ULP)


def test_reciprocal_sample_and_flush():
    rng = np.random.default_rng(7)
    bits = rng.integers(0x00800000, 0x7E800001, 1 << 20, dtype=np.uint32)
    x = floats(bits) * rng.choice(np.float32([-1, 1]), bits.size)
    assert_ulps(nl.reciprocal(x), 1 / x.astype(np.float64), RECIP_ULP)
    assert nl.reciprocal(np.float32(2.0 ** 126)) == np.float32(MIN_NORMAL)
    top = np.concatenate([binade(126)[1:], binade(127, -1)])  # 1/x subnormal: flushed
    got = nl.reciprocal(top)
    assert (got == 0).all() and (np.signbit(got) == np.signbit(top)).all()


# -- rsqrt ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("exponent", [0, 1, -126, 127])
def test_rsqrt_whole_binades(exponent):
    # the estimate depends on the exponent's parity, so 0 and 1 cover the scaled middle; -126
    # and 127 are the ends
    x = binade(exponent)
    assert_ulps(nl.rsqrt(x), 1 / np.sqrt(x.astype(np.float64)), RSQRT_ULP)


def test_rsqrt_sample():
    bits = np.random.default_rng(11).integers(0x00800000, 0x7F800000, 1 << 20, dtype=np.uint32)
    x = floats(bits)
    assert_ulps(nl.rsqrt(x), 1 / np.sqrt(x.astype(np.float64)), RSQRT_ULP)
    assert nl.rsqrt(np.float32(4)) == 0.5 and nl.rsqrt(np.float32(1)) == 1


# -- lane_sum, lane_max ---------------------------------------------------------------------------
def loop_sum(row, lanes):
    """The stated order, one float32 add at a time."""
    acc = [np.float32(0.0)] * lanes
    for i, v in enumerate(row):
        acc[i % lanes] = np.float32(acc[i % lanes] + np.float32(v))
    total = acc[0]
    for a in acc[1:]:
        total = np.float32(total + a)
    return total


@pytest.mark.parametrize("lanes", [1, 3, 8, 16])
def test_lane_sum_is_the_stated_order(lanes):
    rng = np.random.default_rng(lanes)
    for n in (0, 1, 7, 16, 37, 100):
        # magnitudes spread over 2^±20 so that a different order rounds differently
        x = (rng.standard_normal((2, 3, n)) * 2.0 ** rng.integers(-20, 20, (2, 3, n)))
        x = x.astype(np.float32)
        got = nl.lane_sum(x, lanes)
        assert got.dtype == np.float32 and got.shape == (2, 3)
        want = np.array([[loop_sum(r, lanes) for r in m] for m in x], np.float32)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (lanes, n)
        exact = x.astype(np.float64).sum(axis=-1)
        bound = (n + lanes) * U * np.abs(x.astype(np.float64)).sum(axis=-1)
        assert (np.abs(got - exact) <= bound).all()


def test_lane_sum_order_is_observable():
    # the loop above would catch a sequential (lanes = 1) or pairwise sum
    x = np.float32([1.0, 2.0 ** -24, 2.0 ** -24, 2.0 ** -24])
    assert nl.lane_sum(x, 1) == 1.0 and nl.lane_sum(x, 2) == np.float32(1.0 + 2.0 ** -23)


def test_lane_max():
    x = np.random.default_rng(3).standard_normal((4, 9)).astype(np.float32)
    assert np.array_equal(nl.lane_max(x), x.max(axis=1))
    with pytest.raises(ValueError, match=r"`x` must have a non-empty last axis, not shape"):
        nl.lane_max(np.zeros((4, 0), np.float32))


# -- softmax --------------------------------------------------------------------------------------
def softmax64(s, valid):
    out = np.zeros(s.shape)
    for r, v in enumerate(valid):
        row = s[r, :v].astype(np.float64)
        e = np.exp(row - row.max())
        out[r, :v] = e / e.sum()
    return out


def test_softmax_hand_checked():
    s = np.float32([[0.0, 0.0, 5.0], [3.0, 3.0, -1e30]])
    assert np.array_equal(nl.softmax(s, [2, 2], 4), [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    assert np.array_equal(nl.softmax(s, [1, 1], 4), [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("lanes", [1, 16])
def test_softmax_against_float64(lanes):
    rng = np.random.default_rng(5)
    rows, cols = 64, 100
    s = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 30, (rows, 1))).astype(np.float32)
    s[:, 90:] = np.float32(np.nan)  # masked scores are never read
    valid = np.minimum(np.arange(1, rows + 1) * 2, 90)  # causal, and a tail
    got = nl.softmax(s, valid, lanes)
    want = softmax64(s, valid)
    masked = np.arange(cols)[None, :] >= valid[:, None]
    assert (got[masked] == 0).all() and not np.signbit(got[masked]).any()
    # |s - m| rounds at 2^-24·|s - m|; exp 1.2 ulp, the sum (cols)·u, reciprocal and product
    # 2 ulp; a term below 2^-126·... is flushed (absolute 1e-37)
    m = np.array([s[r, :v].max() for r, v in enumerate(valid)], np.float64)
    d = np.abs(s - m[:, None]).astype(np.float64)
    tol = want * U * (np.where(masked, 0, d) + 8 + 2 * cols) + 1e-37
    assert (np.abs(got - want) <= tol).all()
    assert (np.abs(got.astype(np.float64).sum(axis=1) - 1) <= 3 * cols * U).all()


def test_softmax_survives_an_overflowing_difference():
    got = nl.softmax(np.float32([[3e38, -3e38, 0.0]]), [3], 2)
    assert np.array_equal(got, [[1.0, 0.0, 0.0]])


# -- rmsnorm --------------------------------------------------------------------------------------
def rmsnorm64(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + np.float32(eps)) * w


def test_rmsnorm_against_float64_and_transformers():
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    rng = np.random.default_rng(9)
    rows, n, eps = 8, 192, 1e-5
    x = (rng.standard_normal((rows, n)) * rng.uniform(1e-3, 1e3, (rows, 1))).astype(np.float32)
    x[0] = 0
    w = rng.uniform(0.5, 2, n).astype(np.float32)
    got = nl.rmsnorm(x, w, eps, 8)
    want = rmsnorm64(x, w, eps)
    tol = (n + 8) * U * np.abs(want)  # the sum of squares, then rsqrt and two products
    assert np.array_equal(got[0], np.zeros(n)) and (np.abs(got - want) <= tol).all()
    norm = llama.LlamaRMSNorm(n, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(w))
        hf = norm(torch.from_numpy(x)).numpy()
    assert (np.abs(got - hf) <= 2 * tol).all()


# -- silu_mul -------------------------------------------------------------------------------------
def test_silu_mul_against_float64_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    g = np.concatenate([rng.uniform(-20, 20, 1 << 16), rng.uniform(-120, 120, 1 << 12),
                        [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, -87.4, -88.5, -1e30, 1e30,
                         -3e38]]).astype(np.float32)
    u = rng.uniform(-4, 4, g.size).astype(np.float32)
    got = nl.silu_mul(g, u)
    g64, u64 = g.astype(np.float64), u.astype(np.float64)
    with np.errstate(over="ignore"):
        want = g64 / (1 + np.exp(-g64)) * u64
    # exp 1.2 ulp, 1 + e 0.5, reciprocal 1.2, two products 1: 8 ulp; g < -87.34 is flushed to
    # ±0 (|silu(g)| < 1.1e-36 there)
    flushed = g < -87.34
    assert (got[flushed] == 0).all() and (np.abs(want[flushed]) < 1.1e-36 * 4).all()
    ok = ~flushed
    assert (np.abs(got[ok] - want[ok]) <= 8 * U * np.abs(want[ok]) + 1e-37).all()
    ref = (torch.nn.functional.silu(torch.from_numpy(g)) * torch.from_numpy(u)).numpy()
    mid = np.abs(g) < 80
    assert np.allclose(got[mid], ref[mid], rtol=2.0 ** -19, atol=0)


# -- rope -----------------------------------------------------------------------------------------
def test_rope_is_transformers_rotate_half_bit_for_bit():
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    rng = np.random.default_rng(17)
    rows, heads, hd = 12, 3, 64
    x = (rng.standard_normal((rows, heads, hd)) * 10).astype(np.float32)
    cos, sin = nl.rope_table(np.arange(rows) * 37, hd, 10000.0)
    got = nl.rope(x, cos, sin)
    full = [torch.from_numpy(np.concatenate([t, t], axis=1))[None] for t in (cos, sin)]
    q = torch.from_numpy(x)[None]  # [batch, seq, heads, hd]: the tables broadcast over heads
    hf, _ = llama.apply_rotary_pos_emb(q, q, *full, unsqueeze_dim=2)
    assert np.array_equal(got.view(np.uint32), hf[0].numpy().view(np.uint32))
    # and against float64: each output is one product pair, rounded three times
    x64, c, s = x.astype(np.float64), cos[:, None, :], sin[:, None, :]
    x1, x2 = x64[..., : hd // 2], x64[..., hd // 2 :]
    want = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    size = np.concatenate([np.abs(x1 * c) + np.abs(x2 * s), np.abs(x2 * c) + np.abs(x1 * s)],
                          axis=-1)
    assert (np.abs(got - want) <= 2 * U * size).all()
    assert np.array_equal(nl.rope(x[:, 1], cos, sin), got[:, 1])


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


@pytest.mark.parametrize("theta, scaling", [(10000.0, None),
                                            (10000.0, {"rope_type": "linear", "factor": 4.0}),
                                            (500000.0, LLAMA3)])
def test_rope_table_is_transformers_llama_rotary_embedding(theta, scaling):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    hd = 128
    params = {"rope_type": "default", **(scaling or {}), "rope_theta": theta}
    config = transformers.LlamaConfig(hidden_size=2 * hd, num_attention_heads=2, head_dim=hd,
                                      max_position_embeddings=1 << 17, rope_parameters=params)
    positions = np.array([0, 1, 2, 5, 100, 1000, 4095, 8191, 32767, 131071])
    cos, sin = nl.rope_table(positions, hd, theta, scaling)
    assert cos.dtype == np.float32 and cos.shape == (positions.size, hd // 2)
    hf = llama.LlamaRotaryEmbedding(config)
    hf_cos, hf_sin = hf(torch.zeros(1), torch.from_numpy(positions)[None])
    # HF computes in float32: inv_freq (up to 6 ulp after llama3's smoothing), then the angle
    angle = positions[:, None] * hf.inv_freq.double().numpy()[None, :]
    tol = 8 * U * angle + U
    for ours, theirs in ((cos, hf_cos), (sin, hf_sin)):
        theirs = theirs[0].numpy()
        assert np.array_equal(theirs[:, : hd // 2], theirs[:, hd // 2 :])
        assert (np.abs(ours - theirs[:, : hd // 2]) <= tol).all()


# -- quantize_rows --------------------------------------------------------------------------------
def test_quantize_rows_bound_and_codes():
    rng = np.random.default_rng(19)
    x = (rng.standard_normal((6, 300)) * rng.uniform(1e-3, 1e4, (6, 1))).astype(np.float32)
    x[1] = 0
    x[2] = 1e-37  # sx would be subnormal: the row is treated as zero
    x[3, 17] = 5e4  # an outlier sets the row's scale
    xq, sx = nl.quantize_rows(x, 16)
    assert xq.dtype == np.int8 and sx.dtype == np.float32
    assert (np.abs(xq.astype(int)) <= 127).all()
    assert sx[1] == 1 and sx[2] == 1 and (xq[1:3] == 0).all()
    live = [0, 3, 4, 5]
    assert (np.abs(xq[live].astype(int)).max(axis=1) == 127).all()
    sx64 = sx.astype(np.float64)[:, None]
    err = np.abs(x - sx64 * xq)
    assert (err <= sx64 * (0.5 + 2.0 ** -16)).all()
    # the host's division: the same to within one code and one ulp of scale
    hq, hsx = quantize_activations(x)
    assert (np.abs(hq.astype(int) - xq)[live] <= 1).all()
    assert (np.abs(hsx[live].view(np.int32) - sx[live].view(np.int32)) <= 1).all()


# -- the KV cache ---------------------------------------------------------------------------------
def kv_case(rng, rows=5, n=256, group=32):
    scale = 2.0 ** rng.integers(-8, 8, (rows, n // group, 1))
    x = (rng.standard_normal((rows, n // group, group)) * scale).reshape(rows, n)
    x = x.astype(np.float32)
    x[0, :group] = 0  # a zero group
    x[1, group : 2 * group] *= np.float32(1e-9)  # a scale below fp16's normals
    return x


def kv_error_ok(x, deq, scales, group, qmax):
    s = np.repeat(scales.astype(np.float64), group, axis=1)
    # the code rounds at s/2; the reciprocal's ulps move it by qmax·2^-22·s; the product rounds
    bound = s * (0.5 + qmax * 2.0 ** -21) + np.abs(x) * 2 * U
    return np.abs(x.astype(np.float64) - deq) <= bound


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group", [32, 128])
def test_quantize_kv_round_trip(bits, group):
    rng = np.random.default_rng(bits * group)
    x = kv_case(rng, group=group)
    codes, scales = nl.quantize_kv(x, bits, group)
    qmax, zero = 2 ** (bits - 1) - 1, 2 ** (bits - 1)
    assert codes.dtype == np.uint8 and scales.dtype == np.float16
    assert scales.shape == (x.shape[0], x.shape[1] // group)
    assert codes.min() >= zero - qmax and codes.max() <= zero + qmax
    assert scales[0, 0] == 1 and (codes[0, :group] == zero).all()
    assert scales[1, 1] == np.float16(2.0 ** -14)
    assert (scales >= np.float16(2.0 ** -14)).all()
    deq = nl.dequantize_kv(codes, scales, bits, group)
    assert deq.dtype == np.float32 and kv_error_ok(x, deq, scales, group, qmax).all()
    # the largest element of a live group uses the extreme code
    top = np.abs(codes.astype(int) - zero).reshape(x.shape[0], -1, group).max(axis=2)
    live = (scales > np.float16(2.0 ** -14)) & (np.abs(x).reshape(top.shape + (-1,)).max(2) > 0)
    assert live.sum() > 1 and (top[live] == qmax).all()


def test_quantize_kv_bound_catches_a_two_percent_scale_error():
    # at 8 bits the largest code (127) turns a 2% scale error into 2.5 scales of error
    x = kv_case(np.random.default_rng(23))
    codes, scales = nl.quantize_kv(x, 8, 32)
    off = (scales.astype(np.float32) * np.float32(1.02)).astype(np.float16)
    assert not kv_error_ok(x, nl.dequantize_kv(codes, off, 8, 32), off, 32, 127).all()


def test_kv_bytes_per_element():
    assert nl.kv_bytes_per_element("fp16") == 2
    assert nl.kv_bytes_per_element("int8", 128) == 1 + 2 / 128
    assert nl.kv_bytes_per_element("int4", 64) == 0.5 + 2 / 64
    assert nl.kv_bytes_per_element("int2", 32) == 0.25 + 2 / 32
    assert set(nl.KV_FORMATS) == {"fp16", "int8", "int4", "int2"}


# -- domain errors --------------------------------------------------------------------------------
def test_domain_errors():
    f = np.float32
    cases = [
        (lambda: nl.exp(f([1, np.inf])), r"`x` must be finite, not inf"),
        (lambda: nl.exp(f(np.nan)), r"`x` must be finite, not nan"),
        (lambda: nl.reciprocal(f([2, 0])), r"`x` must be normal \(\|x\| >= 2\^-126\), not 0.0"),
        (lambda: nl.reciprocal(f(-1e-40)), r"`x` must be normal .*, not -1e-40"),
        (lambda: nl.reciprocal(f(-np.inf)), r"`x` must be finite, not -inf"),
        (lambda: nl.rsqrt(f(-4)), r"`x` must be positive and normal \(x >= 2\^-126\), not -4.0"),
        (lambda: nl.rsqrt(f(0)), r"`x` must be positive and normal .*, not 0.0"),
        (lambda: nl.lane_sum(f([1, 2]), 0), r"`lanes` must be a positive integer, not 0"),
        (lambda: nl.softmax(f([[1, 2]]), [0], 4), r"`valid` must be in \[1, 2\], not 0"),
        (lambda: nl.softmax(f([[1, 2]]), [3], 4), r"`valid` must be in \[1, 2\], not 3"),
        (lambda: nl.softmax(f([[1, np.inf]]), [2], 4), r"`s` must be finite, not inf"),
        (lambda: nl.silu_mul(f([np.nan]), f([1])), r"`g` must be finite, not nan"),
        (lambda: nl.silu_mul(f([1, 2]), f([1])), r"`u` must have shape \(2,\), not \(1,\)"),
        (lambda: nl.rmsnorm(f([[1, 2]]), f([1, 1]), 0.0, 4),
         r"`eps` must be positive and normal in float32 \(>= 2\^-126\), not 0.0"),
        (lambda: nl.rmsnorm(f([[3e38, 1]]), f([1, 1]), 1e-5, 4),
         r"`x` must have a finite mean square per row, not inf"),
        (lambda: nl.rope(f(np.ones((2, 5))), f(np.ones((2, 2))), f(np.ones((2, 2)))),
         r"`x` must be \[rows, hd\] or \[rows, heads, hd\] with hd even, not shape \(2, 5\)"),
        (lambda: nl.rope(f(np.ones((2, 4))), f(np.ones((2, 4))), f(np.ones((2, 2)))),
         r"`cos` must have shape \(2, 2\), not \(2, 4\)"),
        (lambda: nl.rope_table([0, 1], 64, 1e4, {"rope_type": "yarn", "factor": 4.0}),
         r"`scaling\['rope_type'\]` must be one of default, linear, llama3, not 'yarn'"),
        (lambda: nl.rope_table([0, 1], 64, 1e4, {"rope_type": "llama3", "factor": 8.0}),
         r"`scaling` must have factor, low_freq_factor, .* for llama3, not missing "
         r"low_freq_factor"),
        (lambda: nl.rope_table([0, 1], 63, 1e4), r"`head_dim` must be even, not 63"),
        (lambda: nl.quantize_rows(f([[1, np.nan]]), 4), r"`x` must be finite, not nan"),
        (lambda: nl.quantize_kv(f(np.ones((2, 8))), 3, 4), r"`bits` must be one of 2, 4, 8, not 3"),
        (lambda: nl.quantize_kv(f(np.ones((2, 8))), 4, 3), r"`group` must divide x's 8 columns, "
                                                           r"not 3"),
        (lambda: nl.quantize_kv(f([[1e6, 1]]), 2, 2),
         r"`x` must have max\|x\| per group below 65520 for an fp16 scale at 2 bits, not 1e\+06"),
        (lambda: nl.dequantize_kv(np.array([[0, 16]]), np.float16([[1]]), 4, 2),
         r"`codes` must be in \[0, 15\], not 16"),
        (lambda: nl.kv_bytes_per_element("int3", 32),
         r"`fmt` must be one of fp16, int8, int4, int2, not 'int3'"),
        (lambda: nl.kv_bytes_per_element("int4"), r"`group` must be a positive integer, not None"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
