"""Tests for hf_taskgroup.training.metrics: hand-computed values on tiny arrays, masking, subsets, errors, the
adapter's library inputs (metric_inputs) and the ``evaluate`` metric hook."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import f1_score, matthews_corrcoef

from hf_taskgroup.training.metrics import (
    DEFAULT_METRICS,
    METRICS,
    TASK_TYPES,
    compute_task_metrics,
    extract_entities,
    greater_is_better,
    make_compute_metrics,
    metric_inputs,
    primary_metric,
)

BIO = ["O", "B-Disease", "I-Disease"]
O_, B_, I_, PAD = 0, 1, 2, -100


def one_hot_logits(ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Logits whose argmax is ``ids`` (works for any shape of ids)."""
    return np.eye(n_classes)[ids] * 3.0 - 1.0


# --------------------------------------------------------------------------- basics


def test_task_types_are_defined_once():
    from hf_taskgroup.data import tasks
    from hf_taskgroup.pvi import scores

    assert TASK_TYPES is tasks.TASK_TYPES is scores.TASK_TYPES


def test_primary_metrics():
    assert [primary_metric(t) for t in TASK_TYPES] == ["accuracy", "f1_micro", "pearson", "f1"]
    for t in TASK_TYPES:
        assert primary_metric(t) in DEFAULT_METRICS[t]


def test_primary_metric_unknown_task_type():
    with pytest.raises(ValueError, match="unknown task type 'ner'"):
        primary_metric("ner")


@pytest.mark.parametrize(
    ("metric", "expected"),
    [("mse", False), ("eval_biosses_mse", False), ("eval_loss", False), ("rmse", False), ("mae", False),
     ("accuracy", True), ("eval_pubmedqa_f1_macro", True), ("pearson", True), ("eval_ncbi_disease_f1", True)],
)
def test_greater_is_better(metric, expected):
    assert greater_is_better(metric) is expected


def test_greater_is_better_unknown():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        greater_is_better("bleu")


# --------------------------------------------------------------------------- classification


def test_classification_hand_computed():
    labels = np.array([0, 1, 2, 2])
    logits = one_hot_logits(np.array([0, 2, 2, 2]), 3)
    out = compute_task_metrics("classification", logits, labels)
    assert list(out) == ["accuracy", "f1_macro", "mcc"]
    assert out["accuracy"] == pytest.approx(0.75)
    # per-class F1: class 0 -> 1, class 1 -> 0, class 2 -> 2*2/(2*2+1) = 0.8
    assert out["f1_macro"] == pytest.approx((1 + 0 + 0.8) / 3)
    # Gorodkin: (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) with t=[1,1,2], p=[1,0,3]
    assert out["mcc"] == pytest.approx(5 / math.sqrt(6 * 10))
    assert out["mcc"] == pytest.approx(matthews_corrcoef(labels, [0, 2, 2, 2]))


def test_classification_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4)) + np.eye(4)[labels]
    pred = logits.argmax(1)
    out = compute_task_metrics("classification", logits, labels, metrics=METRICS["classification"])
    assert out["f1_macro"] == pytest.approx(f1_score(labels, pred, average="macro"))
    assert out["f1_weighted"] == pytest.approx(f1_score(labels, pred, average="weighted"))
    assert out["f1_micro"] == pytest.approx(out["accuracy"])
    assert out["mcc"] == pytest.approx(matthews_corrcoef(labels, pred))


def test_classification_macro_f1_ignores_classes_absent_from_labels_and_predictions():
    # 5 logit columns, classes 3 and 4 never occur: they do not drag the macro average down
    logits = one_hot_logits(np.array([0, 1, 1]), 5)
    out = compute_task_metrics("classification", logits, np.array([0, 1, 2]), metrics=["f1_macro"])
    assert out["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_classification_constant_predictions_do_not_warn():
    logits = one_hot_logits(np.array([1, 1, 1]), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_task_metrics("classification", logits, np.array([0, 1, 1]))
    assert out["mcc"] == 0.0
    assert out["accuracy"] == pytest.approx(2 / 3)


def test_classification_accepts_integer_class_ids_and_torch_tensors():
    labels = np.array([0, 1, 2, 2])
    ids = compute_task_metrics("classification", np.array([0, 2, 2, 2]), labels)
    tensors = compute_task_metrics("classification", torch.tensor(one_hot_logits(np.array([0, 2, 2, 2]), 3)),
                                   torch.tensor(labels))
    assert ids == pytest.approx(tensors)
    assert ids["accuracy"] == pytest.approx(0.75)


def test_classification_tuple_predictions_use_first_element():
    logits = one_hot_logits(np.array([0, 1]), 2)
    out = compute_task_metrics("classification", (logits, np.zeros((2, 7))), np.array([0, 0]), metrics=["accuracy"])
    assert out == {"accuracy": 0.5}


def test_classification_label_outside_logit_width():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        compute_task_metrics("classification", np.zeros((2, 2)), np.array([0, 5]))


# --------------------------------------------------------------------------- multilabel


def test_multilabel_hand_computed():
    logits = np.array([[1.0, -1.0, 2.0, -3.0], [-1.0, -1.0, 1.0, -3.0], [1.0, 1.0, -1.0, -3.0]])
    labels = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    out = compute_task_metrics("multilabel", logits, labels, metrics=METRICS["multilabel"])
    # tp = [2, 0, 1, 0], fp = [0, 1, 1, 0], fn = 0
    assert out["f1_micro"] == pytest.approx(6 / 8)
    # label 3 is never positive anywhere: left out of the macro average
    assert out["f1_macro"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert out["accuracy"] == pytest.approx(1 / 3)  # only row 1 is entirely right
    assert out["hamming_accuracy"] == pytest.approx(10 / 12)
    assert out["precision_micro"] == pytest.approx(3 / 5)
    assert out["recall_micro"] == pytest.approx(1.0)


def test_multilabel_threshold_is_logit_zero():
    out = compute_task_metrics("multilabel", np.array([[0.0, 1e-6]]), np.array([[0, 1]]), metrics=["accuracy"])
    assert out["accuracy"] == 1.0


def test_multilabel_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="0/1"):
        compute_task_metrics("multilabel", np.zeros((1, 2)), np.array([[0.5, 1.0]]))


def test_multilabel_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        compute_task_metrics("multilabel", np.zeros((2, 3)), np.zeros((2, 4)))


# --------------------------------------------------------------------------- regression


def test_regression_hand_computed():
    pred = np.array([[1.0], [2.0], [3.0], [4.0]])  # [n, 1] is accepted
    gold = np.array([2.0, 4.0, 6.0, 9.0])
    out = compute_task_metrics("regression", pred, gold, metrics=METRICS["regression"])
    assert out["mse"] == pytest.approx((1 + 4 + 9 + 25) / 4)
    assert out["rmse"] == pytest.approx(math.sqrt(39 / 4))
    assert out["mae"] == pytest.approx((1 + 2 + 3 + 5) / 4)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["pearson"] == pytest.approx(pearsonr(pred[:, 0], gold).statistic)


def test_regression_spearman_with_ties_and_negative_order():
    out = compute_task_metrics("regression", np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0]))
    assert out["spearman"] == pytest.approx(-1.0)
    assert out["pearson"] == pytest.approx(-1.0)


def test_regression_constant_predictions_give_zero_correlation_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_task_metrics("regression", np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0]))
    assert out["pearson"] == 0.0
    assert out["spearman"] == 0.0
    assert out["mse"] == pytest.approx((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 4)


def test_regression_nan_predictions_raise():
    with pytest.raises(ValueError, match="NaN"):
        compute_task_metrics("regression", np.array([1.0, np.nan]), np.array([1.0, 2.0]))


# --------------------------------------------------------------------------- token classification


def test_extract_entities_bio_rules():
    assert extract_entities(["B-D", "I-D", "O", "B-D", "I-D", "I-D"]) == {("D", 0, 1), ("D", 3, 5)}
    assert extract_entities(["O", "I-D", "I-D", "O"]) == {("D", 1, 2)}  # I after O starts a span
    assert extract_entities(["B-A", "I-B"]) == {("A", 0, 0), ("B", 1, 1)}  # I of another type starts a span
    assert extract_entities(["B", "B", "I"]) == {("", 0, 0), ("", 1, 2)}  # untyped tags (NCBI disease)
    assert extract_entities(["O", "I", "I", "O", "I"]) == {("", 1, 2), ("", 4, 4)}  # untyped I after O starts one
    assert extract_entities(["O", "O"]) == set()


def test_token_classification_hand_computed_with_masking():
    # gold entities: (0,1) and (3,5); prediction gets (0,1) exactly and (3,4) partially -> P = R = F1 = 1/2.
    # -100 positions (a non-first sub-word at 1, padding at the end) hold predictions that would change
    # the spans if they were not masked.
    labels = np.array([[B_, PAD, I_, O_, B_, I_, I_, O_, PAD]])
    pred_ids = np.array([[B_, B_, I_, O_, B_, I_, O_, O_, I_]])
    out = compute_task_metrics("token_classification", one_hot_logits(pred_ids, 3), labels, id2label=BIO)
    assert list(out) == ["f1", "precision", "recall", "accuracy"]
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    assert out["accuracy"] == pytest.approx(6 / 7)  # 7 labelled tokens, one wrong


def test_token_classification_precision_differs_from_recall():
    # gold: one entity; prediction: the entity plus a spurious one -> P = 1/2, R = 1, F1 = 2/3
    labels = np.array([[B_, I_, O_, O_], [O_, O_, O_, PAD]])
    pred = np.array([[B_, I_, O_, B_], [O_, O_, O_, O_]])
    out = compute_task_metrics("token_classification", pred, labels, id2label=["O", "B", "I"])
    assert (out["precision"], out["recall"]) == pytest.approx((0.5, 1.0))
    assert out["f1"] == pytest.approx(2 / 3)


def test_token_classification_entities_do_not_cross_rows():
    # row 0 ends with B and row 1 starts with I: two gold entities, not one spanning the rows
    labels = np.array([[O_, B_], [I_, O_]])
    pred = np.array([[O_, B_], [O_, O_]])
    out = compute_task_metrics("token_classification", pred, labels, id2label=BIO)
    assert (out["precision"], out["recall"]) == pytest.approx((1.0, 0.5))


def test_token_classification_accepts_id2label_dict_and_ids():
    labels = np.array([[B_, I_, O_]])
    logits_out = compute_task_metrics("token_classification", one_hot_logits(labels, 3), labels, id2label=BIO)
    ids_out = compute_task_metrics("token_classification", labels, labels, id2label={0: "O", 1: "B", 2: "I"})
    assert logits_out == ids_out == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0}


def test_token_classification_no_predicted_entities_gives_zero_not_error():
    out = compute_task_metrics("token_classification", np.array([[O_, O_]]), np.array([[B_, I_]]), id2label=BIO)
    assert out["precision"] == out["recall"] == out["f1"] == 0.0


def test_token_classification_requires_id2label():
    with pytest.raises(ValueError, match="need id2label"):
        compute_task_metrics("token_classification", np.zeros((1, 2, 3)), np.zeros((1, 2), dtype=int))


def test_token_classification_rejects_non_bio_tag():
    with pytest.raises(ValueError, match=r"id2label\[1\] = 'PER'"):
        compute_task_metrics("token_classification", np.zeros((1, 2), dtype=int), np.zeros((1, 2), dtype=int),
                             id2label=["O", "PER"])


def test_token_classification_all_masked_raises():
    with pytest.raises(ValueError, match="no labelled tokens"):
        compute_task_metrics("token_classification", np.zeros((1, 2, 3)), np.full((1, 2), PAD), id2label=BIO)


def test_token_classification_logit_width_must_match_id2label():
    with pytest.raises(ValueError, match="4 classes but id2label has 3"):
        compute_task_metrics("token_classification", np.zeros((1, 2, 4)), np.zeros((1, 2), dtype=int), id2label=BIO)


# --------------------------------------------------------------------------- subsets and errors


def test_metric_subset_keeps_requested_order():
    out = compute_task_metrics("regression", np.array([1.0, 2.0]), np.array([1.0, 3.0]), metrics=["mae", "pearson"])
    assert list(out) == ["mae", "pearson"]


def test_unknown_metric_lists_valid_ones():
    with pytest.raises(ValueError, match="'bleu'.*valid: pearson, spearman, mse, rmse, mae"):
        compute_task_metrics("regression", np.array([1.0]), np.array([1.0]), metrics=["mse", "bleu"])


def test_empty_metric_list_raises():
    with pytest.raises(ValueError, match="metrics is empty"):
        compute_task_metrics("regression", np.array([1.0]), np.array([1.0]), metrics=[])


@pytest.mark.parametrize(
    ("task_type", "preds", "labels"),
    [("classification", np.zeros((0, 3)), np.zeros(0, dtype=int)),
     ("multilabel", np.zeros((0, 3)), np.zeros((0, 3))),
     ("regression", np.zeros(0), np.zeros(0)),
     ("token_classification", np.zeros((0, 4, 3)), np.zeros((0, 4), dtype=int))],
)
def test_empty_input_raises(task_type, preds, labels):
    with pytest.raises(ValueError, match="no examples"):
        compute_task_metrics(task_type, preds, labels, id2label=BIO)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        compute_task_metrics("classification", np.zeros((3, 2)), np.array([0, 1]))


# --------------------------------------------------------------------------- make_compute_metrics


def test_make_compute_metrics_with_eval_prediction():
    from transformers import EvalPrediction

    compute = make_compute_metrics("classification", metrics=["accuracy"])
    logits = one_hot_logits(np.array([0, 1, 1]), 2)
    assert compute(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 0]))) == {
        "accuracy": pytest.approx(2 / 3)}
    # a model returning several outputs: the logits are the first
    assert compute(EvalPrediction(predictions=(logits, np.zeros((3, 5))), label_ids=np.array([0, 1, 1]))) == {
        "accuracy": 1.0}


def test_make_compute_metrics_validates_eagerly():
    with pytest.raises(ValueError, match="need id2label"):
        make_compute_metrics("token_classification")
    with pytest.raises(ValueError, match="unknown metric"):
        make_compute_metrics("classification", metrics=["pearson"])


def test_make_compute_metrics_batch_eval_accumulates_ragged_token_batches():
    from transformers import EvalPrediction

    labels = np.array([[B_, I_, O_, PAD], [O_, B_, PAD, PAD], [B_, O_, O_, O_]])
    pred = np.array([[B_, I_, O_, O_], [O_, B_, O_, O_], [O_, O_, O_, O_]])
    full = compute_task_metrics("token_classification", one_hot_logits(pred, 3), labels, id2label=BIO)

    compute = make_compute_metrics("token_classification", id2label=BIO)
    # batch 1 is trimmed to width 3 (batches have different sequence lengths), passed as torch tensors
    first = EvalPrediction(predictions=torch.tensor(one_hot_logits(pred[:2, :3], 3)), label_ids=torch.tensor(labels[:2, :3]))
    assert compute(first, compute_result=False) == {}
    last = EvalPrediction(predictions=torch.tensor(one_hot_logits(pred[2:], 3)), label_ids=torch.tensor(labels[2:]))
    assert compute(last, compute_result=True) == pytest.approx(full)
    assert full["recall"] == pytest.approx(2 / 3)
    # the next evaluation starts afresh (batches of the previous one are not carried over)
    assert compute(last, compute_result=True) == pytest.approx(
        compute_task_metrics("token_classification", pred[2:], labels[2:], id2label=BIO))


# --------------------------------------------------------------------------- edge cases (hand-computed)


def test_classification_one_class_present_everywhere():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's single-label confusion-matrix warning must not leak
        out = compute_task_metrics("classification", np.array([2, 2, 2]), np.array([2, 2, 2]),
                                   metrics=METRICS["classification"])
    # only class 2 occurs: every per-class score is 1 over that one class; MCC is undefined -> 0
    assert out == {"accuracy": 1.0, "f1_macro": 1.0, "mcc": 0.0, "f1_micro": 1.0, "f1_weighted": 1.0,
                   "precision_macro": 1.0, "recall_macro": 1.0}


def test_classification_single_example():
    out = compute_task_metrics("classification", one_hot_logits(np.array([1]), 3), np.array([0]))
    # classes 0 (gold) and 1 (predicted) occur, both with F1 0
    assert out == {"accuracy": 0.0, "f1_macro": 0.0, "mcc": 0.0}


def test_regression_constant_labels_give_zero_correlation():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_task_metrics("regression", np.array([1.0, 2.0, 4.0]), np.full(3, 2.0))
    assert out == {"pearson": 0.0, "spearman": 0.0, "mse": pytest.approx((1 + 0 + 4) / 3)}


def test_regression_correlations_hand_computed():
    # x = [1, 2, 3], y = [1, 3, 2]: centred x = [-1, 0, 1], y = [-1, 1, 0] -> r = 1 / (sqrt 2 * sqrt 2) = 0.5;
    # the ranks equal the values, so Spearman is 0.5 too
    out = compute_task_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    assert out["pearson"] == pytest.approx(0.5)
    assert out["spearman"] == pytest.approx(0.5)


def test_multilabel_with_one_label_column_pools_decisions_not_classes():
    # [n, 1] indicators: 1 tp, 1 fp, 1 fn, 1 tn -> micro P = R = F1 = 1/2 (not the 0/1 class average)
    logits = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    labels = np.array([[1], [0], [1], [0]])
    out = compute_task_metrics("multilabel", logits, labels, metrics=METRICS["multilabel"])
    assert out == {"f1_micro": 0.5, "f1_macro": 0.5, "accuracy": 0.5, "hamming_accuracy": 0.5,
                   "precision_micro": 0.5, "recall_micro": 0.5}


def test_multilabel_no_positive_anywhere_scores_zero_f1():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_task_metrics("multilabel", np.full((2, 3), -1.0), np.zeros((2, 3)), metrics=METRICS["multilabel"])
    assert out == {"f1_micro": 0.0, "f1_macro": 0.0, "accuracy": 1.0, "hamming_accuracy": 1.0,
                   "precision_micro": 0.0, "recall_micro": 0.0}


def test_token_classification_no_entities_anywhere():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_task_metrics("token_classification", np.array([[O_, O_, PAD]]), np.array([[O_, O_, PAD]]),
                                   id2label=BIO)
    assert out == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "accuracy": 1.0}


def test_token_classification_fully_ignored_row_is_skipped():
    # row 1 is all -100 (e.g. a truncated example): it adds no tokens and no entities; its predictions do not count
    labels = np.array([[B_, I_, O_], [PAD, PAD, PAD]])
    pred = np.array([[B_, I_, O_], [B_, B_, B_]])
    out = compute_task_metrics("token_classification", pred, labels, id2label=BIO)
    assert out == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0}


def test_token_classification_typed_tags_and_underscore_spelling():
    # "B_Chem" is read as "B-Chem"; a type mismatch inside a span splits it: gold Dis(0,1), pred Dis(0,0) + Chem(1,1)
    tags = ["O", "B_Dis", "I_Dis", "B_Chem", "I_Chem"]
    out = compute_task_metrics("token_classification", np.array([[1, 4, 0]]), np.array([[1, 2, 0]]), id2label=tags)
    assert (out["precision"], out["recall"], out["f1"]) == (0.0, 0.0, 0.0)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert extract_entities(["B_Dis", "I_Chem"]) == {("Dis", 0, 0), ("Chem", 1, 1)}


# --------------------------------------------------------------------------- the adapter's library inputs


def test_metric_inputs_per_task_type():
    pred, ref = metric_inputs("classification", one_hot_logits(np.array([2, 0]), 3), np.array([[2], [1]]))
    assert pred.tolist() == [2, 0] and ref.tolist() == [2, 1]
    pred, ref = metric_inputs("multilabel", np.array([[0.0, 0.5, -2.0]]), np.array([[1.0, 1.0, 0.0]]))
    assert pred.tolist() == [[0, 1, 0]] and ref.tolist() == [[1, 1, 0]]  # threshold: logit > 0
    pred, ref = metric_inputs("regression", np.array([[1.5], [2.0]]), np.array([1, 2]))
    assert pred.tolist() == [1.5, 2.0] and ref.dtype == np.float64
    pred, ref = metric_inputs("token_classification", np.array([[B_, I_, I_], [O_, O_, O_]]),
                              np.array([[B_, PAD, I_], [PAD, PAD, PAD]]), id2label={"0": "O", "1": "B-D", "2": "I-D"})
    assert (pred, ref) == ([["B-D", "I-D"]], [["B-D", "I-D"]])  # -100 removed, the empty row dropped


# --------------------------------------------------------------------------- the evaluate hook


def _exact_sequence_metric():
    """A locally built ``evaluate`` metric (no Hub): the fraction of examples whose whole tag sequence is right."""
    import datasets
    import evaluate

    class ExactSequence(evaluate.Metric):
        def _info(self):
            strings = datasets.Sequence(datasets.Value("string"))
            return evaluate.MetricInfo(description="exact tag sequences", citation="", inputs_description="",
                                       features=datasets.Features({"predictions": strings, "references": strings}))

        def _compute(self, predictions, references):
            hits = sum(p == r for p, r in zip(predictions, references))
            return {"exact": hits / len(references), "counts": {"hits": hits, "examples": len(references)}}

    return ExactSequence()


def test_make_compute_metrics_adds_an_evaluate_module_fed_by_the_adapter():
    from transformers import EvalPrediction

    compute = make_compute_metrics("token_classification", id2label=BIO, metric_module=_exact_sequence_metric())
    labels = np.array([[B_, I_, PAD], [O_, B_, O_], [PAD, PAD, PAD]])
    pred = np.array([[B_, I_, O_], [O_, O_, O_], [B_, B_, B_]])
    out = compute(EvalPrediction(predictions=one_hot_logits(pred, 3), label_ids=labels))
    # 2 labelled rows, row 0 exact -> 1/2; nested results are flattened; the built-in metrics stay
    assert out["exact"] == 0.5 and out["counts_hits"] == 1.0 and out["counts_examples"] == 2.0
    assert out["f1"] == pytest.approx(2 / 3) and out["accuracy"] == pytest.approx(4 / 5)


def test_make_compute_metrics_rejects_a_module_without_compute():
    with pytest.raises(TypeError, match="compute"):
        make_compute_metrics("classification", metric_module=object())


def test_trainer_takes_an_evaluate_module_per_task(suite, tokenized, tmp_path):
    from utils import tiny_model, tiny_tokenizer

    from hf_taskgroup.training.args import MultiTaskTrainingArguments
    from hf_taskgroup.training.trainer import MultiTaskTrainer

    class Agreement:  # the smallest thing the hook takes: an object with compute(predictions=, references=)
        def compute(self, *, predictions, references):
            return {"agreement": float(np.mean(np.equal(predictions, references))), "n_refs": len(references)}

    tasks = ["sent", "ner"]
    trainer = MultiTaskTrainer(
        model=tiny_model(suite.subset(tasks)),
        args=MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", disable_tqdm=True, use_cpu=True),
        eval_dataset={t: tokenized[t]["validation"] for t in tasks},
        processing_class=tiny_tokenizer(),
        compute_metrics={"sent": Agreement(), "ner": _exact_sequence_metric()},
    )
    metrics = trainer.evaluate()
    # the module got class ids aligned with the references: its agreement is the built-in accuracy
    assert metrics["eval_sent_agreement"] == pytest.approx(metrics["eval_sent_accuracy"])
    assert metrics["eval_sent_n_refs"] == len(tokenized["sent"]["validation"])
    assert 0.0 <= metrics["eval_ner_exact"] <= 1.0
    assert metrics["eval_ner_counts_examples"] == len(tokenized["ner"]["validation"])
    for key in ("eval_sent_mcc", "eval_ner_f1", "eval_ner_accuracy"):  # the built-in metrics stay
        assert key in metrics, key


def test_trainer_plain_function_per_task_replaces_the_builtin_metrics(suite, tokenized, tmp_path):
    from utils import tiny_model, tiny_tokenizer

    from hf_taskgroup.training.args import MultiTaskTrainingArguments
    from hf_taskgroup.training.trainer import MultiTaskTrainer

    trainer = MultiTaskTrainer(
        model=tiny_model(suite.subset(["sent"])),
        args=MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to="none", disable_tqdm=True, use_cpu=True),
        eval_dataset={"sent": tokenized["sent"]["validation"]},
        processing_class=tiny_tokenizer(),
        compute_metrics={"sent": lambda p: {"n": float(len(p.label_ids))}},
    )
    metrics = trainer.evaluate()
    assert metrics["eval_sent_n"] == len(tokenized["sent"]["validation"])
    assert "eval_sent_accuracy" not in metrics
