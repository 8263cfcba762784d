"""Exact solvers: each equals brute force over all set partitions / collections of groups on small N."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_taskgroup.grouping.solvers.compact import local_search_partition
from hf_taskgroup.grouping.solvers.partition import (
    GroupingSolverError,
    InfeasibleGroupingError,
    SolverResult,
    enumerate_groups,
    network_selection,
    solve_compact,
    solve_set_partition,
    transfer_gain_value,
)

SETTINGS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-5


def all_partitions(n: int):
    """Independent brute force: restricted growth strings -> partitions of range(n)."""
    def rec(i, labels, k):
        if i == n:
            yield [tuple(j for j in range(n) if labels[j] == b) for b in range(k)]
            return
        for b in range(k + 1):
            labels.append(b)
            yield from rec(i + 1, labels, max(k, b + 1))
            labels.pop()
    yield from rec(0, [], 0)


def brute_partition(n, value, *, num_groups=None, mode="exact", min_size=1, max_size=None, cost=None, budget=None):
    best = None
    for p in all_partitions(n):
        if num_groups is not None and (len(p) != num_groups if mode == "exact" else len(p) > num_groups):
            continue
        if any(len(g) < min_size or (max_size is not None and len(g) > max_size) for g in p):
            continue
        if budget is not None and sum(cost(g) for g in p) > budget + 1e-9:
            continue
        v = sum(value(g) for g in p)
        best = v if best is None else max(best, v)
    return best


def brute_cover(n, value, *, num_groups=None, mode="exact", max_size=None, cost=None, budget=None):
    cands = enumerate_groups(n, max_group_size=max_size)
    best = None
    sizes = range(1, len(cands) + 1) if num_groups is None else (
        [num_groups] if mode == "exact" else range(1, num_groups + 1))
    for m in sizes:
        for coll in itertools.combinations(cands, m):
            if len(set().union(*coll)) < n:
                continue
            if budget is not None and sum(cost(g) for g in coll) > budget + 1e-9:
                continue
            v = sum(value(g) for g in coll)
            best = v if best is None else max(best, v)
    return best


matrices = st.integers(1, 7).flatmap(
    lambda n: st.lists(st.integers(-5, 5), min_size=n * n, max_size=n * n).map(
        lambda xs: np.array(xs, dtype=float).reshape(n, n)))


@SETTINGS
@given(S=matrices, data=st.data())
def test_set_partition_equals_brute_force(S, data):
    n = S.shape[0]
    num_groups = data.draw(st.one_of(st.none(), st.integers(1, n)))
    mode = data.draw(st.sampled_from(["exact", "at_most"]))
    min_size = data.draw(st.integers(1, 2))
    max_size = data.draw(st.one_of(st.none(), st.integers(1, n)))
    use_budget = data.draw(st.booleans())
    task_cost = np.array(data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)), dtype=float)
    # group cost with a fixed overhead per group: a budget then limits the number of groups
    cost = (lambda g: 2.0 + task_cost[list(g)].sum()) if use_budget else None
    budget = float(data.draw(st.integers(n, 4 * n))) if use_budget else None
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    expected = brute_partition(n, value, num_groups=num_groups, mode=mode, min_size=min_size,
                               max_size=max_size, cost=cost, budget=budget)
    kwargs = dict(num_groups=num_groups, num_groups_mode=mode, min_group_size=min_size,
                  max_group_size=max_size, group_cost=cost, budget=budget)
    if expected is None:
        with pytest.raises(InfeasibleGroupingError):
            solve_set_partition(n, value, **kwargs)
        return
    res = solve_set_partition(n, value, **kwargs)
    assert res.optimal
    assert res.objective == pytest.approx(expected, abs=TOL)
    assert sorted(i for g in res.groups for i in g) == list(range(n))  # a partition


def test_set_partition_n8_equals_brute_force():
    rng = np.random.default_rng(8)
    S = rng.normal(size=(8, 8))
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    for k in (2, 3):
        res = solve_set_partition(8, value, num_groups=k)
        assert res.objective == pytest.approx(brute_partition(8, value, num_groups=k), abs=TOL)
        assert res.num_candidates == 255


small = st.integers(1, 5).flatmap(
    lambda n: st.lists(st.integers(-5, 5), min_size=n * n, max_size=n * n).map(
        lambda xs: np.array(xs, dtype=float).reshape(n, n)))


@SETTINGS
@given(S=small, data=st.data())
def test_overlap_cover_equals_brute_force(S, data):
    n = S.shape[0]
    k = data.draw(st.integers(1, 3))
    mode = data.draw(st.sampled_from(["exact", "at_most"]))
    max_size = data.draw(st.one_of(st.none(), st.integers(1, n)))
    use_budget = data.draw(st.booleans())
    budget = float(data.draw(st.integers(n, 2 * n + 2))) if use_budget else None
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    expected = brute_cover(n, value, num_groups=k, mode=mode, max_size=max_size,
                           cost=(lambda g: float(len(g))) if use_budget else None, budget=budget)
    kwargs = dict(num_groups=k, num_groups_mode=mode, max_group_size=max_size, overlap=True, budget=budget)
    if expected is None:
        with pytest.raises(InfeasibleGroupingError):
            solve_set_partition(n, value, **kwargs)
        return
    res = solve_set_partition(n, value, **kwargs)
    assert res.objective == pytest.approx(expected, abs=TOL)
    assert set().union(*res.groups) == set(range(n))
    assert len(set(res.groups)) == len(res.groups)


def test_overlap_without_group_limit_is_bounded_by_budget():
    S = np.ones((3, 3))
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    res = solve_set_partition(3, value, overlap=True, budget=6)
    expected = brute_cover(3, value, cost=lambda g: float(len(g)), budget=6)
    assert res.objective == pytest.approx(expected)


@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(S=matrices, data=st.data())
def test_compact_equals_enumerated(S, data):
    n = S.shape[0]
    k = data.draw(st.integers(1, min(n, 4)))
    mode = data.draw(st.sampled_from(["exact", "at_most"]))
    max_size = data.draw(st.one_of(st.none(), st.integers(2, n + 1)))
    overlap = data.draw(st.booleans()) and n <= 5
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    kwargs = dict(num_groups_mode=mode, max_group_size=max_size, overlap=overlap)
    try:
        enumerated = solve_set_partition(n, value, num_groups=k, **kwargs)
    except InfeasibleGroupingError:
        with pytest.raises(InfeasibleGroupingError):
            solve_compact(S, k, **kwargs)
        return
    compact = solve_compact(S, k, **kwargs)
    assert compact.formulation == "compact" and compact.optimal
    assert compact.objective == pytest.approx(enumerated.objective, abs=TOL)
    if not overlap:
        assert sorted(i for g in compact.groups for i in g) == list(range(n))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["exact", "at_most"])
def test_compact_overlap_equals_enumerated_and_keeps_groups_distinct(seed, mode):
    rng = np.random.default_rng(seed)
    n = 4 + seed % 2
    S = rng.normal(0.5, 1.0, size=(n, n))
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    for k in (2, 3):
        enumerated = solve_set_partition(n, value, num_groups=k, num_groups_mode=mode, overlap=True)
        compact = solve_compact(S, k, num_groups_mode=mode, overlap=True)
        assert compact.objective == pytest.approx(enumerated.objective, abs=TOL)
        assert len(set(compact.groups)) == len(compact.groups)
    # all-ones gains: the best single group is everything; a second copy of it is not allowed
    res = solve_compact(np.ones((3, 3)), 2, overlap=True)
    assert res.objective == pytest.approx(3.0 + 2.0) and len(set(res.groups)) == 2


def test_compact_free_number_of_groups_and_min_size():
    rng = np.random.default_rng(3)
    S = rng.normal(size=(7, 7))
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    for min_size in (1, 2):
        expected = brute_partition(7, value, min_size=min_size)
        assert solve_compact(S, min_group_size=min_size).objective == pytest.approx(expected, abs=TOL)


def test_compact_budget_with_task_costs():
    rng = np.random.default_rng(4)
    S = rng.normal(size=(5, 5)) + 1.0
    costs = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
    value = lambda g: transfer_gain_value(S, g)  # noqa: E731
    expected = brute_cover(5, value, num_groups=3, mode="at_most", cost=lambda g: costs[list(g)].sum(), budget=12)
    res = solve_compact(S, 3, num_groups_mode="at_most", overlap=True, task_cost=costs, budget=12)
    assert res.objective == pytest.approx(expected, abs=TOL)
    assert sum(costs[list(g)].sum() for g in res.groups) <= 12 + 1e-9


def test_transfer_gain_value_includes_diagonal():
    S = np.array([[2.0, 1.0], [3.0, 4.0]])
    assert transfer_gain_value(S, (0, 1)) == pytest.approx((2 + 1 + 3 + 4) / 2)
    assert transfer_gain_value(S, (1,)) == pytest.approx(4.0)


def brute_network(n, score, k, mode, max_size=None):
    cands = enumerate_groups(n, max_group_size=max_size)
    best = None
    for m in ([k] if mode == "exact" else range(1, k + 1)):
        for coll in itertools.combinations(cands, m):
            if len(set().union(*coll)) < n:
                continue
            per_task = [max(score(g)[g.index(t)] for g in coll if t in g) for t in range(n)]
            v = float(np.mean(per_task))
            best = v if best is None else max(best, v)
    return best


@SETTINGS
@given(S=small, data=st.data())
def test_network_selection_equals_brute_force(S, data):
    n = S.shape[0]
    k = data.draw(st.integers(1, 3))
    mode = data.draw(st.sampled_from(["exact", "at_most"]))
    max_size = data.draw(st.one_of(st.none(), st.integers(1, n)))

    def score(g):
        idx = list(g)
        sub = S[np.ix_(idx, idx)]
        return np.zeros(1) if len(g) == 1 else (sub.sum(0) - np.diag(sub)) / (len(g) - 1)

    expected = brute_network(n, score, k, mode, max_size)
    if expected is None:
        with pytest.raises(InfeasibleGroupingError):
            network_selection(n, score, k, num_groups_mode=mode, max_group_size=max_size)
        return
    res = network_selection(n, score, k, num_groups_mode=mode, max_group_size=max_size)
    assert res.objective == pytest.approx(expected, abs=TOL)
    assert len(res.groups) <= k
    assert set(res.assignment) == set(range(n))
    for t, gi in res.assignment.items():
        assert t in res.groups[gi]


def test_network_selection_example_overlap():
    score = lambda g: np.full(len(g), 1.0 if g in [(0, 1), (1, 2)] else 0.0)  # noqa: E731
    res = network_selection(["a", "b", "c"], score, 2)
    assert res.groups == [(0, 1), (1, 2)] and res.objective == 1.0


def test_mapping_values_define_candidates():
    values = {(0,): 0.0, (1,): 0.0, (2,): 0.0, (1, 0): 5.0, (0, 1, 2): 1.0}
    res = solve_set_partition(["a", "b", "c"], values)
    assert res.groups == [(0, 1), (2,)] and res.objective == 5.0
    assert res.num_candidates == 5


def test_explicit_candidates_restrict_the_choice():
    res = solve_set_partition(3, lambda g: float(len(g) ** 2), candidates=[(0,), (1, 2), (0, 2), (1,)])
    assert res.objective == 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_groups=2, max_group_size=2), "num_groups=2 with max_group_size=2 cannot cover 5 tasks"),
        (dict(num_groups=6), "num_groups=6 > 5 tasks"),
        (dict(num_groups=3, min_group_size=2), "needs at least 6 tasks"),
        (dict(min_group_size=3, max_group_size=2), "min_group_size=3 > max_group_size=2"),
        (dict(min_group_size=6), "only 5 tasks"),
        (dict(budget=4), "budget=4 < 5"),
        (dict(num_groups=2, num_groups_mode="at_most", min_group_size=3, max_group_size=4), "at most 2 groups"),
    ],
)
def test_obvious_infeasibility_is_reported_before_solving(kwargs, message):
    with pytest.raises(InfeasibleGroupingError, match=message):
        solve_set_partition(5, lambda g: 0.0, **kwargs)
    if "budget" not in kwargs:
        with pytest.raises(InfeasibleGroupingError, match=message):
            solve_compact(np.zeros((5, 5)), kwargs.pop("num_groups", None), **kwargs)


def test_highs_infeasible_status_maps_to_infeasible_error():
    # every group costs 10: 5 tasks need at least 3 groups of size <= 2, i.e. cost 30 > 25
    with pytest.raises(InfeasibleGroupingError, match="no grouping satisfies all constraints together"):
        solve_set_partition(5, lambda g: 0.0, max_group_size=2, group_cost=lambda g: 10.0, budget=25)
    with pytest.raises(InfeasibleGroupingError, match="budget=3"):
        solve_compact(np.zeros((4, 4)), 2, overlap=True, task_cost=np.ones(4), budget=3)


def test_task_in_no_candidate_is_infeasible():
    with pytest.raises(InfeasibleGroupingError, match=r"\['c'\] appear in no candidate"):
        solve_set_partition(["a", "b", "c"], lambda g: 0.0, candidates=[(0, 1)])


def test_too_many_candidates_points_to_compact():
    with pytest.raises(ValueError, match="solve_compact"):
        solve_set_partition(20, lambda g: 0.0, max_candidates=1000)


def test_result_to_dict_is_plain():
    res = solve_set_partition(3, lambda g: float(len(g) == 3))
    assert isinstance(res, SolverResult)
    d = res.to_dict()
    assert d["groups"] == [[0, 1, 2]] and d["optimal"] is True and d["formulation"] == "enumerated"
    assert isinstance(d["status"], str) and d["seconds"] >= 0


@pytest.mark.parametrize("seed", range(6))
def test_local_search_returns_feasible_partitions_close_to_exact(seed):
    rng = np.random.default_rng(seed)
    n = 7
    S = rng.normal(size=(n, n))
    mode = ["exact", "at_most"][seed % 2]
    groups = local_search_partition(S, 3, num_groups_mode=mode, max_group_size=3)
    assert sorted(i for g in groups for i in g) == list(range(n))
    assert max(len(g) for g in groups) <= 3 and (len(groups) == 3 if mode == "exact" else len(groups) <= 3)
    exact = solve_set_partition(n, lambda g: transfer_gain_value(S, g), num_groups=3, num_groups_mode=mode,
                                max_group_size=3).objective
    assert sum(transfer_gain_value(S, g) for g in groups) <= exact + TOL


def test_compact_time_limit_falls_back_to_local_search():
    rng = np.random.default_rng(0)
    labels = np.arange(40) // 5
    S = np.where(labels[:, None] == labels[None, :], 1.0, -0.5) + rng.normal(0, 0.3, (40, 40))
    np.fill_diagonal(S, 0.0)
    res = solve_compact(S, 8, time_limit=0.01)
    assert not res.optimal and res.incumbent == "local_search"
    assert sorted(res.groups) == [tuple(range(5 * b, 5 * b + 5)) for b in range(8)]
    with pytest.raises(GroupingSolverError, match="without a feasible grouping"):
        solve_compact(S, 8, time_limit=0.01, local_search=False)
