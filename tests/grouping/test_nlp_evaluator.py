"""Tests of hf_taskgroup.grouping.evaluators.text: the cached group evaluator of NLP suites."""

from __future__ import annotations

import json

import pytest
from utils import classification_dataset, dataset_dict, regression_rows, tiny_model, tiny_tokenizer

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator, suite_fingerprint
from hf_taskgroup.training.features import default_feature_cache
from hf_taskgroup.training.train import TrainSettings

SUITE = TaskSuite(
    [
        TaskSpec(name="ev_sent", type="classification", data=classification_dataset(n_train=16, n_eval=8)),
        TaskSpec(name="ev_sim", type="regression", text_columns=["text_a", "text_b"],
                 data=dataset_dict(regression_rows, n_train=16, n_eval=8)),
    ],
    name="evaluator-test",
)
TOKENIZER = tiny_tokenizer()
SETTINGS = TrainSettings(finetune="frozen", pooling="mean", num_train_epochs=1, per_device_train_batch_size=8, seed=0)


def factory(infos):
    return tiny_model(SUITE.subset(list(infos)), pooling="mean", seed=0)


def make(cache_dir, **kw):
    return make_suite_evaluator(SUITE, SETTINGS, cache_dir, tokenizer=TOKENIZER, model_factory=factory, **kw)


def test_evaluator_reports_validation_and_test_metrics_and_caches(tmp_path):
    ev = make(tmp_path)
    result = ev(["ev_sim", "ev_sent"])
    assert set(result) == {"ev_sent", "ev_sim"}
    sent, sim = result["ev_sent"], result["ev_sim"]
    for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
        assert key in sent, key
    for key in ("loss", "pearson", "test_loss", "test_pearson"):
        assert key in sim, key
    assert sent["loss"] != sent["test_loss"]  # validation and test are different splits
    assert ev(["ev_sent", "ev_sim"]) == result
    assert (ev.trainings, ev.cache_hits) == (1, 1)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["tasks"] == ["ev_sent", "ev_sim"]


def test_a_new_evaluator_on_the_same_folder_never_retrains(tmp_path, monkeypatch):
    make(tmp_path)(["ev_sent"])
    import hf_taskgroup.training.train as training

    monkeypatch.setattr(training, "train_group", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again = make(tmp_path)
    assert again.is_cached(["ev_sent"]) and "loss" in again(["ev_sent"])["ev_sent"]
    assert again.trainings == 0
    with pytest.raises(AssertionError, match="retrained"):  # another seed is another cache key
        make(tmp_path, seed=1)(["ev_sent"])


def test_frozen_features_are_encoded_once_across_groups(tmp_path):
    cache = default_feature_cache()
    ev = make(tmp_path)
    ev(["ev_sent", "ev_sim"])
    misses, hits = cache.misses, cache.hits
    ev(["ev_sent"])
    ev(["ev_sim"])
    assert ev.trainings == 3
    assert cache.misses == misses  # nothing encoded again ...
    assert cache.hits >= hits + 6  # ... every split (train/validation/test) of both tasks came from the cache


def test_unknown_task_and_missing_split_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="not in suite"):
        make(tmp_path)(["ev_nope"])
    with pytest.raises(ValueError, match="no 'heldout' split"):
        make(tmp_path, eval_split="heldout")(["ev_sent"])
    assert "loss" in make(tmp_path, eval_split="dev")(["ev_sent"])["ev_sent"]  # dev = validation


def test_suite_fingerprint_changes_with_the_data():
    other = TaskSuite([TaskSpec(name="ev_sent", type="classification", data=classification_dataset(n_train=16, seed=5))],
                      name="evaluator-test")
    assert suite_fingerprint(SUITE, ["ev_sent"]) != suite_fingerprint(other, ["ev_sent"])
    assert suite_fingerprint(SUITE, ["ev_sent"]) == suite_fingerprint(SUITE, ["ev_sent"])


def test_metric_objective_minimises_one_minus_the_primary_metric_on_the_same_cache(tmp_path):
    by_loss = make(tmp_path)
    raw = by_loss(["ev_sent", "ev_sim"])
    by_metric = make(tmp_path, objective="metric")
    result = by_metric(["ev_sent", "ev_sim"])
    assert by_metric.trainings == 0  # the loss evaluator's cache entry serves the metric objective
    assert result["ev_sent"]["loss"] == pytest.approx(1.0 - raw["ev_sent"]["accuracy"])
    assert result["ev_sim"]["loss"] == pytest.approx(1.0 - raw["ev_sim"]["pearson"])
    assert result["ev_sent"]["eval_loss"] == raw["ev_sent"]["loss"]
    with pytest.raises(ValueError, match="objective must be"):
        make(tmp_path, objective="accuracy")


def test_metric_objective_names_the_task_without_its_metric():
    from hf_taskgroup.grouping.evaluators.base import CachedEvaluator, MetricObjective

    ev = MetricObjective(CachedEvaluator(lambda ts: {t: {"loss": 1.0} for t in ts}, None, {}), {"a": "f1"})
    with pytest.raises(KeyError, match="task 'a' reported no 'f1'"):
        ev(["a"])
    with pytest.raises(KeyError, match="no metric named for task 'b'"):
        ev(["b"])
