"""surrogate: subset sampling, least-squares surrogates recover planted theta, grouping over the affinity."""

from __future__ import annotations

import numpy as np
import pytest

from hf_taskgroup.grouping.evaluators.base import CachedEvaluator
from hf_taskgroup.grouping.methods.surrogate import fit_surrogates, sample_subsets, surrogate
from hf_taskgroup.grouping.registry import group_tasks
from hf_taskgroup.grouping.synthetic import family_names, linear_planted_train_fn, planted_evaluator

TASKS = [f"t{i}" for i in range(6)]


def planted_theta(seed: int = 0) -> np.ndarray:
    theta = np.random.default_rng(seed).normal(scale=0.1, size=(6, 6))
    np.fill_diagonal(theta, 0.0)
    return theta


def test_sample_subsets_are_distinct_and_within_the_size_range():
    subsets = sample_subsets(TASKS, 30, 2, 4, np.random.default_rng(0))
    assert len(subsets) == 30 == len(set(subsets))
    assert all(2 <= len(s) <= 4 and list(s) == sorted(s) for s in subsets)
    assert sample_subsets(TASKS, 30, 2, 4, np.random.default_rng(0)) == subsets
    with pytest.raises(ValueError, match="max_size"):
        sample_subsets(TASKS, 3, 2, 7, np.random.default_rng(0))


def test_sample_subsets_stops_when_no_new_subset_exists():
    assert len(sample_subsets(["a", "b", "c"], 100, 2, 2, np.random.default_rng(0))) == 3


def test_least_squares_surrogates_recover_a_planted_theta_exactly():
    theta = planted_theta()
    fn = linear_planted_train_fn(TASKS, theta, base=1.0)
    subsets = [(t,) for t in TASKS] + sample_subsets(TASKS, 40, 2, 4, np.random.default_rng(1))
    results = {s: {t: v["loss"] for t, v in fn(list(s)).items()} for s in subsets}
    fitted, intercept, r2 = fit_surrogates(TASKS, results)
    assert np.allclose(fitted, theta, atol=1e-8)
    assert np.allclose(intercept, 1.0)
    assert all(v == pytest.approx(1.0) for v in r2)


def test_surrogate_method_recovers_planted_theta_through_the_evaluator():
    theta = planted_theta(3)
    ev = CachedEvaluator(linear_planted_train_fn(TASKS, theta, base=2.0, noise=0.001), None, settings={})
    g = surrogate(TASKS, evaluator=ev, num_subsets=40, max_size=4, normalize=False, seed=0)
    assert np.allclose(np.asarray(g.scores["theta"]), theta, atol=0.01)
    assert np.allclose(np.asarray(g.scores["affinity"]), -theta, atol=0.01)
    assert g.scores["subsets_trained"] == ev.trainings == g.cost.trainings == 40 + 6


def test_ridge_shrinks_theta_towards_zero():
    theta = planted_theta(4)
    ev = CachedEvaluator(linear_planted_train_fn(TASKS, theta), None, settings={})
    plain = np.asarray(surrogate(TASKS, evaluator=ev, num_subsets=30, seed=0).scores["theta"])
    ridged = np.asarray(surrogate(TASKS, evaluator=ev, num_subsets=30, ridge=5.0, seed=0).scores["theta"])
    assert np.abs(ridged).sum() < 0.7 * np.abs(plain).sum()


def test_normalized_affinity_divides_by_the_intercept():
    theta = planted_theta(5)
    ev = CachedEvaluator(linear_planted_train_fn(TASKS, theta, base=4.0), None, settings={})
    g = surrogate(TASKS, evaluator=ev, num_subsets=40, seed=0)
    assert np.allclose(np.asarray(g.scores["affinity"]), -theta / 4.0, atol=1e-8)


@pytest.mark.parametrize(("grouping", "kwargs"), [("transfer_gain", {}), ("clustering", {"num_groups": 2})])
def test_surrogate_groups_planted_families(grouping, kwargs):
    families = family_names(2, 3)
    tasks = [t for f in families for t in f]
    g = group_tasks("surrogate", tasks, evaluator=planted_evaluator(families, noise=0.01), num_subsets=30,
                    grouping=grouping, grouping_kwargs=kwargs, seed=0)
    assert sorted(map(sorted, g.groups)) == sorted(map(sorted, families))
    assert g.params["grouping"] == grouping
    affinity = np.asarray(g.scores["affinity"])
    same = np.array([[a[:2] == b[:2] for b in tasks] for a in tasks]) & ~np.eye(6, dtype=bool)
    assert affinity[same].min() > affinity[~same & ~np.eye(6, dtype=bool)].max()


def test_surrogate_rejects_a_grouping_method_without_an_affinity():
    with pytest.raises(ValueError, match="takes an affinity"):
        surrogate(TASKS, evaluator=planted_evaluator([TASKS]), grouping="single_task")
