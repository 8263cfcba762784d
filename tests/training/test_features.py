import numpy as np
import pytest
from utils import tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.artifacts import ArtifactStore, ArtifactWarning
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
    assert (tmp_path / "feats" / f"{files[0].name}.manifest").is_file()
    monkeypatch.setenv("HF_TASKGROUP_FEATURE_CACHE", str(tmp_path / "feats"))
    second = FeatureCache()  # a new process: the folder comes from the environment
    fb = second.add_features(model, "sent", "train", data["sent"]["train"], tokenizer=tok)
    assert (second.misses, second.disk_hits) == (0, 1)
    np.testing.assert_array_equal(np.asarray(fa["features"]), np.asarray(fb["features"]))
    # a torn file is named in one warning, ignored and rewritten
    files[0].write_bytes(b"not a numpy file")
    third = FeatureCache(cache_dir=tmp_path / "feats")
    with pytest.warns(ArtifactWarning, match=str(files[0])):
        fc = third.add_features(model, "sent", "train", data["sent"]["train"], tokenizer=tok)
    assert third.misses == 1
    np.testing.assert_allclose(np.asarray(fa["features"]), np.asarray(fc["features"]), rtol=1e-6)
    assert np.load(files[0]).shape[0] == len(data["sent"]["train"])


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # a bit of the last float: still a loadable .npy of the same shape, another value
    path.write_bytes(bytes(data))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 8)


@pytest.mark.parametrize("damage", [_flip_last_byte, _truncate], ids=["flipped-bit", "truncated"])
def test_damaged_feature_file_is_named_and_encoded_again(tmp_path, damage):
    suite = tiny_suite(("classification",))
    tok = tiny_tokenizer()
    model = tiny_model(suite).eval()
    ds = suite.tokenize(tok)["sent"]["train"]
    fresh = np.asarray(FeatureCache().add_features(model, "sent", "train", ds, tokenizer=tok)["features"])
    FeatureCache(cache_dir=tmp_path).add_features(model, "sent", "train", ds, tokenizer=tok)
    (path,) = tmp_path.glob("*.npy")
    damage(path)
    cache = FeatureCache(cache_dir=tmp_path)
    with pytest.warns(ArtifactWarning) as caught:
        got = np.asarray(cache.add_features(model, "sent", "train", ds, tokenizer=tok)["features"])
    assert [str(path) in str(w.message) for w in caught if issubclass(w.category, ArtifactWarning)] == [True]
    assert (cache.misses, cache.disk_hits) == (1, 0)
    np.testing.assert_array_equal(got, fresh)
    # the rewritten file verifies: reused by the next cache, and listed in a collecting store
    run = ArtifactStore(tmp_path)
    with run.collecting():
        again = FeatureCache(cache_dir=tmp_path)
        again.add_features(model, "sent", "train", ds, tokenizer=tok)
    assert (again.misses, again.disk_hits) == (0, 1) and run.reused == [path.name]
