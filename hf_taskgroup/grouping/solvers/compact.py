"""Compact MILP for the transfer-gain objective (large N); re-exported by :mod:`hf_taskgroup.grouping.solvers.partition`.

Maximise ``sum_g (1/|G_g|) sum_{i,k in G_g} S[i,k]`` (diagonal included) over at most / exactly K groups.

Variables (K group slots, sizes s in [s_min, s_max]):

- ``X[i,g]`` binary: task i in slot g.
- ``z[i,k,g]`` in [0, 1] for i < k: McCormick product ``X[i,g] X[k,g]``. Only the side that can bind is
  written: ``z <= X[i,g]``, ``z <= X[k,g]`` when the pair's coefficient ``S[i,k] + S[k,i]`` is positive,
  ``z >= X[i,g] + X[k,g] - 1`` when it is negative (the objective increases with every group's pair sum).
- ``u[g,s]`` binary: slot g holds exactly s tasks (``sum_i X[i,g] = sum_s s u[g,s]``, ``sum_s u[g,s] <= 1``).
- ``q[g,s]`` continuous: the group's pair sum ``P_g = sum_i S[i,i] X[i,g] + sum_{i<k} (S[i,k] + S[k,i]) z[i,k,g]``
  disaggregated by size: ``P_g = sum_s q[g,s]`` with ``L_s u[g,s] <= q[g,s] <= U_s u[g,s]``, where L_s / U_s
  bound the pair sum of any s tasks. Only the q of the slot's actual size can be non-zero, so the
  objective ``sum_{g,s} q[g,s] / s`` equals ``sum_g P_g / |G_g|`` exactly (no big-M on P itself).
- with overlap, ``e[i,g1,g2] >= X[i,g1] + X[i,g2] - 1`` (the lower McCormick side) to keep used slots pairwise different
  (Hamming distance >= 1, the constraint of Wang et al.'s programme), as the enumerated model uses every
  candidate group at most once.

The LP relaxation of this model is weak (McCormick), so beyond ~20 tasks HiGHS usually stops at its time
limit with a loose bound and sometimes without any incumbent. For partitions, :func:`solve_compact` then
also runs :func:`local_search_partition` (moves and swaps from random starts) and returns the better
grouping, marked ``optimal=False`` and ``incumbent="local_search"``, with HiGHS' bound and the resulting gap.

Symmetry breaking (partitions): slots are ordered by their smallest task, i.e. ``X[i,g] = 0`` for g > i and
``X[i,g] <= sum_{i' < i} X[i',g-1]``. With overlap and ``"at_most"``, used slots come first.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import Bounds

from hf_taskgroup.grouping.solvers.common import (
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
    transfer_gain_value,
)


def _size_bounds(d: np.ndarray, pair: np.ndarray, sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Lower / upper bounds on ``sum of s diagonal terms + sum of s(s-1)/2 pair terms`` for each s."""
    d_sorted = np.sort(d)
    p_sorted = np.sort(pair)
    lo, hi = [], []
    for s in sizes:
        m = s * (s - 1) // 2
        lo.append(d_sorted[:s].sum() + p_sorted[:m].sum())
        hi.append(d_sorted[::-1][:s].sum() + (p_sorted[::-1][:m].sum() if m else 0.0))
    return np.array(lo), np.array(hi)


def solve_compact(
    S: np.ndarray,
    num_groups: int | None = None,
    *,
    num_groups_mode: NumGroupsMode = "exact",
    max_group_size: int | None = None,
    min_group_size: int = 1,
    overlap: bool = False,
    task_cost: Sequence[float] | np.ndarray | None = None,
    budget: float | None = None,
    tasks: Sequence[Any] | None = None,
    symmetry_breaking: bool = True,
    time_limit: float | None = None,
    mip_rel_gap: float = 1e-9,
    local_search: bool = True,
) -> SolverResult:
    """Solve the transfer-gain grouping with the compact linearised MILP (see the module docstring).

    Args:
        S: square matrix, ``S[i, k]`` = gain of task i onto task k.
        num_groups: number of group slots K, exactly or at most (``num_groups_mode``). None: at most N
            groups (partition only; overlap needs a K).
        max_group_size, min_group_size: size limits.
        overlap: every task in at least one group, groups pairwise different.
        task_cost, budget: ``sum_g sum_{i in G_g} task_cost[i] <= budget`` (default cost 1 per task, so the
            budget bounds the total size of all groups; it only binds with overlap).
        tasks: task names for error messages.
        time_limit: seconds for HiGHS; on timeout the best grouping found so far is returned, ``optimal=False``.
        local_search: for partitions, when HiGHS stops before proving optimality (time limit), also run
            :func:`local_search_partition` and keep the better grouping (``incumbent`` says which); this
            also gives a grouping when HiGHS found none. ``bound`` stays HiGHS' valid bound.

    Example:
        >>> S = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float)
        >>> solve_compact(S, 2).groups
        [(0, 1), (2, 3)]
    """
    start = time.perf_counter()
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be a square matrix, got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("S contains non-finite values")
    n = S.shape[0]
    names = _task_names(tasks if tasks is not None else n)
    if len(names) != n:
        raise ValueError(f"{len(names)} task names for a {n}x{n} matrix")
    hi = _check_sizes(names, min_group_size, max_group_size)
    if num_groups is None:
        if overlap:
            raise ValueError("solve_compact with overlap=True needs num_groups (the number of group slots)")
        num_groups, num_groups_mode = n, "at_most"
    _check_count(names, num_groups, num_groups_mode, min_group_size, hi, overlap,
                 _count_groups(n, min_group_size, hi))
    K = num_groups if overlap or num_groups_mode == "exact" else min(num_groups, n)
    smin, smax = min_group_size, hi
    if not overlap and num_groups_mode == "exact":
        smax = min(smax, n - (K - 1) * smin)
    sizes = list(range(smin, smax + 1))
    ns = len(sizes)
    costs = np.ones(n) if task_cost is None else np.asarray(task_cost, dtype=float)
    if costs.shape != (n,):
        raise ValueError(f"task_cost must have one value per task ({n}), got shape {costs.shape}")
    if budget is not None and task_cost is None and n > budget:
        raise InfeasibleGroupingError(
            f"budget={budget} < {n}: every task must be in a group and a group costs its number of tasks"
        )

    pairs = np.array(list(itertools.combinations(range(n), 2)), dtype=np.int64).reshape(-1, 2)
    P = len(pairs)
    diag = np.diag(S).copy()
    pair_val = S[pairs[:, 0], pairs[:, 1]] + S[pairs[:, 1], pairs[:, 0]] if P else np.zeros(0)
    lo_s, hi_s = _size_bounds(diag, pair_val, sizes)
    slot_pairs = list(itertools.combinations(range(K), 2)) if overlap else []
    GP = len(slot_pairs)

    off_z = n * K
    off_u = off_z + P * K
    off_q = off_u + K * ns
    off_e = off_q + K * ns
    num_vars = off_e + n * GP
    x_idx = np.arange(n * K).reshape(n, K)
    z_idx = off_z + np.arange(P * K).reshape(P, K)
    u_idx = off_u + np.arange(K * ns).reshape(K, ns)
    q_idx = off_q + np.arange(K * ns).reshape(K, ns)
    e_idx = off_e + np.arange(n * GP).reshape(n, GP)

    lb = np.zeros(num_vars)
    ub = np.ones(num_vars)
    lb[q_idx] = np.minimum(lo_s, 0.0)[None, :]
    ub[q_idx] = np.maximum(hi_s, 0.0)[None, :]
    integrality = np.zeros(num_vars)
    integrality[x_idx] = 1
    integrality[u_idx] = 1
    c = np.zeros(num_vars)
    c[q_idx] = -1.0 / np.array(sizes, dtype=float)[None, :]

    rows = _Rows(num_vars)
    # every task covered once (partition) or at least once (overlap)
    rows.add(np.repeat(np.arange(n), K), x_idx.ravel(), np.ones(n * K), 1.0, np.inf if overlap else 1.0, n)
    # slot size: sum_i X[i,g] - sum_s s u[g,s] = 0 ; at most / exactly one size per slot
    size_arr = np.array(sizes, dtype=float)
    rows.add(np.concatenate([np.tile(np.arange(K), n), np.repeat(np.arange(K), ns)]),
             np.concatenate([x_idx.ravel(), u_idx.ravel()]),
             np.concatenate([np.ones(n * K), -np.tile(size_arr, K)]), 0.0, 0.0, K)
    one_lo = 1.0 if num_groups_mode == "exact" else 0.0
    rows.add(np.repeat(np.arange(K), ns), u_idx.ravel(), np.ones(K * ns), one_lo, 1.0, K)
    if P:
        # One-sided McCormick. The objective grows with every P_g (it is P_g / |G_g|), so the solver pushes
        # A_p z up for A_p > 0 (needs z <= X_i, z <= X_k) and down for A_p < 0 (needs z >= X_i + X_k - 1);
        # the other side never binds at an optimum, and z = X_i X_k is always feasible, so the model stays exact.
        pos, neg = np.flatnonzero(pair_val > 0), np.flatnonzero(pair_val < 0)
        for sel, kind in ((pos, "upper"), (neg, "lower")):
            if not sel.size:
                continue
            zi = z_idx[sel].ravel()
            xi = x_idx[pairs[sel, 0]].ravel()
            xk = x_idx[pairs[sel, 1]].ravel()
            m = zi.size
            r, ones = np.arange(m), np.ones(m)
            if kind == "upper":
                rows.add(np.concatenate([r, r]), np.concatenate([zi, xi]), np.concatenate([ones, -ones]),
                         -np.inf, 0.0, m)
                rows.add(np.concatenate([r, r]), np.concatenate([zi, xk]), np.concatenate([ones, -ones]),
                         -np.inf, 0.0, m)
            else:
                rows.add(np.concatenate([r, r, r]), np.concatenate([xi, xk, zi]),
                         np.concatenate([ones, ones, -ones]), -np.inf, 1.0, m)
    # pair sum: sum_s q[g,s] - sum_i d_i X[i,g] - sum_p A_p z[p,g] = 0
    rows.add(np.concatenate([np.repeat(np.arange(K), ns), np.tile(np.arange(K), n), np.tile(np.arange(K), P)]),
             np.concatenate([q_idx.ravel(), x_idx.ravel(), z_idx.ravel()]),
             np.concatenate([np.ones(K * ns), -np.repeat(diag, K), -np.repeat(pair_val, K)]), 0.0, 0.0, K)
    # L_s u <= q <= U_s u
    r = np.arange(K * ns)
    rows.add(np.concatenate([r, r]), np.concatenate([q_idx.ravel(), u_idx.ravel()]),
             np.concatenate([np.ones(K * ns), -np.tile(hi_s, K)]), -np.inf, 0.0, K * ns)
    rows.add(np.concatenate([r, r]), np.concatenate([q_idx.ravel(), u_idx.ravel()]),
             np.concatenate([np.ones(K * ns), -np.tile(lo_s, K)]), 0.0, np.inf, K * ns)
    if budget is not None:
        rows.add_row(x_idx.ravel(), np.repeat(costs, K), -np.inf, float(budget))
    if symmetry_breaking and not overlap:
        for i in range(n):
            ub[x_idx[i, i + 1:]] = 0.0  # slots ordered by smallest task: task i sits in a slot g <= i
        for g in range(1, K):
            for i in range(g, n):
                rows.add_row(np.concatenate([[x_idx[i, g]], x_idx[:i, g - 1]]),
                             np.concatenate([[1.0], -np.ones(i)]), -np.inf, 0.0)
    if overlap and num_groups_mode == "at_most":
        for g in range(1, K):  # used slots first
            rows.add_row(np.concatenate([u_idx[g], u_idx[g - 1]]),
                         np.concatenate([np.ones(ns), -np.ones(ns)]), -np.inf, 0.0)
    for gp, (g1, g2) in enumerate(slot_pairs):
        e = e_idx[:, gp]
        x1, x2 = x_idx[:, g1], x_idx[:, g2]
        r = np.arange(n)
        one = np.ones(n)
        # e >= X1 + X2 - 1 (the Hamming row below pushes e down, so its upper McCormick rows never bind)
        rows.add(np.concatenate([r, r, r]), np.concatenate([x1, x2, e]), np.concatenate([one, one, -one]),
                 -np.inf, 1.0, n)
        # Hamming distance between slots g1 and g2 >= 1 whenever slot g2 is used
        rows.add_row(np.concatenate([x1, x2, e, u_idx[g2]]),
                     np.concatenate([one, one, -2 * one, -np.ones(ns)]), 0.0, np.inf)

    context = _describe_constraints(
        tasks=n, overlap=overlap, num_groups=num_groups, num_groups_mode=num_groups_mode,
        min_group_size=min_group_size if min_group_size > 1 else None,
        max_group_size=max_group_size, budget=budget,
    )
    res = _run_milp(c, integrality, Bounds(lb, ub), rows, time_limit=time_limit, mip_rel_gap=mip_rel_gap,
                    context=context, allow_no_solution=not overlap and local_search)
    groups: list[tuple[int, ...]] = []
    if res.x is not None:
        X = res.x[: n * K].reshape(n, K) > 0.5
        groups = [tuple(int(i) for i in np.flatnonzero(X[:, g])) for g in range(K) if X[:, g].any()]
    objective = float(sum(transfer_gain_value(S, g) for g in groups)) if groups else -np.inf
    incumbent = "highs"
    if res.status != 0 and not overlap and local_search:
        heuristic = local_search_partition(S, K, num_groups_mode=num_groups_mode, min_group_size=smin,
                                           max_group_size=smax, seed=0)
        value = float(sum(transfer_gain_value(S, g) for g in heuristic))
        if value > objective + 1e-9:
            groups, objective, incumbent = heuristic, value, "local_search"
    groups = sorted(groups, key=lambda g: (g[0], g))
    result = SolverResult.from_highs(
        res, start, groups=groups, objective=objective, incumbent=incumbent, num_candidates=0,
        num_variables=num_vars, num_constraints=rows.count, formulation="compact",
    )
    if incumbent == "local_search" and result.bound is not None:  # HiGHS' gap refers to its own incumbent
        result.gap = abs(result.bound - objective) / max(abs(objective), 1e-12)
    return result


def local_search_partition(
    S: np.ndarray,
    num_groups: int,
    *,
    num_groups_mode: NumGroupsMode = "exact",
    min_group_size: int = 1,
    max_group_size: int | None = None,
    restarts: int = 8,
    seed: int = 0,
) -> list[tuple[int, ...]]:
    """Heuristic for the transfer-gain partition: best-improvement moves and swaps from random starts.

    Starts from random balanced partitions (``num_groups`` groups, or for ``"at_most"`` a random feasible
    count), then repeatedly applies the best single-task move (respecting the size limits, emptying a group
    only with ``"at_most"``) or the best swap of two tasks in different groups, until no step improves
    ``sum_g (1/|G_g|) sum_{i,k in G_g} S[i,k]``. Keeps the best of ``restarts`` runs. No optimality claim.

    Example:
        >>> S = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float)
        >>> sorted(local_search_partition(S, 2))
        [(0, 1), (2, 3)]
    """
    S = np.asarray(S, dtype=float)
    n = S.shape[0]
    smax = n if max_group_size is None else min(max_group_size, n)
    K = num_groups
    counts = [m for m in (range(1, K + 1) if num_groups_mode == "at_most" else [K])
              if m * min_group_size <= n <= m * smax]
    if not counts:
        raise InfeasibleGroupingError(f"no partition of {n} tasks into {num_groups_mode} {K} groups of size "
                                      f"[{min_group_size}, {smax}]")
    W = S + S.T
    np.fill_diagonal(W, 0.0)
    d = np.diag(S).copy()
    rng = np.random.default_rng(seed)
    best_groups: list[tuple[int, ...]] = []
    best_value = -np.inf
    for restart in range(restarts):
        m = counts[-1] if restart == 0 else int(rng.choice(counts))
        perm = rng.permutation(n)
        labels = np.empty(n, dtype=int)
        for g, part in enumerate(np.array_split(perm, m)):
            labels[part] = g
        onehot = np.zeros((n, K))
        onehot[np.arange(n), labels] = 1.0
        C = W @ onehot  # C[t, g] = sum of W[t, i] over members i of slot g
        size = onehot.sum(axis=0)
        P = (onehot * (C / 2.0 + d[:, None])).sum(axis=0)
        for _ in range(50 * n):
            safe = np.maximum(size, 1.0)
            cur = np.where(size > 0, P / safe, 0.0)
            a = labels
            # moves: t from slot a to slot b
            Pa = P[a] - d - C[np.arange(n), a]
            sa = size[a] - 1
            va = np.where(sa > 0, Pa / np.maximum(sa, 1.0), 0.0)
            Pb = P[None, :] + d[:, None] + C
            vb = Pb / (size[None, :] + 1.0)
            delta_move = va[:, None] - cur[a][:, None] + vb - cur[None, :]
            ok = (size[None, :] + 1 <= smax) & (np.arange(K)[None, :] != a[:, None])
            ok &= ((sa >= min_group_size) | ((sa == 0) & (num_groups_mode == "at_most")))[:, None]
            ok &= (size[None, :] > 0) | ((min_group_size <= 1) & ((size > 0).sum() < K))
            delta_move = np.where(ok, delta_move, -np.inf)
            # swaps: t (slot a) <-> u (slot b)
            Pa_s = P[a][:, None] - d[:, None] - C[np.arange(n), a][:, None] + d[None, :] + C[:, a].T - W
            Pb_s = P[a][None, :] - d[None, :] - C[np.arange(n), a][None, :] + d[:, None] + C[:, a] - W
            sa_f = np.maximum(size[a], 1.0)
            delta_swap = (Pa_s / sa_f[:, None] - cur[a][:, None]) + (Pb_s / sa_f[None, :] - cur[a][None, :])
            delta_swap = np.where(a[:, None] != a[None, :], delta_swap, -np.inf)
            i_move = np.unravel_index(np.argmax(delta_move), delta_move.shape)
            i_swap = np.unravel_index(np.argmax(delta_swap), delta_swap.shape)
            if max(delta_move[i_move], delta_swap[i_swap]) <= 1e-12:
                break
            if delta_move[i_move] >= delta_swap[i_swap]:
                steps = [(int(i_move[0]), int(i_move[1]))]
            else:
                t, u = int(i_swap[0]), int(i_swap[1])
                steps = [(t, int(a[u])), (u, int(a[t]))]
            for t, b in steps:
                old = labels[t]
                P[old] -= d[t] + C[t, old]
                size[old] -= 1
                C[:, old] -= W[:, t]
                P[b] += d[t] + C[t, b]
                size[b] += 1
                C[:, b] += W[:, t]
                labels[t] = b
        groups = [tuple(int(i) for i in np.flatnonzero(labels == g)) for g in range(K) if np.any(labels == g)]
        value = float(sum(transfer_gain_value(S, g) for g in groups))
        if value > best_value + 1e-12:
            best_groups, best_value = groups, value
    return best_groups
