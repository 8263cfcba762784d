"""Tests of hf_taskgroup.grouping.evaluators.affinity_collection: trainer-side transfer-gain and TAG affinity collection.

Planted-family setting (deterministic, provable to first order): 2 families x 2 classification tasks over the
same kind of texts (two sentiment words + two filler words, labels exactly balanced); family 1's rule is the
exact opposite of family 0's. The model is a tiny BERT in frozen mode with a shared trunk and IDENTICAL,
frozen heads (a shared output layer): the only trainable parameters are the trunk's, so a family-1 gradient
is (up to sampling noise) the negative of a family-0 gradient, and tasks of a family pull the trunk the same
way. With trainable per-task heads a label flip is absorbed by the heads (they learn opposite signs) and is no
conflict at all; the tiny model then gives no reliable family signal, hence the frozen heads. (The synthetic
text suite of ``grouping.synthetic`` is not used here: its labels are not balanced and its filler words are
shared by task index across families, which confounds the rule signal of a tiny random frozen encoder.)
"""

from __future__ import annotations

import copy
import json
import random

import datasets
import numpy as np
import pytest
import torch
from utils import flip_digit_after, tiny_model, tiny_tokenizer, truncate_half

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.grouping.evaluators.affinity_collection import (
    AffinityCollector,
    AffinityResult,
    collect_affinity,
)
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.train import TrainSettings
from hf_taskgroup.training.trainer import MultiTaskTrainer

FAMILY = np.array([0, 0, 1, 1])
POS, NEG, FILLER = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"], ["the", "a", "very", "it", "was"]


def _rows(n: int, seed: int, flip: bool) -> dict[str, list]:
    rng = random.Random(seed)
    text, label = [], []
    for k in range(n):
        y = k % 2 == 0  # exactly balanced
        words = rng.sample(POS if y else NEG, 2) + rng.sample(FILLER, 2)
        rng.shuffle(words)
        text.append(" ".join(words))
        label.append("pos" if y != flip else "neg")
    return {"text": text, "label": label}


def _family_suite() -> TaskSuite:
    specs = []
    for name, seed, flip in (("col_a1", 0, False), ("col_a2", 10, False), ("col_b1", 20, True), ("col_b2", 30, True)):
        data = datasets.DatasetDict({split: datasets.Dataset.from_dict(_rows(n, seed + k, flip))
                                     for k, (split, n) in enumerate((("train", 32), ("validation", 4), ("test", 4)))})
        specs.append(TaskSpec(name=name, type="classification", data=data))
    return TaskSuite(specs, name="collect-test")


SUITE, TOKENIZER = _family_suite(), tiny_tokenizer()


def _model(seed: int = 0, *, shared_frozen_heads: bool = True, dropout: float = 0.0, trunk=(8,)):
    model = tiny_model(SUITE, trunk=trunk, seed=seed, pooling="mean", dropout=dropout)
    if shared_frozen_heads:
        first = model.heads[SUITE.task_names[0]].state_dict()
        for task in SUITE.task_names:
            model.heads[task].load_state_dict(first)
            model.heads[task].requires_grad_(False)
    return model


def _trainer(tmp_path, model, *, finetune="frozen", max_steps=4, lr=0.05):
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), finetune=finetune, max_steps=max_steps, learning_rate=lr,
        per_device_train_batch_size=8, seed=0, data_seed=0, save_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=True, use_cpu=True, lr_scheduler_type="constant",
    )
    tokenized = SUITE.tokenize(TOKENIZER, max_length=32)
    return MultiTaskTrainer(model=model, args=args, train_dataset={t: tokenized[t]["train"] for t in SUITE.task_names},
                            processing_class=TOKENIZER)


def _state(trainer):
    params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    opt = copy.deepcopy(trainer.optimizer.state_dict())
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in trainer.model.named_parameters()}
    return params, opt, grads, torch.get_rng_state().clone(), trainer.model.training


def _assert_same_state(a, b):
    pa, oa, ga, ra, ma = a
    pb, ob, gb, rb, mb = b
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for k in oa["state"]:
        for name, value in oa["state"][k].items():
            other = ob["state"][k][name]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other, (k, name)
    assert ga.keys() == gb.keys()
    assert all((ga[k] is None and gb[k] is None) or torch.equal(ga[k], gb[k]) for k in ga)
    assert torch.equal(ra, rb) and ma == mb


@pytest.mark.parametrize("kind", ["transfer_gain", "tag"])
@pytest.mark.parametrize("finetune", ["frozen", "full", "lora"])
def test_collection_step_leaves_parameters_optimizer_and_rng_unchanged(tmp_path, kind, finetune):
    trainer = _trainer(tmp_path, _model(shared_frozen_heads=False, dropout=0.1), finetune=finetune, max_steps=3)
    trainer.train()  # optimizer state (Adam moments) exists for some heads, not for others
    trainer.model.train()
    collector = AffinityCollector(trainer, kind=kind, every_k_steps=1, probe_batch_size=8)
    before = _state(trainer)
    Z = collector.collect_step(trainer.optimizer, step=3)
    _assert_same_state(before, _state(trainer))
    assert np.isfinite(Z).all() and collector.steps_collected == 1
    assert np.abs(Z[~np.eye(4, dtype=bool)]).max() > 0  # it measured something


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["transfer_gain", "tag"])
def test_training_with_collection_ends_with_the_same_parameters(tmp_path, kind):
    """Dropout on: the run would diverge if a lookahead leaked parameters, optimizer state or RNG state."""
    plain = _trainer(tmp_path / "a", _model(shared_frozen_heads=False, dropout=0.1), max_steps=6)
    plain.train()
    collected = _trainer(tmp_path / "b", _model(shared_frozen_heads=False, dropout=0.1), max_steps=6)
    collector = AffinityCollector(collected, kind=kind, every_k_steps=2, probe_batch_size=8)
    collected.add_callback(collector)
    collected.train()
    assert collector.steps_collected == 3
    a, b = plain.model.state_dict(), collected.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _reference_z(trainer, collector, step: int, kind: str, lr: float) -> np.ndarray:
    """Z computed the slow, obvious way: a deep copy of the model (and optimizer) per lookahead."""
    rng = np.random.default_rng([collector.seed, step])
    batches = [collector._probe_batch(t, rng) for t in collector.tasks]
    inner = trainer.optimizer.optimizer
    names = {id(p): n for n, p in trainer.model.named_parameters()}

    def loss(model, i):
        with torch.no_grad():
            return float(model(**batches[i]).loss)

    def after_step(members):
        model = copy.deepcopy(trainer.model).eval()
        params = dict(model.named_parameters())
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[names[id(p)]] for p in g["params"]]}
                  for g in inner.param_groups]
        opt = type(inner)(groups)
        opt.load_state_dict(copy.deepcopy(inner.state_dict()))
        sum(model(**batches[i]).loss for i in members).backward()
        if kind == "transfer_gain":
            opt.step()
        else:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if p.grad is not None and not n.startswith("heads."):
                        p -= lr * p.grad
        return model

    n = len(batches)
    Z = np.zeros((n, n))
    base = [loss(copy.deepcopy(trainer.model).eval(), j) for j in range(n)]
    for i in range(n):
        stepped = after_step((i,))
        for j in range(n):
            if kind == "tag":
                Z[i, j] = 1 - loss(stepped, j) / base[j]
            elif i != j:
                Z[i, j] = 1 - loss(after_step((i, j)), j) / loss(after_step((j,)), j)
    return Z


@pytest.mark.parametrize("kind", ["transfer_gain", "tag"])
def test_collection_step_matches_a_deep_copy_reference(tmp_path, kind):
    trainer = _trainer(tmp_path, _model(shared_frozen_heads=False), max_steps=3)
    trainer.train()
    collector = AffinityCollector(trainer, kind=kind, probe_batch_size=8, lookahead_lr=0.5 if kind == "tag" else None)
    Z = collector.collect_step(trainer.optimizer, step=7)
    np.testing.assert_allclose(Z, _reference_z(trainer, collector, 7, kind, 0.5), rtol=1e-4, atol=1e-6)


def test_pass_counts_per_collection_step(tmp_path):
    n = 4
    for kind, forward, backward, steps in (("transfer_gain", n + n * n, n, n + n * (n - 1) // 2),
                                           ("tag", n + n * n, n, 0)):
        trainer = _trainer(tmp_path, _model(), max_steps=1)
        trainer.train()
        collector = AffinityCollector(trainer, kind=kind, probe_batch_size=4)
        collector.collect_step(trainer.optimizer, step=1)
        assert collector.passes == {"forward": forward, "backward": backward, "optimizer_steps": steps}


def test_transfer_gain_diagonal_is_zero_and_task_subsample_counts_pairs(tmp_path):
    trainer = _trainer(tmp_path, _model(), max_steps=2)
    trainer.train()
    collector = AffinityCollector(trainer, kind="transfer_gain", task_subsample=2, probe_batch_size=4, seed=1)
    for step in range(6):
        Z = collector.collect_step(trainer.optimizer, step=step)
        assert np.isfinite(Z).sum() == 4  # one pair (2 off-diagonal cells) + 2 diagonal cells
    off = ~np.eye(4, dtype=bool)
    assert collector._count[off].sum() == 6 * 2
    S = collector.matrix
    assert np.all(np.diag(S) == 0)
    assert np.array_equal(np.isnan(S), collector._count == 0)


def test_model_without_shared_parameters_is_refused(tmp_path):
    trainer = _trainer(tmp_path, _model(shared_frozen_heads=False, trunk=()), max_steps=1)
    with pytest.raises(ValueError, match="no shared trainable parameters"):
        AffinityCollector(trainer)


def test_invalid_options():
    with pytest.raises(ValueError, match="kind must be one of"):
        AffinityCollector(kind="gradient")
    with pytest.raises(ValueError, match="every_k_steps"):
        AffinityCollector(every_k_steps=0)
    with pytest.raises(ValueError, match="task_subsample"):
        AffinityCollector(task_subsample=1)


def _within_and_across(S: np.ndarray) -> tuple[float, float]:
    same = FAMILY[:, None] == FAMILY[None, :]
    off = ~np.eye(len(FAMILY), dtype=bool)
    return float(S[same & off].min()), float(S[~same].max())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["transfer_gain", "tag"])
def test_collect_affinity_recovers_planted_families(tmp_path, kind):
    from hf_taskgroup.grouping import group_tasks

    settings = TrainSettings(finetune="frozen", pooling="mean", trunk_hidden_sizes=[8], num_train_epochs=1,
                             per_device_train_batch_size=8, learning_rate=0.1, seed=0)
    result = collect_affinity(SUITE, None, settings, kind=kind, every_k_steps=2, probe_batch_size=32,
                              lookahead_lr=50.0 if kind == "tag" else None, tokenizer=TOKENIZER, model=_model())
    within, across = _within_and_across(result.matrix)
    assert within > across
    assert result.steps_collected >= 7 and result.tasks == SUITE.task_names
    grouping = group_tasks(kind, result.tasks, affinity=result.matrix, num_groups=2)
    assert sorted(map(sorted, grouping.groups)) == [SUITE.task_names[:2], SUITE.task_names[2:]]


def test_collect_affinity_caches_result_and_reuses_it(tmp_path, monkeypatch):
    settings = TrainSettings(finetune="frozen", pooling="mean", trunk_hidden_sizes=[8], num_train_epochs=1,
                             per_device_train_batch_size=16, learning_rate=0.05, seed=0)
    out = tmp_path / "affinity.json"
    first = collect_affinity(SUITE, None, settings, kind="tag", every_k_steps=4, tokenizer=TOKENIZER,
                             model=_model(), output_path=out)
    assert json.loads(out.read_text())["kind"] == "tag"
    assert first.forward_backward_passes["backward"] == first.steps_collected * 4

    import hf_taskgroup.training.train as training

    def fail(*args, **kwargs):
        raise AssertionError("trained again although the cached result matches")

    monkeypatch.setattr(training, "train_group", fail)
    again = collect_affinity(SUITE, None, settings, kind="tag", every_k_steps=4, tokenizer=TOKENIZER,
                             model=_model(), output_path=out)
    np.testing.assert_array_equal(again.matrix, first.matrix)
    with pytest.raises(AssertionError, match="trained again"):  # other options: collected again
        collect_affinity(SUITE, None, settings, kind="tag", every_k_steps=2, tokenizer=TOKENIZER,
                         model=_model(), output_path=out)


AFFINITY_SETTINGS = TrainSettings(finetune="frozen", pooling="mean", trunk_hidden_sizes=[8], num_train_epochs=1,
                                  per_device_train_batch_size=16, learning_rate=0.05, seed=0)


@pytest.fixture
def count_collections(monkeypatch):
    """Counts the trainings collect_affinity runs (the real train_group runs)."""
    import hf_taskgroup.training.train as training

    real, calls = training.train_group, []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_group", counting)
    return calls


def _collect(out, tokenizer=TOKENIZER):
    return collect_affinity(SUITE, None, AFFINITY_SETTINGS, kind="tag", every_k_steps=4, tokenizer=tokenizer,
                            model=_model(), output_path=out)




_flip = flip_digit_after("matrix")


@pytest.mark.parametrize("damage", [truncate_half, _flip], ids=["truncated", "flipped-digit"])
def test_corrupt_affinity_file_is_named_and_collected_again(tmp_path, count_collections, damage):
    from hf_taskgroup.artifacts import ArtifactWarning

    fresh = _collect(None)
    out = tmp_path / "affinity" / "tag.json"
    _collect(out)
    assert (tmp_path / "affinity" / "tag.json.manifest").is_file()
    damage(out)
    count_collections.clear()
    with pytest.warns(ArtifactWarning) as caught:
        again = _collect(out)
    named = [w for w in caught if issubclass(w.category, ArtifactWarning)]
    assert len(named) == 1 and str(out) in str(named[0].message)
    assert count_collections == [1]
    np.testing.assert_array_equal(again.matrix, fresh.matrix)


def test_intact_affinity_file_is_reused_and_listed(tmp_path, count_collections):
    from hf_taskgroup.artifacts import ArtifactStore

    out = tmp_path / "affinity" / "tag.json"
    first = _collect(out)
    run = ArtifactStore(tmp_path)
    with run.collecting():
        again = _collect(out)
    assert count_collections == [1]
    np.testing.assert_array_equal(again.matrix, first.matrix)
    assert run.reused == ["affinity/tag.json"]


def test_affinity_file_of_another_tokenizer_or_without_manifest_is_collected_again(tmp_path, count_collections):
    out = tmp_path / "affinity" / "tag.json"
    _collect(out)
    _collect(out, tokenizer=tiny_tokenizer([*POS, *NEG, *FILLER, "extra"]))  # another tokenizer: another key
    assert count_collections == [1, 1]
    (tmp_path / "affinity" / "tag.json.manifest").unlink()  # written before manifests existed: stale
    _collect(out, tokenizer=tiny_tokenizer([*POS, *NEG, *FILLER, "extra"]))
    assert count_collections == [1, 1, 1]


def test_collect_affinity_with_too_few_steps_fails_clearly():
    settings = TrainSettings(finetune="frozen", trunk_hidden_sizes=[8], num_train_epochs=1,
                             per_device_train_batch_size=32, seed=0)
    with pytest.raises(ValueError, match="fewer than every_k_steps"):
        collect_affinity(SUITE, None, settings, kind="tag", every_k_steps=50, tokenizer=TOKENIZER, model=_model())


def test_affinity_result_json_round_trip_keeps_nan(tmp_path):
    r = AffinityResult(np.array([[0.0, np.nan], [0.5, 0.0]]), ["a", "b"], "transfer_gain", 2, 1.0,
                       {"forward": 3}, counts=np.array([[1.0, 0.0], [1.0, 1.0]]))
    r.to_json(tmp_path / "r.json")
    back = AffinityResult.from_json(tmp_path / "r.json")
    assert np.isnan(back.matrix[0, 1]) and back.matrix[1, 0] == 0.5 and back.forward_backward_passes == {"forward": 3}


@pytest.mark.parametrize("kind", ["transfer_gain", "tag"])
def test_collect_affinity_in_partial_mode(tmp_path, kind, monkeypatch):
    """``partial`` mode trains on cached token states (a torch dataset of rows, not a datasets.Dataset): the
    lookahead probes read their batches from it and the collection measures every task pair."""
    from hf_taskgroup.training import features

    monkeypatch.setattr(features, "_DEFAULT_CACHE", features.FeatureCache())  # token states of this test only
    settings = TrainSettings(finetune="partial", trainable_layers=1, pooling="mean", trunk_hidden_sizes=[8],
                             num_train_epochs=1, per_device_train_batch_size=8, learning_rate=0.05, seed=0)
    result = collect_affinity(SUITE, None, settings, kind=kind, every_k_steps=2, probe_batch_size=8,
                              tokenizer=TOKENIZER, model=_model(shared_frozen_heads=False))
    n = len(SUITE.task_names)
    assert result.steps_collected >= 2 and result.matrix.shape == (n, n)
    assert np.isfinite(result.matrix).all() and np.abs(result.matrix).sum() > 0
