"""PVI grouping (Li, Miller, Bethard, Savova; J. Biomed. Inform. 2025; arXiv 2410.12774).

Tasks whose per-example PVI estimates are not statistically different are trained together.

1. Pairwise two-sample tests on the per-example PVI of every pair of tasks (:func:`pairwise_pvi_tests`):
   Welch's t-test by default, Mann-Whitney U, Kolmogorov-Smirnov, or a TOST equivalence test with a
   margin in bits; p-values corrected over all pairs (Holm by default, Benjamini-Hochberg, Bonferroni, none).
2. Two tasks are *compatible* when their corrected test does not reject equality at ``alpha``; for
   ``tost`` when equivalence within the margin *is* established (corrected p < alpha).
3. Groups in which every pair is compatible:

   - ``strategy="interval"`` (default): sort tasks by mean PVI and cut that order into contiguous groups by
     dynamic programming (:func:`interval_partition_dp`): the exact minimum number of groups among
     interval partitions, ties broken by the smallest spread (sum over groups of max - min mean PVI).
   - ``strategy="clique"``: the exact minimum number of groups over *all* partitions into compatible
     groups (same tie-break), as a set-partitioning MILP over every compatible subset; N <= 16.
   - ``strategy="components"``: connected components of the compatibility graph. This does NOT guarantee
     that every pair inside a group passes (A~B and B~C put A and C together even when A and C differ):
     the result records ``params["pairwise_guarantee"] = False`` and the failing pairs in
     ``scores["violations"]``, and a warning names them.

   ``max_group_size`` is respected by every strategy (components are split along the mean-PVI order).

**Sample size matters.** With thousands of examples per task, nearly every pair of tasks differs
"significantly" under a difference test, however small the difference, and every task ends up alone.
Two options exist for that: ``test="tost"`` with an ``equivalence_margin`` (in bits) asks whether the
means are equal *up to a margin that matters*, and ``subsample`` draws a fixed number of examples per
task (seeded) so that test power does not grow with dataset size.

Cost: no training; the PVI scores themselves cost two fine-tunes per task (see ``hf_taskgroup.pvi``).
"""

from __future__ import annotations

import itertools
import logging
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from hf_taskgroup.grouping.registry import register_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.grouping.stats import CORRECTIONS, TESTS, adjust_pvalues, two_sample_test

logger = logging.getLogger(__name__)

Strategy = Literal["interval", "clique", "components"]
MAX_CLIQUE_TASKS = 16


@dataclass
class PairwiseTests:
    """Pairwise two-sample tests over tasks' per-example PVI (matrices indexed like ``tasks``).

    ``compatible[i, j]`` is True when tasks i and j may share a group (diagonal True).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t = pairwise_pvi_tests({"a": rng.normal(0, 1, 40), "b": rng.normal(0, 1, 40), "c": rng.normal(3, 1, 40)})
        >>> t.compatible.astype(int).tolist()
        [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    """

    tasks: list[str]
    test: str
    correction: str
    alpha: float
    equivalence_margin: float | None
    statistic: np.ndarray
    p_raw: np.ndarray
    p_adjusted: np.ndarray
    compatible: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray

    def to_scores(self) -> dict[str, Any]:
        """JSON-able matrices and per-task statistics, as stored in ``Grouping.scores``."""
        return {
            "p_values_raw": self.p_raw.tolist(),
            "p_values": self.p_adjusted.tolist(),
            "statistic": self.statistic.tolist(),
            "compatible": self.compatible.astype(bool).tolist(),
            "mean_pvi": {t: float(m) for t, m in zip(self.tasks, self.mean)},
            "std_pvi": {t: float(s) for t, s in zip(self.tasks, self.std)},
            "n_examples": {t: int(k) for t, k in zip(self.tasks, self.n)},
        }


def _task_values(pvi: Mapping[str, Any], tasks: Sequence[str], subsample: int | None, seed: int) -> list[np.ndarray]:
    missing = [t for t in tasks if t not in pvi]
    if missing:
        raise ValueError(f"no PVI values for task(s) {missing}; pvi has {sorted(pvi)}")
    if subsample is not None and subsample < 2:
        raise ValueError(f"subsample must be >= 2 examples per task, got {subsample}")
    out = []
    for task in tasks:
        values = np.asarray(pvi[task], dtype=float).ravel()
        bad = int(np.sum(~np.isfinite(values)))
        if bad:
            raise ValueError(f"PVI of task {task!r} has {bad} non-finite value(s) out of {values.size}")
        if values.size < 2:
            raise ValueError(f"task {task!r} has {values.size} PVI value(s); the tests need at least 2")
        if subsample is not None and values.size > subsample:
            # one generator per (seed, task name): the sample of a task does not depend on the other tasks
            rng = np.random.default_rng([seed, zlib.crc32(task.encode("utf-8"))])
            values = values[np.sort(rng.choice(values.size, size=subsample, replace=False))]
        out.append(values)
    return out


def pairwise_pvi_tests(
    pvi: Mapping[str, Any],
    tasks: Sequence[str] | None = None,
    *,
    test: str = "welch",
    correction: str = "holm",
    alpha: float = 0.05,
    equivalence_margin: float | None = None,
    subsample: int | None = None,
    seed: int = 0,
) -> PairwiseTests:
    """Test every pair of tasks' per-example PVI and decide which pairs are compatible.

    Args:
        pvi: task -> per-example PVI values (bits).
        tasks: which tasks, in which order (default: the keys of ``pvi``).
        test: ``welch`` | ``mannwhitney`` | ``ks`` | ``tost`` (see :mod:`hf_taskgroup.grouping.stats`).
        correction: ``holm`` | ``bh`` | ``bonferroni`` | ``none``, over all N(N-1)/2 pairs.
        alpha: significance level.
        equivalence_margin: the TOST margin in bits (required for ``tost``).
        subsample: at most this many examples per task, drawn without replacement, seeded by ``seed``
            and the task name. With thousands of examples, difference tests reject almost every pair.
    """
    tasks = list(pvi) if tasks is None else list(tasks)
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {TESTS}")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of {CORRECTIONS}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if test == "tost" and (equivalence_margin is None or not equivalence_margin > 0):
        raise ValueError(f"test='tost' needs equivalence_margin > 0 (bits), got {equivalence_margin!r}")
    values = _task_values(pvi, tasks, subsample, seed)
    n = len(tasks)
    stat = np.zeros((n, n))
    diag_p = 0.0 if test == "tost" else 1.0
    p_raw = np.full((n, n), diag_p)
    pairs = list(itertools.combinations(range(n), 2))
    raw = []
    for i, j in pairs:
        s, p = two_sample_test(values[i], values[j], test, equivalence_margin=equivalence_margin)
        stat[i, j], stat[j, i] = s, -s if test in ("welch", "tost") else s
        p_raw[i, j] = p_raw[j, i] = p
        raw.append(p)
    p_adj = np.full((n, n), diag_p)
    for (i, j), p in zip(pairs, adjust_pvalues(raw, correction)):
        p_adj[i, j] = p_adj[j, i] = p
    compatible = p_adj < alpha if test == "tost" else p_adj >= alpha
    np.fill_diagonal(compatible, True)
    return PairwiseTests(
        tasks=tasks, test=test, correction=correction, alpha=float(alpha),
        equivalence_margin=None if equivalence_margin is None else float(equivalence_margin),
        statistic=stat, p_raw=p_raw, p_adjusted=p_adj, compatible=compatible,
        mean=np.array([v.mean() for v in values]),
        std=np.array([v.std(ddof=1) for v in values]),
        n=np.array([v.size for v in values]),
    )


def interval_partition_dp(
    order_values: Sequence[float] | np.ndarray,
    compatible: np.ndarray,
    max_group_size: int | None = None,
) -> list[list[int]]:
    """Cut the items, sorted by ``order_values``, into contiguous groups of pairwise-compatible items.

    Exact dynamic programme over the sorted order: minimises the number of groups, then the spread
    (sum over groups of max - min value). Ties in the order are broken by index (stable sort).
    Returns groups of original indices, each in sorted order, groups in order of their values. O(N^2) states
    and checks, so cheap for any realistic N.

    Example:
        >>> compat = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
        >>> interval_partition_dp([0.0, 0.1, 0.3], compat)
        [[0, 1], [2]]
    """
    values = np.asarray(order_values, dtype=float).ravel()
    n = values.size
    compatible = np.asarray(compatible, dtype=bool)
    if compatible.shape != (n, n):
        raise ValueError(f"compatible must be {n}x{n}, got {compatible.shape}")
    if max_group_size is not None and max_group_size < 1:
        raise ValueError(f"max_group_size must be >= 1, got {max_group_size}")
    if n == 0:
        return []
    order = np.argsort(values, kind="stable")
    v = values[order]
    c = compatible[np.ix_(order, order)] | np.eye(n, dtype=bool)
    limit = n if max_group_size is None else max_group_size
    # valid[i][j]: sorted items i..j-1 form a pairwise-compatible interval
    inf = (np.inf, np.inf)
    best: list[tuple[float, float]] = [(0, 0.0)] + [inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        ok = True
        for i in range(j - 1, max(-1, j - 1 - limit), -1):  # interval [i, j), growing to the left
            ok = ok and bool(c[i, i:j].all())
            if not ok:
                break
            cand = (best[i][0] + 1, best[i][1] + float(v[j - 1] - v[i]))
            if cand < best[j]:
                best[j], cut[j] = cand, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        groups.append([int(x) for x in order[i:j]])
        j = i
    return groups[::-1]


def _clique_partition(values: np.ndarray, compatible: np.ndarray, max_group_size: int | None) -> list[list[int]]:
    from hf_taskgroup.grouping.solvers.partition import solve_set_partition

    n = values.size
    if n > MAX_CLIQUE_TASKS:
        raise ValueError(
            f"strategy='clique' enumerates compatible subsets and is limited to {MAX_CLIQUE_TASKS} tasks, "
            f"got {n}; use strategy='interval'"
        )
    hi = n if max_group_size is None else min(n, max_group_size)
    cands = [g for size in range(1, hi + 1) for g in itertools.combinations(range(n), size)
             if compatible[np.ix_(g, g)].all()]
    scale = n * (float(np.ptp(values)) + 1.0)  # total spread < scale, so the group count dominates

    def value(g: tuple[int, ...]) -> float:
        return -1.0 - float(np.ptp(values[list(g)])) / scale

    res = solve_set_partition(n, value, candidates=cands)
    groups = [sorted(g, key=lambda i: (values[i], i)) for g in res.groups]
    return sorted(groups, key=lambda g: (values[g[0]], g[0]))


def _components(values: np.ndarray, compatible: np.ndarray, max_group_size: int | None) -> list[list[int]]:
    _, labels = connected_components(csr_matrix(compatible.astype(np.int8)), directed=False)
    groups: list[list[int]] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if max_group_size is not None and members.size > max_group_size:
            parts = interval_partition_dp(values[members], np.ones((members.size,) * 2, bool), max_group_size)
            groups.extend([[int(members[i]) for i in part] for part in parts])
        else:
            groups.append(sorted((int(i) for i in members), key=lambda i: (values[i], i)))
    return sorted(groups, key=lambda g: (values[g[0]], g[0]))


@register_method(
    "pvi",
    needs=("pvi",),
    description="Li et al. 2025: group tasks whose per-example PVI is not statistically different",
)
def pvi_grouping(
    tasks: Sequence[str],
    *,
    pvi: Mapping[str, Any],
    test: str = "welch",
    correction: str = "holm",
    alpha: float = 0.05,
    equivalence_margin: float | None = None,
    strategy: str = "interval",
    max_group_size: int | None = None,
    subsample: int | None = None,
    seed: int = 0,
    collapsed: Sequence[str] | None = None,
    keep_collapsed_single: bool = True,
) -> Grouping:
    """Group tasks whose PVI estimates are not statistically different (see the module docstring).

    With thousands of examples per task nearly every pair differs "significantly"; use ``test="tost"``
    with an ``equivalence_margin`` (bits) or ``subsample`` for that.

    ``collapsed`` (an input: tasks whose PVI model predicted one value for every example, so their PVI is
    meaningless) stay single-task when ``keep_collapsed_single`` (the default); the others are grouped.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> pvi = {"a": rng.normal(0.2, 0.3, 40), "b": rng.normal(0.2, 0.3, 40), "c": rng.normal(2.0, 0.3, 40)}
        >>> pvi_grouping(["a", "b", "c"], pvi=pvi).groups
        [['a', 'b'], ['c']]
    """
    if strategy not in ("interval", "clique", "components"):
        raise ValueError(f"unknown strategy {strategy!r}; choose 'interval', 'clique' or 'components'")
    tasks = list(tasks)
    collapsed = [t for t in tasks if t in set(collapsed or ())]
    if collapsed and keep_collapsed_single:
        return _group_keeping_collapsed_single(
            tasks, collapsed, pvi=pvi, test=test, correction=correction, alpha=alpha,
            equivalence_margin=equivalence_margin, strategy=strategy, max_group_size=max_group_size,
            subsample=subsample, seed=seed)
    tests = pairwise_pvi_tests(pvi, tasks, test=test, correction=correction, alpha=alpha,
                               equivalence_margin=equivalence_margin, subsample=subsample, seed=seed)
    if strategy == "interval":
        index_groups = interval_partition_dp(tests.mean, tests.compatible, max_group_size)
    elif strategy == "clique":
        index_groups = _clique_partition(tests.mean, tests.compatible, max_group_size)
    else:
        index_groups = _components(tests.mean, tests.compatible, max_group_size)
    violations = [[tasks[i], tasks[j]] for g in index_groups for i, j in itertools.combinations(sorted(g), 2)
                  if not tests.compatible[i, j]]
    if violations:
        warnings.warn(
            f"pvi grouping (strategy={strategy!r}): {len(violations)} pair(s) inside a group failed the "
            f"{test} test: {violations[:10]}", UserWarning, stacklevel=2,
        )
    spread = float(sum(np.ptp(tests.mean[g]) for g in index_groups))
    scores = tests.to_scores()
    scores.update({
        "order": [tasks[i] for i in np.argsort(tests.mean, kind="stable")],
        "spread": spread,
        "violations": violations,
    })
    return Grouping(
        groups=[[tasks[i] for i in g] for g in index_groups],
        method="pvi",
        tasks=tasks,
        params={
            "test": test, "correction": correction, "alpha": float(alpha),
            "equivalence_margin": tests.equivalence_margin, "strategy": strategy,
            "max_group_size": max_group_size, "subsample": subsample, "seed": seed,
            "pairwise_guarantee": strategy != "components",
        },
        scores=scores,
        objective=float(len(index_groups)),
        cost=GroupingCost(trainings=0, examples=0),
        provenance={"objective": "number of groups (minimised); ties broken by the smallest spread"},
    )


def _group_keeping_collapsed_single(tasks: list[str], collapsed: list[str], *, pvi: Mapping[str, Any],
                                    **params: Any) -> Grouping:
    """PVI grouping of the tasks whose PVI model did not collapse; each collapsed task stays single-task."""
    logger.warning("PVI grouping: %s collapsed (one prediction for every example); kept single-task", collapsed)
    scored = [t for t in tasks if t not in collapsed]
    inner = pvi_grouping(scored, pvi={t: pvi[t] for t in scored}, **params) if scored else None
    grouping = Grouping(
        groups=[*(inner.groups if inner else []), *[[t] for t in collapsed]],
        method="pvi", tasks=list(tasks),
        params={**(inner.params if inner else dict(params)), "collapsed_kept_single": True},
        scores={**(inner.scores if inner else {}), "scored_tasks": scored, "collapsed_tasks": collapsed},
        objective=float(len(inner.groups if inner else []) + len(collapsed)),
        cost=inner.cost if inner else GroupingCost(),
        provenance=dict(inner.provenance) if inner else {},
    )
    grouping.validate()
    return grouping
