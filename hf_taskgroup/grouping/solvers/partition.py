"""Exact grouping solvers: mixed-integer linear programmes solved with HiGHS (``scipy.optimize.milp``).

Three models:

- :func:`solve_set_partition`: enumerate candidate groups (every subset within the size limits, or
  given candidates), one binary ``x_g`` per candidate, maximise ``sum_g value_g x_g`` with every task
  covered exactly once (partition) or at least once (``overlap=True``: a set cover, every candidate
  used at most once), optionally exactly / at most ``num_groups`` groups and ``sum_g cost_g x_g <= budget``.
  Any group value works. Exact for small N (2^N - 1 candidates).
- :func:`solve_compact`: the transfer-gain objective ``sum_g (1/|G_g|) sum_{i,k in G_g} S[i,k]``
  (diagonal included) as a compact MILP for larger N: assignments ``X[i,g]``, McCormick products
  ``z[i,k,g] = X[i,g] X[k,g]``, size indicators ``u[g,s]`` (group g has exactly s tasks) and the group
  value disaggregated by size, ``q[g,s] = P_g u[g,s]``, so that ``P_g / |G_g| = sum_s q[g,s] / s``
  exactly. Same optimum as the enumerated model (tests check it).
- :func:`network_selection`: TAG's selection. Choose at most (or exactly) ``k`` groups, overlap
  allowed, maximising the mean over tasks of each task's best score among chosen groups containing it.

Errors: constraints that cannot hold together raise :class:`InfeasibleGroupingError` (a ``ValueError``)
naming them, checked before solving where it is obvious and mapped from HiGHS' infeasible status
otherwise. A time limit reached before any feasible solution raises :class:`GroupingSolverError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import Bounds

from hf_taskgroup.grouping.solvers.common import (
    MAX_CANDIDATES,
    Group,
    GroupingSolverError,
    InfeasibleGroupingError,
    NumGroupsMode,
    SolverResult,
    _check_count,
    _check_sizes,
    _count_groups,
    _describe_constraints,
    _Rows,
    _run_milp,
    _task_names,
    enumerate_groups,
    transfer_gain_value,
)
from hf_taskgroup.grouping.solvers.compact import solve_compact


def _normalise_candidates(
    names: list[str], candidates: Sequence[Sequence[int]], min_size: int, max_size: int
) -> list[Group]:
    n = len(names)
    seen: dict[Group, None] = {}
    for cand in candidates:
        g = tuple(sorted({int(i) for i in cand}))
        if not g:
            raise ValueError("candidate groups must be non-empty; got an empty candidate")
        if g[0] < 0 or g[-1] >= n:
            raise ValueError(f"candidate {tuple(cand)} has a task index outside 0..{n - 1}")
        if min_size <= len(g) <= max_size:
            seen.setdefault(g, None)
    return list(seen)


def _uncovered(names: list[str], groups: Sequence[Group]) -> list[str]:
    covered = np.zeros(len(names), dtype=bool)
    for g in groups:
        covered[list(g)] = True
    return [names[i] for i in np.flatnonzero(~covered)]


# ------------------------------------------------------------------------------- enumerated set partitioning
def _candidate_groups(
    names: list[str], group_fn: Any, candidates: Any, min_group_size: int, hi: int, max_candidates: int, hint: str
) -> list[tuple[int, ...]]:
    """Candidate groups: the keys of a mapping ``group_fn``, the given ``candidates``, or every group
    with a size in ``[min_group_size, hi]`` (refused past ``max_candidates``, with ``hint``)."""
    if candidates is None and isinstance(group_fn, Mapping):
        candidates = [tuple(sorted(int(i) for i in g)) for g in group_fn]
    if candidates is not None:
        return _normalise_candidates(names, candidates, min_group_size, hi)
    n = len(names)
    count = _count_groups(n, min_group_size, hi)
    if count > max_candidates:
        raise ValueError(f"{n} tasks give {count} candidate groups (> max_candidates={max_candidates}); {hint}")
    return enumerate_groups(n, min_group_size=min_group_size, max_group_size=hi)


def solve_set_partition(
    tasks: Sequence[Any] | int,
    group_value: Callable[[Group], float] | Mapping[Group, float],
    *,
    num_groups: int | None = None,
    num_groups_mode: NumGroupsMode = "exact",
    max_group_size: int | None = None,
    min_group_size: int = 1,
    overlap: bool = False,
    group_cost: Callable[[Group], float] | Mapping[Group, float] | None = None,
    budget: float | None = None,
    candidates: Sequence[Sequence[int]] | None = None,
    time_limit: float | None = None,
    mip_rel_gap: float = 1e-9,
    max_candidates: int = MAX_CANDIDATES,
) -> SolverResult:
    """Choose groups maximising ``sum value(G)`` over a partition (or a cover when ``overlap``) of the tasks.

    Args:
        tasks: task names (used in error messages) or their number N; groups are tuples of indices.
        group_value: value of a group (tuple of sorted indices), a callable or a mapping. With a mapping and
            no ``candidates``, the mapping's keys are the candidates.
        num_groups: number of groups, exactly or at most (``num_groups_mode``); None leaves it free.
        max_group_size, min_group_size: size limits of every group (candidates outside are dropped).
        overlap: allow a task in several groups (each candidate is still used at most once).
        group_cost, budget: ``sum_g cost(G) <= budget``; the default cost of a group is its number of tasks.
        candidates: candidate groups to choose from, instead of every subset within the size limits.
        time_limit: seconds for HiGHS; on timeout the best grouping found is returned with ``optimal=False``.

    Example:
        >>> S = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
        >>> solve_set_partition(3, lambda g: transfer_gain_value(S, g)).groups
        [(0, 1), (2,)]
    """
    start = time.perf_counter()
    names = _task_names(tasks)
    n = len(names)
    hi = _check_sizes(names, min_group_size, max_group_size)
    if isinstance(group_value, Mapping):
        value_map = {tuple(sorted(int(i) for i in k)): float(v) for k, v in group_value.items()}
    cands = _candidate_groups(names, group_value, candidates, min_group_size, hi, max_candidates,
                              "use solve_compact, a smaller max_group_size, or explicit candidates")
    if not cands:
        raise InfeasibleGroupingError(f"no candidate group has a size in [{min_group_size}, {hi}]")
    missing = _uncovered(names, cands)
    if missing:
        raise InfeasibleGroupingError(f"task(s) {missing} appear in no candidate group")
    _check_count(names, num_groups, num_groups_mode, min_group_size, hi, overlap, len(cands))

    values = np.empty(len(cands))
    for j, g in enumerate(cands):
        if isinstance(group_value, Mapping):
            if g not in value_map:
                raise KeyError(f"group_value has no entry for candidate group {g}")
            v = value_map[g]
        else:
            v = float(group_value(g))
        if not np.isfinite(v):
            raise ValueError(f"group_value of group {[names[i] for i in g]} is {v}; values must be finite")
        values[j] = v
    costs = None
    if budget is not None:
        if group_cost is None:
            costs = np.array([len(g) for g in cands], dtype=float)
            if n > budget:
                raise InfeasibleGroupingError(
                    f"budget={budget} < {n}: every task must be in a group and a group costs its number of tasks"
                )
        elif isinstance(group_cost, Mapping):
            cost_map = {tuple(sorted(int(i) for i in k)): float(v) for k, v in group_cost.items()}
            costs = np.array([cost_map[g] for g in cands], dtype=float)
        else:
            costs = np.array([float(group_cost(g)) for g in cands], dtype=float)

    m = len(cands)
    rows = _Rows(m)
    member_rows = np.concatenate([np.asarray(g) for g in cands])
    member_cols = np.repeat(np.arange(m), [len(g) for g in cands])
    rows.add(member_rows, member_cols, np.ones(len(member_rows)), 1.0, np.inf if overlap else 1.0, n)
    if num_groups is not None:
        lo = float(num_groups) if num_groups_mode == "exact" else 0.0
        rows.add_row(np.arange(m), np.ones(m), lo, float(num_groups))
    if costs is not None:
        rows.add_row(np.arange(m), costs, -np.inf, float(budget))
    context = _describe_constraints(
        tasks=n, overlap=overlap, num_groups=num_groups,
        num_groups_mode=num_groups_mode if num_groups is not None else None,
        min_group_size=min_group_size if min_group_size > 1 else None,
        max_group_size=max_group_size, budget=budget,
    )
    res = _run_milp(
        -values, np.ones(m), Bounds(0, 1), rows, time_limit=time_limit, mip_rel_gap=mip_rel_gap, context=context
    )
    chosen = np.flatnonzero(res.x > 0.5)
    groups = sorted((cands[j] for j in chosen), key=lambda g: (g[0], g))
    return SolverResult.from_highs(
        res, start, groups=groups, objective=float(values[chosen].sum()), num_candidates=m, num_variables=m,
        num_constraints=rows.count, formulation="enumerated",
    )


# ------------------------------------------------------------------------------------ network selection
def network_selection(
    tasks: Sequence[Any] | int,
    group_score: Callable[[Group], np.ndarray] | Mapping[Group, Sequence[float]],
    k: int,
    *,
    num_groups_mode: NumGroupsMode = "at_most",
    max_group_size: int | None = None,
    min_group_size: int = 1,
    candidates: Sequence[Sequence[int]] | None = None,
    time_limit: float | None = None,
    mip_rel_gap: float = 1e-9,
    max_candidates: int = MAX_CANDIDATES,
) -> SolverResult:
    """TAG network selection: choose at most ``k`` groups (overlap allowed, every task covered) maximising the
    mean over tasks of each task's best score among the chosen groups that contain it.

    ``group_score(g)`` returns one score per member of ``g`` (aligned with the sorted indices of ``g``).
    MILP: ``y_g`` binary (group chosen), ``a[t, g]`` in [0, 1] (task t served by g), ``a[t, g] <= y_g``,
    ``sum_g a[t, g] = 1``, ``sum_g y_g <= k`` (``== k`` with ``num_groups_mode="exact"``). For fixed ``y``
    the assignment is a per-task choice, so continuous ``a`` is exact. With ``"at_most"``, chosen groups
    that serve no task as their best group are dropped (the objective is unchanged).
    ``assignment`` maps each task to the index (in ``groups``) of its best chosen group.

    Example:
        >>> score = lambda g: np.full(len(g), 1.0 if g in [(0, 1), (1, 2)] else 0.0)
        >>> r = network_selection(3, score, k=2)
        >>> r.groups, r.objective
        ([(0, 1), (1, 2)], 1.0)
    """
    start = time.perf_counter()
    names = _task_names(tasks)
    n = len(names)
    hi = _check_sizes(names, min_group_size, max_group_size)
    if isinstance(group_score, Mapping):
        score_map = {tuple(sorted(int(i) for i in g)): v for g, v in group_score.items()}
    cands = _candidate_groups(names, group_score, candidates, min_group_size, hi, max_candidates,
                              "pass a smaller max_group_size or explicit candidates")
    missing = _uncovered(names, cands)
    if missing:
        raise InfeasibleGroupingError(f"task(s) {missing} appear in no candidate group")
    _check_count(names, k, num_groups_mode, min_group_size, hi, True, len(cands))

    m = len(cands)
    sizes = np.array([len(g) for g in cands])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    num_a = int(offsets[-1])
    scores = np.empty(num_a)
    for j, g in enumerate(cands):
        s = np.asarray(score_map[g] if isinstance(group_score, Mapping) else group_score(g), dtype=float).ravel()
        if s.shape != (len(g),):
            raise ValueError(f"group_score of group {g} has {s.size} values, expected {len(g)} (one per member)")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"group_score of group {[names[i] for i in g]} is not finite: {s.tolist()}")
        scores[offsets[j] : offsets[j + 1]] = s
    a_task = np.concatenate([np.asarray(g) for g in cands])
    a_group = np.repeat(np.arange(m), sizes)
    num_vars = m + num_a
    rows = _Rows(num_vars)
    rows.add(a_task, m + np.arange(num_a), np.ones(num_a), 1.0, 1.0, n)  # every task served once
    r = np.arange(num_a)
    rows.add(np.concatenate([r, r]), np.concatenate([m + r, a_group]),
             np.concatenate([np.ones(num_a), -np.ones(num_a)]), -np.inf, 0.0, num_a)  # a <= y
    lo = float(k) if num_groups_mode == "exact" else 0.0
    rows.add_row(np.arange(m), np.ones(m), lo, float(k))
    c = np.concatenate([np.zeros(m), -scores / n])
    integrality = np.concatenate([np.ones(m), np.zeros(num_a)])
    context = _describe_constraints(tasks=n, k=k, num_groups_mode=num_groups_mode,
                                    min_group_size=min_group_size if min_group_size > 1 else None,
                                    max_group_size=max_group_size)
    res = _run_milp(c, integrality, Bounds(0, 1), rows, time_limit=time_limit, mip_rel_gap=mip_rel_gap,
                    context=context)
    chosen = [j for j in np.flatnonzero(res.x[:m] > 0.5)]
    best: dict[int, tuple[float, int]] = {}
    for j in chosen:
        for pos, t in enumerate(cands[j]):
            s = scores[offsets[j] + pos]
            if t not in best or s > best[t][0] + 1e-12:
                best[t] = (s, j)
    if num_groups_mode == "at_most":
        chosen = sorted({j for _, j in best.values()})
    order = sorted(chosen, key=lambda j: (cands[j][0], cands[j]))
    position = {j: i for i, j in enumerate(order)}
    return SolverResult.from_highs(
        res, start, groups=[cands[j] for j in order], objective=float(np.mean([best[t][0] for t in range(n)])),
        num_candidates=m, num_variables=num_vars, num_constraints=rows.count, formulation="network_selection",
        assignment={t: position[best[t][1]] for t in range(n)},
    )



__all__ = [
    "GroupingSolverError",
    "InfeasibleGroupingError",
    "SolverResult",
    "enumerate_groups",
    "network_selection",
    "solve_compact",
    "solve_set_partition",
    "transfer_gain_value",
]
