"""Baselines: set partitions, uniform random partitions, exhaustive search, clustering."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hf_taskgroup.grouping import group_tasks
from hf_taskgroup.grouping.methods.baselines import (
    bell_number,
    clustering,
    exhaustive,
    random_grouping,
    sample_partition,
    set_partitions,
    stirling2,
)

BELL = [1, 1, 2, 5, 15, 52, 203, 877]


def canon(partition):
    return tuple(sorted(tuple(sorted(b)) for b in partition))


@pytest.mark.parametrize("n", range(8))
def test_set_partitions_yields_bell_many_distinct_partitions(n):
    parts = list(set_partitions(range(n)))
    assert len(parts) == BELL[n] == bell_number(n)
    assert len({canon(p) for p in parts}) == BELL[n]
    for p in parts:
        assert sorted(x for b in p for x in b) == list(range(n)) and all(p)


def test_stirling_numbers():
    assert [stirling2(5, k) for k in range(6)] == [0, 1, 15, 25, 10, 1]


@pytest.mark.parametrize(("num_groups", "count"), [(None, 15), (2, 7)])
def test_sample_partition_is_uniform(num_groups, count):
    rng = np.random.default_rng(0)
    draws = 3000
    seen = Counter(canon(sample_partition(4, rng, num_groups)) for _ in range(draws))
    assert len(seen) == count
    expected = draws / count
    # chi-square statistic well below the 99.9% quantile (14 dof: 36.1; 6 dof: 22.5)
    chi2 = sum((c - expected) ** 2 / expected for c in seen.values())
    assert chi2 < (36.1 if count == 15 else 22.5)


def test_random_grouping_is_seeded_and_respects_num_groups():
    tasks = list("abcdefg")
    assert random_grouping(tasks, seed=3).groups == random_grouping(tasks, seed=3).groups
    assert len({canon(random_grouping(tasks, seed=s).groups) for s in range(10)}) > 5
    for k in (1, 3, 7):
        assert len(random_grouping(tasks, num_groups=k, seed=1).groups) == k
    with pytest.raises(ValueError, match="between 1 and 7"):
        random_grouping(tasks, num_groups=8)


def test_single_task_and_all_in_one():
    assert group_tasks("single_task", ["a", "b"]).groups == [["a"], ["b"]]
    assert group_tasks("all_in_one", ["a", "b"]).groups == [["a", "b"]]


class PlantedEvaluator:
    """Loss of a task = 1.0, minus 0.2 per other member of its planted family in the group, plus 0.3 per stranger."""

    def __init__(self, families):
        self.family = {t: i for i, fam in enumerate(families) for t in fam}
        self.trainings = 0
        self.calls = []

    def __call__(self, tasks):
        self.trainings += 1
        self.calls.append(tuple(tasks))
        out = {}
        for t in tasks:
            same = sum(self.family[o] == self.family[t] for o in tasks if o != t)
            other = sum(self.family[o] != self.family[t] for o in tasks)
            out[t] = {"loss": 1.0 - 0.2 * same + 0.3 * other, "accuracy": 0.5}
        return out


def test_exhaustive_finds_planted_partition_and_scores_203_partitions():
    families = [["a", "b", "c"], ["d", "e"], ["f"]]
    tasks = ["a", "d", "b", "f", "e", "c"]
    ev = PlantedEvaluator(families)
    g = group_tasks("exhaustive", tasks, evaluator=ev)
    assert canon(g.groups) == canon(families)
    assert g.scores["partitions_scored"] == 203
    assert g.scores["groups_evaluated"] == 63 == len(set(ev.calls))
    assert g.cost.trainings == 63
    assert g.objective == pytest.approx(6 - 0.2 * (3 * 2 + 2 * 1))
    assert g.scores["top_partitions"][0]["score"] == pytest.approx(g.objective)
    assert g.scores["group_losses"]["a+b+c"] == {"a": 0.6, "b": 0.6, "c": 0.6}


def test_exhaustive_with_group_value_maximises():
    value = lambda g: len(g) ** 2 if set(g) <= {"a", "b", "c"} else -1.0  # noqa: E731
    g = exhaustive(list("abcd"), group_value=value)
    assert canon(g.groups) == canon([["a", "b", "c"], ["d"]])
    assert g.objective == 8.0
    assert g.cost.trainings == 0


def test_exhaustive_guards():
    with pytest.raises(ValueError, match="115,975|678,570"):
        exhaustive([f"t{i}" for i in range(11)], group_value=lambda g: 0.0)
    with pytest.raises(ValueError, match="exactly one of evaluator"):
        exhaustive(["a"], evaluator=PlantedEvaluator([["a"]]), group_value=lambda g: 0.0)
    with pytest.raises(ValueError, match="no finite 'loss' for task 'b'"):
        exhaustive(["a", "b"], evaluator=lambda ts: {t: {"loss": 1.0} for t in ts if t == "a"})


def block_affinity(sizes, seed=0, within=1.0, noise=0.1):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    S = np.where(labels[:, None] == labels[None, :], within, -0.5) + rng.normal(0, noise, (len(labels),) * 2)
    tasks = [f"t{i}" for i in range(len(labels))]
    truth = [[t for t, lab in zip(tasks, labels) if lab == k] for k in range(len(sizes))]
    return tasks, S, truth


@pytest.mark.parametrize("algorithm", ["hierarchical", "spectral"])
def test_clustering_recovers_planted_blocks(algorithm):
    tasks, S, truth = block_affinity([3, 2, 4])
    g = group_tasks("clustering", tasks, affinity=S, algorithm=algorithm, num_groups=3)
    assert canon(g.groups) == canon(truth)


def test_hierarchical_distance_threshold_and_distance_matrix():
    tasks, S, truth = block_affinity([3, 3])
    g = clustering(tasks, affinity=S, distance_threshold=1.0)
    assert canon(g.groups) == canon(truth)
    dist = S.max() - S
    g2 = clustering(tasks, affinity=dist, matrix_kind="distance", num_groups=2)
    assert canon(g2.groups) == canon(truth)


def test_clustering_symmetrises_the_matrix():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(6, 6))
    tasks = list("abcdef")
    g = clustering(tasks, affinity=A, num_groups=3)
    g_t = clustering(tasks, affinity=A.T, num_groups=3)
    assert canon(g.groups) == canon(g_t.groups)
    assert np.allclose(g.scores["symmetrised"], (A + A.T) / 2)


def test_clustering_errors():
    with pytest.raises(ValueError, match="3x3 matrix over tasks"):
        clustering(["a", "b", "c"], affinity=np.zeros((2, 2)), num_groups=2)
    with pytest.raises(ValueError, match="exactly one of num_groups or distance_threshold"):
        clustering(["a", "b"], affinity=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="spectral clustering needs num_groups"):
        clustering(["a", "b"], affinity=np.zeros((2, 2)), algorithm="spectral")
    with pytest.raises(ValueError, match=r"\[\('b', 'a'\)\]"):
        clustering(["a", "b"], affinity=np.array([[0, 0], [np.nan, 0]]), num_groups=1)
    assert clustering(["a"], affinity=np.zeros((1, 1)), num_groups=1).groups == [["a"]]
