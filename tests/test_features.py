import numpy as np
from utils import tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.features import FeatureCache, inputs_digest


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
