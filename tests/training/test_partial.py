"""finetune="partial": the top k encoder layers train on cached (fp16, memory-mapped) token states of the lower ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel
from utils import tiny_bert_config, tiny_suite, tiny_tokenizer

from hf_taskgroup.artifacts import ArtifactWarning
from hf_taskgroup.data.collator import MultiTaskDataCollator
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.features import FeatureCache, TokenStates
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel
from hf_taskgroup.training.trainer import MultiTaskTrainer

LAYERS = 3
FP16_TOL = dict(atol=3e-2, rtol=3e-2)  # the cached states are float16


def _model(suite, *, layers=LAYERS, seed=0, encoder=None, pooling="mean", trunk=(8,)):
    torch.manual_seed(seed)
    enc = encoder if encoder is not None else tiny_bert_config(num_hidden_layers=layers)
    return MultiTaskModel(MultiTaskConfig(encoder=enc, tasks=suite.task_infos(), pooling=pooling,
                                          trunk_hidden_sizes=list(trunk), classifier_dropout=0.0, trunk_dropout=0.0))


def _args(tmp_path, **kw):
    values = dict(output_dir=str(tmp_path / "out"), finetune="partial", trainable_layers=1, num_train_epochs=2,
                  per_device_train_batch_size=8, learning_rate=5e-3, use_cpu=True, report_to="none",
                  disable_tqdm=True, save_strategy="no", seed=0)
    values.update(kw)
    return MultiTaskTrainingArguments(**values)


@pytest.fixture(scope="module")
def suite():
    return tiny_suite()  # classification, regression, multilabel, token classification


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def data(suite, tok):
    return suite.tokenize(tok, max_length=32)


# ------------------------------------------------------------------------------------------- forward equivalence
@pytest.mark.parametrize("k", [1, 2, LAYERS])
def test_partial_forward_on_cached_states_equals_full_forward_for_every_head_type(suite, tok, data, tmp_path, k):
    model = _model(suite).eval()
    cache = FeatureCache(cache_dir=tmp_path / "cache")
    collate = MultiTaskDataCollator(tok)
    model.freeze_lower_layers(k)
    for i, task in enumerate(suite.task_names):
        ds = data[task]["validation"]
        rows = [ds[j] for j in range(8)]
        raw = collate([{c: r[c] for c in ("input_ids", "attention_mask", "token_type_ids", "labels") if c in r}
                       for r in rows])
        states = cache.add_token_states(model, task, "validation", ds, trainable_layers=k, tokenizer=tok)
        cached = collate([states[j] for j in range(8)])
        assert cached["hidden_states"].shape[:2] == raw["input_ids"].shape  # the same padded token grid
        with torch.no_grad():
            full = model(**raw, task_ids=torch.full((8,), i))
            part = model(hidden_states=cached["hidden_states"], attention_mask=cached["attention_mask"],
                         labels=cached["labels"], task_ids=torch.full((8,), i))
        assert full.logits.shape == part.logits.shape, task
        torch.testing.assert_close(part.logits, full.logits, **FP16_TOL, msg=task)
        torch.testing.assert_close(part.loss, full.loss, **FP16_TOL, msg=task)


@pytest.mark.parametrize("family", ["roberta", "electra"])
def test_other_bert_like_families_split_the_same_way(family, tok):
    from transformers import ElectraConfig, RobertaConfig

    common = dict(vocab_size=64, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=64)
    enc = RobertaConfig(**common, pad_token_id=0) if family == "roberta" else ElectraConfig(**common, embedding_size=8)
    suite = tiny_suite(("classification",))
    model = _model(suite, encoder=enc).eval()
    batch = tok(["good the very nice", "bad"], padding=True, return_tensors="pt")
    batch.pop("token_type_ids")
    with torch.no_grad():
        full = model.encode(**batch, token_level=True)
        low = model.encode_lower(**batch, trainable_layers=2)
        top = model.encode_upper(low, batch["attention_mask"], trainable_layers=2)
    torch.testing.assert_close(top, full)


def test_unsupported_encoders_and_bad_k_are_refused_with_the_model_type():
    from transformers import DistilBertConfig

    suite = tiny_suite(("classification",))
    distil = _model(suite, encoder=DistilBertConfig(vocab_size=64, dim=16, n_layers=2, n_heads=2, hidden_dim=32))
    with pytest.raises(ValueError, match="'distilbert'"):
        distil.freeze_lower_layers(1)
    bert = _model(suite)
    for k in (0, LAYERS + 1):
        with pytest.raises(ValueError, match=rf"1\.\.{LAYERS}.*'bert'"):
            bert.freeze_lower_layers(k)
    with pytest.raises(ValueError, match="trainable_layers"):
        MultiTaskTrainingArguments(output_dir="x", finetune="partial", trainable_layers=0)


# ------------------------------------------------------------------------------------------------- the cache
def test_cache_is_never_reused_after_k_tokenization_or_lower_weights_change(suite, tok, tmp_path):
    model = _model(suite).eval()
    ds32 = suite.tokenize(tok, max_length=32)["sent"]["train"]
    ds4 = suite.tokenize(tok, max_length=4)["sent"]["train"]  # truncates: other tokens
    assert ds32["input_ids"] != ds4["input_ids"]
    cache = FeatureCache(cache_dir=tmp_path / "cache")

    def states(m, ds, k):
        return cache.add_token_states(m, "sent", "train", ds, trainable_layers=k, tokenizer=tok)

    def expected(m, ds, k, row=0):
        ids = torch.tensor([ds[row]["input_ids"]])
        with torch.no_grad():
            return m.encode_lower(ids, torch.ones_like(ids), trainable_layers=k)[0].numpy()

    first = states(model, ds32, 1)
    assert (cache.misses, cache.hits) == (1, 0)
    assert states(model, ds32, 1).states is first.states and cache.hits == 1
    for m, ds, k in ((model, ds32, 2), (model, ds4, 1)):
        got = states(m, ds, k)
        np.testing.assert_allclose(got[0]["hidden_states"], expected(m, ds, k), **FP16_TOL)
    assert cache.misses == 3
    # other weights below the top k: a miss; the trainable top layer changing (training): a hit
    other = _model(suite).eval()
    with torch.no_grad():
        other.encoder.encoder.layer[0].output.dense.weight.mul_(1.5)
    np.testing.assert_allclose(states(other, ds32, 1)[0]["hidden_states"], expected(other, ds32, 1), **FP16_TOL)
    assert cache.misses == 4
    with torch.no_grad():
        model.encoder.encoder.layer[LAYERS - 1].output.dense.weight.mul_(1.5)
    states(model, ds32, 1)
    assert cache.misses == 4
    # a new cache on the same folder (another process) reads the files back; a torn folder is recomputed
    again = FeatureCache(cache_dir=tmp_path / "cache")
    reread = again.add_token_states(model, "sent", "train", ds32, trainable_layers=1, tokenizer=tok)
    assert (again.misses, again.disk_hits) == (0, 1)
    np.testing.assert_array_equal(reread[3]["hidden_states"], first[3]["hidden_states"])
    good = np.array(reread.states.states)  # a copy: the memory maps of the file are invalid once it is torn
    (reread.states.folder / "states.npy").write_bytes(b"torn")
    third = FeatureCache(cache_dir=tmp_path / "cache")
    with pytest.warns(ArtifactWarning, match="states.npy has 4 bytes"):
        third.add_token_states(model, "sent", "train", ds32, trainable_layers=1, tokenizer=tok)
    assert third.misses == 1
    # a flipped byte keeps the file loadable: only its recorded sha256 tells; encoded again, same states
    folder = third.add_token_states(model, "sent", "train", ds32, trainable_layers=1, tokenizer=tok).states.folder
    data = bytearray((folder / "states.npy").read_bytes())
    data[-1] ^= 0x01
    (folder / "states.npy").write_bytes(bytes(data))
    fourth = FeatureCache(cache_dir=tmp_path / "cache")
    with pytest.warns(ArtifactWarning, match="does not match its recorded sha256"):
        redone = fourth.add_token_states(model, "sent", "train", ds32, trainable_layers=1, tokenizer=tok)
    assert (fourth.misses, fourth.disk_hits) == (1, 0)
    np.testing.assert_array_equal(np.asarray(redone.states.states), good)


def test_states_are_float16_memory_maps_on_disk(suite, tok, data):
    model = _model(suite).eval()
    cache = FeatureCache()  # no folder: a temporary one, still on disk
    ds = cache.add_token_states(model, "ner", "train", data["ner"]["train"], trainable_layers=1, tokenizer=tok)
    assert isinstance(ds.states, TokenStates)
    assert isinstance(ds.states.states, np.memmap) and ds.states.states.dtype == np.float16
    assert (ds.states.folder / "states.npy").exists()
    row = ds[2]
    assert isinstance(row["hidden_states"], np.memmap)  # a view: no copy until a batch is collated
    assert row["hidden_states"].shape == (len(data["ner"]["train"][2]["input_ids"]), 16)
    assert len(row["labels"]) == row["hidden_states"].shape[0]


# ---------------------------------------------------------------------------------------------------- training
def test_partial_training_updates_only_the_top_layers_trunk_and_heads(suite, tok, data, tmp_path):
    model = _model(suite)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MultiTaskTrainer(model=model, args=_args(tmp_path, trainable_layers=1),
                               train_dataset={t: data[t]["train"] for t in suite.task_names},
                               eval_dataset={t: data[t]["validation"] for t in suite.task_names}, processing_class=tok,
                               feature_cache=FeatureCache())  # its own cache: the count below is this run's
    trainer.train()
    top = f"encoder.encoder.layer.{LAYERS - 1}."
    for name, p in model.named_parameters():
        if name.startswith("encoder.") and not name.startswith(top):
            assert torch.equal(p, before[name]), f"frozen {name} changed"
            assert not p.requires_grad
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith(top) for n in changed)
    assert any(n.startswith("trunk.") for n in changed)
    for task in suite.task_names:
        assert any(n.startswith(f"heads.{task}.") for n in changed), task
    metrics = trainer.evaluate()
    for key in ("eval_sent_accuracy", "eval_sim_pearson", "eval_hall_f1_micro", "eval_ner_f1"):
        assert key in metrics
    # each task was encoded once per split, never again during the epochs
    assert trainer.feature_cache.misses == 2 * len(suite.task_names)


def test_saved_partial_model_is_a_full_checkpoint_that_predicts_the_same(suite, tok, data, tmp_path):
    model = _model(suite)
    trainer = MultiTaskTrainer(model=model, args=_args(tmp_path, trainable_layers=2),
                               train_dataset={t: data[t]["train"] for t in suite.task_names}, processing_class=tok)
    trainer.train()
    texts = {"sent": ["good great the", "bad awful a"], "sim": [("good the", "great")], "hall": ["gene drug the cell"],
             "ner": [["the", "tumor", "cell"]]}
    model.eval()
    before = {t: model.predict(t, x, tokenizer=tok, return_scores=True) for t, x in texts.items()}
    trainer.save_model(str(tmp_path / "saved"))
    tok.save_pretrained(str(tmp_path / "saved"))
    reloaded = AutoModel.from_pretrained(str(tmp_path / "saved"))
    assert getattr(reloaded, "trainable_layers", None) is None  # an ordinary model: no cache, raw text in
    for name, p in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], p), name
    after = {t: reloaded.predict(t, x, return_scores=True) for t, x in texts.items()}
    assert repr(after) == repr(before)


@pytest.mark.slow
def test_train_group_evaluator_and_pvi_run_in_partial_mode(tmp_path, tok):
    from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator
    from hf_taskgroup.pvi.estimate import compute_pvi
    from hf_taskgroup.training.train import TrainSettings

    suite = tiny_suite(("classification", "token_classification"))
    settings = TrainSettings(finetune="partial", trainable_layers=1, num_train_epochs=1, per_device_train_batch_size=8,
                             max_length=32, learning_rate=5e-3)
    assert settings.to_dict()["trainable_layers"] == 1
    assert "trainable_layers" not in TrainSettings(finetune="full").to_dict()  # other modes' cache keys unchanged
    ev = make_suite_evaluator(suite, settings, tmp_path / "ev", tokenizer=tok,
                              model_factory=lambda infos: _model(suite.subset(list(infos)), seed=7))
    scores = ev(["sent", "ner"])
    assert {"loss", "accuracy", "test_loss"} <= set(scores["sent"]) and "f1" in scores["ner"]

    seen: list[int] = []

    def factory(infos, role):
        m = _model(suite.subset(list(infos)), seed=11)
        m.encoder.register_forward_pre_hook(lambda mod, a, kw: seen.append(int(kw["input_ids"].shape[0])),
                                            with_kwargs=True)
        return m

    res = compute_pvi(suite.subset(["sent"]), tokenizer=tok, settings=settings, null="trained", output_dir=tmp_path / "pvi",
                      model_factory=factory, progress=False)["sent"]
    raw = suite["sent"].load()
    # the lower layers ran once per example (+ the null input once); training and scoring read the cached states
    assert sum(seen) == len(raw["train"]) + len(raw["validation"]) + len(raw["test"]) + 1
    assert set(res.scores) == {"validation", "test"}
    assert res.summary["settings"]["trainable_layers"] == 1


@pytest.mark.slow
def test_tiny_pipeline_runs_in_partial_mode_and_saves_full_models(tmp_path, tok):
    import json

    from hf_taskgroup.pipeline import Pipeline, PipelineConfig

    suite = tiny_suite(("classification", "regression"))

    def factory(infos, seed):
        return _model(suite.subset(list(infos)), seed=seed)

    cfg = PipelineConfig(output_dir=str(tmp_path / "run"), methods=["pvi", "all_in_one"], finetune="partial",
                         trainable_layers=2, num_train_epochs=1, batch_size=8, trunk_hidden_sizes=[8], max_length=32,
                         pvi_null="analytic", pvi_num_train_epochs=1)
    result = Pipeline(cfg, suite=suite, tokenizer=tok, model_factory=factory, progress=False).run()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["trainable_layers"] == 2
    assert set(result.evaluations["all_in_one"].rows) == set(suite.task_names)
    folder = next(iter(result.model_dirs.values()))
    model = AutoModel.from_pretrained(str(folder))
    assert model.predict("sent", ["good great the"], tokenizer=tok)[0] in ("pos", "neg")
    with pytest.raises(ValueError, match="trainable_layers"):
        PipelineConfig(finetune="partial", trainable_layers=0)
