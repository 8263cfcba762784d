import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml
from utils import tiny_bert_config, tiny_suite, tiny_tokenizer

from hf_taskgroup.pipeline import Pipeline, PipelineConfig
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel


def _factory(infos, seed):
    import torch

    torch.manual_seed(seed)
    config = MultiTaskConfig(encoder=tiny_bert_config(), tasks=dict(infos), pooling="mean", trunk_hidden_sizes=[8],
                             classifier_dropout=0.0, trunk_dropout=0.0)
    return MultiTaskModel(config)


def _config(tmp_path, **kw):
    defaults = dict(output_dir=str(tmp_path / "run"), methods=["pvi", "all_in_one"], num_train_epochs=2, batch_size=8,
                    trunk_hidden_sizes=[8], max_length=32, pvi_null="analytic", pvi_num_train_epochs=2)
    defaults.update(kw)
    return PipelineConfig(**defaults)


def _pipeline(tmp_path, **kw):
    return Pipeline(_config(tmp_path, **kw), suite=tiny_suite(("classification", "regression", "multilabel")),
                    tokenizer=tiny_tokenizer(), model_factory=_factory, progress=False)


def test_config_refuses_contradictions():
    with pytest.raises(ValueError, match="grouping must not see the evaluation split"):
        PipelineConfig(eval_split="validation")
    with pytest.raises(ValueError, match="grouping must never see the test split"):
        PipelineConfig(pvi_split="test", eval_split="validation")
    with pytest.raises(ValueError, match="hub_prefix"):
        PipelineConfig(push_to_hub=True)
    with pytest.raises(ValueError, match="not among methods"):
        PipelineConfig(methods=["pvi"], publish_method="tag")


def test_unknown_method_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"unknown grouping method\(s\) \['nope'\]"):
        _pipeline(tmp_path, methods=["pvi", "nope"])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_end_to_end_resume_publish_reload_and_predict(tmp_path, local_hub, hub_repo_id):
    # 1. run, killed after the PVI stage
    first = _pipeline(tmp_path)
    assert first.run(stop_after="pvi") is None
    summaries = {t: json.loads((tmp_path / "run" / "pvi" / t / "summary.json").read_text()) for t in first.tasks}
    assert not (tmp_path / "run" / "groupings").exists()

    # 2. re-run: PVI is resumed from its artifacts, not recomputed; the rest runs; then publish
    second = _pipeline(tmp_path, push_to_hub=True, hub_prefix=hub_repo_id, publish_method="pvi")  # a method on purpose
    result = second.run()
    pvi_again = {t: json.loads((tmp_path / "run" / "pvi" / t / "summary.json").read_text()) for t in second.tasks}
    assert pvi_again == summaries  # untouched artifacts
    out = tmp_path / "run"
    for path in ("report.md", "report.json", "evaluation.json", "groupings/pvi.json", "groupings/all_in_one.json",
                 "plots/gains.png", "plots/params_vs_score.png"):
        assert (out / path).exists(), path
    report = json.loads((out / "report.json").read_text())
    assert {r["method"] for r in report["summary"]} == {"recommended", "pvi", "all_in_one"}
    assert set(result.evaluations["all_in_one"].rows) == set(second.tasks)

    # 3. the pushed card records the grouping, the method and per-task results
    pvi_groups = result.groupings["pvi"].groups
    first_repo = f"{hub_repo_id}-group0"
    from huggingface_hub import ModelCard

    card = ModelCard.load(first_repo)
    data = card.data.to_dict()
    assert data["task_groups"]["method"] == "pvi"
    assert data["task_groups"]["groups"] == pvi_groups
    results = {r["dataset"]["name"]: r for r in data["model-index"][0]["results"]}
    assert set(results) == set(pvi_groups[0])

    # 4. reload the published model in a new process and predict with each of its heads
    code = textwrap.dedent(
        f"""
        import hf_taskgroup
        from transformers import AutoModel
        m = AutoModel.from_pretrained({first_repo!r})
        for task in m.config.task_names:
            print(task, m.predict(task, ["good great the", "bad awful a"] if task != "sim" else [("good the", "great")]))
        """
    )
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for task in pvi_groups[0]:
        assert task in res.stdout

    # 5. a third run reuses every artifact: no model is trained again
    third = _pipeline(tmp_path, publish_method="pvi")
    third._train = _forbid("train")
    again = third.run()
    assert {m: g.groups for m, g in again.groupings.items()} == {m: g.groups for m, g in result.groupings.items()}


def _forbid(name):
    def fail(*a, **k):
        raise AssertionError(f"stage {name} should not run")
    return fail


def test_suite_yaml_is_written_into_config(tmp_path):
    cfg = _config(tmp_path)
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["methods"] == ["pvi", "all_in_one"]


def test_pvi_grouping_keeps_collapsed_tasks_single(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    rng = np.random.default_rng(0)

    def res(mean, collapsed=False):
        return SimpleNamespace(scores={"validation": SimpleNamespace(pvi=rng.normal(mean, 0.1, 50))},
                               summary={"collapsed": {"validation": collapsed}, "seconds": 1.0, "num_examples": {}})

    pvi = {"sent": res(0.5), "sim": res(0.5, collapsed=True), "hall": res(0.5)}
    pipe = _pipeline(tmp_path, methods=["pvi"])
    grouping = pipe.stage_group(pvi)["pvi"]
    assert sorted(map(sorted, grouping.groups)) == [["hall", "sent"], ["sim"]]
    assert grouping.scores["collapsed_tasks"] == ["sim"]
    off = _pipeline(tmp_path / "off", methods=["pvi"], pvi_keep_collapsed_single=False)
    assert sorted(map(sorted, off.stage_group(pvi)["pvi"].groups)) == [["hall", "sent", "sim"]]


def test_evaluator_methods_are_charged_their_cold_cost_on_a_warm_cache(tmp_path):
    kw = dict(methods=["surrogate"], method_options={"surrogate": {"num_subsets": 3}})
    cold = _pipeline(tmp_path, **kw).stage_group({})["surrogate"]
    assert cold.cost.trainings > 0
    (tmp_path / "run" / "groupings" / "surrogate.json").unlink()
    warm_pipe = _pipeline(tmp_path, **kw)
    warm = warm_pipe.stage_group({})["surrogate"]
    assert warm.groups == cold.groups
    # every group came from the shared cache, yet the method is charged what it needs from scratch
    assert warm.cost.trainings == cold.cost.trainings
    assert warm.cost.seconds >= 0.5 * cold.cost.seconds
    # the verified cache entries it reused are listed for the report
    entries = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").glob("cache/evaluator/*.json"))
    assert entries and sorted(r for r in warm_pipe.store.reused if r.startswith("cache/evaluator/")) == entries


def test_affinity_collection_options_reach_the_collector(tmp_path):
    pipe = _pipeline(tmp_path, methods=["tag"], method_options={"tag": {"every_k_steps": 1, "num_groups": 2}})
    grouping = pipe.stage_group({})["tag"]
    saved = json.loads((tmp_path / "run" / "affinity" / "tag.json").read_text())
    assert saved["params"]["identity"]["every_k_steps"] == 1
    assert grouping.cost.trainings == 1 and len(grouping.groups) <= 2
    # a changed collection option is a different grouping: it is not reused from groupings/tag.json
    again = _pipeline(tmp_path, methods=["tag"], method_options={"tag": {"every_k_steps": 2, "num_groups": 2}})
    again.stage_group({})
    saved = json.loads((tmp_path / "run" / "affinity" / "tag.json").read_text())
    assert saved["params"]["identity"]["every_k_steps"] == 2
    assert "affinity/tag.json" not in again.store.reused
    # the grouping gone but the verified collection kept: the collection is reused and listed
    (tmp_path / "run" / "groupings" / "tag.json").unlink()
    third = _pipeline(tmp_path, methods=["tag"], method_options={"tag": {"every_k_steps": 2, "num_groups": 2}})
    third.stage_group({})
    assert third.store.reused == ["affinity/tag.json"]


def test_run_keeps_pooled_features_on_disk_and_restores_the_default_cache(tmp_path):
    from hf_taskgroup.training.features import default_feature_cache

    assert default_feature_cache().cache_dir is None
    _pipeline(tmp_path).run(stop_after="pvi")
    assert list((tmp_path / "run" / "cache" / "features").glob("*-pooled-*.npy"))
    assert default_feature_cache().cache_dir is None


def test_metric_objective_reaches_evaluator_methods_and_is_checked(tmp_path):
    with pytest.raises(ValueError, match="evaluator_objective"):
        _config(tmp_path, evaluator_objective="f1")
    from hf_taskgroup.grouping.evaluators.base import MetricObjective

    pipe = _pipeline(tmp_path, methods=["surrogate"], evaluator_objective="metric")
    evaluator = pipe._method_inputs("surrogate", {})["evaluator"]
    assert isinstance(evaluator.evaluator, MetricObjective)
    result = evaluator(["sent"])["sent"]
    assert result["loss"] == pytest.approx(1.0 - result["accuracy"])


def test_grad_estimate_runs_in_the_pipeline_and_is_charged_its_cold_cost(tmp_path):
    kw = dict(methods=["grad_estimate"], method_options={"grad_estimate": {"projection_dim": 8, "search": "exhaustive"}})
    cold = _pipeline(tmp_path, **kw).stage_group({})["grad_estimate"]
    assert cold.cost.trainings == 1 and cold.scores["subsets_estimated"] == 7
    assert list((tmp_path / "run" / "cache" / "grad_estimate").glob("*/meta.json"))
    (tmp_path / "run" / "groupings" / "grad_estimate.json").unlink()
    warm = _pipeline(tmp_path, **kw).stage_group({})["grad_estimate"]  # gradients from the cache
    assert warm.groups == cold.groups
    assert warm.cost.trainings == 1 and warm.cost.seconds >= cold.scores["gradient_info"]["cold_seconds"]
