"""dse.pareto against a brute-force reading of the definition: a dominates b when a is no worse
in every objective and better in one."""

from hypothesis import given, settings
from hypothesis import strategies as st

from dse import pareto


def dominates(a, b, senses):
    better = [x > y if s == "max" else x < y for x, y, s in zip(a, b, senses, strict=True)]
    no_worse = [x >= y if s == "max" else x <= y for x, y, s in zip(a, b, senses, strict=True)]
    return all(no_worse) and any(better)


@st.composite
def problems(draw):
    k = draw(st.integers(1, 4))
    senses = draw(st.lists(st.sampled_from(["max", "min"]), min_size=k, max_size=k))
    # small integers: many ties and equal rows, the cases a filter gets wrong
    rows = draw(st.lists(st.lists(st.integers(0, 4), min_size=k, max_size=k), min_size=1,
                         max_size=25))
    perm = draw(st.permutations(range(len(rows))))
    return rows, senses, perm


@settings(max_examples=200, deadline=None)
@given(problems())
def test_front_is_exactly_the_non_dominated_points_in_any_order(problem):
    rows, senses, perm = problem
    front = set(pareto.front(rows, senses))
    for i in range(len(rows)):
        dominated = any(dominates(rows[j], rows[i], senses) for j in range(len(rows)))
        assert (i in front) == (not dominated), (rows, senses, i)
    shuffled = [rows[i] for i in perm]
    assert {perm[i] for i in pareto.front(shuffled, senses)} == front


@settings(max_examples=100, deadline=None)
@given(problems(), st.sampled_from([0.05, 0.1, 0.5]))
def test_near_front_holds_the_front_and_grows_with_epsilon(problem, eps):
    rows, senses, _ = problem
    rows = [[v + 1 for v in r] for r in rows]             # positive: ratios are meaningful
    front = set(pareto.front(rows, senses))
    assert set(pareto.near_front(rows, senses, 0.0)) == front
    near = set(pareto.near_front(rows, senses, eps))
    assert front <= near <= set(pareto.near_front(rows, senses, 2 * eps))
    for i in range(len(rows)):
        # near: improved by (1 + eps), it is no worse than some front point in every objective
        scaled = [v * (1 + eps) if s == "max" else v / (1 + eps)
                  for v, s in zip(rows[i], senses, strict=True)]
        covers = any(all(x >= y if s == "max" else x <= y
                          for x, y, s in zip(scaled, rows[f], senses, strict=True))
                     for f in front)
        assert (i in near) == covers


def test_near_front_by_hand():
    # (tok/s max, area min): (10, 5) front; (9.5, 5.2) within 10% of it in both; (5, 5.6) 2x
    # behind in tok/s; (4, 5) ties the front's area but is 2.5x behind in tok/s
    rows = [[10, 5], [9.5, 5.2], [5, 5.6], [4, 5]]
    assert pareto.front(rows, ["max", "min"]) == [0]
    assert pareto.near_front(rows, ["max", "min"], 0.1) == [0, 1]
