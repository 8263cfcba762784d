"""hf_taskgroup.llm: prompts, label scoring, parsing, metrics and resume, with tiny causal LMs built here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from utils import WORDS, tiny_suite, tiny_tokenizer

from hf_taskgroup.data.tasks import TaskValidationError
from hf_taskgroup.llm import LLMConfig, PromptBuilder, evaluate_llm, format_llm_table, parse_number
from hf_taskgroup.llm.prompts import format_mentions, mentions_to_tags
from hf_taskgroup.llm.scoring import continuation_logprobs

EXTRA = "pos neg yes no answer text task none b i gene drug tumor sim sent hall ner 0 1 2 3".split()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer([*WORDS, *EXTRA])


def tiny_lm(tok, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    return GPT2LMHeadModel(cfg).eval()


def rigged_lm(tok, favourite: str) -> GPT2LMHeadModel:
    """A causal LM that puts almost all probability on ``favourite`` at every position."""
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=16, n_layer=1, n_head=2, tie_word_embeddings=False)
    model = GPT2LMHeadModel(cfg).eval()
    target = tok.convert_tokens_to_ids(favourite)
    with torch.no_grad():
        unit = torch.zeros(16)
        unit[0] = 1.0
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(unit)  # every hidden state becomes the same unit vector
        model.lm_head.weight.zero_()
        model.lm_head.weight[target] = 20 * unit
    return model


def test_prompt_contains_the_demonstrations_and_their_answers():
    suite = tiny_suite(("classification",))
    task = suite["sent"]
    builder = PromptBuilder(task, shots=2, seed=3)
    query = {"text": "good cell", "label": "pos"}
    prefix = builder.prefix(query)
    assert len(builder.demos) == 2
    for demo in builder.demos:
        assert f"Text: {demo['text']}\nAnswer: {demo['label']}" in prefix
    assert prefix.endswith("Text: good cell\nAnswer:")
    assert "neg, pos" in prefix  # the label words are listed in the instruction
    assert PromptBuilder(task, shots=2, seed=3).demos == builder.demos  # fixed seed, same draw
    assert PromptBuilder(task, shots=0).demos == []


def test_label_words_and_prompt_override_the_defaults():
    suite = tiny_suite(("classification",))
    task = suite["sent"]
    task.label_words = {"neg": "no", "pos": "yes"}
    task.prompt = "Is the text positive?"
    builder = PromptBuilder(task, shots=1, seed=0)
    prefix = builder.prefix({"text": "bad", "label": "neg"})
    assert prefix.startswith("Is the text positive?")
    assert builder.label_words == ["no", "yes"]
    assert prefix.split("Answer: ")[1].split("\n")[0] in ("no", "yes")
    task.label_words = ["only-one"]
    with pytest.raises(ValueError, match="label_words has 1 entries for 2 labels"):
        PromptBuilder(task)


def test_label_scoring_picks_the_label_the_model_prefers(tok):
    suite = tiny_suite(("classification",))
    for favourite in ("pos", "neg"):
        results = evaluate_llm(suite, LLMConfig(model="rigged", shots=1, max_examples=8), model=rigged_lm(tok, favourite),
                               tokenizer=tok, output_dir=None, progress=False)
        test = suite["sent"].load()["test"].shuffle(seed=0).select(range(8))
        expected = np.mean([y == favourite for y in test["label"]])
        assert results["sent"].score == pytest.approx(expected)


def test_continuation_logprobs_are_the_models_log_likelihood(tok):
    model = tiny_lm(tok)
    prefix, cont = "the cell", " good tumor"
    got = continuation_logprobs(model, tok, [(prefix, cont), ("a", " bad")], normalize=False)
    ids = tok(prefix)["input_ids"] + tok(cont, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    n = len(tok(prefix)["input_ids"])
    want = sum(logp[p - 1, ids[p]].item() for p in range(n, len(ids)))
    assert got[0] == pytest.approx(want, abs=1e-5)
    # batching with padding does not change a sequence's score
    alone = continuation_logprobs(model, tok, [("a", " bad")], normalize=False)
    assert got[1] == pytest.approx(alone[0], abs=1e-5)


def test_every_task_type_gets_its_primary_metric_and_a_saved_prediction_dataset(tok, tmp_path):
    import datasets

    suite = tiny_suite()
    config = LLMConfig(model="tiny", shots=1, max_examples=6, max_new_tokens=4)
    results = evaluate_llm(suite, config, model=tiny_lm(tok), tokenizer=tok, output_dir=tmp_path, progress=False)
    assert list(results) == suite.task_names
    for name, res in results.items():
        assert res.num_examples == 6
        assert math.isfinite(res.score), (name, res.metrics)
        assert res.primary_metric in res.metrics
        preds = datasets.load_from_disk(str(tmp_path / name / "predictions"))
        assert len(preds) == 6 and "prediction" in preds.column_names
    assert results["sim"].unparseable_fraction is not None
    assert results["ner"].approximate
    table = format_llm_table(results)
    assert "approximate" in table and "sent" in table


def test_a_second_run_reuses_saved_predictions_and_a_changed_setting_recomputes(tok, tmp_path):
    suite = tiny_suite(("classification",))
    config = LLMConfig(model="tiny", shots=0, max_examples=4)
    first = evaluate_llm(suite, config, model=tiny_lm(tok), tokenizer=tok, output_dir=tmp_path, progress=False)

    class Exploding(torch.nn.Module):
        def parameters(self):  # noqa: D401
            raise AssertionError("the model must not be used when the predictions are reused")

    again = evaluate_llm(suite, config, model=Exploding(), tokenizer=tok, output_dir=tmp_path, progress=False)
    assert again["sent"].metrics == first["sent"].metrics
    with pytest.raises(AssertionError, match="must not be used"):
        evaluate_llm(suite, LLMConfig(model="tiny", shots=1, max_examples=4), model=Exploding(), tokenizer=tok,
                     output_dir=tmp_path, progress=False)


def test_prompts_longer_than_the_context_keep_their_end(tok):
    cfg = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(cfg).eval()
    long_prefix = " ".join(["the cell"] * 40)
    scores = continuation_logprobs(model, tok, [(long_prefix, " good")], max_prompt_tokens=1024)
    assert np.isfinite(scores).all()
    from hf_taskgroup.llm.scoring import generate

    out = generate(model, tok, [long_prefix], max_new_tokens=4, max_prompt_tokens=1024)
    assert isinstance(out[0], str)


def test_parse_number_and_bad_settings():
    assert parse_number("The score is 3.5 out of 5") == 3.5
    assert parse_number("-.5") == -0.5
    assert parse_number("no idea") is None
    assert parse_number("1e999") is None
    with pytest.raises(ValueError, match="--shots must be >= 0"):
        LLMConfig(model="m", shots=-1)
    with pytest.raises(ValueError, match="--max_examples must be >= 1"):
        LLMConfig(model="m", max_examples=0)


def test_missing_split_is_refused_before_any_model_is_loaded(tok):
    suite = tiny_suite(("classification",))
    with pytest.raises(TaskValidationError, match="task 'sent': no split 'dev2'"):
        evaluate_llm(suite, LLMConfig(model="/nonexistent/model", split="dev2"), output_dir=None)


def test_missing_model_folder_is_named():
    from hf_taskgroup.llm import load_causal_lm

    with pytest.raises(FileNotFoundError, match="model folder not found: /nonexistent/model"):
        load_causal_lm(LLMConfig(model="/nonexistent/model"))


def test_mentions_round_trip_to_bio_tags():
    tokens = ["the", "tumor", "cell", "of", "a", "tumor"]
    tags = ["O", "B", "I", "O", "O", "B"]
    text = format_mentions(tokens, tags, ["entity"])
    assert text == "tumor cell | tumor"
    assert mentions_to_tags(text, tokens, ["entity"], ["O", "B", "I"]) == tags
    assert mentions_to_tags("none", tokens, ["entity"], ["O", "B", "I"]) == ["O"] * 6
    typed = ["O", "B-Disease", "I-Disease", "O", "O", "B-Gene"]
    kinds = ["Disease", "Gene"]
    text = format_mentions(tokens, typed, kinds)
    assert text == "tumor cell (Disease) | tumor (Gene)"
    names = ["O", "B-Disease", "I-Disease", "B-Gene", "I-Gene"]
    # "tumor" alone matches both occurrences not already tagged: the second one
    assert mentions_to_tags(text, tokens, kinds, names) == typed


def test_pipeline_llm_option_adds_an_llm_column_against_single_task(tok, tmp_path):
    from test_pipeline import _pipeline

    from hf_taskgroup.config import ConfigError, PipelineConfig

    lm_dir = tmp_path / "lm"
    tiny_lm(tok).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    result = _pipeline(tmp_path, recommend=False, llm={"model": str(lm_dir), "shots": 1, "max_examples": 4}).run()
    llm = result.evaluations["llm"]
    single = result.evaluations["pvi"]
    for task, row in llm.rows.items():
        saved = json.loads((tmp_path / "run" / "llm" / task / "summary.json").read_text())["result"]
        assert row.mtl_mean == pytest.approx(saved["metrics"][saved["primary_metric"]])
        assert saved["split"] == "test"  # the run's evaluation split
        assert row.stl_mean == single.rows[task].stl_mean
        assert row.gain == pytest.approx(row.mtl_mean - row.stl_mean)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "llm" in report["methods"]
    with pytest.raises(ConfigError, match="--llm: unknown setting"):
        PipelineConfig(llm={"model": "m", "shot": 2})
