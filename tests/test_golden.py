"""The golden model (sim/golden.py): every PE path bit-exact with the others and with the fast path,
and within the activation-quantization bound of the PyTorch reference (docs/numerics.md).

Hypothesis runs derandomized (the same examples every run); each example draws a `seed` for numpy,
which a failure prints, so it reproduces with the failing arguments alone.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitlut.errors import UserError
from quant import reference as ref
from sim import golden as gm

PROPERTY = settings(
    deadline=None, derandomize=True, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)

seeds = st.integers(0, 2**32 - 1)
rows = st.integers(1, 5)  # M: odd and even, never a multiple of a 2×64 tile
outs = st.integers(1, 9)  # N
cols = st.integers(1, 37)  # K
groups = st.integers(1, 40)  # G: often not dividing K, sometimes larger than K


# --------------------------------------------------------------------------------------------------
# case builders


def _activations(rng, m, k):
    x = rng.standard_normal((m, k)).astype(np.float32) * np.float32(rng.choice([1e-3, 1.0, 300.0]))
    if m > 1 and rng.random() < 0.3:
        x[rng.integers(m)] = 0  # a zero row: sx = 1.0, xq = 0
    return x


def _uniform(seed, m, n, k, gsz, bits):
    rng = np.random.default_rng(seed)
    x = _activations(rng, m, k)
    j = math.ceil(k / gsz)
    q = rng.integers(0, 2**bits, (n, k))
    z = rng.integers(0, 2**bits, (n, j))
    s = (rng.random((n, j)) * 0.05 + 1e-3).astype(np.float32)
    return x, q, z, s


def _outliers(rng, n, k, count):
    flat = np.sort(rng.choice(n * k, size=min(count, n * k), replace=False))
    vals = (rng.standard_normal(len(flat)) * 0.5).astype(np.float16)
    return gm.Outliers(flat // k, flat % k, vals)


def _dense(outl, n, k):
    s = np.zeros((n, k), np.float64)
    s[outl.rows, outl.cols] = outl.values.astype(np.float64)
    return s


def _codebook(seed, m, n, k, widths):
    rng = np.random.default_rng(seed)
    x = _activations(rng, m, k)
    bits = rng.choice(widths, size=k)
    codes = rng.integers(0, 1 << bits[None, :], (n, k))
    # Column ranges differ by up to ~100× inside a block, as CLAQ's columns do.
    codebooks = rng.standard_normal((k, 16)) * np.exp(rng.uniform(-3, 2, (k, 1)))
    return x, bits, codes, codebooks.astype(np.float32)


def _max_per_row(outl):
    return int(np.bincount(outl.rows).max(initial=0))


# --------------------------------------------------------------------------------------------------
# hand-checked vectors


def test_uniform_hand_vector():
    # xq = [3, −1, 2, 5], 2-bit codes q = [0, 1, 2, 3], z = 1:
    # P = 3·(−1) + (−1)·0 + 2·1 + 5·2 = 9.
    # LUT, g = 4: plane 0 bits [0,1,0,1] → idx 0b1010 = 10, T[10] = −3 − 1 − 2 + 5 = −1;
    # plane 1 bits [0,0,1,1] → idx 0b1100 = 12, T[12] = −3 + 1 + 2 + 5 = 5; acc = −1 + 2·5 = 9;
    # Σx = 9 = −T[0]; z' = 2·1 + 1 − 4 = −1; 2P = 9 − (−1)·9 = 18.
    # Half table: idx 10 has sign 0, stored = (~10 >> 1) & 7 = 0b010 = 2,
    # H[2] = T[0b0101] = 3 + 1 + 2 − 5 = 1, read −1 = T[10].
    xq = np.array([[3, -1, 2, 5]])
    q = np.array([[0, 1, 2, 3]])
    z = np.array([[1]])
    t = gm.build_table(xq, 4)
    h = gm.build_table(xq, 4, symmetric=True)
    assert (t[0, 10], t[0, 12], t[0, 0], t[0, 5]) == (-1, 5, -9, 1)
    sign, stored = gm.invert_index(np.array([10, 12]), 4)
    assert sign.tolist() == [0, 0] and stored.tolist() == [2, 1]
    assert (h[0, 2], h[0, 1], h[0, 7]) == (1, -5, 9)
    # g = 2: tables over [3, −1] and [2, 5]; planes give idx (2, 2) then (0, 3):
    # (−4 + 3) + 2·(−2 + 7) = 9.
    assert gm.build_table(xq[:, :2], 2)[0].tolist() == [-2, 4, -4, 2]
    for g in (2, 3, 4, 5):
        for symmetric in (False, True):
            assert gm.uniform_partials_lut(xq, q, z, 2, 4, g, symmetric).ravel().tolist() == [9]
    # Bit-serial: plane 1 Σx·q1 = 2 + 5 = 7, plane 0 Σx·q0 = −1 + 5 = 4: 2·7 + 4 − 1·9 = 9.
    assert gm.uniform_partials_bitserial(xq, q, z, 2, 4).ravel().tolist() == [9]
    assert gm.uniform_partials_mac(xq, q, z, 2, 4).ravel().tolist() == [9]
    assert gm.fast_partials(xq, gm.decode_uniform(q, z, 4), 4).ravel().tolist() == [9]


def test_codebook_hand_vector():
    # 2-bit columns, index_bits 4 → g = 2. Codes [3, 0, 1, 2] select w = [4, −2, −3, 2]:
    # P = 12 + 2 − 6 + 10 = 18. Table 0 index 3 | 0 << 2 = 3: T0[3] = 3·4 + (−1)·(−2) = 14;
    # table 1 index 1 | 2 << 2 = 9: T1[9] = 2·(−3) + 5·2 = 4; 14 + 4 = 18.
    xq = np.array([[3, -1, 2, 5]])
    cq = np.array([[-4, -1, 1, 4], [-2, 0, 2, 6], [-8, -3, 3, 8], [0, 1, 2, 3]])
    codes = np.array([[3, 0, 1, 2]])
    t0 = gm.build_codebook_table(xq[:, :2], cq[:2], 2)
    t1 = gm.build_codebook_table(xq[:, 2:], cq[2:], 2)
    assert t0.shape == (1, 16) and (t0[0, 3], t1[0, 9]) == (14, 4)
    for pe in gm.PE_KINDS:
        for cb in (8, 16):
            p = gm.codebook_partials(xq, codes, cq, 2, 4, pe, centroid_bits=cb).stacked()
            assert p.ravel().tolist() == [18]


def test_epilogue_hand_vector():
    # y = sx·(s0·P0 + s1·P1 + O) = 0.5·(0.25·8 + 2·(−3) + 1.5) = −1.25, all exact in float32.
    p = np.array([[[8, -3]]])
    y = gm.epilogue(p, np.array([[0.25, 2.0]], np.float32), np.array([0.5], np.float32),
                    np.array([[1.5]], np.float32))
    assert y.dtype == np.float32 and y.tolist() == [[-1.25]]


def test_quantize_activations_hand_vector():
    # sx = 254/127 = 2; x/sx = [127, 0.5, 1.5, −127] → round half even [127, 0, 2, −127].
    xq, sx = gm.quantize_activations([[254.0, 1.0, 3.0, -254.0], [0, 0, 0, 0]])
    assert xq.dtype == np.int8 and sx.dtype == np.float32
    assert xq.tolist() == [[127, 0, 2, -127], [0, 0, 0, 0]]
    assert sx.tolist() == [2.0, 1.0]


# --------------------------------------------------------------------------------------------------
# uniform weights: bit-exact agreement


@PROPERTY
@given(seeds, rows, outs, cols, groups, st.integers(1, 4))
def test_uniform_paths_agree(seed, m, n, k, gsz, bits):
    x, q, z, _ = _uniform(seed, m, n, k, gsz, bits)
    xq, _ = gm.quantize_activations(x)
    assert xq.min() >= -127
    fast = gm.fast_partials(xq, gm.decode_uniform(q, z, gsz), gsz)
    assert fast.shape == (m, n, math.ceil(k / gsz))
    for g in (2, 3, 4, 5):
        full = gm.uniform_partials_lut(xq, q, z, bits, gsz, g, symmetric=False)
        half = gm.uniform_partials_lut(xq, q, z, bits, gsz, g, symmetric=True)
        np.testing.assert_array_equal(full, fast)
        np.testing.assert_array_equal(half, fast)
    np.testing.assert_array_equal(gm.uniform_partials_bitserial(xq, q, z, bits, gsz), fast)
    np.testing.assert_array_equal(gm.uniform_partials_mac(xq, q, z, bits, gsz), fast)


@settings(PROPERTY, max_examples=25)
@given(seeds, rows, outs, cols, groups, st.integers(5, 8))
def test_wide_uniform_bitserial_mac_agree(seed, m, n, k, gsz, bits):
    x, q, z, _ = _uniform(seed, m, n, k, gsz, bits)
    xq, _ = gm.quantize_activations(x)
    fast = gm.fast_partials(xq, gm.decode_uniform(q, z, gsz), gsz)
    np.testing.assert_array_equal(gm.uniform_partials_bitserial(xq, q, z, bits, gsz), fast)
    np.testing.assert_array_equal(gm.uniform_partials_mac(xq, q, z, bits, gsz), fast)


# --------------------------------------------------------------------------------------------------
# uniform weights: the PyTorch reference


def _uniform_reference(x, q, z, s, gsz, outl):
    w = ref.dequant_uniform(q, s, z, gsz)
    w_abs = np.abs(s.astype(np.float64)[:, np.arange(q.shape[1]) // gsz] * (q - z[:, np.arange(
        q.shape[1]) // gsz]))
    n_out = 0
    if outl is not None:
        w = ref.add_outliers(w, outl.rows, outl.cols, outl.values)
        w_abs = w_abs + np.abs(_dense(outl, *q.shape))
        n_out = _max_per_row(outl)
    return ref.reference_matmul(x, w).numpy(), w_abs, n_out


@PROPERTY
@given(seeds, rows, outs, cols, groups, st.sampled_from([1, 2, 3, 4, 8]), st.integers(0, 12))
def test_uniform_within_reference_bound(seed, m, n, k, gsz, bits, n_outliers):
    x, q, z, s = _uniform(seed, m, n, k, gsz, bits)
    outl = _outliers(np.random.default_rng(seed + 1), n, k, n_outliers) if n_outliers else None
    y_ref, w_abs, n_out = _uniform_reference(x, q, z, s, gsz, outl)
    _, sx = gm.quantize_activations(x)
    tol = gm.reference_tolerance(x, w_abs, sx, math.ceil(k / gsz), n_out)
    pes = ["lut", "bitserial", "mac"] if bits <= 4 else ["bitserial", "mac"]
    ys = [gm.uniform_matmul(x, q, s, z, bits, gsz, pe, g, sym, outl)
          for pe in pes for g in ((2, 3, 4) if pe == "lut" else (4,)) for sym in (False, True)]
    ys.append(gm.uniform_matmul(x, q, s, z, bits, gsz, outliers=outl, fast=True))
    for y in ys:
        np.testing.assert_array_equal(y, ys[0])  # the epilogue is one definition: same bits
    assert (np.abs(ys[0].astype(np.float64) - y_ref) <= tol).all()


def test_reference_bound_is_not_vacuous():
    # An off-by-one zero point (z + 1) shifts P by −Σ_{k∈group} xq, far outside the activation
    # bound on positive activations; the right kernel stays inside it.
    rng = np.random.default_rng(7)
    m, n, k, gsz, bits = 3, 5, 32, 16, 4
    x = rng.uniform(0.5, 1.0, (m, k)).astype(np.float32)
    q = rng.integers(0, 16, (n, k))
    z = rng.integers(0, 15, (n, 2))
    s = (rng.random((n, 2)) * 0.05 + 1e-3).astype(np.float32)
    y_ref, w_abs, _ = _uniform_reference(x, q, z, s, gsz, None)
    xq, sx = gm.quantize_activations(x)
    tol = gm.reference_tolerance(x, w_abs, sx, 2)
    right = gm.epilogue(gm.uniform_partials_lut(xq, q, z, bits, gsz), s, sx)
    wrong = gm.epilogue(gm.uniform_partials_lut(xq, q, z + 1, bits, gsz), s, sx)
    assert (np.abs(right - y_ref) <= tol).all()
    assert (np.abs(wrong - y_ref) > tol).all()
    # And the bound is tight enough to matter: the right kernel's error uses a fair part of it.
    assert (np.abs(right - y_ref) / tol).max() > 0.05


# --------------------------------------------------------------------------------------------------
# half table


@pytest.mark.parametrize("g", [2, 3, 4, 5])
def test_half_table_halves_storage_and_reads_back_the_full_table(g):
    rng = np.random.default_rng(g)
    x = rng.integers(-127, 128, (6, g))
    full = gm.build_table(x, g)
    half = gm.build_table(x, g, symmetric=True)
    assert full.shape == (6, 2**g) and half.shape == (6, 2 ** (g - 1))
    assert gm.table_entries(g, True) * 2 == gm.table_entries(g, False) == 2**g
    assert half.nbytes * 2 == full.nbytes
    np.testing.assert_array_equal(half, full[:, 1::2])  # H[j] = T[(j << 1) | 1]
    idx = np.arange(2**g)
    np.testing.assert_array_equal(full, -full[:, (~idx) & (2**g - 1)])  # odd symmetry, Eq. 4
    sign, stored = gm.invert_index(idx, g)
    assert stored.max() < 2 ** (g - 1)
    np.testing.assert_array_equal(np.where(sign == 1, half[:, stored], -half[:, stored]), full)
    np.testing.assert_array_equal(half[:, -1], x.sum(1))  # Σx read from the table
    np.testing.assert_array_equal(full[:, 0], -x.sum(1))


def test_half_table_kernel_matches_full_table_on_a_larger_layer():
    rng = np.random.default_rng(3)
    xq = rng.integers(-127, 128, (7, 203))
    q = rng.integers(0, 8, (33, 203))
    z = rng.integers(0, 8, (33, 4))
    for g in (2, 3, 4):
        np.testing.assert_array_equal(gm.uniform_partials_lut(xq, q, z, 3, 64, g, True),
                                      gm.uniform_partials_lut(xq, q, z, 3, 64, g, False))


# --------------------------------------------------------------------------------------------------
# extremes and accumulator bounds


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_extreme_values_and_tight_bounds(bits):
    m, n, k, gsz = 2, 3, 19, 8  # groups of 8, 8 and 3
    top = 2**bits - 1
    widths = np.array([8, 8, 3])
    for xval in (127, -127):
        xq = np.full((m, k), xval)
        xq[1, ::2] *= -1  # the second row alternates signs
        for qval in (0, top):
            for zval in (0, top):
                q = np.full((n, k), qval)
                z = np.full((n, 3), zval)
                expect = np.stack([np.add.reduceat(xq, [0, 8, 16], axis=1)] * n, 1) * (qval - zval)
                for pe in gm.PE_KINDS:
                    for g in (2, 3, 4):
                        for sym in (False, True):
                            got = gm.uniform_partials(xq, q, z, bits, gsz, pe, g, sym)
                            np.testing.assert_array_equal(got, expect)
                assert (np.abs(expect[0]) == 127 * widths * abs(qval - zval)).all()
    # The bounds hold and are attained: x = 127, q = 2^b − 1, z = 0.
    xq = np.full((1, k), 127)
    q, z = np.full((1, k), top), np.zeros((1, 3), np.int64)
    for pe in gm.PE_KINDS:
        stats = {}
        gm.uniform_partials(xq, q, z, bits, gsz, pe, 4, True, stats)
        bound = gm.accumulator_bounds(pe, "uniform", k, bits, gsz, g=4)
        assert stats["max_acc"] == bound.max_acc
        assert bound.max_partial == 127 * 8 * top
        if pe == "lut":
            assert stats["max_table"] == bound.max_table == 127 * 4


@PROPERTY
@given(seeds, rows, outs, cols, groups, st.integers(1, 4), st.sampled_from([2, 3, 4]))
def test_running_values_within_bounds(seed, m, n, k, gsz, bits, g):
    rng = np.random.default_rng(seed)
    xq = rng.choice([-127, 127, 0, 1], size=(m, k))
    q = rng.choice([0, 2**bits - 1], size=(n, k))
    z = rng.choice([0, 2**bits - 1], size=(n, math.ceil(k / gsz)))
    for pe in gm.PE_KINDS:
        stats = {}
        p = gm.uniform_partials(xq, q, z, bits, gsz, pe, g, True, stats)
        bound = gm.accumulator_bounds(pe, "uniform", k, bits, gsz, g=g)
        assert np.abs(p).max() <= bound.max_partial
        assert stats["max_acc"] <= bound.max_acc
        assert stats.get("max_table", 0) <= bound.max_table


def test_accumulator_widths_for_k_16384():
    k = 16384
    # Uniform LUT, per-channel (G = K), 4-bit: 2·127·16384·15 = 62 423 040 < 2^31.
    assert gm.check_accumulator("lut", "uniform", k, 4, k).max_acc == 62_423_040
    assert gm.check_accumulator("mac", "uniform", k, 8, k).max_acc == 127 * k * 255
    assert gm.check_accumulator("bitserial", "uniform", k, 8, k).max_acc == 127 * k * 255
    for pe in gm.PE_KINDS:
        for b in gm.CODEBOOK_BITS:
            bound = gm.check_accumulator(pe, "codebook", k, b, k, centroid_bits=8)
            assert bound.max_acc <= 127 * k * 128 < 2**31
        # int16 centroids: blocks up to 516 columns fit int32, 517 do not.
        gm.check_accumulator(pe, "codebook", k, 2, 516, centroid_bits=16)
        with pytest.raises(ValueError, match=r"`max \|acc\|` of the .* must be at most 2147483647"):
            gm.check_accumulator(pe, "codebook", k, 2, 517, centroid_bits=16)
    assert gm.accumulator_bounds("lut", "uniform", k, 4, k).bits_needed() == 27


def test_fast_path_falls_back_to_int64_when_float64_is_not_exact():
    xq = np.array([[127, -127, 1]])
    w = np.array([[2**50 + 1, 2**50, 3]])
    p = gm.fast_partials(xq, w, 3)
    assert int(p[0, 0, 0]) == 127 * (2**50 + 1) - 127 * 2**50 + 3


# --------------------------------------------------------------------------------------------------
# codebook weights


def _brute_codebook(xq, codes, cq, layout):
    w = gm.decode_codebook(codes, cq)
    p = np.zeros((xq.shape[0], codes.shape[0], layout.nblocks), np.int64)
    for kk, blk in enumerate(layout.block_of_col):
        p[:, :, blk] += xq[:, kk, None] * w[None, :, kk]
    return p


@PROPERTY
@given(seeds, rows, outs, cols, groups,
       st.sampled_from([(2,), (3,), (4,), (2, 4), (3, 4), (2, 3, 4)]),
       st.sampled_from([8, 16]))
def test_codebook_paths_agree(seed, m, n, k, block, widths, cb):
    x, bits, codes, codebooks = _codebook(seed, m, n, k, widths)
    xq, _ = gm.quantize_activations(x)
    cq, _ = gm.quantize_codebooks(codebooks, bits, block, cb)
    assert cq.dtype == (np.int8 if cb == 8 else np.int16)
    fast = gm.codebook_partials(xq, codes, cq, bits, block, centroid_bits=cb, fast=True)
    brute = _brute_codebook(xq, codes, cq, fast.layout)
    np.testing.assert_array_equal(fast.stacked(), brute)
    for pe, index_bits in [("lut", 4), ("lut", 8), ("bitserial", 4), ("mac", 4)]:
        stats = {}
        got = gm.codebook_partials(xq, codes, cq, bits, block, pe, index_bits, cb, stats=stats)
        assert len(got.partials) == len(fast.partials) == len(set(bits.tolist()))
        for a, b in zip(got.partials, fast.partials, strict=True):
            np.testing.assert_array_equal(a, b)
        # stats covers all segments: compare with the worst segment's bound.
        bounds = [gm.accumulator_bounds(pe, "codebook", seg.cols.stop - seg.cols.start, seg.bits,
                                        block, centroid_bits=cb, index_bits=index_bits)
                  for seg in got.layout.segments]
        assert stats["max_acc"] <= max(b.max_acc for b in bounds)
        assert stats.get("max_table", 0) <= max(b.max_table for b in bounds)
        for part, bound in zip(got.partials, bounds, strict=True):
            assert np.abs(part).max() <= bound.max_partial


@PROPERTY
@given(seeds, rows, outs, cols, groups, st.sampled_from([(2,), (3, 4), (2, 3, 4)]),
       st.sampled_from([8, 16]), st.integers(0, 10))
def test_codebook_within_reference_bound(seed, m, n, k, block, widths, cb, n_outliers):
    x, bits, codes, codebooks = _codebook(seed, m, n, k, widths)
    outl = _outliers(np.random.default_rng(seed + 1), n, k, n_outliers) if n_outliers else None
    cq, scale = gm.quantize_codebooks(codebooks, bits, block, cb)
    layout = gm.codebook_layout(bits, block)
    col_scale = scale[layout.block_of_col]
    fixed = (cq.astype(np.float32) * col_scale[:, None]).astype(np.float32)
    ys = [gm.codebook_matmul(x, codes, cq, scale, bits, block, pe, 4, cb, outl)
          for pe in gm.PE_KINDS]
    for y in ys:
        np.testing.assert_array_equal(y, ys[0])
    _, sx = gm.quantize_activations(x)
    n_out = 0 if outl is None else _max_per_row(outl)
    s_abs = 0 if outl is None else np.abs(_dense(outl, n, k))
    w_fixed = ref.dequant_codebook(codes, fixed)
    w_float = ref.dequant_codebook(codes, codebooks)
    if outl is not None:
        w_fixed = ref.add_outliers(w_fixed, outl.rows, outl.cols, outl.values)
        w_float = ref.add_outliers(w_float, outl.rows, outl.cols, outl.values)
    fixed_abs = np.abs(gm.decode_codebook(codes, cq) * col_scale.astype(np.float64)[None, :])
    float_abs = np.abs(codebooks.astype(np.float64)[np.arange(k)[None, :], codes])
    err = np.abs(ys[0].astype(np.float64) - ref.reference_matmul(x, w_fixed).numpy())
    tol = gm.reference_tolerance(x, fixed_abs + s_abs, sx, layout.nblocks, n_out)
    assert (err <= tol).all()
    # Against the float codebooks, add the centroid rounding (|c − cs·cq| <= cs/2).
    err = np.abs(ys[0].astype(np.float64) - ref.reference_matmul(x, w_float).numpy())
    tol = gm.reference_tolerance(x, np.maximum(fixed_abs, float_abs) + s_abs, sx, layout.nblocks,
                                 n_out) + gm.centroid_tolerance(x, col_scale)
    assert (err <= tol).all()


def test_quantize_codebooks_contract():
    bits = np.array([2, 2, 3, 2])
    codebooks = np.array([[0.5, -1.0, 2.0, 0.25, 0, 0, 0, 0], [0, 0, 0, 0, 9.0, 9.0, 9.0, 9.0],
                          [0] * 8, [-4, 1, 3, 0.1, 0, 0, 0, 0]], np.float32)
    cq, scale = gm.quantize_codebooks(codebooks, bits, 2, 8)
    # Permuted order [0, 1, 3, 2]: blocks {0, 1}, {3}, {2} (3-bit). Column 1's 9.0s are unused.
    assert gm.codebook_layout(bits, 2).block_of_col.tolist() == [0, 0, 2, 1]
    assert scale.dtype == np.float32
    f32 = np.float32
    assert scale.tolist() == [f32(2.0) / f32(127), f32(4.0) / f32(127), 1.0]
    assert cq[2].tolist() == [0] * 8  # zero block: scale 1.0, centroids 0
    assert cq[1].tolist() == [0] * 8  # unused entries are 0
    assert cq[0].tolist() == [32, -64, 127, 16, 0, 0, 0, 0]
    assert cq[3].tolist() == [-127, 32, 95, 3, 0, 0, 0, 0]
    rng = np.random.default_rng(0)
    for cb in (8, 16):
        bits = rng.integers(2, 5, 50)
        c = (rng.standard_normal((50, 16)) * np.exp(rng.uniform(-4, 4, (50, 1)))).astype(np.float32)
        cq, scale = gm.quantize_codebooks(c, bits, 8, cb)
        col_scale = scale[gm.codebook_layout(bits, 8).block_of_col].astype(np.float64)[:, None]
        used = np.arange(16)[None, :] < (1 << bits)[:, None]
        err = np.abs(c - cq * col_scale)[used]
        assert (err <= (col_scale / 2 * np.ones((1, 16)))[used]).all()
        assert np.abs(cq).max() == 2 ** (cb - 1) - 1


def test_mixed_precision_permutation():
    bits = np.array([4, 2, 2, 3, 4, 3])
    layout = gm.codebook_layout(bits, 2)
    # Stable sort, narrow first: 2-bit cols 1, 2; 3-bit cols 3, 5; 4-bit cols 0, 4.
    assert layout.perm.tolist() == [1, 2, 3, 5, 0, 4]
    assert [(s.bits, s.cols, s.blocks) for s in layout.segments] == [
        (2, slice(0, 2), slice(0, 1)), (3, slice(2, 4), slice(1, 2)),
        (4, slice(4, 6), slice(2, 3))]
    assert layout.block_of_col.tolist() == [2, 0, 0, 1, 2, 1]
    # Blocks never cross a segment: 2-bit columns with block 2 start a new block at the 4-bit ones.
    layout = gm.codebook_layout([2, 2, 2, 4, 4], 2)
    assert layout.block_of_col.tolist() == [0, 0, 1, 2, 2] and layout.nblocks == 3
    # Partials: the segments' blocks, in order, are exactly the brute-force blocks.
    rng = np.random.default_rng(1)
    xq = rng.integers(-127, 128, (3, 6))
    codes = rng.integers(0, 1 << bits[None, :], (4, 6))
    cq = rng.integers(-127, 128, (6, 16))
    for pe in gm.PE_KINDS:
        parts = gm.codebook_partials(xq, codes, cq, bits, 2, pe)
        assert [p.shape[-1] for p in parts.partials] == [1, 1, 1]
        np.testing.assert_array_equal(parts.stacked(),
                                      _brute_codebook(xq, codes, cq, gm.codebook_layout(bits, 2)))


def test_codebook_extremes_attain_bounds():
    k, block = 10, 4
    xq = np.full((1, k), 127)
    for cb, cmax in ((8, 127), (16, 32767)):
        for b in gm.CODEBOOK_BITS:
            codes = np.zeros((2, k), np.int64)
            cq = np.zeros((k, 16), np.int64)
            cq[:, 0] = -cmax
            for pe in gm.PE_KINDS:
                stats = {}
                p = gm.codebook_partials(xq, codes, cq, b, block, pe, centroid_bits=cb,
                                         stats=stats).stacked()
                assert p[0, 0].tolist() == [-127 * cmax * w for w in (4, 4, 2)]
                bound = gm.accumulator_bounds(pe, "codebook", k, b, block, centroid_bits=cb)
                assert stats["max_acc"] == bound.max_acc
                if pe == "lut":
                    assert stats["max_table"] == bound.max_table == 127 * cmax * (4 // b)


# --------------------------------------------------------------------------------------------------
# outliers


def test_outliers_accumulate_in_list_order():
    # 2·127·65504 = 16 638 016 lies in [2^23, 2^24), where the float32 ulp is 1: adding 0.5 twice
    # after it rounds back each time (ties to even); adding 0.5 + 0.5 = 1 first does not. The list
    # order decides, as documented.
    rows, cols = np.zeros(4, np.int64), np.arange(4)
    big_first = gm.Outliers(rows, cols, np.array([65504, 65504, 0.5, 0.5], np.float16))
    small_first = gm.Outliers(rows, cols, np.array([0.5, 0.5, 65504, 65504], np.float16))
    o1 = gm.outlier_correction(np.array([[127, 127, 1, 1]]), big_first, 2)
    o2 = gm.outlier_correction(np.array([[1, 1, 127, 127]]), small_first, 2)
    assert o1.tolist() == [[16638016.0, 0.0]] and o2.tolist() == [[16638017.0, 0.0]]


@PROPERTY
@given(seeds, rows, outs, cols, st.integers(0, 40))
def test_outlier_correction_matches_a_sequential_loop(seed, m, n, k, count):
    rng = np.random.default_rng(seed)
    xq = rng.integers(-127, 128, (m, k))
    outl = _outliers(rng, n, k, count)
    expect = np.zeros((m, n), np.float32)
    for r, c, v in zip(outl.rows, outl.cols, outl.values, strict=True):
        expect[:, r] = expect[:, r] + xq[:, c].astype(np.float32) * np.float32(v)
    np.testing.assert_array_equal(gm.outlier_correction(xq, outl, n), expect)


# --------------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_field_the_rule_and_the_value():
    xq = np.zeros((1, 4), np.int64)
    q = np.zeros((2, 4), np.int64)
    z = np.zeros((2, 1), np.int64)
    with pytest.raises(ValueError, match=r"`g` must be one of 2, 3, 4, 5, not 7"):
        gm.uniform_partials_lut(xq, q, z, 2, 4, g=7)
    with pytest.raises(ValueError, match=r"`bits` must be one of 1, 2, 3, 4, not 8"):
        gm.uniform_partials_lut(xq, q, z, 8, 4)
    with pytest.raises(ValueError, match=r"`xq` must be in \[-127, 127\], not -128"):
        gm.uniform_partials_mac(np.array([[-128, 0, 0, 0]]), q, z, 2, 4)
    with pytest.raises(ValueError, match=r"`q` must be in \[0, 3\], not 4"):
        gm.uniform_partials_bitserial(xq, q + 4, z, 2, 4)
    with pytest.raises(ValueError, match=r"`z` must have shape \(2, 2\), not \(2, 1\)"):
        gm.uniform_partials_mac(xq, q, z, 2, 3)
    with pytest.raises(ValueError, match=r"`q` must have K = 4 columns \(as `xq`\), not 3"):
        gm.uniform_partials_mac(xq, q[:, :3], z, 2, 4)
    with pytest.raises(ValueError, match=r"`group_size` must be a positive integer, not 0"):
        gm.uniform_partials_mac(xq, q, z, 2, 0)
    with pytest.raises(ValueError, match=r"`pe` must be one of lut, bitserial, mac, not 'gpu'"):
        gm.uniform_partials(xq, q, z, 2, 4, pe="gpu")
    with pytest.raises(ValueError, match=r"`xq` must be an integer array, not dtype float64"):
        gm.fast_partials(np.zeros((1, 4)), q, 4)
    with pytest.raises(ValueError, match=r"`codes\[0, 1\]` must be below 2\^bits\[1\] = 4, not 5"):
        gm.codebook_partials(xq, np.array([[0, 5, 0, 0]]), np.zeros((4, 8), np.int64),
                             [2, 2, 3, 2], 4)
    with pytest.raises(ValueError, match=r"`cq` must be in \[-127, 127\], not 200"):
        gm.codebook_partials(xq, q, np.full((4, 4), 200), 2, 4)
    with pytest.raises(ValueError, match=r"`bits` must be one of 2, 3, 4, not 5"):
        gm.codebook_layout([5, 2], 2)
    with pytest.raises(ValueError, match=r"`bits` must be one of 2, 3, 4, not 1"):
        gm.codebook_layout([2, 1], 2)     # a 1-bit column is uniform, not a codebook
    with pytest.raises(ValueError, match=r"`centroid_bits` must be one of 8, 16, not 12"):
        gm.quantize_codebooks(np.zeros((2, 4)), [2, 2], 2, 12)
    with pytest.raises(ValueError, match=r"`x` must be finite"):
        gm.quantize_activations([[1.0, np.nan]])
    unsorted = gm.Outliers(np.array([1, 0]), np.array([0, 0]), np.array([1, 1], np.float16))
    with pytest.raises(ValueError, match=r"`outliers` must be sorted by \(row, col\) without "
                                         r"duplicates, not \(0, 0\) at entry 1"):
        gm.outlier_correction(xq, unsorted, 2)
    with pytest.raises(ValueError, match=r"`outliers.values` must be float16, not dtype float32"):
        gm.outlier_correction(xq, unsorted._replace(values=np.ones(2, np.float32)), 2)


def test_golden_errors_are_bugs_not_user_errors():
    # The error boundary is where input enters (configs, .q files, programs): the golden model is
    # internal, so a bad argument keeps its traceback instead of becoming a one-line exit 2.
    with pytest.raises(ValueError, match=r"`g` must be one of 2, 3, 4, 5, not 7") as e:
        gm.build_table(np.zeros((1, 4), np.int64), 7)
    assert not isinstance(e.value, UserError)
