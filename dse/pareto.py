"""Pareto fronts: the non-dominated points of a set under several objectives.

Point a dominates b when a is at least as good in every objective and better in one ("max"
objectives larger, "min" smaller). An O(n^2 k) numpy filter, fine for the 10^4 points of a
sweep; ties (equal vectors) dominate neither way, so equal points are on the front together.
"""

import numpy as np


def _oriented(values, senses):
    """The objective matrix with every column turned into "larger is better"."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(senses))
    sign = np.array([1.0 if s == "max" else -1.0 for s in senses])
    return v * sign


def dominated_by_any(values, senses):
    """[n] bool: which rows of `values` [n, k] some other row dominates."""
    v = _oriented(values, senses)
    out = np.zeros(len(v), bool)
    for i in range(len(v)):
        ge = np.all(v >= v[i], axis=1)
        gt = np.any(v > v[i], axis=1)
        out[i] = bool(np.any(ge & gt))
    return out


def front(values, senses):
    """Indices of the non-dominated rows, ascending."""
    if len(values) == 0:
        return []
    return [int(i) for i in np.flatnonzero(~dominated_by_any(values, senses))]


def near_front(values, senses, epsilon):
    """Indices of rows within `epsilon` of the front: rows that, improved by a factor
    (1 + epsilon) in every objective, would be at least as good as some front point in all of
    them (the front itself included; objectives are ratios such as throughputs, energies and
    areas, so the tolerance is relative)."""
    if len(values) == 0:
        return []
    v = np.asarray(values, dtype=np.float64).reshape(len(values), len(senses))
    better = np.where(np.array([s == "max" for s in senses]), v * (1 + epsilon),
                      v / (1 + epsilon))
    o, b = _oriented(v, senses), _oriented(better, senses)
    f = o[front(values, senses)]
    return [i for i in range(len(v)) if bool(np.any(np.all(b[i] >= f, axis=1)))]
