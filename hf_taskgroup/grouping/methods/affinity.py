"""Grouping steps of ``transfer_gain`` (Wang, Pan, Yu; arXiv 2402.15328) and ``tag`` (Fifty et al., NeurIPS 2021).

Both take an already collected affinity matrix over ``tasks`` with ``S[i, j]`` = gain of task i onto task j
(collected during one multi-task run by a trainer-side collector; that run is not counted here, so
``cost.trainings`` is 0).

- ``transfer_gain``: maximise ``sum_g (1/|G_g|) sum_{i,k in G_g} S[i, k]``. The sum runs over all ordered
  pairs of members *including the diagonal* ``i == k``, as in the authors' code. Note what that implies:
  ``value(G) = |G| * mean(S[G, G])``, so splitting a group whose entries are all equal (diagonal included)
  changes nothing, and merging two groups pays only when their mean cross gain exceeds the average of
  their two mean internal gains (``mean(S[G, G])``, diagonal included).
  Set the diagonal to 0 to ignore self-gains (then positive cross gains always favour merging). Options: number of groups (exactly / at most), overlap (every task in at least one
  group, each task then served by the group with its best member score, see below), group-size limits and
  a budget on ``sum_g cost(G_g)`` where a group costs its number of tasks or the sum of a per-task cost
  vector. Solved exactly with HiGHS: enumerated set partitioning for N <= 12, the compact linearised
  model beyond (or on request with ``formulation``).
- ``tag``: network selection. The score of group G for member j is the mean over the *other* members i of
  ``S[i, j]``; a singleton scores 0 (no transfer; TAG's notebook uses -1e6 to keep singletons as a last
  resort, 0 instead lets a task stay alone whenever every group would hurt it). Choose at most
  ``num_groups`` groups (TAG's ``k`` / "splits"), overlap allowed, maximising the mean over tasks of each
  task's best score among the chosen groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_taskgroup.grouping.methods.baselines import _square
from hf_taskgroup.grouping.registry import register_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.grouping.solvers.partition import (
    SolverResult,
    network_selection,
    solve_compact,
    solve_set_partition,
    transfer_gain_value,
)

#: ``formulation="auto"`` enumerates candidate groups up to this many tasks, and uses the compact model beyond.
ENUMERATION_MAX_TASKS = 12


def member_scores(S: np.ndarray, group: Sequence[int]) -> np.ndarray:
    """TAG's score of ``group`` for each member j: mean over the other members i of ``S[i, j]`` (singleton: 0).

    >>> member_scores(np.array([[0, 2, 1], [4, 0, 1], [0, 0, 0]], dtype=float), (0, 1, 2)).tolist()
    [2.0, 1.0, 1.0]
    """
    idx = np.asarray(group, dtype=int)
    if idx.size == 1:
        return np.zeros(1)
    sub = S[np.ix_(idx, idx)]
    return (sub.sum(axis=0) - np.diag(sub)) / (idx.size - 1)


def _solver_provenance(res: SolverResult) -> dict[str, Any]:
    keys = ("formulation", "status", "status_code", "optimal", "seconds", "num_candidates", "num_variables",
            "num_constraints", "bound", "gap")
    return {"solver": "HiGHS (scipy.optimize.milp)", **{k: getattr(res, k) for k in keys}}


def _key(names: Sequence[str]) -> str:
    return "+".join(names)


@register_method(
    "transfer_gain",
    needs=("affinity",),
    description="Wang et al. 2024: maximise summed average pairwise transfer gain per group (exact MILP)",
)
def transfer_gain(
    tasks: Sequence[str],
    *,
    affinity: Any,
    num_groups: int | None = None,
    num_groups_mode: str = "exact",
    overlap: bool = False,
    max_group_size: int | None = None,
    min_group_size: int = 1,
    budget: float | None = None,
    task_cost: Sequence[float] | None = None,
    formulation: str = "auto",
    time_limit: float | None = None,
    seed: int = 0,
) -> Grouping:
    """Group tasks by maximising ``sum_g (1/|G_g|) sum_{i,k in G_g} S[i,k]`` (diagonal included).

    Args:
        affinity: ``S[i, j]`` = transfer gain of task i onto task j, over ``tasks``.
        num_groups, num_groups_mode: exactly / at most this many groups (None: free).
        overlap: allow a task in several groups (a cover); ``scores["assignment"]`` names each task's group.
        max_group_size, min_group_size: size limits.
        budget, task_cost: ``sum_g cost(G_g) <= budget``; a group costs its number of tasks, or the sum of
            ``task_cost`` over its members.
        formulation: ``auto`` (enumerate for N <= 12, compact beyond), ``enumerated`` or ``compact``.
        time_limit: seconds for HiGHS; on timeout the best grouping found is returned and
            ``provenance["optimal"]`` is False.

    Example:
        >>> S = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
        >>> transfer_gain(["a", "b", "c"], affinity=S).groups
        [['a', 'b'], ['c']]
    """
    tasks = list(tasks)
    n = len(tasks)
    S = _square(tasks, affinity, "affinity")
    if formulation not in ("auto", "enumerated", "compact"):
        raise ValueError(f"formulation must be 'auto', 'enumerated' or 'compact', got {formulation!r}")
    costs = None if task_cost is None else np.asarray(task_cost, dtype=float)
    if costs is not None and costs.shape != (n,):
        raise ValueError(f"task_cost needs one value per task ({n}), got shape {costs.shape}")
    chosen = formulation if formulation != "auto" else ("enumerated" if n <= ENUMERATION_MAX_TASKS else "compact")
    if chosen == "enumerated":
        res = solve_set_partition(
            tasks, lambda g: transfer_gain_value(S, g), num_groups=num_groups,
            num_groups_mode=num_groups_mode, max_group_size=max_group_size, min_group_size=min_group_size,
            overlap=overlap, budget=budget, time_limit=time_limit,
            group_cost=None if costs is None else (lambda g: float(costs[list(g)].sum())),
        )
    else:
        res = solve_compact(
            S, num_groups, num_groups_mode=num_groups_mode, max_group_size=max_group_size,
            min_group_size=min_group_size, overlap=overlap, task_cost=costs, budget=budget, tasks=tasks,
            time_limit=time_limit,
        )
    groups = [[tasks[i] for i in g] for g in res.groups]
    scores: dict[str, Any] = {
        "affinity": S.tolist(),
        "group_values": {_key(names): transfer_gain_value(S, g) for names, g in zip(groups, res.groups)},
    }
    if overlap:
        best: dict[str, tuple[float, int]] = {}
        for gi, g in enumerate(res.groups):
            for j, s in zip(g, member_scores(S, g)):
                if tasks[j] not in best or s > best[tasks[j]][0]:
                    best[tasks[j]] = (float(s), gi)
        scores["assignment"] = {t: best[t][1] for t in tasks}
    return Grouping(
        groups=groups,
        method="transfer_gain",
        tasks=tasks,
        params={
            "num_groups": num_groups, "num_groups_mode": num_groups_mode, "overlap": overlap,
            "max_group_size": max_group_size, "min_group_size": min_group_size, "budget": budget,
            "task_cost": None if costs is None else costs.tolist(), "formulation": chosen,
            "time_limit": time_limit, "diagonal_included": True, "seed": seed,
        },
        scores=scores,
        objective=res.objective,
        overlap=overlap,
        cost=GroupingCost(trainings=0),
        provenance=_solver_provenance(res),
    )


@register_method(
    "tag",
    needs=("affinity",),
    description="Fifty et al. 2021: TAG network selection over lookahead inter-task affinities",
)
def tag(
    tasks: Sequence[str],
    *,
    affinity: Any,
    num_groups: int | None = None,
    num_groups_mode: str = "at_most",
    max_group_size: int | None = None,
    min_group_size: int = 1,
    time_limit: float | None = None,
    seed: int = 0,
) -> Grouping:
    """TAG network selection: at most ``num_groups`` groups (TAG's k; None: no limit), overlap allowed.

    Maximises the mean over tasks of each task's best member score (mean over the other members i of
    ``S[i, j]``; singletons 0). ``scores["assignment"]`` maps each task to the group that serves it.

    Example:
        >>> S = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
        >>> tag(["a", "b", "c"], affinity=S, num_groups=2).groups
        [['a', 'b'], ['c']]
    """
    tasks = list(tasks)
    n = len(tasks)
    S = _square(tasks, affinity, "affinity")
    k = n if num_groups is None else num_groups
    res = network_selection(tasks, lambda g: member_scores(S, g), k, num_groups_mode=num_groups_mode,
                            max_group_size=max_group_size, min_group_size=min_group_size, time_limit=time_limit)
    groups = [[tasks[i] for i in g] for g in res.groups]
    assert res.assignment is not None
    assignment = {tasks[t]: gi for t, gi in res.assignment.items()}
    return Grouping(
        groups=groups,
        method="tag",
        tasks=tasks,
        params={"num_groups": num_groups, "num_groups_mode": num_groups_mode, "max_group_size": max_group_size,
                "min_group_size": min_group_size, "time_limit": time_limit, "singleton_score": 0.0, "seed": seed},
        scores={
            "affinity": S.tolist(),
            "assignment": assignment,
            "member_scores": {_key(names): dict(zip(names, member_scores(S, g).tolist()))
                              for names, g in zip(groups, res.groups)},
            "task_scores": {t: float(member_scores(S, res.groups[gi])[res.groups[gi].index(tasks.index(t))])
                            for t, gi in assignment.items()},
        },
        objective=res.objective,
        overlap=True,
        cost=GroupingCost(trainings=0),
        provenance=_solver_provenance(res),
    )
