"""Baseline grouping methods: single_task, all_in_one, random, exhaustive, clustering.

- ``single_task``: every task alone (the STL baseline). No training.
- ``all_in_one``: one group with every task (naive MTL). No training.
- ``random``: a seeded partition drawn uniformly over all set partitions (or over the partitions into
  exactly ``num_groups`` groups), by the Stirling-number recursion. No training.
- ``exhaustive``: scores every set partition (Bell number B(N): 203 for N=6, 115,975 for N=10) with an
  evaluator (sum over tasks of each task's validation loss in its group, minimised) or with a given
  ``group_value`` (sum over groups, maximised). Costs one training per distinct group, 2^N - 1 in all
  (cached evaluators make re-runs free). Refuses N > ``max_tasks`` (10).
- ``clustering``: hierarchical (scipy, average linkage by default) or spectral (scikit-learn, precomputed
  affinity) clustering of any affinity matrix, into ``num_groups`` groups or (hierarchical) by a
  distance threshold. The matrix is symmetrised first, ``(A + A.T) / 2``, because affinities such as
  TAG's are directed while these clusterings need a symmetric similarity.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

import numpy as np

from hf_taskgroup.grouping.evaluators.base import prefetch
from hf_taskgroup.grouping.registry import register_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost

T = TypeVar("T")

#: exhaustive search refuses more tasks than this unless ``max_tasks`` is raised (B(11) = 678,570).
MAX_EXHAUSTIVE_TASKS = 10


# ------------------------------------------------------------------------------------------- partitions
def set_partitions(items: Sequence[T]) -> Iterator[list[list[T]]]:
    """Yield every partition of ``items`` into non-empty blocks (Bell(N) of them), blocks in item order.

    Example:
        >>> list(set_partitions("ab"))
        [[['a', 'b']], [['a'], ['b']]]
        >>> sum(1 for _ in set_partitions(range(6)))
        203
    """
    items = list(items)
    if not items:
        yield []
        return

    def rec(i: int, blocks: list[list[T]]) -> Iterator[list[list[T]]]:
        if i == len(items):
            yield [list(b) for b in blocks]
            return
        for b in blocks:
            b.append(items[i])
            yield from rec(i + 1, blocks)
            b.pop()
        blocks.append([items[i]])
        yield from rec(i + 1, blocks)
        blocks.pop()

    yield from rec(0, [])


@cache
def stirling2(n: int, k: int) -> int:
    """Stirling number of the second kind: partitions of n items into exactly k non-empty blocks."""
    if n == k:
        return 1
    if k == 0 or k > n:
        return 0
    return k * stirling2(n - 1, k) + stirling2(n - 1, k - 1)


def bell_number(n: int) -> int:
    """Number of set partitions of n items (B(6) = 203, B(10) = 115,975)."""
    return sum(stirling2(n, k) for k in range(n + 1))


def sample_partition(n: int, rng: np.random.Generator, num_groups: int | None = None) -> list[list[int]]:
    """A uniformly random partition of ``range(n)`` (into exactly ``num_groups`` blocks when given).

    Item m (last first) opens its own block with probability S(m-1, k-1) / S(m, k), else joins one of the
    k blocks of the remaining items uniformly; this gives every partition the same probability.
    """
    if n < 1:
        raise ValueError(f"need at least one item, got {n}")
    if num_groups is None:
        probs = np.array([stirling2(n, k) / bell_number(n) for k in range(1, n + 1)])
        k = int(rng.choice(np.arange(1, n + 1), p=probs / probs.sum()))
    else:
        if not 1 <= num_groups <= n:
            raise ValueError(f"num_groups must be between 1 and {n} (the number of tasks), got {num_groups}")
        k = num_groups
    opens = [False] * n
    for m in range(n, 0, -1):  # decide for item m-1, with k blocks among items 0..m-1
        p_open = stirling2(m - 1, k - 1) / stirling2(m, k)
        if rng.random() < p_open:
            opens[m - 1] = True
            k -= 1
    blocks: list[list[int]] = []
    for i in range(n):
        if opens[i]:
            blocks.append([i])
        else:  # join one of the k blocks formed by items 0..i-1, uniformly
            blocks[int(rng.integers(len(blocks)))].append(i)
    return blocks


def _grouping(tasks: Sequence[str], groups: list[list[str]], method: str, **kw: Any) -> Grouping:
    return Grouping(groups=groups, method=method, tasks=list(tasks), params=kw.pop("params", {}),
                    scores=kw.pop("scores", {}), **kw)


# ---------------------------------------------------------------------------------------- trivial methods
@register_method("single_task", description="every task trained alone (STL baseline)")
def single_task(tasks: Sequence[str], *, seed: int = 0) -> Grouping:
    """Every task in its own group.

    Example:
        >>> single_task(["a", "b"]).groups
        [['a'], ['b']]
    """
    return _grouping(tasks, [[t] for t in tasks], "single_task", params={"seed": seed})


@register_method("all_in_one", description="all tasks in one group (naive multi-task learning)")
def all_in_one(tasks: Sequence[str], *, seed: int = 0) -> Grouping:
    """One group with every task.

    Example:
        >>> all_in_one(["a", "b"]).groups
        [['a', 'b']]
    """
    return _grouping(tasks, [list(tasks)], "all_in_one", params={"seed": seed})


@register_method("random", description="a seeded partition drawn uniformly over all set partitions")
def random_grouping(tasks: Sequence[str], *, num_groups: int | None = None, seed: int = 0) -> Grouping:
    """A random partition, uniform over all partitions (or over those with exactly ``num_groups`` groups).

    Example:
        >>> random_grouping(["a", "b", "c"], num_groups=3, seed=1).groups
        [['a'], ['b'], ['c']]
    """
    tasks = list(tasks)
    blocks = sample_partition(len(tasks), np.random.default_rng(seed), num_groups)
    return _grouping(tasks, [[tasks[i] for i in b] for b in blocks], "random",
                     params={"num_groups": num_groups, "seed": seed})


# -------------------------------------------------------------------------------------------- exhaustive
def _group_key(group: Sequence[str]) -> str:
    return "+".join(group)


@register_method(
    "exhaustive",
    needs=("evaluator|group_value",),
    description="score every set partition with an evaluator (min total loss) or a group value (max)",
)
def exhaustive(
    tasks: Sequence[str],
    *,
    evaluator: Callable[[Sequence[str]], Mapping[str, Mapping[str, float]]] | None = None,
    group_value: Callable[[tuple[str, ...]], float] | None = None,
    max_tasks: int = MAX_EXHAUSTIVE_TASKS,
    top: int = 10,
    seed: int = 0,
) -> Grouping:
    """Best partition over all Bell(N) set partitions.

    With ``evaluator`` (``evaluator(tasks) -> {task: {"loss": ...}}``, e.g. a ``CachedEvaluator``), the
    score of a partition is the sum over tasks of the task's loss in its group, minimised; every distinct
    group is evaluated once (2^N - 1 groups). With ``group_value`` (``group_value(tuple_of_task_names)``),
    the score is the sum of the group values, maximised. Ties keep the first partition enumerated.
    ``scores`` holds ``partitions_scored``, ``groups_evaluated``, per-group losses or values and the ``top``
    best partitions.

    Example:
        >>> value = lambda g: 1.0 if set(g) in ({"a", "b"}, {"c"}) else 0.0
        >>> exhaustive(["a", "b", "c"], group_value=value).groups
        [['a', 'b'], ['c']]
    """
    tasks = list(tasks)
    n = len(tasks)
    if (evaluator is None) == (group_value is None):
        raise ValueError("exhaustive needs exactly one of evaluator=... (losses, minimised) or group_value=... (maximised)")
    if n > max_tasks:
        raise ValueError(
            f"exhaustive search over {n} tasks would score {bell_number(n):,} partitions and train "
            f"{2**n - 1:,} groups; the limit is max_tasks={max_tasks}. Use transfer_gain, tag or affinity_search, "
            "or raise max_tasks if you really mean it"
        )
    trainings_before = int(getattr(evaluator, "trainings", 0) or 0)
    per_group: dict[int, float] = {}  # bitmask -> group score (summed losses, or group value)
    details: dict[str, Any] = {}

    def score_of(block: list[int]) -> float:
        mask = sum(1 << i for i in block)
        if mask not in per_group:
            names = [tasks[i] for i in block]
            if evaluator is not None:
                result = evaluator(names)
                losses = {}
                for t in names:
                    entry = result.get(t) if isinstance(result, Mapping) else None
                    loss = None if not isinstance(entry, Mapping) else entry.get("loss")
                    if loss is None or not math.isfinite(float(loss)):
                        raise ValueError(f"evaluator result for group {names} has no finite 'loss' for task {t!r}: {entry!r}")
                    losses[t] = float(loss)
                details[_group_key(names)] = losses
                per_group[mask] = sum(losses.values())
            else:
                value = float(group_value(tuple(names)))  # type: ignore[misc]
                if not math.isfinite(value):
                    raise ValueError(f"group_value of group {names} is {value}; values must be finite")
                details[_group_key(names)] = value
                per_group[mask] = value
        return per_group[mask]

    if evaluator is not None:  # every subset is a block of some partition: train them all at once if parallel
        prefetch(evaluator, [[tasks[i] for i in block] for r in range(1, n + 1)
                             for block in itertools.combinations(range(n), r)])
    sign = 1.0 if evaluator is not None else -1.0  # minimise sign * score
    ranked: list[tuple[float, int, list[list[int]]]] = []
    best: tuple[float, list[list[int]]] | None = None
    count = 0
    for partition in set_partitions(list(range(n))):
        total = sum(score_of(b) for b in partition)
        key = sign * total
        if best is None or key < best[0]:
            best = (key, partition)
        ranked.append((key, count, partition))
        if len(ranked) > 4 * max(top, 1):
            ranked = sorted(ranked)[:top]
        count += 1
    assert best is not None
    ranked = sorted(ranked)[:top]
    trainings = (int(getattr(evaluator, "trainings", 0) or 0) - trainings_before
                 if evaluator is not None and hasattr(evaluator, "trainings") else
                 (len(per_group) if evaluator is not None else 0))
    return _grouping(
        tasks, [[tasks[i] for i in b] for b in best[1]], "exhaustive",
        params={"criterion": "min total loss" if evaluator is not None else "max total group value",
                "max_tasks": max_tasks, "seed": seed},
        scores={
            "partitions_scored": count,
            "groups_evaluated": len(per_group),
            "group_losses" if evaluator is not None else "group_values": details,
            "top_partitions": [{"groups": [[tasks[i] for i in b] for b in p], "score": sign * k}
                               for k, _, p in ranked],
        },
        objective=sign * best[0],
        cost=GroupingCost(trainings=trainings),
    )


# -------------------------------------------------------------------------------------------- clustering
def _square(tasks: Sequence[str], matrix: Any, name: str) -> np.ndarray:
    a = np.asarray(matrix, dtype=float)
    n = len(tasks)
    if a.shape != (n, n):
        raise ValueError(f"{name} must be a {n}x{n} matrix over tasks {list(tasks)}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = [(tasks[i], tasks[j]) for i, j in np.argwhere(~np.isfinite(a))[:5]]
        raise ValueError(f"{name} has non-finite entries at (row task, column task) {bad}")
    return a


def _labels_to_groups(tasks: Sequence[str], labels: Sequence[int]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for task, label in zip(tasks, labels):
        groups.setdefault(int(label), []).append(task)
    return list(groups.values())


@register_method(
    "clustering",
    needs=("affinity",),
    description="hierarchical or spectral clustering of any (symmetrised) affinity matrix",
)
def clustering(
    tasks: Sequence[str],
    *,
    affinity: Any,
    algorithm: str = "hierarchical",
    num_groups: int | None = None,
    distance_threshold: float | None = None,
    linkage: str = "average",
    matrix_kind: str = "affinity",
    seed: int = 0,
) -> Grouping:
    """Cluster tasks by an affinity (higher = more alike) or distance matrix.

    The matrix is symmetrised, ``(A + A.T) / 2``. Hierarchical: an affinity becomes the distance
    ``max(offdiag A) - A`` (diagonal 0), then ``scipy.cluster.hierarchy.linkage(method=linkage)`` cut into
    ``num_groups`` clusters (``maxclust``; may give fewer when merge heights tie) or at ``distance_threshold``.
    Spectral: ``sklearn.cluster.SpectralClustering(affinity="precomputed")`` on the affinity shifted so its
    minimum is 0 (a distance ``D`` becomes ``max(D) - D``), diagonal set to 0; needs ``num_groups``.

    Example:
        >>> A = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
        >>> clustering(["a", "b", "c"], affinity=A, num_groups=2).groups
        [['a', 'b'], ['c']]
    """
    tasks = list(tasks)
    n = len(tasks)
    a = _square(tasks, affinity, "affinity")
    sym = (a + a.T) / 2.0
    if matrix_kind not in ("affinity", "distance"):
        raise ValueError(f"matrix_kind must be 'affinity' or 'distance', got {matrix_kind!r}")
    if algorithm not in ("hierarchical", "spectral"):
        raise ValueError(f"unknown algorithm {algorithm!r}; choose 'hierarchical' or 'spectral'")
    if num_groups is not None and not 1 <= num_groups <= n:
        raise ValueError(f"num_groups must be between 1 and {n} (the number of tasks), got {num_groups}")
    if algorithm == "spectral" and distance_threshold is not None:
        raise ValueError("distance_threshold only applies to algorithm='hierarchical'")
    if algorithm == "hierarchical" and (num_groups is None) == (distance_threshold is None):
        raise ValueError("hierarchical clustering needs exactly one of num_groups or distance_threshold")
    if algorithm == "spectral" and num_groups is None:
        raise ValueError("spectral clustering needs num_groups")
    off = ~np.eye(n, dtype=bool)
    extra: dict[str, Any] = {}
    if n == 1:
        labels = np.zeros(1, dtype=int)
    elif algorithm == "hierarchical":
        from scipy.cluster.hierarchy import fcluster
        from scipy.cluster.hierarchy import linkage as scipy_linkage
        from scipy.spatial.distance import squareform

        if matrix_kind == "affinity":
            dist = sym[off].max() - sym
        else:
            if sym[off].min() < 0:
                raise ValueError("a distance matrix must not have negative entries")
            dist = sym.copy()
        np.fill_diagonal(dist, 0.0)
        z = scipy_linkage(squareform(np.maximum(dist, 0.0), checks=False), method=linkage)
        if num_groups is not None:
            labels = fcluster(z, t=num_groups, criterion="maxclust")
        else:
            labels = fcluster(z, t=float(distance_threshold), criterion="distance")
        extra["linkage_matrix"] = z.tolist()
        extra["distance"] = dist.tolist()
    else:
        w = sym - sym[off].min() if matrix_kind == "affinity" else sym[off].max() - sym
        np.fill_diagonal(w, 0.0)
        if num_groups == 1:
            labels = np.zeros(n, dtype=int)
        elif num_groups == n:
            labels = np.arange(n)
        else:
            from sklearn.cluster import SpectralClustering

            model = SpectralClustering(n_clusters=num_groups, affinity="precomputed", random_state=seed,
                                       assign_labels="cluster_qr")
            labels = model.fit_predict(np.maximum(w, 0.0))
        extra["spectral_affinity"] = w.tolist()
    return _grouping(
        tasks, _labels_to_groups(tasks, labels), "clustering",
        params={"algorithm": algorithm, "num_groups": num_groups, "distance_threshold": distance_threshold,
                "linkage": linkage, "matrix_kind": matrix_kind, "symmetrised": "(A + A.T) / 2", "seed": seed},
        scores={"affinity": a.tolist(), "symmetrised": sym.tolist(),
                "labels": {t: int(lab) for t, lab in zip(tasks, labels)}, **extra},
    )


__all__ = [
    "all_in_one", "bell_number", "clustering", "exhaustive", "random_grouping", "sample_partition",
    "set_partitions", "single_task", "stirling2",
]
