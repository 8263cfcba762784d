"""Tests for hf_taskgroup.pvi.scores: PVI from model outputs, checked against hand-computed values."""

from __future__ import annotations

import doctest
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hf_taskgroup.pvi.scores as scores_module
from hf_taskgroup.pvi.scores import (
    PVICollapseWarning,
    PVIScores,
    compute_pvi_scores,
    detect_collapse,
    pvi_classification,
    pvi_multilabel,
    pvi_regression,
    pvi_token_classification,
    residual_sigma,
)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def gauss_log2(y: float, mu: float, sigma: float) -> float:
    return math.log2(math.exp(-0.5 * ((y - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)))


# ---------------------------------------------------------------- classification


def test_classification_known_probabilities():
    with pytest.warns(PVICollapseWarning):  # one predicted class, two gold classes
        scores = pvi_classification(np.log([[0.8, 0.2], [0.8, 0.2]]), np.log([0.5, 0.5]), [0, 1])
    np.testing.assert_allclose(scores.pvi, [math.log2(0.8 / 0.5), math.log2(0.2 / 0.5)])
    np.testing.assert_allclose(scores.h_yx, [-math.log2(0.8), -math.log2(0.2)])
    np.testing.assert_allclose(scores.h_yb, [1.0, 1.0])
    assert scores.prediction.tolist() == [0, 0]
    assert scores.correct.tolist() == [True, False]


def test_classification_raw_logits_are_softmaxed():
    # logits [2, 0, -1] -> p = e^z / sum e^z; null logits [1, 1, 1] -> uniform 1/3
    z = [2.0, 0.0, -1.0]
    p = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    scores = pvi_classification([z], [1.0, 1.0, 1.0], [2])
    assert scores.pvi[0] == pytest.approx(math.log2(p[2] * 3))
    assert scores.h_yx[0] == pytest.approx(-math.log2(p[2]))
    assert scores.h_yb[0] == pytest.approx(math.log2(3))


def test_classification_null_broadcast_matches_per_example_null():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 3))
    null = rng.normal(size=3)
    labels = [0, 1, 2, 1, 0]
    once = pvi_classification(logits, null, labels)
    tiled = pvi_classification(logits, np.tile(null, (5, 1)), labels)
    np.testing.assert_allclose(once.pvi, tiled.pvi)
    np.testing.assert_allclose(once.h_yb, tiled.h_yb)


def test_classification_per_example_null_rows_are_used():
    null = np.log([[0.5, 0.5], [0.25, 0.75]])
    scores = pvi_classification(np.log([[0.5, 0.5], [0.5, 0.5]]), null, [0, 0])
    np.testing.assert_allclose(scores.h_yb, [1.0, 2.0])


def test_classification_null_as_logits_or_log_probs_agree():
    logits = np.array([[1.0, 2.0, 3.0]])
    log_probs = np.log(np.array([0.2, 0.3, 0.5]))
    a = pvi_classification(logits, log_probs, [1])
    b = pvi_classification(logits, log_probs + 7.5, [1])  # unnormalised logits of the same distribution
    assert a.pvi[0] == pytest.approx(b.pvi[0])
    assert a.h_yb[0] == pytest.approx(-math.log2(0.3))


def test_classification_large_logits_stay_finite():
    logits = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype=np.float32)
    scores = pvi_classification(logits, [0.0, 0.0], [0, 0])
    assert np.all(np.isfinite(scores.pvi))
    assert scores.h_yx[0] == pytest.approx(0.0, abs=1e-12)
    assert scores.h_yx[1] == pytest.approx(2e4 / math.log(2))
    assert scores.pvi[1] == pytest.approx(1.0 - 2e4 / math.log(2))


def test_classification_zero_probability_null_gives_infinite_pvi():
    scores = pvi_classification([[0.0, 0.0]], [0.0, -np.inf], [1])
    assert scores.h_yb[0] == np.inf and scores.pvi[0] == np.inf


@pytest.mark.filterwarnings("ignore::hf_taskgroup.pvi.scores.PVICollapseWarning")
@settings(max_examples=30, deadline=None)
@given(shift=st.floats(-50, 50), seed=st.integers(0, 1000))
def test_classification_invariant_to_logit_shift(shift, seed):
    rng = np.random.default_rng(seed)
    logits, null = rng.normal(size=(4, 3)) * 5, rng.normal(size=3)
    labels = rng.integers(0, 3, size=4)
    base = pvi_classification(logits, null, labels)
    moved = pvi_classification(logits + shift, null - shift, labels)
    np.testing.assert_allclose(base.pvi, moved.pvi, atol=1e-9)
    np.testing.assert_allclose(base.pvi, base.h_yb - base.h_yx)


# ---------------------------------------------------------------- multilabel


def test_multilabel_sum_of_bernoulli_pvis():
    # label 0: gold 1, g_x logit 2, null logit 0 (p=0.5); label 1: gold 0, g_x logit -1, null p=0.25
    null = [0.0, math.log(0.25 / 0.75)]
    scores = pvi_multilabel([[2.0, -1.0]], null, [[1, 0]])
    expected = math.log2(sigmoid(2.0) / 0.5) + math.log2((1 - sigmoid(-1.0)) / 0.75)
    assert scores.pvi[0] == pytest.approx(expected)
    assert scores.h_yx[0] == pytest.approx(-math.log2(sigmoid(2.0)) - math.log2(sigmoid(1.0)))
    assert scores.h_yb[0] == pytest.approx(1.0 - math.log2(0.75))


def test_multilabel_prediction_and_all_labels_correct():
    scores = pvi_multilabel([[2.0, -1.0, 0.5], [2.0, 1.0, 0.5]], [0.0, 0.0, 0.0], [[1, 0, 1], [1, 0, 1]])
    assert scores.prediction.tolist() == [[1, 0, 1], [1, 1, 1]]
    assert scores.correct.tolist() == [True, False]


def test_multilabel_null_broadcast_and_large_logits():
    logits = np.array([[500.0, -500.0], [-500.0, 500.0]])
    labels = [[1, 0], [1, 0]]
    once = pvi_multilabel(logits, [0.3, -0.2], labels)
    tiled = pvi_multilabel(logits, [[0.3, -0.2], [0.3, -0.2]], labels)
    np.testing.assert_allclose(once.pvi, tiled.pvi)
    assert np.all(np.isfinite(once.pvi))
    assert once.h_yx[1] == pytest.approx(1000.0 / math.log(2))


def test_multilabel_rejects_non_binary_labels():
    with pytest.raises(ValueError, match=r"labels\[1, 0\] = 2 must be 0 or 1"):
        pvi_multilabel([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [[1, 0], [2, 0]])


# ---------------------------------------------------------------- regression


def test_regression_gaussian_by_hand():
    scores = pvi_regression([0.5, 3.0], [1.0, 2.0], sigma_x=0.5, null_mean=0.0, null_sigma=1.0)
    # example 0: both z-scores are 1, so PVI = log2(null_sigma / sigma_x) = 1 bit exactly
    assert scores.pvi[0] == pytest.approx(1.0)
    assert scores.pvi[1] == pytest.approx(gauss_log2(2.0, 3.0, 0.5) - gauss_log2(2.0, 0.0, 1.0))
    assert scores.h_yx[1] == pytest.approx(-gauss_log2(2.0, 3.0, 0.5))
    assert scores.h_yb[0] == pytest.approx(-gauss_log2(1.0, 0.0, 1.0))
    assert scores.prediction.tolist() == [0.5, 3.0]


def test_regression_correct_means_closer_than_null_mean():
    scores = pvi_regression([1.5, 3.5, 2.0, 0.0], [2.0, 2.0, 2.0, 2.0], sigma_x=1.0, null_mean=1.0, null_sigma=1.0)
    # errors 0.5, 1.5, 0 (exact) and 2 (worse than the null's 1)
    assert scores.correct.tolist() == [True, False, True, False]
    with pytest.warns(PVICollapseWarning):
        at_mean = pvi_regression([1.0, 1.0], [1.0, 3.0], sigma_x=1.0, null_mean=1.0, null_sigma=1.0)
    assert at_mean.correct.tolist() == [True, False]


def test_regression_accepts_column_vectors_and_per_example_sigma():
    a = pvi_regression(np.array([[0.5], [3.0]]), np.array([[1.0], [2.0]]), sigma_x=[0.5, 0.5],
                       null_mean=0.0, null_sigma=1.0)
    b = pvi_regression([0.5, 3.0], [1.0, 2.0], sigma_x=0.5, null_mean=0.0, null_sigma=1.0)
    np.testing.assert_allclose(a.pvi, b.pvi)


@pytest.mark.parametrize("kwargs, match", [
    ({"sigma_x": 0.0}, "sigma_x must be a finite positive std"),
    ({"sigma_x": [1.0, -1.0]}, r"sigma_x\[1\] must be a finite positive std"),
    ({"null_sigma": np.inf}, "null_sigma must be a finite positive std"),
    ({"null_sigma": [1.0, 1.0]}, "null_sigma must be 0-D"),
    ({"null_mean": np.nan}, "null_mean must be finite"),
])
def test_regression_rejects_bad_sigmas(kwargs, match):
    args = {"sigma_x": 1.0, "null_mean": 0.0, "null_sigma": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        pvi_regression([0.0, 1.0], [0.0, 1.0], **args)


def test_regression_rejects_length_mismatch_and_nonfinite_labels():
    with pytest.raises(ValueError, match="labels has 3 entries but pred_x has 2"):
        pvi_regression([0.0, 1.0], [0.0, 1.0, 2.0], sigma_x=1.0, null_mean=0.0, null_sigma=1.0)
    with pytest.raises(ValueError, match=r"labels\[1\] = inf is not finite"):
        pvi_regression([0.0, 1.0], [0.0, np.inf], sigma_x=1.0, null_mean=0.0, null_sigma=1.0)


def test_residual_sigma_is_rms_residual():
    assert residual_sigma([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]) == pytest.approx(math.sqrt(5 / 3))
    with pytest.warns(UserWarning, match="below"):
        assert residual_sigma([1.0], [1.0]) == scores_module.SIGMA_FLOOR


# ---------------------------------------------------------------- token classification


def _token_example():
    # 1 example, 3 positions, 2 tags; position 1 is ignored and holds huge (and NaN) logits
    logits = np.array([[[2.0, 0.0], [1e6, np.nan], [0.0, 1.0]]])
    labels = np.array([[0, -100, 1]])
    null = np.log([0.75, 0.25])
    return logits, null, labels


def test_token_average_over_labelled_tokens():
    logits, null, labels = _token_example()
    scores, tokens = pvi_token_classification(logits, null, labels, return_tokens=True)
    tok0 = math.log2(sigmoid(2.0) / 0.75)
    tok2 = math.log2(sigmoid(1.0) / 0.25)
    assert scores.pvi[0] == pytest.approx((tok0 + tok2) / 2)
    assert scores.h_yb[0] == pytest.approx((-math.log2(0.75) - math.log2(0.25)) / 2)
    assert scores.h_yx[0] == pytest.approx((-math.log2(sigmoid(2.0)) - math.log2(sigmoid(1.0))) / 2)
    np.testing.assert_allclose(tokens[0], [tok0, tok2])


def test_token_prediction_and_correct_cover_labelled_tokens_only():
    logits, null, labels = _token_example()
    scores = pvi_token_classification(logits, null, labels)
    assert scores.prediction.tolist() == [[0, 1]]
    assert scores.correct.tolist() == [True]
    wrong = pvi_token_classification(logits, null, np.array([[0, -100, 0]]))
    assert wrong.correct.tolist() == [False]


def test_token_example_without_labelled_tokens_is_nan_and_left_out():
    logits = np.zeros((2, 2, 2))
    logits[0, 0] = [3.0, 0.0]
    with pytest.warns(UserWarning, match="no labelled token"):
        scores, tokens = pvi_token_classification(logits, [0.0, 0.0], [[0, -100], [-100, -100]],
                                                  return_tokens=True)
    assert math.isnan(scores.pvi[1]) and not scores.correct[1]
    assert scores.v_information() == pytest.approx(scores.pvi[0])
    assert scores.accuracy() == 1.0
    assert len(tokens[1]) == 0
    assert scores.to_columns()["pvi"][1] is None


def test_token_null_broadcast_matches_full_null():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 4))
    null = rng.normal(size=4)
    labels = [[0, 3, -100], [2, -100, 1]]
    a = pvi_token_classification(logits, null, labels)
    b = pvi_token_classification(logits, np.broadcast_to(null, (2, 3, 4)), labels)
    np.testing.assert_allclose(a.pvi, b.pvi)


def test_token_rejects_bad_tags_and_shapes():
    with pytest.raises(ValueError, match=r"labels\[0, 1\] = -5 must be in \[0, 2\) or -100"):
        pvi_token_classification(np.zeros((1, 2, 2)), [0.0, 0.0], [[0, -5]])
    with pytest.raises(ValueError, match=r"labels has shape \(1, 3\)"):
        pvi_token_classification(np.zeros((1, 2, 2)), [0.0, 0.0], [[0, 1, 1]])
    with pytest.raises(ValueError, match=r"logits_x has NaN at index 0, 0, 1"):
        pvi_token_classification(np.array([[[0.0, np.nan]]]), [0.0, 0.0], [[0]])


# ---------------------------------------------------------------- PVIScores, dispatch


def test_scores_aggregates_and_columns():
    scores = pvi_classification(np.log([[0.8, 0.2], [0.4, 0.6]]), np.log([0.5, 0.5]), [0, 0])
    assert scores.v_information() == pytest.approx((math.log2(1.6) + math.log2(0.8)) / 2)
    assert scores.accuracy() == 0.5
    cols = scores.to_columns()
    assert set(cols) == {"pvi", "pvi_h_yx", "pvi_h_yb", "pvi_correct", "pvi_prediction"}
    assert cols["pvi_correct"] == [True, False] and cols["pvi_prediction"] == [0, 1]
    assert all(type(v) is float for v in cols["pvi"]) and type(cols["pvi_prediction"][0]) is int
    assert scores.summary()["n"] == 2 and scores.summary()["v_information"] == scores.v_information()


def test_scores_columns_load_into_a_dataset():
    datasets = pytest.importorskip("datasets")
    ml = pvi_multilabel([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0], [[1, 0], [1, 0]])
    ds = datasets.Dataset.from_dict({"text": ["a", "b"]})
    for name, column in ml.to_columns().items():
        ds = ds.add_column(name, column)
    assert ds["pvi_prediction"] == [[1, 0], [0, 1]]
    assert ds["pvi"] == pytest.approx(ml.pvi.tolist())


def test_scores_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="PVIScores.h_yx must be 1-D with 2 entries"):
        PVIScores(pvi=[0.0, 1.0], h_yx=[0.0], h_yb=[0.0, 1.0], correct=[True, False], prediction=[0, 1])


def test_compute_pvi_scores_dispatches():
    direct = pvi_regression([0.5], [1.0], sigma_x=0.5, null_mean=0.0, null_sigma=1.0)
    via = compute_pvi_scores("regression", pred_x=[0.5], labels=[1.0], sigma_x=0.5, null_mean=0.0, null_sigma=1.0)
    np.testing.assert_allclose(direct.pvi, via.pvi)
    assert via.task_type == "regression"
    tok = compute_pvi_scores("token_classification", logits_x=np.zeros((1, 1, 2)), null_logits=[0.0, 0.0],
                             labels=[[1]])
    assert tok.task_type == "token_classification"
    with pytest.raises(ValueError, match="unknown task_type 'ner'"):
        compute_pvi_scores("ner", logits_x=[[0.0, 0.0]])
    with pytest.raises(ValueError, match="return_tokens=True"):
        compute_pvi_scores("token_classification", logits_x=np.zeros((1, 1, 2)), null_logits=[0.0, 0.0],
                           labels=[[1]], return_tokens=True)


# ---------------------------------------------------------------- collapse


@pytest.mark.parametrize("task_type, preds, labels, expected", [
    ("classification", [1, 1, 1], [0, 1, 1], True),
    ("classification", [1, 0, 1], [0, 1, 1], False),
    ("classification", [1, 1, 1], [1, 1, 1], False),  # constant labels: not a collapse
    ("token_classification", [[0, 0, 1], [0, 0, 0]], [[0, -100, 1], [1, 0, -100]], False),
    ("token_classification", [[0, 5, 0], [0, 0, 5]], [[0, -100, 1], [1, 0, -100]], True),  # -100 spots ignored
    ("token_classification", [[0, 0], [0, 0]], [[0, -100, 1], [1, 0, -100]], True),  # labelled-only form
    ("regression", [2.0, 2.0 + 1e-6, 2.0], [1.0, 2.0, 3.0], True),
    ("regression", [1.5, 2.0, 2.5], [1.0, 2.0, 3.0], False),
    ("regression", [2.0, 2.0], [5.0, 5.0], False),
    ("multilabel", [[1, 0], [1, 0], [1, 0]], [[1, 0], [0, 1], [1, 1]], True),
    ("multilabel", [[1, 0], [0, 1], [1, 0]], [[1, 0], [0, 1], [1, 1]], False),
    ("multilabel", [[0, 0], [0, 0]], [[1, 0], [1, 0]], False),
])
def test_detect_collapse(task_type, preds, labels, expected):
    assert detect_collapse(preds, labels, task_type) is expected


def test_detect_collapse_rejects_misaligned_token_predictions():
    with pytest.raises(ValueError, match=r"predictions\[0\] has 1 entries; expected 3"):
        detect_collapse([[0]], [[0, -100, 1]], "token_classification")


def test_collapsed_g_x_is_flagged_and_warned():
    with pytest.warns(PVICollapseWarning, match="classification"):
        scores = pvi_classification([[2.0, 0.0], [3.0, 0.0], [1.0, 0.0]], [0.0, 0.0], [0, 1, 1])
    assert scores.collapsed and scores.summary()["collapsed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PVICollapseWarning)
        ok = pvi_classification([[2.0, 0.0], [0.0, 3.0]], [0.0, 0.0], [0, 1])
    assert not ok.collapsed


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("logits, null, labels, match", [
    ([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [0], r"labels has shape \(1,\) but logits_x rows give \(2,\)"),
    ([[0.0, 0.0]], [0.0, 0.0, 0.0], [0], r"null_logits has shape \(3,\); expected \(2,\)"),
    ([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [0, 2], r"labels\[1\] = 2 must be in \[0, 2\)"),
    ([[0.0, 0.0]], [0.0, 0.0], [-1], r"labels\[0\] = -1 must be in \[0, 2\)"),
    ([[0.0, 0.0]], [0.0, 0.0], [0.5], r"labels\[0\] = 0.5 is not an integer label"),
    ([[0.0, np.nan]], [0.0, 0.0], [0], "logits_x has NaN at index 0, 1"),
    ([[0.0, np.inf]], [0.0, 0.0], [0], r"logits_x\[0, 1\] = inf"),
    ([[0.0, 0.0]], [-np.inf, -np.inf], [0], r"null_logits\[0\] is -inf for every class"),
    ([[0.0], [1.0]], [0.0], [0, 0], "at least 2 classes"),
    (np.zeros((0, 2)), [0.0, 0.0], np.zeros(0, dtype=int), "no examples"),
    ([0.0, 0.0], [0.0, 0.0], [0], "logits_x must be 2-D"),
])
def test_classification_validation_errors(logits, null, labels, match):
    with pytest.raises(ValueError, match=match):
        pvi_classification(logits, null, labels)


def test_integral_float_labels_are_accepted():
    a = pvi_classification([[0.0, 1.0]], [0.0, 0.0], np.array([1.0]))
    b = pvi_classification([[0.0, 1.0]], [0.0, 0.0], [1])
    assert a.pvi[0] == b.pvi[0]


def test_docstring_examples_run():
    assert doctest.testmod(scores_module).failed == 0
