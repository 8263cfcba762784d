"""PVICallback: PVI of held-out datasets at the end of training (and optionally at each evaluation).

The callback runs its own unshuffled inference over the datasets it was given (Trainer's loaders
drop columns and shuffle). Under several processes each rank scores a shard of every dataset, the
outputs are gathered (``torch.distributed.all_gather_object``) and de-duplicated by example index,
so every rank ends with the same scores; only the main process writes files.

Example::

    >>> from hf_taskgroup.pvi import PVICallback
    >>> callback = PVICallback({"sst2": tokenized["sst2"]["validation"]}, null="analytic",
    ...                        train_datasets={"sst2": tokenized["sst2"]["train"]})          # doctest: +SKIP
    >>> trainer = MultiTaskTrainer(..., callbacks=[callback]); trainer.train()              # doctest: +SKIP
    >>> callback.results["sst2"].v_information()                                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from hf_taskgroup.pvi.inference import (
    INPUT_COLUMNS,
    TaskRows,
    base_model,
    null_model_output,
    predict_outputs,
    scores_from_outputs,
)
from hf_taskgroup.pvi.null import analytic_null
from hf_taskgroup.pvi.scores import PVICollapseWarning, PVIScores, residual_sigma
from hf_taskgroup.utils import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["PVICallback"]


class PVICallback(TrainerCallback):
    """Compute PVI on held-out datasets with the model being trained.

    Args:
        eval_datasets: ``{task: tokenized Dataset}`` (with ``labels``), or one dataset for a one-head model.
        null: the null side, one value for every task or ``{task: value}``. A value is ``"analytic"``
            (smoothed label frequencies of ``train_datasets[task]``), null logits / log-probabilities
            (``[C]`` or ``[L]``), a dict of ``compute_pvi_scores`` keywords (``{"null_logits": ...}`` or
            ``{"null_mean": m, "null_sigma": s}``), or a trained null model (a ``MultiTaskModel`` with the
            same heads), which is run ONCE per task on ``null_inputs[task]``. Token classification needs
            the tag prior (``"analytic"`` or its log-probabilities): a null input has no tokens to tag.
        train_datasets: ``{task: tokenized train Dataset}``: labels for the analytic null and the trained
            null's regression std, and rows for ``g_x``'s regression residual std (``sigma_x``).
        null_inputs: ``{task: {"input_ids": [...], ...}}``, the tokenized null input of each task
            (e.g. row 0 of ``suite.tokenize(tok, null_input=True)[task]["train"]``), for a trained null model.
        sigma_x: ``{task: float}``: ``g_x``'s residual std for regression tasks (else measured on train).
        output_dir: where the main process writes ``pvi/<tag>/<task>.json`` and ``pvi/<tag>/summary.json``
            (default: ``args.output_dir``); ``tag`` is ``final`` or ``step-<global step>``.
        on_evaluate: also compute at every evaluation (once per global step).
        batch_size: inference batch size (batches sorted by length, no grad, eval mode).
        smoothing: add-k smoothing of the analytic null.

    Attributes:
        results: ``{task: PVIScores}`` of the latest computation (the same on every rank).
        history: one ``{"tag", "step", "v_information": {task: bits}}`` per computation.

    Example::

        >>> cb = PVICallback(dev_dataset, null=np.log([0.7, 0.3]), on_evaluate=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        eval_datasets: Mapping[str, Any] | Any,
        *,
        null: Any = "analytic",
        train_datasets: Mapping[str, Any] | None = None,
        null_inputs: Mapping[str, Mapping[str, Any]] | None = None,
        sigma_x: Mapping[str, float] | None = None,
        output_dir: str | Path | None = None,
        on_evaluate: bool = False,
        batch_size: int = 64,
        smoothing: float = 1.0,
    ):
        self.eval_datasets = eval_datasets
        self.null = null
        self.train_datasets = dict(train_datasets or {})
        self.null_inputs = dict(null_inputs or {})
        self.sigma_x = dict(sigma_x or {})
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.compute_on_evaluate = on_evaluate
        self.batch_size = batch_size
        self.smoothing = smoothing
        self.results: dict[str, PVIScores] = {}
        self.history: list[dict[str, Any]] = []
        self._rows: dict[tuple[str, str], TaskRows] = {}
        self._last_step: int | None = None

    # ---- events -------------------------------------------------------------------------------------
    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.compute_on_evaluate and self._last_step != state.global_step:  # evaluate fires once per task
            self.compute(model, args, state, tag=f"step-{state.global_step}")

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.compute(model, args, state, tag="final")

    # ---- computation --------------------------------------------------------------------------------
    def compute(self, model: Any, args: Any, state: Any, *, tag: str = "final") -> dict[str, PVIScores]:
        """Score every dataset (sharded over ranks, gathered), store and (main process) write the results."""
        if model is None:
            raise ValueError("PVICallback needs the model (Trainer passes it to callbacks as `model`)")
        base = base_model(model)
        datasets = self._task_datasets(base)
        rank, world = int(getattr(args, "process_index", 0)), int(getattr(args, "world_size", 1))
        results = {}
        for task, dataset in datasets.items():
            ttype = base.config.tasks[task]["type"]
            rows = self._task_rows(task, "eval", dataset)
            outputs = self._gathered_outputs(model, task, rows, rank, world)
            null = self._null_for(task, ttype, base)
            sigma = self._sigma_x(model, task, ttype, rank, world)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PVICollapseWarning)
                scores = scores_from_outputs(ttype, outputs, rows.labels, null, sigma_x=sigma)
            if scores.collapsed:
                warnings.warn(f"PVICallback ({tag}): task {task!r}: g_x collapsed (one prediction for every example)",
                              PVICollapseWarning, stacklevel=2)
            results[task] = scores
        self.results = results
        self._last_step = state.global_step
        record = {"tag": tag, "step": state.global_step,
                  "v_information": {t: s.v_information() for t, s in results.items()}}
        self.history.append(record)
        state.log_history.append({"step": state.global_step,
                                  **{f"pvi_{t}_v_information": v for t, v in record["v_information"].items()}})
        if state.is_world_process_zero:
            self._write(args, tag, state.global_step, results)
        return results

    def _task_datasets(self, base: Any) -> dict[str, Any]:
        data = self.eval_datasets
        if not isinstance(data, Mapping):
            if len(base.config.task_names) != 1:
                raise ValueError(f"PVICallback got one dataset but the model has heads {base.config.task_names}; "
                                 "pass {task: dataset}")
            data = {base.config.task_names[0]: data}
        unknown = [t for t in data if t not in base.config.task_names]
        if unknown:
            raise ValueError(f"PVICallback: task(s) {unknown} have no head in the model ({base.config.task_names})")
        return dict(data)

    def _task_rows(self, task: str, role: str, dataset: Any) -> TaskRows:
        key = (task, role)
        if key not in self._rows:
            if "labels" not in dataset.column_names:
                raise ValueError(f"PVICallback: the {role} dataset of task {task!r} has no 'labels' column "
                                 f"(columns: {dataset.column_names}); tokenize it first")
            self._rows[key] = TaskRows.from_dataset(dataset, [*INPUT_COLUMNS, "labels"])
        return self._rows[key]

    def _gathered_outputs(self, model: Any, task: str, rows: TaskRows, rank: int, world: int) -> list[np.ndarray]:
        n = len(rows)
        order = list(range(n))
        order += order[: (-n) % world]  # pad like a DistributedSampler: every rank gets as many rows
        mine = order[rank::world]
        outputs = predict_outputs(model, rows.subset(mine), task=task, batch_size=self.batch_size, progress=False)
        pairs = list(zip(mine, outputs))
        if world > 1:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError(f"PVICallback: world_size is {world} but torch.distributed is not initialized")
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, pairs)
            pairs = [p for part in gathered for p in part]
        by_index: dict[int, np.ndarray] = {}
        for i, out in pairs:  # de-duplicate the padded rows
            by_index.setdefault(int(i), out)
        missing = [i for i in range(n) if i not in by_index]
        if missing:
            raise RuntimeError(f"PVICallback: task {task!r}: no output gathered for rows {missing[:5]}")
        return [by_index[i] for i in range(n)]

    def _null_value(self, task: str) -> Any:
        null = self.null
        if isinstance(null, Mapping) and task in null:
            return null[task]
        if isinstance(null, Mapping) and not ({"null_logits", "null_mean"} & set(null)):
            raise ValueError(f"PVICallback: no null given for task {task!r} (null has tasks {sorted(null)})")
        return null

    def _train_labels(self, task: str, what: str) -> list[Any]:
        if task not in self.train_datasets:
            raise ValueError(f"PVICallback: task {task!r} needs train_datasets[{task!r}] for {what}")
        return self._task_rows(task, "train", self.train_datasets[task]).labels

    def _null_for(self, task: str, ttype: str, base: Any) -> dict[str, Any]:
        value = self._null_value(task)
        if isinstance(value, str):
            if value != "analytic":
                raise ValueError(f"PVICallback: unknown null {value!r} for task {task!r}; expected 'analytic', "
                                 "logits, a dict or a trained null model")
            labels = self._train_labels(task, "the analytic null")
            if ttype == "multilabel":
                labels = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64)
            return analytic_null(ttype, labels, num_labels=base.config.tasks[task]["num_labels"],
                                 smoothing=self.smoothing)
        if isinstance(value, torch.nn.Module):
            if ttype == "token_classification":
                raise ValueError(f"PVICallback: task {task!r} is token classification; its null is the tag prior "
                                 "(null='analytic' or its log-probabilities), not a null model")
            if task not in self.null_inputs:
                raise ValueError(f"PVICallback: a trained null model needs null_inputs[{task!r}] (the tokenized "
                                 "empty input, e.g. row 0 of suite.tokenize(tok, null_input=True)[task]['train'])")
            out = null_model_output(value, self.null_inputs[task], task=task)
            if ttype == "regression":
                labels = np.asarray(self._train_labels(task, "the null model's residual std"), dtype=np.float64)
                return {"null_mean": float(out[0]), "null_sigma": residual_sigma(np.full(len(labels), out[0]), labels)}
            return {"null_logits": out}
        if isinstance(value, Mapping):
            return dict(value)
        return {"null_logits": np.asarray(value, dtype=np.float64)}

    def _sigma_x(self, model: Any, task: str, ttype: str, rank: int, world: int) -> float | None:
        if ttype != "regression":
            return None
        if task in self.sigma_x:
            return float(self.sigma_x[task])
        if task not in self.train_datasets:
            raise ValueError(f"PVICallback: regression task {task!r} needs sigma_x[{task!r}] or "
                             f"train_datasets[{task!r}] (g_x's residual std on its training data)")
        rows = self._task_rows(task, "train", self.train_datasets[task])
        preds = self._gathered_outputs(model, task, rows, rank, world)
        return residual_sigma(np.asarray(preds, dtype=np.float64).reshape(-1), rows.labels)

    def _write(self, args: Any, tag: str, step: int, results: Mapping[str, PVIScores]) -> None:
        root = (self.output_dir or Path(args.output_dir)) / "pvi" / tag
        for task, scores in results.items():
            atomic_write_json(root / f"{task}.json", _finite({"task": task, "step": step, "summary": scores.summary(),
                                                               "columns": scores.to_columns()}))
        atomic_write_json(root / "summary.json",
                          _finite({"step": step, "tasks": {t: s.summary() for t, s in results.items()}}))
        logger.info("PVICallback: wrote PVI of %s to %s", ", ".join(results), root)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
