"""Shared pieces of the exact solvers: errors, the result type, constraint rows and the HiGHS call."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
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
        >>> from hf_taskgroup.grouping.solvers.partition import solve_set_partition
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
