"""Batched inference for PVI: no-grad forward passes in eval mode, batches sorted by length.

PVI needs one forward pass of ``g_x`` over the held-out examples and ONE forward pass of the null
model per task (its input never changes). This module holds the pieces shared by
:func:`hf_taskgroup.pvi.compute_pvi`, :class:`hf_taskgroup.pvi.PVICallback` and the benchmarks:

- :class:`TaskRows`: one task's examples in memory (token ids or cached encoder features, labels),
  a ``torch`` dataset that :class:`~hf_taskgroup.training.trainer.MultiTaskTrainer` trains on directly.
- :func:`predict_outputs`: logits (or regression predictions) for every row, in row order.
- :func:`encoder_features`: pooled encoder outputs or token states, computed once (``frozen`` mode).
- :func:`null_model_output`: the null model's output for the null input (one forward pass).
- :func:`scores_from_outputs`: model outputs + labels + null -> :class:`~hf_taskgroup.pvi.scores.PVIScores`.

Example::

    >>> rows = TaskRows.from_dataset(tokenized["sst2"]["test"])                    # doctest: +SKIP
    >>> outputs = predict_outputs(model, rows, task="sst2")                         # doctest: +SKIP
    >>> scores = scores_from_outputs("classification", outputs, rows.labels,
    ...                              {"null_logits": np.log([0.5, 0.5])})          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from hf_taskgroup.log import progress_bar
from hf_taskgroup.pvi.scores import IGNORE_INDEX, PVIScores, compute_pvi_scores

INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")

__all__ = [
    "INPUT_COLUMNS",
    "TaskRows",
    "base_model",
    "encoder_features",
    "null_model_output",
    "predict_outputs",
    "scores_from_outputs",
]


class TaskRows(TorchDataset):
    """One task's examples held in memory as columns (lists or arrays of equal length).

    Columns are the model inputs (``input_ids``/``attention_mask``/``token_type_ids``, or ``features``
    in frozen mode), ``labels`` and optionally ``task_ids``. ``row_ids`` are the positions of the rows
    in the raw split, kept through :meth:`subset`, so out-of-fold scores land on the right examples.

    Example::

        >>> rows = TaskRows({"input_ids": [[2, 7, 3], [2, 3]], "labels": [1, 0]})
        >>> len(rows), rows.lengths(), rows.subset([1]).row_ids
        (2, [3, 2], [1])
    """

    def __init__(self, columns: Mapping[str, Sequence[Any]], row_ids: Sequence[int] | None = None):
        self.columns = {k: list(v) if not isinstance(v, np.ndarray) else v for k, v in columns.items()}
        sizes = {k: len(v) for k, v in self.columns.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"TaskRows columns differ in length: {sizes}")
        n = next(iter(sizes.values())) if sizes else 0
        self.row_ids = list(range(n)) if row_ids is None else [int(i) for i in row_ids]
        if len(self.row_ids) != n:
            raise ValueError(f"TaskRows: {len(self.row_ids)} row ids for {n} rows")

    @classmethod
    def from_dataset(cls, dataset: Any, columns: Iterable[str] | None = None) -> TaskRows:
        """Rows of a tokenized ``datasets.Dataset`` (default columns: inputs, ``labels``, ``features``)."""
        names = dataset.column_names
        wanted = list(columns) if columns is not None else [*INPUT_COLUMNS, "labels", "features"]
        return cls({c: dataset[c][:] for c in wanted if c in names})

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    @property
    def labels(self) -> list[Any]:
        if "labels" not in self.columns:
            raise KeyError(f"TaskRows has no 'labels' column (columns: {self.column_names})")
        return list(self.columns["labels"])

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}

    def subset(self, indices: Sequence[int]) -> TaskRows:
        """The rows at positions ``indices`` (row ids kept)."""
        idx = [int(i) for i in indices]
        cols = {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for k, v in self.columns.items()}
        return TaskRows(cols, [self.row_ids[i] for i in idx])

    def with_columns(self, **columns: Sequence[Any]) -> TaskRows:
        """A copy with columns added or replaced (row ids kept)."""
        return TaskRows({**self.columns, **columns}, self.row_ids)

    def without_columns(self, *names: str) -> TaskRows:
        return TaskRows({k: v for k, v in self.columns.items() if k not in names}, self.row_ids)

    def lengths(self) -> list[int]:
        """Sequence length of each row (token count, or 1 for pooled features)."""
        if "input_ids" in self.columns:
            return [len(x) for x in self.columns["input_ids"]]
        if "features" in self.columns:
            return [int(np.shape(f)[0]) if np.ndim(f) == 2 else 1 for f in self.columns["features"]]
        raise ValueError(f"TaskRows has neither input_ids nor features (columns: {self.column_names})")


def base_model(model: Any) -> Any:
    """The :class:`MultiTaskModel` inside a peft or DDP wrapper (or ``model`` itself)."""
    while True:
        if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _pad(rows: list[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _batch_inputs(rows: TaskRows, idx: Sequence[int], pad_token_id: int) -> dict[str, torch.Tensor]:
    cols = rows.columns
    if "features" in cols:
        feats = [np.asarray(cols["features"][i], dtype=np.float32) for i in idx]
        if feats[0].ndim == 1:
            return {"features": torch.from_numpy(np.stack(feats))}
        width = max(f.shape[0] for f in feats)
        out = np.zeros((len(feats), width, feats[0].shape[-1]), dtype=np.float32)
        for j, f in enumerate(feats):
            out[j, : f.shape[0]] = f
        return {"features": torch.from_numpy(out)}
    batch = {"input_ids": _pad([cols["input_ids"][i] for i in idx], pad_token_id)}
    if "attention_mask" in cols:
        batch["attention_mask"] = _pad([cols["attention_mask"][i] for i in idx], 0)
    else:
        lens = [len(cols["input_ids"][i]) for i in idx]
        batch["attention_mask"] = _pad([[1] * n for n in lens], 0)
    if "token_type_ids" in cols:
        batch["token_type_ids"] = _pad([cols["token_type_ids"][i] for i in idx], 0)
    return batch


def _batches(lengths: list[int], batch_size: int, sort_by_length: bool) -> list[list[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__) if sort_by_length else list(range(len(lengths)))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict_outputs(
    model: Any,
    rows: TaskRows,
    *,
    task: str,
    batch_size: int = 64,
    sort_by_length: bool = True,
    pad_token_id: int = 0,
    device: str | torch.device | None = None,
    desc: str | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """The model's output for every row, in row order: ``[C]`` logits (classification, multilabel),
    a 0-d prediction (regression) or ``[T_i, C]`` token logits (token classification, unpadded).

    Runs in eval mode under ``torch.inference_mode`` with batches of rows of similar length (less
    padding); the model's training flag is restored afterwards. Rows with ``features`` skip the encoder.
    """
    base = base_model(model)
    index = base.task_index(task)
    device = torch.device(device) if device is not None else next(base.parameters()).device
    lengths = rows.lengths()
    out: list[np.ndarray | None] = [None] * len(rows)
    was_training = model.training
    model.eval()
    try:
        batches = _batches(lengths, batch_size, sort_by_length)
        for idx in progress_bar(batches, desc=desc or f"Scoring {task}", nested=True, progress=progress):
            batch = {k: v.to(device) for k, v in _batch_inputs(rows, idx, pad_token_id).items()}
            batch["task_ids"] = torch.full((len(idx),), index, dtype=torch.long, device=device)
            logits = model(**batch).logits.float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = logits[j, : lengths[i]] if logits.ndim == 3 else logits[j]
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


@torch.inference_mode()
def encoder_features(
    model: Any,
    rows: TaskRows,
    *,
    token_level: bool,
    batch_size: int = 64,
    pad_token_id: int = 0,
    desc: str | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Pooled encoder output ``[H]`` (or token states ``[T_i, H]``) of every row, in row order (frozen mode)."""
    from hf_taskgroup.training.features import encode_in_length_order

    return encode_in_length_order(
        base_model(model), rows.lengths(), lambda idx: _batch_inputs(rows, idx, pad_token_id),
        token_level=token_level, batch_size=batch_size, desc=desc or "Encoding", progress=progress,
    )


@torch.inference_mode()
def null_model_output(model: Any, null_input: Mapping[str, Any], *, task: str) -> np.ndarray:
    """ONE forward pass of the null model on the null input (token ids or its encoder ``features``).

    Returns the head's output for that input: ``[C]`` logits, ``[L]`` Bernoulli logits, or ``[1]``
    (the regression prediction, i.e. the null mean).
    """
    from hf_taskgroup.pvi.null import null_logits_from_model_output

    rows = TaskRows({k: [v] for k, v in null_input.items() if k in (*INPUT_COLUMNS, "features")})
    out = predict_outputs(model, rows, task=task, batch_size=1, progress=False)
    return null_logits_from_model_output(np.asarray(out[0], dtype=np.float64))


def scores_from_outputs(
    task_type: str,
    outputs: Sequence[np.ndarray],
    labels: Sequence[Any],
    null: Mapping[str, Any],
    *,
    sigma_x: float | None = None,
) -> PVIScores:
    """PVI scores from per-row model outputs (as :func:`predict_outputs` returns them) and labels.

    ``null`` holds the keyword arguments of the null side: ``{"null_logits": ...}`` or, for
    regression, ``{"null_mean": ..., "null_sigma": ...}``; ``sigma_x`` is ``g_x``'s residual std
    (regression only). Token outputs and labels are padded (labels with -100) before scoring.
    """
    if task_type == "regression":
        if sigma_x is None:
            raise ValueError("regression PVI needs sigma_x (the residual std of g_x on its training data)")
        pred = np.asarray([float(np.asarray(o).reshape(-1)[0]) for o in outputs])
        return compute_pvi_scores(task_type, pred_x=pred, labels=np.asarray(labels, dtype=np.float64),
                                  sigma_x=sigma_x, **null)
    if task_type == "token_classification":
        n = len(outputs)
        width = max(len(o) for o in outputs)
        num_classes = outputs[0].shape[-1]
        logits = np.zeros((n, width, num_classes), dtype=np.float64)
        gold = np.full((n, width), IGNORE_INDEX, dtype=np.int64)
        for i, (o, y) in enumerate(zip(outputs, labels)):
            if len(y) != len(o):
                raise ValueError(f"row {i}: {len(o)} token outputs but {len(y)} token labels")
            logits[i, : len(o)] = o
            gold[i, : len(y)] = y
        return compute_pvi_scores(task_type, logits_x=logits, labels=gold, **null)
    logits = np.stack([np.asarray(o, dtype=np.float64) for o in outputs])
    gold = np.asarray(labels)
    if task_type == "multilabel":
        gold = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64)
    return compute_pvi_scores(task_type, logits_x=logits, labels=gold, **null)
