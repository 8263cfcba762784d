"""hf_taskgroup.training.predict / MultiTaskModel.predict: inputs per head type, label names out, batching, tokenizer."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModel
from utils import tiny_model, tiny_suite, tiny_tokenizer

import hf_taskgroup  # noqa: F401  (registers the Auto classes)
from hf_taskgroup.training.predict import _decode_words, predict

TEXTS = ["good great the", "bad", "it was very poor and sad", "nice"]
PAIRS = [("good good the", "great"), ("good", "great great great")]
WORDS = [["tumor", "cell", "the"], ["patient"], ["a", "dose", "of", "tumor", "cell"]]


@pytest.fixture(scope="module")
def model():
    return tiny_model(tiny_suite(), trunk=(8,))


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _force(model, task, bias):
    """Make head ``task`` ignore its input and output ``bias``."""
    head = model.heads[task].out_proj
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor(bias, dtype=head.bias.dtype))


def test_each_head_type_returns_label_names(model, tok):
    labels = model.config.tasks
    sent = model.predict("sent", TEXTS, tokenizer=tok)
    assert len(sent) == len(TEXTS) and set(sent) <= set(labels["sent"]["id2label"])
    hall = model.predict("hall", TEXTS, tokenizer=tok)
    assert all(isinstance(x, list) and set(x) <= set(labels["hall"]["id2label"]) for x in hall)
    sim = model.predict("sim", PAIRS, tokenizer=tok)
    assert len(sim) == 2 and all(isinstance(x, float) for x in sim)
    ner = model.predict("ner", WORDS, tokenizer=tok)
    assert [len(x) for x in ner] == [len(w) for w in WORDS]
    assert {t for row in ner for t in row} <= set(labels["ner"]["id2label"])


def test_decoding_follows_the_head_outputs(tok):
    model = tiny_model(tiny_suite())
    _force(model, "sent", [0.0, 5.0])  # id2label ['neg', 'pos']
    _force(model, "hall", [3.0, -3.0, 0.5])  # ['drug', 'gene', 'tumor']: logit > 0 -> on
    _force(model, "sim", [3.5])
    _force(model, "ner", [-1.0, 4.0, 0.0])  # ['B', 'I', 'O']
    assert model.predict("sent", TEXTS, tokenizer=tok) == ["pos"] * 4
    assert model.predict("hall", TEXTS[:2], tokenizer=tok) == [["drug", "tumor"]] * 2
    assert model.predict("sim", PAIRS, tokenizer=tok) == [pytest.approx(3.5)] * 2
    assert model.predict("ner", WORDS, tokenizer=tok) == [["I"] * len(w) for w in WORDS]
    scores = model.predict("sent", ["good"], tokenizer=tok, return_scores=True)[0]
    assert set(scores) == {"neg", "pos"} and scores["pos"] == pytest.approx(torch.softmax(torch.tensor([0.0, 5.0]), 0)[1].item())
    multi = model.predict("hall", ["good"], tokenizer=tok, return_scores=True)[0]
    assert multi["gene"] == pytest.approx(torch.sigmoid(torch.tensor(-3.0)).item())


def test_batching_and_length_sorting_keep_the_input_order(tok):
    model = tiny_model(tiny_suite(), trunk=(8,))
    with torch.no_grad():
        for head in model.heads.values():
            head.out_proj.weight.mul_(300.0)  # make the scores of different inputs clearly different
    one_by_one = [model.predict("sent", [t], tokenizer=tok, return_scores=True)[0] for t in TEXTS]
    batched = model.predict("sent", TEXTS, tokenizer=tok, batch_size=3, return_scores=True)
    for single, batch in zip(one_by_one, batched):
        assert batch == pytest.approx(single, abs=2e-5)
    assert len({round(s["pos"], 4) for s in batched}) == len(TEXTS)  # the check above can tell inputs apart
    ner_single = [model.predict("ner", [w], tokenizer=tok, return_scores=True)[0] for w in WORDS]
    ner_batched = model.predict("ner", WORDS, tokenizer=tok, batch_size=2, return_scores=True)
    for single, batch in zip(ner_single, ner_batched):
        assert [b == pytest.approx(s, abs=2e-5) for b, s in zip(batch, single)] == [True] * len(single)


def test_token_tags_come_from_the_first_sub_word():
    logits = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0], [9.0, 0, 0], [0, 0, 9.0]])
    tags, missing = _decode_words(logits, [None, 0, 0, 1, None], 3, ["B", "I", "O"], scores=False)
    assert tags == ["I", "B", None] and missing == 1


def test_a_word_split_into_sub_words_gets_one_tag(model, tok):
    # the tokenizer's pre-tokenizer splits "tumor-cell" into three tokens; it is still one word
    (tags,) = model.predict("ner", [["tumor-cell", "the"]], tokenizer=tok)
    assert len(tags) == 2 and None not in tags


def test_truncated_words_get_none_and_a_warning(model, tok, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_taskgroup.training.predict"):
        (tags,) = predict(model, "ner", [["the"] * 10], tokenizer=tok, max_length=5)
    assert None not in tags[:3] and tags[3:] == [None] * 7
    assert "7 word(s) got no tag" in caplog.text


def test_unknown_task_lists_the_heads(model, tok):
    with pytest.raises(KeyError, match=r"no head for task 'nope'; heads: \['sent', 'sim', 'hall', 'ner'\]"):
        model.predict("nope", TEXTS, tokenizer=tok)


@pytest.mark.parametrize(
    "task, texts, match",
    [
        ("sent", "a single string", "takes a list of inputs"),
        ("ner", ["a sentence, not words"], "input 0 must be a list of words"),
        ("sent", [3], "input 0 must be a string or a"),
        ("sim", [("a", "b"), "c"], "mix of single texts and text pairs"),
    ],
)
def test_bad_inputs_name_the_task(model, tok, task, texts, match):
    with pytest.raises(TypeError, match=match):
        model.predict(task, texts, tokenizer=tok)


def test_empty_input_gives_empty_output(model, tok):
    assert model.predict("sent", [], tokenizer=tok) == []


def test_without_a_saved_tokenizer_the_error_says_to_pass_one(model):
    with pytest.raises(ValueError, match="pass tokenizer="):
        model.predict("sent", TEXTS)


def test_tokenizer_is_loaded_from_the_model_folder(model, tok, tmp_path):
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert loaded.predict("sent", TEXTS) == model.predict("sent", TEXTS, tokenizer=tok)


def test_mode_is_restored_and_no_gradients_are_kept(tok):
    model = tiny_model(tiny_suite(("classification",)), dropout=0.5)
    model.train()
    first = model.predict("sent", TEXTS, tokenizer=tok, return_scores=True)
    assert model.predict("sent", TEXTS, tokenizer=tok, return_scores=True) == first  # eval mode: no dropout
    assert model.training
    assert all(p.grad is None for p in model.parameters())
