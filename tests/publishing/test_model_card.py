"""hf_taskgroup.publishing.model_card: card data -> YAML header and body; the trainer's card (local, LoRA, pushed)."""

from __future__ import annotations

import copy
import logging

import pytest
import yaml
from huggingface_hub import ModelCard
from utils import tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.publishing.model_card import (
    MultiTaskModelCardData,
    generate_model_card,
    hub_repo_id_or_none,
    results_from_log_history,
    save_model_card,
)
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.trainer import MultiTaskTrainer

GROUPING = Grouping(
    groups=[["sent", "hall"], ["sim"], ["ner"]], method="pvi", tasks=["sent", "hall", "sim", "ner"],
    params={"test": "welch", "alpha": 0.05, "correction": "holm", "hub_token": "hf_do_not_leak"},
    scores={"mean_pvi": {"sent": 0.41, "hall": 0.37, "sim": 1.2, "ner": 2.5}},
    cost=GroupingCost(trainings=8, examples=1200, seconds=3.5),
).to_dict()


def _data(**overrides) -> MultiTaskModelCardData:
    values = dict(
        model_name="tiny-group0", tasks=["sent", "hall"],
        task_types={"sent": "classification", "hall": "multilabel"},
        label_names={"sent": ["neg", "pos"], "hall": ["drug", "gene", "tumor"]},
        encoder_name_or_path="sentence-transformers/all-MiniLM-L6-v2",
        grouping=GROUPING, group_index=0,
        results={
            "sent": {"metric": "accuracy", "split": "test", "value": 0.81, "stl_value": 0.71, "gain": 0.10, "seeds": 3},
            "hall": {"metric": "f1_micro", "split": "test", "value": 0.62, "stl_value": 0.64, "gain": -0.02, "seeds": 3},
        },
        training={"finetune": "frozen", "epochs": 20.0, "pooling": "mean", "trunk_hidden_sizes": [256]},
    )
    values.update(overrides)
    return MultiTaskModelCardData(**values)


def _header(card: ModelCard) -> dict:
    text = str(card)
    return yaml.safe_load(text.split("---")[1])


# ----------------------------------------------------------------------------------------- YAML header
def test_yaml_has_library_name_tags_and_one_model_index_result_per_task():
    header = _header(generate_model_card(_data(generated_from_trainer=True, tags=["biomed"])))
    assert header["library_name"] == "hf-taskgroup"
    assert {"hf-taskgroup", "multi-task", "generated_from_trainer", "biomed", "sent", "hall"} <= set(header["tags"])
    (index,) = header["model-index"]
    assert index["name"] == "tiny-group0"
    results = {r["dataset"]["name"]: r for r in index["results"]}
    assert set(results) == {"sent", "hall"}
    assert results["sent"]["metrics"][0] == {"type": "accuracy", "name": "accuracy", "value": 0.81}
    assert results["hall"]["metrics"][0]["value"] == 0.62
    assert results["sent"]["task"]["type"] == "text-classification"
    assert results["sent"]["dataset"]["split"] == "test"


def test_task_groups_block_records_every_group_method_parameters_and_cost():
    block = _header(generate_model_card(_data()))["task_groups"]
    assert block["method"] == "pvi"
    assert block["groups"] == [["sent", "hall"], ["sim"], ["ner"]]
    assert block["this_group"] == ["sent", "hall"]
    assert block["parameters"] == {"test": "welch", "alpha": 0.05, "correction": "holm"}
    assert block["cost"] == {"trainings": 8, "examples": 1200}  # counts only: measured seconds differ run to run


def test_card_is_the_same_whatever_the_search_took_and_wherever_its_files_were():
    """A card is a pure function of results and settings: the measured seconds of the search and the absolute
    path of a local file in the method's parameters do not show, so re-publishing the same result is no change."""
    slow, fast = _data(grouping=copy.deepcopy(GROUPING)), _data(grouping=copy.deepcopy(GROUPING))
    slow.grouping["cost"]["seconds"], fast.grouping["cost"]["seconds"] = 1234.5678, 0.25
    slow.grouping["params"]["cache_dir"], fast.grouping["params"]["cache_dir"] = "/tmp/run-a/cache", "/tmp/run-b/cache"
    card = str(generate_model_card(slow))
    assert card == str(generate_model_card(fast))
    assert "1234" not in card and "run-a" not in card
    assert "Cost of the search: 8 training run(s), 1200 examples processed." in card


def test_secret_looking_parameters_never_reach_the_card():
    assert "hf_do_not_leak" not in str(generate_model_card(_data()))


def test_base_model_present_for_repo_id_and_omitted_for_local_path(tmp_path, monkeypatch):
    header = _header(generate_model_card(_data()))
    assert header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"

    card = generate_model_card(_data(encoder_name_or_path=str(tmp_path)))
    assert "base_model" not in _header(card)
    assert str(tmp_path) not in card.text  # never a local path in a card (issue 16): only the folder's name
    assert f"`{tmp_path.name} (local)`" in card.text

    (tmp_path / "owner" / "name").mkdir(parents=True)  # looks like a repo id but is a local folder
    monkeypatch.chdir(tmp_path)
    assert hub_repo_id_or_none("owner/name") is None
    assert "base_model" not in _header(generate_model_card(_data(encoder_name_or_path="owner/name")))


def test_datasets_keep_hub_ids_only(tmp_path):
    header = _header(generate_model_card(_data(datasets=["bigbio/hoc", str(tmp_path / "hoc.jsonl")])))
    assert header["datasets"] == ["bigbio/hoc"]


# ----------------------------------------------------------------------------------------- body
def test_body_lists_each_gain_and_flags_negative_transfer():
    text = generate_model_card(_data()).text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| sent |")
            or line.startswith("| hall |")}
    results_rows = {k: v for k, v in rows.items() if "0.7100" in v or "0.6400" in v}
    assert "+0.1000" in results_rows["sent"] and "negative transfer" not in results_rows["sent"]
    assert "-0.0200" in results_rows["hall"] and "negative transfer" in results_rows["hall"]
    assert "**Negative transfer** for hall" in text


def test_gain_is_derived_from_stl_with_the_metric_direction():
    data = _data(tasks=["sim"], task_types={"sim": "regression"}, group_index=1,
                 results={"sim": {"metric": "mse", "value": 0.5, "stl_value": 0.4}})
    text = generate_model_card(data).text
    assert "-0.1000 **negative transfer**" in text  # lower mse is better: 0.5 vs 0.4 is a loss


def test_body_explains_the_grouping_and_shows_every_group():
    text = generate_model_card(_data()).text
    assert "pointwise V-usable information" in text
    assert "| 0 (this model) | sent, hall |" in text
    assert "| 1 | sim |" in text and "| 2 | ner |" in text
    assert "`alpha=0.05`" in text
    assert "8 training run(s)" in text


def test_body_shows_plots_and_how_to_use_each_head():
    data = _data(model_id="me/tiny-group0", plots=["plots/gains.png"], task_inputs={"sent": "text"})
    text = generate_model_card(data).text
    assert "![gains](plots/gains.png)" in text
    assert 'AutoModel.from_pretrained("me/tiny-group0")' in text
    assert 'model.predict("sent", ["A text to classify."])' in text
    assert 'model.predict("hall",' in text
    assert "import hf_taskgroup" in text


def test_card_round_trips_through_modelcard_load(tmp_path):
    path = save_model_card(_data(), tmp_path)
    loaded = ModelCard.load(path)
    assert loaded.data.task_groups["groups"] == [["sent", "hall"], ["sim"], ["ner"]]
    assert {r.dataset_name: r.metric_value for r in loaded.data.eval_results} == {"sent": 0.81, "hall": 0.62}


# ----------------------------------------------------------------------------------------- never break saving
def test_a_broken_field_logs_a_warning_and_the_card_is_still_written(tmp_path, caplog):
    data = _data(grouping={"method": "pvi", "groups": 5}, results={
        "sent": {"metric": "accuracy", "value": "not a number"}, "hall": {"metric": "f1_micro", "value": 0.6}})
    with caplog.at_level(logging.WARNING, logger="hf_taskgroup.publishing.model_card"):
        path = save_model_card(data, tmp_path)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "could not fill results['sent']" in messages and "could not fill grouping" in messages
    header = yaml.safe_load(path.read_text().split("---")[1])
    assert header["library_name"] == "hf-taskgroup"
    assert "task_groups" not in header
    assert [r["dataset"]["name"] for r in header["model-index"][0]["results"]] == ["hall"]  # the others are kept
    assert "# tiny-group0" in path.read_text()


def test_a_template_failure_writes_a_minimal_card_with_a_warning(tmp_path, caplog):
    broken = tmp_path / "broken.md"
    broken.write_text("---\n{{ card_data }}\n---\n{% for x in %}")
    with caplog.at_level(logging.WARNING, logger="hf_taskgroup.publishing.model_card"):
        path = save_model_card(_data(), tmp_path, template_path=broken)
    assert "could not be rendered" in caplog.text
    card = ModelCard.load(path)
    assert card.data.library_name == "hf-taskgroup" and "sent" in card.data.tags
    assert "could not be generated" in card.text


def test_results_from_log_history_prefers_test_then_latest_eval():
    history = [{"eval_sent_accuracy": 0.5}, {"eval_sent_accuracy": 0.6, "eval_sim_pearson": 0.2},
               {"test_sim_pearson": 0.9}]
    results = results_from_log_history(history, {"sent": "classification", "sim": "regression", "ner": "token_classification"})
    assert results["sent"]["value"] == 0.6 and results["sent"]["split"] == "validation"
    assert results["sim"]["value"] == 0.9 and results["sim"]["split"] == "test"
    assert "ner" not in results


# ----------------------------------------------------------------------------------------- trainer
@pytest.fixture(scope="module")
def suite():
    return tiny_suite(("classification", "regression"))


@pytest.fixture(scope="module")
def tokenized(suite):
    return suite.tokenize(tiny_tokenizer(), max_length=32)


def _trainer(suite, tokenized, tmp_path, card_data=None, **kw):
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-2,
        report_to="none", disable_tqdm=True, save_strategy="no", seed=0, use_cpu=True, **kw,
    )
    model = tiny_model(suite)
    model.config.task_groups = [["sent", "sim"], ["other"]]
    return MultiTaskTrainer(
        model=model, args=args, processing_class=tiny_tokenizer(), model_card_data=card_data,
        train_dataset={t: tokenized[t]["train"] for t in suite.task_names},
        eval_dataset={t: tokenized[t]["validation"] for t in suite.task_names},
    )


def test_trainer_card_uses_config_and_last_eval_metrics(suite, tokenized, tmp_path):
    trainer = _trainer(suite, tokenized, tmp_path)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.create_model_card(model_name="tiny-mtl")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "hf-taskgroup"
    assert {"generated_from_trainer", "hf-taskgroup", "multi-task", "sent", "sim"} <= set(data["tags"])
    assert data["task_groups"]["groups"] == [["sent", "sim"], ["other"]]
    assert data["task_groups"]["this_group"] == ["sent", "sim"]
    values = {r.dataset_name: (r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert values == {"sent": ("accuracy", pytest.approx(metrics["eval_sent_accuracy"])),
                      "sim": ("pearson", pytest.approx(metrics["eval_sim_pearson"]))}
    assert "| finetune | full |" in card.text and "| learning_rate | 0.01 |" in card.text


def test_trainer_card_data_wins_over_defaults(suite, tokenized, tmp_path):
    trainer = _trainer(suite, tokenized, tmp_path, card_data=MultiTaskModelCardData(
        grouping=GROUPING | {"groups": [["sent", "sim"], ["hall", "ner"]]}, group_index=0, license="mit"))
    trainer.create_model_card()
    data = ModelCard.load(tmp_path / "out" / "README.md").data
    assert data.task_groups["method"] == "pvi"
    assert data.task_groups["groups"] == [["sent", "sim"], ["hall", "ner"]]
    assert data.license == "mit"


def test_trainer_card_replaces_peft_card_under_lora(suite, tokenized, tmp_path):
    trainer = _trainer(suite, tokenized, tmp_path, finetune="lora", lora_r=2, lora_target_modules=["query", "value"])
    trainer.save_model()  # PEFT writes its own README.md here
    assert ModelCard.load(tmp_path / "out" / "README.md").data.library_name == "peft"
    trainer.create_model_card()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.library_name == "hf-taskgroup"
    assert "LoRA adapter" in card.text


@pytest.mark.hub
def test_trainer_push_to_hub_publishes_the_card(suite, tokenized, tmp_path, local_hub, hub_repo_id):
    trainer = _trainer(suite, tokenized, tmp_path, hub_model_id=hub_repo_id,
                       card_data=MultiTaskModelCardData(grouping=GROUPING | {"groups": [["sent", "sim"], ["hall", "ner"]]},
                                                        group_index=0))
    trainer.train()
    metrics = trainer.evaluate()
    trainer.push_to_hub()
    card = ModelCard.load(hub_repo_id)
    data = card.data.to_dict()
    assert data["task_groups"]["method"] == "pvi"
    assert data["task_groups"]["groups"] == [["sent", "sim"], ["hall", "ner"]]
    results = {r["dataset"]["name"]: r["metrics"][0]["value"] for r in data["model-index"][0]["results"]}
    assert results == {"sent": pytest.approx(metrics["eval_sent_accuracy"]), "sim": pytest.approx(metrics["eval_sim_pearson"])}
    assert "model.safetensors" in local_hub.repo_files(hub_repo_id)
