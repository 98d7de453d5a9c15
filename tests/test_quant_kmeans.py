"""1-D k-means: the k-means optimality conditions against brute force, determinism, degenerate
columns."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.kmeans1d import kmeans1d, lloyd_sorted, nearest_code


def check_optimal(x, cent, codes):
    """The two k-means optimality conditions, checked by brute force."""
    assert np.all(np.diff(cent) >= 0), "codebook must be sorted"
    dist = np.abs(x[:, None] - cent[None, :])                     # [N, k]
    # no value is strictly closer to another centroid than to its own
    assert np.all(dist[np.arange(len(x)), codes] <= dist.min(1) + 1e-12)
    for c in range(len(cent)):
        members = x[codes == c]
        if members.size:
            assert cent[c] == pytest.approx(members.mean(), rel=1e-12, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 400), bits=st.sampled_from([1, 2, 3, 4]),
       nu=st.sampled_from([2.0, 4.0, 30.0]))
def test_kmeans_is_a_kmeans_optimum(seed, n, bits, nu):
    x = np.random.default_rng(seed).standard_t(nu, (1, n))
    cent, codes = kmeans1d(x, 1 << bits)
    check_optimal(x[0], cent[0], codes[0])


@pytest.mark.parametrize("k", [2, 4, 16])
def test_kmeans_matches_exhaustive_optimum_on_tiny_columns(k):
    # The global optimum over all contiguous partitions of sorted data (brute force on N = 9):
    # on well-separated clusters Lloyd from the quantile start finds it.
    rng = np.random.default_rng(k)
    centers = np.sort(rng.choice(np.arange(-50, 50) * 10.0, size=min(k, 9), replace=False))
    x = np.repeat(centers, 9 // len(centers) + 1)[:9] + rng.normal(0, 0.01, 9)
    cent, codes = kmeans1d(x[None], k)
    s = np.sort(x)

    def best(lo, parts):
        if parts == 1:
            return ((s[lo:] - s[lo:].mean()) ** 2).sum()
        return min(((s[lo:m] - s[lo:m].mean()) ** 2).sum() + best(m, parts - 1)
                   for m in range(lo + 1, len(s) - parts + 2))

    sse = ((x - cent[0][codes[0]]) ** 2).sum()
    assert sse == pytest.approx(best(0, min(k, 9)), abs=1e-9)


def test_kmeans_with_fewer_distinct_values_than_clusters():
    x = np.array([[0.5, -1.0, 0.5, -1.0, 0.5]])
    cent, codes = kmeans1d(x, 4)
    assert np.all(np.diff(cent[0]) >= 0)
    np.testing.assert_array_equal(cent[0][codes[0]], x[0])     # decodes exactly


def test_kmeans_is_deterministic_and_batched_rows_are_independent():
    x = np.random.default_rng(1).standard_t(4, (5, 1000))
    a = kmeans1d(x, 4)
    b = kmeans1d(x, 4)
    np.testing.assert_array_equal(a[0], b[0])
    one = kmeans1d(x[3:4], 4)
    np.testing.assert_array_equal(one[0][0], a[0][3])


def test_warm_start_reaches_a_fixpoint_too():
    rng = np.random.default_rng(2)
    x = np.sort(rng.standard_t(3, 3000))
    cent, ends, ok = lloyd_sorted(x, 16, start=np.linspace(0, 1, 17) ** 3)
    assert ok
    check_optimal(x, cent, nearest_code(x, cent))


def test_midpoint_ties_go_to_the_upper_centroid():
    np.testing.assert_array_equal(nearest_code([0.5, 0.49, 0.51], [0.0, 1.0]), [1, 0, 1])
