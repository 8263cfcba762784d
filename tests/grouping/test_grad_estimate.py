"""Tests of hf_taskgroup.grouping.methods.grad_estimate (Grad-TAG: subset losses from projected gradients)."""

import numpy as np
import pytest
import torch
from utils import tiny_bert_config, tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.config import ConfigError
from hf_taskgroup.data.collator import MultiTaskDataCollator
from hf_taskgroup.grouping import Grouping, available_methods, group_tasks
from hf_taskgroup.grouping.methods.grad_estimate import (
    GaussianProjector,
    GradEstimateConfig,
    GradientEstimator,
    GradientFeatures,
    UnitGradients,
    compute_gradient_features,
    shared_trainable_parameters,
    train_and_collect_gradients,
)
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel
from hf_taskgroup.training.train import TrainSettings

TYPES = ("classification", "regression", "multilabel", "token_classification")


# ------------------------------------------------------------------------------------------- projection
def test_projection_is_deterministic_per_seed_and_independent_of_blocking_and_caching():
    flat = torch.randn(5, 1000, generator=torch.Generator().manual_seed(0))
    cached = GaussianProjector(1000, 16, seed=3, chunk_size=128)
    uncached = GaussianProjector(1000, 16, seed=3, chunk_size=128, cache_mb=0)
    again = GaussianProjector(1000, 16, seed=3, chunk_size=128)
    other = GaussianProjector(1000, 16, seed=4, chunk_size=128)
    out = cached.project(flat)
    assert torch.equal(out, again.project(flat))
    assert torch.allclose(out, uncached.project(flat), atol=1e-5)
    assert torch.allclose(out, flat @ cached.matrix(), atol=1e-4)
    assert not torch.allclose(out, other.project(flat), atol=1e-2)
    # memory: without the cache no block is kept; one block is chunk_size x dim floats
    assert uncached.cached_bytes == 0 and not uncached.cache
    assert uncached.block_bytes == 128 * 16 * 4
    assert cached.cached_bytes == 1000 * 16 * 4


def test_projection_roughly_preserves_inner_products():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 4000, generator=g)
    proj = GaussianProjector(4000, 512, seed=0, chunk_size=1000).project(x)
    ratio = proj.norm(dim=1) / x.norm(dim=1)
    assert float((ratio - 1).abs().max()) < 0.15


def test_buffer_projects_units_gathered_across_batches_in_order():
    """Units added a few at a time are projected together (one matrix pass per ``capacity`` units), in order."""
    from hf_taskgroup.grouping.methods.grad_estimate import _ProjectionBuffer

    flat = torch.randn(23, 300, generator=torch.Generator().manual_seed(1))
    projector = GaussianProjector(300, 8, seed=2, chunk_size=64, cache_mb=0)  # regenerated on every project()
    assert not projector.cache
    buffer = _ProjectionBuffer(projector, capacity=10)
    for a, b in ((0, 1), (1, 4), (4, 9), (9, 12), (12, 23)):
        buffer.add(flat[a:b])
    out = buffer.take()
    assert out.shape == (23, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out, (flat @ projector.matrix()).numpy(), rtol=1e-5, atol=1e-5)
    assert buffer.projections == 3  # 9 + 3 + 11 (one chunk larger than the capacity goes alone), not 5 per-batch calls
    assert buffer.take().shape == (0, 8)


def test_projection_rejects_a_gradient_of_the_wrong_size():
    with pytest.raises(ValueError, match="gradient of 9 values"):
        GaussianProjector(10, 4).project(torch.zeros(1, 9))


# ------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("bad", [dict(projection_dim=0), dict(regularization=0.0), dict(search="nope"),
                                 dict(split="test"), dict(max_examples=0), dict(buffer_mb=0)])
def test_config_validates(bad):
    with pytest.raises(ValueError):
        GradEstimateConfig(**bad)


# ------------------------------------------------------------------------------------------- estimator logic
def _units(rng, mean, n, base=0.0):
    g = (rng.normal(size=(n, 8)) + mean).astype(np.float32)
    return UnitGradients(g, np.full(n, base), np.zeros(n), np.arange(n))


def test_estimator_moves_towards_aligned_gradients_and_away_from_opposed_ones():
    rng = np.random.default_rng(0)
    mu = np.zeros(8)
    mu[0] = 2.0
    units = {"a": {"train": _units(rng, mu, 20), "validation": _units(rng, mu, 50)},
             "twin": {"train": _units(rng, mu, 200), "validation": _units(rng, mu, 50)},
             "opposite": {"train": _units(rng, -mu, 200), "validation": _units(rng, -mu, 50)}}
    feats = GradientFeatures(units=units, kinds={t: "logistic" for t in units})
    est = GradientEstimator(feats, regularization=1.0)
    base = est.base_losses()["a"]
    assert base == pytest.approx(np.log(2))
    alone = est(["a"])["a"]["loss"]
    assert alone < base
    assert est(["a", "twin"])["a"]["loss"] < base
    assert est(["a", "opposite"])["a"]["loss"] > alone
    assert est(["a", "twin"])["a"]["loss"] < est(["a", "opposite"])["a"]["loss"]
    # larger regularization = smaller step from the base model
    strong = GradientEstimator(feats, regularization=1e6)
    assert strong(["a", "twin"])["a"]["loss"] == pytest.approx(base, abs=1e-3)
    assert est.trainings == 0 and est.fits == 3


# ------------------------------------------------------------------------------------------- real gradients
def _feature_suite(seed=0, H=16):
    """Frozen-mode rows (pooled ``features``): a, its twin and a label-flipped task share a rule, one is unrelated."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.zeros(H), torch.zeros(H)
    u[0], v[1] = 1.0, 1.0
    rules = {"a": u, "twin": u, "opposite": -u, "unrelated": v}
    sizes = {"a": 10, "twin": 100, "opposite": 100, "unrelated": 100}
    data = {}
    for i, (task, rule) in enumerate(rules.items()):
        for split, n in (("train", sizes[task]), ("validation", 200)):
            x = torch.randn(n, H, generator=g)
            y = ((x @ rule) > 0).long()
            data.setdefault(task, {})[split] = [{"features": x[k].numpy(), "labels": int(y[k]), "task_ids": i}
                                                for k in range(n)]
    return data


def test_linearised_estimate_prefers_the_twin_over_an_unrelated_task():
    """A 1-unit shared trunk can serve one direction: the twin's gradients agree with a's, the unrelated ones pull away."""
    data = _feature_suite()
    infos = {t: {"type": "classification", "num_labels": 2} for t in data}
    torch.manual_seed(0)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(), tasks=infos, trunk_hidden_sizes=[1],
                                           classifier_dropout=0.0, trunk_dropout=0.0))
    model.freeze_encoder()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    collator = MultiTaskDataCollator(None)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):  # the base model: all tasks together
        for rows in (d["train"] for d in data.values()):
            batch = collator([rows[k] for k in torch.randint(len(rows), (16,), generator=g).tolist()])
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    feats = compute_gradient_features(model, data, collator, GradEstimateConfig(projection_dim=32))
    assert feats.info["parameters"] == ["trunk.0.weight", "trunk.0.bias"]
    est = GradientEstimator(feats, regularization=0.1)
    with_twin = est(["a", "twin"])["a"]["loss"]
    with_unrelated = est(["a", "unrelated"])["a"]["loss"]
    assert with_twin < with_unrelated - 0.05


@pytest.fixture(scope="module")
def own_feature_cache():
    """A fresh process-wide feature cache for this module: its frozen encodings do not leak into other tests."""
    from hf_taskgroup.training import features

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(features, "_DEFAULT_CACHE", features.FeatureCache())
        yield


@pytest.fixture(scope="module")
def tiny_run(own_feature_cache):
    suite = tiny_suite(TYPES)
    tok = tiny_tokenizer()
    settings = TrainSettings(finetune="frozen", trunk_hidden_sizes=[8], num_train_epochs=2, per_device_train_batch_size=8)

    def factory(infos, seed):
        return tiny_model(suite, trunk=[8], seed=seed)

    feats = train_and_collect_gradients(suite, suite.task_names, settings, GradEstimateConfig(projection_dim=16),
                                        tokenizer=tok, model_factory=factory)
    return suite, tok, settings, factory, feats


def test_estimate_at_zero_step_equals_the_base_model_loss(tiny_run):
    suite, _, _, _, feats = tiny_run
    est = GradientEstimator(feats)
    base = est.base_losses()
    for task in suite.task_names:  # every task type: the unit losses reproduce the trainer's validation loss
        assert base[task] == pytest.approx(feats.info["base_results"][task]["loss"], rel=1e-4), task
    # the full set with an overwhelming penalty stays at the base model
    frozen_in_place = GradientEstimator(feats, regularization=1e9)(suite.task_names)
    assert {t: frozen_in_place[t]["loss"] for t in suite.task_names} == pytest.approx(base, rel=1e-4)
    # one gradient per unit: examples, labels of multilabel rows, labelled tokens
    units = feats.info["units"]
    assert units["sent"]["train"] == 32 and units["hall"]["train"] == 3 * 32 and units["ner"]["train"] > 32


def test_gradients_are_cached_and_reused(tiny_run, tmp_path, monkeypatch):
    suite, tok, settings, factory, _ = tiny_run
    cfg = GradEstimateConfig(projection_dim=8)
    first = train_and_collect_gradients(suite, ["sent", "sim"], settings, cfg, tokenizer=tok, model_factory=factory,
                                        cache_dir=tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr("hf_taskgroup.training.train.train_group", no_training)
    again = train_and_collect_gradients(suite, ["sent", "sim"], settings, cfg, tokenizer=tok, model_factory=factory,
                                        cache_dir=tmp_path)
    assert np.array_equal(again.units["sent"]["train"].grads, first.units["sent"]["train"].grads)
    assert again.info["cold_seconds"] == first.info["cold_seconds"]
    with pytest.raises(AssertionError, match="trained again"):  # another projection is another cache entry
        train_and_collect_gradients(suite, ["sent", "sim"], settings, GradEstimateConfig(projection_dim=4),
                                    tokenizer=tok, model_factory=factory, cache_dir=tmp_path)


def test_damaged_or_other_model_gradient_cache_is_computed_again(tiny_run, tmp_path, monkeypatch):
    from hf_taskgroup.artifacts import ArtifactStore, ArtifactWarning

    suite, tok, settings, factory, _ = tiny_run
    cfg = GradEstimateConfig(projection_dim=8)
    import hf_taskgroup.training.train as training

    real, calls = training.train_group, []
    monkeypatch.setattr(training, "train_group", lambda *a, **k: calls.append(1) or real(*a, **k))

    def collect(make=factory):
        return train_and_collect_gradients(suite, ["sent", "sim"], settings, cfg, tokenizer=tok, model_factory=make,
                                           cache_dir=tmp_path)

    first = collect()
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    npz = sorted(folder.glob("*.npz"))[0]
    with open(npz, "r+b") as f:
        f.truncate(npz.stat().st_size // 2)
    with pytest.warns(ArtifactWarning) as caught:
        again = collect()
    assert [str(npz) in str(w.message) for w in caught if issubclass(w.category, ArtifactWarning)] == [True]
    assert len(calls) == 2
    assert np.array_equal(again.units["sent"]["train"].grads, first.units["sent"]["train"].grads)
    run = ArtifactStore(tmp_path)  # intact: reused and listed
    with run.collecting():
        collect()
    assert len(calls) == 2 and run.reused == [folder.name]
    collect(lambda infos, seed: tiny_model(suite, trunk=[8], seed=seed + 1))  # another model: not reused
    assert len(calls) == 3


def test_method_is_registered_and_returns_a_valid_grouping_with_cost(tiny_run):
    suite, tok, settings, factory, feats = tiny_run
    assert available_methods()["grad_estimate"]["needs"] == ("gradients|suite",)
    with pytest.raises(ValueError, match="needs the input 'gradients' or 'suite'"):
        group_tasks("grad_estimate", suite.task_names)
    for search in ("surrogate", "exhaustive", "pairwise"):
        g = group_tasks("grad_estimate", suite.task_names, gradients=feats, search=search, projection_dim=16)
        assert isinstance(g, Grouping) and g.method == "grad_estimate"
        assert sorted(t for grp in g.groups for t in grp) == sorted(suite.task_names)
        assert g.cost.trainings == 1 and g.cost.seconds > 0
        assert g.scores["base_loss"] == pytest.approx(GradientEstimator(feats).base_losses())
    assert g.scores["subsets_estimated"] == len(TYPES) + len(TYPES) * (len(TYPES) - 1) // 2  # pairwise: n + pairs
    assert Grouping.from_dict(g.to_dict()).groups == g.groups
    # from a suite: the base training happens inside and is charged
    g = group_tasks("grad_estimate", ["sent", "sim", "hall"], suite=suite, settings=settings, tokenizer=tok,
                    model_factory=factory, projection_dim=8, search="exhaustive")
    assert g.cost.trainings == 1 and g.scores["subsets_estimated"] == 7
    assert g.scores["gradient_info"]["train_seconds"] > 0
    with pytest.raises(ConfigError, match="does not take 'projection_dims'"):
        group_tasks("grad_estimate", suite.task_names, gradients=feats, projection_dims=16)


def test_frozen_mode_without_a_shared_trunk_is_a_clear_error(tiny_run):
    suite, tok, _, _, _ = tiny_run
    settings = TrainSettings(finetune="frozen", trunk_hidden_sizes=[], num_train_epochs=1)
    with pytest.raises(ValueError, match="no trainable shared parameters in 'frozen' mode"):
        train_and_collect_gradients(suite, ["sent"], settings, GradEstimateConfig(projection_dim=4), tokenizer=tok,
                                    model_factory=lambda infos, seed: tiny_model(suite.subset(["sent"]), seed=seed))


@pytest.mark.slow
def test_lora_mode_takes_gradients_of_the_adapters_and_trunk_only(own_feature_cache):
    suite = tiny_suite(("classification", "regression"))
    tok = tiny_tokenizer()
    settings = TrainSettings(finetune="lora", trunk_hidden_sizes=[4], num_train_epochs=1, per_device_train_batch_size=8)
    feats = train_and_collect_gradients(suite, suite.task_names, settings, GradEstimateConfig(projection_dim=8),
                                        tokenizer=tok, model_factory=lambda infos, seed: tiny_model(suite, trunk=[4]))
    names = feats.info["parameters"]
    assert names and all("lora_" in n or ".trunk." in n for n in names), names
    assert not any("heads" in n for n in names)
    base = GradientEstimator(feats).base_losses()
    for task in suite.task_names:
        assert base[task] == pytest.approx(feats.info["base_results"][task]["loss"], rel=1e-4)


@pytest.mark.slow
def test_partial_mode_takes_gradients_of_the_top_layers_and_trunk_and_projects_across_examples(own_feature_cache):
    """``partial`` (k = 1 of 2 layers): gradients of the top layer and trunk only (cached lower-layer states),
    the base losses are the trainer's, and one example per forward does not mean one projection per example."""
    suite = tiny_suite(("classification", "token_classification"))
    tok = tiny_tokenizer()
    settings = TrainSettings(finetune="partial", trainable_layers=1, trunk_hidden_sizes=[4], num_train_epochs=1,
                             per_device_train_batch_size=8)

    def factory(infos, seed):
        torch.manual_seed(seed)
        return MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(num_hidden_layers=2), tasks=infos,
                                              trunk_hidden_sizes=[4], classifier_dropout=0.0, trunk_dropout=0.0))

    cfg = GradEstimateConfig(projection_dim=8, projection_cache_mb=0)
    feats = train_and_collect_gradients(suite, suite.task_names, settings, cfg, tokenizer=tok, model_factory=factory)
    names = feats.info["parameters"]
    assert names and all(".layer.1." in n or n.startswith("trunk.") for n in names), names
    assert any(n.startswith("trunk.") for n in names) and any(".layer.1." in n for n in names)
    assert feats.info["finetune"] == "partial" and not feats.info["projection_cached"]
    base = GradientEstimator(feats).base_losses()
    for task in suite.task_names:
        assert base[task] == pytest.approx(feats.info["base_results"][task]["loss"], rel=1e-4)
    units = sum(n for sp in feats.info["units"].values() for n in sp.values())
    assert units > 100 and feats.info["projections"] == 4  # one per (task, split): the buffer holds them all
    est = GradientEstimator(feats)(suite.task_names)
    assert all(np.isfinite(v["loss"]) for v in est.values())


def test_shared_parameters_exclude_the_heads():
    model = tiny_model(tiny_suite(("classification",)), trunk=[4])
    names = [n for n, _ in shared_trainable_parameters(model)]
    assert "trunk.0.weight" in names and not any(n.startswith("heads.") for n in names)


def test_projector_warns_when_the_matrix_is_not_cached(caplog):
    import logging

    from hf_taskgroup.grouping.methods.grad_estimate import GaussianProjector

    with caplog.at_level(logging.WARNING, logger="hf_taskgroup.grouping.methods.grad_estimate"):
        cached = GaussianProjector(1000, 8, cache_mb=1.0)  # 32 KB: cached, silent
        assert cached.cache and not caplog.records
        uncached = GaussianProjector(1000, 8, cache_mb=0.01)  # 10 KB cap: regenerated per buffer
    assert not uncached.cache
    assert len(caplog.records) == 1 and "projection_cache_mb" in caplog.records[0].getMessage()
