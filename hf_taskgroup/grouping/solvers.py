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

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

Group = tuple[int, ...]
NumGroupsMode = Literal["exact", "at_most"]

#: Above this many enumerated candidates, :func:`solve_set_partition` refuses and points to :func:`solve_compact`.
MAX_CANDIDATES = 300_000


class InfeasibleGroupingError(ValueError):
    """The grouping constraints cannot all hold (e.g. too few groups of too small a size to cover the tasks)."""


class GroupingSolverError(RuntimeError):
    """HiGHS stopped without a usable solution (time limit before any feasible point, numerical failure)."""


@dataclass
class SolverResult:
    """Outcome of one solve.

    ``groups`` are tuples of task indices (sorted, groups ordered by their first member). ``objective``
    is recomputed from the groups (maximisation), ``bound`` is HiGHS' bound on the optimum (an upper
    bound for these maximisation problems) and ``gap`` the relative gap reported by HiGHS.
    ``assignment`` (network selection, overlapping transfer gain) maps each task to the index of the
    group that serves it best. ``incumbent`` says where the groups come from: ``"highs"``, or
    ``"local_search"`` when HiGHS stopped at its time limit and the compact solver's local search found a
    better grouping (``bound`` is still HiGHS' valid bound).

    Example:
        >>> r = solve_set_partition(3, lambda g: float(len(g) == 1))
        >>> r.groups, r.objective, r.optimal
        ([(0,), (1,), (2,)], 3.0, True)
    """

    groups: list[Group]
    objective: float
    status: str
    optimal: bool
    seconds: float
    num_candidates: int
    num_variables: int
    num_constraints: int
    formulation: str
    status_code: int = 0
    bound: float | None = None
    gap: float | None = None
    assignment: dict[int, int] | None = None
    incumbent: str = "highs"

    @classmethod
    def from_highs(cls, res: Any, start: float, **fields: Any) -> SolverResult:
        """A result of the ``scipy.optimize.milp`` answer ``res``: status, optimality, HiGHS' bound and gap
        and the seconds since ``start`` filled in; ``fields`` give the rest (and may override ``gap``)."""
        bound, gap = _bound_and_gap(res)
        return cls(
            status=str(res.message), status_code=int(res.status), optimal=res.status == 0,
            seconds=time.perf_counter() - start, bound=bound, **{"gap": gap, **fields},
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = [list(g) for g in self.groups]
        if self.assignment is not None:
            d["assignment"] = {str(k): v for k, v in self.assignment.items()}
        return d


# ---------------------------------------------------------------------------------------------- helpers
def _task_names(tasks: Sequence[Any] | int) -> list[str]:
    if isinstance(tasks, (int, np.integer)):
        if tasks < 1:
            raise ValueError(f"need at least one task, got {tasks}")
        return [str(i) for i in range(int(tasks))]
    names = [str(t) for t in tasks]
    if not names:
        raise ValueError("need at least one task, got an empty list")
    return names


def transfer_gain_value(S: np.ndarray, group: Sequence[int]) -> float:
    """``(1/|G|) * sum_{i,k in G} S[i, k]`` with the diagonal ``i == k`` included (Wang et al.'s objective).

    >>> transfer_gain_value(np.array([[0.0, 1.0], [3.0, 0.0]]), (0, 1))
    2.0
    """
    idx = np.asarray(group, dtype=int)
    return float(S[np.ix_(idx, idx)].sum() / len(idx))


def enumerate_groups(n: int, *, min_group_size: int = 1, max_group_size: int | None = None) -> list[Group]:
    """Every subset of ``range(n)`` with ``min_group_size <= size <= max_group_size``, by size then lexicographically."""
    hi = n if max_group_size is None else min(max_group_size, n)
    return [g for size in range(max(1, min_group_size), hi + 1) for g in itertools.combinations(range(n), size)]


def _count_groups(n: int, lo: int, hi: int) -> int:
    return sum(math.comb(n, s) for s in range(max(1, lo), min(hi, n) + 1))


def _check_sizes(names: list[str], min_group_size: int, max_group_size: int | None) -> int:
    n = len(names)
    if min_group_size < 1:
        raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")
    if max_group_size is not None and max_group_size < 1:
        raise ValueError(f"max_group_size must be >= 1, got {max_group_size}")
    hi = n if max_group_size is None else min(max_group_size, n)
    if max_group_size is not None and min_group_size > max_group_size:
        raise InfeasibleGroupingError(f"min_group_size={min_group_size} > max_group_size={max_group_size}")
    if min_group_size > n:
        raise InfeasibleGroupingError(f"min_group_size={min_group_size} but there are only {n} tasks")
    return hi


def _check_count(
    names: list[str],
    num_groups: int | None,
    mode: str,
    min_size: int,
    max_size: int,
    overlap: bool,
    num_candidates: int | None,
) -> None:
    """Raise InfeasibleGroupingError for group-count / size combinations that obviously cannot cover the tasks."""
    if mode not in ("exact", "at_most"):
        raise ValueError(f"num_groups_mode must be 'exact' or 'at_most', got {mode!r}")
    if num_groups is None:
        return
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    n, k = len(names), num_groups
    if k * max_size < n:
        raise InfeasibleGroupingError(
            f"num_groups={k} with max_group_size={max_size} cannot cover {n} tasks ({k}*{max_size} < {n})"
        )
    if mode == "exact" and num_candidates is not None and k > num_candidates:
        raise InfeasibleGroupingError(
            f"num_groups={k} distinct groups requested but only {num_candidates} candidate groups exist"
        )
    if overlap:
        return
    if mode == "exact":
        if k > n:
            raise InfeasibleGroupingError(f"num_groups={k} > {n} tasks: a partition has at most {n} non-empty groups")
        if k * min_size > n:
            raise InfeasibleGroupingError(
                f"num_groups={k} with min_group_size={min_size} needs at least {k * min_size} tasks, got {n}"
            )
    elif not any(m * min_size <= n <= m * max_size for m in range(1, k + 1)):
        raise InfeasibleGroupingError(
            f"no partition of {n} tasks into at most {k} groups has every group size in [{min_size}, {max_size}]"
        )


def _describe_constraints(**kw: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items() if v is not None and v is not False)


class _Rows:
    """Accumulates sparse constraint rows ``lb <= A x <= ub``."""

    def __init__(self, num_vars: int) -> None:
        self.num_vars = num_vars
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.count = 0

    def add(self, row_ids: np.ndarray, cols: np.ndarray, vals: np.ndarray, lb: Any, ub: Any, num_rows: int) -> None:
        """Add ``num_rows`` rows; ``row_ids`` are 0-based within this block."""
        self.rows.append(np.asarray(row_ids, dtype=np.int64) + self.count)
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        self.lb.append(np.broadcast_to(np.asarray(lb, dtype=float), (num_rows,)))
        self.ub.append(np.broadcast_to(np.asarray(ub, dtype=float), (num_rows,)))
        self.count += num_rows

    def add_row(self, cols: Sequence[int] | np.ndarray, vals: Sequence[float] | np.ndarray, lb: float, ub: float) -> None:
        cols = np.asarray(cols, dtype=np.int64)
        self.add(np.zeros(len(cols), dtype=np.int64), cols, np.asarray(vals, dtype=float), lb, ub, 1)

    def constraint(self) -> LinearConstraint | None:
        if not self.count:
            return None
        a = coo_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(self.count, self.num_vars),
        ).tocsr()
        return LinearConstraint(a, np.concatenate(self.lb), np.concatenate(self.ub))


def _run_milp(
    c: np.ndarray,
    integrality: np.ndarray,
    bounds: Bounds,
    rows: _Rows,
    *,
    time_limit: float | None,
    mip_rel_gap: float,
    context: str,
    allow_no_solution: bool = False,
) -> Any:
    options: dict[str, Any] = {"mip_rel_gap": float(mip_rel_gap)}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    constraint = rows.constraint()
    res = milp(c, integrality=integrality, bounds=bounds, constraints=constraint, options=options)
    if res.status == 2:
        raise InfeasibleGroupingError(f"no grouping satisfies all constraints together ({context}); HiGHS: {res.message}")
    if res.x is None and not (allow_no_solution and res.status == 1):
        raise GroupingSolverError(f"HiGHS stopped without a feasible grouping ({context}): {res.message}")
    return res


def _bound_and_gap(res: Any, scale: float = 1.0) -> tuple[float | None, float | None]:
    bound = getattr(res, "mip_dual_bound", None)
    gap = getattr(res, "mip_gap", None)
    bound = None if bound is None or not np.isfinite(bound) else -float(bound) * scale
    gap = None if gap is None or not np.isfinite(gap) else float(gap)
    return bound, gap


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


from hf_taskgroup.grouping.solvers_compact import solve_compact  # noqa: E402  (uses the helpers above)

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
