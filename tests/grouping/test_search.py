"""affinity_search: budget, caching, planted families, resume after a kill, quick reject, Metropolis, mutation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_taskgroup.grouping.evaluators.base import CachedEvaluator
from hf_taskgroup.grouping.methods.affinity_search import (
    affinity_search,
    metropolis_acceptance,
    mutate_partition,
    quick_reject_probability,
)
from hf_taskgroup.grouping.methods.search_predictor import GroupFeaturizer
from hf_taskgroup.grouping.registry import group_tasks
from hf_taskgroup.grouping.synthetic import family_names, planted_train_fn

FAMILIES = family_names(2, 3)
TASKS = [t for f in FAMILIES for t in f]
FAST = {"predictor_epochs": 8, "initial_partitions": 3}


class Recorder:
    """Wrap a train_fn: record every call; optionally raise after ``fail_after`` calls."""

    def __init__(self, fn, fail_after: int | None = None) -> None:
        self.fn = fn
        self.calls: list[tuple[str, ...]] = []
        self.fail_after = fail_after

    def __call__(self, tasks):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(tuple(sorted(tasks)))
        return self.fn(tasks)


def planted(noise: float = 0.02, seed: int = 0):
    return planted_train_fn(FAMILIES, noise=noise, seed=seed)


def as_sets(groups):
    return sorted(sorted(g) for g in groups)


# ------------------------------------------------------------------------------ schedule and acceptance
def test_quick_reject_probability_schedule():
    assert quick_reject_probability(True, 0) == 0.99
    assert quick_reject_probability(True, 10_000) == 0.99
    assert [quick_reject_probability(False, k) for k in (0, 49, 50, 99, 100, 5000)] == [
        0.10, 0.10, 0.05, 0.05, 0.005, 0.005]


def test_metropolis_acceptance_function():
    assert metropolis_acceptance(1.0, 0.5) == 1.0
    assert metropolis_acceptance(1.0, 1.0) == 1.0
    assert metropolis_acceptance(1.0, 1.2) == pytest.approx(math.exp(-1.0))
    assert metropolis_acceptance(1.0, 1.2, temperature_constant=10.0) == pytest.approx(math.exp(-2.0))


# ------------------------------------------------------------------------------ mutation
def test_mutation_moves_exactly_one_task_and_keeps_a_partition():
    rng = np.random.default_rng(0)
    partition = [["a", "b", "c"], ["d"], ["e", "f"]]
    for _ in range(200):
        cand, changed = mutate_partition(partition, rng)
        assert sorted(t for g in cand for t in g) == list("abcdef")
        assert all(g in cand for g in changed)
        old = {frozenset(g) for g in partition}
        new = {frozenset(g) for g in cand}
        assert 1 <= len(new - old) <= 2  # only the source and target groups change
        moved = {t for g in new - old for t in g} ^ {t for g in old - new for t in g}
        assert len(moved) <= 1


def test_mutation_of_a_singleton_joins_an_existing_group_and_others_can_open_a_new_group():
    rng = np.random.default_rng(1)
    seen_new_group = False
    for _ in range(100):
        cand, _ = mutate_partition([["a"], ["b", "c"]], rng)
        assert len(cand) in (1, 2, 3)
        if len(cand) == 3:
            seen_new_group = True
        if cand == [["a", "b", "c"]]:
            continue
    assert seen_new_group
    cand, changed = mutate_partition([["a"], ["b"]], np.random.default_rng(0))
    assert cand == [["a", "b"]] and changed == [["a", "b"]]  # a singleton never becomes a new singleton


# ------------------------------------------------------------------------------ budget and caching
@pytest.mark.parametrize("budget", [21, 22, 30, 45])
def test_search_never_exceeds_its_budget(budget):
    fn = Recorder(planted())
    ev = CachedEvaluator(fn, None, settings={})
    g = affinity_search(TASKS, evaluator=ev, budget=budget, seed=0, **FAST)
    assert ev.trainings <= budget
    assert len(fn.calls) <= budget
    assert g.scores["evaluations"] <= budget
    assert g.cost.trainings == ev.trainings


@pytest.mark.slow
def test_search_never_exceeds_its_budget_when_candidates_need_two_new_groups():
    # with given gains no pair is trained, so a mutation often creates two unseen groups at once
    for budget in range(6, 26):
        for seed in range(3):
            ev = CachedEvaluator(planted(), None, settings={})
            affinity_search(TASKS, evaluator=ev, pairwise_gains=np.zeros((6, 6)), budget=budget, seed=seed,
                            predictor_epochs=1, initial_partitions=0)
            assert ev.trainings <= budget, (budget, seed)


def test_budget_below_stl_plus_pairs_is_refused_with_the_minimum():
    ev = CachedEvaluator(planted(), None, settings={})
    with pytest.raises(ValueError, match=r"needs >= 21"):
        affinity_search(TASKS, evaluator=ev, budget=20)
    assert ev.trainings == 0


def test_search_never_trains_the_same_group_twice():
    fn = Recorder(planted())
    ev = CachedEvaluator(fn, None, settings={})
    affinity_search(TASKS, evaluator=ev, budget=50, seed=3, **FAST)
    assert len(fn.calls) == len(set(fn.calls))


def test_search_with_a_warm_cache_trains_nothing_and_returns_the_same_grouping(tmp_path):
    first = affinity_search(TASKS, evaluator=CachedEvaluator(planted(), tmp_path, {}), budget=40, seed=1, **FAST)
    fn = Recorder(planted())
    again = affinity_search(TASKS, evaluator=CachedEvaluator(fn, tmp_path, {}), budget=40, seed=1, **FAST)
    assert fn.calls == []
    assert again.cost.trainings == 0
    assert again.groups == first.groups and again.objective == first.objective


def test_given_pairwise_gains_skip_pair_trainings():
    fn = Recorder(planted())
    ev = CachedEvaluator(fn, None, settings={})
    fam = np.array([t[:2] for t in TASKS])
    gains = np.where(fam[:, None] == fam[None, :], 0.2, -0.2)
    np.fill_diagonal(gains, 0.0)
    g = affinity_search(TASKS, evaluator=ev, pairwise_gains=gains, budget=6, seed=0, **FAST)
    assert ev.trainings <= 6
    assert all(len(c) == 1 for c in fn.calls)
    assert g.params["pairwise_gains"] == "given"


# ------------------------------------------------------------------------------ quality
@pytest.mark.parametrize("seed", [0, 1])
def test_search_recovers_planted_families(seed):
    ev = CachedEvaluator(planted(seed=seed), None, settings={})
    g = affinity_search(TASKS, evaluator=ev, budget=60, seed=seed, predictor_epochs=20, initial_partitions=4)
    assert as_sets(g.groups) == as_sets(FAMILIES)
    assert g.objective == pytest.approx(g.scores["best_total"])
    assert g.objective < sum(g.scores["stl_loss"].values())


def test_result_through_the_registry_is_valid_and_json_round_trips(tmp_path):
    ev = CachedEvaluator(planted(), None, settings={})
    g = group_tasks("affinity_search", TASKS, evaluator=ev, budget=30, seed=0, **FAST)
    g.validate()
    assert g.method == "affinity_search" and g.tasks == TASKS
    assert np.asarray(g.scores["pairwise_gains"]).shape == (6, 6)
    g.to_json(tmp_path / "g.json")
    assert type(g).from_json(tmp_path / "g.json").groups == g.groups


# ------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("kill_after", [4, 19, 22, 24, 33])  # during STL, pairs, initial partitions, search
def test_killed_search_resumes_and_matches_an_uninterrupted_run(tmp_path, kill_after):
    kwargs = {"budget": 40, "seed": 5, **FAST}
    reference_fn = Recorder(planted())
    reference = affinity_search(TASKS, evaluator=CachedEvaluator(reference_fn, tmp_path / "ref_cache", {}),
                                state_dir=tmp_path / "ref_state", **kwargs)
    assert len(reference_fn.calls) > kill_after  # the kill really happens mid-way

    killed_fn = Recorder(planted(), fail_after=kill_after)
    with pytest.raises(KeyboardInterrupt):
        affinity_search(TASKS, evaluator=CachedEvaluator(killed_fn, tmp_path / "cache", {}),
                        state_dir=tmp_path / "state", **kwargs)
    resumed_fn = Recorder(planted())
    resumed = affinity_search(TASKS, evaluator=CachedEvaluator(resumed_fn, tmp_path / "cache", {}),
                              state_dir=tmp_path / "state", **kwargs)

    assert resumed.groups == reference.groups
    assert resumed.objective == reference.objective
    assert resumed.scores["history"] == reference.scores["history"]
    assert resumed.scores["iterations"] == reference.scores["iterations"]
    all_calls = killed_fn.calls + resumed_fn.calls
    assert len(all_calls) == len(set(all_calls))  # nothing trained twice across the kill
    assert sorted(all_calls) == sorted(reference_fn.calls)


def test_state_file_alone_avoids_retraining_with_a_memory_only_evaluator(tmp_path):
    kwargs = {"budget": 40, "seed": 5, "state_dir": tmp_path / "state", **FAST}
    reference = affinity_search(TASKS, evaluator=CachedEvaluator(planted(), None, {}),
                                state_dir=tmp_path / "ref_state", **{k: v for k, v in kwargs.items() if k != "state_dir"})
    killed_fn = Recorder(planted(), fail_after=33)
    with pytest.raises(KeyboardInterrupt):
        affinity_search(TASKS, evaluator=CachedEvaluator(killed_fn, None, {}), **kwargs)
    resumed_fn = Recorder(planted())
    resumed = affinity_search(TASKS, evaluator=CachedEvaluator(resumed_fn, None, {}), **kwargs)
    assert resumed.groups == reference.groups and resumed.scores["history"] == reference.scores["history"]
    retrained = set(killed_fn.calls) & set(resumed_fn.calls)
    assert len(retrained) <= 1  # at most a group of the interrupted iteration, trained after the last save


def test_finished_search_state_is_reused_without_any_call(tmp_path):
    kwargs = {"budget": 30, "seed": 2, "state_dir": tmp_path / "state", **FAST}
    first = affinity_search(TASKS, evaluator=CachedEvaluator(planted(), None, {}), **kwargs)
    fn = Recorder(planted())
    second = affinity_search(TASKS, evaluator=CachedEvaluator(fn, None, {}), **kwargs)  # no cache: state only
    assert fn.calls == []
    assert second.groups == first.groups and second.scores["history"] == first.scores["history"]


# ------------------------------------------------------------------------------ features
def test_group_features_follow_the_definitions():
    gains = np.array([[0.0, 0.2, 0.4], [0.2, 0.0, 0.0], [0.4, 0.0, 0.0]])
    f = GroupFeaturizer(["a", "b", "c"], gains,
                        ("pairwise_improvement_average", "pairwise_improvement_variance",
                         "pairwise_improvement_stddev", "group_dataset_size", "group_variance", "number_of_tasks"),
                        task_sizes={"a": 10, "b": 30, "c": 60}, task_target_variance={"a": 1.0, "b": 2.0, "c": 1.0},
                        task_target_mean={"a": 0.0, "b": 0.0, "c": 0.0})
    avg, var, std, size, gvar, k = f.vector(["a", "b", "c"])
    pairs = np.array([0.2, 0.4, 0.0])
    assert (avg, var, std) == pytest.approx((pairs.mean(), pairs.var(), pairs.std()))
    assert size == pytest.approx(100 / 3)
    assert gvar == pytest.approx(0.1 * 1 + 0.3 * 2 + 0.6 * 1)
    assert k == 3
