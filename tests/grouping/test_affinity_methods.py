"""transfer_gain and tag grouping steps on given affinity matrices (planted block structure)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_taskgroup.grouping import group_tasks
from hf_taskgroup.grouping.methods.affinity import member_scores, tag, transfer_gain
from hf_taskgroup.grouping.solvers.partition import InfeasibleGroupingError, transfer_gain_value


def planted(sizes, seed=0, within=1.0, across=-0.5, noise=0.1):
    """S[i, j] = within for tasks of the same block, across otherwise, plus noise; diagonal 0."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n = len(labels)
    S = np.where(labels[:, None] == labels[None, :], within, across) + rng.normal(0, noise, (n, n))
    np.fill_diagonal(S, 0.0)
    tasks = [f"t{i}" for i in range(n)]
    truth = [[t for t, lab in zip(tasks, labels) if lab == k] for k in range(len(sizes))]
    return tasks, S, truth


def canon(groups):
    return sorted(sorted(g) for g in groups)


@pytest.mark.parametrize("num_groups", [None, 3])
def test_transfer_gain_recovers_planted_blocks(num_groups):
    tasks, S, truth = planted([3, 2, 4])
    g = group_tasks("transfer_gain", tasks, affinity=S, num_groups=num_groups)
    assert canon(g.groups) == canon(truth)
    assert g.provenance["formulation"] == "enumerated" and g.provenance["optimal"] is True
    assert g.objective == pytest.approx(sum(transfer_gain_value(S, [tasks.index(t) for t in b]) for b in truth))
    assert g.params["diagonal_included"] is True


def test_compact_formulation_gives_the_same_grouping():
    tasks, S, truth = planted([3, 3, 2], seed=1)
    enumerated = transfer_gain(tasks, affinity=S, num_groups=3, formulation="enumerated")
    compact = transfer_gain(tasks, affinity=S, num_groups=3, formulation="compact")
    assert canon(compact.groups) == canon(enumerated.groups) == canon(truth)
    assert compact.objective == pytest.approx(enumerated.objective)


def test_auto_switches_to_compact_above_twelve_tasks():
    tasks, S, truth = planted([5, 4, 5], seed=2)
    g = transfer_gain(tasks, affinity=S, num_groups=3)
    assert g.provenance["formulation"] == "compact"
    assert canon(g.groups) == canon(truth)


def test_transfer_gain_size_limit_and_exact_count():
    tasks, S, _ = planted([4, 2], seed=3)
    g = transfer_gain(tasks, affinity=S, max_group_size=2)
    assert max(len(x) for x in g.groups) == 2
    g = transfer_gain(tasks, affinity=S, num_groups=4)
    assert len(g.groups) == 4
    with pytest.raises(InfeasibleGroupingError, match="cannot cover 6 tasks"):
        transfer_gain(tasks, affinity=S, num_groups=2, max_group_size=2)


def test_transfer_gain_overlap_budget_and_assignment():
    tasks, S, _ = planted([2, 2], seed=4, across=0.3)
    S[0, 2] = S[2, 0] = 2.0  # t0 and t2 help each other a lot
    g = transfer_gain(tasks, affinity=S, overlap=True, num_groups=3, num_groups_mode="at_most",
                      task_cost=[1, 1, 1, 1], budget=6)
    assert g.overlap is True
    assert sum(len(x) for x in g.groups) <= 6
    g.validate()
    for t in tasks:
        assert t in g.group_of(t)
    assert set(g.scores["assignment"]) == set(tasks)


def test_tag_recovers_planted_blocks_with_k_groups():
    tasks, S, truth = planted([3, 2, 4], seed=5)
    g = group_tasks("tag", tasks, affinity=S, num_groups=3)
    assert canon(g.groups) == canon(truth)
    assert g.overlap is True
    assert all(t in g.groups[g.scores["assignment"][t]] for t in tasks)
    assert g.objective == pytest.approx(np.mean(list(g.scores["task_scores"].values())))


def test_tag_leaves_a_task_alone_when_every_group_hurts_it():
    tasks, S, _ = planted([2, 2], seed=6)
    S[:, 3] = -1.0  # everyone hurts t3
    S[3, 3] = 0.0
    g = tag(tasks, affinity=S)
    assert g.group_of("t3") == ["t3"]
    assert g.scores["task_scores"]["t3"] == 0.0


def test_tag_allows_overlap():
    # t1 gains from t0 and from t2, but t0 and t2 hurt each other: two overlapping pairs beat any partition
    S = np.array([[0.0, 1.0, -2.0], [1.0, 0.0, 1.0], [-2.0, 1.0, 0.0]])
    g = tag(["a", "b", "c"], affinity=S, num_groups=2)
    assert canon(g.groups) == [["a", "b"], ["b", "c"]]
    assert g.objective == pytest.approx(1.0)


def test_member_scores_exclude_self_and_singletons_score_zero():
    S = np.array([[5.0, 2.0, 1.0], [4.0, 5.0, 1.0], [0.0, 0.0, 5.0]])
    assert member_scores(S, (0, 1, 2)).tolist() == [2.0, 1.0, 1.0]
    assert member_scores(S, (1,)).tolist() == [0.0]


def test_affinity_shape_errors_name_tasks():
    with pytest.raises(ValueError, match=r"3x3 matrix over tasks \['a', 'b', 'c'\]"):
        transfer_gain(["a", "b", "c"], affinity=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="grouping method 'tag' needs the input 'affinity'"):
        group_tasks("tag", ["a", "b"])
    with pytest.raises(ValueError, match="formulation"):
        transfer_gain(["a"], affinity=np.zeros((1, 1)), formulation="fast")
