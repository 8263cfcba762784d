"""Pointwise V-usable information (PVI) from model outputs: pure numpy, no models.

PVI (Ethayarajh, Choi and Swayamdipta, ICML 2022) compares two models of the same family on a
held-out example ``(x, y)``: ``g_x``, fine-tuned on ``(x, y)`` pairs, and ``g_null``, fine-tuned on
``(null, y)`` pairs (or the analytic label prior from :mod:`hf_taskgroup.pvi.null`)::

    PVI(x -> y) = -log2 g_null[null](y) + log2 g_x[x](y) = H_yb - H_yx        (bits)

with ``H_yx = -log2 g_x[x](y)`` and ``H_yb = -log2 g_null[null](y)``. The mean PVI over held-out
data estimates the task's V-usable information. Each ``pvi_<task type>`` function takes numpy
arrays of model outputs and returns a :class:`PVIScores`; :func:`compute_pvi_scores` dispatches.
Numerics: log-probabilities come from a stable log-softmax / log-sigmoid of float64 logits (never
the log of a softmax), and nats become bits by an exact division by ``ln 2``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from hf_taskgroup.data.tasks import TASK_TYPES
from hf_taskgroup.training.outputs import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "SIGMA_FLOOR", "TASK_TYPES", "PVICollapseWarning", "PVIScores", "compute_pvi_scores",
           "detect_collapse", "pvi_classification", "pvi_multilabel", "pvi_regression",
           "pvi_token_classification", "residual_sigma"]


#: Smallest std used for a Gaussian (constant labels, exact predictions); a warning says when it is used.
SIGMA_FLOOR = 1e-6

LN2 = math.log(2.0)

#: Regression counts as collapsed when the prediction std is below this fraction of the label std.
REGRESSION_COLLAPSE_RATIO = 1e-3


class PVICollapseWarning(UserWarning):
    """``g_x`` gave the same prediction for every held-out example while the labels vary.

    PVI is meaningless then (``g_x`` learned no more than the null model); re-train with another
    learning rate or seed. Turn it into an error with ``warnings.simplefilter("error", PVICollapseWarning)``.
    """


@dataclass
class PVIScores:
    """Per-example PVI scores (bits) of one held-out set; every array has length ``n``.

    Attributes:
        pvi: ``h_yb - h_yx`` per example. ``NaN`` marks an example with nothing to score (a token
            example without labelled tokens); such examples are left out of the aggregates.
        h_yx: ``-log2 g_x[x](y)`` (for regression, the negative log2 density, which can be < 0).
        h_yb: ``-log2 g_null[null](y)``.
        correct: whether ``g_x``'s prediction is right (see each ``pvi_*`` function).
        prediction: ``g_x``'s prediction: an int class (classification), a float (regression), or an
            object array holding one list of ints per example (multilabel: multi-hot over labels;
            tokens: the predicted tag of every labelled token).
        task_type: one of :data:`TASK_TYPES`, when known.
        collapsed: whether :func:`detect_collapse` flagged ``g_x`` on these examples.

    Example:
        >>> import numpy as np
        >>> scores = pvi_classification(np.log([[0.8, 0.2], [0.4, 0.6]]), np.log([0.5, 0.5]), [0, 0])
        >>> scores.pvi.round(3).tolist()
        [0.678, -0.322]
        >>> round(scores.v_information(), 3), scores.accuracy()
        (0.178, 0.5)
        >>> sorted(scores.to_columns())
        ['pvi', 'pvi_correct', 'pvi_h_yb', 'pvi_h_yx', 'pvi_prediction']
    """

    pvi: np.ndarray
    h_yx: np.ndarray
    h_yb: np.ndarray
    correct: np.ndarray
    prediction: np.ndarray
    task_type: str | None = None
    collapsed: bool = False

    def __post_init__(self) -> None:
        self.pvi = np.asarray(self.pvi, dtype=np.float64)
        self.h_yx = np.asarray(self.h_yx, dtype=np.float64)
        self.h_yb = np.asarray(self.h_yb, dtype=np.float64)
        self.correct = np.asarray(self.correct, dtype=bool)
        if not isinstance(self.prediction, np.ndarray) and any(isinstance(p, (list, tuple, np.ndarray))
                                                                for p in self.prediction):
            self.prediction = _object_array([_plain(p) for p in self.prediction])
        self.prediction = np.asarray(self.prediction)
        if self.prediction.ndim == 2:  # multi-hot rows -> one list per example
            self.prediction = _object_array([row.tolist() for row in self.prediction])
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ValueError(f"PVIScores.task_type must be one of {TASK_TYPES}, got {self.task_type!r}")
        n = len(self.pvi)
        for name in ("pvi", "h_yx", "h_yb", "correct", "prediction"):
            arr = getattr(self, name)
            if arr.ndim != 1 or len(arr) != n:
                raise ValueError(f"PVIScores.{name} must be 1-D with {n} entries (like pvi), got shape {arr.shape}")

    def __len__(self) -> int:
        return len(self.pvi)

    @property
    def scored(self) -> np.ndarray:
        """Boolean mask of the examples that have a score (``pvi`` is not NaN)."""
        return ~np.isnan(self.pvi)

    def v_information(self) -> float:
        """Mean PVI (bits) over the scored examples: the V-usable information estimate; NaN if none."""
        mask = self.scored
        return float(np.mean(self.pvi[mask])) if mask.any() else math.nan

    def accuracy(self) -> float:
        """Fraction of the scored examples that ``g_x`` got right; NaN if none."""
        mask = self.scored
        return float(np.mean(self.correct[mask])) if mask.any() else math.nan

    def summary(self) -> dict[str, Any]:
        """Aggregates for logs and cards: n, n_scored, v_information, accuracy, mean H_yx/H_yb, collapsed."""
        mask = self.scored
        return {
            "task_type": self.task_type,
            "n": len(self),
            "n_scored": int(mask.sum()),
            "v_information": self.v_information(),
            "accuracy": self.accuracy(),
            "mean_h_yx": float(np.mean(self.h_yx[mask])) if mask.any() else math.nan,
            "mean_h_yb": float(np.mean(self.h_yb[mask])) if mask.any() else math.nan,
            "collapsed": self.collapsed,
        }

    def to_columns(self) -> dict[str, list]:
        """Plain-Python columns for ``Dataset.add_column``: pvi, pvi_h_yx, pvi_h_yb, pvi_correct, pvi_prediction.

        NaN scores become ``None`` (a null in Arrow); predictions become ints, floats or lists of ints.
        """
        return {
            "pvi": _nullable_floats(self.pvi),
            "pvi_h_yx": _nullable_floats(self.h_yx),
            "pvi_h_yb": _nullable_floats(self.h_yb),
            "pvi_correct": [bool(v) for v in self.correct],
            "pvi_prediction": [_plain(v) for v in self.prediction],
        }


def pvi_classification(logits_x: Any, null_logits: Any, labels: Any) -> PVIScores:
    """PVI of single-label classification.

    Args:
        logits_x: ``g_x`` logits (or log-probabilities) ``[n, C]``, ``C >= 2``.
        null_logits: ``g_null`` logits or log-probabilities, ``[C]`` (the one null output, or the
            analytic prior) or ``[n, C]``. Log-softmax is shift-invariant, so logits and
            log-probabilities give the same result; ``-inf`` (probability 0) is allowed.
        labels: gold class ids ``[n]`` in ``[0, C)`` (integral floats and bools are accepted).

    Returns:
        :class:`PVIScores`; ``prediction`` is the argmax class, ``correct`` is ``prediction == label``.
    """
    lx = _check_softmax_logits("logits_x", _as_float_array("logits_x", logits_x, ndims=(2,)))
    n, c = lx.shape
    _check_nonempty("logits_x", n)
    if c < 2:
        raise ValueError(f"logits_x needs at least 2 classes, got shape {lx.shape}; for a single-logit binary "
                         "head pass two logits per example, e.g. np.stack([np.zeros(n), z], axis=1)")
    null = _check_softmax_logits("null_logits", _broadcast_null("null_logits", null_logits, lx.shape, "logits_x"))
    y = _as_int_labels("labels", labels, shape=(n,), num_classes=c, ref="logits_x rows")
    h_yx = -_gold_log_prob(lx, y) / LN2
    h_yb = -_gold_log_prob(null, y) / LN2
    pred = np.argmax(lx, axis=1)
    return _finish(h_yx, h_yb, pred == y, pred, "classification", detect_collapse(pred, y, "classification"))


def pvi_multilabel(logits_x: Any, null_logits: Any, labels: Any) -> PVIScores:
    """PVI of multi-label classification: the sum over labels of per-label Bernoulli PVIs.

    Args:
        logits_x: ``g_x`` per-label Bernoulli logits ``[n, L]`` (``log p / (1 - p)``; +-inf allowed).
        null_logits: ``g_null`` per-label Bernoulli logits ``[L]`` or ``[n, L]``.
        labels: multi-hot gold labels ``[n, L]`` with values 0 or 1.

    Returns:
        :class:`PVIScores` where ``h_yx``/``h_yb`` are summed over labels; ``prediction`` is the
        multi-hot list of labels with logit > 0 (p > 0.5); ``correct`` means every label is right.
    """
    lx = _as_float_array("logits_x", logits_x, ndims=(2,))
    n, n_labels = lx.shape
    _check_nonempty("logits_x", n)
    if n_labels < 1:
        raise ValueError(f"logits_x has no labels: shape {lx.shape}")
    null = _broadcast_null("null_logits", null_logits, lx.shape, "logits_x")
    y = _as_int_labels("labels", labels, shape=(n, n_labels), num_classes=2, ref="logits_x", binary=True)
    positive = y == 1
    lp_x = _log_sigmoid(np.where(positive, lx, -lx))
    lp_null = _log_sigmoid(np.where(positive, null, -null))
    h_yx = -lp_x.sum(axis=1) / LN2
    h_yb = -lp_null.sum(axis=1) / LN2
    pred = (lx > 0).astype(np.int64)
    correct = np.all(pred == y, axis=1)
    prediction = _object_array([row.tolist() for row in pred])
    return _finish(h_yx, h_yb, correct, prediction, "multilabel", detect_collapse(pred, y, "multilabel"))


def pvi_regression(
    pred_x: Any, labels: Any, *, sigma_x: float | Any, null_mean: float, null_sigma: float
) -> PVIScores:
    """PVI of regression from Gaussian densities, in bits.

    ``H_yx = -log2 N(y; pred_x, sigma_x^2)`` and ``H_yb = -log2 N(y; null_mean, null_sigma^2)``, so
    ``PVI = log2 N(y; pred_x, sigma_x^2) - log2 N(y; null_mean, null_sigma^2)``. These are densities:
    ``H`` can be negative and the values depend on the label scale, but the PVI does not (rescaling
    labels, predictions and sigmas together leaves it unchanged).

    Args:
        pred_x: ``g_x`` predictions ``[n]`` (``[n, 1]`` is squeezed).
        labels: gold values ``[n]`` (``[n, 1]`` is squeezed).
        sigma_x: ``g_x``'s residual std, a float or a per-example ``[n]`` array (see :func:`residual_sigma`).
        null_mean, null_sigma: the null Gaussian (the training label mean and std, or a trained null
            model's output and residual std; see :func:`hf_taskgroup.pvi.null.analytic_null_regression`).

    Returns:
        :class:`PVIScores` whose ``correct`` means ``g_x`` is closer to the label than the null mean
        (``|pred - y| < |null_mean - y|``, or ``pred == y`` exactly): "did the input help?".
    """
    pred, y = _paired_values("pred_x", pred_x, "labels", labels)
    n = len(pred)
    sx = _positive("sigma_x", sigma_x, n)
    s0 = float(_positive("null_sigma", null_sigma, None))
    mu0 = float(null_mean)
    if not math.isfinite(mu0):
        raise ValueError(f"null_mean must be finite, got {null_mean!r}")
    h_yx = _gaussian_nll_bits(y, pred, sx)
    h_yb = _gaussian_nll_bits(y, mu0, s0)
    err = np.abs(pred - y)
    correct = (err < np.abs(mu0 - y)) | (err == 0)
    return _finish(h_yx, h_yb, correct, pred, "regression", detect_collapse(pred, y, "regression"))


@overload
def pvi_token_classification(
    logits_x: Any, null_logits: Any, labels: Any, *, return_tokens: Literal[False] = ...
) -> PVIScores: ...
@overload
def pvi_token_classification(
    logits_x: Any, null_logits: Any, labels: Any, *, return_tokens: Literal[True]
) -> tuple[PVIScores, list[np.ndarray]]: ...
def pvi_token_classification(
    logits_x: Any, null_logits: Any, labels: Any, *, return_tokens: bool = False
) -> PVIScores | tuple[PVIScores, list[np.ndarray]]:
    """PVI of token classification: per-token PVI, averaged over the labelled tokens of each example.

    Args:
        logits_x: ``g_x`` logits ``[n, T, C]`` (padded; padding positions carry label -100).
        null_logits: the tag prior as logits or log-probabilities ``[C]`` (a null input has no
            tokens to tag; see :func:`hf_taskgroup.pvi.null.analytic_null_token`), or ``[n, T, C]``.
        labels: gold tags ``[n, T]`` in ``[0, C)``; positions equal to -100 (special tokens, later
            sub-words, padding) are ignored.
        return_tokens: also return, per example, the per-token PVIs (bits) of its labelled tokens.

    Returns:
        :class:`PVIScores` where ``h_yx``, ``h_yb`` and ``pvi`` are means over labelled tokens;
        ``prediction`` holds the predicted tags of the labelled tokens; ``correct`` means every
        labelled token is right. An example without labelled tokens gets NaN scores and
        ``correct=False`` (with a warning) and is left out of the aggregates.
        With ``return_tokens=True``: ``(scores, token_pvi)``, ``token_pvi[i]`` of length
        ``(labels[i] != -100).sum()``.
    """
    lx = _as_float_array("logits_x", logits_x, ndims=(3,), allow_nan=True)
    n, t, c = lx.shape
    _check_nonempty("logits_x", n)
    y = _as_int_labels("labels", labels, shape=(n, t), num_classes=c, ref="logits_x [n, T]", allow_ignore=True)
    mask = y != IGNORE_INDEX
    y_safe = np.where(mask, y, 0)
    # Only labelled positions must hold well-formed logits; padding may hold anything (even NaN).
    lx = _check_softmax_logits("logits_x", np.where(mask[..., None], lx, 0.0))
    null = _check_softmax_logits("null_logits", _broadcast_null("null_logits", null_logits, lx.shape, "logits_x"))
    tok_hx = np.where(mask, -_gold_log_prob(lx, y_safe) / LN2, 0.0)
    tok_hb = np.where(mask, -_gold_log_prob(null, y_safe) / LN2, 0.0)
    counts = mask.sum(axis=1)
    has_tokens = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        h_yx = np.where(has_tokens, tok_hx.sum(axis=1) / counts, np.nan)
        h_yb = np.where(has_tokens, tok_hb.sum(axis=1) / counts, np.nan)
    if not has_tokens.all():
        empty = np.flatnonzero(~has_tokens)
        warnings.warn(f"{len(empty)} of {n} token-classification examples have no labelled token (first: "
                      f"{empty[:5].tolist()}); their PVI is NaN and they are left out of the aggregates",
                      UserWarning, stacklevel=2)
    pred = np.argmax(lx, axis=2)  # padding positions now hold zeros; only labelled ones are read
    correct = np.array([bool(has_tokens[i]) and bool(np.all(pred[i][mask[i]] == y[i][mask[i]])) for i in range(n)])
    prediction = _object_array([pred[i][mask[i]].tolist() for i in range(n)])
    collapsed = detect_collapse(pred, y, "token_classification")
    scores = _finish(h_yx, h_yb, correct, prediction, "token_classification", collapsed)
    if return_tokens:
        tok_pvi = tok_hb - tok_hx
        return scores, [tok_pvi[i][mask[i]] for i in range(n)]
    return scores


def compute_pvi_scores(task_type: str, **kwargs: Any) -> PVIScores:
    """Dispatch to the ``pvi_*`` function of ``task_type`` (one of :data:`TASK_TYPES`).

    Example:
        >>> compute_pvi_scores("classification", logits_x=[[2.0, 0.0]], null_logits=[0.0, 0.0],
        ...                    labels=[0]).pvi.round(3).tolist()
        [0.817]
    """
    funcs = {
        "classification": pvi_classification,
        "multilabel": pvi_multilabel,
        "regression": pvi_regression,
        "token_classification": pvi_token_classification,
    }
    if task_type not in funcs:
        raise ValueError(f"unknown task_type {task_type!r}; expected one of {TASK_TYPES}")
    if kwargs.get("return_tokens"):
        raise ValueError("compute_pvi_scores returns PVIScores only; call "
                         "pvi_token_classification(..., return_tokens=True) for per-token PVIs")
    return funcs[task_type](**kwargs)


def detect_collapse(predictions: Any, labels: Any, task_type: str) -> bool:
    """Whether ``g_x`` collapsed: one constant prediction on held-out data while the labels vary.

    - classification: a single predicted class while there are >= 2 gold classes.
    - token_classification: a single predicted tag over the labelled tokens (label != -100) while
      the gold tags vary. ``predictions`` is ``[n, T]`` aligned with ``labels``, or per example the
      predictions of the labelled tokens only (as in :attr:`PVIScores.prediction`).
    - regression: prediction std < ``REGRESSION_COLLAPSE_RATIO`` (1e-3) x label std (label std > 0).
    - multilabel: every example got the same predicted label set while the gold label sets vary.

    Constant labels never count as a collapse (a constant prediction is then right).

    Example:
        >>> detect_collapse([1, 1, 1], [0, 1, 1], "classification")
        True
    """
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task_type {task_type!r}; expected one of {TASK_TYPES}")
    if task_type == "multilabel":
        pred_rows = [tuple(np.asarray(p).ravel().tolist()) for p in predictions]
        gold_rows = [tuple(np.asarray(g).ravel().tolist()) for g in labels]
        _same_length(pred_rows, gold_rows)
        return len(set(pred_rows)) == 1 and len(set(gold_rows)) > 1
    if task_type == "token_classification":
        pred, gold = _labelled_tokens(predictions, labels)
    else:
        pred, gold = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
        _same_length(pred, gold)
    if len(gold) == 0:
        return False
    if task_type == "regression":
        label_std = float(np.std(gold.astype(np.float64)))
        return label_std > 0 and float(np.std(pred.astype(np.float64))) < REGRESSION_COLLAPSE_RATIO * label_std
    return len(np.unique(pred)) == 1 and len(np.unique(gold)) > 1


def residual_sigma(predictions: Any, labels: Any) -> float:
    """Root-mean-square residual: the maximum-likelihood std of a Gaussian centred on the predictions.

    Use it on ``g_x``'s training (or a development) set to get ``sigma_x`` for :func:`pvi_regression`.
    Floored at :data:`SIGMA_FLOOR` (with a warning) when the predictions are exact.

    Example:
        >>> residual_sigma([1.0, 2.0], [2.0, 1.0])
        1.0
    """
    pred, y = _paired_values("predictions", predictions, "labels", labels)
    sigma = float(np.sqrt(np.mean((pred - y) ** 2)))
    if sigma < SIGMA_FLOOR:
        warnings.warn(f"residual std {sigma:g} is below {SIGMA_FLOOR:g} (exact predictions); using {SIGMA_FLOOR:g}",
                      UserWarning, stacklevel=2)
        sigma = SIGMA_FLOOR
    return sigma


# ----------------------------------------------------------------------------------------------
# private helpers


def _as_float_array(name: str, x: Any, ndims: tuple[int, ...], allow_nan: bool = False) -> np.ndarray:
    """``x`` as a float64 array with one of ``ndims`` dimensions and (unless allowed) no NaN."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array: {err}") from err
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if not allow_nan:
        bad = np.argwhere(np.isnan(arr))
        if bad.size:
            raise ValueError(f"{name} has NaN at index {_index(bad[0])}")
    return arr


def _check_softmax_logits(name: str, arr: np.ndarray) -> np.ndarray:
    """Reject NaN, +inf, and rows (last axis) with no finite entry; -inf (probability 0) is fine."""
    bad = np.argwhere(np.isnan(arr))
    if bad.size:
        raise ValueError(f"{name} has NaN at index {_index(bad[0])}")
    bad = np.argwhere(arr == np.inf)
    if bad.size:
        raise ValueError(f"{name}[{_index(bad[0])}] = inf: softmax logits must be < +inf")
    bad = np.argwhere(np.all(arr == -np.inf, axis=-1))
    if bad.size:
        raise ValueError(f"{name}[{_index(bad[0])}] is -inf for every class (no class has probability > 0)")
    return arr


def _broadcast_null(name: str, null: Any, shape: tuple[int, ...], ref: str) -> np.ndarray:
    """Null-model logits given once (``shape[-1:]``) or per example (``shape``), broadcast to ``shape``."""
    arr = _as_float_array(name, null, ndims=(1, len(shape)))
    if arr.shape not in (shape[-1:], shape):
        raise ValueError(f"{name} has shape {arr.shape}; expected {shape[-1:]} (one null output) or {shape} "
                         f"(one per example, like {ref})")
    return np.broadcast_to(arr, shape)


def _as_int_labels(name: str, x: Any, shape: tuple[int, ...], num_classes: int, ref: str,
                   allow_ignore: bool = False, binary: bool = False) -> np.ndarray:
    """Integer labels of ``shape`` in ``[0, num_classes)`` (plus -100 when ``allow_ignore``)."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but {ref} give {shape}")
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        bad = np.argwhere(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            raise ValueError(f"{name}[{_index(bad[0])}] = {arr[tuple(bad[0])].item()} is not an integer label")
    arr = arr.astype(np.int64)
    ok = (arr >= 0) & (arr < num_classes)
    if allow_ignore:
        ok |= arr == IGNORE_INDEX
    bad = np.argwhere(~ok)
    if bad.size:
        want = "0 or 1" if binary else f"in [0, {num_classes})" + (f" or {IGNORE_INDEX}" if allow_ignore else "")
        raise ValueError(f"{name}[{_index(bad[0])}] = {arr[tuple(bad[0])]} must be {want}")
    return arr


def _index(idx: np.ndarray) -> str:
    return ", ".join(str(int(i)) for i in idx)


def _gold_log_prob(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stable ``log_softmax(logits)[..., y]`` (nats) without materialising the log-softmax."""
    top = np.max(logits, axis=-1, keepdims=True)
    log_norm = np.log(np.sum(np.exp(logits - top), axis=-1)) + top[..., 0]
    gold = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return gold - log_norm


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    """Stable ``log(sigmoid(z))`` (nats), exact at +-inf."""
    return -np.logaddexp(0.0, -z)


def _finish(h_yx: np.ndarray, h_yb: np.ndarray, correct: np.ndarray, prediction: np.ndarray,
            task_type: str, collapsed: bool) -> PVIScores:
    if collapsed:
        warnings.warn(f"g_x collapsed on this {task_type} held-out set: it gives the same prediction for every "
                      "example while the labels vary, so its PVI is meaningless; re-train it with another "
                      "learning rate or seed", PVICollapseWarning, stacklevel=3)
    with np.errstate(invalid="ignore"):
        pvi = h_yb - h_yx
    return PVIScores(pvi=pvi, h_yx=h_yx, h_yb=h_yb, correct=correct, prediction=prediction,
                     task_type=task_type, collapsed=collapsed)


def _gaussian_nll_bits(y: np.ndarray, mean: np.ndarray | float, sigma: np.ndarray | float) -> np.ndarray:
    z = (y - mean) / sigma
    return (0.5 * math.log(2.0 * math.pi) + np.log(sigma) + 0.5 * z * z) / LN2


def _paired_values(name: str, x: Any, ref_name: str, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long, non-empty, finite ``[n]`` (or ``[n, 1]``) float arrays."""
    out = []
    for nm, val in ((name, x), (ref_name, ref)):
        arr = _as_float_array(nm, val, ndims=(1, 2))
        if arr.ndim == 2 and arr.shape[1] != 1:
            raise ValueError(f"{nm} must be [n] or [n, 1], got shape {arr.shape}")
        bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
        if bad.size:
            raise ValueError(f"{nm}[{bad[0]}] = {arr.reshape(-1)[bad[0]].item()} is not finite")
        out.append(arr.reshape(-1))
    if len(out[0]) != len(out[1]):
        raise ValueError(f"{ref_name} has {len(out[1])} entries but {name} has {len(out[0])}")
    _check_nonempty(name, len(out[0]))
    return out[0], out[1]


def _positive(name: str, value: Any, n: int | None) -> np.ndarray:
    """A finite positive std: a float, or (when ``n`` is given) ``[n]`` per-example values."""
    arr = _as_float_array(name, value, ndims=(0,) if n is None else (0, 1))
    if arr.ndim == 1 and len(arr) != n:
        raise ValueError(f"{name} must be a float or have {n} entries, got shape {arr.shape}")
    flat = arr.reshape(-1)
    bad = np.flatnonzero(~(np.isfinite(flat) & (flat > 0)))
    if bad.size:
        raise ValueError(f"{name}{'' if arr.ndim == 0 else f'[{bad[0]}]'} must be a finite positive std, "
                         f"got {flat[bad[0]].item()}")
    return arr


def _check_nonempty(name: str, n: int) -> None:
    if n == 0:
        raise ValueError(f"{name} has no examples (n = 0)")


def _same_length(pred: Sequence, gold: Sequence) -> None:
    if len(pred) != len(gold):
        raise ValueError(f"predictions has {len(pred)} entries but labels has {len(gold)}")


def _labelled_tokens(predictions: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Flatten token predictions and gold tags over the labelled positions (label != -100)."""
    _same_length(predictions, labels)
    preds, golds = [], []
    for i, (p, g) in enumerate(zip(predictions, labels)):
        p, g = np.asarray(p).ravel(), np.asarray(g).ravel()
        mask = g != IGNORE_INDEX
        if len(p) == len(g):
            p = p[mask]
        elif len(p) != int(mask.sum()):
            raise ValueError(f"predictions[{i}] has {len(p)} entries; expected {len(g)} (aligned with labels[{i}]) "
                             f"or {int(mask.sum())} (one per labelled token)")
        preds.append(p)
        golds.append(g[mask])
    if not preds:
        return np.array([]), np.array([])
    return np.concatenate(preds), np.concatenate(golds)


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _nullable_floats(arr: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in arr.tolist()]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
