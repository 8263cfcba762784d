"""The null model of PVI: the analytic label prior, or a trained null model's single output.

A null model sees the same (empty) input for every example, so all it can learn is one
distribution over labels. Under log loss, the best such distribution is the label frequencies
in the training data. The analytic null uses those frequencies directly, with add-k (Laplace)
smoothing so that a class seen in held-out data but never in training keeps a finite score. It
needs no training and no forward pass. A trained null model fine-tuned on ``(null, y)`` pairs
gets close to this prior but not exactly to it (finite training, label smoothing, a tied bias).

Every function returns what the ``pvi_*`` functions of :mod:`hf_taskgroup.pvi.scores` take:
``null_logits`` (natural-log probabilities or Bernoulli logits) or ``null_mean``/``null_sigma``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_taskgroup.pvi.scores import (
    IGNORE_INDEX,
    SIGMA_FLOOR,
    TASK_TYPES,
    _as_float_array,
    _as_int_labels,
)

__all__ = [
    "analytic_null",
    "analytic_null_classification",
    "analytic_null_multilabel",
    "analytic_null_regression",
    "analytic_null_token",
    "null_logits_from_model_output",
]


def analytic_null_classification(
    train_labels: Sequence[int] | np.ndarray, num_labels: int, smoothing: float = 1.0
) -> np.ndarray:
    """Smoothed label prior as natural-log probabilities ``[C]``.

    ``log((count_c + k) / (n + k * C))`` with ``k = smoothing`` (add-k smoothing; ``k = 1`` is
    Laplace). ``smoothing=0`` gives the raw frequencies, with ``-inf`` for a class never seen in
    training (a held-out example of that class then gets an infinite PVI).

    Example:
        >>> np.exp(analytic_null_classification([0, 0, 0, 1], num_labels=3)).round(4).tolist()
        [0.5714, 0.2857, 0.1429]
    """
    _check_num_labels(num_labels)
    y = _as_int_labels("train_labels", train_labels, shape=(len(train_labels),), num_classes=num_labels,
                       ref="its own length")
    return _smoothed_log_prior(np.bincount(y, minlength=num_labels), smoothing, "train_labels")


def analytic_null_token(
    train_tag_sequences: Sequence[Sequence[int]] | np.ndarray, num_labels: int, smoothing: float = 1.0
) -> np.ndarray:
    """Tag prior over the labelled tokens (label != -100) as natural-log probabilities ``[C]``.

    ``train_tag_sequences`` is one sequence of tag ids per example (ragged is fine) or a padded
    ``[n, T]`` array. Smoothing as in :func:`analytic_null_classification`.

    Example:
        >>> np.exp(analytic_null_token([[0, -100, 1], [0]], num_labels=2, smoothing=0)).round(4).tolist()
        [0.6667, 0.3333]
    """
    _check_num_labels(num_labels)
    counts = np.zeros(num_labels, dtype=np.int64)
    for i, seq in enumerate(train_tag_sequences):
        tags = np.asarray(seq)
        tags = _as_int_labels(f"train_tag_sequences[{i}]", tags.reshape(-1), shape=(tags.size,),
                              num_classes=num_labels, ref="its own length", allow_ignore=True)
        counts += np.bincount(tags[tags != IGNORE_INDEX], minlength=num_labels)
    return _smoothed_log_prior(counts, smoothing, "train_tag_sequences (labelled tokens)")


def analytic_null_multilabel(train_labels: Sequence[Sequence[int]] | np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Per-label Bernoulli logits ``[L]`` from smoothed positive frequencies.

    ``p_l = (pos_l + k) / (n + 2k)`` (add-k over the two outcomes), returned as the logit
    ``log(pos_l + k) - log(n - pos_l + k)``; ``smoothing=0`` gives +-inf for labels that are never
    or always positive.

    Example:
        >>> logits = analytic_null_multilabel([[1, 0], [1, 1], [0, 0]])
        >>> (1 / (1 + np.exp(-logits))).round(4).tolist()
        [0.6, 0.4]
    """
    arr = np.asarray(train_labels)
    if arr.ndim != 2:
        raise ValueError(f"train_labels must be a multi-hot [n, L] array, got shape {arr.shape}")
    y = _as_int_labels("train_labels", arr, shape=arr.shape, num_classes=2, ref="its own shape", binary=True)
    n = y.shape[0]
    if n == 0:
        raise ValueError("train_labels is empty: the analytic null needs training labels")
    k = _check_smoothing(smoothing)
    pos = y.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.log(pos + k) - np.log(n - pos + k)


def analytic_null_regression(train_labels: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(mean, std)`` of the training labels (``ddof=0``, the maximum-likelihood Gaussian).

    A std below :data:`~hf_taskgroup.pvi.scores.SIGMA_FLOOR` (constant labels) is raised to it,
    with a warning.

    Example:
        >>> analytic_null_regression([1.0, 3.0])
        (2.0, 1.0)
    """
    y = _as_float_array("train_labels", train_labels, ndims=(1, 2))
    if y.ndim == 2 and y.shape[1] != 1:
        raise ValueError(f"train_labels must be [n] or [n, 1], got shape {y.shape}")
    y = y.reshape(-1)
    if len(y) == 0:
        raise ValueError("train_labels is empty: the analytic null needs training labels")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise ValueError(f"train_labels[{bad[0]}] = {y[bad[0]].item()} is not finite")
    mean, std = float(np.mean(y)), float(np.std(y))
    if std < SIGMA_FLOOR:
        warnings.warn(f"train_labels are constant (std {std:g}); the null std is floored at {SIGMA_FLOOR:g}",
                      UserWarning, stacklevel=2)
        std = SIGMA_FLOOR
    return mean, std


def analytic_null(
    task_type: str, train_labels: Any, *, num_labels: int | None = None, smoothing: float = 1.0
) -> dict[str, Any]:
    """The analytic null of ``task_type`` as keyword arguments for ``compute_pvi_scores``.

    Returns ``{"null_logits": ...}`` or, for regression, ``{"null_mean": ..., "null_sigma": ...}``.
    ``num_labels`` is required for classification and token classification.

    Example:
        >>> analytic_null("regression", [1.0, 3.0])
        {'null_mean': 2.0, 'null_sigma': 1.0}
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task_type {task_type!r}; expected one of {TASK_TYPES}")
    if task_type == "regression":
        mean, std = analytic_null_regression(train_labels)
        return {"null_mean": mean, "null_sigma": std}
    if task_type == "multilabel":
        return {"null_logits": analytic_null_multilabel(train_labels, smoothing)}
    if num_labels is None:
        raise ValueError(f"analytic_null({task_type!r}) needs num_labels")
    if task_type == "classification":
        return {"null_logits": analytic_null_classification(train_labels, num_labels, smoothing)}
    return {"null_logits": analytic_null_token(train_labels, num_labels, smoothing)}


def null_logits_from_model_output(output: Any, atol: float = 1e-4) -> np.ndarray:
    """A trained null model's output for the one null input, as the 1-D array ``pvi_*`` take.

    Accepts ``[C]``, ``[1, C]``, ``[1, 1, C]`` ... (leading size-1 axes are dropped), and
    ``[k, C]`` when the null input was run ``k`` times and the rows agree within ``atol`` (different
    rows mean the model ran in training mode with dropout: call ``model.eval()``). Returns ``[C]``
    softmax logits, ``[L]`` Bernoulli logits, or for a regression head a length-1 array holding
    the null mean. Pass a numpy array (``tensor.detach().cpu().numpy()``).

    Example:
        >>> null_logits_from_model_output(np.array([[0.3, -0.2]])).tolist()
        [0.3, -0.2]
    """
    arr = _as_float_array("output", output, ndims=tuple(range(8)))
    if arr.ndim == 0:
        arr = arr.reshape(1)
    while arr.ndim > 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        if not np.allclose(arr, arr[0], rtol=0.0, atol=atol):
            raise ValueError(f"output has {arr.shape[0]} different rows (shape {arr.shape}); expected the output for "
                             "one null input. Identical null inputs must give identical outputs: is the null model "
                             "in training mode (dropout)? For token classification use analytic_null_token: a null "
                             "input has no tokens to tag")
        arr = arr[0]
    if arr.ndim != 1:
        raise ValueError(f"output has shape {np.shape(output)}; expected [C] or [1, C] for the single null input")
    if arr.size == 0:
        raise ValueError(f"output is empty (shape {np.shape(output)})")
    return arr


def _check_num_labels(num_labels: int) -> None:
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")


def _check_smoothing(smoothing: float) -> float:
    k = float(smoothing)
    if not math.isfinite(k) or k < 0:
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
    return k


def _smoothed_log_prior(counts: np.ndarray, smoothing: float, name: str) -> np.ndarray:
    k = _check_smoothing(smoothing)
    total = int(counts.sum())
    if total == 0:
        raise ValueError(f"{name} holds no labels: the analytic null needs training labels")
    with np.errstate(divide="ignore"):
        return np.log(counts + k) - math.log(total + k * len(counts))
