"""The group evaluator of NLP task suites: train a group with ``train_group``, cache per-task results on disk.

:func:`make_suite_evaluator` returns a :class:`~hf_taskgroup.grouping.evaluators.base.CachedEvaluator` whose
``train_fn(tasks)`` trains the tasks together (one ``MultiTaskModel``, :class:`TrainSettings`) and reports,
per task, the loss and metrics of the evaluation split (``loss``, ``accuracy``, ...) and those of the test
split prefixed with ``test_`` (``test_loss``, ``test_accuracy``, ...). It is what ``exhaustive``,
``affinity_search`` and ``surrogate`` use on NLP suites. The cache key covers the suite (task specs and
in-memory data fingerprints), the settings, the evaluation split and the seed.

In ``frozen`` mode every training of the process shares encoder features through the process-wide
:class:`~hf_taskgroup.training.features.FeatureCache`: a task is encoded once per split, whatever group it is in.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hf_taskgroup.artifacts import data_fingerprint, model_fingerprint, tokenizer_fingerprint
from hf_taskgroup.grouping.evaluators.base import CachedEvaluator, MetricObjective

logger = logging.getLogger(__name__)

ModelFactory = Callable[[dict[str, Any]], Any]  # model_factory(task_infos) -> MultiTaskModel


def suite_fingerprint(suite: Any, tasks: Sequence[str] | None = None) -> dict[str, Any]:
    """A JSON-able identity of a suite's tasks: their specs, their data content
    (:func:`~hf_taskgroup.artifacts.data_fingerprint`: file bytes, or the rows of in-memory data).

    >>> from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
    >>> suite_fingerprint(TaskSuite([TaskSpec(name="a", data_files={"train": "a.jsonl"})], name="s"))["name"]
    's'
    """
    names = list(tasks) if tasks is not None else list(suite.task_names)
    specs = {}
    for name in names:
        spec = suite[name]
        entry = spec.to_dict()
        entry["data_content"] = data_fingerprint(spec)  # file bytes or rows: edited data is a new suite
        specs[name] = entry
    return {"name": suite.name, "tasks": specs}


def _split_results(result: dict[str, Any], task: str, eval_split: str) -> dict[str, float]:
    per_split = result["tasks"][task]
    if eval_split not in per_split:
        raise ValueError(f"task {task!r} has no {eval_split!r} split to evaluate on (splits: {sorted(per_split)})")
    out = {k: float(v) for k, v in per_split[eval_split].items()}
    for split, metrics in per_split.items():
        if split != eval_split:
            prefix = "test_" if split == "test" else f"{split}_"
            out.update({f"{prefix}{k}": float(v) for k, v in metrics.items()})
    return out


def make_suite_evaluator(
    suite: Any,
    settings: Any,
    cache_dir: str | Path | None,
    *,
    eval_split: str = "validation",
    seed: int | None = None,
    tokenizer: Any = None,
    model_factory: ModelFactory | None = None,
    objective: str = "loss",
    executor: Any = None,
) -> CachedEvaluator | MetricObjective:
    """A cached evaluator that trains groups of ``suite``'s tasks with ``train_group(suite, tasks, settings)``.

    ``evaluator(["a", "b"])`` -> ``{"a": {"loss": <eval_split loss>, <metric>: ..., "test_loss": ...,
    "test_<metric>": ...}, "b": {...}}``. ``seed`` replaces ``settings.seed`` when given (it is the training
    seed and part of the cache key). ``model_factory(task_infos)`` (``{task: {"type", "num_labels", "id2label"}}``
    of the group, as ``TaskSuite.task_infos``) builds the model of a group (default: the settings' encoder with
    one head per task); a custom factory is not part of the cache key.

    ``objective="metric"`` returns a :class:`~hf_taskgroup.grouping.evaluators.base.MetricObjective` over the
    same cache: each task's ``loss`` becomes ``1 - <its primary validation metric>`` (accuracy, micro-F1,
    Pearson r, entity F1), so methods minimise what the tasks are scored by rather than a sum of
    incomparable losses (recommended for suites that mix task types; see docs/benchmarks.md).

    ``executor`` (``"serial"``, ``"ray"`` or an :class:`~hf_taskgroup.executor.Executor`) runs the trainings of
    ``evaluate_many``; ``train_fn`` (with the suite, tokenizer and factory it captures) travels to Ray workers
    through the object store (see docs/ray.md).

    Example::

        >>> ev = make_suite_evaluator(suite, TrainSettings(finetune="frozen"), "cache/groups")  # doctest: +SKIP
        >>> ev(["pubmedqa", "hoc"])["hoc"]["loss"], ev.trainings                                # doctest: +SKIP
    """
    from hf_taskgroup.training.train import train_group

    if seed is not None and int(seed) != settings.seed:
        settings = dataclasses.replace(settings, seed=int(seed))
    from hf_taskgroup.data.tasks import canonical_split

    eval_split = canonical_split(eval_split)
    known = set(suite.task_names)
    splits = tuple(dict.fromkeys([eval_split, "test"]))

    def train_fn(tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ValueError(f"task(s) {unknown} are not in suite {suite.name!r} (tasks: {sorted(known)})")
        model = model_factory(suite.subset(list(tasks)).task_infos()) if model_factory is not None else None
        with tempfile.TemporaryDirectory(prefix="hf_taskgroup_eval_") as tmp:
            result = train_group(suite, list(tasks), settings, output_dir=tmp, eval_splits=splits,
                                 tokenizer=tokenizer, model=model)
        result.pop("trainer", None)
        logger.info("trained group %s in %.1fs", list(tasks), result["train_seconds"])
        return {t: _split_results(result, t, eval_split) for t in tasks}

    if objective not in ("loss", "metric"):
        raise ValueError(f"objective must be 'loss' or 'metric', got {objective!r}")
    key_settings = {"train": settings.to_dict(), "suite": suite_fingerprint(suite), "eval_split": eval_split,
                    # the encoder's files and the tokenizer (a custom model_factory is identified by the settings)
                    "inputs": {"model": None if model_factory is not None else model_fingerprint(settings.model_name_or_path),
                               "tokenizer": tokenizer_fingerprint(tokenizer)}}
    evaluator = CachedEvaluator(train_fn, cache_dir, settings=key_settings, seed=settings.seed, executor=executor)
    if objective == "loss":
        return evaluator
    from hf_taskgroup.training.metrics import primary_metric

    return MetricObjective(evaluator, {t: primary_metric(suite[t].type) for t in suite.task_names})
