"""The recommendation: split out harmed tasks, flag tasks not learned, choose on validation only, pair by seed."""

import hashlib
import json

import numpy as np
import pytest

from hf_taskgroup.grouping.recommend import constant_baseline, paired_bootstrap, recommend_grouping
from hf_taskgroup.report.evaluation import group_name

N = 300  # validation / test examples per task


class FakeSuite:
    """What recommend_grouping reads from a TaskSuite: task names and task infos."""

    def __init__(self, types):
        self.task_names = list(types)
        self._types = dict(types)

    def task_infos(self):
        infos = {}
        for t, kind in self._types.items():
            info = {"type": kind, "num_labels": 2 if kind == "classification" else 3 if kind == "multilabel" else 1}
            if kind == "token_classification":
                info.update(num_labels=3, id2label=["O", "B-X", "I-X"])
            infos[t] = info
        return infos


def _rng(*parts):
    return np.random.default_rng(int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16))


def _labels(task, split):
    return _rng("labels", task, split).integers(0, 2, size=N)


def make_train(accuracy, *, params=1000, calls=None, types=None):
    """A stub ``train(tasks, seed)``: classification outputs whose accuracy is ``accuracy(task, group, split)``;
    each model gets its own random errors (per group, seed and split)."""

    def train(tasks, seed):
        if calls is not None:
            calls.append((tuple(sorted(tasks)), seed))
        out = {"primary": {}, "tasks": {}, "outputs": {}, "num_parameters": params * (1 + 0.2 * len(tasks)),
               "train_seconds": 1.0, "group": sorted(tasks)}
        for t in tasks:
            out["primary"][t] = "accuracy"
            out["tasks"][t] = {}
            for split in ("validation", "test"):
                y = _labels(t, split)
                wrong = _rng(tuple(sorted(tasks)), t, seed, split).random(N) > accuracy(t, tuple(sorted(tasks)), split)
                pred = np.where(wrong, 1 - y, y)
                out["outputs"].setdefault(split, {})[t] = {"type": "classification", "predictions": pred.tolist(),
                                                           "labels": y.tolist()}
                out["tasks"][t][split] = {"accuracy": float((pred == y).mean())}
        return out

    return train


def test_harmed_task_is_split_out_and_the_rest_stay_together():
    suite = FakeSuite({"a": "classification", "b": "classification", "c": "classification", "d": "classification"})

    def acc(task, group, split):
        if len(group) == 1:
            return 0.75
        if task == "c":
            return 0.55  # c loses 0.2 in any group
        return 0.86 if "c" not in group else 0.84  # the others gain, a bit less while c is with them

    calls = []
    rec = recommend_grouping(suite, {"all_in_one": [["a", "b", "c", "d"]]}, make_train(acc, calls=calls),
                             seeds=[0, 1, 2], bootstrap_samples=300)
    assert rec.grouping.groups == [["a", "b", "d"], ["c"]]
    assert rec.rows["c"].verdict == "split out"
    assert {rec.rows[t].verdict for t in "abd"} == {"gains"}
    assert rec.candidate == "all_in_one"
    cand = rec.candidates["all_in_one"]
    assert cand.split_out == ["c"] and cand.rounds == 2
    assert cand.initial_groups == [["a", "b", "c", "d"]]
    # the reduced group was retrained, for every seed, and nothing was trained twice
    assert {(g, s) for g, s in calls if g == ("a", "b", "d")} == {(("a", "b", "d"), s) for s in (0, 1, 2)}
    assert len(calls) == len(set(calls))
    # every member of the recommended group is at least not harmed on validation
    assert all(rec.rows[t].high >= 0 for t in "abd")
    assert rec.mean_gain > 0 and rec.parameters < rec.single_task_parameters
    json.dumps(rec.to_dict())  # JSON-able


def test_task_at_chance_is_flagged_not_learned_and_kept_single():
    suite = FakeSuite({"a": "classification", "b": "classification", "z": "classification"})

    def acc(task, group, split):
        if task == "z":
            return 0.5 if len(group) == 1 else 0.9  # z at chance alone; would even look good grouped
        return 0.8 if len(group) > 1 else 0.75

    rec = recommend_grouping(suite, {"all_in_one": [["a", "b", "z"]]}, make_train(acc), seeds=[0, 1],
                             bootstrap_samples=200)
    assert rec.flags["z"] and "not learned" in rec.flags["z"][0]
    assert rec.rows["z"].verdict == "not learned"
    assert ["z"] in rec.grouping.groups and ["a", "b"] in rec.grouping.groups
    assert not rec.flags["a"] and not rec.flags["b"]
    assert rec.grouping.scores["flags"] == {"z": rec.flags["z"]}


def test_collapsed_pvi_probe_is_flagged_and_kept_single_task():
    suite = FakeSuite({"a": "classification", "b": "classification", "c": "classification"})
    # grouping helps every task, yet the task whose PVI probe collapsed stays alone
    rec = recommend_grouping(suite, {"all_in_one": [["a", "b", "c"]]},
                             make_train(lambda t, g, s: 0.85 if len(g) > 1 else 0.75),
                             seeds=[0], bootstrap_samples=100, collapsed=["b"])
    assert "not learned by the PVI probe" in rec.flags["b"][0] and not rec.flags["a"] and not rec.flags["c"]
    assert sorted(rec.grouping.groups) == [["a", "c"], ["b"]]
    assert rec.rows["b"].verdict == "not learned" and rec.rows["a"].verdict == "gains"
    assert rec.grouping.scores["flags"] == {"b": rec.flags["b"]}


def test_selection_never_reads_test():
    suite = FakeSuite({"a": "classification", "b": "classification", "c": "classification"})

    def acc(task, group, split):
        if len(group) == 1:
            return 0.7
        if group == ("a", "b"):  # better on validation, much worse on test
            return 0.78 if split == "validation" else 0.4
        return 0.72 if split == "validation" else 0.95  # all_in_one: the test split would prefer it

    candidates = {"pairs": [["a", "b"], ["c"]], "all_in_one": [["a", "b", "c"]]}
    rec = recommend_grouping(suite, candidates, make_train(acc), seeds=[0, 1, 2], bootstrap_samples=200)
    assert rec.candidate == "pairs"
    assert rec.grouping.groups == [["a", "b"], ["c"]]
    # test is reported: the recommended group loses there, and the report says so
    assert rec.rows["a"].test_difference < -0.2 and rec.rows["a"].test_high < 0
    assert rec.candidates["all_in_one"].rows["a"].test_difference > 0.2
    with pytest.raises(ValueError, match="selection must not read"):
        recommend_grouping(suite, candidates, make_train(acc), split="test", report_split="test")


def test_ties_go_to_fewer_parameters():
    suite = FakeSuite({"a": "classification", "b": "classification"})
    same = make_train(lambda t, g, s: 0.75)  # grouped models equal to single-task ones in distribution
    rec = recommend_grouping(suite, {"all_in_one": [["a", "b"]]}, same, seeds=[0], bootstrap_samples=0)
    gains = {n: c.mean_gain for n, c in rec.candidates.items()}
    if abs(gains["all_in_one"] - gains["single_task"]) < 1e-12:
        assert rec.candidate == "all_in_one"
    else:  # random errors differ: the better validation gain wins
        assert rec.candidate == max(gains, key=gains.get)


def test_screening_keeps_the_best_candidates_and_trains_only_them_with_every_seed():
    suite = FakeSuite({t: "classification" for t in "abcd"})
    good = {("a", "b"), ("c", "d")}  # the pairs of "best"; every other group loses

    def acc(task, group, split):
        if len(group) == 1:
            return 0.75
        return 0.85 if group in good else 0.6

    candidates = {"best": [["a", "b"], ["c", "d"]], "bad_pairs": [["a", "c"], ["b", "d"]],
                  "all_in_one": [["a", "b", "c", "d"]], "worse_triple": [["a", "b", "c"], ["d"]]}
    full_calls, screened_calls = [], []
    full = recommend_grouping(suite, candidates, make_train(acc, calls=full_calls), seeds=[0, 1, 2],
                              bootstrap_samples=100)
    rec = recommend_grouping(suite, candidates, make_train(acc, calls=screened_calls), seeds=[0, 1, 2],
                             bootstrap_samples=100, screen=1)
    assert rec.candidate == full.candidate == "best" and rec.grouping.groups == full.grouping.groups
    assert set(rec.candidates) == {"best", "single_task"}
    assert set(rec.screened_out) == {"bad_pairs", "all_in_one", "worse_triple"}
    assert all(gain < 0 for gain in rec.screened_out.values())
    # a screened-out candidate's groups were trained with the first seed only; the kept ones with every seed
    assert {s for g, s in screened_calls if g == ("a", "c")} == {0}
    assert {s for g, s in screened_calls if g == ("a", "b", "c", "d")} == {0}
    assert {s for g, s in screened_calls if g == ("a", "b")} == {0, 1, 2}
    assert len(screened_calls) < len(full_calls) and len(screened_calls) == len(set(screened_calls))
    assert rec.grouping.params["screened_out"] == rec.screened_out
    json.dumps(rec.to_dict())
    from hf_taskgroup.report.render import render_recommendation

    text = "\n".join(render_recommendation(rec.to_dict()))
    assert "Screened out after the first seed" in text and "bad_pairs (" in text
    # through train_many (an executor): the screening batch holds the grouped candidates' first seed only
    batches = []
    train = make_train(acc)

    def train_many(jobs):
        batches.append([(tuple(t), seed) for t, seed in jobs])
        return [train(t, seed) for t, seed in jobs]

    again = recommend_grouping(suite, candidates, train, seeds=[0, 1, 2], bootstrap_samples=100, screen=1,
                               train_many=train_many)
    assert again.candidate == "best"
    assert {seed for seed in (s for _, s in batches[1])} == {0} and ("a", "c") in {g for g, _ in batches[1]}
    assert {(g, s) for g, s in batches[2]} == {(g, s) for g in (("a", "b"), ("c", "d")) for s in (1, 2)}
    # nothing to screen: as many candidates as kept
    assert not recommend_grouping(suite, {"best": candidates["best"]}, make_train(acc), seeds=[0, 1],
                                  bootstrap_samples=0, screen=1).screened_out


def _record(pred, y):
    return {"type": "classification", "predictions": list(map(int, pred)), "labels": list(map(int, y))}


def test_interval_is_paired_by_seed():
    # Seed 0 models are good, seed 1 models bad, in both arms; the group fixes 30 errors of the same seed's model.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=400)
    grouped, single = [], []
    for quality in (0.85, 0.6):
        correct = rng.random(400) < quality
        more = correct.copy()
        more[np.flatnonzero(~correct)[:30]] = True  # the same +0.075 in each seed
        single.append(_record(np.where(correct, y, 1 - y), y))
        grouped.append(_record(np.where(more, y, 1 - y), y))
    diff, low, high = paired_bootstrap(grouped, single, "accuracy", samples=500)
    assert low > 0 and diff > 0
    # pairing seed 0's group with seed 1's single-task model (and vice versa) gives a wide interval over 0
    _, low_x, high_x = paired_bootstrap(grouped[::-1], single, "accuracy", samples=500)
    assert low_x < 0 < high_x and (high_x - low_x) > 3 * (high - low)


def test_bootstrap_fast_paths_match_the_metrics():
    # every primary metric's fast path gives the metric of training.metrics on the full sample (samples=0 point)
    rng = np.random.default_rng(1)
    x, ylab = rng.normal(size=60), rng.normal(size=60)
    reg = {"type": "regression", "predictions": (ylab + x).tolist(), "labels": ylab.tolist()}
    reg0 = {"type": "regression", "predictions": x.tolist(), "labels": ylab.tolist()}
    for g, s, metric, labels in [
        (reg, reg0, "pearson", None),
        ({"type": "multilabel", "predictions": rng.integers(0, 2, (50, 3)).tolist(), "labels": rng.integers(0, 2, (50, 3)).tolist()},
         {"type": "multilabel", "predictions": rng.integers(0, 2, (50, 3)).tolist(), "labels": None}, "f1_micro", None),
        ({"type": "token_classification", "predictions": [[1, 2, 0], [0, 1, 0]], "labels": [[1, 2, 0], [1, 0, 0]]},
         {"type": "token_classification", "predictions": [[0, 0, 0], [0, 1, 0]], "labels": [[1, 2, 0], [1, 0, 0]]},
         "f1", ["O", "B-X", "I-X"]),
    ]:
        if s["labels"] is None:
            s["labels"] = g["labels"]
        point, low, high = paired_bootstrap([g], [s], metric, id2label=labels, samples=2000)
        assert low <= point + 1e-9 and point - 1e-9 <= high
        # a bootstrap of identical arms is exactly zero
        assert paired_bootstrap([g], [g], metric, id2label=labels, samples=50) == (0.0, 0.0, 0.0)


def test_constant_baselines():
    assert constant_baseline(_record([0, 0, 0, 0], [1, 1, 1, 0]), "accuracy") == 0.75
    reg = {"type": "regression", "predictions": [0.0] * 4, "labels": [1.0, 2.0, 3.0, 4.0]}
    assert constant_baseline(reg, "pearson") == 0.0
    tok = {"type": "token_classification", "predictions": [[0, 0]], "labels": [[1, 2]]}
    assert constant_baseline(tok, "f1", ["O", "B-X", "I-X"]) == 0.0
    ml = {"type": "multilabel", "predictions": [[0, 0]] * 3, "labels": [[1, 0], [1, 0], [0, 0]]}
    assert constant_baseline(ml, "f1_micro") == pytest.approx(0.8)  # predicts label 0 everywhere: 2 tp, 1 fp


@pytest.mark.slow
def test_pipeline_recommends_publishes_and_reports_it_first(tmp_path):
    from test_pipeline import _factory
    from utils import tiny_suite, tiny_tokenizer

    from hf_taskgroup.pipeline import Pipeline, PipelineConfig

    config = PipelineConfig(output_dir=str(tmp_path / "run"), methods=["all_in_one"], num_train_epochs=2, batch_size=8,
                            trunk_hidden_sizes=[8], max_length=32, pvi_null="analytic", pvi_num_train_epochs=2,
                            recommend_seeds=2, bootstrap_samples=100, finetune="full", learning_rate=5e-3)
    suite = tiny_suite(("classification", "regression", "multilabel"))
    result = Pipeline(config, suite=suite, tokenizer=tiny_tokenizer(), model_factory=_factory, progress=False).run()
    out = tmp_path / "run"
    rec = result.recommendation
    assert rec is not None and rec.seeds == [0, 1]
    assert list(result.evaluations)[0] == "recommended" and list(result.groupings)[0] == "recommended"
    assert result.evaluations["recommended"].groups == rec.grouping.groups
    saved = json.loads((out / "recommendation.json").read_text())
    assert saved["groups"] == rec.grouping.groups and set(saved["rows"]) == set(suite.task_names)
    # every candidate group was trained with both seeds, with per-example validation outputs
    for group in rec.grouping.groups + [[t] for t in suite.task_names]:
        key = group_name(group)
        for seed in (0, 1):
            run = json.loads((out / "runs" / key / f"seed{seed}.json").read_text())
            assert set(run["outputs"]["validation"]) == set(group)
    # the report leads with the recommendation: its section comes before any other section
    md = (out / "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Recommendation: what to train"
    for t in suite.task_names:
        assert f"**{rec.rows[t].verdict}**" in md.split("## ", 2)[1]
    assert json.loads((out / "report.json").read_text())["recommendation"]["candidate"] == rec.candidate
    from hf_taskgroup.report.render import format_console_summary

    console = format_console_summary(result.evaluations, suite.task_names, rec)
    assert console.startswith("recommended: ") and all(rec.rows[t].verdict in console for t in suite.task_names)
    # the recommended groups are what gets model folders and cards, with the verdicts in the cards
    assert set(result.model_dirs) == {group_name(g) for g in rec.grouping.groups}
    for group in rec.grouping.groups:
        folder = out / "models" / "recommended" / group_name(group)
        card = (folder / "README.md").read_text()
        assert any(f"({v})" in card or v in card for v in (rec.rows[t].verdict for t in group))
        assert (folder / "config.json").exists()
    # a re-run resumes: nothing is trained again
    calls = []
    again = Pipeline(config, suite=suite, tokenizer=tiny_tokenizer(), model_factory=_factory, progress=False)
    real = again._train
    again._train = lambda *a, **k: calls.append(a) or real(*a, **k)
    assert again.run().recommendation.grouping.groups == rec.grouping.groups
    assert calls == []


def test_publish_method_still_publishes_a_method_on_purpose():
    from hf_taskgroup.pipeline import PipelineConfig

    assert PipelineConfig().published_method == "recommended"
    assert PipelineConfig(publish_method="all_in_one").published_method == "all_in_one"
    assert PipelineConfig(recommend=False).published_method == "pvi"
    assert PipelineConfig(seeds=[4], recommend_seeds=3).recommendation_seeds() == [4, 5, 6]
    assert PipelineConfig(seeds=[0, 1, 2, 3], recommend_seeds=2).recommendation_seeds() == [0, 1]
    with pytest.raises(ValueError, match="confidence"):
        PipelineConfig(confidence=1.5)


def test_cached_trainer_keeps_outputs_and_resumes(tmp_path, monkeypatch):
    from test_pipeline import _factory
    from utils import tiny_suite, tiny_tokenizer

    from hf_taskgroup.grouping import recommend as rec_mod
    from hf_taskgroup.training.train import TrainSettings

    suite = tiny_suite(("classification", "regression"))
    settings = TrainSettings(finetune="full", num_train_epochs=1, trunk_hidden_sizes=[8], max_length=32)
    train = rec_mod.cached_trainer(suite, settings, tmp_path, tokenizer=tiny_tokenizer(), model_factory=_factory)
    first = train(["sim", "sent"], 1)
    assert first["settings"]["seed"] == 1 and set(first["outputs"]) == {"validation", "test"}
    assert (tmp_path / "runs" / group_name(["sent", "sim"]) / "seed1.json").exists()
    import hf_taskgroup.training.train as train_mod

    monkeypatch.setattr(train_mod, "train_group", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again = rec_mod.cached_trainer(suite, settings, tmp_path, tokenizer=tiny_tokenizer(), model_factory=_factory)
    assert again(["sent", "sim"], 1)["tasks"] == json.loads(json.dumps(first["tasks"]))
