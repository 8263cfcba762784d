"""Batched training of many tabular groups (train_tabular_groups) and CachedEvaluator.evaluate_many."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hf_taskgroup.grouping.evaluators.base import CachedEvaluator
from hf_taskgroup.grouping.evaluators.tabular import (
    TabularSuite,
    make_tabular_evaluator,
    train_tabular_group,
    train_tabular_groups,
)

TINY = {"epochs": 4, "hidden": (8, 4), "input_units": 6, "batch_size": 16}


def uneven_suite(task_type: str) -> TabularSuite:
    """Five tasks of very different sizes (train rows 6, 18, 30, 48, 72): groups get different batch sizes
    (a group of small tasks has batch < batch_size) and different steps per epoch."""
    rng = np.random.default_rng(0)
    features, targets = {}, {}
    for i, n in enumerate((10, 30, 50, 80, 120)):
        x = rng.normal(size=(n, 4))
        z = x @ rng.normal(size=4) + 0.3 * rng.normal(size=n)
        features[f"t{i}"] = x
        targets[f"t{i}"] = (z > 0).astype(float) if task_type == "classification" else 5 * i + z
    return TabularSuite.from_arrays(features, targets, task_type=task_type)


# a small-task group (batch 6, 1 step), a task in three groups, groups of 1..5 tasks with 1..5 steps per epoch
GROUPS = [["t0"], ["t1", "t3"], ["t4", "t0", "t2"], ["t3"], ["t0", "t1"], ["t0", "t1", "t2", "t3", "t4"]]


def assert_same(batched: dict, separate: dict) -> None:
    assert batched.keys() == separate.keys()
    for task in separate:
        assert batched[task].keys() == separate[task].keys()
        assert batched[task]["best_epoch"] == separate[task]["best_epoch"]
        for metric in ("loss", "test_loss"):
            assert torch.allclose(torch.tensor(batched[task][metric]), torch.tensor(separate[task][metric]),
                                  rtol=1e-5, atol=1e-6), (task, metric)


@pytest.mark.parametrize("task_type", ["classification", "regression"])
@pytest.mark.parametrize("settings", [{"input_layer": "task"}, {"input_layer": "shared", "weight_decay": 0.01}])
def test_batched_training_equals_separate_training_per_group(task_type, settings):
    suite = uneven_suite(task_type)
    kwargs = {**TINY, **settings, "seed": 3}
    batched = train_tabular_groups(suite, GROUPS, **kwargs)
    assert len(batched) == len(GROUPS)
    for group, result in zip(GROUPS, batched):
        assert_same(result, train_tabular_group(suite, group, **kwargs))


def test_groups_really_differ_in_batch_size_and_steps():
    sizes = uneven_suite("regression").task_sizes()
    batches = {min(16, max(sizes[t] for t in g)) for g in GROUPS}
    steps = {max(-(-sizes[t] // min(16, max(sizes[u] for u in g))) for t in g) for g in GROUPS}
    assert len(batches) > 1 and len(steps) > 2


def test_one_group_is_exactly_train_tabular_group_and_order_of_groups_does_not_matter():
    suite = uneven_suite("classification")
    assert train_tabular_groups(suite, [GROUPS[2]], **TINY) == [train_tabular_group(suite, GROUPS[2], **TINY)]
    forward = train_tabular_groups(suite, GROUPS[:3], **TINY)
    backward = train_tabular_groups(suite, GROUPS[:3][::-1], **TINY)[::-1]
    for a, b in zip(forward, backward):
        assert_same(a, b)


def test_zero_epochs_scores_the_untrained_groups():
    suite = uneven_suite("regression")
    for group, result in zip(GROUPS, train_tabular_groups(suite, GROUPS, **{**TINY, "epochs": 0})):
        assert_same(result, train_tabular_group(suite, group, **{**TINY, "epochs": 0}))
        assert all(r["best_epoch"] == 0 for r in result.values())


def test_bad_groups_are_clear_errors_naming_the_group():
    suite = uneven_suite("regression")
    with pytest.raises(ValueError, match=r"group 1 \['t0', 'nope'\]: unknown task"):
        train_tabular_groups(suite, [["t0"], ["t0", "nope"]])
    with pytest.raises(ValueError, match="group 1: need a non-empty group"):
        train_tabular_groups(suite, [["t0"], []])
    with pytest.raises(ValueError, match="group 0: need a non-empty group of distinct tasks"):
        train_tabular_groups(suite, [["t0", "t0"]])
    with pytest.raises(TypeError, match="group 0 is the string"):
        train_tabular_groups(suite, ["t0"])
    with pytest.raises(ValueError, match="activation"):
        train_tabular_groups(suite, [["t0"]], activation="swish")
    assert train_tabular_groups(suite, []) == []


# --------------------------------------------------------------------------- evaluate_many


class Recorder:
    """Fake train_fn / batch_train_fn: the loss depends on the group; records every call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.single_calls: list[list[str]] = []
        self.batch_calls: list[list[list[str]]] = []
        self.fail_on_call = fail_on_call

    @staticmethod
    def result(tasks):
        return {t: {"loss": 1.0 / len(tasks) + 0.01 * i} for i, t in enumerate(sorted(tasks))}

    def train_fn(self, tasks):
        self.single_calls.append(list(tasks))
        return self.result(tasks)

    def batch_train_fn(self, groups):
        self.batch_calls.append([list(g) for g in groups])
        if self.fail_on_call == len(self.batch_calls):
            raise RuntimeError("killed")
        return [self.result(g) for g in groups]


def evaluator(rec: Recorder, cache_dir, batched: bool = True) -> CachedEvaluator:
    return CachedEvaluator(rec.train_fn, cache_dir, {"lr": 0.1}, batch_train_fn=rec.batch_train_fn if batched else None)


def test_evaluate_many_returns_input_order_deduplicates_and_counts(tmp_path):
    rec = Recorder()
    ev = evaluator(rec, tmp_path)
    groups = [["b", "a"], ["c"], ["a", "b"], ["a", "c", "b"], ["c"]]
    results = ev.evaluate_many(groups, chunk_size=2, progress=True)
    assert results == [Recorder.result(g) for g in groups]
    assert [len(call) for call in rec.batch_calls] == [2, 1]  # 3 distinct groups in chunks of 2
    assert sorted(sorted(g) for call in rec.batch_calls for g in call) == [["a", "b"], ["a", "b", "c"], ["c"]]
    assert rec.single_calls == []
    assert (ev.trainings, ev.cache_hits) == (3, 2)
    results[0]["a"]["loss"] = -1.0  # a copy
    assert ev.evaluate_many([["a", "b"]])[0]["a"]["loss"] == 0.5
    assert (ev.trainings, ev.cache_hits, len(rec.batch_calls)) == (3, 3, 2)


def test_evaluate_many_cache_entries_record_the_chunk(tmp_path):
    rec = Recorder()
    ev = evaluator(rec, tmp_path)
    ev.evaluate_many([["a"], ["b"], ["c"]], chunk_size=2)
    entries = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert sorted(e["batched"] for e in entries) == [1, 2, 2]
    assert all(e["settings"] == {"lr": 0.1} and e["seed"] == 0 and e["seconds"] >= 0 for e in entries)
    chunk_seconds = {e["batched"]: e["seconds"] for e in entries}
    assert ev.seconds == pytest.approx(2 * chunk_seconds[2] + chunk_seconds[1])
    assert ev.training_seconds(["a"]) == pytest.approx(chunk_seconds[2])


def test_evaluate_many_and_call_share_the_cache(tmp_path):
    rec = Recorder()
    first = evaluator(rec, tmp_path)
    first(["a", "b"])  # written by __call__
    first.evaluate_many([["c"], ["b", "c"]])  # written by evaluate_many
    second = evaluator(rec, tmp_path)
    assert second.evaluate_many([["b", "a"], ["c"]]) == [Recorder.result(["a", "b"]), Recorder.result(["c"])]
    assert second(["c", "b"]) == Recorder.result(["b", "c"])
    assert (second.trainings, second.cache_hits) == (0, 3)
    assert len(rec.single_calls) == 1 and len(rec.batch_calls) == 1


def test_evaluate_many_without_batch_train_fn_trains_one_group_at_a_time(tmp_path):
    rec = Recorder()
    ev = evaluator(rec, tmp_path, batched=False)
    assert ev.evaluate_many([["a"], ["a", "b"], ["b", "a"]], chunk_size=8) == [
        Recorder.result(["a"]), Recorder.result(["a", "b"]), Recorder.result(["a", "b"])]
    assert rec.single_calls == [["a"], ["a", "b"]] and rec.batch_calls == []
    assert (ev.trainings, ev.cache_hits) == (2, 1)
    assert all("batched" not in json.loads(p.read_text()) for p in tmp_path.glob("*.json"))  # as __call__ writes


def test_evaluate_many_resumes_after_a_failed_chunk(tmp_path):
    groups = [["a"], ["b"], ["c"], ["d"], ["e"]]
    broken = Recorder(fail_on_call=2)
    with pytest.raises(RuntimeError, match="killed"):
        evaluator(broken, tmp_path).evaluate_many(groups, chunk_size=2)
    fresh = evaluator(Recorder(), tmp_path)
    assert [fresh.is_cached(g) for g in groups] == [True, True, False, False, False]
    rec = Recorder()
    ev = evaluator(rec, tmp_path)
    assert ev.evaluate_many(groups, chunk_size=2) == [Recorder.result(g) for g in groups]
    assert rec.batch_calls == [[["c"], ["d"]], [["e"]]]
    assert (ev.trainings, ev.cache_hits) == (3, 2)


def test_evaluate_many_rejects_bad_arguments_and_bad_batch_results(tmp_path):
    rec = Recorder()
    ev = evaluator(rec, tmp_path)
    with pytest.raises(ValueError, match="chunk_size"):
        ev.evaluate_many([["a"]], chunk_size=0)
    with pytest.raises(ValueError, match="duplicate"):
        ev.evaluate_many([["a", "a"]])
    short = CachedEvaluator(rec.train_fn, tmp_path / "short", {}, batch_train_fn=lambda gs: [])
    with pytest.raises(ValueError, match="returned 0 results for 1 groups"):
        short.evaluate_many([["a"]])
    missing = CachedEvaluator(rec.train_fn, tmp_path / "missing", {}, batch_train_fn=lambda gs: [{} for _ in gs])
    with pytest.raises(ValueError, match="batch_train_fn returned no result for task 'a'"):
        missing.evaluate_many([["a"]])
    with pytest.raises(TypeError, match="batch_train_fn must be callable"):
        CachedEvaluator(rec.train_fn, None, {}, batch_train_fn=3)  # type: ignore[arg-type]


def test_tabular_evaluator_trains_many_groups_together(tmp_path):
    suite = uneven_suite("classification")
    ev = make_tabular_evaluator(suite, tmp_path, **TINY)
    results = ev.evaluate_many(GROUPS, chunk_size=4)
    assert ev.trainings == len(GROUPS)
    entries = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert sorted(e["batched"] for e in entries) == [2, 2, 4, 4, 4, 4]
    alone = make_tabular_evaluator(suite, None, **TINY)
    for group, result in zip(GROUPS, results):
        assert_same(result, alone(group))
    assert make_tabular_evaluator(suite, tmp_path, **TINY)(GROUPS[1]) == results[1]  # same cache keys
