"""Operands for the binary32 units of `rtl.fp32`, as numpy bit patterns (uint32, int64, uint16):
directed corners and seeded random mixes. Pure numpy; the expected results are the test's (numpy
`float32` arithmetic), not computed here.

The random mixes are drawn from bit patterns, not from values, so every exponent and every class
(subnormal, infinity, NaN) is as likely as any other; each mix adds the neighbourhoods uniform
words rarely reach: near-equal exponents (cancellation), alignment distances around the
significand width, products at the underflow and overflow boundaries, short significands (exact
results and ties), integers of every bit length and near every rounding tie.
"""

import numpy as np

__all__ = ["SPECIALS", "corner_pairs", "fmul_directed", "fadd_directed", "fmul_random",
           "fadd_random", "int_directed", "int_random", "f16_all", "ties"]

#: Named binary32 corners; every pair of them is a directed case of `FMul` and `FAdd`.
SPECIALS = {
    "+0": 0x0000_0000, "-0": 0x8000_0000,
    "+min_sub": 0x0000_0001, "-min_sub": 0x8000_0001,
    "+sub_2": 0x0000_0002, "+sub_3": 0x0000_0003, "+sub_half": 0x0040_0000,
    "+max_sub": 0x007F_FFFF, "-max_sub": 0x807F_FFFF,
    "+min_normal": 0x0080_0000, "-min_normal": 0x8080_0000, "+2^-125": 0x0100_0000,
    "+max": 0x7F7F_FFFF, "-max": 0xFF7F_FFFF, "+2^127": 0x7F00_0000, "+2^103": 0x7380_0000,
    "+inf": 0x7F80_0000, "-inf": 0xFF80_0000,
    "qnan": 0x7FC0_0000, "snan": 0x7F80_0001, "-nan": 0xFFC0_0001,
    "+1": 0x3F80_0000, "-1": 0xBF80_0000, "1+ulp": 0x3F80_0001, "1+3ulp": 0x3F80_0003,
    "1-ulp/2": 0x3F7F_FFFF, "+2": 0x4000_0000, "+0.5": 0x3F00_0000, "+1.5": 0x3FC0_0000,
    "-1.5": 0xBFC0_0000, "+2^-23": 0x3400_0000, "+2^-24": 0x3380_0000, "-2^-24": 0xB380_0000,
    "+2^-25": 0x3300_0000,
}


def _u32(values):
    return np.asarray(values, dtype=np.uint64).astype(np.uint32)


def _word(rng, n, exp, sign=None, frac=None):
    """`n` binary32 words with the given exponent fields (an array or a scalar) and random (or
    given) fractions and signs."""
    if sign is None:
        sign = rng.integers(0, 2, n)
    if frac is None:
        frac = rng.integers(0, 1 << 23, n)
    exp = np.broadcast_to(np.asarray(exp, dtype=np.int64), (n,))
    return _u32((np.asarray(sign, np.int64) << 31) | (exp << 23) | np.asarray(frac, np.int64))


def corner_pairs():
    """Every ordered pair of `SPECIALS`: (a, b) uint32 arrays."""
    words = _u32(list(SPECIALS.values()))
    a, b = np.meshgrid(words, words, indexing="ij")
    return a.ravel(), b.ravel()


def _short_frac(rng, n, bits):
    """Fractions with only their top `bits` bits random (short significands)."""
    return rng.integers(0, 1 << bits, n) << (23 - bits)


def _concat(*pairs):
    return tuple(np.concatenate(column) for column in zip(*pairs, strict=True))


def _pairs(rng, n, ea, eb, fa=None, fb=None):
    return _word(rng, n, ea, frac=fa), _word(rng, n, eb, frac=fb)


def fmul_directed(rng, n=300):
    """(a, b) uint32 arrays: the corner pairs, then products that are ties (normal and subnormal
    results, both rounding directions), products rounding across the overflow boundary and
    products landing anywhere in the subnormal range."""
    # (odd m in [2^23, 2^25/3)) * 3 has exactly 25 bits, the last one set: a tie at the 24-bit
    # significand, rounding up or down as bit 1 of the product (the lower neighbour's last bit).
    m = rng.integers(1 << 22, (1 << 25) // 6, n) * 2 + 1
    normal_ties = _pairs(rng, n, rng.integers(64, 190, n), rng.integers(64, 190, n),
                         fa=m - (1 << 23), fb=np.full(n, 1 << 22))       # b = 1.5 * 2^e
    # Subnormal results: a significand with trailing zeros, times 1.0 or 1.5, scaled below
    # 2^-126 (result exponent 127 - 24 .. 127 below a's): the lowest set bit then falls on the
    # guard position of many shifts (a tie), above it (exact) or below it.
    zeros = rng.integers(0, 23, 4 * n)
    frac = (((rng.integers(0, 1 << 23, 4 * n) >> zeros) | 1) << zeros) & ((1 << 23) - 1)
    ea = rng.integers(1, 128, 4 * n)
    eb = np.clip(127 - ea + rng.integers(-25, 1, 4 * n), 1, 254)
    tiny = _pairs(rng, 4 * n, ea, eb, fa=frac, fb=rng.choice([0, 1 << 22], 4 * n))
    # Overflow: exponent sums around the largest finite, short significands for near-ties.
    ea = rng.integers(127, 255, n)
    big = _pairs(rng, n, ea, np.clip(254 + 127 - ea + rng.integers(-1, 2, n), 1, 254),
                 fa=_short_frac(rng, n, 3), fb=(1 << 23) - 1 - _short_frac(rng, n, 2))
    return _concat(corner_pairs(), normal_ties, tiny, big)


def fadd_directed(rng, n=300):
    """(a, b) uint32 arrays: the corner pairs, then sums that are ties (b half an ulp of a, or
    same-exponent significands whose carry drops an odd bit), exact cancellations (x + -x,
    subnormal and largest included), alignment distances 22 to 30 (the sticky bit), sums that
    overflow, and subnormal sums."""
    e = rng.integers(1, 254, n)
    half_ulp = _pairs(rng, n, e, np.maximum(e - 24, 0),
                      fb=np.where(rng.integers(0, 2, n) == 1, 0, rng.integers(1, 1 << 23, n)))
    same = _pairs(rng, n, e, e)
    a = _word(rng, n, rng.integers(0, 255, n))
    cancel = (np.concatenate([a, _u32([0x0000_0001, 0x7F7F_FFFF, 0x007F_FFFF])]),
              np.concatenate([a ^ np.uint32(0x8000_0000),
                              _u32([0x8000_0001, 0xFF7F_FFFF, 0x807F_FFFF])]))
    e = rng.integers(31, 254, n)
    distance = _pairs(rng, n, e, e - rng.integers(22, 31, n))
    # largest exponent, same signs: overflows whenever the carry-out survives rounding
    sign = rng.integers(0, 2, n)
    top = (_word(rng, n, 254, sign=sign), _word(rng, n, rng.integers(225, 255, n), sign=sign))
    tiny = _pairs(rng, n, rng.integers(0, 3, n), rng.integers(0, 3, n))
    boundary = (_u32([0x7F7F_FFFF, 0x7F7F_FFFF, 0x7F7F_FFFF, 0xFF7F_FFFF]),
                _u32([0x7380_0000, 0x7300_0000, 0x7380_0001, 0xF380_0000]))  # max + 2^103 ...
    return _concat(corner_pairs(), half_ulp, same, cancel, distance, top, tiny, boundary)


def fmul_random(rng, n):
    """`n` (a, b) pairs: a quarter uniform words, then products near underflow and overflow,
    subnormal operands and short significands."""
    k = n // 5
    uniform = (_u32(rng.integers(0, 1 << 32, k)), _u32(rng.integers(0, 1 << 32, k)))
    ea = rng.integers(1, 255, k)
    under = _pairs(rng, k, ea, np.clip(127 - ea + rng.integers(-30, 6, k), 0, 254))
    ea = rng.integers(127, 255, k)
    over = _pairs(rng, k, ea, np.clip(381 - ea + rng.integers(-3, 3, k), 0, 254))
    sub = _pairs(rng, k, 0, rng.integers(0, 255, k))
    r = n - 4 * k
    short = _pairs(rng, r, rng.integers(1, 254, r), rng.integers(1, 254, r),
                   fa=_short_frac(rng, r, 6), fb=_short_frac(rng, r, 6))
    return _concat(uniform, under, over, sub, short)


def fadd_random(rng, n):
    """`n` (a, b) pairs: uniform words, near-equal exponents (differences -3..3: cancellation),
    distances around the significand width, small exponents (subnormal sums) and short
    significands."""
    k = n // 5
    uniform = (_u32(rng.integers(0, 1 << 32, k)), _u32(rng.integers(0, 1 << 32, k)))
    ea = rng.integers(0, 255, k)
    near = _pairs(rng, k, ea, np.clip(ea + rng.integers(-3, 4, k), 0, 254))
    ea = rng.integers(0, 255, k)
    far = _pairs(rng, k, ea, np.clip(ea - rng.integers(20, 32, k), 0, 254))
    small = _pairs(rng, k, rng.integers(0, 4, k), rng.integers(0, 4, k))
    r = n - 4 * k
    ea = rng.integers(1, 254, r)
    short = _pairs(rng, r, ea, np.clip(ea + rng.integers(-26, 27, r), 1, 254),
                   fa=_short_frac(rng, r, 5), fb=_short_frac(rng, r, 5))
    return _concat(uniform, near, far, small, short)


def int_directed(width):
    """int64 array of directed integers of `width` bits (2 to 64): zero, ±1, the extremes, and
    around every power of two from 2^23: exact, ties rounding down and up to even, just off
    ties, and the double-rounding traps (a tie plus one in the last bit, which a detour through
    float64 would turn into a tie, for widths above 54)."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    values = {0, 1, -1, lo, hi, lo + 1, hi - 1}
    for p in range(23, width - 1):
        ulp = 1 << (p - 23)            # the spacing of binary32 in [2^p, 2^(p+1))
        for base in (1 << p, (1 << p) + ulp, (1 << (p + 1)) - ulp):
            for off in (0, ulp // 2, ulp // 2 + 1, ulp // 2 - 1, 1, -1):
                values |= {base + off, -(base + off)}
    return np.array(sorted(v for v in values if lo <= v <= hi), dtype=np.int64)


def int_random(rng, n, width):
    """`n` int64 integers of `width` bits (26 to 64): a third uniform, a third of uniform bit length
    (every exponent), a third near a rounding tie of a random bit length."""
    k = n // 3
    uniform = rng.integers(0, 1 << 63, k, dtype=np.uint64).astype(np.int64) >> (64 - width)
    uniform = np.where(rng.integers(0, 2, k) == 1, uniform, ~uniform)
    length = rng.integers(1, width, k)
    bits = rng.integers(0, 1 << 63, k, dtype=np.uint64) >> (63 - length).astype(np.uint64)
    spread = bits.astype(np.int64) * rng.choice([-1, 1], k)
    r = n - 2 * k
    p = rng.integers(24, width - 1, r)                      # bit length p + 1 above 2^24
    ulp = np.left_shift(np.int64(1), p - 23)
    top = (np.left_shift(np.int64(1), p) + ulp * rng.integers(0, 1 << 23, r))
    near = top + ulp // 2 + rng.integers(-1, 2, r)
    near = np.where(rng.integers(0, 2, r) == 1, near, -near)
    return np.concatenate([uniform, spread, near])


def f16_all():
    """Every binary16 word, 0 to 0xffff (uint16)."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def ties(exact, rounded):
    """(down, up) masks: where `exact` (float64, the exact result) lies halfway between two
    binary32 values and `rounded` (float32) went toward zero or away from it."""
    exact = np.asarray(exact, dtype=np.float64)
    rounded = np.asarray(rounded, dtype=np.float32)
    with np.errstate(all="ignore"):
        finite = np.isfinite(rounded) & np.isfinite(exact)
        toward = np.where(exact > rounded, np.float32(np.inf), np.float32(-np.inf))
        other = np.nextafter(rounded, toward.astype(np.float32))
        mid = (rounded.astype(np.float64) + other.astype(np.float64)) / 2
        tie = finite & (exact != rounded) & (mid == exact)
    away = np.abs(rounded.astype(np.float64)) > np.abs(exact)
    return tie & ~away, tie & away
