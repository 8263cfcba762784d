"""``affinity_search``: predictor-gated randomized partition search (Ayman, Mukhopadhyay, Laszka; arXiv 2310.16241).

1. Train every task alone (STL) and, unless ``pairwise_gains`` is given, every pair, giving the pairwise
   gains ``Change(i, j)`` (B.1).
2. Train the groups of ``initial_partitions`` random partitions (uniform over set partitions); start from
   the best partition seen (the all-singletons partition included) and fit the gain predictor on the
   groups of size >= 2 of those partitions.
3. Repeat: move one random task to another or a new group (B.4 mutation); predict the total loss of the
   candidate (known groups: their actual loss; new groups: ``sum_t L_STL(t) * (1 - predicted gain)``);
   train the new groups with probability 0.99 if the prediction beats the current total, else 0.10 /
   0.05 / 0.005 once 0 / 50 / 100 candidates were evaluated (quick reject); accept the evaluated
   candidate with probability ``min(1, exp(K (old - new)))`` (Metropolis, ``K = 5``); refit the predictor
   from scratch every 5 newly evaluated groups.

Budget: ``budget`` caps the number of *distinct groups the search evaluates* through the evaluator,
counting every one -- STL, pairs, initial partitions and candidates -- once, whether the evaluator trains
it or answers from its cache. So the evaluator never runs more than ``budget`` real trainings for the
search, and the search's path does not depend on what the cache already holds. A candidate whose new
groups do not fit in the remaining budget ends the search.

Resuming: with ``state_dir``, the whole search state (phase, partitions, evaluated groups and their
losses, RNG state, predictor data, counters, history) is written atomically (temp file + ``os.replace``)
after every iteration that trains a group, after each initial partition and at least every
``SAVE_EVERY`` iterations. Iterations in between train nothing and only draw random numbers, so a killed
search restarts from the last state, replays them identically and -- with a deterministic evaluator --
ends with the same result as an uninterrupted run. The predictor is refit from the saved rows with the
saved seed on resume. Groups trained after the last save are answered by the evaluator's cache.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.artifacts import stable_hash
from hf_taskgroup.grouping.evaluators.base import GroupEvaluator, group_gain, prefetch
from hf_taskgroup.grouping.methods.baselines import sample_partition
from hf_taskgroup.grouping.methods.search_predictor import (
    DEFAULT_FEATURES,
    FEATURE_NAMES,
    GainPredictor,
    GroupFeaturizer,
)
from hf_taskgroup.grouping.registry import register_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.utils import atomic_write_text

__all__ = [
    "QUICK_REJECT_PROBABILITIES",
    "QUICK_REJECT_THRESHOLDS",
    "affinity_search",
    "metropolis_acceptance",
    "mutate_partition",
    "quick_reject_probability",
]

#: Probability of training a candidate: (predicted better, else before 50, before 100, after) -- B.4.
QUICK_REJECT_PROBABILITIES = (0.99, 0.10, 0.05, 0.005)
#: Numbers of evaluated candidates at which the "predicted worse" probability drops -- B.4.
QUICK_REJECT_THRESHOLDS = (50, 100)
STATE_VERSION = 1
#: Iterations that train nothing only draw random numbers; the state is saved after every iteration that
#: trains and at least every SAVE_EVERY iterations (a resumed search replays the ones in between identically).
SAVE_EVERY = 100


def quick_reject_probability(
    predicted_better: bool,
    evaluated: int,
    probabilities: Sequence[float] = QUICK_REJECT_PROBABILITIES,
    thresholds: Sequence[int] = QUICK_REJECT_THRESHOLDS,
) -> float:
    """Probability of training a candidate (B.4 quick reject).

    Example:
        >>> quick_reject_probability(True, 500), quick_reject_probability(False, 0)
        (0.99, 0.1)
        >>> quick_reject_probability(False, 50), quick_reject_probability(False, 100)
        (0.05, 0.005)
    """
    if predicted_better:
        return float(probabilities[0])
    if evaluated < thresholds[0]:
        return float(probabilities[1])
    if evaluated < thresholds[1]:
        return float(probabilities[2])
    return float(probabilities[3])


def metropolis_acceptance(old_total: float, new_total: float, temperature_constant: float = 5.0) -> float:
    """``min(1, exp(K (old - new)))``: always accept a lower total loss, sometimes a higher one.

    Example:
        >>> metropolis_acceptance(2.0, 1.5), round(metropolis_acceptance(1.0, 1.2), 4)
        (1.0, 0.3679)
    """
    delta = temperature_constant * (old_total - new_total)
    return 1.0 if delta >= 0 else math.exp(delta)


def _canonical(partition: Sequence[Sequence[str]], order: Mapping[str, int]) -> list[list[str]]:
    groups = [sorted(g, key=order.__getitem__) for g in partition if g]
    return sorted(groups, key=lambda g: order[g[0]])


def mutate_partition(
    partition: Sequence[Sequence[str]], rng: np.random.Generator, order: Mapping[str, int] | None = None
) -> tuple[list[list[str]], list[list[str]]]:
    """Move one random task (B.4): a singleton joins a random other group; otherwise the task moves to a
    uniformly random other group index, where index ``len(partition)`` means a new group.

    Returns ``(candidate, changed_groups)`` with the candidate in canonical order (groups sorted by ``order``).

    Example:
        >>> cand, changed = mutate_partition([["a", "b"], ["c"]], np.random.default_rng(0))
        >>> sorted(t for g in cand for t in g), all(g in cand for g in changed)
        (['a', 'b', 'c'], True)
    """
    groups = [list(g) for g in partition]
    tasks = [t for g in groups for t in g]
    order = dict(order) if order is not None else {t: i for i, t in enumerate(sorted(tasks))}
    if len(tasks) < 2:
        return _canonical(groups, order), []
    task = tasks[int(rng.integers(len(tasks)))]
    source = next(i for i, g in enumerate(groups) if task in g)
    if len(groups[source]) == 1:
        others = [i for i in range(len(groups)) if i != source]
        target = others[int(rng.integers(len(others)))]
        groups[target].append(task)
        changed = [groups[target]]
        del groups[source]
    else:
        choices = [i for i in range(len(groups) + 1) if i != source]
        target = choices[int(rng.integers(len(choices)))]
        groups[source].remove(task)
        if target == len(groups):
            groups.append([task])
        else:
            groups[target].append(task)
        changed = [groups[source], groups[target]]
    canonical = _canonical(groups, order)
    return canonical, [sorted(g, key=order.__getitem__) for g in changed]


def _key(group: Sequence[str]) -> str:
    return json.dumps(sorted(group))


class _Search:
    """Mutable search state with JSON (de)serialisation; see :func:`affinity_search`."""

    def __init__(self, tasks: list[str], evaluator: GroupEvaluator, budget: int, seed: int,
                 state_path: Path | None, fingerprint: str) -> None:
        self.tasks = tasks
        self.order = {t: i for i, t in enumerate(tasks)}
        self.evaluator = evaluator
        self.budget = budget
        self.state_path = state_path
        self.fingerprint = fingerprint
        self.rng = np.random.default_rng(seed)
        self.phase = "stl"
        self.evaluated: dict[str, dict[str, float]] = {}  # group key -> per-task validation loss
        self.initial: list[dict[str, Any]] = []  # {"groups": ..., "total": ...}
        self.current: list[list[str]] = [[t] for t in tasks]
        self.current_total = 0.0
        self.best: list[list[str]] = [[t] for t in tasks]
        self.best_total = math.inf
        self.rows: list[str] = []  # predictor data: group keys (features/targets recomputed from them)
        self.rows_fitted = 0
        self.fits = 0
        self.iteration = 0
        self.candidates_evaluated = 0
        self.accepted = 0
        self.history: list[float] = []
        self.predictions: list[list[float]] = []  # [predicted total, actual total] per evaluated candidate
        self.stop_reason = ""

    # -------------------------------------------------------------- evaluation bookkeeping
    def loss(self, group: Sequence[str]) -> float:
        return float(sum(self.evaluated[_key(group)].values()))

    def unknown(self, groups: Sequence[Sequence[str]]) -> list[list[str]]:
        seen: set[str] = set()
        out = []
        for g in groups:
            k = _key(g)
            if k not in self.evaluated and k not in seen:
                seen.add(k)
                out.append(list(g))
        return out

    def fits_budget(self, groups: Sequence[Sequence[str]]) -> bool:
        return len(self.evaluated) + len(self.unknown(groups)) <= self.budget

    def evaluate(self, groups: Sequence[Sequence[str]]) -> None:
        prefetch(self.evaluator, self.unknown(groups))  # in parallel when the evaluator's executor can
        for g in self.unknown(groups):
            result = self.evaluator(list(g))
            losses = {}
            for t in g:
                if t not in result or "loss" not in result[t]:
                    raise ValueError(f"evaluator returned no 'loss' for task {t!r} in group {list(g)}")
                losses[t] = float(result[t]["loss"])
            self.evaluated[_key(g)] = losses

    def total(self, partition: Sequence[Sequence[str]]) -> float:
        return float(sum(self.loss(g) for g in partition))

    def consider_best(self, partition: list[list[str]], total: float) -> None:
        if total < self.best_total - 1e-12:
            self.best, self.best_total = [list(g) for g in partition], total

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "phase", "evaluated", "initial", "current", "current_total", "best", "best_total", "rows",
            "rows_fitted", "fits", "iteration", "candidates_evaluated", "accepted", "history", "predictions",
            "stop_reason")} | {"version": STATE_VERSION, "fingerprint": self.fingerprint,
                               "rng": self.rng.bit_generator.state}

    def save(self) -> None:
        if self.state_path is not None:
            state = self.to_dict()
            if not math.isfinite(state["best_total"]):
                state["best_total"] = None
            atomic_write_text(self.state_path, json.dumps(state, separators=(",", ":")))

    def load(self) -> bool:
        if self.state_path is None or not self.state_path.exists():
            return False
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"affinity_search: cannot read state file {self.state_path} ({err}); "
                             "delete it to start the search again") from err
        if state.get("fingerprint") != self.fingerprint or state.get("version") != STATE_VERSION:
            raise ValueError(f"affinity_search: state file {self.state_path} belongs to another search")
        for k, v in state.items():
            if k not in ("version", "fingerprint", "rng"):
                setattr(self, k, v)
        if self.best_total is None:
            self.best_total = math.inf
        self.rng.bit_generator.state = state["rng"]
        return True


def _fingerprint(payload: Mapping[str, Any]) -> str:
    return stable_hash(payload, length=64)


@register_method(
    "affinity_search",
    needs=("evaluator",),
    description="Ayman et al. 2023: gain-predictor-gated randomized search over partitions, within a training budget",
)
def affinity_search(
    tasks: Sequence[str],
    *,
    evaluator: GroupEvaluator,
    pairwise_gains: np.ndarray | None = None,
    budget: int | None = None,
    initial_partitions: int = 10,
    task_sizes: Mapping[str, float] | None = None,
    task_target_variance: Mapping[str, float] | None = None,
    task_target_mean: Mapping[str, float] | None = None,
    predictor_features: Sequence[str] = DEFAULT_FEATURES,
    predictor_epochs: int = 100,
    retrain_every: int = 5,
    temperature_constant: float = 5.0,
    max_iterations: int | None = None,
    state_dir: str | Path | None = None,
    seed: int = 0,
) -> Grouping:
    """Predictor-gated randomized search for the partition with the lowest total validation loss.

    Args:
        evaluator: ``evaluator(tasks) -> {task: {"loss": ...}}``, ideally a ``CachedEvaluator``.
        pairwise_gains: ``Change(i, j)`` over ``tasks`` (or any cheaper affinity, e.g. TAG); when None the
            pairs are trained through the evaluator (``n(n-1)/2`` evaluations, counted in the budget).
        budget: most distinct groups evaluated, STL and pairs included (see the module docstring). Default:
            STL + pairs + ``20 * n``. Must cover STL (and pairs when they are trained).
        initial_partitions: random partitions trained up front (predictor's first data; start point).
        task_sizes, task_target_variance, task_target_mean: per-task training-set size, target variance
            and mean for the group features ``group_dataset_size`` and ``group_variance`` (constant if absent).
        predictor_features: names from ``FEATURE_NAMES``; default the paper's final five.
        predictor_epochs, retrain_every: predictor training epochs; refit after this many new groups.
        temperature_constant: ``K`` of the Metropolis rule ``min(1, exp(K (old - new)))``.
        max_iterations: stop after this many mutations (default ``50 * budget``; guards against a search
            whose candidates are all rejected or already known).
        state_dir: folder for the resumable state file (None: no state file).

    Returns a Grouping with the best partition seen (by actual total loss); ``objective`` is its total
    validation loss; ``scores`` holds ``pairwise_gains``, ``stl_loss``, ``history`` (current total after
    each evaluated candidate), ``initial_totals``, ``evaluations`` and ``cost.trainings`` the real trainings run.

    Example:
        >>> from hf_taskgroup.grouping.synthetic import planted_evaluator
        >>> ev = planted_evaluator([["a", "b"], ["c", "d"]])
        >>> g = affinity_search(["a", "b", "c", "d"], evaluator=ev, budget=20, predictor_epochs=5)
        >>> ev.trainings <= 20
        True
    """
    start = time.perf_counter()
    tasks = [str(t) for t in tasks]
    n = len(tasks)
    unknown_features = [f for f in predictor_features if f not in FEATURE_NAMES]
    if unknown_features:
        raise ValueError(f"unknown predictor feature(s) {unknown_features}; choose from {FEATURE_NAMES}")
    gains_given = pairwise_gains is not None
    if gains_given:
        gains = np.asarray(pairwise_gains, dtype=float)
        if gains.shape != (n, n) or not np.isfinite(gains).all():
            raise ValueError(f"pairwise_gains must be a finite {n}x{n} matrix over tasks {tasks}, got shape {gains.shape}")
    n_pairs = 0 if gains_given else n * (n - 1) // 2
    minimum = n + n_pairs
    budget = minimum + 20 * n if budget is None else int(budget)
    if budget < minimum:
        raise ValueError(
            f"affinity_search: budget={budget} cannot cover the {n} single-task trainings"
            + ("" if gains_given else f" and {n_pairs} pair trainings") + f" (needs >= {minimum}); raise the budget"
            + ("" if gains_given else " or pass pairwise_gains"))
    if initial_partitions < 0 or retrain_every < 1 or predictor_epochs < 1:
        raise ValueError("initial_partitions must be >= 0, retrain_every and predictor_epochs >= 1")
    max_iterations = 50 * budget if max_iterations is None else int(max_iterations)
    params = {"budget": budget, "initial_partitions": initial_partitions, "predictor_features": list(predictor_features),
              "predictor_epochs": predictor_epochs, "retrain_every": retrain_every,
              "temperature_constant": temperature_constant, "max_iterations": max_iterations, "seed": seed,
              "pairwise_gains": "given" if gains_given else "trained pairs",
              "quick_reject": {"probabilities": list(QUICK_REJECT_PROBABILITIES),
                               "thresholds": list(QUICK_REJECT_THRESHOLDS)}}
    fingerprint = _fingerprint({"tasks": tasks, "params": params,
                                "gains": gains.round(12).tolist() if gains_given else None,
                                "sizes": task_sizes, "var": task_target_variance, "mean": task_target_mean})
    state_path = Path(state_dir) / f"affinity_search-{fingerprint[:16]}.json" if state_dir is not None else None
    trainings_before = int(getattr(evaluator, "trainings", 0) or 0)
    s = _Search(tasks, evaluator, budget, seed, state_path, fingerprint)
    s.load()

    # 1. single-task losses and pairwise gains
    s.evaluate([[t] for t in tasks])
    stl = {t: s.loss([t]) for t in tasks}
    if not gains_given:
        s.evaluate([[a, b] for a, b in combinations(tasks, 2)])
        gains = np.zeros((n, n))
        for i, j in combinations(range(n), 2):
            gains[i, j] = gains[j, i] = group_gain(stl, s.evaluated[_key([tasks[i], tasks[j]])])
    if s.phase == "stl":
        s.current, s.current_total = [[t] for t in tasks], sum(stl.values())
        s.consider_best(s.current, s.current_total)
        s.phase = "initial"
        s.save()

    featurizer = GroupFeaturizer(tasks, gains, predictor_features, task_sizes, task_target_variance,
                                 task_target_mean)
    predictor = GainPredictor(epochs=predictor_epochs)

    def refit() -> None:
        rows = [json.loads(k) for k in s.rows[: s.rows_fitted]]
        predictor.fit(featurizer.matrix(rows), np.array([group_gain(stl, s.evaluated[_key(g)]) for g in rows]),
                      seed=seed * 1_000_003 + s.fits)

    def add_rows(groups: Sequence[Sequence[str]]) -> None:
        for g in groups:
            if len(g) >= 2 and _key(g) not in s.rows:
                s.rows.append(_key(g))

    # 2. initial random partitions
    while s.phase == "initial" and len(s.initial) < initial_partitions:
        blocks = sample_partition(n, s.rng)
        partition = _canonical([[tasks[i] for i in b] for b in blocks], s.order)
        if not s.fits_budget(partition):
            s.stop_reason = "budget exhausted during the initial partitions"
            break
        s.evaluate(partition)
        total = s.total(partition)
        s.initial.append({"groups": partition, "total": total})
        add_rows(partition)
        if total < s.current_total:
            s.current, s.current_total = partition, total
        s.consider_best(partition, total)
        s.save()
    if s.phase == "initial":
        s.phase = "search"
        s.rows_fitted = len(s.rows)
        s.fits += 1
        s.save()
    if s.rows_fitted >= 2:
        refit()  # on resume: the same fit as before the interruption (same rows, same seed)

    # 3. randomized search with quick reject and Metropolis acceptance
    while s.phase == "search" and n >= 2:
        if len(s.evaluated) >= budget:
            s.stop_reason = s.stop_reason or "budget exhausted"
            break
        if s.iteration >= max_iterations:
            s.stop_reason = "max_iterations reached"
            break
        candidate, _changed = mutate_partition(s.current, s.rng, s.order)
        new_groups = s.unknown(candidate)
        if not new_groups:
            new_total = s.total(candidate)
            evaluated_now = True
        else:
            predicted = sum(s.loss(g) for g in candidate if _key(g) in s.evaluated) + sum(
                sum(stl[t] for t in g) * (1.0 - c)
                for g, c in zip(new_groups, _predict(predictor, featurizer, new_groups)))
            p_train = quick_reject_probability(predicted < s.current_total, s.candidates_evaluated)
            evaluated_now = bool(s.rng.random() < p_train)
            if evaluated_now:
                if not s.fits_budget(candidate):
                    s.stop_reason = "budget exhausted (the next candidate needs more trainings than remain)"
                    break
                s.evaluate(new_groups)
                s.candidates_evaluated += 1
                new_total = s.total(candidate)
                s.predictions.append([float(predicted), new_total])
                add_rows(new_groups)
        if evaluated_now:
            s.consider_best(candidate, new_total)
            if s.rng.random() < metropolis_acceptance(s.current_total, new_total, temperature_constant):
                s.current, s.current_total = candidate, new_total
                s.accepted += 1
        if len(s.rows) - s.rows_fitted >= retrain_every:
            s.rows_fitted = len(s.rows)
            s.fits += 1
            refit()
        s.iteration += 1
        if evaluated_now and new_groups:
            s.history.append(s.current_total)
        if (evaluated_now and new_groups) or s.iteration % SAVE_EVERY == 0:
            s.save()
    if s.phase == "search":
        s.phase = "done"
        s.save()

    trainings = int(getattr(evaluator, "trainings", 0) or 0) - trainings_before
    return Grouping(
        groups=[list(g) for g in s.best],
        method="affinity_search",
        tasks=tasks,
        params=params,
        scores={
            "pairwise_gains": gains.tolist(),
            "stl_loss": stl,
            "best_total": s.best_total,
            "initial_totals": [p["total"] for p in s.initial],
            "history": s.history,
            "predictions": s.predictions,
            "evaluations": len(s.evaluated),
            "iterations": s.iteration,
            "candidates_evaluated": s.candidates_evaluated,
            "accepted": s.accepted,
            "predictor_fits": s.fits,
            "group_losses": {"+".join(json.loads(k)): sum(v.values()) for k, v in s.evaluated.items()
                             if len(v) >= 3},
            "stop_reason": s.stop_reason or "search finished",
        },
        objective=s.best_total,
        cost=GroupingCost(trainings=max(trainings, 0), seconds=time.perf_counter() - start),
        provenance={"state_file": str(state_path) if state_path is not None else None},
    )


def _predict(predictor: GainPredictor, featurizer: GroupFeaturizer, groups: Sequence[Sequence[str]]) -> np.ndarray:
    """Predicted gains; before the predictor has data, the mean pairwise gain of each group (HOA-like)."""
    if predictor.fitted:
        return predictor.predict(featurizer.matrix(groups))
    return np.array([featurizer.mean_pair_gain(g) for g in groups])
