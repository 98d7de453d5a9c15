"""Exact 1-D k-means on sorted data (Lloyd with prefix sums), deterministic, no sklearn.

Ref: CLAQ (Wang et al., arXiv 2405.17233) §3.1, column-level K-Means; papers/claq.md §1 and §6.10.

In one dimension every k-means cluster is a contiguous run of the sorted values, so a Lloyd step
is: midpoints between neighbouring centroids -> `searchsorted` gives each run's ends -> prefix sums
give each run's sum in O(1). One iteration costs O(k log N) after a single O(N log N) sort, instead
of O(N k) for a generic assignment step. Lloyd starts from the quantiles (i + 1/2)/k of the column
(deterministic, no seed) and stops at a fixpoint: when the runs no longer change, every centroid is
its run's mean and every value's nearest centroid is its own, the two conditions of a k-means
optimum that the tests check. (Lloyd from a quantile start reaches a local optimum, as sklearn's
k-means++ does; the optimal dynamic program would cost O(k N log N) Python-level work per column.)

Inside the GPTQ loop the columns cannot be batched (column j's values depend on column j-1's
error), so the per-column cost is Python overhead per Lloyd step; numpy on small arrays is ~3x
cheaper per call than torch on CPU, hence numpy here, float64 so prefix sums stay exact.
"""

import numpy as np

# sklearn's default cap; 1-D Lloyd from a quantile start needs ~25 (k=4) to ~90 (k=16) steps on
# heavy-tailed columns of 4096 values, at most ~170 in our measurements.
MAX_ITER = 300


def lloyd_sorted(s, k, prefix=None, start=None, max_iter=MAX_ITER):
    """k-means with `k` clusters of one column `s`, sorted ascending (1-D float64 array).

    `start`, if given, is a warm start: cluster boundaries as fractions of N ([k+1] floats from
    0 to 1, e.g. another column's `ends / N`); the first centroids are those runs' means. Without
    it, Lloyd starts from the quantiles (i + 1/2)/k. `prefix` may pass `[0, cumsum(s)]`.
    Returns (centroids [k] float64, non-decreasing; ends [k+1] int64, ends[0] = 0, ends[k] = N,
    cluster i = s[ends[i]:ends[i+1]]; converged: bool). A column with fewer than k distinct values
    has empty clusters; their centroids stay where they were, which keeps the codebook sorted.
    Values exactly on a midpoint join the upper cluster (equally near both).
    """
    n = s.shape[0]
    if n == 0:
        raise ValueError("column length must be positive, not 0")
    if prefix is None:
        prefix = np.concatenate([[0.0], np.cumsum(s)])
    ends = np.empty(k + 1, np.int64)
    ends[0], ends[k] = 0, n
    cent = s[np.minimum(((np.arange(k) + 0.5) * n / k).astype(np.int64), n - 1)]
    if start is not None:
        ends[1:k] = np.clip(np.rint(np.asarray(start[1:k]) * n), 0, n)
        np.maximum.accumulate(ends, out=ends)
        cent = _means(prefix, ends, cent)
    prev = None
    # The loop body is ~8 numpy calls on k-element arrays: per-call overhead, not N, sets the cost
    for _ in range(max_iter):
        mid = cent[:-1] + cent[1:]
        mid *= 0.5
        inner = s.searchsorted(mid, side="left")
        key = inner.tobytes()
        if key == prev:
            return cent, ends, True
        prev = key
        ends[1:k] = inner
        cent = _means(prefix, ends, cent)
    return cent, ends, False


def _means(prefix, ends, old):
    """Means of the runs s[ends[i]:ends[i+1]]; an empty run keeps its old centroid.

    The runs are in order, so their means are non-decreasing; but a mean taken as a difference of
    prefix sums is rounded, and an empty run's kept centroid can then sit an ulp above the next
    run's mean of the same values. The running maximum restores the order (it moves a mean by at
    most that rounding)."""
    cnt = ends[1:] - ends[:-1]
    pe = prefix[ends]
    sums = pe[1:] - pe[:-1]
    if cnt.all():
        means = sums / cnt
    else:
        means = np.where(cnt > 0, sums / np.maximum(cnt, 1), old)
    return np.maximum.accumulate(means)


def nearest_code(x, centroids):
    """Index of the nearest centroid for each value of x; `centroids` [k] non-decreasing.
    A value on a midpoint gets the upper centroid (as in `lloyd_sorted`); among duplicate
    centroids, the lowest index."""
    c = np.asarray(centroids, dtype=np.float64)
    return np.searchsorted((c[:-1] + c[1:]) * 0.5, np.asarray(x, dtype=np.float64), side="right")


def kmeans1d(x, k, max_iter=MAX_ITER):
    """k-means with k clusters of every row of x [C, N] (unsorted, any float dtype).

    Returns (centroids [C, k] float64 sorted ascending, codes [C, N] int64 = nearest centroid).
    Deterministic: the same input gives the same output on every run and machine."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [columns, values], not {x.ndim}-D")
    cent = np.empty((x.shape[0], k))
    codes = np.empty(x.shape, dtype=np.int64)
    for i, row in enumerate(x):
        cent[i], _, _ = lloyd_sorted(np.sort(row), k, max_iter=max_iter)
        codes[i] = nearest_code(row, cent[i])
    return cent, codes
