"""Tests of hf_taskgroup.grouping.methods.task_embedding: Fisher task embeddings (Vu et al. 2020) and their grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from utils import classification_dataset, dataset_dict, ner_rows, regression_rows, tiny_model, tiny_tokenizer

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.grouping.methods.task_embedding import (
    compute_task_embeddings,
    cosine_matrix,
    fisher_embedding,
    per_example_losses,
    task_embedding,
)
from hf_taskgroup.grouping.registry import group_tasks
from hf_taskgroup.training.train import TrainSettings, train_group

SENT = classification_dataset(n_train=24, n_eval=4)
SUITE = TaskSuite(
    [
        TaskSpec(name="emb_a", type="classification", data=SENT),
        TaskSpec(name="emb_a_copy", type="classification", data=SENT),  # the same task under another name
        TaskSpec(name="emb_sim", type="regression", text_columns=["text_a", "text_b"],
                 data=dataset_dict(regression_rows, n_train=24, n_eval=4)),
        TaskSpec(name="emb_ner", type="token_classification", data=dataset_dict(ner_rows, n_train=24, n_eval=4)),
    ],
    name="taskemb-test",
)
TOKENIZER = tiny_tokenizer()
SETTINGS = TrainSettings(finetune="frozen", pooling="mean", trunk_hidden_sizes=[8], num_train_epochs=1,
                         per_device_train_batch_size=8, learning_rate=0.01, seed=0)


def factory(infos):
    return tiny_model(SUITE.subset(list(infos)), trunk=(8,), pooling="mean", seed=0)


def test_identical_tasks_have_cosine_one_and_are_grouped(tmp_path):
    tasks = ["emb_a", "emb_sim", "emb_a_copy"]
    grouping = group_tasks("task_embedding", tasks, suite=SUITE, settings=SETTINGS, num_groups=2,
                           tokenizer=TOKENIZER, model_factory=factory, cache_dir=tmp_path)
    cos = np.array(grouping.scores["cosine"])
    assert cos[0, 2] == pytest.approx(1.0, abs=1e-6)
    assert cos[0, 1] < 0.999
    assert sorted(map(sorted, grouping.groups)) == [["emb_a", "emb_a_copy"], ["emb_sim"]]
    assert grouping.cost.trainings == 3 and grouping.cost.examples == 3 * (24 + 24)
    assert grouping.method == "task_embedding" and len(grouping.scores["embeddings"]["emb_a"]) == 16


def test_embeddings_are_cached_per_task(tmp_path, monkeypatch):
    first, cost = compute_task_embeddings(SUITE, ["emb_a"], SETTINGS, tokenizer=TOKENIZER, model_factory=factory,
                                          cache_dir=tmp_path)
    assert cost.trainings == 1 and len(list(tmp_path.glob("emb_a.*.json"))) == 1

    import hf_taskgroup.training.train as training

    monkeypatch.setattr(training, "train_group", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again, cost = compute_task_embeddings(SUITE, ["emb_a"], SETTINGS, tokenizer=TOKENIZER, cache_dir=tmp_path)
    assert cost.trainings == 0
    np.testing.assert_allclose(again["emb_a"], first["emb_a"])


@pytest.mark.parametrize("task", ["emb_a", "emb_ner"])
def test_fisher_embedding_equals_mean_of_per_example_squared_gradients(task):
    run = train_group(SUITE, [task], SETTINGS, eval_splits=(), tokenizer=TOKENIZER, model=factory([task]))
    trainer = run["trainer"]
    vector, n = fisher_embedding(trainer, task, batch_size=5)
    assert n == 24 and vector.shape == (16,) and (vector >= 0).all() and vector.sum() > 0
    model = trainer.base_model_ref.eval()
    ds = trainer.prepare_task_dataset(task, trainer.train_datasets[task], "train")
    expected = np.zeros(16)
    for i in range(len(ds)):
        batch = trainer.data_collator([ds[i]])
        feats = batch["features"].clone().requires_grad_(True)
        logits = model(features=feats, task_ids=batch["task_ids"]).logits
        loss = per_example_losses(model.config.tasks[task]["type"], logits, batch["labels"])[0]
        (grad,) = torch.autograd.grad(loss, feats)
        expected += grad.pow(2).reshape(-1, 16).sum(0).double().numpy()
    np.testing.assert_allclose(vector, expected / len(ds), rtol=1e-4, atol=1e-12)


def test_precomputed_embeddings_and_threshold():
    emb = {"a": [1.0, 0.0, 0.0], "b": [0.9, 0.1, 0.0], "c": [0.0, 0.0, 1.0]}
    g = task_embedding(["a", "b", "c"], embeddings=emb, distance_threshold=0.2)
    assert g.groups == [["a", "b"], ["c"]] and g.cost.trainings == 0
    assert cosine_matrix(emb, ["a", "c"])[0, 1] == 0.0


def test_needs_a_clustering_target_and_inputs():
    with pytest.raises(ValueError, match="num_groups or distance_threshold"):
        task_embedding(["a", "b"], embeddings={"a": [1.0], "b": [1.0]})
    with pytest.raises(ValueError, match="'embeddings' or 'suite'"):
        group_tasks("task_embedding", ["a", "b"], num_groups=1)
    with pytest.raises(ValueError, match="no embedding for task"):
        cosine_matrix({"a": [1.0]}, ["a", "b"])
