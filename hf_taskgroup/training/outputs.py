"""Per-example model outputs in a compact, JSON-able form, so that a metric can be recomputed on any subset
of the examples later (the bootstrap of :mod:`hf_taskgroup.grouping.recommend`).

Stored per task type: ``classification`` the predicted class ids; ``multilabel`` the 0/1 decisions
(logit > 0); ``regression`` the predicted values; ``token_classification`` per example the predicted tag ids
of the labelled positions only (the first sub-word of each word). Labels are stored the same way.
:func:`expand_outputs` turns a record back into arrays that
:func:`~hf_taskgroup.training.metrics.compute_task_metrics` accepts.

Example::

    >>> import numpy as np
    >>> rec = compact_outputs("classification", np.array([[2.0, 0.1], [0.3, 1.2]]), np.array([0, 0]))
    >>> rec["predictions"], rec["labels"]
    ([0, 1], [0, 0])
    >>> from hf_taskgroup.training.metrics import compute_task_metrics
    >>> compute_task_metrics("classification", *expand_outputs(rec), metrics=["accuracy"])
    {'accuracy': 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Label value that marks a position to ignore (the Hugging Face / PyTorch convention); defined here only,
#: imported by training.metrics and pvi.scores.
IGNORE_INDEX = -100


def compact_outputs(task_type: str, predictions: Any, labels: Any) -> dict[str, Any]:
    """``{"type", "predictions", "labels"}`` of one task on one split (see the module docstring)."""
    pred = np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)
    gold = np.asarray(labels)
    if task_type == "classification":
        ids = pred.argmax(axis=-1) if pred.ndim == 2 else pred
        return {"type": task_type, "predictions": ids.astype(int).tolist(), "labels": gold.reshape(-1).astype(int).tolist()}
    if task_type == "multilabel":
        return {"type": task_type, "predictions": (pred > 0).astype(int).tolist(), "labels": gold.astype(int).tolist()}
    if task_type == "regression":
        return {"type": task_type, "predictions": pred.reshape(-1).astype(float).tolist(),
                "labels": gold.reshape(-1).astype(float).tolist()}
    if task_type == "token_classification":
        ids = pred.argmax(axis=-1) if pred.ndim == 3 else pred
        out_pred, out_gold = [], []
        for row_pred, row_gold in zip(ids, gold):
            mask = row_gold != IGNORE_INDEX
            out_pred.append(row_pred[: len(row_gold)][mask].astype(int).tolist())
            out_gold.append(row_gold[mask].astype(int).tolist())
        return {"type": task_type, "predictions": out_pred, "labels": out_gold}
    raise ValueError(f"unknown task type {task_type!r}")


def expand_outputs(record: Mapping[str, Any], index: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions, labels)`` arrays of a :func:`compact_outputs` record, optionally of the examples ``index``
    (with repeats, as a bootstrap draws them). Multilabel decisions come back as logits of +1 / -1."""
    kind = record["type"]
    pred, gold = record["predictions"], record["labels"]
    if index is not None:
        pred = [pred[i] for i in index]
        gold = [gold[i] for i in index]
    if kind == "classification":
        return np.asarray(pred, dtype=np.int64), np.asarray(gold, dtype=np.int64)
    if kind == "multilabel":
        return np.where(np.asarray(pred) > 0, 1.0, -1.0), np.asarray(gold, dtype=np.int64)
    if kind == "regression":
        return np.asarray(pred, dtype=float), np.asarray(gold, dtype=float)
    if kind == "token_classification":
        width = max(1, max((len(r) for r in gold), default=1))
        p = np.full((len(gold), width), 0, dtype=np.int64)
        g = np.full((len(gold), width), IGNORE_INDEX, dtype=np.int64)
        for i, (rp, rg) in enumerate(zip(pred, gold)):
            p[i, : len(rp)] = rp
            g[i, : len(rg)] = rg
        return p, g
    raise ValueError(f"unknown task type {kind!r}")
