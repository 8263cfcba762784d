"""The recommendation: which groups to train, chosen so that no task is left worse than training it alone.

Candidates are the groupings of the methods that ran plus single-task training for every task. Every
candidate group is trained over several seeds; for every member task, its validation score in the group
is compared with its single-task score, with a confidence interval from a bootstrap over validation
examples, paired by seed (group model of seed *k* against single-task model of seed *k*, on the same
resampled examples; the seed pairs are resampled too). A task whose score in its group is worse than
single-task beyond its interval is split out to train alone, and the reduced group is retrained (cached);
this repeats until no member is harmed. The recommendation is the surviving candidate with the best mean
validation gain (ties: fewer parameters). Selection reads the validation split only; the report split
(test) is reported, never used to choose.

Sanity flags: a task whose single-task model does not beat a constant predictor on validation (the
majority class; per label for multilabel; the mean for regression; all-``O`` for token classification)
is flagged ``not learned`` and never grouped. A task whose PVI probe collapsed (one prediction for every
example) is flagged the same way and kept single-task too: the probe could not learn it under the PVI
settings, so its gains in a group are not trusted.

Example::

    >>> from hf_taskgroup.grouping.recommend import recommend_grouping
    >>> rec = recommend_grouping(suite, {"pvi": grouping}, settings=TrainSettings(), output_dir="runs")  # doctest: +SKIP
    >>> rec.grouping.groups, rec.rows["hoc"].verdict                                                    # doctest: +SKIP
    ([['hoc', 'pubmedqa'], ['biosses']], 'gains')
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.training.metrics import compute_task_metrics, extract_entities, greater_is_better
from hf_taskgroup.training.outputs import expand_outputs

logger = logging.getLogger(__name__)

VERDICTS = ("gains", "no difference", "split out", "not learned")
SINGLE_TASK = "single_task"
TrainFn = Callable[[list[str], int], Mapping[str, Any]]


# ------------------------------------------------------------------------------------------ statistics
def _per_example_stats(record: Mapping[str, Any], metric: str, id2label: Sequence[str] | None) -> np.ndarray | None:
    """Per-example sufficient statistics of ``metric`` (rows add up over a resample), or None (no fast path)."""
    kind = record["type"]
    if kind == "classification" and metric == "accuracy":
        pred, gold = np.asarray(record["predictions"]), np.asarray(record["labels"])
        return (pred == gold).astype(float)[:, None]
    if kind == "multilabel" and metric == "f1_micro":
        pred, gold = np.asarray(record["predictions"]).astype(bool), np.asarray(record["labels"]).astype(bool)
        return np.stack([(pred & gold).sum(1), (pred & ~gold).sum(1), (~pred & gold).sum(1)], axis=1).astype(float)
    if kind == "regression" and metric == "pearson":
        x, y = np.asarray(record["predictions"], dtype=float), np.asarray(record["labels"], dtype=float)
        x, y = x - x.mean(), y - y.mean()  # centred: the sums below stay accurate
        return np.stack([x, y, x * x, y * y, x * y], axis=1)
    if kind == "token_classification" and metric == "f1" and id2label is not None:
        names = [str(n) for n in (id2label.values() if isinstance(id2label, Mapping) else id2label)]
        rows = []
        for pred, gold in zip(record["predictions"], record["labels"]):
            p = extract_entities([names[i] for i in pred])
            g = extract_entities([names[i] for i in gold])
            rows.append((len(p & g), len(p), len(g)))
        return np.asarray(rows, dtype=float).reshape(-1, 3)
    return None


def _score_from_sums(kind: str, sums: np.ndarray, n: float) -> np.ndarray:
    """The metric of each resample from its summed statistics (``sums``: [B, s])."""
    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)

    if kind == "classification":
        return sums[:, 0] / n
    if kind == "multilabel":
        tp, fp, fn = sums[:, 0], sums[:, 1], sums[:, 2]
        return ratio(2 * tp, 2 * tp + fp + fn)
    if kind == "regression":
        sx, sy, sxx, syy, sxy = (sums[:, i] for i in range(5))
        cov = sxy - sx * sy / n
        var = np.maximum(sxx - sx * sx / n, 0.0) * np.maximum(syy - sy * sy / n, 0.0)
        return ratio(cov, np.sqrt(var) * (var > 1e-24))  # constant side: 0.0 as in training.metrics
    if kind == "token_classification":
        return ratio(2 * sums[:, 0], sums[:, 1] + sums[:, 2])
    raise ValueError(kind)


def score(record: Mapping[str, Any], metric: str, id2label: Sequence[str] | None = None) -> float:
    """``metric`` of a :func:`~hf_taskgroup.training.outputs.compact_outputs` record (all its examples)."""
    pred, gold = expand_outputs(record)
    return float(compute_task_metrics(record["type"], pred, gold, id2label=id2label, metrics=[metric])[metric])


def _check_same_examples(records: Sequence[Mapping[str, Any]], task: str) -> int:
    first = records[0]["labels"]
    for r in records[1:]:
        if r["labels"] != first:
            raise ValueError(f"task {task!r}: the compared models were scored on different examples "
                             "(their stored labels differ); retrain them on the same split")
    return len(first)


def paired_bootstrap(
    grouped: Sequence[Mapping[str, Any]],
    single: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    id2label: Sequence[str] | None = None,
    samples: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
    task: str = "task",
) -> tuple[float, float, float]:
    """Difference grouped minus single-task in ``metric`` (sign flipped where lower is better), with an interval.

    ``grouped[k]`` and ``single[k]`` are the per-example outputs of the models of seed *k* (paired by seed).
    Each bootstrap replicate draws the examples with replacement (the same draw for every model) and the seed
    pairs with replacement, and averages the paired differences. Returns ``(difference, low, high)``: the
    difference on all examples averaged over seeds, and the ``confidence`` percentile interval.

    Example::

        >>> g = [{"type": "classification", "predictions": [1, 1, 0, 1], "labels": [1, 1, 0, 0]}]
        >>> s = [{"type": "classification", "predictions": [1, 0, 1, 1], "labels": [1, 1, 0, 0]}]
        >>> paired_bootstrap(g, s, "accuracy", samples=200)[0]
        0.5
    """
    if len(grouped) != len(single) or not grouped:
        raise ValueError(f"task {task!r}: paired bootstrap needs one grouped and one single-task run per seed, "
                         f"got {len(grouped)} and {len(single)}")
    n = _check_same_examples([*grouped, *single], task)
    sign = 1.0 if greater_is_better(metric) else -1.0
    point = float(np.mean([sign * (score(g, metric, id2label) - score(s, metric, id2label))
                           for g, s in zip(grouped, single)]))
    if samples <= 0 or n == 0:
        return point, point, point
    rng = np.random.default_rng(random_state)
    draws = rng.integers(0, n, size=(samples, n))
    k = len(grouped)
    seed_draws = rng.integers(0, k, size=(samples, k))
    kind = grouped[0]["type"]
    stats = [(_per_example_stats(g, metric, id2label), _per_example_stats(s, metric, id2label))
             for g, s in zip(grouped, single)]
    diffs = np.empty((samples, k))
    if all(a is not None and b is not None for a, b in stats):
        weights = np.zeros((samples, n))
        for b in range(samples):
            weights[b] = np.bincount(draws[b], minlength=n)
        for j, (sg, ss) in enumerate(stats):
            diffs[:, j] = sign * (_score_from_sums(kind, weights @ sg, n) - _score_from_sums(kind, weights @ ss, n))
    else:  # any other metric: recompute it on each resample
        for b in range(samples):
            for j, (g, s) in enumerate(zip(grouped, single)):
                diffs[b, j] = sign * (_metric_on(g, metric, id2label, draws[b]) - _metric_on(s, metric, id2label, draws[b]))
    replicate = np.take_along_axis(diffs, seed_draws, axis=1).mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicate, [alpha, 1.0 - alpha])
    return point, float(low), float(high)


def _metric_on(record: Mapping[str, Any], metric: str, id2label: Any, index: np.ndarray) -> float:
    pred, gold = expand_outputs(record, index)
    return float(compute_task_metrics(record["type"], pred, gold, id2label=id2label, metrics=[metric])[metric])


def constant_baseline(record: Mapping[str, Any], metric: str, id2label: Sequence[str] | None = None) -> float:
    """``metric`` of the best input-blind predictor on the record's examples: the majority class
    (classification), the majority of each label (multilabel), the mean (regression), all ``O`` (token
    classification; the most frequent tag when there is no ``O``).

    Example::

        >>> constant_baseline({"type": "classification", "predictions": [0, 0, 0], "labels": [1, 1, 0]}, "accuracy")
        0.6666666666666666
    """
    kind = record["type"]
    _, gold = expand_outputs(record)
    if kind == "classification":
        pred = np.full_like(gold, np.bincount(gold).argmax())
    elif kind == "multilabel":
        pred = np.where(np.broadcast_to(gold.mean(axis=0) > 0.5, gold.shape), 1.0, -1.0)
    elif kind == "regression":
        pred = np.full(gold.shape, float(gold.mean()))
    elif kind == "token_classification":
        names = [str(n) for n in (id2label.values() if isinstance(id2label, Mapping) else id2label or [])]
        if "O" in names:
            outside = names.index("O")
        else:
            outside = int(np.bincount(gold[gold >= 0]).argmax())
        pred = np.full_like(gold, outside)
    else:
        raise ValueError(f"unknown task type {kind!r}")
    return float(compute_task_metrics(kind, pred, gold, id2label=id2label, metrics=[metric])[metric])


# ------------------------------------------------------------------------------------------ results
@dataclass
class TaskVerdict:
    """One task in one candidate: validation scores (mean over seeds), paired difference and interval, verdict,
    and the report split's scores (reported, never used to choose)."""

    task: str
    metric: str
    group: list[str]
    single: float
    grouped: float
    difference: float
    low: float
    high: float
    verdict: str
    flags: list[str] = field(default_factory=list)
    test_single: float | None = None
    test_grouped: float | None = None
    test_difference: float | None = None
    test_low: float | None = None
    test_high: float | None = None


@dataclass
class CandidateResult:
    """A candidate grouping after the harmed members were split out."""

    name: str
    initial_groups: list[list[str]]
    groups: list[list[str]]
    split_out: list[str]
    rows: dict[str, TaskVerdict]
    parameters: int
    rounds: int

    @property
    def mean_gain(self) -> float:
        return float(np.mean([r.difference for r in self.rows.values()])) if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "initial_groups": self.initial_groups, "groups": self.groups,
                "split_out": self.split_out, "mean_gain": self.mean_gain, "parameters": self.parameters,
                "rounds": self.rounds, "rows": {t: asdict(r) for t, r in self.rows.items()}}


@dataclass
class Recommendation:
    """What :func:`recommend_grouping` returns: the chosen candidate, per-task verdicts, every candidate, flags."""

    grouping: Grouping
    candidate: str
    rows: dict[str, TaskVerdict]
    candidates: dict[str, CandidateResult]
    flags: dict[str, list[str]]
    parameters: int
    single_task_parameters: int
    seeds: list[int]
    split: str
    report_split: str | None
    confidence: float
    bootstrap_samples: int
    cost: dict[str, Any]
    results: dict[str, dict[int, Mapping[str, Any]]] = field(default_factory=dict, repr=False)
    #: candidates dropped by screening (``screen``), with their mean validation gain on the first seed
    screened_out: dict[str, float] = field(default_factory=dict)

    @property
    def mean_gain(self) -> float:
        return self.candidates[self.candidate].mean_gain

    @property
    def verdicts(self) -> dict[str, str]:
        return {t: r.verdict for t, r in self.rows.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate, "groups": self.grouping.groups, "mean_gain": self.mean_gain,
            "rows": {t: asdict(r) for t, r in self.rows.items()}, "flags": self.flags,
            "parameters": self.parameters, "single_task_parameters": self.single_task_parameters,
            "seeds": self.seeds, "split": self.split, "report_split": self.report_split,
            "confidence": self.confidence, "bootstrap_samples": self.bootstrap_samples, "cost": self.cost,
            "candidates": {n: c.to_dict() for n, c in self.candidates.items()},
            "screened_out": self.screened_out, "grouping": self.grouping.to_dict(),
        }


# ------------------------------------------------------------------------------------------ the search
def recommend_grouping(
    suite: Any,
    candidates: Mapping[str, Grouping | Sequence[Sequence[str]]],
    train: TrainFn | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    split: str = "validation",
    report_split: str | None = "test",
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    collapsed: Iterable[str] = (),
    settings: Any = None,
    output_dir: str | Path | None = None,
    tokenizer: Any = None,
    random_state: int = 0,
    train_many: Callable[[list[tuple[list[str], int]]], list[Mapping[str, Any]]] | None = None,
    screen: int = 0,
) -> Recommendation:
    """Choose the grouping to train (see the module docstring).

    Args:
        suite: the :class:`~hf_taskgroup.data.tasks.TaskSuite` (its task names, types and labels are read).
        candidates: name -> :class:`Grouping` or list of groups; ``single_task`` is always added.
        train: ``train(tasks, seed)`` -> a :func:`~hf_taskgroup.training.train.train_group` result with
            ``"outputs"`` for ``split`` (and ``report_split`` for its intervals); cache it, it is called for
            every group and seed. ``None``: :func:`cached_trainer` with ``settings`` under ``output_dir``.
        seeds: the seeds every group is trained with (pairs are matched by seed).
        split: the selection split (validation; never the test split).
        report_split: reported beside it, never used to choose; ``None`` to skip.
        bootstrap_samples, confidence: the interval of each paired difference.
        collapsed: tasks whose PVI probe collapsed (flagged in the result).
        train_many: optional ``train_many([(tasks, seed), ...]) -> results`` in the same order: the trainings
            each step needs at once (every single task, every candidate's groups, the reduced groups of a
            split-out round) go through it, so an executor can run them side by side; ``train`` still
            serves anything not prefetched.
        screen: with ``N > 0`` and more than ``N`` candidates besides single-task, every candidate's groups are
            first trained with ``seeds[0]`` only; the ``N`` candidates with the best mean validation gain on that
            seed (paired with single-task of the same seed; ties: fewer groups) go on to every seed and the
            split-out rounds, the others are listed in ``Recommendation.screened_out`` with that gain. Single-task
            always goes on. It saves ``(seeds - 1)`` trainings of every screened-out candidate's groups; the
            guarantee (no member harmed beyond its interval on validation) holds for the kept candidates as before.

    Example::

        >>> rec = recommend_grouping(suite, {"all_in_one": [suite.task_names]}, settings=TrainSettings(),
        ...                          output_dir="outputs/rec")  # doctest: +SKIP
        >>> rec.grouping.groups  # doctest: +SKIP
    """
    if split == report_split:
        raise ValueError(f"split and report_split are both {split!r}: selection must not read the reported split")
    if not seeds:
        raise ValueError("seeds is empty: the recommendation needs at least one seed")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if train is None:
        if settings is None or output_dir is None:
            raise ValueError("recommend_grouping needs train=... or settings=... and output_dir=...")
        train = cached_trainer(suite, settings, output_dir, tokenizer=tokenizer, splits=(split, report_split))
    tasks = list(suite.task_names)
    infos = suite.task_infos()
    seeds = [int(s) for s in seeds]
    search = _Search(train, tasks, infos, seeds, split, report_split, bootstrap_samples, confidence, random_state)
    search.train_many = train_many
    search.prefetch([[t] for t in tasks])

    # 1. sanity flags from the single-task models
    flags: dict[str, list[str]] = {t: [] for t in tasks}
    for t in tasks:
        runs = search.runs([t])
        metric = runs[0]["primary"][t]
        record = search.record(runs[0], t, split)
        single = float(np.mean([score(search.record(r, t, split), metric, search.labels(t)) for r in runs]))
        base = constant_baseline(record, metric, search.labels(t))
        sign = 1.0 if greater_is_better(metric) else -1.0
        if sign * (single - base) <= 0:
            flags[t].append(f"not learned: single-task {metric} {single:.3f} does not beat the constant predictor's "
                            f"{base:.3f} on {split}")
    for t in collapsed:  # the probe learned nothing under the PVI settings: as for "not learned", never grouped
        if t in flags:
            flags[t].append("not learned by the PVI probe (one prediction for every example): kept single-task")
    excluded = {t for t, f in flags.items() if f}
    if excluded:
        logger.warning("recommendation: %s flagged not learned; kept single-task", sorted(excluded))

    # 2. candidates: the methods' groupings (flagged tasks taken out) plus single-task
    partitions: dict[tuple[tuple[str, ...], ...], list[str]] = {}
    named = {**{n: (c.groups if isinstance(c, Grouping) else c) for n, c in candidates.items()},
             SINGLE_TASK: [[t] for t in tasks]}
    for name, groups in named.items():
        partitions.setdefault(_normalise(groups, tasks, excluded), []).append(name)

    screened_out: dict[str, float] = {}
    if screen > 0 and len(seeds) > 1 and len(partitions) > screen + 1:
        partitions, screened_out = _screen(search, partitions, screen, seeds[0])
    results: dict[str, CandidateResult] = {}
    search.prefetch([list(g) for partition in partitions for g in partition])
    for partition, names in partitions.items():
        name = " = ".join(names)
        results[name] = search.candidate(name, [list(g) for g in partition], flags)
    best = min(results.values(), key=lambda c: (-round(c.mean_gain, 12), c.parameters, c.name))
    single_params = sum(int(search.runs([t])[0]["num_parameters"]) for t in tasks)
    grouping = Grouping(
        groups=[list(g) for g in best.groups], method="recommended", tasks=tasks,
        params={"candidate": best.name, "seeds": seeds, "split": split, "confidence": confidence,
                "bootstrap_samples": bootstrap_samples, "screen": screen, "screened_out": screened_out},
        scores={"verdicts": {t: r.verdict for t, r in best.rows.items()},
                "validation_gain": {t: r.difference for t, r in best.rows.items()},
                "flags": {t: f for t, f in flags.items() if f}, "split_out": best.split_out},
        cost=GroupingCost(trainings=search.trainings, seconds=search.seconds),
    )
    grouping.validate()
    return Recommendation(
        grouping=grouping, candidate=best.name, rows=best.rows, candidates=results, flags=flags,
        parameters=best.parameters, single_task_parameters=single_params, seeds=seeds, split=split,
        report_split=report_split, confidence=confidence, bootstrap_samples=bootstrap_samples,
        cost={"trainings": search.trainings, "seconds": search.seconds}, results=search.results,
        screened_out=screened_out,
    )


def _screen(search: _Search, partitions: Mapping[tuple[tuple[str, ...], ...], list[str]], keep: int, seed: int
            ) -> tuple[dict[tuple[tuple[str, ...], ...], list[str]], dict[str, float]]:
    """The ``keep`` partitions with the best mean validation gain on ``seed`` alone (single-task always kept),
    and ``{name: that gain}`` of the others."""
    grouped = [list(g) for partition in partitions for g in partition if len(g) > 1]
    search.prefetch(grouped, seeds=[seed])
    gains: dict[tuple[tuple[str, ...], ...], float] = {}
    for partition in partitions:
        diffs = []
        for g in partition:
            for t in g:
                if len(g) == 1:
                    diffs.append(0.0)
                    continue
                metric = search.run([t], seed)["primary"][t]
                sign = 1.0 if greater_is_better(metric) else -1.0
                together, alone = (score(search.record(search.run(members, seed), t, search.split), metric,
                                         search.labels(t)) for members in (g, [t]))
                diffs.append(sign * (together - alone))
        gains[partition] = float(np.mean(diffs))
    single = next(p for p, names in partitions.items() if SINGLE_TASK in names)
    ranked = sorted((p for p in partitions if p != single), key=lambda p: (-round(gains[p], 12), len(p)))
    kept = {p: partitions[p] for p in [*ranked[:keep], single]}
    out = {" = ".join(partitions[p]): gains[p] for p in ranked[keep:]}
    logger.info("recommendation: screened on seed %d, kept %s; screened out %s", seed,
                [" = ".join(n) for n in kept.values()], sorted(out))
    return kept, out


def _normalise(groups: Sequence[Sequence[str]], tasks: Sequence[str], excluded: set[str]) -> tuple[tuple[str, ...], ...]:
    """A partition of ``tasks``: flagged tasks alone, a task in several groups kept in its first, the rest alone."""
    seen: set[str] = set()
    out = []
    for g in groups:
        members = tuple(sorted(t for t in g if t in tasks and t not in seen and t not in excluded))
        seen.update(members)
        if members:
            out.append(members)
    out += [(t,) for t in tasks if t not in seen]
    order = {t: i for i, t in enumerate(tasks)}
    return tuple(sorted(out, key=lambda g: min(order[t] for t in g)))


class _Search:
    """Memoised trainings and the split-out loop of one recommendation."""

    def __init__(self, train: TrainFn, tasks: list[str], infos: Mapping[str, Any], seeds: list[int], split: str,
                 report_split: str | None, samples: int, confidence: float, random_state: int):
        self.train, self.tasks, self.infos, self.seeds = train, tasks, infos, seeds
        self.split, self.report_split = split, report_split
        self.samples, self.confidence, self.random_state = samples, confidence, random_state
        self.results: dict[str, dict[int, Mapping[str, Any]]] = {}
        self.trainings = 0
        self.seconds = 0.0
        self.train_many: Callable[[list[tuple[list[str], int]]], list[Mapping[str, Any]]] | None = None

    def prefetch(self, groups: Sequence[Sequence[str]], seeds: Sequence[int] | None = None) -> None:
        """Train every (group, seed) not trained yet in one ``train_many`` call (nothing without one); ``seeds``
        defaults to all of the search's seeds."""
        from hf_taskgroup.report.evaluation import group_name

        if self.train_many is None:
            return
        todo: list[tuple[list[str], int]] = []
        for group in groups:
            members = sorted(group)
            done = self.results.get(group_name(members), {})
            todo += [(members, seed) for seed in (self.seeds if seeds is None else seeds)
                     if seed not in done and (members, seed) not in todo]
        if not todo:
            return
        for (members, seed), res in zip(todo, self.train_many(todo), strict=True):
            self.results.setdefault(group_name(members), {})[seed] = res
            self.trainings += 1
            self.seconds += float(res.get("train_seconds") or 0.0)

    def labels(self, task: str) -> Any:
        return self.infos[task].get("id2label")

    def runs(self, group: Sequence[str]) -> list[Mapping[str, Any]]:
        return [self.run(group, seed) for seed in self.seeds]

    def run(self, group: Sequence[str], seed: int) -> Mapping[str, Any]:
        """The training of ``group`` with one ``seed`` (trained here unless prefetched)."""
        from hf_taskgroup.report.evaluation import group_name

        members = sorted(group)
        store = self.results.setdefault(group_name(members), {})
        if seed not in store:
            res = self.train(list(members), seed)
            store[seed] = res
            self.trainings += 1
            self.seconds += float(res.get("train_seconds") or 0.0)
        return store[seed]

    def record(self, run: Mapping[str, Any], task: str, split: str) -> Mapping[str, Any]:
        try:
            return run["outputs"][split][task]
        except KeyError:
            raise KeyError(f"task {task!r}: the trained run of group {run.get('group', '?')} has no per-example "
                           f"outputs on split {split!r}; train it with prediction_splits=({split!r}, ...)") from None

    def compare(self, group: Sequence[str], task: str, split: str) -> tuple[float, float, float]:
        grouped = [self.record(r, task, split) for r in self.runs(group)]
        single = [self.record(r, task, split) for r in self.runs([task])]
        metric = self.runs([task])[0]["primary"][task]
        return paired_bootstrap(grouped, single, metric, id2label=self.labels(task), samples=self.samples,
                                confidence=self.confidence, random_state=self.random_state, task=task)

    def mean_metric(self, group: Sequence[str], task: str, split: str) -> float | None:
        values = []
        for r in self.runs(group):
            value = (r["tasks"].get(task, {}).get(split) or {}).get(r["primary"][task])
            if value is None:
                return None
            values.append(float(value))
        return float(np.mean(values))

    def candidate(self, name: str, groups: list[list[str]], flags: Mapping[str, list[str]]) -> CandidateResult:
        initial = [list(g) for g in groups]
        split_out: list[str] = []
        rounds = 0
        while True:
            rounds += 1
            self.prefetch(groups)
            harmed = []
            for g in groups:
                if len(g) < 2:
                    continue
                for t in g:
                    _, _, high = self.compare(g, t, self.split)
                    if high < 0:
                        harmed.append(t)
            if not harmed:
                break
            logger.info("recommendation %s: %s harmed beyond the interval; split out and retrained", name, harmed)
            split_out += harmed
            groups = [[t for t in g if t not in harmed] for g in groups]
            groups = [g for g in groups if g] + [[t] for t in harmed]
        rows = {}
        for t in self.tasks:
            g = next(g for g in groups if t in g)
            metric = self.runs([t])[0]["primary"][t]
            single = self.mean_metric([t], t, self.split)
            if len(g) > 1:
                diff, low, high = self.compare(g, t, self.split)
                verdict = "gains" if low > 0 else "no difference"
                grouped = self.mean_metric(g, t, self.split)
            else:
                diff = low = high = 0.0
                grouped = single
                verdict = ("not learned" if any(f.startswith("not learned") for f in flags.get(t, []))
                           else "split out" if t in split_out else "no difference")
            row = TaskVerdict(task=t, metric=metric, group=sorted(g), single=float(single), grouped=float(grouped),
                              difference=diff, low=low, high=high, verdict=verdict, flags=list(flags.get(t, [])))
            if self.report_split is not None:
                row.test_single = self.mean_metric([t], t, self.report_split)
                row.test_grouped = self.mean_metric(g, t, self.report_split)
                if row.test_single is not None and row.test_grouped is not None:
                    sign = 1.0 if greater_is_better(metric) else -1.0
                    row.test_difference = sign * (row.test_grouped - row.test_single)
                    has_outputs = all(self.report_split in (r.get("outputs") or {}) for r in self.runs(g))
                    if len(g) > 1 and has_outputs and all(self.report_split in (r.get("outputs") or {})
                                                          for r in self.runs([t])):
                        _, row.test_low, row.test_high = self.compare(g, t, self.report_split)
                    elif len(g) == 1:
                        row.test_low = row.test_high = 0.0
            rows[t] = row
        parameters = sum(int(self.runs(g)[0]["num_parameters"]) for g in groups)
        return CandidateResult(name=name, initial_groups=initial, groups=[sorted(g) for g in groups],
                               split_out=split_out, rows=rows, parameters=parameters, rounds=rounds)


# ------------------------------------------------------------------------------------------ default trainer
def cached_trainer(suite: Any, settings: Any, output_dir: str | Path, *, tokenizer: Any = None,
                   splits: Sequence[str | None] = ("validation", "test"),
                   model_factory: Callable[..., Any] | None = None) -> TrainFn:
    """A ``train(tasks, seed)`` for :func:`recommend_grouping` that trains with
    :func:`~hf_taskgroup.training.train.train_group` (per-example outputs on ``splits``) and caches each run as
    ``<output_dir>/runs/<group>/seed<k>.json`` (written atomically; reused when the settings match)."""
    import dataclasses

    from hf_taskgroup.report.evaluation import group_name
    from hf_taskgroup.training.train import train_group
    from hf_taskgroup.utils import atomic_write_json

    root = Path(output_dir)
    wanted = tuple(s for s in splits if s)

    def train(tasks: list[str], seed: int) -> Mapping[str, Any]:
        run_settings = dataclasses.replace(settings, seed=seed)
        path = root / "runs" / group_name(tasks) / f"seed{seed}.json"
        stamp = {"tasks": sorted(tasks), "settings": run_settings.to_dict(), "splits": list(wanted)}
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("recommend_stamp") == stamp:
                return data
        model = model_factory(suite.subset(tasks).task_infos(), seed) if model_factory is not None else None
        res = train_group(suite, tasks, run_settings, tokenizer=tokenizer, model=model, eval_splits=wanted,
                          prediction_splits=wanted, output_dir=root / "runs" / "_scratch")
        res.pop("trainer", None)
        res["group"] = sorted(tasks)
        res["recommend_stamp"] = stamp
        atomic_write_json(path, res)
        return res

    return train


# ------------------------------------------------------------------------------------------ pipeline stage
def stage_recommend(pipeline: Any, groupings: Mapping[str, Grouping], pvi: Mapping[str, Any]) -> Recommendation:
    """The ``recommend`` stage of :class:`~hf_taskgroup.pipeline.Pipeline`: candidates are the methods' groupings,
    trainings go through ``pipeline.train_cached`` (shared with the ``train`` stage), the result is written to
    ``recommendation.json``; when the recommendation is published, its groups' models are saved."""
    from hf_taskgroup.utils import atomic_write_json

    cfg = pipeline.config
    seeds = cfg.recommendation_seeds()
    collapsed = [t for t, r in pvi.items() if ((getattr(r, "summary", None) or {}).get("collapsed") or {}).get(cfg.pvi_split)]
    rec = recommend_grouping(
        pipeline.suite, dict(groupings), lambda tasks, seed: pipeline.train_cached(tasks, seed), seeds=seeds,
        split=cfg.pvi_split, report_split=cfg.eval_split, bootstrap_samples=cfg.bootstrap_samples,
        confidence=cfg.confidence, collapsed=collapsed, train_many=pipeline.train_cached_many,
        screen=cfg.recommend_screen,
    )
    if cfg.published_method == "recommended":
        for group in rec.grouping.groups:
            pipeline.train_cached(group, seeds[0], keep_model=True)  # reused when its model folder exists
    atomic_write_json(pipeline.out / "recommendation.json", rec.to_dict())
    return rec


def card_verdicts(recommendation: Recommendation | None, method: str, group: Sequence[str]) -> dict[str, str] | None:
    """What a group's model card says per task: the recommendation's verdicts (with their flags), or for another
    method's published group only the tasks flagged ``not learned``; ``None`` when there is nothing to say."""
    if recommendation is None:
        return None
    out = {}
    for t in group:
        row = recommendation.rows.get(t)
        flags = recommendation.flags.get(t) or []
        if method == "recommended" and row is not None:
            out[t] = "; ".join([row.verdict, *[f for f in flags if not f.startswith(row.verdict)]])
        elif flags:
            out[t] = "; ".join(flags)
    return out or None
