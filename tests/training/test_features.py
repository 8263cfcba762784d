import numpy as np
from utils import tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.training.features import FeatureCache, inputs_digest


def test_cache_is_keyed_by_content_not_by_dataset_object_or_name():
    suite = tiny_suite(("classification",))
    tok = tiny_tokenizer()
    model = tiny_model(suite).eval()
    a = suite.tokenize(tok)["sent"]["train"]
    b = suite.tokenize(tok)["sent"]["train"].map(lambda ex: ex)  # another object, same tokens
    cache = FeatureCache()
    fa = cache.add_features(model, "sent", "train", a, tokenizer=tok)
    fb = cache.add_features(model, "sent", "other-name", b, tokenizer=tok)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_allclose(np.asarray(fa["features"]), np.asarray(fb["features"]))
    # a different encoder (other weights) is a miss
    cache.add_features(tiny_model(suite, seed=5).eval(), "sent", "train", a, tokenizer=tok)
    assert cache.misses == 2


def test_inputs_digest_changes_with_tokens():
    assert inputs_digest({"input_ids": [[1, 2], [3]]}) != inputs_digest({"input_ids": [[1], [2, 3]]})
    assert inputs_digest({"input_ids": [[1, 2]]}) == inputs_digest({"input_ids": [np.array([1, 2])]})


def test_pooled_features_persist_on_disk_across_cache_instances(tmp_path, monkeypatch):
    suite = tiny_suite(("classification", "token_classification"))
    tok = tiny_tokenizer()
    model = tiny_model(suite).eval()
    data = suite.tokenize(tok)
    first = FeatureCache(cache_dir=tmp_path / "feats")
    fa = first.add_features(model, "sent", "train", data["sent"]["train"], tokenizer=tok)
    first.add_features(model, "ner", "train", data["ner"]["train"], tokenizer=tok)
    files = list((tmp_path / "feats").glob("*.npy"))
    assert len(files) == 1 and "-pooled-" in files[0].name  # token-level states stay in memory only
    monkeypatch.setenv("HF_TASKGROUP_FEATURE_CACHE", str(tmp_path / "feats"))
    second = FeatureCache()  # a new process: the folder comes from the environment
    fb = second.add_features(model, "sent", "train", data["sent"]["train"], tokenizer=tok)
    assert (second.misses, second.disk_hits) == (0, 1)
    np.testing.assert_array_equal(np.asarray(fa["features"]), np.asarray(fb["features"]))
    # a torn file is ignored and rewritten
    files[0].write_bytes(b"not a numpy file")
    third = FeatureCache(cache_dir=tmp_path / "feats")
    fc = third.add_features(model, "sent", "train", data["sent"]["train"], tokenizer=tok)
    assert third.misses == 1
    np.testing.assert_allclose(np.asarray(fa["features"]), np.asarray(fc["features"]), rtol=1e-6)
    assert np.load(files[0]).shape[0] == len(data["sent"]["train"])
