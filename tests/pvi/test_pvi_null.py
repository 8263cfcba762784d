"""Tests for hf_taskgroup.pvi.null: the analytic null (smoothed label prior) and trained-null outputs."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import hf_taskgroup.pvi.null as null_module
from hf_taskgroup.pvi.null import (
    analytic_null,
    analytic_null_classification,
    analytic_null_multilabel,
    analytic_null_regression,
    analytic_null_token,
    null_logits_from_model_output,
)
from hf_taskgroup.pvi.scores import SIGMA_FLOOR, pvi_classification, pvi_multilabel, pvi_regression

# ---------------------------------------------------------------- classification


def test_classification_laplace_smoothed_frequencies():
    # counts [3, 1, 0], n = 4, C = 3, k = 1 -> [4/7, 2/7, 1/7]
    log_p = analytic_null_classification([0, 0, 0, 1], num_labels=3)
    np.testing.assert_allclose(log_p, np.log([4 / 7, 2 / 7, 1 / 7]))


def test_classification_add_k_and_unsmoothed():
    np.testing.assert_allclose(np.exp(analytic_null_classification([0, 0, 0, 1], 3, smoothing=0.5)),
                               [3.5 / 5.5, 1.5 / 5.5, 0.5 / 5.5])
    raw = analytic_null_classification([0, 0, 0, 1], 3, smoothing=0)
    np.testing.assert_allclose(np.exp(raw[:2]), [0.75, 0.25])
    assert raw[2] == -np.inf


def test_classification_null_feeds_pvi_as_the_prior():
    prior = analytic_null_classification([0, 0, 0, 1], num_labels=2, smoothing=0)
    scores = pvi_classification(np.log([[0.9, 0.1], [0.4, 0.6]]), prior, [0, 1])
    np.testing.assert_allclose(scores.h_yb, [-math.log2(0.75), -math.log2(0.25)])
    np.testing.assert_allclose(scores.pvi, [math.log2(0.9 / 0.75), math.log2(0.6 / 0.25)])


@pytest.mark.parametrize("labels, num_labels, smoothing, match", [
    ([0, 3], 3, 1.0, r"train_labels\[1\] = 3 must be in \[0, 3\)"),
    ([0, -100], 3, 1.0, r"train_labels\[1\] = -100 must be in \[0, 3\)"),
    ([], 3, 1.0, "holds no labels"),
    ([0, 1], 3, -1.0, "smoothing must be a finite number >= 0"),
    ([0, 1], 0, 1.0, "num_labels must be a positive int"),
])
def test_classification_rejects_bad_input(labels, num_labels, smoothing, match):
    with pytest.raises(ValueError, match=match):
        analytic_null_classification(labels, num_labels, smoothing)


# ---------------------------------------------------------------- multilabel


def test_multilabel_smoothed_bernoulli_logits():
    # positives [2, 1] of n = 3, k = 1 -> p = [3/5, 2/5]
    logits = analytic_null_multilabel([[1, 0], [1, 1], [0, 0]])
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), [0.6, 0.4])
    np.testing.assert_allclose(logits, [math.log(3 / 2), math.log(2 / 3)])


def test_multilabel_unsmoothed_extremes_and_pvi():
    logits = analytic_null_multilabel([[1, 0], [1, 0]], smoothing=0)
    assert logits.tolist() == [np.inf, -np.inf]
    # a null that is certain and right costs 0 bits: the PVI is just log2 g_x's probability
    scores = pvi_multilabel([[0.0, 0.0]], logits, [[1, 0]])
    assert scores.h_yb[0] == 0.0 and scores.pvi[0] == pytest.approx(-2.0)


def test_multilabel_rejects_bad_input():
    with pytest.raises(ValueError, match=r"train_labels must be a multi-hot \[n, L\] array"):
        analytic_null_multilabel([1, 0, 1])
    with pytest.raises(ValueError, match=r"train_labels\[0, 1\] = 3 must be 0 or 1"):
        analytic_null_multilabel([[1, 3]])
    with pytest.raises(ValueError, match="train_labels is empty"):
        analytic_null_multilabel(np.zeros((0, 2), dtype=int))


# ---------------------------------------------------------------- regression


def test_regression_mean_and_population_std():
    mean, std = analytic_null_regression([1.0, 2.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(math.sqrt((4 + 1 + 9) / 3))


def test_regression_constant_labels_floor_with_warning():
    with pytest.warns(UserWarning, match="constant"):
        mean, std = analytic_null_regression([2.0, 2.0, 2.0])
    assert (mean, std) == (2.0, SIGMA_FLOOR)


def test_regression_null_feeds_pvi():
    kwargs = analytic_null("regression", [-1.0, 1.0])
    assert kwargs == {"null_mean": 0.0, "null_sigma": 1.0}
    scores = pvi_regression([0.5], [1.0], sigma_x=0.5, **kwargs)
    assert scores.pvi[0] == pytest.approx(1.0)


def test_regression_rejects_bad_input():
    with pytest.raises(ValueError, match="train_labels has NaN at index 1"):
        analytic_null_regression([1.0, np.nan])
    with pytest.raises(ValueError, match=r"train_labels\[0\] = inf is not finite"):
        analytic_null_regression([np.inf, 1.0])
    with pytest.raises(ValueError, match="train_labels is empty"):
        analytic_null_regression([])


# ---------------------------------------------------------------- token classification


def test_token_prior_ignores_minus_100_and_accepts_ragged_or_padded():
    ragged = [[0, -100, 1, 1], [2, -100]]
    padded = np.array([[0, -100, 1, 1], [2, -100, -100, -100]])
    # labelled tags 0, 1, 1, 2 -> counts [1, 2, 1], k = 1, C = 3 -> [2/7, 3/7, 2/7]
    expected = np.log([2 / 7, 3 / 7, 2 / 7])
    np.testing.assert_allclose(analytic_null_token(ragged, num_labels=3), expected)
    np.testing.assert_allclose(analytic_null_token(padded, num_labels=3), expected)


def test_token_rejects_bad_tags_and_empty():
    with pytest.raises(ValueError, match=r"train_tag_sequences\[1\]\[0\] = 5 must be in \[0, 3\) or -100"):
        analytic_null_token([[0], [5]], num_labels=3)
    with pytest.raises(ValueError, match="holds no labels"):
        analytic_null_token([[-100, -100]], num_labels=3)


# ---------------------------------------------------------------- dispatcher, trained null output


def test_analytic_null_dispatch():
    np.testing.assert_allclose(analytic_null("classification", [0, 1], num_labels=2)["null_logits"],
                               np.log([0.5, 0.5]))
    np.testing.assert_allclose(analytic_null("token_classification", [[0, 1]], num_labels=2)["null_logits"],
                               np.log([0.5, 0.5]))
    np.testing.assert_allclose(analytic_null("multilabel", [[1, 0]])["null_logits"], [math.log(2), -math.log(2)])
    with pytest.raises(ValueError, match="needs num_labels"):
        analytic_null("classification", [0, 1])
    with pytest.raises(ValueError, match="unknown task_type"):
        analytic_null("ranking", [0, 1])


@pytest.mark.parametrize("output", [
    [0.3, -0.2],
    [[0.3, -0.2]],
    [[[0.3, -0.2]]],
    [[0.3, -0.2], [0.3, -0.2], [0.3 + 1e-6, -0.2]],  # the same null input run three times
])
def test_null_output_is_squeezed_to_one_row(output):
    np.testing.assert_allclose(null_logits_from_model_output(np.array(output)), [0.3, -0.2], atol=1e-5)


def test_null_output_regression_head_and_errors():
    assert null_logits_from_model_output(np.array([[1.5]])).tolist() == [1.5]
    with pytest.raises(ValueError, match="dropout"):
        null_logits_from_model_output(np.array([[0.3, -0.2], [0.1, 0.0]]))
    with pytest.raises(ValueError, match="dropout"):  # [1, T, C] token output: no tokens to tag
        null_logits_from_model_output(np.zeros((1, 4, 3)) + np.arange(4)[None, :, None])
    with pytest.raises(ValueError, match="expected \\[C\\] or \\[1, C\\]"):
        null_logits_from_model_output(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="output has NaN"):
        null_logits_from_model_output(np.array([[np.nan, 0.0]]))


def test_docstring_examples_run():
    assert doctest.testmod(null_module).failed == 0
