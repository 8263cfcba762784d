"""PVI grouping: pairwise tests, corrections, interval DP (vs brute force) and planted task families."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_taskgroup.grouping import group_tasks
from hf_taskgroup.grouping.methods.pvi import (
    _clique_partition,
    interval_partition_dp,
    pairwise_pvi_tests,
    pvi_grouping,
)
from hf_taskgroup.grouping.stats import adjust_pvalues, two_sample_test


def families(means, per_family=2, n=40, sd=0.3, seed=0):
    rng = np.random.default_rng(seed)
    pvi, truth = {}, []
    for f, mean in enumerate(means):
        names = [f"f{f}_t{k}" for k in range(per_family)]
        truth.append(names)
        for name in names:
            pvi[name] = rng.normal(mean, sd, n)
    return pvi, truth


def as_sets(groups):
    return sorted(sorted(g) for g in groups)


# -------------------------------------------------------------------------------------- interval DP
def interval_partitions(n, max_size):
    for cuts in itertools.product([False, True], repeat=max(n - 1, 0)):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        parts = [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]
        if max_size is None or all(len(p) <= max_size for p in parts):
            yield parts


@settings(max_examples=60, deadline=None, database=None)
@given(data=st.data(), n=st.integers(1, 8))
def test_interval_dp_equals_brute_force(data, n):
    values = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)), dtype=float)
    upper = data.draw(st.lists(st.booleans(), min_size=n * n, max_size=n * n))
    compat = np.array(upper, dtype=bool).reshape(n, n)
    compat = compat & compat.T
    max_size = data.draw(st.one_of(st.none(), st.integers(1, n)))
    order = np.argsort(values, kind="stable")
    best = None
    for parts in interval_partitions(n, max_size):
        groups = [[int(order[i]) for i in p] for p in parts]
        if all(compat[i, j] for g in groups for i, j in itertools.combinations(g, 2)):
            key = (len(groups), sum(np.ptp(values[g]) for g in groups))
            best = key if best is None or key < best else best
    got = interval_partition_dp(values, compat, max_size)
    assert sorted(i for g in got for i in g) == list(range(n))
    assert all(compat[i, j] for g in got for i, j in itertools.combinations(g, 2))
    assert max_size is None or all(len(g) <= max_size for g in got)
    assert len(got) == best[0]
    assert sum(np.ptp(values[g]) for g in got) == pytest.approx(best[1])


def test_interval_dp_prefers_smaller_spread_on_ties():
    # 0 ~ 1 ~ 2 but not 0 ~ 2: two groups either way; {1, 2} has the smaller spread
    values = np.array([0.0, 1.0, 1.1])
    compat = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    assert interval_partition_dp(values, compat) == [[0], [1, 2]]


def test_clique_strategy_beats_intervals_when_compatibility_is_not_interval_shaped():
    values = np.array([0.0, 1.0, 2.0, 3.0])
    compat = np.eye(4, dtype=bool)
    compat[0, 2] = compat[2, 0] = compat[1, 3] = compat[3, 1] = True
    assert len(interval_partition_dp(values, compat)) == 4
    assert as_sets(_clique_partition(values, compat, None)) == [[0, 2], [1, 3]]


# ----------------------------------------------------------------------------------- planted families
def test_pvi_recovers_three_planted_families():
    pvi, truth = families([0.2, 1.0, 2.0], per_family=3, n=40)
    g = pvi_grouping(list(pvi), pvi=pvi)
    assert as_sets(g.groups) == as_sets(truth)
    assert g.objective == 3.0
    assert g.params["pairwise_guarantee"] is True


@pytest.mark.parametrize("test", ["welch", "mannwhitney", "ks"])
@pytest.mark.parametrize("strategy", ["interval", "clique", "components"])
def test_every_test_and_strategy_recovers_well_separated_families(test, strategy):
    pvi, truth = families([0.2, 1.0, 2.0], per_family=2, n=40, seed=1)
    g = group_tasks("pvi", list(pvi), pvi=pvi, test=test, strategy=strategy)
    assert as_sets(g.groups) == as_sets(truth)


def test_large_samples_split_near_equal_tasks_but_tost_groups_them():
    rng = np.random.default_rng(2)
    pvi = {"a": rng.normal(1.00, 0.3, 5000), "b": rng.normal(1.05, 0.3, 5000), "c": rng.normal(2.0, 0.3, 5000)}
    welch = pvi_grouping(list(pvi), pvi=pvi)
    assert as_sets(welch.groups) == [["a"], ["b"], ["c"]]
    tost = pvi_grouping(list(pvi), pvi=pvi, test="tost", equivalence_margin=0.2)
    assert as_sets(tost.groups) == [["a", "b"], ["c"]]
    assert tost.scores["p_values"][0][1] < 0.05  # equivalence established
    sub = pvi_grouping(list(pvi), pvi=pvi, subsample=40, seed=0)
    assert as_sets(sub.groups) == [["a", "b"], ["c"]]
    assert sub.scores["n_examples"] == {"a": 40, "b": 40, "c": 40}


def test_subsample_is_seeded_per_task():
    pvi, _ = families([0.0, 0.1], n=200)
    first = pairwise_pvi_tests(pvi, subsample=30, seed=3)
    again = pairwise_pvi_tests(dict(reversed(list(pvi.items()))), subsample=30, seed=3)
    other = pairwise_pvi_tests(pvi, subsample=30, seed=4)
    assert first.mean[0] == again.mean[list(again.tasks).index(first.tasks[0])]
    assert not np.allclose(first.mean, other.mean)


def test_components_warn_and_record_pairs_that_fail():
    rng = np.random.default_rng(5)
    base = rng.normal(0, 0.5, 30)
    pvi = {"a": base, "b": base + 0.2, "c": base + 0.4}  # a~b, b~c, a!~c (same noise, shifted)
    tests = pairwise_pvi_tests(pvi)
    assert tests.compatible[0, 1] and tests.compatible[1, 2] and not tests.compatible[0, 2]
    with pytest.warns(UserWarning, match="failed the welch test"):
        comp = pvi_grouping(list(pvi), pvi=pvi, strategy="components")
    assert comp.groups == [["a", "b", "c"]]
    assert comp.scores["violations"] == [["a", "c"]]
    assert comp.params["pairwise_guarantee"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interval = pvi_grouping(list(pvi), pvi=pvi)
    assert len(interval.groups) == 2 and interval.scores["violations"] == []


@pytest.mark.parametrize("strategy", ["interval", "clique", "components"])
def test_max_group_size_is_respected(strategy):
    pvi, _ = families([1.0], per_family=5, n=40)
    g = pvi_grouping(list(pvi), pvi=pvi, strategy=strategy, max_group_size=2)
    assert max(len(x) for x in g.groups) == 2 and len(g.groups) == 3


def test_scores_report_raw_and_corrected_p_values_and_task_statistics():
    pvi, _ = families([0.0, 0.5, 1.0], per_family=2, n=30)
    g = pvi_grouping(list(pvi), pvi=pvi)
    raw, adj = np.array(g.scores["p_values_raw"]), np.array(g.scores["p_values"])
    assert raw.shape == adj.shape == (6, 6)
    assert np.all(adj >= raw - 1e-12) and np.allclose(adj, adj.T)
    assert g.scores["n_examples"]["f0_t0"] == 30
    assert g.scores["mean_pvi"]["f0_t0"] == pytest.approx(float(np.mean(pvi["f0_t0"])))
    assert g.scores["std_pvi"]["f0_t0"] == pytest.approx(float(np.std(pvi["f0_t0"], ddof=1)))
    g.validate()


def test_holm_correction_groups_more_than_no_correction():
    pvi, _ = families([0.0, 0.15, 0.3, 0.45], per_family=2, n=40, seed=7)
    none = pairwise_pvi_tests(pvi, correction="none")
    holm = pairwise_pvi_tests(pvi, correction="holm")
    assert holm.compatible.sum() >= none.compatible.sum()
    assert np.all(holm.compatible[none.compatible])


def test_input_errors_name_the_task():
    with pytest.raises(ValueError, match=r"no PVI values for task\(s\) \['z'\]"):
        pvi_grouping(["a", "z"], pvi={"a": np.zeros(3)})
    with pytest.raises(ValueError, match="PVI of task 'a' has 1 non-finite"):
        pvi_grouping(["a", "b"], pvi={"a": np.array([0.0, np.inf, 1.0]), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="task 'b' has 1 PVI value"):
        pvi_grouping(["a", "b"], pvi={"a": np.zeros(3), "b": np.zeros(1)})
    with pytest.raises(ValueError, match="equivalence_margin"):
        pvi_grouping(["a", "b"], pvi={"a": np.zeros(3), "b": np.zeros(3)}, test="tost")
    with pytest.raises(ValueError, match="unknown test"):
        pvi_grouping(["a", "b"], pvi={"a": np.zeros(3), "b": np.zeros(3)}, test="anova")


# ------------------------------------------------------------------------------------------ stats
def test_holm_and_bh_match_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(p, "holm").tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues(p, "bh").tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_pvalues(p, "bonferroni").tolist() == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust_pvalues(p, "none").tolist() == p


def test_tost_p_is_the_larger_one_sided_p():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 50), rng.normal(0.2, 1, 50)
    _, p = two_sample_test(a, b, "tost", equivalence_margin=0.5)
    from scipy import stats

    p1 = stats.ttest_ind(a + 0.5, b, equal_var=False, alternative="greater").pvalue
    p2 = stats.ttest_ind(a - 0.5, b, equal_var=False, alternative="less").pvalue
    assert p == pytest.approx(max(p1, p2))


def test_constant_samples_are_handled():
    assert two_sample_test([1.0, 1.0], [1.0, 1.0])[1] == 1.0
    assert two_sample_test([1.0, 1.0], [2.0, 2.0])[1] == 0.0
    assert two_sample_test([1.0, 1.0], [1.1, 1.1], "tost", equivalence_margin=0.5)[1] == 0.0
    assert two_sample_test([1.0, 1.0], [2.0, 2.0], "tost", equivalence_margin=0.5)[1] == 1.0
    assert two_sample_test([1.0, 1.0], [1.0, 1.0], "mannwhitney")[1] == 1.0
