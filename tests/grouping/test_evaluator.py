"""CachedEvaluator (on-disk cache, resume, keys) and the gain helpers of hf_taskgroup.grouping.evaluators.base."""

from __future__ import annotations

import json

import numpy as np
import pytest
from utils import flip_digit_after, truncate_half

from hf_taskgroup.grouping.evaluators.base import (
    CachedEvaluator,
    GroupEvaluator,
    group_gain,
    group_key,
    group_loss,
    pair_gains,
    stl_losses,
)


class CountingTrainFn:
    """train_fn whose loss depends on the group; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, tasks):
        self.calls.append(tuple(tasks))
        return {t: {"loss": 1.0 / len(tasks) + 0.01 * i, "accuracy": 0.5} for i, t in enumerate(sorted(tasks))}


def test_second_call_is_served_from_cache_in_any_task_order(tmp_path):
    fn = CountingTrainFn()
    ev = CachedEvaluator(fn, tmp_path, settings={"lr": 0.1})
    first = ev(["b", "a"])
    second = ev(["a", "b"])
    assert first == second
    assert fn.calls == [("a", "b")]
    assert (ev.trainings, ev.cache_hits) == (1, 1)


def test_new_instance_resumes_from_disk_without_training(tmp_path):
    fn = CountingTrainFn()
    CachedEvaluator(fn, tmp_path, settings={"lr": 0.1})(["a", "b"])
    fn2 = CountingTrainFn()
    ev2 = CachedEvaluator(fn2, tmp_path, settings={"lr": 0.1})
    assert ev2.is_cached(["b", "a"])
    assert ev2(["a", "b"])["a"]["loss"] == pytest.approx(0.5)
    assert fn2.calls == []
    assert (ev2.trainings, ev2.cache_hits) == (0, 1)
    assert ev2.training_seconds(["a", "b"]) >= 0.0 and ev2.training_seconds(["a"]) is None


def test_cache_writes_one_json_file_and_its_manifest_per_group_and_no_temp_files(tmp_path):
    ev = CachedEvaluator(CountingTrainFn(), tmp_path, settings={})
    ev(["a"])
    ev(["a", "b"])
    files = sorted(p.name for p in tmp_path.iterdir())
    keys = sorted([ev.key(["a"]), ev.key(["a", "b"])])
    assert files == sorted([f"{k}.json" for k in keys] + [f"{k}.json.manifest" for k in keys])
    entry = json.loads((tmp_path / f"{ev.key(['b', 'a'])}.json").read_text())
    assert entry["tasks"] == ["a", "b"] and set(entry["results"]) == {"a", "b"}
    manifest = json.loads((tmp_path / f"{ev.key(['b', 'a'])}.json.manifest").read_text())
    assert manifest["fingerprint"] == ev.key(["a", "b"])  # the input fingerprint: the group's key


@pytest.mark.parametrize("change", [{"settings": {"lr": 0.2}}, {"seed": 1}])
def test_changed_settings_or_seed_trains_again(tmp_path, change):
    fn = CountingTrainFn()
    CachedEvaluator(fn, tmp_path, settings={"lr": 0.1}, seed=0)(["a", "b"])
    kwargs = {"settings": {"lr": 0.1}, "seed": 0, **change}
    ev = CachedEvaluator(fn, tmp_path, **kwargs)
    assert not ev.is_cached(["a", "b"])
    ev(["a", "b"])
    assert len(fn.calls) == 2


def test_key_ignores_task_order_and_settings_key_order():
    assert group_key(["a", "b"], {"x": 1, "y": [1, 2]}, 0) == group_key(["b", "a"], {"y": [1, 2], "x": 1}, 0)
    assert group_key(["a", "b"], {"x": 1}, 0) != group_key(["a", "b"], {"x": 2}, 0)
    assert group_key(["a", "b"], {"x": 1}, 0) != group_key(["a", "b"], {"x": 1}, 1)
    assert group_key(["a", "b"], {}, 0) != group_key(["a", "b", "c"], {}, 0)




_flip = flip_digit_after("loss")


@pytest.mark.parametrize("damage", [truncate_half, _flip, lambda p: p.write_text("{not json")],
                         ids=["truncated", "flipped-digit", "unparsable"])
def test_corrupt_cache_entry_is_named_in_one_warning_discarded_and_trained_again(tmp_path, damage):
    from hf_taskgroup.artifacts import ArtifactWarning

    fresh = CachedEvaluator(CountingTrainFn(), None, settings={})(["a", "b"])
    CachedEvaluator(CountingTrainFn(), tmp_path, settings={})(["a", "b"])
    fn = CountingTrainFn()
    ev = CachedEvaluator(fn, tmp_path, settings={})
    path = tmp_path / f"{ev.key(['a', 'b'])}.json"
    damage(path)
    with pytest.warns(ArtifactWarning) as caught:
        result = ev(["a", "b"])
    named = [w for w in caught if issubclass(w.category, ArtifactWarning)]
    assert len(named) == 1 and str(path) in str(named[0].message)
    assert fn.calls == [("a", "b")] and result == fresh  # trained again: the same result as a fresh one
    assert ev.store.reused == []
    # rewritten and sealed: a new instance reads it without training, and lists it as reused
    fn2 = CountingTrainFn()
    ev2 = CachedEvaluator(fn2, tmp_path, settings={})
    assert ev2(["a", "b"]) == fresh and fn2.calls == []
    assert ev2.store.reused == [path.name]


@pytest.mark.parametrize("content", ['{"tasks": ["a"], "results": {}}', '{"tasks": ["zzz"]}'])
def test_sealed_entry_with_wrong_content_is_named_and_trained_again(tmp_path, content):
    from hf_taskgroup.artifacts import ArtifactStore, ArtifactWarning

    fn = CountingTrainFn()
    ev = CachedEvaluator(fn, tmp_path, settings={})
    ArtifactStore(tmp_path).write_json(f"{ev.key(['a'])}.json", json.loads(content), fingerprint=ev.key(["a"]))
    with pytest.warns(ArtifactWarning, match="cannot be loaded"):
        result = ev(["a"])
    assert result["a"]["loss"] == pytest.approx(1.0) and fn.calls == [("a",)]


def test_entry_without_manifest_is_stale_and_trained_again_quietly(tmp_path):
    """Entries written before manifests existed (or by a run killed between writing and sealing)."""
    import warnings

    CachedEvaluator(CountingTrainFn(), tmp_path, settings={})(["a"])
    for manifest in tmp_path.glob("*.manifest"):
        manifest.unlink()
    fn = CountingTrainFn()
    ev = CachedEvaluator(fn, tmp_path, settings={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev(["a"])
    assert fn.calls == [("a",)] and ev.store.reused == []


def test_reused_entries_reach_a_collecting_run_store(tmp_path):
    from hf_taskgroup.artifacts import ArtifactStore

    cache = tmp_path / "cache" / "evaluator"
    first = CachedEvaluator(CountingTrainFn(), cache, settings={})
    run = ArtifactStore(tmp_path)
    with run.collecting():
        first(["a"])  # computed in this run: not a reuse
        assert run.reused == []
        CachedEvaluator(CountingTrainFn(), cache, settings={})(["a"])  # same run, another instance
        assert run.reused == []
    later = ArtifactStore(tmp_path)  # a later run
    with later.collecting():
        fn = CountingTrainFn()
        CachedEvaluator(fn, cache, settings={}).evaluate_many([["a"], ["b"]])
    assert fn.calls == [("b",)]
    assert later.reused == [f"cache/evaluator/{first.key(['a'])}.json"]


def test_never_trains_a_group_twice_over_many_calls(tmp_path):
    fn = CountingTrainFn()
    ev = CachedEvaluator(fn, tmp_path, settings={})
    groups = [["a"], ["b"], ["a", "b"], ["b", "a"], ["a"], ["c", "a", "b"], ["b", "c", "a"]]
    for g in groups:
        ev(g)
    assert len(fn.calls) == len(set(fn.calls)) == 4
    assert ev.trainings == 4 and ev.cache_hits == 3


def test_memory_only_cache_when_cache_dir_is_none():
    fn = CountingTrainFn()
    ev = CachedEvaluator(fn, None, settings={})
    ev(["a"])
    ev(["a"])
    assert len(fn.calls) == 1
    assert isinstance(ev, GroupEvaluator)


def test_returned_result_is_a_copy(tmp_path):
    ev = CachedEvaluator(CountingTrainFn(), tmp_path, settings={})
    ev(["a"])["a"]["loss"] = 123.0
    assert ev(["a"])["a"]["loss"] == pytest.approx(1.0)


def test_train_fn_missing_a_task_or_loss_is_a_clear_error(tmp_path):
    ev = CachedEvaluator(lambda ts: {"a": {"loss": 1.0}}, tmp_path, settings={})
    with pytest.raises(ValueError, match="no result for task 'b'"):
        ev(["a", "b"])
    ev2 = CachedEvaluator(lambda ts: {t: {"acc": 1.0} for t in ts}, tmp_path, settings={})
    with pytest.raises(ValueError, match="no 'loss' for task 'a'"):
        ev2(["a"])
    ev3 = CachedEvaluator(lambda ts: {t: {"loss": float("nan")} for t in ts}, tmp_path, settings={})
    with pytest.raises(ValueError, match="non-finite loss"):
        ev3(["a"])
    assert ev.trainings == ev2.trainings == ev3.trainings == 0


def test_non_finite_metrics_are_dropped_not_stored(tmp_path):
    ev = CachedEvaluator(lambda ts: {t: {"loss": 1.0, "auc": float("nan")} for t in ts}, tmp_path, settings={})
    assert ev(["a"]) == {"a": {"loss": 1.0}}
    json.loads((tmp_path / f"{ev.key(['a'])}.json").read_text())  # strict JSON


def test_duplicate_or_empty_groups_and_unhashable_settings_are_rejected(tmp_path):
    ev = CachedEvaluator(CountingTrainFn(), tmp_path, settings={})
    with pytest.raises(ValueError, match="duplicate task"):
        ev(["a", "a"])
    with pytest.raises(ValueError, match="at least one task"):
        ev([])
    with pytest.raises(ValueError, match="JSON-able"):
        CachedEvaluator(CountingTrainFn(), tmp_path, settings={"f": object()})


def test_group_gain_matches_the_relative_change_formula():
    stl = {"a": 1.0, "b": 3.0}
    assert group_gain(stl, {"a": 0.5, "b": 2.5}) == pytest.approx((4.0 - 3.0) / 4.0)
    assert group_gain(stl, {"a": {"loss": 2.0}, "b": {"loss": 3.0}}) == pytest.approx(-0.25)
    with pytest.raises(KeyError, match="'c'"):
        group_gain(stl, {"c": 1.0})


def test_stl_losses_and_pair_gains_from_trained_pairs():
    # loss of t in group G: 1.0 alone, 0.8 with its partner of the same letter case, 1.5 otherwise
    def train_fn(tasks):
        if len(tasks) == 1:
            return {tasks[0]: {"loss": 1.0}}
        same = tasks[0].islower() == tasks[1].islower()
        return {t: {"loss": 0.8 if same else 1.5} for t in tasks}

    ev = CachedEvaluator(train_fn, None, settings={})
    tasks = ["a", "b", "C"]
    assert stl_losses(ev, tasks) == {"a": 1.0, "b": 1.0, "C": 1.0}
    gains = pair_gains(ev, tasks)
    assert gains.shape == (3, 3) and np.allclose(gains, gains.T) and np.all(np.diag(gains) == 0)
    assert gains[0, 1] == pytest.approx(0.2)
    assert gains[0, 2] == pytest.approx(-0.5)
    assert ev.trainings == 3 + 3
    assert group_loss(ev(["a", "b"])) == pytest.approx(1.6)


def test_cold_cost_recorder_counts_distinct_groups_requested_even_from_a_warm_cache():
    from hf_taskgroup.grouping.evaluators.base import ColdCostEvaluator

    ev = CachedEvaluator(lambda ts: {t: {"loss": 1.0} for t in ts}, None, {},
                         batch_train_fn=lambda gs: [{t: {"loss": 0.5} for t in g} for g in gs])
    ev(["a"])
    rec = ColdCostEvaluator(ev)
    rec(["a"])
    rec(["b", "a"])
    rec.evaluate_many([["a", "b"], ["c"], ["a"]])
    assert rec.cold_trainings == 3  # {a}, {a, b}, {c}: "a" counts although it was cached before
    assert ev.trainings == 3 and rec.trainings == 3  # real trainings: {a} before, then {a, b} and {c}
    assert rec.cold_seconds() >= rec.real_seconds() >= 0.0
