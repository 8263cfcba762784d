"""The evidence study's shared ledger: two workers writing one file keep each other's results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` (the scripts import each other by plain name)."""
    import importlib

    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def evidence_v2():
    return _benchmark_module("evidence_v2")


def test_two_workers_keep_each_others_entries(tmp_path, evidence_v2):
    path = tmp_path / "ledger.json"
    first, second = evidence_v2.Ledger(path), evidence_v2.Ledger(path)
    first.put("a", {"seconds": 1.0})
    second.put("b", {"seconds": 2.0})  # second never saw "a" in memory: the write must merge, not overwrite
    on_disk = json.loads(path.read_text())["entries"]
    assert set(on_disk) == {"a", "b"}
    assert first.get("b") is None
    first.refresh()
    assert first.get("b") == {"seconds": 2.0}


def test_unreadable_ledger_is_reported_and_ignored(tmp_path, evidence_v2, capsys):
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    ledger = evidence_v2.Ledger(path)
    assert ledger.entries == {}
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2"])
def test_bad_shard_is_one_clear_error(evidence_v2, text):
    with pytest.raises(SystemExit, match="--shard"):
        evidence_v2.parse_shard(text)


def test_shard_parses(evidence_v2):
    assert evidence_v2.parse_shard("1/3") == (1, 3)
    assert evidence_v2.parse_shard(None) is None


class _Settings:
    def __init__(self, seed: int, lr: float) -> None:
        self.seed, self.lr = seed, lr

    def to_dict(self) -> dict:
        return {"seed": self.seed, "learning_rate": self.lr}


class _Config:
    def __init__(self, lr: float = 3e-4) -> None:
        self.lr = lr

    def train_settings(self, seed: int) -> _Settings:
        return _Settings(seed, self.lr)


def test_rekey_moves_entries_of_the_same_settings_only(tmp_path, evidence_v2):
    from datasets import Dataset

    from hf_taskgroup.artifacts import data_fingerprint
    from hf_taskgroup.data.tasks import TaskSpec

    suite = {t: TaskSpec(name=t, data={"train": Dataset.from_list([{"text": t, "label": "x"}])}) for t in "ab"}
    ledger = evidence_v2.Ledger(tmp_path / "ledger.json")
    ledger.put("old-tagged", {"seed": 0, "group": ["a", "b"], "seconds": 1.0, "results": {},
                              "settings": _Settings(0, 3e-4).to_dict()})
    ledger.put("old-untagged", {"seed": 0, "group": ["b"], "seconds": 1.0, "results": {}})  # settings unknown
    ledger.put("old-other-lr", {"seed": 0, "group": ["a"], "seconds": 1.0, "results": {},
                                "settings": _Settings(0, 1e-3).to_dict()})
    ledger.put("old-other-seed", {"seed": 5, "group": ["b"], "seconds": 1.0, "results": {}})
    groups, config = [("a",), ("b",), ("a", "b")], _Config()
    assert evidence_v2.rekey_ledger(ledger, suite, groups, [0], config) == 1
    data = {t: data_fingerprint(suite[t]) for t in "ab"}
    moved = ledger.get(evidence_v2.training_key(config.train_settings(0).to_dict(), 0, ("a", "b"), data))
    assert moved is not None and moved["settings"] == config.train_settings(0).to_dict()
    assert ledger.get(evidence_v2.training_key(config.train_settings(0).to_dict(), 0, ("a",), data)) is None
    assert ledger.get(evidence_v2.training_key(config.train_settings(0).to_dict(), 0, ("b",), data)) is None
    # a second pass has nothing left to move
    assert evidence_v2.rekey_ledger(evidence_v2.Ledger(tmp_path / "ledger.json"), suite, groups, [0], config) == 0


def test_ledger_table_counts_leading_complete_seeds_and_leaves_gaps(tmp_path, evidence_v2):
    """The progress table is read from the shared ledger: a seed counts as complete only when every subset is
    there and every seed before it is complete (a second worker may fill seed 1 before seed 0)."""
    from datasets import Dataset

    from hf_taskgroup.artifacts import data_fingerprint
    from hf_taskgroup.data.tasks import TaskSpec

    suite = {t: TaskSpec(name=t, data={"train": Dataset.from_list([{"text": t, "label": "x"}])}) for t in "ab"}
    data = {t: data_fingerprint(suite[t]) for t in "ab"}
    groups, config = [("a",), ("b",), ("a", "b")], _Config()
    ledger = evidence_v2.Ledger(tmp_path / "ledger.json")

    def put(seed: int, group: tuple[str, ...], value: float) -> None:
        key = evidence_v2.training_key(config.train_settings(seed).to_dict(), seed, group, data)
        ledger.put(key, {"seed": seed, "group": list(group), "seconds": 2.0,
                         "results": {t: {"test_accuracy": value} for t in group}})

    for group in groups:
        put(1, group, 0.5)
    put(0, ("a",), 0.25)
    table, seconds, done, complete = evidence_v2.ledger_table(ledger, suite, groups, [0, 1], config)
    assert (done, seconds, complete) == (4, 8.0, 0)  # seed 1 is whole, but seed 0 is not
    assert table[("a",)]["a"] == [0.25, 0.5] and table[("b",)]["b"] == [None, 0.5]
    put(0, ("b",), 0.75)
    put(0, ("a", "b"), 1.0)
    assert evidence_v2.ledger_table(ledger, suite, groups, [0, 1], config)[3] == 2


def test_grad_estimate_validation_never_takes_a_training_of_other_settings(tmp_path):
    """The ledger holds trainings of the same groups under several settings (4 and 8 epochs). When no key
    matches (the data fingerprints changed), the fallback by seed and group must still take only the entries
    of the oracle's recorded settings."""
    from datasets import Dataset

    from hf_taskgroup.data.tasks import TaskSpec

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import grad_estimate_validation as gv
    finally:
        sys.path.remove(str(BENCHMARKS))
    suite = {t: TaskSpec(name=t, data={"train": Dataset.from_list([{"text": t, "label": "x"}])}) for t in "ab"}
    settings = {"num_train_epochs": 8.0, "seed": 0}
    entries = {}
    for epochs, value in [(4.0, 0.1), (8.0, 0.9)]:  # the other settings' entries come first
        for group in (["a"], ["b"], ["a", "b"]):
            entries[f"old-key-{epochs}-{'+'.join(group)}"] = {
                "seed": 0, "group": group, "seconds": 1.0, "settings": dict(settings, num_train_epochs=epochs),
                "results": {t: {"loss": value, "test_accuracy": value} for t in group}}
    progress = {"tasks": ["a", "b"], "seeds": [0], "settings": settings, "max_train": 10}
    oracle = gv.evidence_v2_oracle(progress, {"entries": entries}, suite)
    assert oracle["seeds"] == [0] and "recorded settings" in oracle["ledger_match"]
    assert {v["test_mean"] for per in oracle["subsets"].values() for v in per.values()} == {0.9}


@pytest.fixture(scope="module")
def partial_fidelity():
    return _benchmark_module("partial_fidelity")


def _fidelity_scores(gain_b_partial: float, gap: float = 0.0):
    full = {("a",): {"a": 0.70}, ("b",): {"b": 0.50}, ("a", "b"): {"a": 0.72, "b": 0.45}}
    partial = {("a",): {"a": 0.70 + gap}, ("b",): {"b": 0.50}, ("a", "b"): {"a": 0.72 + gap, "b": 0.50 + gain_b_partial}}
    return {"full": full, "partial k=1": partial}


def test_fidelity_faithful_when_gaps_small_and_signs_agree(partial_fidelity):
    verdict = partial_fidelity.compare(_fidelity_scores(-0.045), ["a", "b"], 0.01)["partial k=1"]
    assert verdict["faithful"] and verdict["sign_agreement"] == 1.0 and verdict["signs_compared"] == 2


def test_fidelity_refuses_a_k_whose_gain_has_the_other_sign(partial_fidelity):
    verdict = partial_fidelity.compare(_fidelity_scores(+0.03), ["a", "b"], 0.01)["partial k=1"]
    assert not verdict["faithful"] and verdict["sign_agreement"] == 0.5
    assert verdict["sign_disagreements"] == [{"group": ["a", "b"], "task": "b", "gain": pytest.approx(0.03),
                                              "full_gain": pytest.approx(-0.05)}]


def test_fidelity_refuses_a_k_whose_scores_are_off_by_more_than_the_tolerance(partial_fidelity):
    verdict = partial_fidelity.compare(_fidelity_scores(-0.045, gap=0.05), ["a", "b"], 0.01)["partial k=1"]
    assert verdict["sign_agreement"] == 1.0 and not verdict["faithful"]
    assert verdict["max_abs_gap"] == pytest.approx(0.05)


def test_train_groups_dispatches_only_what_the_ledger_lacks_through_the_executor(tmp_path, evidence_v2,
                                                                                 monkeypatch):
    """Without a shard, a seed's missing trainings go to the executor in one batch; ledger entries are reused,
    and every new training lands in the ledger with its result."""
    from datasets import Dataset

    from hf_taskgroup.artifacts import data_fingerprint
    from hf_taskgroup.data.tasks import TaskSpec
    from hf_taskgroup.executor import SerialExecutor
    from hf_taskgroup.grouping.evaluators.base import CachedEvaluator

    suite = {t: TaskSpec(name=t, data={"train": Dataset.from_list([{"text": t, "label": "x"}])}) for t in "ab"}
    data = {t: data_fingerprint(suite[t]) for t in "ab"}
    groups, config = [("a",), ("b",), ("a", "b")], _Config()
    ledger = evidence_v2.Ledger(tmp_path / "ledger.json")
    ledger.put(evidence_v2.training_key(config.train_settings(0).to_dict(), 0, ("a",), data),
               {"seed": 0, "group": ["a"], "seconds": 3.0, "results": {"a": {"loss": 1.0, "test_accuracy": 0.5}}})
    trained: list[list[str]] = []
    batches: list[list] = []

    class Recording(SerialExecutor):
        def map(self, fn, items, *args, **kwargs):
            batches.append(list(items))
            return super().map(fn, batches[-1], *args, **kwargs)

    def train(tasks):
        trained.append(sorted(tasks))
        return {t: {"loss": 0.5, "test_accuracy": 0.75} for t in tasks}

    monkeypatch.setattr(evidence_v2, "make_suite_evaluator",
                        lambda suite, settings, cache, tokenizer=None, executor=None:
                        CachedEvaluator(train, None, settings.to_dict(), executor=executor))
    monkeypatch.setattr(evidence_v2, "primary_metric", lambda kind: "accuracy")
    table, seconds = evidence_v2.train_groups(suite, groups, [0], config, tmp_path / "cache", None, ledger,
                                              label="test", executor=Recording())
    assert batches == [[["b"], ["a", "b"]]]  # one dispatch, without the ledger's training
    assert sorted(trained) == [["a", "b"], ["b"]]
    assert table[("a",)]["a"] == [0.5] and table[("a", "b")]["b"] == [0.75]
    for group in groups:
        assert evidence_v2.Ledger(tmp_path / "ledger.json").get(
            evidence_v2.training_key(config.train_settings(0).to_dict(), 0, group, data)) is not None


def _v2_payload(stages: list[str]) -> dict:
    payload = {
        "tasks": ["a", "b"], "settings": {"trainable_layers": 1, "num_train_epochs": 8.0, "learning_rate": 1e-3},
        "finetune": "partial", "max_train": 300, "seeds": [0], "oracle_train_seconds": 100.0, "num_partitions": 2,
        "references": {"single_task": 0.5, "all_in_one": 0.4}, "stages_done": stages,
        "methods": [{"method": "tag", "groups": [["a", "b"]], "score": 0.4, "gain_vs_stl": -0.1,
                     "fraction_of_oracle_gain": None, "rank": 2, "seconds": 5.0, "trainings": 1,
                     "cost_fraction_of_oracle": 0.05}],
        "recommendation": None, "low_resource": None,
    }
    if "recommend" in stages:
        payload["recommendation"] = {
            "groups": [["a"], ["b"]], "candidate": "single_task", "tasks_gained_beyond_noise": [],
            "tasks_harmed_beyond_noise": [],
            "per_task_test": {t: {"metric": "accuracy", "test_difference": 0.0, "test_low": -0.01, "test_high": 0.01,
                                  "verdict": "no difference"} for t in "ab"}}
    return payload


def test_report_renders_a_v2_run_whose_later_stages_are_still_to_come():
    report = _benchmark_module("evidence_report")
    methods_only = report.v2_table(_v2_payload(["oracle", "methods"]))
    assert "| tag |" in methods_only and "still to come" in methods_only and "Recommendation" not in methods_only
    with_rec = report.v2_table(_v2_payload(["oracle", "methods", "recommend"]))
    assert "Recommendation" in with_rec and "low-resource comparison is still to come" in with_rec


def test_recommend_screen_replays_a_recommendation_from_its_cached_runs(tmp_path):
    """The replay reproduces the recorded (unscreened) recommendation from runs/ alone, and screening asks for a
    subset of those trainings; a missing training is one clear error."""
    from test_recommend import FakeSuite, make_train

    from hf_taskgroup.grouping.recommend import recommend_grouping
    from hf_taskgroup.report.evaluation import group_name

    replay_module = _benchmark_module("recommend_screen")
    suite = FakeSuite({t: "classification" for t in "abcd"})
    good = {("a", "b"), ("c", "d")}
    stub = make_train(lambda task, group, split: 0.75 if len(group) == 1 else 0.85 if group in good else 0.6)

    def train(tasks, seed):  # like the pipeline: every training cached as runs/<group>/seed<k>.json
        run = stub(tasks, seed)
        path = tmp_path / "runs" / group_name(sorted(tasks)) / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run))
        return run

    candidates = {"best": [["a", "b"], ["c", "d"]], "bad_pairs": [["a", "c"], ["b", "d"]],
                  "all_in_one": [["a", "b", "c", "d"]]}
    rec = recommend_grouping(suite, candidates, train, seeds=[0, 1, 2], bootstrap_samples=50)
    (tmp_path / "recommendation.json").write_text(json.dumps(rec.to_dict()))
    result = replay_module.replay(tmp_path, suite, [1])
    unscreened, screened = result["rows"]
    assert result["replay_matches_record"] and unscreened["groups"] == rec.grouping.groups
    assert unscreened["trainings"] == rec.cost["trainings"]
    assert screened["same_groups_as_unscreened"] and screened["trainings"] < unscreened["trainings"]
    assert set(screened["screened_out"]) == {"bad_pairs", "all_in_one"}
    (tmp_path / "runs" / group_name(["a", "b"]) / "seed2.json").unlink()
    with pytest.raises(SystemExit, match="missing"):
        replay_module.replay(tmp_path, suite, [1])


def test_recommendation_record_counts_the_shared_pvi_stage_once():
    from test_recommend import FakeSuite, make_train

    from hf_taskgroup.grouping import Grouping
    from hf_taskgroup.grouping.recommend import recommend_grouping
    from hf_taskgroup.grouping.result import GroupingCost

    common = _benchmark_module("evidence_common")
    suite = FakeSuite({t: "classification" for t in "ab"})

    def grouping(method: str, seconds: float) -> Grouping:
        return Grouping(groups=[["a", "b"]], method=method, tasks=["a", "b"], params={}, scores={},
                        cost=GroupingCost(trainings=2, seconds=seconds))

    candidates = {"pvi": grouping("pvi", 10.0), "pvi_ks": grouping("pvi_ks", 10.0), "tag": grouping("tag", 5.0)}
    rec = recommend_grouping(suite, candidates, make_train(lambda t, g, s: 0.8), seeds=[0], bootstrap_samples=0)
    record = common.recommendation_record(rec, candidates, wall=1.0)
    assert record["candidate_methods_seconds"] == 15.0 and record["candidate_methods_trainings"] == 4
    assert set(record["per_task_test"]) == {"a", "b"} and "rounds" in next(iter(record["candidates"].values()))


def test_fidelity_report_sets_aside_the_tasks_full_did_not_learn(partial_fidelity):
    """The report's "aside" row drops the rate-checked tasks from the largest gap; the plain row keeps them."""
    report = _benchmark_module("evidence_report")
    scores = _fidelity_scores(-0.045, gap=0.02)
    scores["full"][("b",)]["b"] = 0.10  # full does not learn b alone
    verdicts = partial_fidelity.compare(scores, ["a", "b"], 0.01)
    payload = {
        "tasks": ["a", "b"], "metrics": {"a": "accuracy", "b": "accuracy"}, "seeds": [0], "max_train": 10, "epochs": 1,
        "learning_rate_partial": 1e-3, "learning_rate_full": 1e-4, "tolerance": 0.01,
        "scores": {m: {"+".join(g): per for g, per in table.items()} for m, table in scores.items()},
        "comparison": verdicts, "train_seconds": {"full": 1.0, "partial k=1": 1.0}, "smallest_faithful_k": None,
        "full_rate_check": {"learning_rates": {"5e-05": {"b": {"validation": 0.2, "test": 0.15}}},
                            "reference": {"0.0001": {"b": 0.10}}},
    }
    table = report.partial_fidelity_table(payload)
    assert verdicts["partial k=1"]["max_abs_gap"] == pytest.approx(0.40)
    assert "| **largest gap to full (points)** |  |  |  |  | 40.0 |" in table
    assert "| **largest gap, b aside** |  |  |  |  | 2.0 |" in table
    assert "lr 5e-05: b 0.150 (at lr 0.0001: b 0.100)" in table


def test_fidelity_series_takes_full_once_and_labels_partial_modes_by_rate():
    common = _benchmark_module("evidence_common")
    full = {"a": {"a": 0.7}, "b": {"b": 0.5}, "a+b": {"a": 0.72, "b": 0.45}}

    def payload(lr, mode, a_alone):
        return {"tasks": ["a", "b"], "learning_rate_partial": lr,
                "scores": {"full": full, mode: {"a": {"a": a_alone}, "b": {"b": 0.5}, "a+b": {"a": 0.6, "b": 0.5}}}}

    tasks, series = common.fidelity_series([payload(3e-4, "partial k=2", 0.65), payload(1e-3, "partial k=2", 0.55)])
    assert tasks == ["a", "b"]
    assert list(series) == ["full", "partial k=2, lr 0.0003", "partial k=2, lr 0.001"]
    assert series["full"]["a"] == pytest.approx((0.7, 0.02)) and series["full"]["b"] == pytest.approx((0.5, -0.05))
    assert series["partial k=2, lr 0.001"]["a"] == pytest.approx((0.55, 0.05))
    with pytest.raises(ValueError, match="different tasks"):
        common.fidelity_series([payload(3e-4, "partial k=2", 0.65), {**payload(1e-3, "partial k=3", 0.5), "tasks": ["a"]}])


def test_regression_labels_standardizes_every_split_with_the_train_statistics():
    from datasets import Dataset

    from hf_taskgroup.data.tasks import TaskSpec

    module = _benchmark_module("regression_labels")
    spec = TaskSpec(name="r", type="regression", text_columns=["text"], label_column="score",
                    data={"train": Dataset.from_dict({"text": ["a", "b", "c", "d"], "score": [1.0, 2.0, 3.0, 4.0]}),
                          "validation": Dataset.from_dict({"text": ["e"], "score": [5.0]})})
    scaled, mean, std = module.standardized(spec)
    assert mean == pytest.approx(2.5) and std == pytest.approx(1.118034, rel=1e-5)
    train = np.array(scaled.load()["train"]["score"])
    assert train.mean() == pytest.approx(0.0) and train.std() == pytest.approx(1.0)
    assert scaled.load()["validation"]["score"] == [pytest.approx((5.0 - 2.5) / std)]
    assert scaled.type == "regression" and scaled.name == "r"
