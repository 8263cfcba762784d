"""``surrogate``: task affinities from linear surrogate models of subset trainings (Li, Nguyen, Zhang; TMLR 2023).

1. Sample ``num_subsets`` distinct random subsets of the tasks (sizes uniform in ``[min_size, max_size]``)
   and train each through the evaluator (plus every task alone unless ``include_single_task=False``).
2. For each task t, fit ``f_t(S) = b_t + sum_{i in S, i != t} theta[t, i]`` by least squares (ridge
   penalty ``ridge`` on theta, intercept free) on the subsets that contain t, where ``f_t(S)`` is t's
   validation loss when trained with S. A task never sampled together with t gets ``theta[t, i] = 0``.
3. Affinity ``A[t, i] = -theta[t, i]`` (adding i lowers t's loss => positive), divided by ``b_t`` when
   ``normalize=True`` (a relative change, comparable across tasks whose losses have different scales).
4. Group with any method that takes an ``affinity`` (default ``transfer_gain``, the MILP; or
   ``clustering``, ...). Registry affinities read ``S[i, j]`` = effect of i on j, so ``A.T`` is passed.

Cost: ``num_subsets`` (+ n) trainings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hf_taskgroup.grouping.evaluators.base import GroupEvaluator, canonical_group, prefetch
from hf_taskgroup.grouping.registry import register_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost

__all__ = ["fit_surrogates", "sample_subsets", "surrogate"]


def sample_subsets(
    tasks: Sequence[str], num_subsets: int, min_size: int, max_size: int, rng: np.random.Generator
) -> list[tuple[str, ...]]:
    """Up to ``num_subsets`` distinct subsets, sizes uniform in ``[min_size, max_size]``, tasks uniform.

    Stops early when no new subset turns up in ``50 * num_subsets`` draws (few tasks, small sizes).

    Example:
        >>> subsets = sample_subsets(["a", "b", "c", "d"], 3, 2, 3, np.random.default_rng(0))
        >>> len(subsets), all(2 <= len(s) <= 3 for s in subsets)
        (3, True)
    """
    n = len(tasks)
    if not 1 <= min_size <= max_size <= n:
        raise ValueError(f"need 1 <= min_size <= max_size <= {n} (number of tasks); got {min_size}, {max_size}")
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, ...]] = []
    draws = 0
    while len(out) < num_subsets and draws < 50 * max(num_subsets, 1):
        draws += 1
        size = int(rng.integers(min_size, max_size + 1))
        subset = canonical_group([tasks[i] for i in rng.choice(n, size=size, replace=False)])
        if subset not in seen:
            seen.add(subset)
            out.append(subset)
    return out


def fit_surrogates(
    tasks: Sequence[str], results: Mapping[tuple[str, ...], Mapping[str, float]], ridge: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares fit of ``loss_t(S) = b_t + sum_{i in S \\ t} theta[t, i]`` for every task t.

    ``results`` maps a subset to ``{task: loss}`` for its members. Returns ``(theta, intercept, r2)``;
    ``theta`` is n x n with a zero diagonal, rows = the task whose loss is modelled.

    Example:
        >>> res = {("a",): {"a": 1.0}, ("a", "b"): {"a": 0.8, "b": 1.1}, ("b",): {"b": 1.0}}
        >>> theta, b, _ = fit_surrogates(["a", "b"], res)
        >>> theta.round(3).tolist(), b.round(3).tolist()
        ([[0.0, -0.2], [0.1, 0.0]], [1.0, 1.0])
    """
    names = list(tasks)
    n = len(names)
    index = {t: i for i, t in enumerate(names)}
    theta = np.zeros((n, n))
    intercept = np.zeros(n)
    r2 = np.full(n, np.nan)
    for t in names:
        rows = [(s, losses[t]) for s, losses in results.items() if t in s]
        if not rows:
            raise ValueError(f"no trained subset contains task {t!r}; sample more subsets")
        X = np.zeros((len(rows), n))
        y = np.array([float(loss) for _, loss in rows])
        for r, (s, _) in enumerate(rows):
            for u in s:
                if u != t:
                    X[r, index[u]] = 1.0
        cols = np.flatnonzero(X.any(axis=0))
        xc = X[:, cols] - X[:, cols].mean(axis=0)
        yc = y - y.mean()
        if ridge > 0:
            coef = np.linalg.solve(xc.T @ xc + ridge * np.eye(len(cols)), xc.T @ yc)
        else:
            coef = np.linalg.lstsq(xc, yc, rcond=None)[0]
        theta[index[t], cols] = coef
        intercept[index[t]] = y.mean() - X[:, cols].mean(axis=0) @ coef
        ss_tot = float(yc @ yc)
        resid = y - intercept[index[t]] - X[:, cols] @ coef
        r2[index[t]] = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else np.nan
    return theta, intercept, r2


@register_method(
    "surrogate",
    needs=("evaluator",),
    description="Li, Nguyen, Zhang 2023: linear surrogates of random subset trainings give the affinity",
)
def surrogate(
    tasks: Sequence[str],
    *,
    evaluator: GroupEvaluator,
    num_subsets: int | None = None,
    min_size: int = 2,
    max_size: int | None = None,
    include_single_task: bool = True,
    ridge: float = 0.0,
    normalize: bool = True,
    grouping: str = "transfer_gain",
    grouping_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Grouping:
    """Affinity from linear surrogates of subset trainings, then a grouping step over it.

    Args:
        evaluator: ``evaluator(tasks) -> {task: {"loss": ...}}`` (e.g. a ``CachedEvaluator``).
        num_subsets: random subsets to train (default ``max(2n, ceil(n log2 n))``).
        min_size, max_size: subset size range (default max ``min(n, max(3, n // 2))``).
        include_single_task: also train every task alone (anchors the intercepts).
        ridge: L2 penalty on theta (0: least squares, minimum norm when under-determined).
        normalize: divide each row of the affinity by the task's intercept ``b_t``.
        grouping, grouping_kwargs: registry method run on the affinity (needs ``affinity``), and its options.

    Example:
        >>> from hf_taskgroup.grouping.synthetic import planted_evaluator
        >>> g = surrogate(["a", "b", "c", "d"], evaluator=planted_evaluator([["a", "b"], ["c", "d"]]),
        ...               num_subsets=10, max_size=3)
        >>> sorted(map(sorted, g.groups))
        [['a', 'b'], ['c', 'd']]
    """
    from hf_taskgroup.grouping.registry import available_methods, get_method

    start = time.perf_counter()
    names = [str(t) for t in tasks]
    n = len(names)
    if grouping == "surrogate" or "affinity" not in available_methods().get(grouping, {}).get("needs", ("affinity",)):
        raise ValueError(f"grouping={grouping!r} must be a registered method that takes an affinity matrix "
                         "(e.g. 'transfer_gain', 'clustering', 'tag')")
    max_size = min(n, max(3, n // 2)) if max_size is None else int(max_size)
    min_size = min(int(min_size), max_size)
    num_subsets = max(2 * n, math.ceil(n * math.log2(max(n, 2)))) if num_subsets is None else int(num_subsets)
    trainings_before = int(getattr(evaluator, "trainings", 0) or 0)
    rng = np.random.default_rng(seed)
    subsets = sample_subsets(names, num_subsets, min_size, max_size, rng) if n > 1 else []
    if include_single_task:
        subsets = [(t,) for t in names] + [s for s in subsets if len(s) > 1]
    results: dict[tuple[str, ...], dict[str, float]] = {}
    prefetch(evaluator, subsets)  # all at once when the evaluator's executor runs trainings in parallel
    for subset in subsets:
        out = evaluator(list(subset))
        results[subset] = {t: float(out[t]["loss"]) for t in subset}
    theta, intercept, r2 = fit_surrogates(names, results, ridge=ridge)
    affinity = -theta
    if normalize:
        scale = np.where(np.abs(intercept) > 1e-12, np.abs(intercept), 1.0)
        affinity = affinity / scale[:, None]
    step = get_method(grouping)(names, affinity=affinity.T, seed=seed, **dict(grouping_kwargs or {}))
    trainings = int(getattr(evaluator, "trainings", 0) or 0) - trainings_before
    return Grouping(
        groups=[list(g) for g in step.groups],
        method="surrogate",
        tasks=names,
        params={"num_subsets": num_subsets, "min_size": min_size, "max_size": max_size,
                "include_single_task": include_single_task, "ridge": ridge, "normalize": normalize,
                "grouping": grouping, "grouping_kwargs": dict(grouping_kwargs or {}), "seed": seed},
        scores={
            "theta": theta.tolist(),
            "intercept": dict(zip(names, intercept.tolist())),
            "affinity": affinity.tolist(),
            "r2": dict(zip(names, [None if np.isnan(v) else float(v) for v in r2])),
            "subsets_trained": len(results),
            "grouping_step": {"method": grouping, "objective": step.objective, "params": step.params},
            **({"assignment": step.scores["assignment"]} if "assignment" in step.scores else {}),
        },
        objective=step.objective,
        overlap=step.overlap,
        cost=GroupingCost(trainings=max(trainings, 0), seconds=time.perf_counter() - start),
        provenance={"affinity_orientation": "affinity[t][i] = -theta[t][i]: effect of adding task i on task t's loss"
                    + (" relative to b_t" if normalize else "") + "; the grouping step received its transpose"},
    )
