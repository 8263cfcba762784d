"""Per-task evaluation metrics that work offline (numpy + scipy only; never ``evaluate.load``).

One entry point, :func:`compute_task_metrics`, takes the raw model outputs (logits) and the labels
of one task and returns a flat ``{metric_name: float}`` dict. :func:`make_compute_metrics` wraps it
as a ``compute_metrics`` callable for ``transformers.Trainer``.

Inputs per task type (``n`` examples): ``classification`` logits ``[n, C]`` (or integer class ids
``[n]``) with labels ``[n]``; ``multilabel`` logits ``[n, L]`` (logit > 0 is a positive label) with
0/1 labels ``[n, L]``; ``regression`` ``[n]`` or ``[n, 1]`` for both; ``token_classification``
logits ``[n, T, C]`` (or integer tag ids ``[n, T]``, e.g. after ``preprocess_logits_for_metrics``)
with labels ``[n, T]`` where ``-100`` marks ignored positions (padding, non-first sub-words).

Metrics (``*`` = computed by default; the primary metric, see :func:`primary_metric`, is first):

- classification: ``accuracy``\\*, ``f1_macro``\\*, ``mcc``\\*, ``f1_micro``, ``f1_weighted``,
  ``precision_macro``, ``recall_macro``. Macro averages run over the classes that occur in the
  labels or the predictions (scikit-learn's default); ``mcc`` is the multi-class Matthews
  correlation (Gorodkin's R_K).
- multilabel: ``f1_micro``\\*, ``f1_macro``\\*, ``accuracy``\\* (subset accuracy: every label of an
  example right), ``hamming_accuracy`` (fraction of right label decisions), ``precision_micro``,
  ``recall_micro``. ``f1_macro`` averages over the labels that are positive in the gold labels or
  the predictions at least once.
- regression: ``pearson``\\*, ``spearman``\\*, ``mse``\\*, ``rmse``, ``mae``.
- token_classification: ``f1``\\*, ``precision``\\*, ``recall``\\* (entity level, exact span
  match, like seqeval's default/conlleval mode), ``accuracy``\\* (token accuracy over positions whose
  label is not ``-100``).

Degenerate inputs: a precision/recall/F1 with an empty denominator is 0.0; ``pearson`` and
``spearman`` are 0.0 when the predictions or the labels are constant (the correlation is undefined);
``mcc`` is 0.0 when either side has a single class. Nothing warns. Empty inputs, NaN/inf, shape
mismatches and out-of-range ids raise :class:`ValueError` naming the problem.

Example::

    >>> import numpy as np
    >>> from hf_taskgroup.training.metrics import compute_task_metrics
    >>> logits = np.array([[2.0, 0.1], [0.3, 1.2], [1.5, 0.2]])
    >>> compute_task_metrics("classification", logits, np.array([0, 1, 1]), metrics=["accuracy"])
    {'accuracy': 0.6666666666666666}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

if TYPE_CHECKING:  # pragma: no cover
    from transformers import EvalPrediction

__all__ = [
    "TASK_TYPES",
    "METRICS",
    "DEFAULT_METRICS",
    "primary_metric",
    "greater_is_better",
    "compute_task_metrics",
    "make_compute_metrics",
    "extract_entities",
]

#: The task types, identical to :data:`hf_taskgroup.data.tasks.TASK_TYPES` (kept here so this module
#: imports nothing from the rest of the package).
TASK_TYPES = ("classification", "multilabel", "regression", "token_classification")

#: Every metric each task type can compute, in output order.
METRICS: dict[str, tuple[str, ...]] = {
    "classification": (
        "accuracy", "f1_macro", "mcc", "f1_micro", "f1_weighted", "precision_macro", "recall_macro",
    ),
    "multilabel": (
        "f1_micro", "f1_macro", "accuracy", "hamming_accuracy", "precision_micro", "recall_micro",
    ),
    "regression": ("pearson", "spearman", "mse", "rmse", "mae"),
    "token_classification": ("f1", "precision", "recall", "accuracy"),
}

#: The metrics computed when ``metrics=None``.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_macro", "mcc"),
    "multilabel": ("f1_micro", "f1_macro", "accuracy"),
    "regression": ("pearson", "spearman", "mse"),
    "token_classification": ("f1", "precision", "recall", "accuracy"),
}

_LOWER_IS_BETTER = ("mse", "rmse", "mae", "loss")
_KNOWN_METRICS = tuple(sorted({m for ms in METRICS.values() for m in ms} | set(_LOWER_IS_BETTER)))
IGNORE_INDEX = -100


def _check_task_type(task_type: str) -> None:
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")


def primary_metric(task_type: str) -> str:
    """The metric used to rank models of a task type (for ``metric_for_best_model`` and reports).

    ``classification`` -> ``"accuracy"``, ``multilabel`` -> ``"f1_micro"``, ``regression`` ->
    ``"pearson"``, ``token_classification`` -> ``"f1"`` (entity-level). All of them are higher-is-better.
    """
    _check_task_type(task_type)
    return METRICS[task_type][0]


def greater_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better.

    Accepts a bare name (``"mse"``) or a prefixed Trainer key (``"eval_biosses_mse"``, ``"eval_loss"``):
    the longest known metric name the key ends with decides. ``mse``, ``rmse``, ``mae`` and ``loss``
    are lower-is-better; every other metric of :data:`METRICS` is higher-is-better.

    Raises:
        ValueError: when the key ends with no known metric name.
    """
    for name in sorted(_KNOWN_METRICS, key=len, reverse=True):
        if metric == name or metric.endswith("_" + name):
            return name not in _LOWER_IS_BETTER
    raise ValueError(f"unknown metric {metric!r}; expected a key ending with one of {', '.join(_KNOWN_METRICS)}")


def _resolve_metrics(task_type: str, metrics: Sequence[str] | None) -> tuple[str, ...]:
    _check_task_type(task_type)
    if metrics is None:
        return DEFAULT_METRICS[task_type]
    if isinstance(metrics, str):
        metrics = [metrics]
    if len(metrics) == 0:
        raise ValueError(f"metrics is empty; choose from {', '.join(METRICS[task_type])} (or pass None)")
    valid = METRICS[task_type]
    unknown = [m for m in metrics if m not in valid]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(map(repr, unknown))} for task type {task_type!r}; "
            f"valid: {', '.join(valid)}"
        )
    return tuple(dict.fromkeys(metrics))


def _normalize_id2label(id2label: Sequence[str] | Mapping[int, str] | None) -> list[str] | None:
    if id2label is None:
        return None
    if isinstance(id2label, Mapping):
        keys = sorted(int(k) for k in id2label)
        if keys != list(range(len(keys))):
            raise ValueError(f"id2label keys must be 0..{len(keys) - 1}, got {keys}")
        return [str(id2label[k] if k in id2label else id2label[str(k)]) for k in keys]  # type: ignore[index]
    return [str(t) for t in id2label]


def _to_numpy(x: Any, what: str) -> np.ndarray:
    """Array from numpy / torch / list input; the first element when a model returned a tuple."""
    if isinstance(x, tuple):
        if not x:
            raise ValueError(f"{what} is an empty tuple")
        x = x[0]
    if hasattr(x, "detach"):  # a torch tensor (batch_eval_metrics passes tensors), without importing torch
        x = x.detach()
        x = (x.float() if x.is_floating_point() else x).cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{what} is a ragged / object array; pad it to a rectangular shape")
    return arr


def _check_finite(arr: np.ndarray, what: str) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{what} contain {bad} NaN/inf value(s)")


def _as_int_ids(arr: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        _check_finite(arr, what)
        if np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
    raise ValueError(f"{what} must be integer ids, got dtype {arr.dtype}")


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _f1(tp: float, fp: float, fn: float) -> float:
    return _safe_div(2.0 * tp, 2.0 * tp + fp + fn)


# --------------------------------------------------------------------------- classification


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise num / den with 0.0 where den == 0."""
    return np.divide(num, den, out=np.zeros(np.shape(num), dtype=np.float64), where=np.asarray(den) > 0)


def _classification(predictions: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    labels = _as_int_ids(labels[:, 0] if labels.ndim == 2 and labels.shape[1] == 1 else labels, "classification labels")
    if labels.ndim != 1:
        raise ValueError(f"classification labels must have shape [n], got {labels.shape}")
    if predictions.ndim == 2:
        _check_finite(predictions, "classification predictions")
        n_classes, pred = predictions.shape[1], predictions.argmax(axis=1)
    elif predictions.ndim == 1 and np.issubdtype(predictions.dtype, np.integer):
        pred = predictions.astype(np.int64)
        n_classes = int(max(pred.max(), labels.max())) + 1
    else:
        raise ValueError(f"classification predictions must be logits [n, C] or integer class ids [n], "
                         f"got shape {predictions.shape} dtype {predictions.dtype}")
    if pred.shape[0] != labels.shape[0]:
        raise ValueError(f"classification: {pred.shape[0]} predictions but {labels.shape[0]} labels")
    if labels.min() < 0 or labels.max() >= n_classes or pred.min() < 0:
        raise ValueError(f"classification ids must lie in [0, {n_classes}) (the logits width); labels span "
                         f"[{labels.min()}, {labels.max()}], predictions [{pred.min()}, {pred.max()}]")

    cm = np.bincount(labels * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes).astype(float)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0  # macro averages run over these classes (scikit-learn's default)
    f1 = _ratio(2 * tp, support + predicted)
    n = float(labels.size)
    mcc_den = math.sqrt(max(n * n - float(predicted @ predicted), 0.0) * max(n * n - float(support @ support), 0.0))
    values = {
        "accuracy": tp.sum() / n,
        "f1_micro": tp.sum() / n,  # single-label micro F1 equals accuracy
        "f1_macro": f1[present].mean(),
        "f1_weighted": (f1 * support).sum() / n,
        "precision_macro": _ratio(tp, predicted)[present].mean(),
        "recall_macro": _ratio(tp, support)[present].mean(),
        "mcc": _safe_div(tp.sum() * n - float(support @ predicted), mcc_den),
    }
    return {name: float(values[name]) for name in names}


# --------------------------------------------------------------------------- multilabel


def _multilabel(predictions: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    if predictions.ndim != 2 or predictions.shape != labels.shape:
        raise ValueError(f"multilabel predictions and labels must both have shape [n, L], "
                         f"got {predictions.shape} and {labels.shape}")
    _check_finite(predictions, "multilabel predictions")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("multilabel labels must be 0/1 indicators")
    gold, pred = labels.astype(bool), predictions > 0
    tp = (gold & pred).sum(axis=0).astype(float)
    fp = (~gold & pred).sum(axis=0).astype(float)
    fn = (gold & ~pred).sum(axis=0).astype(float)
    present = (tp + fp + fn) > 0  # labels positive somewhere in gold or predictions
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    values = {
        "f1_micro": _f1(tp.sum(), fp.sum(), fn.sum()),
        "f1_macro": f1[present].mean() if present.any() else 0.0,
        "accuracy": np.all(gold == pred, axis=1).mean(),
        "hamming_accuracy": (gold == pred).mean(),
        "precision_micro": _safe_div(tp.sum(), tp.sum() + fp.sum()),
        "recall_micro": _safe_div(tp.sum(), tp.sum() + fn.sum()),
    }
    return {name: float(values[name]) for name in names}


# --------------------------------------------------------------------------- regression


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; 0.0 when either side is constant (r is undefined there)."""
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float(xc @ xc)) * math.sqrt(float(yc @ yc))
    if den == 0.0 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.clip((xc @ yc) / den, -1.0, 1.0))


def _regression(predictions: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    def flat(a: np.ndarray, what: str) -> np.ndarray:
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1:
            raise ValueError(f"regression {what} must have shape [n] or [n, 1], got {a.shape}")
        a = a.astype(np.float64)
        _check_finite(a, f"regression {what}")
        return a

    pred, gold = flat(predictions, "predictions"), flat(labels, "labels")
    if pred.shape != gold.shape:
        raise ValueError(f"regression: {pred.shape[0]} predictions but {gold.shape[0]} labels")
    err = pred - gold
    out: dict[str, float] = {}
    for name in names:
        if name == "pearson":
            out[name] = _pearson(pred, gold)
        elif name == "spearman":
            out[name] = _pearson(rankdata(pred), rankdata(gold))
        elif name == "mse":
            out[name] = float(np.mean(err**2))
        elif name == "rmse":
            out[name] = float(np.sqrt(np.mean(err**2)))
        elif name == "mae":
            out[name] = float(np.mean(np.abs(err)))
    return out


# --------------------------------------------------------------------------- token classification


def _parse_tag(tag: str, where: str) -> tuple[str, str]:
    """``"B-X"``/``"B_X"`` -> ("B", "X"); ``"B"`` -> ("B", ""); ``"O"`` -> ("O", ""). IOBES prefixes too."""
    if tag == "O":
        return ("O", "")
    prefix, rest = tag[:1].upper(), tag[1:]
    if prefix not in ("B", "I", "E", "S") or (rest and rest[0] not in "-_"):
        raise ValueError(f"{where} = {tag!r} is not a BIO/IOBES tag; expected 'O', 'B', 'I', 'B-<type>' or 'I-<type>'")
    return (prefix, rest[1:])


def _parse_tags(id2label: list[str]) -> list[tuple[str, str]]:
    return [_parse_tag(tag, f"id2label[{i}]") for i, tag in enumerate(id2label)]


def _chunk_ends(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    (pt, ptype), (t, typ) = prev, cur
    if pt in ("E", "S"):
        return True
    if pt in ("B", "I") and t in ("B", "S", "O"):
        return True
    return pt != "O" and ptype != typ


def _chunk_starts(prev: tuple[str, str], cur: tuple[str, str]) -> bool:
    (pt, ptype), (t, typ) = prev, cur
    if t in ("B", "S"):
        return True
    if pt in ("E", "S", "O") and t in ("E", "I"):
        return True
    return t != "O" and ptype != typ


def _spans(tags: Sequence[tuple[str, str]]) -> set[tuple[str, int, int]]:
    spans: set[tuple[str, int, int]] = set()
    prev: tuple[str, str] = ("O", "")
    start = -1
    for i, cur in enumerate([*tags, ("O", "")]):
        if start >= 0 and _chunk_ends(prev, cur):
            spans.add((prev[1], start, i - 1))
            start = -1
        if _chunk_starts(prev, cur):
            start = i
        prev = cur
    return spans


def extract_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entity spans ``(type, start, end_inclusive)`` of one tag sequence, by seqeval's default (conlleval) rules.

    A span starts at ``B-X`` (or ``S-X``), or at ``I-X`` after ``O`` or after a tag of another type;
    it continues with ``I-X`` and ends before anything else. Untyped tags (``"B"``, ``"I"``) have type ``""``.

    Example::

        >>> sorted(extract_entities(["B-D", "I-D", "O", "I-D", "B-C"]))
        [('C', 4, 4), ('D', 0, 1), ('D', 3, 3)]
    """
    return _spans([_parse_tag(tag, f"tags[{i}]") for i, tag in enumerate(tags)])


def _token_classification(
    predictions: np.ndarray, labels: np.ndarray, names: tuple[str, ...], id2label: list[str] | None
) -> dict[str, float]:
    if id2label is None:
        raise ValueError("token_classification metrics need id2label (the tag names, e.g. ['O', 'B', 'I'])")
    tags = _parse_tags(id2label)
    labels = _as_int_ids(labels, "token_classification labels")
    if labels.ndim != 2:
        raise ValueError(f"token_classification labels must have shape [n, T], got {labels.shape}")
    if predictions.ndim == 3:
        _check_finite(predictions, "token_classification predictions")
        if predictions.shape[2] != len(tags):
            raise ValueError(f"token_classification logits have {predictions.shape[2]} classes "
                             f"but id2label has {len(tags)} tags")
        pred = predictions.argmax(axis=2)
    elif predictions.ndim == 2:
        pred = _as_int_ids(predictions, "token_classification predicted ids")
    else:
        raise ValueError(f"token_classification predictions must be logits [n, T, C] or tag ids [n, T], "
                         f"got shape {predictions.shape}")
    if pred.shape != labels.shape:
        raise ValueError(f"token_classification: predictions cover {pred.shape} tokens but labels {labels.shape}")
    mask = labels != IGNORE_INDEX
    if not mask.any():
        raise ValueError("token_classification: no labelled tokens (every label is -100)")
    for what, ids in (("labels", labels[mask]), ("predicted ids", pred[mask])):
        if ids.min() < 0 or ids.max() >= len(tags):
            raise ValueError(f"token_classification {what} must lie in [0, {len(tags)}) (id2label size), "
                             f"got min {ids.min()} max {ids.max()}")

    n_gold = n_pred = n_correct = 0
    for row in range(labels.shape[0]):
        keep = mask[row]
        if not keep.any():
            continue
        gold_spans = _spans([tags[k] for k in labels[row][keep]])
        pred_spans = _spans([tags[k] for k in pred[row][keep]])
        n_gold += len(gold_spans)
        n_pred += len(pred_spans)
        n_correct += len(gold_spans & pred_spans)
    precision, recall = _safe_div(n_correct, n_pred), _safe_div(n_correct, n_gold)
    values = {
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * precision * recall, precision + recall),
        "accuracy": float((pred[mask] == labels[mask]).mean()),
    }
    return {name: values[name] for name in names}


# --------------------------------------------------------------------------- public entry points


def compute_task_metrics(
    task_type: str,
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    id2label: Sequence[str] | Mapping[int, str] | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, float]:
    """Metrics of one task from raw model outputs (see the module docstring for shapes and metric names).

    Args:
        task_type: one of :data:`TASK_TYPES`.
        predictions: logits (a tuple is accepted: its first element is used; torch tensors too).
        labels: gold labels; ``-100`` marks ignored positions for token classification.
        id2label: tag names by id; required for ``token_classification`` (``["O", "B", "I"]`` or
            ``["O", "B-Disease", "I-Disease"]``; a ``config.id2label`` dict works too).
        metrics: a subset of :data:`METRICS` ``[task_type]``; ``None`` gives :data:`DEFAULT_METRICS`.

    Returns:
        ``{metric: value}`` in the order requested, plain Python floats.

    Raises:
        ValueError: unknown task type or metric, empty input, NaN/inf, mismatched shapes, ids out of range,
            missing or malformed ``id2label``.

    Example::

        >>> import numpy as np
        >>> compute_task_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.5]),
        ...                      metrics=["mse", "mae"])
        {'mse': 0.08333333333333333, 'mae': 0.16666666666666666}
    """
    names = _resolve_metrics(task_type, metrics)
    pred_arr, label_arr = _to_numpy(predictions, "predictions"), _to_numpy(labels, "labels")
    if pred_arr.size == 0 or label_arr.size == 0:
        raise ValueError(f"{task_type}: no examples (predictions shape {pred_arr.shape}, labels shape {label_arr.shape})")
    if task_type == "classification":
        return _classification(pred_arr, label_arr, names)
    if task_type == "multilabel":
        return _multilabel(pred_arr, label_arr, names)
    if task_type == "regression":
        return _regression(pred_arr, label_arr, names)
    return _token_classification(pred_arr, label_arr, names, _normalize_id2label(id2label))


def _concat_batches(task_type: str, arrays: list[np.ndarray], pad_value: float) -> np.ndarray:
    """Concatenate per-batch arrays along axis 0; token-classification batches are padded to a common T."""
    if task_type == "token_classification" and len({a.shape[1] for a in arrays}) > 1:
        width = max(a.shape[1] for a in arrays)
        arrays = [
            np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=pad_value)
            for a in arrays
        ]
    return np.concatenate(arrays, axis=0)


def make_compute_metrics(
    task_type: str,
    id2label: Sequence[str] | Mapping[int, str] | None = None,
    metrics: Sequence[str] | None = None,
) -> Callable[..., dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer`` evaluating one task.

    The arguments are validated now, not at the first evaluation. The returned callable takes an
    ``EvalPrediction`` (tuple predictions: the first element is used). With
    ``TrainingArguments(batch_eval_metrics=True)`` Trainer calls it once per batch with
    ``compute_result=False`` and finally ``True``: batches are accumulated and the metrics of all of
    them are returned on the final call (``{}`` before).

    Example::

        >>> compute_metrics = make_compute_metrics("token_classification", id2label=["O", "B", "I"])
        >>> trainer = Trainer(model=model, args=args, compute_metrics=compute_metrics)  # doctest: +SKIP
    """
    names = _resolve_metrics(task_type, metrics)
    labels_list = _normalize_id2label(id2label)
    if task_type == "token_classification":
        if labels_list is None:
            raise ValueError("token_classification metrics need id2label (the tag names, e.g. ['O', 'B', 'I'])")
        _parse_tags(labels_list)
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def compute_metrics(eval_pred: EvalPrediction, compute_result: bool | None = None) -> dict[str, float]:
        preds = _to_numpy(eval_pred.predictions, "predictions")
        labels = _to_numpy(eval_pred.label_ids, "label_ids")
        if compute_result is None:
            return compute_task_metrics(task_type, preds, labels, id2label=labels_list, metrics=names)
        pending.append((preds, labels))
        if not compute_result:
            return {}
        all_preds = _concat_batches(task_type, [p for p, _ in pending], 0.0)
        all_labels = _concat_batches(task_type, [lab for _, lab in pending], IGNORE_INDEX)
        pending.clear()
        return compute_task_metrics(task_type, all_preds, all_labels, id2label=labels_list, metrics=names)

    return compute_metrics
