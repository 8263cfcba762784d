"""TabularSuite loading/splitting/standardising and the multi-task MLP trainer of hf_taskgroup.grouping.evaluators.tabular."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from hf_taskgroup.grouping.evaluators.base import pair_gains
from hf_taskgroup.grouping.evaluators.tabular import TabularSuite, make_tabular_evaluator, train_tabular_group
from hf_taskgroup.grouping.synthetic import make_synthetic_tabular_suite

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tabular"
FAST = {"epochs": 15, "hidden": (8,), "input_units": 8}


def write_csv(path: Path, task_type: str = "classification", n: int = 40, tasks=("1", "2", "3")) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task_id", "x1", "x2(%)", "leak", "target"])
        for t in tasks:
            for i in range(n):
                x1, x2 = rng.normal(loc=5.0, scale=2.0), rng.normal()
                y = int(x1 > 5.0) if task_type == "classification" else 10 * int(t) + 3 * x1
                w.writerow([t, x1, x2, y * 100, y if i % 7 or task_type != "classification" else 1 - y])
    return path


def test_from_csv_reads_tasks_features_and_drops_columns(tmp_path):
    suite = TabularSuite.from_csv(write_csv(tmp_path / "d.csv"), drop_columns=("leak",))
    assert suite.tasks == ["1", "2", "3"]
    assert suite.feature_names == ["x1", "x2(%)"]
    assert suite.data["1"].x_train.shape[1] == 2 and suite.data["1"].x_train.dtype == np.float32
    sizes = {len(suite.data["1"].y_train), len(suite.data["1"].y_val), len(suite.data["1"].y_test)}
    assert sum(sizes) == 40 or len(suite.data["1"].y_train) + len(suite.data["1"].y_val) + len(
        suite.data["1"].y_test) == 40


def test_splits_are_seeded_disjoint_and_stratified(tmp_path):
    path = write_csv(tmp_path / "d.csv")
    a = TabularSuite.from_csv(path, drop_columns=("leak",), seed=3)
    b = TabularSuite.from_csv(path, drop_columns=("leak",), seed=3)
    c = TabularSuite.from_csv(path, drop_columns=("leak",), seed=4)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    for task in a.tasks:
        d = a.data[task]
        assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 40
        assert len(d.y_val) == pytest.approx(8, abs=1) and len(d.y_test) == pytest.approx(8, abs=1)
        for split in (d.y_train, d.y_val, d.y_test):
            assert set(np.unique(split)) == {0.0, 1.0}  # both classes in every split
        rows = {tuple(r) for r in np.concatenate([d.x_train, d.x_val, d.x_test]).round(5)}
        assert len(rows) == 40  # no example in two splits


def test_features_are_standardised_with_training_statistics(tmp_path):
    suite = TabularSuite.from_csv(write_csv(tmp_path / "d.csv"), drop_columns=("leak",))
    train = np.concatenate([suite.data[t].x_train for t in suite.tasks])
    assert np.allclose(train.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(train.std(axis=0), 1.0, atol=1e-4)
    val = np.concatenate([suite.data[t].x_val for t in suite.tasks])
    assert not np.allclose(val.mean(axis=0), 0.0, atol=1e-5)  # validation rows did not enter the statistics


def test_regression_targets_are_standardised_per_task(tmp_path):
    suite = TabularSuite.from_csv(write_csv(tmp_path / "r.csv", "regression"), task_type="regression",
                                  drop_columns=("leak",))
    for task in suite.tasks:
        d = suite.data[task]
        assert d.y_train.mean() == pytest.approx(0.0, abs=1e-5) and d.y_train.std() == pytest.approx(1.0, abs=1e-4)
        assert d.raw_target_variance == pytest.approx(d.target_std**2)
    assert suite.target_mean()["3"] > suite.target_mean()["1"] + 15  # raw means differ by task (10 * task)


def test_tasks_argument_selects_and_orders_tasks(tmp_path):
    suite = TabularSuite.from_csv(write_csv(tmp_path / "d.csv"), drop_columns=("leak",), tasks=["3", "1"])
    assert suite.tasks == ["3", "1"]
    assert suite.subset(["1"]).tasks == ["1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tasks": ["9"]}, "unknown task id"), ({"drop_columns": ("nope",)}, "no column 'nope'"),
     ({"target_column": "y"}, "no column 'y'"), ({"task_type": "ranking"}, "task_type")],
)
def test_loading_errors_name_the_problem(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TabularSuite.from_csv(write_csv(tmp_path / "d.csv"), **kwargs)


def test_non_binary_classification_target_and_non_numeric_feature_are_rejected(tmp_path):
    path = write_csv(tmp_path / "d.csv")
    with pytest.raises(ValueError, match="0/1"):
        TabularSuite.from_csv(path, target_column="leak")
    text = path.read_text().splitlines()
    text[1] = "1,abc" + text[1][text[1].index(",", 2):]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match="task '1' has a non-numeric"):
        TabularSuite.from_csv(path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        TabularSuite.from_csv(tmp_path / "missing.csv")


def test_trainer_reduces_loss_compared_with_the_untrained_network():
    suite = make_synthetic_tabular_suite(1, 2, n_per_task=200, seed=0)
    untrained = train_tabular_group(suite, suite.tasks, epochs=0)
    trained = train_tabular_group(suite, suite.tasks, epochs=40)
    for task in suite.tasks:
        assert untrained[task]["best_epoch"] == 0
        assert trained[task]["loss"] < 0.5 * untrained[task]["loss"]
        assert trained[task]["test_loss"] < untrained[task]["test_loss"]
        assert 0 < trained[task]["loss"] < 1.0  # better than predicting the training mean (loss 1.0)


def test_classification_trainer_reports_bce_accuracy_and_auc():
    suite = make_synthetic_tabular_suite(1, 2, n_per_task=100, seed=1, task_type="classification")
    result = train_tabular_group(suite, suite.tasks, **FAST)
    for task in suite.tasks:
        assert set(result[task]) >= {"loss", "test_loss", "accuracy", "auc", "best_epoch"}
        assert 0.0 <= result[task]["accuracy"] <= 1.0 and 0.0 <= result[task]["auc"] <= 1.0
        assert result[task]["loss"] < np.log(2) + 0.05  # no worse than a coin


def test_trainer_is_deterministic_for_a_seed():
    suite = make_synthetic_tabular_suite(1, 2, n_per_task=60, seed=0)
    assert train_tabular_group(suite, suite.tasks, seed=3, **FAST) == train_tabular_group(suite, suite.tasks, seed=3, **FAST)
    assert train_tabular_group(suite, suite.tasks, seed=3, **FAST) != train_tabular_group(suite, suite.tasks, seed=4, **FAST)


def test_trainer_rejects_unknown_tasks_and_bad_settings():
    suite = make_synthetic_tabular_suite(1, 2, n_per_task=40, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        train_tabular_group(suite, ["nope"])
    with pytest.raises(ValueError, match="activation"):
        train_tabular_group(suite, suite.tasks, activation="swish")
    with pytest.raises(ValueError, match="input_layer"):
        train_tabular_group(suite, suite.tasks, input_layer="tied")


def test_shared_input_layer_differs_from_task_specific_input_layers():
    suite = make_synthetic_tabular_suite(1, 2, n_per_task=60, seed=0)
    task = train_tabular_group(suite, suite.tasks, seed=0, **FAST)
    shared = train_tabular_group(suite, suite.tasks, seed=0, input_layer="shared", **FAST)
    single = train_tabular_group(suite, suite.tasks[:1], seed=0, input_layer="shared", **FAST)
    assert task != shared
    assert np.isfinite(single[suite.tasks[0]]["loss"])


def test_tabular_evaluator_caches_and_keys_on_settings(tmp_path):
    suite = make_synthetic_tabular_suite(1, 2, n_per_task=40, seed=0)
    ev = make_tabular_evaluator(suite, tmp_path, **FAST)
    first = ev(suite.tasks)
    assert make_tabular_evaluator(suite, tmp_path, **FAST).is_cached(suite.tasks)
    assert not make_tabular_evaluator(suite, tmp_path, **{**FAST, "epochs": 16}).is_cached(suite.tasks)
    assert not make_tabular_evaluator(suite, tmp_path, seed=1, **FAST).is_cached(suite.tasks)
    other_data = make_synthetic_tabular_suite(1, 2, n_per_task=40, seed=1)
    assert not make_tabular_evaluator(other_data, tmp_path, **FAST).is_cached(suite.tasks)
    assert ev(suite.tasks) == first and ev.trainings == 1
    with pytest.raises(TypeError, match="unknown training setting"):
        make_tabular_evaluator(suite, tmp_path, epoch=3)


@pytest.mark.slow
def test_family_structure_shows_up_in_trained_pair_gains():
    # hard parameter sharing (shared input layer): families share direction and response shape
    suite = make_synthetic_tabular_suite(2, 2, n_per_task=120, seed=1)
    gains = pair_gains(make_tabular_evaluator(suite, None, seed=1, input_layer="shared"), suite.tasks)
    family = np.array([t[:2] for t in suite.tasks])
    same = (family[:, None] == family[None, :]) & ~np.eye(len(family), dtype=bool)
    across = family[:, None] != family[None, :]
    assert gains[same].min() > gains[across].max()
    assert gains[same].mean() > gains[across].mean() + 0.2


@pytest.mark.data
def test_real_tabular_benchmarks_load():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    landmine = TabularSuite.from_csv(SHARED_DATA / "landmine.csv", task_type="classification")
    assert len(landmine.tasks) == 29 and landmine.num_features == 9
    parkinsons = TabularSuite.from_csv(SHARED_DATA / "parkinsons.csv", task_type="regression",
                                       drop_columns=("motor_UPDRS",))
    assert len(parkinsons.tasks) == 42
    assert "motor_UPDRS" not in parkinsons.feature_names and "target" not in parkinsons.feature_names
    assert parkinsons.num_features == 19
    result = train_tabular_group(landmine, landmine.tasks[:2], epochs=2)
    assert all(np.isfinite(r["loss"]) for r in result.values())
