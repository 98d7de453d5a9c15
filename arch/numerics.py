"""The numeric formats that the quantizer, the compiler, the golden model and the RTL share.

These are the transformations that decide what the memory image holds, so every layer reads them
from here rather than from the golden model (`sim.golden`, which computes with them):

- activations: symmetric int8 per token row with one fp32 scale (`quantize_activations`), or one
  per token row and column group (`quantize_activations_grouped`, `pe.act_quant: token_group`),
  after an optional SmoothQuant migration (`smooth_activations`, the host's division by the
  scales that `quant.smooth` chose; `pe.act_quant: smooth`);
- uniform weights on the LUT array: the offline index inversion of the half table
  (`invert_index`, `restore_index`; LUT Tensor Core §3.1.2 Eq. 6);
- CLAQ codebook weights: the column permutation by bit width and the blocks of columns
  (`codebook_layout`), and the fixed-point centroids with one scale per block
  (`quantize_codebooks`; DESIGN.md section 3).

Ref: LUT Tensor Core (ISCA'25) §3.1.2 Eq. 4-6; CLAQ (arXiv 2405.17233) §3.

This is internal code: a bad argument is a bug in the caller, so it raises `ValueError` (and
keeps its traceback); user input is validated where it enters (`quant.qformat`, `arch.config`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arch.config import CENTROID_BITS, CODEBOOK_BITS, LUT_GROUPS

XQ_MAX = 127  # symmetric int8: -128 is never produced, so |xq| <= 127 bounds every product


# -- argument checks (shared with sim.golden) ---------------------------------------------------

def one_of(what, value, allowed):
    if value not in allowed:
        rule = ", ".join(str(a) for a in allowed)
        raise ValueError(f"`{what}` must be one of {rule}, not {value!r}")


def positive_int(what, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{what}` must be a positive integer, not {value!r}")
    return int(value)


def int_array(what, a, ndim):
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"`{what}` must be an integer array, not dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"`{what}` must be {ndim}-D, not shape {a.shape}")
    return a.astype(np.int64)


def in_range(what, a, lo, hi):
    if a.size:
        lo_seen, hi_seen = int(a.min()), int(a.max())
        if lo_seen < lo or hi_seen > hi:
            bad = lo_seen if lo_seen < lo else hi_seen
            raise ValueError(f"`{what}` must be in [{lo}, {hi}], not {bad}")


def check_shape(what, a, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"`{what}` must have shape {tuple(shape)}, not {a.shape}")


def check_xq(xq):
    xq = int_array("xq", xq, 2)
    if xq.shape[1] == 0:
        raise ValueError(f"`xq` must have at least one column, not shape {xq.shape}")
    in_range("xq", xq, -XQ_MAX, XQ_MAX)
    return xq


def n_groups(k, group_size):
    """Scale groups (or blocks) of `group_size` columns over `k`; the last may be short."""
    return -(-k // group_size)


# -- activations ---------------------------------------------------------------------------------

def quantize_activations(x):
    """Symmetric int8 per token row: `x ≈ sx[m] · xq[m, k]`.

    `x` is `[M, K]` float (cast to float32 first: the contract is defined on float32 inputs).
    `sx = max|x_row| / 127` in float32 (a zero row gets `sx = 1.0`),
    `xq = clip(rint(x / sx), -127, 127)` with the division in float32 and round-half-even.
    Returns `(xq int8 [M, K], sx float32 [M])`.
    Raises `ValueError` for a non-2-D or non-finite `x`.
    """
    x = _finite_2d(x)
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    sx = _scale_of(amax)
    return _round_int8(x, sx[:, None]), sx


def _finite_2d(x):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"`x` must be 2-D [M, K], not shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("`x` must be finite, not containing inf or nan")
    return x


def _scale_of(amax):
    """`amax / 127` in float32; 1.0 where `amax` is 0 (so that row's codes are 0)."""
    sx = amax / np.float32(XQ_MAX)
    return np.where(amax == 0, np.float32(1.0), sx).astype(np.float32)


def _round_int8(x, sx):
    # float32 rounding of sx can put max|x|/sx a hair above 127; the clip maps it back to 127.
    return np.clip(np.rint(x / sx), -XQ_MAX, XQ_MAX).astype(np.int8)


def quantize_activations_grouped(x, groups):
    """Symmetric int8 with one scale per token row and column group (`pe.act_quant:
    token_group`; T-MAC §3.3 quantizes its tables per group the same way).

    `x [M, K]` float; `groups` a sequence of J integer arrays of original columns that partition
    range(K) (the compiler's k-steps: scale groups of uniform weights, CLAQ blocks of codebook
    weights). Group j's scale and codes follow `quantize_activations` on `x[:, groups[j]]`.
    Returns `(xq int8 [M, K], sx float32 [M, J])`. Raises `ValueError` for a non-partition.
    """
    x = _finite_2d(x)
    m, k = x.shape
    seen = np.zeros(k, np.int64)
    xq = np.zeros((m, k), np.int8)
    sx = np.ones((m, len(groups)), np.float32)
    for j, cols in enumerate(groups):
        cols = np.asarray(cols, np.int64)
        if cols.size == 0:
            raise ValueError(f"`groups[{j}]` must hold at least one column, not none")
        seen[cols] += 1
        xq[:, cols], sx[:, j] = quantize_activations(x[:, cols])
    if k and not (seen == 1).all():
        raise ValueError("`groups` must cover every column exactly once, not "
                         f"column {int(np.argmax(seen != 1))} {int(seen[seen != 1][0])} times")
    return xq, sx


# -- SmoothQuant migration (the scales themselves are the quantizer's: `quant.smooth`) -------------

def smooth_activations(x, smooth):
    """The host's write under `pe.act_quant: smooth`: `float32(x) / float32(smooth)` per column,
    each division rounded to nearest in float32. `smooth [K]` positive."""
    x = _finite_2d(x)
    s = np.asarray(smooth, np.float32)
    if s.shape != (x.shape[1],) or not (np.isfinite(s) & (s > 0)).all():
        raise ValueError(f"`smooth` must be [K={x.shape[1]}] finite and positive, not "
                         f"shape {s.shape}")
    return x / s[None, :]


# -- the LUT index inversion ----------------------------------------------------------------------

def invert_index(idx, g):
    """The offline index inversion on static weights (LUT Tensor Core Eq. 6).

    For a raw g-bit table index `idx` returns `(sign, stored)`: `sign = idx & 1`, and
    `stored = idx >> 1` when sign is 1, else `(~idx >> 1) & (2^(g-1) − 1)`. The datapath reads
    `v = H[stored]` and negates it when `sign == 0`, because `T[idx] = −T[~idx]` (Eq. 4).
    """
    one_of("g", g, LUT_GROUPS)
    idx = np.asarray(idx, dtype=np.int64)
    sign = idx & 1
    stored = np.where(sign == 1, idx >> 1, (~idx >> 1) & (2 ** (g - 1) - 1))
    return sign, stored


def restore_index(sign, stored, g):
    """The raw g-bit table index that `invert_index` turned into `(sign, stored)`."""
    one_of("g", g, LUT_GROUPS)
    sign = np.asarray(sign, dtype=np.int64)
    stored = np.asarray(stored, dtype=np.int64)
    full = stored << 1 | 1
    return np.where(sign == 1, full, ~full & ((1 << g) - 1))


# -- codebook weights (CLAQ) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    """Columns of one bit width after the mixed-precision permutation.

    Members: `bits` (the width), `cols` (a slice of permuted columns), `blocks` (a slice of global
    block indices: blocks of `block_size` permuted columns that never cross a segment boundary).
    """

    bits: int
    cols: slice
    blocks: slice


@dataclass(frozen=True)
class CodebookLayout:
    """The column permutation and block structure of codebook weights (DESIGN.md section 3).

    Members: `perm [K]` (permuted column i is original column `perm[i]`: a stable sort by bit width,
    narrow first), `segments` (one `Segment` per distinct width, in permuted order), `nblocks`, and
    `block_of_col [K]` (the block of each *original* column).
    """

    perm: np.ndarray
    segments: tuple
    nblocks: int
    block_of_col: np.ndarray


def codebook_layout(bits, block_size):
    """The permutation and blocks for per-column widths `bits [K]` (each in 1..4)."""
    bits = int_array("bits", bits, 1)
    block_size = positive_int("block_size", block_size)
    for b in np.unique(bits):
        one_of("bits", int(b), CODEBOOK_BITS)
    # A stable sort keeps the original order inside a segment, so the permutation is canonical
    # and reproducible from `bits` alone; narrow first fixes the segment (and block) order.
    perm = np.argsort(bits, kind="stable")
    segments, block_of_col = [], np.zeros(len(bits), np.int64)
    start = block = 0
    for b in sorted(set(bits.tolist())):
        width = int((bits == b).sum())
        nb = n_groups(width, block_size)
        segments.append(Segment(b, slice(start, start + width), slice(block, block + nb)))
        block_of_col[perm[start : start + width]] = block + np.arange(width) // block_size
        start, block = start + width, block + nb
    return CodebookLayout(perm, tuple(segments), block, block_of_col)


def quantize_codebooks(codebooks, bits, block_size, centroid_bits=8):
    """Fixed-point centroids with one symmetric float32 scale per block of input columns.

    `codebooks [K, C]` float (C >= 2^max(bits); entries past 2^bits[k] are unused), `bits [K]`,
    blocks as in `codebook_layout`. `cs = max|centroid in block| / (2^(cb−1) − 1)` in float32
    (1.0 for an all-zero block); `cq = clip(rint(c / cs), ±(2^(cb−1) − 1))` (unused entries 0).
    Returns `(cq [K, C]` int8 or int16, `block_scale [nblocks]` float32);
    `w ≈ cs[blk(k)]·cq[k, code]` with `|c − cs·cq| <= cs/2`.
    """
    one_of("centroid_bits", centroid_bits, CENTROID_BITS)
    layout = codebook_layout(bits, block_size)
    cb = np.asarray(codebooks, dtype=np.float32)
    bits = np.asarray(bits, np.int64)
    if cb.ndim != 2 or cb.shape[0] != len(bits) or cb.shape[1] < 2 ** int(bits.max(initial=0)):
        raise ValueError(
            f"`codebooks` must be [K={len(bits)}, C >= 2^max(bits)], not shape {cb.shape}"
        )
    if not np.isfinite(cb).all():
        raise ValueError("`codebooks` must be finite, not containing inf or nan")
    used = np.arange(cb.shape[1])[None, :] < (1 << bits)[:, None]
    cb = np.where(used, cb, np.float32(0))
    cmax = 2 ** (centroid_bits - 1) - 1
    amax = np.zeros(layout.nblocks, np.float32)
    np.maximum.at(amax, layout.block_of_col, np.abs(cb).max(axis=1))
    scale = np.where(amax == 0, np.float32(1.0), amax / np.float32(cmax)).astype(np.float32)
    cs = scale[layout.block_of_col].astype(np.float64)[:, None]
    cq = np.clip(np.rint(cb.astype(np.float64) / cs), -cmax, cmax)
    return cq.astype(np.int8 if centroid_bits == 8 else np.int16), scale
