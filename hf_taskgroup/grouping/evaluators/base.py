"""Group evaluators: train a group of tasks together and return per-task validation losses, cached on disk.

Training-based grouping methods (``affinity_search``, ``surrogate``, random / exhaustive search) call an
evaluator ``evaluator(tasks) -> {task: {"loss": validation loss, <metric>: value, ...}}``. Trainings are the
expensive part, so :class:`CachedEvaluator` stores every result as one JSON file per group under a cache
folder, keyed by the sorted task names, the training settings and the seed: a search that is killed resumes
without training any group twice, and a changed setting or seed never reuses a stale result.

Helpers turn evaluations into the quantities of Ayman, Mukhopadhyay & Laszka (arXiv 2310.16241, B.1):
:func:`stl_losses`, :func:`pair_gains` (``Change(i, j)``) and :func:`group_gain` (``Change(G)``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hf_taskgroup.artifacts import ArtifactStore, stable_hash

logger = logging.getLogger(__name__)

TrainFn = Callable[[Sequence[str]], Mapping[str, Mapping[str, float]]]
BatchTrainFn = Callable[[list[list[str]]], Sequence[Mapping[str, Mapping[str, float]]]]
GroupResult = dict[str, dict[str, float]]

__all__ = [
    "BatchTrainFn",
    "CachedEvaluator",
    "GroupEvaluator",
    "TrainFn",
    "canonical_group",
    "group_gain",
    "group_key",
    "group_loss",
    "pair_gains",
    "prefetch",
    "stl_losses",
]


@runtime_checkable
class GroupEvaluator(Protocol):
    """Anything that trains a group of tasks together and returns per-task validation results.

    ``evaluator(["a", "b"])`` returns ``{"a": {"loss": 0.41, ...}, "b": {"loss": 0.37, ...}}``; ``trainings``
    counts the real trainings run so far (cached results count 0).

    Example:
        >>> ev = CachedEvaluator(lambda ts: {t: {"loss": 1.0} for t in ts}, cache_dir=None, settings={})
        >>> isinstance(ev, GroupEvaluator)
        True
    """

    trainings: int

    def __call__(self, tasks: Sequence[str]) -> dict[str, dict[str, float]]: ...


def canonical_group(tasks: Sequence[str]) -> tuple[str, ...]:
    """The sorted tuple of task names that identifies a group; rejects empty groups and duplicates."""
    names = [str(t) for t in tasks]
    if not names:
        raise ValueError("a group needs at least one task")
    if len(set(names)) != len(names):
        dupes = sorted({t for t in names if names.count(t) > 1})
        raise ValueError(f"duplicate task(s) in group: {dupes}")
    return tuple(sorted(names))


def _canonical_json(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as err:
        raise ValueError(f"evaluator settings must be JSON-able (finite numbers, str, lists, dicts): {err}") from err


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set, frozenset)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-able")


def group_key(tasks: Sequence[str], settings: Mapping[str, Any], seed: int) -> str:
    """sha256 hex digest of (sorted task names, settings as canonical JSON, seed): the cache key of a group."""
    payload = {"tasks": list(canonical_group(tasks)), "settings": dict(settings), "seed": int(seed)}
    _canonical_json(payload)  # finite numbers only: refuse what cannot be a key
    return stable_hash(payload, length=64)  # the same text as _canonical_json, so existing caches stay valid


def _clean_result(tasks: tuple[str, ...], raw: Mapping[str, Mapping[str, float]], origin: str) -> GroupResult:
    """Check a train_fn / cache result covers every task with a finite ``loss``; return plain floats."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"{origin} must return a dict task -> metrics, got {type(raw).__name__}")
    out: GroupResult = {}
    for task in tasks:
        if task not in raw:
            raise ValueError(f"{origin} returned no result for task {task!r} (group {list(tasks)})")
        metrics = raw[task]
        if not isinstance(metrics, Mapping) or "loss" not in metrics:
            raise ValueError(f"{origin} returned no 'loss' for task {task!r} (group {list(tasks)})")
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            value = float(value)
            if name == "loss" and not math.isfinite(value):
                raise ValueError(f"{origin} returned a non-finite loss {value} for task {task!r} (group {list(tasks)})")
            if math.isfinite(value):  # undefined metrics (e.g. AUC with one class) are dropped, not stored as NaN
                clean[str(name)] = value
        out[task] = clean
    return out


class CachedEvaluator:
    """Wrap ``train_fn(tasks) -> {task: {"loss": ..., ...}}`` with an on-disk cache: no group is trained twice.

    One JSON file per group, ``<cache_dir>/<sha256>.json``, written atomically through an
    :class:`~hf_taskgroup.artifacts.ArtifactStore` and sealed with a manifest (``<sha256>.json.manifest``: size,
    sha256 and the key as input fingerprint); the key hashes the sorted task names, ``settings`` (canonical
    JSON) and ``seed``, so changing either never reuses a stale result. A new instance on the same folder
    resumes from what is there. A corrupt entry (truncated, edited, unparsable) is named in one
    :class:`~hf_taskgroup.artifacts.ArtifactWarning`, deleted and the group trained again; an entry without a
    manifest (unfinished, or written before manifests existed) is trained again quietly. Reused entries are
    recorded in the store's ``reused`` list (and in a run's, see :meth:`ArtifactStore.collecting`).
    ``cache_dir=None`` keeps results in memory.

    ``trainings`` counts the groups this instance trained; ``cache_hits`` counts requests answered from the
    cache (memory or disk); ``seconds`` sums the wall time spent training.

    ``batch_train_fn(groups) -> [result of each group]``, when given, trains many groups in one go (e.g.
    :func:`~hf_taskgroup.grouping.evaluators.tabular.train_tabular_groups`); :meth:`evaluate_many` uses it.
    Otherwise :meth:`evaluate_many` dispatches one ``train_fn`` call per group through ``executor``
    (:mod:`hf_taskgroup.executor`: ``"serial"``, the default, or ``"ray"``); this instance stays the only
    writer of the cache.

    Example:
        >>> ev = CachedEvaluator(lambda ts: {t: {"loss": 0.5} for t in ts}, cache_dir=None, settings={"lr": 0.1})
        >>> ev(["b", "a"])["a"]["loss"], ev(["a", "b"]) is not None, ev.trainings, ev.cache_hits
        (0.5, True, 1, 1)
    """

    def __init__(
        self,
        train_fn: TrainFn,
        cache_dir: str | Path | None,
        settings: Mapping[str, Any],
        seed: int = 0,
        batch_train_fn: BatchTrainFn | None = None,
        executor: Any = None,
    ) -> None:
        from hf_taskgroup.executor import make_executor

        if not callable(train_fn):
            raise TypeError(f"train_fn must be callable, got {type(train_fn).__name__}")
        if batch_train_fn is not None and not callable(batch_train_fn):
            raise TypeError(f"batch_train_fn must be callable or None, got {type(batch_train_fn).__name__}")
        self.train_fn = train_fn
        self.batch_train_fn = batch_train_fn
        self.executor = make_executor(executor)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.settings = dict(settings)
        _canonical_json(self.settings)  # fail early on settings that cannot be hashed
        self.seed = int(seed)
        self.trainings = 0
        self.cache_hits = 0
        self.seconds = 0.0
        self._memory: dict[tuple[str, ...], GroupResult] = {}
        self._seconds: dict[tuple[str, ...], float] = {}
        self.store: ArtifactStore | None = None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.store = ArtifactStore(self.cache_dir)

    def key(self, tasks: Sequence[str]) -> str:
        """The cache key of ``tasks`` under this evaluator's settings and seed."""
        return group_key(tasks, self.settings, self.seed)

    def _path(self, group: tuple[str, ...]) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.key(group)}.json"

    def _read(self, group: tuple[str, ...]) -> GroupResult | None:
        """The verified cache entry of ``group`` (see :meth:`ArtifactStore.load`), else None (train it)."""
        path = self._path(group)
        if path is None or self.store is None:
            return None

        def load(p: Path) -> tuple[GroupResult, float]:
            entry = json.loads(p.read_text(encoding="utf-8"))
            if list(entry.get("tasks", [])) != list(group):
                raise ValueError(f"file holds group {entry.get('tasks')}, expected {list(group)}")
            return _clean_result(group, entry["results"], origin=f"cache file {p}"), float(entry.get("seconds", 0.0))

        loaded = self.store.load(path, fingerprint=path.stem, loader=load)
        if loaded is None:
            return None
        result, self._seconds[group] = loaded
        return result

    def is_cached(self, tasks: Sequence[str]) -> bool:
        """True when ``tasks`` (in any order) has a valid result in memory or on disk."""
        group = canonical_group(tasks)
        if group in self._memory:
            return True
        result = self._read(group)
        if result is not None:
            self._memory[group] = result
        return result is not None

    def training_seconds(self, tasks: Sequence[str]) -> float | None:
        """Wall time the training of ``tasks`` took when it ran (from the cache entry); None if never trained."""
        group = canonical_group(tasks)
        return self._seconds.get(group) if self.is_cached(group) else None

    def __call__(self, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per-task results of ``tasks`` trained together (from the cache when present)."""
        group = canonical_group(tasks)
        if self.is_cached(group):
            self.cache_hits += 1
            return _copy(self._memory[group])
        self._train_one(group)
        return _copy(self._memory[group])

    def evaluate_many(
        self, groups: Iterable[Sequence[str]], *, chunk_size: int = 64, progress: bool = False
    ) -> list[GroupResult]:
        """Results of many groups, in input order: cached groups from the cache, the others trained in chunks.

        Groups are canonical (task order does not matter) and de-duplicated: each distinct uncached group is
        trained once. With ``batch_train_fn``, the uncached groups are trained ``chunk_size`` at a time in one
        call each; every group of a chunk is cached as soon as its chunk finishes, with ``seconds`` = the
        chunk's wall time / its size and ``"batched": <chunk size>`` in the cache entry, so an interrupted run
        keeps every finished chunk and resumes from there. Without ``batch_train_fn`` each group is one
        ``train_fn`` call dispatched through the executor (one after another in this process by default, in
        parallel on Ray), cached as soon as it returns, exactly as ``evaluator(group)`` would. Counters as for calls:
        ``trainings`` grows by the groups trained, ``cache_hits`` by the other requests. ``progress=True``
        shows a tqdm bar over the trainings.

        Example:
            >>> ev = CachedEvaluator(lambda ts: {t: {"loss": 1.0} for t in ts}, None, {},
            ...                      batch_train_fn=lambda gs: [{t: {"loss": 0.5} for t in g} for g in gs])
            >>> [r["a"]["loss"] for r in ev.evaluate_many([["a"], ["b", "a"], ["a", "b"]])]
            [0.5, 0.5, 0.5]
            >>> ev.trainings, ev.cache_hits
            (2, 1)
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        wanted = [canonical_group(g) for g in groups]
        todo = [g for g in dict.fromkeys(wanted) if not self.is_cached(g)]
        from hf_taskgroup.log import progress_bar

        desc = f"training groups ({len(wanted) - len(todo)} of {len(wanted)} cached)"
        if self.batch_train_fn is None:
            self._train_dispatched(todo, desc=desc, progress=progress)
        else:
            # nested: a grouping method calls this inside the pipeline's grouping stage
            with progress_bar(total=len(todo), desc=desc, unit="group", nested=True, progress=progress) as bar:
                for start in range(0, len(todo), chunk_size):
                    chunk = todo[start:start + chunk_size]
                    self._train_chunk(chunk)
                    bar.update(len(chunk))
        self.cache_hits += len(wanted) - len(todo)
        return [_copy(self._memory[g]) for g in wanted]

    def _train_one(self, group: tuple[str, ...]) -> None:
        start = time.perf_counter()
        raw = self.train_fn(list(group))
        elapsed = time.perf_counter() - start
        self._store(group, _clean_result(group, raw, origin="train_fn"), elapsed)
        self.trainings += 1
        self.seconds += elapsed
        logger.debug("trained group %s in %.2fs", list(group), elapsed)

    def _train_dispatched(self, todo: list[tuple[str, ...]], *, desc: str, progress: bool) -> None:
        """One ``train_fn`` call per group through the executor; each result is cached here as it arrives."""

        def store(index: int, outcome: tuple[Any, float]) -> None:
            group, (raw, elapsed) = todo[index], outcome
            self._store(group, _clean_result(group, raw, origin="train_fn"), elapsed)
            self.trainings += 1
            self.seconds += elapsed
            logger.debug("trained group %s in %.2fs", list(group), elapsed)

        self.executor.map(_TimedCall(self.train_fn), [list(g) for g in todo], on_result=store, desc=desc,
                          progress=progress)

    def _train_chunk(self, chunk: list[tuple[str, ...]]) -> None:
        assert self.batch_train_fn is not None
        start = time.perf_counter()
        raws = list(self.batch_train_fn([list(g) for g in chunk]))
        elapsed = time.perf_counter() - start
        if len(raws) != len(chunk):
            raise ValueError(f"batch_train_fn returned {len(raws)} results for {len(chunk)} groups")
        results = [_clean_result(g, raw, origin="batch_train_fn") for g, raw in zip(chunk, raws)]
        for group, result in zip(chunk, results):
            self._store(group, result, elapsed / len(chunk), batched=len(chunk))
        self.trainings += len(chunk)
        self.seconds += elapsed
        logger.debug("trained %d groups together in %.2fs", len(chunk), elapsed)

    def _store(self, group: tuple[str, ...], result: GroupResult, seconds: float, batched: int | None = None) -> None:
        """Keep a new result in memory and write its cache entry (``batched``: size of its training batch)."""
        self._memory[group] = result
        self._seconds[group] = seconds
        path = self._path(group)
        if path is not None:
            entry: dict[str, Any] = {"tasks": list(group), "settings": self.settings, "seed": self.seed,
                                     "seconds": seconds, "results": result}
            if batched is not None:
                entry["batched"] = batched
            assert self.store is not None
            self.store.write_json(path, entry, fingerprint=path.stem)

    def __repr__(self) -> str:
        return (f"CachedEvaluator(cache_dir={str(self.cache_dir)!r}, seed={self.seed}, trainings={self.trainings}, "
                f"cache_hits={self.cache_hits})")


class ColdCostEvaluator:
    """Evaluator proxy that records the distinct groups a method asks for, so its cost can be charged as if
    the evaluator cache were cold (methods share one cache: a later method would otherwise look free).

    ``cold_trainings``: distinct groups requested; ``cold_seconds()``: their training time from the cache
    entries; ``real_seconds()``: training time actually spent through this proxy; ``trainings``: the real
    trainings of the wrapped evaluator.

    Example:
        >>> ev = CachedEvaluator(lambda ts: {t: {"loss": 1.0} for t in ts}, None, {})
        >>> ev(["a"]) and None
        >>> rec = ColdCostEvaluator(ev)
        >>> rec(["a"]) and rec(["b", "a"]) and None
        >>> rec.cold_trainings, ev.trainings
        (2, 2)
    """

    def __init__(self, evaluator: Any) -> None:
        self.evaluator = evaluator
        self.groups: set[tuple[str, ...]] = set()
        self._start_seconds = float(evaluator.seconds)

    @property
    def trainings(self) -> int:
        return self.evaluator.trainings

    @property
    def cold_trainings(self) -> int:
        return len(self.groups)

    def __call__(self, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        self.groups.add(canonical_group(tasks))
        return self.evaluator(tasks)

    def evaluate_many(self, groups: Sequence[Sequence[str]], **kwargs: Any) -> list[GroupResult]:
        """The wrapped evaluator's ``evaluate_many`` (batched training of the uncached groups), recorded."""
        self.groups.update(canonical_group(g) for g in groups)
        return self.evaluator.evaluate_many(groups, **kwargs)

    def __getattr__(self, name: str) -> Any:  # is_cached, key, cache_dir, ... of the wrapped evaluator
        return getattr(self.evaluator, name)

    def cold_seconds(self) -> float:
        return float(sum(self.evaluator.training_seconds(g) or 0.0 for g in self.groups))

    def real_seconds(self) -> float:
        return float(self.evaluator.seconds) - self._start_seconds


class MetricObjective:
    """Evaluator proxy that makes a per-task validation *metric* the quantity methods minimise.

    Each task's ``loss`` becomes ``1 - metric`` (``metrics[task]``, a higher-is-better metric such as
    accuracy, micro-F1, entity F1 or Pearson r); the validation loss it replaces is kept as
    ``eval_loss``. Use it when the tasks' losses are not comparable. On a suite that mixes sentence-level
    and token-level tasks, for example, the summed validation loss barely sees a drop in NER F1 (see
    docs/benchmarks.md: partitions ranked by summed validation loss correlate 0.12 with their test
    scores; ranked by validation metrics, 0.88). The wrapped evaluator's cache is shared: switching
    objectives trains nothing again.

    Example:
        >>> raw = CachedEvaluator(lambda ts: {t: {"loss": 0.3, "accuracy": 0.9} for t in ts}, None, {})
        >>> ev = MetricObjective(raw, {"a": "accuracy"})
        >>> round(ev(["a"])["a"]["loss"], 6), ev(["a"])["a"]["eval_loss"], ev.trainings
        (0.1, 0.3, 1)
    """

    def __init__(self, evaluator: GroupEvaluator, metrics: Mapping[str, str]) -> None:
        self.evaluator = evaluator
        self.metrics = {str(t): str(m) for t, m in metrics.items()}

    @property
    def trainings(self) -> int:
        return self.evaluator.trainings

    def __getattr__(self, name: str) -> Any:  # cache_hits, seconds, training_seconds, ... of the wrapped one
        return getattr(self.evaluator, name)

    def __call__(self, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        return self._objective(self.evaluator(tasks))

    def evaluate_many(self, groups: Iterable[Sequence[str]], **kwargs: Any) -> list[GroupResult]:
        """The wrapped evaluator's ``evaluate_many`` (dispatched through its executor), under this objective."""
        return [self._objective(r) for r in self.evaluator.evaluate_many(groups, **kwargs)]

    def _objective(self, result: Mapping[str, Mapping[str, float]]) -> GroupResult:
        out: GroupResult = {}
        for task, values in result.items():
            metric = self.metrics.get(task)
            if metric is None:
                raise KeyError(f"MetricObjective: no metric named for task {task!r} (have {sorted(self.metrics)})")
            if metric not in values:
                raise KeyError(f"MetricObjective: task {task!r} reported no {metric!r} (metrics: {sorted(values)})")
            out[task] = {**values, "eval_loss": float(values["loss"]), "loss": 1.0 - float(values[metric])}
        return out

    def __repr__(self) -> str:
        return f"MetricObjective({self.evaluator!r}, metrics={self.metrics})"


class _TimedCall:
    """``fn(arg)`` with its wall time: ``(result, seconds)`` (picklable, so it runs on any executor)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, arg: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        result = self.fn(arg)
        return result, time.perf_counter() - start


def prefetch(evaluator: Any, groups: Iterable[Sequence[str]]) -> None:
    """Train the uncached ``groups`` in one :meth:`CachedEvaluator.evaluate_many` call when the evaluator's
    executor runs trainings in parallel (e.g. Ray); a no-op otherwise, so serial searches are unchanged.

    Search methods call it with the groups they are about to ask for one by one.

    Example:
        >>> ev = CachedEvaluator(lambda ts: {t: {"loss": 1.0} for t in ts}, None, {})
        >>> prefetch(ev, [["a"], ["b"]]); ev.trainings
        0
    """
    executor = getattr(evaluator, "executor", None)
    if not getattr(executor, "parallel", False) or not callable(getattr(evaluator, "evaluate_many", None)):
        return
    is_cached = getattr(evaluator, "is_cached", lambda g: False)
    groups = [list(g) for g in groups if not is_cached(g)]
    if groups:
        evaluator.evaluate_many(groups, progress=True)


def _copy(result: GroupResult) -> GroupResult:
    return {task: dict(metrics) for task, metrics in result.items()}


def group_loss(result: Mapping[str, Mapping[str, float]], tasks: Sequence[str] | None = None) -> float:
    """Sum of the per-task validation losses of one group result (over ``tasks`` if given)."""
    names = list(result) if tasks is None else list(tasks)
    return float(sum(float(result[t]["loss"]) for t in names))


def stl_losses(evaluator: GroupEvaluator, tasks: Sequence[str]) -> dict[str, float]:
    """Single-task validation loss of every task: ``{task: L_STL(task)}`` (one training per uncached task).

    Example:
        >>> ev = CachedEvaluator(lambda ts: {t: {"loss": 2.0} for t in ts}, None, {})
        >>> stl_losses(ev, ["a", "b"])
        {'a': 2.0, 'b': 2.0}
    """
    return {str(t): float(evaluator([t])[str(t)]["loss"]) for t in tasks}


def group_gain(stl: Mapping[str, float], group_losses: Mapping[str, float]) -> float:
    """Relative MTL gain of a group, ``Change(G) = (sum_t L_STL(t) - L_MTL(G)) / sum_t L_STL(t)`` (B.1).

    ``group_losses`` maps each task of G to its validation loss in the group model (a float, or a metrics
    dict with a ``loss`` entry). Positive means training together helps.

    Example:
        >>> round(group_gain({"a": 1.0, "b": 1.0}, {"a": 0.8, "b": 0.9}), 6)
        0.15
    """
    total_stl = 0.0
    total_mtl = 0.0
    for task, value in group_losses.items():
        if task not in stl:
            raise KeyError(f"no single-task loss for task {task!r}")
        total_stl += float(stl[task])
        total_mtl += float(value["loss"] if isinstance(value, Mapping) else value)
    if total_stl <= 0:
        raise ValueError(f"single-task losses of {sorted(group_losses)} sum to {total_stl}; the gain is undefined")
    return (total_stl - total_mtl) / total_stl


def pair_gains(
    evaluator: GroupEvaluator, tasks: Sequence[str], stl: Mapping[str, float] | None = None
) -> np.ndarray:
    """Pairwise gains ``Change(i, j)`` (B.1) from trained pairs: a symmetric matrix over ``tasks``, zero diagonal.

    Trains (or reads from the cache) every single task and every pair: ``n + n(n-1)/2`` evaluations.

    Example:
        >>> ev = CachedEvaluator(lambda ts: {t: {"loss": 1.0 if len(ts) == 1 else 0.9} for t in ts}, None, {})
        >>> pair_gains(ev, ["a", "b"]).round(3).tolist()
        [[0.0, 0.1], [0.1, 0.0]]
    """
    names = [str(t) for t in tasks]
    stl = dict(stl) if stl is not None else stl_losses(evaluator, names)
    gains = np.zeros((len(names), len(names)), dtype=float)
    for i, j in combinations(range(len(names)), 2):
        result = evaluator([names[i], names[j]])
        gains[i, j] = gains[j, i] = group_gain(stl, {names[i]: result[names[i]], names[j]: result[names[j]]})
    return gains
