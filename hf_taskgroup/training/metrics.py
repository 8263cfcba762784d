"""Per-task evaluation metrics, offline: scikit-learn, scipy and seqeval behind one small adapter.

:func:`metric_inputs` is the adapter: it turns the raw model outputs (logits) and labels of one task into
what the metric libraries take (class ids, 0/1 indicator rows, float vectors or tag-name sequences),
handling the ignore index ``-100``, the ``id2label`` mapping of token tasks and the multi-label threshold.
:func:`compute_task_metrics` scores those inputs with scikit-learn / scipy / seqeval and returns a flat
``{metric_name: float}`` dict; :func:`make_compute_metrics` wraps it as a ``compute_metrics`` callable
for ``transformers.Trainer``, optionally with any `evaluate <https://huggingface.co/docs/evaluate>`_
metric module (an object with ``.compute(predictions=, references=)``) fed the same adapted inputs.

Inputs per task type (``n`` examples): ``classification`` logits ``[n, C]`` (or integer class ids
``[n]``) with labels ``[n]``; ``multilabel`` logits ``[n, L]`` (logit > 0 is a positive label) with
0/1 labels ``[n, L]``; ``regression`` ``[n]`` or ``[n, 1]`` for both; ``token_classification``
logits ``[n, T, C]`` (or integer tag ids ``[n, T]``, e.g. after ``preprocess_logits_for_metrics``)
with labels ``[n, T]`` where ``-100`` marks ignored positions (padding, non-first sub-words).

Metrics (``*`` = computed by default; the primary metric, see :func:`primary_metric`, is first):

- classification: ``accuracy``\\*, ``f1_macro``\\*, ``mcc``\\*, ``f1_micro``, ``f1_weighted``,
  ``precision_macro``, ``recall_macro`` (scikit-learn; macro averages run over the classes that occur
  in the labels or the predictions; ``mcc`` is the multi-class Matthews correlation).
- multilabel: ``f1_micro``\\*, ``f1_macro``\\*, ``accuracy``\\* (subset accuracy: every label of an
  example right), ``hamming_accuracy`` (1 - Hamming loss), ``precision_micro``, ``recall_micro``
  (scikit-learn). ``f1_macro`` averages over the labels that are positive in the gold labels or the
  predictions at least once.
- regression: ``pearson``\\*, ``spearman``\\*, ``mse``\\*, ``rmse``, ``mae`` (scipy, scikit-learn).
- token_classification: ``f1``\\*, ``precision``\\*, ``recall``\\* (seqeval's entity-level micro
  scores, default/conlleval mode), ``accuracy``\\* (token accuracy over positions whose label is not ``-100``).

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

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from hf_taskgroup.data.tasks import TASK_TYPES
from hf_taskgroup.training.outputs import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    from transformers import EvalPrediction

__all__ = [
    "TASK_TYPES",
    "METRICS",
    "DEFAULT_METRICS",
    "IGNORE_INDEX",
    "MetricModule",
    "primary_metric",
    "greater_is_better",
    "metric_inputs",
    "compute_task_metrics",
    "make_compute_metrics",
    "extract_entities",
]

#: Every metric each task type can compute, in output order; the first one is the primary metric.
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


@runtime_checkable
class MetricModule(Protocol):
    """What :func:`make_compute_metrics` accepts as an extra metric: an ``evaluate.EvaluationModule``
    (``evaluate.load("...")``) or any object with this ``compute`` method."""

    def compute(self, *, predictions: Any, references: Any, **kwargs: Any) -> Mapping[str, Any] | None: ...


def _check_task_type(task_type: str) -> None:
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")


def primary_metric(task_type: str) -> str:
    """The metric used to rank models of a task type (for ``metric_for_best_model`` and reports).

    ``classification`` -> ``"accuracy"``, ``multilabel`` -> ``"f1_micro"``, ``regression`` ->
    ``"pearson"``, ``token_classification`` -> ``"f1"`` (entity-level). All of them are higher-is-better.

    Example::

        >>> primary_metric("regression")
        'pearson'
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

    Example::

        >>> greater_is_better("eval_biosses_mse"), greater_is_better("eval_hoc_f1_micro")
        (False, True)
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


# --------------------------------------------------------------------------- the adapter


def _canonical_tag(tag: str, where: str) -> str:
    """``"B-X"``/``"b_X"`` -> ``"B-X"``; ``"B"`` -> ``"B"``; ``"O"`` -> ``"O"`` (IOBES prefixes too), the
    spelling seqeval reads; anything else is not a BIO/IOBES tag."""
    if tag == "O":
        return tag
    prefix, rest = tag[:1].upper(), tag[1:]
    if prefix not in ("B", "I", "E", "S") or (rest and rest[0] not in "-_"):
        raise ValueError(f"{where} = {tag!r} is not a BIO/IOBES tag; expected 'O', 'B', 'I', 'B-<type>' or 'I-<type>'")
    return f"{prefix}-{rest[1:]}" if rest[1:] else prefix


def _tag_names(id2label: Sequence[str] | Mapping[int, str] | None) -> list[str]:
    """The canonical tag name of each id (``config.id2label`` dicts with int or str keys work too)."""
    if id2label is None:
        raise ValueError("token_classification metrics need id2label (the tag names, e.g. ['O', 'B', 'I'])")
    if isinstance(id2label, Mapping):
        keys = sorted(int(k) for k in id2label)
        if keys != list(range(len(keys))):
            raise ValueError(f"id2label keys must be 0..{len(keys) - 1}, got {keys}")
        names = [str(id2label[k] if k in id2label else id2label[str(k)]) for k in keys]  # type: ignore[index]
    else:
        names = [str(t) for t in id2label]
    return [_canonical_tag(tag, f"id2label[{i}]") for i, tag in enumerate(names)]


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


def _classification_inputs(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    return pred, labels


def _multilabel_inputs(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if predictions.ndim != 2 or predictions.shape != labels.shape:
        raise ValueError(f"multilabel predictions and labels must both have shape [n, L], "
                         f"got {predictions.shape} and {labels.shape}")
    _check_finite(predictions, "multilabel predictions")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("multilabel labels must be 0/1 indicators")
    return (predictions > 0).astype(np.int64), labels.astype(np.int64)  # the threshold: logit 0 = probability 0.5


def _regression_inputs(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    return pred, gold


def _token_inputs(
    predictions: np.ndarray, labels: np.ndarray, id2label: Sequence[str] | Mapping[int, str] | None
) -> tuple[list[list[str]], list[list[str]]]:
    tags = _tag_names(id2label)
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
    names = np.asarray(tags, dtype=object)
    rows = [row for row in range(labels.shape[0]) if mask[row].any()]  # a fully ignored row is no sequence
    return ([names[pred[r][mask[r]]].tolist() for r in rows], [names[labels[r][mask[r]]].tolist() for r in rows])


def metric_inputs(
    task_type: str,
    predictions: Any,
    labels: Any,
    *,
    id2label: Sequence[str] | Mapping[int, str] | None = None,
) -> tuple[Any, Any]:
    """The adapter: ``(predictions, references)`` in the form metric libraries take, from raw model outputs.

    - ``classification``: predicted class ids (argmax of the logits) and gold ids, both ``int64 [n]``.
    - ``multilabel``: 0/1 indicator rows ``int64 [n, L]``, a label predicted when its logit is > 0.
    - ``regression``: ``float64 [n]`` vectors (``[n, 1]`` is flattened).
    - ``token_classification``: one list of tag names per example (seqeval's input), positions whose
      label is ``-100`` removed and examples with no labelled position dropped; tag spellings are
      normalised (``"b_X"`` -> ``"B-X"``).

    Inputs are validated (see the module docstring); a tuple of outputs uses its first element, torch
    tensors work too.

    Example::

        >>> import numpy as np
        >>> metric_inputs("token_classification", np.array([[1, 2, 0]]), np.array([[1, -100, 0]]),
        ...               id2label=["O", "B", "I"])
        ([['B', 'O']], [['B', 'O']])
    """
    _check_task_type(task_type)
    pred_arr, label_arr = _to_numpy(predictions, "predictions"), _to_numpy(labels, "labels")
    if pred_arr.size == 0 or label_arr.size == 0:
        raise ValueError(f"{task_type}: no examples (predictions shape {pred_arr.shape}, labels shape {label_arr.shape})")
    if task_type == "classification":
        return _classification_inputs(pred_arr, label_arr)
    if task_type == "multilabel":
        return _multilabel_inputs(pred_arr, label_arr)
    if task_type == "regression":
        return _regression_inputs(pred_arr, label_arr)
    return _token_inputs(pred_arr, label_arr, id2label)


# --------------------------------------------------------------------------- the scorers (libraries)


def _correlation(kind: str, pred: np.ndarray, gold: np.ndarray) -> float:
    """scipy's Pearson / Spearman correlation; 0.0 when either side is constant (undefined there)."""
    from scipy import stats

    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return 0.0
    result = stats.pearsonr(pred, gold) if kind == "pearson" else stats.spearmanr(pred, gold)
    return float(result.statistic)


def _mcc(gold: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's (multi-class) Matthews correlation; 0.0 when either side holds one class (undefined)."""
    from sklearn.metrics import matthews_corrcoef

    if np.ptp(gold) == 0 or np.ptp(pred) == 0:
        return 0.0
    return float(matthews_corrcoef(gold, pred))


def _multilabel_f1_macro(gold: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-label F1 over the labels positive somewhere in the gold rows or the predictions."""
    from sklearn.metrics import f1_score

    present = np.flatnonzero(gold.any(axis=0) | pred.any(axis=0))
    if not present.size:
        return 0.0
    return float(np.mean([f1_score(gold[:, j], pred[:, j], zero_division=0) for j in present]))


def _scorers(task_type: str) -> dict[str, Callable[[Any, Any], float]]:
    """``{metric: score(references, predictions)}`` of one task type, on :func:`metric_inputs`' output."""
    from sklearn import metrics as sk

    if task_type == "classification":
        return {
            "accuracy": sk.accuracy_score,
            "f1_macro": lambda y, p: sk.f1_score(y, p, average="macro", zero_division=0),
            "mcc": _mcc,
            "f1_micro": lambda y, p: sk.f1_score(y, p, average="micro", zero_division=0),
            "f1_weighted": lambda y, p: sk.f1_score(y, p, average="weighted", zero_division=0),
            "precision_macro": lambda y, p: sk.precision_score(y, p, average="macro", zero_division=0),
            "recall_macro": lambda y, p: sk.recall_score(y, p, average="macro", zero_division=0),
        }
    if task_type == "multilabel":
        # Micro scores pool every (example, label) decision: the binary scores of the flattened rows (scikit-learn
        # would read a one-label [n, 1] indicator matrix as binary classes 0/1 instead).
        return {
            "f1_micro": lambda y, p: sk.f1_score(y.ravel(), p.ravel(), zero_division=0),
            "f1_macro": _multilabel_f1_macro,
            "accuracy": sk.accuracy_score,  # subset accuracy on indicator rows (plain accuracy when L = 1)
            "hamming_accuracy": lambda y, p: sk.accuracy_score(y.ravel(), p.ravel()),
            "precision_micro": lambda y, p: sk.precision_score(y.ravel(), p.ravel(), zero_division=0),
            "recall_micro": lambda y, p: sk.recall_score(y.ravel(), p.ravel(), zero_division=0),
        }
    if task_type == "regression":
        return {
            "pearson": lambda y, p: _correlation("pearson", p, y),
            "spearman": lambda y, p: _correlation("spearman", p, y),
            "mse": sk.mean_squared_error,
            "rmse": sk.root_mean_squared_error,
            "mae": sk.mean_absolute_error,
        }
    from seqeval import metrics as seq

    return {
        "f1": lambda y, p: seq.f1_score(y, p, zero_division=0),
        "precision": lambda y, p: seq.precision_score(y, p, zero_division=0),
        "recall": lambda y, p: seq.recall_score(y, p, zero_division=0),
        "accuracy": seq.accuracy_score,  # token accuracy over the labelled positions
    }


def compute_task_metrics(
    task_type: str,
    predictions: Any,
    labels: Any,
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
    pred, gold = metric_inputs(task_type, predictions, labels, id2label=id2label)
    scorers = _scorers(task_type)
    return {name: float(scorers[name](gold, pred)) for name in names}


def extract_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entity spans ``(type, start, end_inclusive)`` of one tag sequence, by seqeval's default (conlleval) rules.

    A span starts at ``B-X`` (or ``S-X``), or at ``I-X`` after ``O`` or after a tag of another type;
    it continues with ``I-X`` and ends before anything else. Untyped tags (``"B"``, ``"I"``) have type ``""``.

    Example::

        >>> sorted(extract_entities(["B-D", "I-D", "O", "I-D", "B-C"]))
        [('C', 4, 4), ('D', 0, 1), ('D', 3, 3)]
    """
    from seqeval.metrics.sequence_labeling import get_entities

    canonical = [_canonical_tag(tag, f"tags[{i}]") for i, tag in enumerate(tags)]
    # seqeval names the type of an untyped tag ("B", "I") "_"
    return {("" if kind == "_" else kind, start, end) for kind, start, end in get_entities(canonical)}


# --------------------------------------------------------------------------- Trainer glue


def _concat_batches(task_type: str, arrays: list[np.ndarray], pad_value: float) -> np.ndarray:
    """Concatenate per-batch arrays along axis 0; token-classification batches are padded to a common T."""
    if task_type == "token_classification" and len({a.shape[1] for a in arrays}) > 1:
        width = max(a.shape[1] for a in arrays)
        arrays = [
            np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=pad_value)
            for a in arrays
        ]
    return np.concatenate(arrays, axis=0)


def _flat_scores(result: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """The numbers of an ``evaluate`` result, nested dicts flattened with ``_`` (``Disease_f1``)."""
    out: dict[str, float] = {}
    for key, value in (result or {}).items():
        if isinstance(value, Mapping):
            out.update(_flat_scores(value, f"{prefix}{key}_"))
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def _as_lists(x: Any) -> Any:
    return x.tolist() if isinstance(x, np.ndarray) else x


def make_compute_metrics(
    task_type: str,
    id2label: Sequence[str] | Mapping[int, str] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    metric_module: MetricModule | None = None,
) -> Callable[..., dict[str, float]]:
    """A ``compute_metrics`` for ``transformers.Trainer`` evaluating one task.

    The arguments are validated now, not at the first evaluation. The returned callable takes an
    ``EvalPrediction`` (tuple predictions: the first element is used). With
    ``TrainingArguments(batch_eval_metrics=True)`` Trainer calls it once per batch with
    ``compute_result=False`` and finally ``True``: batches are accumulated and the metrics of all of
    them are returned on the final call (``{}`` before).

    ``metric_module``: an extra metric, e.g. ``evaluate.load("seqeval")`` or any object with
    ``.compute(predictions=, references=)``. It receives :func:`metric_inputs`' output as Python lists
    (class ids, indicator rows, floats or tag-name sequences); the numbers of its result (nested dicts
    flattened: ``Disease_f1``) are added to the built-in metrics, and win when a name is the same.

    Example::

        >>> compute_metrics = make_compute_metrics("token_classification", id2label=["O", "B", "I"])
        >>> trainer = Trainer(model=model, args=args, compute_metrics=compute_metrics)  # doctest: +SKIP
    """
    names = _resolve_metrics(task_type, metrics)
    labels_list = _tag_names(id2label) if task_type == "token_classification" else id2label
    if metric_module is not None and not callable(getattr(metric_module, "compute", None)):
        raise TypeError(f"metric_module must have a compute(predictions=, references=) method, "
                        f"got {type(metric_module).__name__}")
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def score(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        out = compute_task_metrics(task_type, preds, labels, id2label=labels_list, metrics=names)
        if metric_module is not None:
            pred_in, ref_in = metric_inputs(task_type, preds, labels, id2label=labels_list)
            out.update(_flat_scores(metric_module.compute(predictions=_as_lists(pred_in), references=_as_lists(ref_in))))
        return out

    def compute_metrics(eval_pred: EvalPrediction, compute_result: bool | None = None) -> dict[str, float]:
        preds = _to_numpy(eval_pred.predictions, "predictions")
        labels = _to_numpy(eval_pred.label_ids, "label_ids")
        if compute_result is None:
            return score(preds, labels)
        pending.append((preds, labels))
        if not compute_result:
            return {}
        all_preds = _concat_batches(task_type, [p for p, _ in pending], 0.0)
        all_labels = _concat_batches(task_type, [lab for _, lab in pending], IGNORE_INDEX)
        pending.clear()
        return score(all_preds, all_labels)

    return compute_metrics
