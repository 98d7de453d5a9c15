"""The bit-exact golden model of bitlut's numerics (DESIGN.md section 3; docs/numerics.md).

Ref: LUT Tensor Core (ISCA'25) §3.1.2 Eq. 1–6 (±1 bit planes, half table, offline index inversion);
T-MAC (EuroSys'25) §3.3 (Σx read from the table); CLAQ (arXiv 2405.17233) §1–3 (per-column
codebooks, adaptive precision, outlier reservation); BISMO (FPL'18) §3.1 (MSB-first shift-and-add).

Every path computes `Y[M,N] = X[M,K] · Wᵀ` (W is `[N,K]`) in two stages:

1. an integer stage, one partial `P[m,n,j]` per scale group (uniform weights) or centroid block
   (codebook weights), which every PE kind (`lut`, `bitserial`, `mac`) and the fast matmul path
   produce bit-exactly (int64 here; the hardware's int32 is justified by `accumulator_bounds`);
2. a float32 epilogue (`epilogue`) in a fixed order, so that every backend can match it bit for bit.

The kernels are vectorised numpy: loops run only over groups, bit planes, table columns or ranks.
Integers are int64 throughout, so no path can overflow silently; `check_accumulator` says whether
the hardware's narrower accumulator holds a configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from arch.config import (  # noqa: F401  (the domains are part of this module's interface)
    ACT_QUANTS,
    CENTROID_BITS,
    CODEBOOK_BITS,
    LUT_GROUPS,
    LUT_WEIGHT_BITS,
    PE_KINDS,
    UNIFORM_BITS,
)
from arch.numerics import (  # noqa: F401  (re-exported: the golden model's own vocabulary)
    XQ_MAX,
    CodebookLayout,
    Segment,
    check_shape,
    check_xq,
    codebook_layout,
    in_range,
    int_array,
    invert_index,
    n_groups,
    one_of,
    positive_int,
    quantize_activations,
    quantize_activations_grouped,
    quantize_codebooks,
    restore_index,
    smooth_activations,
)

# --------------------------------------------------------------------------------------------------
# uniform weights: checks and layouts


def _check_uniform(xq, q, z, bits, group_size, allowed_bits):
    xq = check_xq(xq)
    one_of("bits", bits, allowed_bits)
    group_size = positive_int("group_size", group_size)
    q = int_array("q", q, 2)
    z = int_array("z", z, 2)
    m, k = xq.shape
    if q.shape[1] != k:
        raise ValueError(f"`q` must have K = {k} columns (as `xq`), not {q.shape[1]}")
    check_shape("z", z, (q.shape[0], n_groups(k, group_size)))
    in_range("q", q, 0, 2**bits - 1)
    in_range("z", z, 0, 2**bits - 1)
    return xq, q, z, group_size


def _group_layout(k, group_size):
    """Columns of each group padded to the longest: `(cols [J, W], valid [J, W])`."""
    j = np.arange(n_groups(k, group_size))[:, None]
    i = np.arange(min(group_size, k))[None, :]
    cols = j * group_size + i
    valid = cols < k
    return np.where(valid, cols, 0), valid


def _table_layout(k, group_size, g):
    """Table groups of `g` columns that restart at each group boundary, padded:
    `(cols [J, L, g], valid [J, L, g])` with L = ceil(min(G, K) / g)."""
    width = min(group_size, k)
    j = np.arange(n_groups(k, group_size))[:, None, None]
    slot = (np.arange(-(-width // g))[:, None] * g + np.arange(g)[None, :])[None]
    cols = j * group_size + slot
    valid = (slot < group_size) & (cols < k)
    return np.where(valid, cols, 0), valid


def _gather(a, cols, valid):
    """`a[:, cols]` with padded slots set to 0 (a zero activation contributes nothing)."""
    return np.where(valid, a[:, cols], 0)


def decode_uniform(q, z, group_size):
    """The integer weight every uniform path multiplies by: `q[n,k] - z[n, k // group_size]`."""
    q = np.asarray(q, np.int64)
    grp = np.arange(q.shape[1]) // group_size
    return q - np.asarray(z, np.int64)[:, grp]


# --------------------------------------------------------------------------------------------------
# the LUT tables


def table_entries(g, symmetric):
    """Entries per table per token row: 2^g for the full table, 2^(g-1) for the half table."""
    one_of("g", g, LUT_GROUPS)
    return 2 ** (g - 1) if symmetric else 2**g


def build_table(xq_group, g, symmetric=False):
    """The g-activation table of one or many table groups (LUT Tensor Core Fig. 3, Eq. 4–5).

    `xq_group` is `[..., w]` with `w <= g` activations (missing columns are zero-padded: a zero
    activation adds 0 to every entry). Full table: `T[..., idx] = Σ_i x_i·(2·bit_i(idx) − 1)`, bit 0
    of `idx` belonging to the first column, shape `[..., 2^g]`. Half table (`symmetric`):
    `H[..., j] = T[..., (j << 1) | 1]`, shape `[..., 2^(g-1)]`. Returns int64.
    """
    one_of("g", g, LUT_GROUPS)
    x = np.asarray(xq_group, dtype=np.int64)
    if x.shape[-1] > g:
        raise ValueError(f"`xq_group` must have at most g = {g} columns, not {x.shape[-1]}")
    x = np.concatenate([x, np.zeros(x.shape[:-1] + (g - x.shape[-1],), np.int64)], axis=-1)
    # Doubling: adding column i as index bit i puts (old − x_i) in the lower half and (old + x_i)
    # in the upper, the adder tree of the precompute unit. The half table fixes bit 0 to 1 (+x_0)
    # and so needs half the adders.
    t = x[..., :1] if symmetric else np.concatenate([-x[..., :1], x[..., :1]], axis=-1)
    for i in range(1, g):
        xi = x[..., i : i + 1]
        t = np.concatenate([t - xi, t + xi], axis=-1)
    return t


def lut_indices(q, bits, group_size, g, symmetric):
    """The LUT weight stream: per bit plane p, the g-bit table index of each table group.

    `q` is `[N, K]` codes. Returns `(idx, sign)`, each `[bits, N, J, L]`: with `symmetric` the
    index is the inverted `stored` index and `sign` the sign bit (`invert_index`); without, `idx` is
    the raw index and `sign` is all ones. Padded slots carry bit 0 (their activation is zero).
    """
    one_of("bits", bits, LUT_WEIGHT_BITS)
    one_of("g", g, LUT_GROUPS)
    group_size = positive_int("group_size", group_size)
    q = int_array("q", q, 2)
    in_range("q", q, 0, 2**bits - 1)
    cols, valid = _table_layout(q.shape[1], group_size, g)
    qp = _gather(q, cols, valid)  # [N, J, L, g]
    weights = 1 << np.arange(g)
    idx = np.stack([(((qp >> p) & 1) * weights).sum(-1) for p in range(bits)])
    if symmetric:
        sign, idx = invert_index(idx, g)
    else:
        sign = np.ones_like(idx)
    return idx, sign


def _track(stats, key, *arrays):
    if stats is not None:
        seen = max((int(np.abs(a).max()) for a in arrays if np.size(a)), default=0)
        stats[key] = max(stats.get(key, 0), seen)


# --------------------------------------------------------------------------------------------------
# uniform weights: the four paths


def uniform_partials_lut(xq, q, z, bits, group_size, g=4, symmetric=True, stats=None):
    """(a) LUT Tensor Core path: ±1 bit planes, g-activation tables, zero/offset after the sum.

    `xq [M,K]` int in [−127, 127]; `q [N,K]` codes in [0, 2^bits); `z [N,J]` integer zeros in
    [0, 2^bits − 1]; `bits` in 1..4; `g` in 2..5; `symmetric` selects the half table with the
    offline index inversion. With `q' = 2q − (2^b − 1)` and `z' = 2z + 1 − 2^b`:
    `acc = Σ_p 2^p Σ_tables T[idx_p] = Σ x·q'`, Σx is read from the tables, and
    `P = (acc − z'·Σx) >> 1` (always even). Returns `P [M, N, J]` int64. `stats`, if a dict, gets
    the largest |table entry| (`max_table`) and |intermediate| (`max_acc`) seen.
    Raises `ValueError`.
    """
    xq, q, z, group_size = _check_uniform(xq, q, z, bits, group_size, LUT_WEIGHT_BITS)
    one_of("g", g, LUT_GROUPS)
    cols, valid = _table_layout(xq.shape[1], group_size, g)
    table = build_table(_gather(xq, cols, valid), g, symmetric)  # [M, J, L, E], once per row
    _track(stats, "max_table", table)
    idx, sign = lut_indices(q, bits, group_size, g, symmetric)  # [b, N, J, L], offline
    jj = np.arange(cols.shape[0])[None, :, None]
    ll = np.arange(cols.shape[1])[None, None, :]
    # contrib[m, n, j, l, p] = ±T[idx_p] << p; the hardware walks p fastest within a table group.
    contrib = np.stack(
        [np.where(sign[p] == 1, 1, -1) * table[:, jj, ll, idx[p]] << p for p in range(bits)],
        axis=-1,
    )
    acc = contrib.sum(axis=(-2, -1))
    # Σx over a table group is −T[0] (all bits −1) = H[2^(g−1) − 1] (all bits +1).
    sumx = (table[..., -1] if symmetric else -table[..., 0]).sum(-1)  # [M, J]
    zp = 2 * z + 1 - 2**bits
    offset = zp[None] * sumx[:, None, :]
    twice = acc - offset
    if stats is not None:
        m, n, j = acc.shape
        running = np.cumsum(contrib.reshape(m, n, j, -1), axis=-1)
        _track(stats, "max_acc", contrib, running, offset, twice)
    # q' − z' = 2(q − z): the ±1 algebra doubles P, so the halving is exact.
    assert not (twice & 1).any(), "LUT path produced an odd 2P"
    return twice >> 1


def uniform_partials_bitserial(xq, q, z, bits, group_size, stats=None):
    """(c) Bit-serial PE (Stripes/BitMoD style, weight-serial): one unsigned weight bit per step.

    MSB first with shift-and-add (BISMO's Horner order): `acc = 2·acc + Σ_k x_k·q_{k,p}`, then
    `P = acc − z·Σx`. Arguments as `uniform_partials_lut`, `bits` in 1..8. Returns `P [M, N, J]`.
    """
    xq, q, z, group_size = _check_uniform(xq, q, z, bits, group_size, UNIFORM_BITS)
    cols, valid = _group_layout(xq.shape[1], group_size)
    xg = _gather(xq, cols, valid)  # [M, J, W]
    qg = _gather(q, cols, valid)  # [N, J, W]
    acc = np.zeros((xq.shape[0], q.shape[0], cols.shape[0]), np.int64)
    for p in reversed(range(bits)):
        plane = np.einsum("mjw,njw->mnj", xg, (qg >> p) & 1)
        _track(stats, "max_acc", 2 * acc)
        acc = 2 * acc + plane
        _track(stats, "max_acc", acc)
    offset = z[None] * xg.sum(-1)[:, None, :]
    _track(stats, "max_acc", offset)
    return acc - offset


def _mac(xq, w_int, group_size, stats):
    """Products then a running sum per group, as a MAC array does."""
    prod = xq[:, None, :] * w_int[None, :, :]  # [M, N, K]
    starts = np.arange(0, xq.shape[1], group_size)
    if stats is not None:
        for s in starts:
            _track(stats, "max_acc", np.cumsum(prod[..., s : s + group_size], axis=-1))
    if xq.shape[1] == 0:
        return np.zeros((xq.shape[0], w_int.shape[0], 0), np.int64)
    return np.add.reduceat(prod, starts, axis=-1)


def uniform_partials_mac(xq, q, z, bits, group_size, stats=None):
    """(d) MAC baseline: dequantize to the integer `q − z`, multiply, accumulate per group.

    Arguments as `uniform_partials_lut`, `bits` in 1..8. Returns `P [M, N, J]` int64.
    """
    xq, q, z, group_size = _check_uniform(xq, q, z, bits, group_size, UNIFORM_BITS)
    return _mac(xq, decode_uniform(q, z, group_size), group_size, stats)


def uniform_partials(xq, q, z, bits, group_size, pe="lut", g=4, symmetric=True, stats=None):
    """Dispatch to the `pe` kind's uniform kernel (`g` and `symmetric` matter only for `lut`)."""
    one_of("pe", pe, PE_KINDS)
    if pe == "lut":
        return uniform_partials_lut(xq, q, z, bits, group_size, g, symmetric, stats)
    if pe == "bitserial":
        return uniform_partials_bitserial(xq, q, z, bits, group_size, stats)
    return uniform_partials_mac(xq, q, z, bits, group_size, stats)


def fast_partials(xq, w_int, group_size):
    """The fast path: `P[:, :, j] = xq[:, grp j] @ w_int[:, grp j].T`, exactly.

    Every kernel's P equals this integer product of the decoded operands (`decode_uniform`,
    `decode_codebook`). Computed with float64 BLAS when every partial is below 2^53 (then each
    product and partial sum is an exactly representable integer, so any summation order is exact),
    else with int64. `xq [M, K]`, `w_int [N, K]` integers. Returns `[M, N, J]` int64.
    """
    xq = check_xq(xq)
    w = int_array("w_int", w_int, 2)
    k = xq.shape[1]
    if w.shape[1] != k:
        raise ValueError(f"`w_int` must have K = {k} columns (as `xq`), not {w.shape[1]}")
    group_size = positive_int("group_size", group_size)
    wmax = int(np.abs(w).max()) if w.size else 0
    exact_f64 = XQ_MAX * min(group_size, max(k, 1)) * wmax < 2**53
    dtype = np.float64 if exact_f64 else np.int64
    # One batched product over groups: zero-pad K to J·G (zeros add nothing), [J, M, G] @ [J, G, N].
    j, width = n_groups(k, group_size), min(group_size, k)
    pad = j * width - k
    xd = np.pad(xq.astype(dtype), ((0, 0), (0, pad))).reshape(xq.shape[0], j, width)
    wd = np.pad(w.astype(dtype), ((0, 0), (0, pad))).reshape(w.shape[0], j, width)
    # Contiguous operands keep numpy's batched matmul on BLAS (a strided view falls off it).
    xt = np.ascontiguousarray(xd.transpose(1, 0, 2))
    out = np.matmul(xt, np.ascontiguousarray(wd.transpose(1, 2, 0)))  # [J, M, N]
    return out.transpose(1, 2, 0).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# codebook weights (CLAQ)


def decode_codebook(codes, cq):
    """The integer weight of the codebook paths: `cq[k, codes[n, k]]`, `[N, K]` int64."""
    codes = np.asarray(codes, np.int64)
    return np.asarray(cq, np.int64)[np.arange(codes.shape[1])[None, :], codes]


def build_codebook_table(xq_group, cq_group, b):
    """The codebook table of g columns (DESIGN.md section 3): built once per row, shared by all N.

    `xq_group [..., g]` activations, `cq_group [..., g, C]` the fixed-point codebooks of those
    columns (broadcast against `xq_group`'s leading axes). `T[..., e] = Σ_i x_i·cq_i[c_i(e)]` where
    `c_i(e) = (e >> (i·b)) & (2^b − 1)`: the first column's code in the low bits. Shape
    `[..., 2^(g·b)]` int64.
    """
    x = np.asarray(xq_group, np.int64)
    c = np.asarray(cq_group, np.int64)
    g = x.shape[-1]
    e = np.arange(2 ** (g * b))
    t = 0
    for i in range(g):
        sel = c[..., i, :][..., (e >> (i * b)) & (2**b - 1)]
        t = t + x[..., i, None] * sel
    return np.asarray(t, np.int64) + np.zeros(x.shape[:-1] + (len(e),), np.int64)


def _cb_lut(xs, codes, cqs, b, block_size, index_bits, stats):
    g = index_bits // b
    cols, valid = _table_layout(xs.shape[1], block_size, g)  # [J, L, g]
    cq_pad = np.where(valid[..., None], cqs[cols], 0)  # [J, L, g, C]
    table = build_codebook_table(_gather(xs, cols, valid), cq_pad, b)  # [M, J, L, 2^(g·b)]
    _track(stats, "max_table", table)
    cp = _gather(codes, cols, valid)  # [N, J, L, g]
    idx = (cp << (b * np.arange(g))).sum(-1)  # offline: codes concatenated, first column low
    jj = np.arange(cols.shape[0])[None, :, None]
    ll = np.arange(cols.shape[1])[None, None, :]
    v = table[:, jj, ll, idx]  # [M, N, J, L]
    _track(stats, "max_acc", np.cumsum(v, axis=-1))
    return v.sum(-1)


def _cb_bitserial(xs, w_int, block_size, centroid_bits, stats):
    cols, valid = _group_layout(xs.shape[1], block_size)
    xg = _gather(xs, cols, valid)
    ug = _gather(w_int & (2**centroid_bits - 1), cols, valid)  # two's complement bit pattern
    acc = np.zeros((xs.shape[0], w_int.shape[0], cols.shape[0]), np.int64)
    for p in reversed(range(centroid_bits)):
        plane = np.einsum("mjw,njw->mnj", xg, (ug >> p) & 1)
        _track(stats, "max_acc", 2 * acc)
        # The MSB plane weighs −2^(cb−1): in Horner form it enters first, negated.
        acc = -plane if p == centroid_bits - 1 else 2 * acc + plane
        _track(stats, "max_acc", acc)
    return acc


@dataclass(frozen=True)
class CodebookPartials:
    """Per-segment partials of codebook weights.

    Members: `layout` (`CodebookLayout`: the permutation and blocks), `partials` (a tuple, one
    `[M, N, nblocks_s]` int64 array per segment, in segment order). `stacked()` concatenates them
    into `[M, N, nblocks]` in global block order, the order the epilogue accumulates in.
    """

    layout: CodebookLayout
    partials: tuple

    @property
    def perm(self):
        return self.layout.perm

    def stacked(self):
        return np.concatenate(self.partials, axis=-1)


def codebook_partials(xq, codes, cq, bits, block_size, pe="lut", index_bits=4, centroid_bits=8,
                      fast=False, stats=None):
    """Integer partials `P[m, n, blk] = Σ_{k∈blk} xq[m,k]·cq[k, codes[n,k]]` of CLAQ weights.

    `xq [M,K]` int in [−127, 127]; `codes [N,K]` with `codes[n,k] < 2^bits[k]`; `cq [K, C]` integer
    centroids within ±(2^(centroid_bits−1) − 1); `bits [K]` (or one int for all columns) in 1..4.
    Columns are permuted by `codebook_layout` (stable, narrow first); each segment is lowered on its
    own: `lut` groups `g = index_bits // b` columns into a table of 2^(g·b) entries, `bitserial`
    serializes the two's-complement centroid over `centroid_bits` planes, `mac` multiplies by the
    centroid; `fast` uses `fast_partials`. Returns `CodebookPartials`. Raises `ValueError`.
    """
    xq = check_xq(xq)
    m, k = xq.shape
    if np.ndim(bits) == 0:
        bits = np.full(k, bits, np.int64)
    one_of("pe", pe, PE_KINDS)
    one_of("centroid_bits", centroid_bits, CENTROID_BITS)
    layout = codebook_layout(bits, block_size)
    bits = np.asarray(bits, np.int64)
    check_shape("bits", bits, (k,))
    codes = int_array("codes", codes, 2)
    cq = int_array("cq", cq, 2)
    if codes.shape[1] != k:
        raise ValueError(f"`codes` must have K = {k} columns (as `xq`), not {codes.shape[1]}")
    if cq.shape[0] != k or cq.shape[1] < 2 ** int(bits.max(initial=0)):
        raise ValueError(f"`cq` must be [K={k}, C >= 2^max(bits)], not shape {cq.shape}")
    in_range("codes", codes, 0, 2**4 - 1)
    over = codes >= (1 << bits)[None, :]
    if over.any():
        n, kk = np.argwhere(over)[0]
        raise ValueError(
            f"`codes[{n}, {kk}]` must be below 2^bits[{kk}] = {2 ** bits[kk]}, not {codes[n, kk]}"
        )
    cmax = 2 ** (centroid_bits - 1) - 1
    in_range("cq", cq, -cmax, cmax)
    if pe == "lut":
        one_of("index_bits", index_bits, tuple(range(int(bits.max(initial=1)), 9)))
    out = []
    for seg in layout.segments:
        cols = layout.perm[seg.cols]
        xs, cs, cqs = xq[:, cols], codes[:, cols], cq[cols]
        if fast:
            out.append(fast_partials(xs, decode_codebook(cs, cqs), block_size))
        elif pe == "lut":
            out.append(_cb_lut(xs, cs, cqs, seg.bits, block_size, index_bits, stats))
        elif pe == "bitserial":
            w = decode_codebook(cs, cqs)
            out.append(_cb_bitserial(xs, w, block_size, centroid_bits, stats))
        else:
            out.append(_mac(xs, decode_codebook(cs, cqs), block_size, stats))
    if not out:
        out.append(np.zeros((m, codes.shape[0], 0), np.int64))
    return CodebookPartials(layout, tuple(out))


# --------------------------------------------------------------------------------------------------
# outliers and the epilogue


class Outliers(NamedTuple):
    """CLAQ outlier reservation: a sparse fp16 correction `S` with `W_total = W + S`.

    Members: `rows [nnz]` (output row n), `cols [nnz]` (original input column k), `values [nnz]`
    (float16), sorted by (row, col) without duplicates.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray


def outlier_correction(xq, outliers, n):
    """`O[m, n] = Σ_{entries of row n, list order} float32(xq[m, k])·float32(value)` in float32.

    `xq [M, K]`; `outliers` an `Outliers` sorted by (row, col) with no duplicate; `n` the number
    of output rows. Each row's entries are accumulated in list order starting from 0.0f
    (vectorised over rows by rank within the row). Returns `[M, n]` float32. Raises `ValueError`.
    """
    xq = check_xq(xq)
    rows = int_array("outliers.rows", outliers.rows, 1)
    cols = int_array("outliers.cols", outliers.cols, 1)
    vals = np.asarray(outliers.values)
    if vals.dtype != np.float16:
        raise ValueError(f"`outliers.values` must be float16, not dtype {vals.dtype}")
    if not (len(rows) == len(cols) == len(vals)):
        raise ValueError(
            f"`outliers` must have rows, cols and values of one length, not "
            f"{len(rows)}, {len(cols)}, {len(vals)}"
        )
    in_range("outliers.rows", rows, 0, n - 1)
    in_range("outliers.cols", cols, 0, xq.shape[1] - 1)
    key = rows * max(xq.shape[1], 1) + cols
    if (np.diff(key) <= 0).any():
        at = int(np.argmax(np.diff(key) <= 0)) + 1
        raise ValueError(
            f"`outliers` must be sorted by (row, col) without duplicates, not "
            f"({rows[at]}, {cols[at]}) at entry {at}"
        )
    out = np.zeros((xq.shape[0], n), np.float32)
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    xf = xq.astype(np.float32)
    v32 = vals.astype(np.float32)
    for r in range(int(rank.max(initial=-1)) + 1):
        sel = rank == r  # at most one entry per row, so the fancy-index update never collides
        out[:, rows[sel]] = out[:, rows[sel]] + xf[:, cols[sel]] * v32[sel]
    return out


def _partials_and_scales(partials, scales):
    """`partials [M, N, J]` as an array and `scales` as float32 `[N, J]` (a codebook's block
    scales `[J]` broadcast over the outputs), checked against the partials' shape."""
    p = np.asarray(partials)
    _, n, j = p.shape
    s = np.asarray(scales, dtype=np.float32)
    if s.ndim == 1:
        s = np.broadcast_to(s[None, :], (n, len(s)))
    check_shape("scales", s, (n, j))
    return p, s


def epilogue(partials, scales, sx, correction=None):
    """The vector unit, float32 in a fixed order (the definition every backend matches bit for bit).

    `y = 0.0f; for j: y = y + float32(scales[n, j])·float32(P[m, n, j])`; then `y = y + O` if a
    `correction` `[M, N]` (from `outlier_correction`) is given; then `y = float32(sx[m])·y`.
    `partials [M, N, J]` int; `scales [N, J]` (uniform) or `[J]` (codebook block scales);
    `sx [M]`. int→float32 and every product and sum round to nearest even; no fused multiply-add.
    Returns `[M, N]` float32.
    """
    p, s = _partials_and_scales(partials, scales)
    m, n, j = p.shape
    y = np.zeros((m, n), np.float32)
    for i in range(j):
        y = y + s[None, :, i] * p[:, :, i].astype(np.float32)
    if correction is not None:
        y = y + np.asarray(correction, np.float32)
    return np.asarray(sx, np.float32)[:, None] * y


def outlier_correction_grouped(xq, outliers, n, group_of_col):
    """`{j: O_j [M, n]}` for every column group j that holds an outlier: `outlier_correction` of
    the entries whose column lies in group j (their list order kept), for `pe.act_quant:
    token_group`, where each group's codes have their own scale. `group_of_col [K]`."""
    group_of_col = int_array("group_of_col", group_of_col, 1)
    cols = int_array("outliers.cols", outliers.cols, 1)
    out = {}
    for j in np.unique(group_of_col[cols]):
        sel = group_of_col[cols] == j
        out[int(j)] = outlier_correction(
            xq, Outliers(np.asarray(outliers.rows)[sel], cols[sel],
                         np.asarray(outliers.values)[sel]), n)
    return out


def epilogue_grouped(partials, scales, sx, corrections=None):
    """The vector unit under `pe.act_quant: token_group`, float32 in a fixed order: each group's
    activation scale is folded into its dequantization,

        y = 0.0f
        for j = 0 … J−1:  y = y + (float32(s[n,j])·float32(P[m,n,j]))·sx[m,j]
                          if j has outliers: y = y + O_j[m,n]·sx[m,j]

    with no final row scale. `sx [M, J]`; `corrections` `{j: O_j [M, N]}` from
    `outlier_correction_grouped`; otherwise as `epilogue`. Returns `[M, N]` float32.
    """
    p, s = _partials_and_scales(partials, scales)
    m, n, j = p.shape
    sx = np.asarray(sx, np.float32)
    check_shape("sx", sx, (m, j))
    corrections = corrections or {}
    y = np.zeros((m, n), np.float32)
    for i in range(j):
        y = y + (s[None, :, i] * p[:, :, i].astype(np.float32)) * sx[:, i, None]
        if i in corrections:
            y = y + np.asarray(corrections[i], np.float32) * sx[:, i, None]
    return y


def _activations(x, act_quant, group_of_col, smooth):
    """(xq, sx) of `x` under `act_quant`; `group_of_col [K]` the column groups (token_group)."""
    one_of("act_quant", act_quant, ACT_QUANTS)
    if act_quant == "smooth":
        if smooth is None:
            raise ValueError("`smooth` must be given for act_quant smooth, not None")
        return quantize_activations(smooth_activations(x, smooth))
    if act_quant == "token_group":
        groups = [np.nonzero(group_of_col == j)[0] for j in range(int(group_of_col.max()) + 1)]
        return quantize_activations_grouped(x, groups)
    return quantize_activations(x)


def _finish(p, scales, sx, xq, outliers, act_quant, group_of_col):
    if act_quant == "token_group":
        corr = (None if outliers is None
                else outlier_correction_grouped(xq, outliers, p.shape[1], group_of_col))
        return epilogue_grouped(p, scales, sx, corr)
    corr = None if outliers is None else outlier_correction(xq, outliers, p.shape[1])
    return epilogue(p, scales, sx, corr)


# --------------------------------------------------------------------------------------------------
# whole layers


def uniform_matmul(x, q, scales, zeros, bits, group_size, pe="lut", g=4, symmetric=True,
                   outliers=None, fast=False, act_quant="token", smooth=None):
    """`Y = X·Wᵀ` for uniform weights through one PE path (or `fast`), float32 `[M, N]`.

    `x [M, K]` float; `q [N, K]`, `zeros [N, J]` integers; `scales [N, J]` float32; `outliers` an
    optional `Outliers`. Quantizes `x` as `act_quant` says (`token`: `quantize_activations`;
    `token_group`: one scale per row and scale group; `smooth`: `x / smooth` per token, the
    weights being the smoothed ones), computes P, then `epilogue` (`epilogue_grouped`).
    """
    k = np.asarray(x).shape[-1]
    group_of_col = np.arange(k) // (group_size or k)
    xq, sx = _activations(x, act_quant, group_of_col, smooth)
    if fast:
        xq, q, zeros, group_size = _check_uniform(xq, q, zeros, bits, group_size, UNIFORM_BITS)
        p = fast_partials(xq, decode_uniform(q, zeros, group_size), group_size)
    else:
        p = uniform_partials(xq, q, zeros, bits, group_size, pe, g, symmetric)
    return _finish(p, scales, sx, xq, outliers, act_quant, group_of_col)


def codebook_matmul(x, codes, cq, block_scale, bits, block_size, pe="lut", index_bits=4,
                    centroid_bits=8, outliers=None, fast=False, act_quant="token", smooth=None):
    """`Y = X·Wᵀ` for CLAQ codebook weights, float32 `[M, N]`; arguments as `codebook_partials`,
    `block_scale [nblocks]` from `quantize_codebooks`; `act_quant` as `uniform_matmul`, the
    token_group groups being the blocks."""
    group_of_col = codebook_layout(bits, block_size).block_of_col
    xq, sx = _activations(x, act_quant, group_of_col, smooth)
    parts = codebook_partials(xq, codes, cq, bits, block_size, pe, index_bits, centroid_bits, fast)
    return _finish(parts.stacked(), block_scale, sx, xq, outliers, act_quant, group_of_col)


# --------------------------------------------------------------------------------------------------
# accumulator widths


@dataclass(frozen=True)
class AccumulatorBounds:
    """Worst-case magnitudes on one path's integer datapath, over all inputs with |xq| <= 127.

    Members: `max_table` (largest |table entry|, 0 without a table), `max_partial` (largest |P| of
    one group or block), `max_acc` (largest |intermediate|: running sums, shifted planes, the
    zero/offset term, and for the LUT path 2P). All are attained by some input (docs/numerics.md).
    """

    max_table: int
    max_partial: int
    max_acc: int

    def bits_needed(self):
        """Signed width that holds `max_acc` (and the table entries)."""
        return max(self.max_acc, self.max_table).bit_length() + 1


def accumulator_bounds(pe, weights, k, bits, group_size, g=4, centroid_bits=8, index_bits=4):
    """Worst-case magnitudes (`AccumulatorBounds`) for a path and configuration.

    `pe` in `PE_KINDS`; `weights` is `uniform` or `codebook`; `k` input columns (of the segment,
    for codebooks); `bits` weight bits (the segment's width for codebooks); `group_size` the scale
    group or centroid block; `g` the uniform LUT group; `centroid_bits` 8 or 16; `index_bits` the
    codebook table index width. The group that matters is `G = min(group_size, k)`.
    """
    one_of("pe", pe, PE_KINDS)
    one_of("weights", weights, ("uniform", "codebook"))
    k = positive_int("k", k)
    gsz = min(positive_int("group_size", group_size), k)
    if weights == "uniform":
        one_of("bits", bits, LUT_WEIGHT_BITS if pe == "lut" else UNIFORM_BITS)
        partial = XQ_MAX * gsz * (2**bits - 1)
        if pe == "lut":
            one_of("g", g, LUT_GROUPS)
            # acc and z'·Σx each reach 127·G·(2^b − 1); their difference is 2P.
            return AccumulatorBounds(XQ_MAX * g, partial, 2 * partial)
        # bit-serial: Horner prefixes are Σx·(q >> p) and z·Σx <= 127·G·(2^b − 1); MAC: prefixes.
        return AccumulatorBounds(0, partial, partial)
    one_of("bits", bits, CODEBOOK_BITS)
    one_of("centroid_bits", centroid_bits, CENTROID_BITS)
    cmax = 2 ** (centroid_bits - 1) - 1
    partial = XQ_MAX * gsz * cmax
    if pe == "lut":
        one_of("index_bits", index_bits, tuple(range(bits, 9)))
        return AccumulatorBounds(XQ_MAX * (index_bits // bits) * cmax, partial, partial)
    if pe == "bitserial":
        # The MSB plane enters as −Σx·msb, then doubles up to −2^(cb−1)·Σx before the low planes
        # pull it back: one count beyond the largest centroid.
        return AccumulatorBounds(0, partial, XQ_MAX * gsz * 2 ** (centroid_bits - 1))
    return AccumulatorBounds(0, partial, partial)


def check_accumulator(pe, weights, k, bits, group_size, g=4, centroid_bits=8, index_bits=4,
                      acc_bits=32):
    """`accumulator_bounds`, raising `ValueError` if `max_acc` or `max_table` overflows a signed
    `acc_bits`-bit register. Returns the bounds."""
    bounds = accumulator_bounds(pe, weights, k, bits, group_size, g, centroid_bits, index_bits)
    limit = 2 ** (acc_bits - 1) - 1
    worst = max(bounds.max_acc, bounds.max_table)
    if worst > limit:
        raise ValueError(
            f"`max |acc|` of the {pe} path ({weights}, K={k}, bits={bits}, group={group_size}, "
            f"centroid_bits={centroid_bits}) must be at most {limit} for int{acc_bits}, not {worst}"
        )
    return bounds


# --------------------------------------------------------------------------------------------------
# tolerance against the PyTorch float reference

UNIT_ROUNDOFF = 2.0**-24  # float32, round to nearest


def reference_tolerance(x, w_abs, sx, n_groups, n_outliers=0):
    """Per-element bound on `|y_golden − y_ref|`, `[M, N]` float64 (derivation: docs/numerics.md).

    `x [M, K]` the float activations; `w_abs [N, K]` the magnitude of every weight summand
    (`|dequant(W)| + |S|`); `sx [M]`, or `[M, K]` the scale of each activation (`token_group`:
    its group's); `n_groups` J; `n_outliers` the most outliers in one row.
    Bound = `(1 + 2^-15)·(sx/2)·Σ_k w_abs` (activation rounding) `+ γ·A`, with
    `A = Σ_k |x|·w_abs + (sx/2)·Σ_k w_abs` and `γ = 2·1.01·(K + J + n_outliers + 8)·2^-24`: the
    float32 rounding of the reference matmul (any order, FMA or not) and of the epilogue, with a
    factor 2 of margin.
    """
    x = np.abs(np.asarray(x, np.float64))
    w = np.asarray(w_abs, np.float64)
    sx = np.asarray(sx, np.float64)
    if sx.ndim == 2:        # Σ_k (sx[m, k] / 2)·w_abs[n, k]
        half = (sx / 2) @ w.T
    else:
        half = sx[:, None] / 2 * w.sum(axis=1)[None, :]
    k = x.shape[1]
    gamma = 2 * 1.01 * (k + n_groups + n_outliers + 8) * UNIT_ROUNDOFF
    return (1 + 2.0**-15) * half + gamma * (x @ w.T + half)


def centroid_tolerance(x, col_scale):
    """Extra error of the fixed-point centroids against the float codebooks, `[M, 1]` float64:
    `(1 + 2^-20)·Σ_k |x[m, k]|·cs(k)/2`, `col_scale [K]` the block scale of each original column."""
    x = np.abs(np.asarray(x, np.float64))
    # 2^-20 covers the float64 rounding of c / cs inside `quantize_codebooks` (a tie can land on the
    # far side by 2^-46 of a step) and of this sum.
    return (1 + 2.0**-20) * (x @ (np.asarray(col_scale, np.float64) / 2))[:, None]
