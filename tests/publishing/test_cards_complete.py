"""Complete model and PVI dataset cards (issue 16, defects 8 and 9): licence, hyperparameters used, dataset
references, intended use and limitations, BibTeX, PVI block, honest task types; YAML checked with huggingface_hub."""

from __future__ import annotations

import pytest
from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from utils import tiny_suite

from hf_taskgroup.grouping.result import Grouping
from hf_taskgroup.publishing.model_card import METHOD_BIBTEX, generate_model_card
from hf_taskgroup.publishing.models import build_group_card_data
from hf_taskgroup.publishing.pvi_dataset import render_pvi_dataset_card, task_sources
from hf_taskgroup.report.evaluation import MethodEvaluation, TaskRow

GROUPING = Grouping(groups=[["sent", "sim", "hall"], ["ner"]], method="pvi", tasks=["sent", "sim", "hall", "ner"],
                    params={"test": "welch", "alpha": 0.05},
                    scores={"mean_pvi": {"sent": 0.4, "sim": 0.3, "hall": 0.2, "ner": 1.0}, "collapsed_tasks": ["hall"]})
TRAINING = {"finetune": "frozen", "epochs": 20.0, "learning_rate": 0.003, "batch_size": 16}


@pytest.fixture(scope="module")
def suite():
    suite = tiny_suite()
    suite["sent"].license, suite["sim"].license, suite["hall"].license = "mit", "mit", "cc-by-4.0"
    suite["sim"].dataset, suite["sim"].data = "someone/sim-data", suite["sim"].data  # a task from the Hub
    return suite


def _evaluation() -> MethodEvaluation:
    rows = {t: TaskRow(task=t, metric=m, group=["hall", "sent", "sim"], stl_mean=s, stl_std=0.0, mtl_mean=v,
                       mtl_std=0.0, gain=v - s, negative_transfer=v < s, seeds=1)
            for t, m, s, v in (("sent", "accuracy", 0.7, 0.8), ("sim", "pearson", 0.2, 0.01), ("hall", "f1_micro", 0.3, 0.3))}
    return MethodEvaluation(method="pvi", groups=GROUPING.groups, rows=rows, stl_parameters=10, grouped_parameters=5)


@pytest.fixture(scope="module")
def card(suite) -> ModelCard:
    data = build_group_card_data(grouping=GROUPING, group_index=0, evaluation=_evaluation(), suite=suite,
                                 encoder="sentence-transformers/all-MiniLM-L6-v2", training=TRAINING, seeds=[0],
                                 pvi_dataset_repo="me/demo-pvi")
    return generate_model_card(data)


def test_licence_comes_from_the_tasks(card, suite):
    header = card.data.to_dict()
    assert header["license"] == "other" and header["license_name"] == "mixed"  # mit + cc-by-4.0
    assert "- sent: mit" in card.text and "- hall: cc-by-4.0" in card.text
    one = build_group_card_data(grouping=Grouping(groups=[["sent"]], method="pvi", tasks=["sent"], params={},
                                                  scores={}), group_index=0, suite=suite)
    assert generate_model_card(one).data.license == "mit"


def test_training_hyperparameters_used_are_in_the_card(card):
    for key, value in TRAINING.items():
        assert f"| {key} | {value} |" in card.text


def test_dataset_references_are_hub_ids_or_builder_plus_config_never_bare_names(card):
    results = {r["dataset"]["name"]: r for r in card.data.to_dict()["model-index"][0]["results"]}
    assert results["sim"]["dataset"]["type"] == "someone/sim-data"  # the task came from the Hub
    assert results["sent"]["dataset"] == {"name": "sent", "type": "me/demo-pvi", "config": "sent", "split": "test"}
    assert "someone/sim-data" in card.data.datasets and "me/demo-pvi" in card.data.datasets
    assert "[someone/sim-data](https://huggingface.co/datasets/someone/sim-data)" in card.text
    for r in results.values():
        assert r["dataset"]["type"] not in ("sent", "sim", "hall")


def test_local_data_gets_its_builder_and_the_task_as_config(suite):
    from hf_taskgroup.publishing.model_card import MultiTaskModelCardData

    data = MultiTaskModelCardData(tasks=["a"], task_datasets={"a": {"type": "json"}},
                                  results={"a": {"metric": "accuracy", "value": 0.5}})
    (result,) = data.to_yaml_dict()["model-index"][0]["results"]
    assert result["dataset"]["type"] == "json" and result["dataset"]["config"] == "a"


def test_regression_is_typed_honestly(card):
    results = {r["dataset"]["name"]: r for r in card.data.to_dict()["model-index"][0]["results"]}
    assert results["sim"]["task"] == {"type": "text-classification", "name": "sim (regression, one real-valued output)"}
    assert "text-regression" in card.data.tags
    assert "Regression heads (sim) output one real number" in card.text


def test_intended_use_and_limitations_name_negative_transfer_and_tasks_not_learned(card):
    assert "## Intended use and limitations" in card.text
    assert "**Negative transfer:** sim" in card.text
    limitation = card.text.split("**Not learned:**")[1].split("\n")[0]
    assert "hall (its PVI probe predicted one label" in limitation and "sim (pearson 0.010)" in limitation
    assert "sent" not in limitation


def test_bibtex_of_the_method_and_pvi_summary_in_the_yaml(card):
    assert "## Citation" in card.text
    for entry in METHOD_BIBTEX["pvi"]:
        assert entry in card.text
    pvi = card.data.to_dict()["pvi"]
    assert pvi["mean_pvi_bits"] == {"sent": 0.4, "sim": 0.3, "hall": 0.2}
    assert pvi["dataset"] == "me/demo-pvi" and pvi["grouping_test"]["test"] == "welch"


def test_card_yaml_round_trips_through_huggingface_hub(card):
    again = ModelCard(str(card))
    assert again.data.to_dict() == card.data.to_dict()
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {r.dataset_name for r in results} == {"sent", "sim", "hall"}
    assert all(r.dataset_type and "/" in r.dataset_type for r in results)


@pytest.mark.hub
def test_card_passes_the_hubs_yaml_validation(card, local_hub):
    card.validate()  # POST /api/validate-yaml, as ModelCard.push_to_hub does (the local server checks the YAML parses)


def test_pvi_dataset_card_has_licence_sources_task_categories_and_citation(suite):
    summaries = {t: {"task": t, "task_type": suite[t].type, "settings": {"model": "m"}, "v_information": {"train": 0.1},
                     "accuracy": {}, "collapsed": {}, "num_examples": {"train": 3}} for t in ("sent", "sim", "ner")}
    card = render_pvi_dataset_card(summaries, "me/demo-pvi", sources=task_sources(suite, ["sent", "sim", "ner"]))
    data = DatasetCard(str(card)).data.to_dict()
    assert data["license"] == "mit"  # ner has no licence recorded; sent and sim are mit
    assert data["source_datasets"] == ["extended|other-ner", "extended|other-sent", "extended|someone/sim-data"]
    assert data["task_categories"] == ["text-classification", "token-classification"]
    assert "text-scoring" in data["task_ids"]
    assert "## Citation" in card.text and "@inproceedings{ethayarajh2022understanding" in card.text
    assert "- ner: not recorded" in card.text
