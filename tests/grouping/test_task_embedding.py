"""Tests of hf_taskgroup.grouping.methods.task_embedding: Fisher task embeddings (Vu et al. 2020) and their grouping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from utils import (
    classification_dataset,
    dataset_dict,
    flip_digit_after,
    ner_rows,
    regression_rows,
    tiny_model,
    tiny_tokenizer,
    truncate_half,
)

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
    assert len(list(tmp_path.glob("emb_a.*.json.manifest"))) == 1

    import hf_taskgroup.training.train as training

    monkeypatch.setattr(training, "train_group", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again, cost = compute_task_embeddings(SUITE, ["emb_a"], SETTINGS, tokenizer=TOKENIZER, model_factory=factory,
                                          cache_dir=tmp_path)
    assert cost.trainings == 0
    np.testing.assert_allclose(again["emb_a"], first["emb_a"])


@pytest.fixture
def count_trainings(monkeypatch):
    """Counts the single-task trainings compute_task_embeddings runs (the real train_group runs)."""
    import hf_taskgroup.training.train as training

    real, calls = training.train_group, []

    def counting(suite, tasks, *args, **kwargs):
        calls.append(list(tasks))
        return real(suite, tasks, *args, **kwargs)

    monkeypatch.setattr(training, "train_group", counting)
    return calls


def _embed(cache_dir, **kwargs):
    kwargs = {"tokenizer": TOKENIZER, "model_factory": factory, **kwargs}
    return compute_task_embeddings(SUITE, ["emb_a"], SETTINGS, cache_dir=cache_dir, **kwargs)[0]["emb_a"]




_flip = flip_digit_after("embedding")


@pytest.mark.parametrize("damage", [truncate_half, _flip], ids=["truncated", "flipped-digit"])
def test_corrupt_embedding_entry_is_named_and_computed_again(tmp_path, count_trainings, damage):
    from hf_taskgroup.artifacts import ArtifactWarning

    fresh = _embed(None)
    _embed(tmp_path)
    (entry,) = tmp_path.glob("emb_a.*.json")
    damage(entry)
    count_trainings.clear()
    with pytest.warns(ArtifactWarning) as caught:
        again = _embed(tmp_path)
    named = [w for w in caught if issubclass(w.category, ArtifactWarning)]
    assert len(named) == 1 and str(entry) in str(named[0].message)
    assert count_trainings == [["emb_a"]]
    np.testing.assert_allclose(again, fresh)


def test_intact_embedding_entry_is_reused_and_listed(tmp_path, count_trainings):
    from hf_taskgroup.artifacts import ArtifactStore

    first = _embed(tmp_path)
    run = ArtifactStore(tmp_path)
    with run.collecting():
        again = _embed(tmp_path)
    assert count_trainings == [["emb_a"]]  # the first call only
    np.testing.assert_array_equal(again, first)
    (entry,) = tmp_path.glob("emb_a.*.json")
    assert run.reused == [entry.name]


def other_factory(infos):  # another tiny encoder: other initial weights
    return tiny_model(SUITE.subset(list(infos)), trunk=(8,), pooling="mean", seed=1)


@pytest.mark.parametrize("change", [{"model_factory": other_factory}, {"tokenizer": tiny_tokenizer(["good", "bad"])}],
                         ids=["other-model", "other-tokenizer"])
def test_another_encoder_or_tokenizer_never_reuses_embeddings(tmp_path, count_trainings, change):
    _embed(tmp_path)
    _embed(tmp_path, **change)
    assert count_trainings == [["emb_a"], ["emb_a"]]
    assert len(list(tmp_path.glob("emb_a.*.json"))) == 2


def test_the_settings_encoder_folder_is_part_of_the_key(tmp_path, count_trainings):
    """Without a model_factory the encoder is the settings' model folder, fingerprinted by its files."""
    import dataclasses

    import torch
    from transformers import BertModel
    from utils import tiny_bert_config

    folders = []
    for seed in (0, 1):
        folder = tmp_path / f"encoder{seed}"
        torch.manual_seed(seed)
        BertModel(tiny_bert_config(), add_pooling_layer=False).save_pretrained(folder)
        TOKENIZER.save_pretrained(folder)
        folders.append(folder)
    cache = tmp_path / "cache"
    for folder in (folders[0], folders[0], folders[1]):
        settings = dataclasses.replace(SETTINGS, model_name_or_path=str(folder))
        compute_task_embeddings(SUITE, ["emb_a"], settings, cache_dir=cache)
    assert count_trainings == [["emb_a"], ["emb_a"]]  # the second call reused, the third (another encoder) did not


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
