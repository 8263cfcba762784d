"""Single-task vs grouped multi-task: per-task scores, gains, negative transfer, parameter counts.

Input: the trained groups' results (``{group_name: {seed: train_result}}``, where a train result is what
:func:`hf_taskgroup.training.train.train_group` returns, without the trainer) and one or more
:class:`~hf_taskgroup.grouping.Grouping`. Output: one :class:`MethodEvaluation` per method, side by side.

Example::

    >>> table = evaluate_groupings({"pvi": grouping}, results, split="test")  # doctest: +SKIP
    >>> table["pvi"].rows["hoc"].gain                                          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hf_taskgroup.training.metrics import greater_is_better


def group_name(tasks: Sequence[str]) -> str:
    """A stable folder-safe name for a group: sorted task names plus a short hash."""
    names = sorted(tasks)
    digest = hashlib.sha256("\x1f".join(names).encode()).hexdigest()[:8]
    readable = "+".join(names)
    if len(readable) > 60:
        readable = readable[:60]
    return f"{readable}-{digest}"


@dataclass
class TaskRow:
    """One task under one method: its STL and MTL scores (mean and std over seeds) and the gain."""

    task: str
    metric: str
    group: list[str]
    stl_mean: float
    stl_std: float
    mtl_mean: float
    mtl_std: float
    gain: float  # mtl - stl, sign flipped for metrics where lower is better
    negative_transfer: bool
    seeds: int


@dataclass
class MethodEvaluation:
    """The evaluation of one grouping method."""

    method: str
    groups: list[list[str]]
    rows: dict[str, TaskRow]
    stl_parameters: int
    grouped_parameters: int
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_gain(self) -> float:
        return float(np.mean([r.gain for r in self.rows.values()])) if self.rows else 0.0

    @property
    def tasks_gained(self) -> int:
        return sum(r.gain > 0 for r in self.rows.values())

    @property
    def tasks_negative(self) -> int:
        return sum(r.negative_transfer for r in self.rows.values())

    @property
    def mean_score(self) -> float:
        return float(np.mean([r.mtl_mean for r in self.rows.values()])) if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "groups": self.groups,
            "rows": {t: asdict(r) for t, r in self.rows.items()},
            "stl_parameters": self.stl_parameters,
            "grouped_parameters": self.grouped_parameters,
            "mean_gain": self.mean_gain,
            "mean_score": self.mean_score,
            "tasks_gained": self.tasks_gained,
            "tasks_negative": self.tasks_negative,
            "cost": self.cost,
        }


def _metric_values(results: Mapping[int, Mapping[str, Any]], task: str, split: str) -> tuple[str, list[float]]:
    metric = None
    values = []
    for res in results.values():
        metric = res["primary"][task]
        value = res["tasks"][task].get(split, {}).get(metric)
        if value is None:
            raise KeyError(f"task {task!r}: no {metric!r} on split {split!r} in a trained result")
        values.append(float(value))
    if metric is None:
        raise KeyError(f"task {task!r}: no trained results")
    return metric, values


def evaluate_groupings(
    groupings: Mapping[str, Any],
    results: Mapping[str, Mapping[int, Mapping[str, Any]]],
    *,
    split: str = "test",
) -> dict[str, MethodEvaluation]:
    """Compare every task's score in its group with its single-task score, for each method.

    ``results[group_name(tasks)][seed]`` must exist for every group of every grouping and for every
    single task (the STL baseline). A task in several groups (overlapping groupings) is scored in
    ``grouping.group_of(task)``. Negative transfer: the grouped score is below the single-task one.
    """
    out = {}
    for method, grouping in groupings.items():
        rows = {}
        for task in grouping.tasks:
            group = grouping.group_of(task)
            stl_runs = _need(results, [task])
            mtl_runs = _need(results, group)
            metric, stl = _metric_values(stl_runs, task, split)
            _, mtl = _metric_values(mtl_runs, task, split)
            sign = 1.0 if greater_is_better(metric) else -1.0
            gain = sign * (float(np.mean(mtl)) - float(np.mean(stl)))
            rows[task] = TaskRow(
                task=task, metric=metric, group=sorted(group),
                stl_mean=float(np.mean(stl)), stl_std=float(np.std(stl)),
                mtl_mean=float(np.mean(mtl)), mtl_std=float(np.std(mtl)),
                gain=gain, negative_transfer=gain < 0, seeds=min(len(stl), len(mtl)),
            )
        stl_params = sum(_first(_need(results, [t]))["num_parameters"] for t in grouping.tasks)
        grouped_params = sum(_first(_need(results, g))["num_parameters"] for g in grouping.groups)
        out[method] = MethodEvaluation(
            method=method, groups=[list(g) for g in grouping.groups], rows=rows,
            stl_parameters=int(stl_params), grouped_parameters=int(grouped_params),
            cost=grouping.cost.to_dict() if hasattr(grouping.cost, "to_dict") else dict(grouping.cost),
        )
    return out


def _need(results: Mapping[str, Any], tasks: Sequence[str]) -> Mapping[int, Any]:
    key = group_name(tasks)
    if key not in results or not results[key]:
        raise KeyError(f"no trained results for group {sorted(tasks)} (key {key})")
    return results[key]


def _first(runs: Mapping[int, Any]) -> Mapping[str, Any]:
    return runs[sorted(runs)[0]]


def summary_table(evaluations: Mapping[str, MethodEvaluation]) -> list[dict[str, Any]]:
    """One row per method: groups, mean gain, tasks gained / hurt, parameters, cost."""
    rows = []
    for method, ev in evaluations.items():
        rows.append({
            "method": method,
            "groups": len(ev.groups),
            "mean_gain": ev.mean_gain,
            "tasks_gained": ev.tasks_gained,
            "tasks_negative": ev.tasks_negative,
            "mean_score": ev.mean_score,
            "parameters": ev.grouped_parameters,
            "stl_parameters": ev.stl_parameters,
            "trainings": ev.cost.get("trainings", 0),
            "seconds": ev.cost.get("seconds", 0.0),
        })
    return rows
