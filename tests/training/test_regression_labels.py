"""Regression heads train on standardized labels (``regression_labels="standardize"``, the default) and predict on
the label scale; ``raw`` keeps the labels as given. The statistics live in the model config and travel with it."""

import dataclasses

import datasets
import numpy as np
import pytest
import torch
from utils import dataset_dict, regression_rows, tiny_model, tiny_tokenizer

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel, label_scale
from hf_taskgroup.training.trainer import MultiTaskTrainer

OFFSET, SPREAD = 500.0, 40.0  # labels far from 0 and wide: raw MSE on them is what made regression heads fail


def _shifted_rows(n, seed=0):
    rows = regression_rows(n, seed)
    rows["label"] = [OFFSET + SPREAD * y for y in rows["label"]]
    return rows


@pytest.fixture(scope="module")
def shifted():
    suite = TaskSuite([TaskSpec(name="sim", type="regression", text_columns=["text_a", "text_b"],
                                data=dataset_dict(_shifted_rows, n_train=48))], name="shifted")
    return suite, suite.tokenize(tiny_tokenizer(), max_length=32)


def _trainer(suite, tokenized, tmp_path, model=None, **kw):
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=1,
                learning_rate=1e-2, report_to="none", disable_tqdm=True, save_strategy="no", seed=0, use_cpu=True)
    args.update(kw)
    return MultiTaskTrainer(model=model if model is not None else tiny_model(suite),
                            args=MultiTaskTrainingArguments(**args),
                            train_dataset={"sim": tokenized["sim"]["train"]},
                            eval_dataset={"sim": tokenized["sim"]["validation"]}, processing_class=tiny_tokenizer())


def _batch(tokenized, n=8):
    rows = tokenized["sim"]["validation"].select(range(n))
    tok = tiny_tokenizer()
    enc = tok.pad({"input_ids": rows["input_ids"]}, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], torch.tensor(rows["labels"], dtype=torch.float32)


def test_trainer_records_the_training_split_statistics_in_the_config(shifted, tmp_path):
    suite, tokenized = shifted
    trainer = _trainer(suite, tokenized, tmp_path)
    labels = np.asarray(tokenized["sim"]["train"]["labels"], dtype=np.float64)
    info = trainer.base_model_ref.config.tasks["sim"]
    assert info["label_mean"] == pytest.approx(labels.mean())
    assert info["label_std"] == pytest.approx(labels.std())
    assert label_scale(info) == (pytest.approx(labels.mean()), pytest.approx(labels.std()))


def test_raw_labels_leave_the_head_unscaled(shifted, tmp_path):
    suite, tokenized = shifted
    trainer = _trainer(suite, tokenized, tmp_path, regression_labels="raw")
    assert label_scale(trainer.base_model_ref.config.tasks["sim"]) is None


def test_a_scaled_head_predicts_on_the_label_scale_and_its_loss_is_standardized(shifted):
    suite, tokenized = shifted
    model = tiny_model(suite)
    model.eval()
    ids, mask, labels = _batch(tokenized)
    raw_out = model(input_ids=ids, attention_mask=mask, labels=labels)
    model.config.tasks = {"sim": {**model.config.tasks["sim"], "label_mean": OFFSET, "label_std": SPREAD}}
    scaled_out = model(input_ids=ids, attention_mask=mask, labels=labels)
    # same head output z: the scaled model reports z * std + mean and the loss of z against standardized labels
    torch.testing.assert_close(scaled_out.logits, raw_out.logits * SPREAD + OFFSET)
    expected = torch.nn.functional.mse_loss(raw_out.logits, (labels - OFFSET) / SPREAD)
    torch.testing.assert_close(scaled_out.loss, expected)


def test_standardized_training_learns_labels_far_from_zero_where_raw_does_not(shifted, tmp_path):
    suite, tokenized = shifted
    scores = {}
    for mode in ("standardize", "raw"):
        trainer = _trainer(suite, tokenized, tmp_path / mode, model=tiny_model(suite, seed=0), num_train_epochs=4,
                           learning_rate=5e-3, regression_labels=mode)
        trainer.train()
        scores[mode] = trainer.evaluate()
    # raw: the loss starts near OFFSET**2 and the head chases the offset; standardized: the order is learned
    assert scores["standardize"]["eval_sim_pearson"] > 0.9
    assert scores["raw"]["eval_sim_pearson"] < 0.5
    assert scores["standardize"]["eval_sim_mse"] < scores["raw"]["eval_sim_mse"] / 10


def test_a_head_with_statistics_keeps_them_when_trained_further(shifted, tmp_path):
    suite, tokenized = shifted
    model = tiny_model(suite)
    model.config.tasks = {"sim": {**model.config.tasks["sim"], "label_mean": 1.0, "label_std": 2.0}}
    trainer = _trainer(suite, tokenized, tmp_path, model=model)
    assert label_scale(trainer.base_model_ref.config.tasks["sim"]) == (1.0, 2.0)


def test_statistics_survive_save_and_reload(shifted, tmp_path):
    suite, tokenized = shifted
    trainer = _trainer(suite, tokenized, tmp_path)
    model = trainer.base_model_ref
    model.save_pretrained(tmp_path / "saved")
    again = MultiTaskModel.from_pretrained(tmp_path / "saved")
    assert label_scale(again.config.tasks["sim"]) == label_scale(model.config.tasks["sim"])
    ids, mask, _ = _batch(tokenized)
    model.eval()
    again.eval()
    torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits)


def test_a_task_table_shared_with_the_caller_is_not_changed(shifted, tmp_path):
    suite, tokenized = shifted
    infos = suite.task_infos()
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_model(suite).config.encoder, tasks=infos))
    _trainer(suite, tokenized, tmp_path, model=model)
    assert "label_std" not in infos["sim"]
    assert "label_std" in model.config.tasks["sim"]


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan")])
def test_config_refuses_a_bad_label_scale_naming_the_task(std):
    with pytest.raises(ValueError, match="task 'sim': label_std"):
        MultiTaskConfig(encoder=tiny_model().config.encoder,
                        tasks={"sim": {"type": "regression", "num_labels": 1, "label_mean": 0.0, "label_std": std}})


def test_constant_labels_are_centred_only(tmp_path):
    rows = {"text_a": ["good the"] * 8, "text_b": ["great"] * 8, "label": [3.0] * 8}
    data = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows) for s in ("train", "validation", "test")})
    suite = TaskSuite([TaskSpec(name="sim", type="regression", text_columns=["text_a", "text_b"], data=data)])
    tokenized = suite.tokenize(tiny_tokenizer(), max_length=32)
    trainer = _trainer(suite, tokenized, tmp_path)
    assert label_scale(trainer.base_model_ref.config.tasks["sim"]) == (3.0, 1.0)


def test_settings_keys_separate_standardized_runs_from_raw_ones():
    from hf_taskgroup.config import PipelineConfig
    from hf_taskgroup.training.train import TrainSettings

    raw, standard = TrainSettings(regression_labels="raw"), TrainSettings()
    assert standard.regression_labels == "standardize"
    # raw runs keep the keys they had before the setting existed; standardized runs get other keys
    assert "regression_labels" not in raw.to_dict()
    assert standard.to_dict() == {**raw.to_dict(), "regression_labels": "standardize"}
    config = PipelineConfig(output_dir="unused")
    assert config.train_settings().regression_labels == "standardize"
    assert dataclasses.replace(config, regression_labels="raw").train_settings().to_dict() == {
        k: v for k, v in config.train_settings().to_dict().items() if k != "regression_labels"}


@pytest.mark.parametrize("mode", ["standardize", "raw"])
def test_the_model_card_says_how_regression_heads_were_trained(mode):
    from hf_taskgroup.publishing.model_card import MultiTaskModelCardData, generate_model_card

    card = generate_model_card(MultiTaskModelCardData(model_name="m", tasks=["sim"], task_types={"sim": "regression"},
                                                      training={"regression_labels": mode}))
    assert ("labels standardized with the training split's" in str(card)) == (mode == "standardize")
