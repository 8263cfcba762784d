"""Train the two models of PVI for one task and score held-out rows with them.

:class:`TaskFitter` builds a fresh single-head :class:`~hf_taskgroup.training.modeling.MultiTaskModel`, trains
``g_x`` on ``(x, y)`` rows with :class:`~hf_taskgroup.training.trainer.MultiTaskTrainer` (quiet), and gets the
null side: a null model of the same family trained the same way on ``(null, y)`` rows and run ONCE on
the null input, or the analytic label prior. In ``frozen`` mode the encoder is run once per split
(cached by encoder fingerprint) and both training and scoring read the cached features; in ``partial``
mode the lower layers run once per split and both read their cached token states (memory-mapped).

Example::

    >>> fitter = TaskFitter(task="sst2", task_type="classification", infos=infos, settings=TrainSettings(),
    ...                     null_mode="trained", tokenizer=tok, null_input=null_row)   # doctest: +SKIP
    >>> fit = fitter.fit(rows["train"])                                               # doctest: +SKIP
    >>> scores = fitter.score(fit, "test", rows["test"])                              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers.trainer_callback import PrinterCallback

from hf_taskgroup.pvi.inference import (
    INPUT_COLUMNS,
    TaskRows,
    base_model,
    encoder_features,
    null_model_output,
    predict_outputs,
)
from hf_taskgroup.pvi.null import analytic_null
from hf_taskgroup.pvi.scores import PVICollapseWarning, PVIScores, residual_sigma
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.features import encoder_fingerprint
from hf_taskgroup.training.train import TrainSettings, default_model_path
from hf_taskgroup.training.trainer import MultiTaskTrainer

logger = logging.getLogger(__name__)

ModelFactory = Callable[[dict, str], Any]

__all__ = ["Fit", "ModelFactory", "TaskFitter"]


@dataclass
class Fit:
    """The models fitted on one training set: trained ``g_x``, the null side, and what they touched.

    ``null`` holds the null's keyword arguments for :func:`~hf_taskgroup.pvi.scores.compute_pvi_scores`;
    ``train_row_ids`` are the train rows both models were trained on; ``scored`` maps split -> the rows
    scored with this fit; ``null_forward_passes`` counts the null model's forward passes at scoring time.
    """

    role: str
    model: Any
    null: dict[str, Any]
    sigma_x: float | None
    train_row_ids: list[int]
    null_forward_passes: int = 0
    scored: dict[str, list[int]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"role": self.role, "train_row_ids": list(self.train_row_ids),
                "scored": {k: list(v) for k, v in self.scored.items()},
                "null_forward_passes": self.null_forward_passes}


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide the weight-loading bar and report (e.g. the unused pooler) of the many models PVI builds."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class _RowsTrainer(MultiTaskTrainer):
    """MultiTaskTrainer over in-memory :class:`TaskRows` that already carry ``task_ids`` (and features)."""

    def prepare_task_dataset(self, task: str, dataset: Any, split: str) -> Any:
        return dataset


class TaskFitter:
    """Builds, trains and applies the PVI models of one task (see the module docstring).

    Args:
        task, task_type, infos: the task, its type and ``{task: info}`` for the head.
        settings: how to train (:class:`~hf_taskgroup.training.train.TrainSettings`; ``finetune`` full|lora|frozen).
        null_mode: ``"trained"`` or ``"analytic"`` (token classification always uses the analytic tag prior).
        tokenizer: pads token batches during training.
        null_input: the tokenized null input (``input_ids``, ...), needed for a trained null.
        model_factory: ``model_factory(task_infos, role) -> MultiTaskModel`` instead of loading
            ``settings.model_name_or_path``; ``role`` is ``"x"``/``"null"`` plus ``":fold<k>"`` in k-fold runs.
        smoothing: add-k smoothing of the analytic null.
        batch_size: scoring batch size.
        training_args: extra ``MultiTaskTrainingArguments`` fields.

    Example::

        >>> fitter = TaskFitter(task="a", task_type="regression", infos=infos, settings=TrainSettings(),
        ...                     null_mode="analytic", tokenizer=tok)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        task: str,
        task_type: str,
        infos: Mapping[str, Any],
        settings: TrainSettings,
        null_mode: str,
        tokenizer: Any,
        null_input: Mapping[str, Any] | None = None,
        model_factory: ModelFactory | None = None,
        smoothing: float = 1.0,
        batch_size: int = 64,
        training_args: Mapping[str, Any] | None = None,
        progress: bool = True,
    ):
        self.task, self.task_type, self.infos = task, task_type, {task: dict(infos[task])}
        self.settings = settings
        self.null_mode = "analytic" if task_type == "token_classification" else null_mode
        self.tokenizer = tokenizer
        self.null_input = {k: v for k, v in (null_input or {}).items() if k in INPUT_COLUMNS}
        self.model_factory = model_factory
        self.smoothing = smoothing
        self.batch_size = batch_size
        self.training_args = dict(training_args or {})
        self.progress = progress
        self.frozen = settings.finetune == "frozen"
        self.partial = settings.finetune == "partial"
        self.token_level = task_type == "token_classification"
        self.pad_token_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.trainings = 0
        self._features: dict[tuple[str, str], list[np.ndarray]] = {}
        if self.null_mode == "trained" and not self.null_input:
            raise ValueError(f"task {task!r}: a trained null model needs the tokenized null input")

    # ---- models -----------------------------------------------------------------------------------
    def build(self, role: str) -> Any:
        """A fresh model (seeded, so every build has the same initial weights)."""
        torch.manual_seed(self.settings.seed)
        if self.model_factory is not None:
            return self.model_factory(self.infos, role)
        from hf_taskgroup.training.modeling import MultiTaskModel

        path = self.settings.model_name_or_path or default_model_path()
        with _quiet_loading():
            return MultiTaskModel.from_encoder(path, self.infos, pooling=self.settings.pooling,
                                               trunk_hidden_sizes=self.settings.trunk_hidden_sizes)

    def train(self, model: Any, rows: TaskRows) -> Any:
        """Train ``model`` on ``rows`` with a quiet MultiTaskTrainer; returns the trained (maybe peft) model."""
        s = self.settings
        values = dict(
            finetune=s.finetune, trainable_layers=s.trainable_layers, regression_labels=s.regression_labels,
            num_train_epochs=s.num_train_epochs, learning_rate=s.resolved_learning_rate(),
            per_device_train_batch_size=s.per_device_train_batch_size,
            per_device_eval_batch_size=s.per_device_eval_batch_size, weight_decay=s.weight_decay,
            warmup_steps=s.warmup_steps, seed=s.seed, data_seed=s.seed, use_cpu=s.use_cpu, save_strategy="no",
            eval_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        values.update(self.training_args)
        base = base_model(model)
        index = base.task_index(self.task)
        rows = rows.with_columns(task_ids=[index] * len(rows))
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is not None:  # keeps Trainer from warning that it aligned the config with the tokenizer
            base.config.pad_token_id = pad
            base.config.get_text_config().pad_token_id = pad
        with tempfile.TemporaryDirectory(prefix="hf_taskgroup_pvi_") as tmp:
            args = MultiTaskTrainingArguments(output_dir=tmp, **values)
            trainer = _RowsTrainer(model=model, args=args, train_dataset={self.task: rows},
                                   processing_class=self.tokenizer)
            trainer.remove_callback(PrinterCallback)  # quiet: no per-run metrics dict on stdout
            trainer.train()
        self.trainings += 1
        return trainer.model

    # ---- data -------------------------------------------------------------------------------------
    def model_rows(self, model: Any, split: str, rows: TaskRows) -> TaskRows:
        """``rows`` as ``model`` consumes them: token ids, (frozen) cached encoder features or (partial) cached
        token states of the lower layers."""
        if self.partial:
            return self._partial_rows(model, split, rows)
        if not self.frozen:
            return rows
        from hf_taskgroup.training.features import default_feature_cache, inputs_digest

        key = (encoder_fingerprint(base_model(model)), split)
        if key not in self._features:
            # the process-wide cache: the pipeline's grouped models reuse these features (same tokens)
            digest = inputs_digest({c: rows.columns[c] for c in INPUT_COLUMNS if c in rows.columns})
            self._features[key] = default_feature_cache().get(
                base_model(model), token_level=self.token_level, digest=digest,
                compute=lambda: encoder_features(
                    model, rows, token_level=self.token_level, batch_size=self.batch_size,
                    pad_token_id=self.pad_token_id, desc=f"Encoding {self.task}/{split}", progress=self.progress,
                ),
            )
        feats = self._features[key]
        if len(feats) != len(rows):
            raise RuntimeError(f"task {self.task!r}, split {split!r}: cached features cover {len(feats)} rows, "
                               f"not {len(rows)}")
        return rows.without_columns(*INPUT_COLUMNS).with_columns(features=feats)

    def _states(self, model: Any, rows: TaskRows, desc: str) -> Any:
        from hf_taskgroup.pvi.inference import _batch_inputs
        from hf_taskgroup.training.features import default_feature_cache, inputs_digest

        # the process-wide cache: the pipeline's grouped models reuse these states (same tokens, same k)
        digest = inputs_digest({c: rows.columns[c] for c in INPUT_COLUMNS if c in rows.columns})
        return default_feature_cache().get_token_states(
            base_model(model), trainable_layers=self.settings.trainable_layers, digest=digest, lengths=rows.lengths(),
            make_batch=lambda idx: _batch_inputs(rows, idx, self.pad_token_id), batch_size=self.batch_size,
            desc=desc, progress=self.progress,
        )

    def _partial_rows(self, model: Any, split: str, rows: TaskRows) -> TaskRows:
        states = self._states(model, rows, f"Encoding {self.task}/{split}")
        if len(states) != len(rows):
            raise RuntimeError(f"task {self.task!r}, split {split!r}: cached states cover {len(states)} rows, not {len(rows)}")
        pairs = [states.row(i) for i in range(len(states))]
        kept = {k: v for k, v in rows.columns.items() if k not in INPUT_COLUMNS}
        return TaskRows({**kept, "hidden_states": [p[0] for p in pairs], "attention_mask": [p[1] for p in pairs]},
                        rows.row_ids)

    # ---- fitting ----------------------------------------------------------------------------------
    def fit(self, train_rows: TaskRows, indices: Sequence[int] | None = None, *, suffix: str = "") -> Fit:
        """Train ``g_x`` (and a trained null) on ``train_rows`` (the whole train split) at ``indices``."""
        idx = list(range(len(train_rows))) if indices is None else [int(i) for i in indices]
        gx = self.build("x" + suffix)
        rows = self.model_rows(gx, "train", train_rows).subset(idx)
        gx = self.train(gx, rows)
        sigma_x = None
        if self.task_type == "regression":
            preds = predict_outputs(gx, rows, task=self.task, batch_size=self.batch_size,
                                    pad_token_id=self.pad_token_id, progress=False)
            sigma_x = residual_sigma(np.asarray(preds, dtype=np.float64).reshape(-1), rows.labels)
        fit = Fit(role="x" + suffix, model=gx, null={}, sigma_x=sigma_x, train_row_ids=rows.row_ids)
        fit.null = self._null(rows, suffix, fit)
        return fit

    def _null(self, rows: TaskRows, suffix: str, fit: Fit) -> dict[str, Any]:
        labels = rows.labels
        if self.null_mode == "analytic":
            if self.task_type == "multilabel":
                labels = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64)
            return analytic_null(self.task_type, labels, num_labels=self.infos[self.task]["num_labels"],
                                 smoothing=self.smoothing)
        model = self.build("null" + suffix)
        null_in: dict[str, Any] = dict(self.null_input)
        if self.frozen:
            null_in = {"features": encoder_features(model, TaskRows({k: [v] for k, v in null_in.items()}),
                                                    token_level=False, progress=False)[0]}
        elif self.partial:
            null_rows_in = self._partial_rows(model, "null", TaskRows({k: [v] for k, v in null_in.items()}))
            null_in = {"hidden_states": null_rows_in.columns["hidden_states"][0],
                       "attention_mask": null_rows_in.columns["attention_mask"][0]}
        n = len(rows)
        null_rows = TaskRows({**{k: [v] * n for k, v in null_in.items()}, "labels": labels}, rows.row_ids)
        model = self.train(model, null_rows)
        out = null_model_output(model, null_in, task=self.task)  # the ONE forward pass of the null model
        fit.null_forward_passes += 1
        del model
        if self.task_type == "regression":
            mean = float(out[0])
            return {"null_mean": mean, "null_sigma": residual_sigma(np.full(n, mean), labels)}
        return {"null_logits": out}

    def score(self, fit: Fit, split: str, rows: TaskRows, indices: Sequence[int] | None = None) -> PVIScores:
        """PVI of ``rows`` (a whole split, restricted to ``indices``) under ``fit``."""
        from hf_taskgroup.pvi.inference import scores_from_outputs

        rows = self.model_rows(fit.model, split, rows)
        if indices is not None:
            rows = rows.subset(indices)
        overlap = set(rows.row_ids) & set(fit.train_row_ids) if split == "train" else set()
        if overlap:
            raise RuntimeError(f"task {self.task!r}: refusing to score {len(overlap)} train rows with a model "
                               f"trained on them (e.g. row {min(overlap)})")
        outputs = predict_outputs(fit.model, rows, task=self.task, batch_size=self.batch_size,
                                  pad_token_id=self.pad_token_id, desc=f"Scoring {self.task}/{split}",
                                  progress=self.progress)
        fit.scored.setdefault(split, []).extend(rows.row_ids)
        with warnings.catch_warnings():  # compute_pvi warns once per collapsed split, naming task and split
            warnings.simplefilter("ignore", PVICollapseWarning)
            return scores_from_outputs(self.task_type, outputs, rows.labels, fit.null, sigma_x=fit.sigma_x)
