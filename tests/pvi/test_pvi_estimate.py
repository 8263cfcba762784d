"""hf_taskgroup.pvi.estimate (compute_pvi), .inference, .fitting and .artifacts with tiny offline models."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import datasets
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from utils import classification_dataset, tiny_bert_config, tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.pvi.artifacts import PVIColumnExistsError
from hf_taskgroup.pvi.estimate import compute_pvi, format_pvi_table
from hf_taskgroup.pvi.inference import TaskRows, predict_outputs, scores_from_outputs
from hf_taskgroup.pvi.scores import PVICollapseWarning
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel
from hf_taskgroup.training.train import TrainSettings

LOG2 = math.log2
SUMMARY_KEYS = {"task", "task_type", "settings", "v_information", "accuracy", "collapsed", "num_examples",
                "library_version", "seconds"}
pytestmark = pytest.mark.filterwarnings("ignore::hf_taskgroup.pvi.scores.PVICollapseWarning")
SETTINGS_KEYS = {"model", "finetune", "epochs", "null", "heldout", "folds", "seed", "max_length", "learning_rate"}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


class Factory:
    """model_factory for compute_pvi: tiny models, counts builds per role, optional fixed head logits."""

    def __init__(self, suite, fixed_logits=None, fail_on_task=None):
        self.suite, self.fixed_logits, self.fail_on_task = suite, fixed_logits, fail_on_task
        self.roles: list[tuple[str, str]] = []
        self.eval_calls: dict[tuple[str, str], list[int]] = defaultdict(list)

    def __call__(self, infos, role):
        task = next(iter(infos))
        if task == self.fail_on_task:
            raise RuntimeError(f"injected failure while building a model for {task}")
        self.roles.append((task, role))
        model = tiny_model(self.suite.subset([task]))
        if self.fixed_logits is not None:
            head = model.heads[task].out_proj
            with torch.no_grad():
                head.weight.zero_()
                head.bias.copy_(torch.tensor(self.fixed_logits[(task, role.split(":")[0])]))
        calls = self.eval_calls[(task, role)]

        def hook(module, args, kwargs):
            if not module.training:
                x = kwargs.get("input_ids", kwargs.get("features"))
                calls.append(int(x.shape[0]))

        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model


def _settings(**kw):
    base = dict(finetune="full", num_train_epochs=1, per_device_train_batch_size=8)
    base.update(kw)
    return TrainSettings(**base)


# ------------------------------------------------------------------------------ scoring path vs hand-computed bits
def _identity_head_model(task_type: str, num_labels: int):
    infos = {"t": {"type": task_type, "num_labels": num_labels, "id2label": None}}
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(), tasks=infos, classifier_dropout=0.0))
    with torch.no_grad():  # logits = the first num_labels feature dimensions
        model.heads["t"].out_proj.weight.copy_(torch.eye(num_labels, 16))
        model.heads["t"].out_proj.bias.zero_()
    return model


def _features(rows):
    out = []
    for r in rows:
        r = np.asarray(r, dtype=np.float32)
        pad = np.zeros((*r.shape[:-1], 16), dtype=np.float32)
        pad[..., : r.shape[-1]] = r
        out.append(pad)
    return out


def test_classification_pvi_through_scoring_path_equals_hand_computed_bits():
    model = _identity_head_model("classification", 2)
    rows = TaskRows({"features": _features([np.log([0.8, 0.2]), np.log([0.25, 0.75]), np.log([0.6, 0.4])]),
                     "labels": [0, 0, 1]})
    outputs = predict_outputs(model, rows, task="t", progress=False)
    scores = scores_from_outputs("classification", outputs, rows.labels, {"null_logits": np.log([0.5, 0.5])})
    expected = [LOG2(0.8) + 1, LOG2(0.25) + 1, LOG2(0.4) + 1]
    np.testing.assert_allclose(scores.pvi, expected, atol=1e-6)
    np.testing.assert_allclose(scores.h_yb, [1.0, 1.0, 1.0], atol=1e-9)
    assert scores.correct.tolist() == [True, False, False] and not scores.collapsed


def test_multilabel_pvi_through_scoring_path_equals_hand_computed_bits():
    model = _identity_head_model("multilabel", 2)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    rows = TaskRows({"features": _features([[logit(0.9), logit(0.2)], [logit(0.3), logit(0.6)]]),
                     "labels": [[1.0, 0.0], [1.0, 1.0]]})
    outputs = predict_outputs(model, rows, task="t", progress=False)
    null = {"null_logits": np.array([logit(0.5), logit(0.25)])}
    scores = scores_from_outputs("multilabel", outputs, rows.labels, null)
    expected = [LOG2(0.9) + LOG2(0.8) - LOG2(0.5) - LOG2(0.75), LOG2(0.3) + LOG2(0.6) - LOG2(0.5) - LOG2(0.25)]
    np.testing.assert_allclose(scores.pvi, expected, atol=1e-6)


def test_regression_pvi_through_scoring_path_equals_hand_computed_bits():
    model = _identity_head_model("regression", 1)
    rows = TaskRows({"features": _features([[1.0], [3.0]]), "labels": [1.5, 0.0]})
    outputs = predict_outputs(model, rows, task="t", progress=False)
    scores = scores_from_outputs("regression", outputs, rows.labels, {"null_mean": 0.0, "null_sigma": 2.0}, sigma_x=1.0)

    def log2_density(y, mean, sigma):
        return (-0.5 * ((y - mean) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))) / math.log(2)

    expected = [log2_density(1.5, 1.0, 1.0) - log2_density(1.5, 0.0, 2.0),
                log2_density(0.0, 3.0, 1.0) - log2_density(0.0, 0.0, 2.0)]
    np.testing.assert_allclose(scores.pvi, expected, atol=1e-6)


def test_token_pvi_through_scoring_path_averages_labelled_tokens():
    model = _identity_head_model("token_classification", 2)
    ex0 = np.log([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])  # CLS, w1, w2, SEP
    ex1 = np.log([[0.5, 0.5], [0.7, 0.3], [0.5, 0.5]])
    rows = TaskRows({"features": _features([ex0, ex1]), "labels": [[-100, 0, 1, -100], [-100, 1, -100]]})
    outputs = predict_outputs(model, rows, task="t", progress=False)
    prior = {"null_logits": np.log([0.75, 0.25])}
    scores = scores_from_outputs("token_classification", outputs, rows.labels, prior)
    expected0 = ((LOG2(0.9) - LOG2(0.75)) + (LOG2(0.8) - LOG2(0.25))) / 2
    expected1 = LOG2(0.3) - LOG2(0.25)
    np.testing.assert_allclose(scores.pvi, [expected0, expected1], atol=1e-6)


def test_sorted_batches_return_outputs_in_row_order(tok):
    suite = tiny_suite(("classification",))
    data = suite.tokenize(tok, 32)["sent"]["validation"]
    model = tiny_model(suite)
    rows = TaskRows.from_dataset(data)
    sorted_out = predict_outputs(model, rows, task="sent", batch_size=3, progress=False)
    one_by_one = predict_outputs(model, rows, task="sent", batch_size=1, sort_by_length=False, progress=False)
    np.testing.assert_allclose(np.stack(sorted_out), np.stack(one_by_one), atol=1e-5)


# ------------------------------------------------------------------------------ compute_pvi end to end
def test_compute_pvi_with_fixed_logits_and_analytic_null_equals_hand_computed(tmp_path, tok):
    suite = tiny_suite(("classification",))
    factory = Factory(suite, fixed_logits={("sent", "x"): [math.log(0.7), math.log(0.3)]})
    res = compute_pvi(suite, tokenizer=tok, settings=_settings(learning_rate=1e-30), null="analytic",
                      output_dir=tmp_path, model_factory=factory, progress=False)["sent"]
    raw = suite["sent"].load()
    names = sorted(set(raw["train"]["label"]))
    counts = [list(raw["train"]["label"]).count(n) for n in names]
    prior = [(c + 1) / (sum(counts) + len(names)) for c in counts]  # add-one smoothed label frequencies
    for split in ("validation", "test"):
        y = [names.index(v) for v in raw[split]["label"]]
        expected = [LOG2([0.7, 0.3][k]) - LOG2(prior[k]) for k in y]
        np.testing.assert_allclose(res.scores[split].pvi, expected, atol=1e-5)
        np.testing.assert_allclose(res.scores[split].h_yb, [-LOG2(prior[k]) for k in y], atol=1e-9)
        assert res.summary["v_information"][split] == pytest.approx(float(np.mean(expected)), abs=1e-5)


def test_analytic_null_regression_and_token_are_label_moments_and_tag_prior(tmp_path, tok):
    suite = tiny_suite(("regression", "token_classification"))
    res = compute_pvi(suite, tokenizer=tok, settings=_settings(), null="analytic", output_dir=tmp_path,
                      model_factory=Factory(suite), progress=False)
    raw = suite["sim"].load()
    ytr, yte = np.array(raw["train"]["label"]), np.array(raw["test"]["label"])
    mu, sd = ytr.mean(), ytr.std()
    h_yb = (0.5 * math.log(2 * math.pi) + math.log(sd) + 0.5 * ((yte - mu) / sd) ** 2) / math.log(2)
    np.testing.assert_allclose(res["sim"].scores["test"].h_yb, h_yb, atol=1e-6)

    ner = suite["ner"].load()
    tags = [t for row in ner["train"]["label"] for t in row]  # one tag per word (first sub-word)
    names = sorted(set(tags))
    prior = {n: (tags.count(n) + 1) / (len(tags) + len(names)) for n in names}
    expected = [np.mean([-LOG2(prior[t]) for t in row]) for row in ner["test"]["label"]]
    np.testing.assert_allclose(res["ner"].scores["test"].h_yb, expected, atol=1e-6)
    assert res["ner"].summary["settings"]["null"] == "analytic"


def test_trained_null_runs_one_forward_pass_per_task(tmp_path, tok):
    suite = tiny_suite(("classification", "regression", "multilabel"))
    factory = Factory(suite)
    compute_pvi(suite, tokenizer=tok, settings=_settings(), null="trained", output_dir=tmp_path,
                model_factory=factory, progress=False)
    for task in suite.task_names:
        assert factory.eval_calls[(task, "null")] == [1], task  # one forward pass, batch of one null input
        assert sum(factory.eval_calls[(task, "x")]) >= 32  # g_x scores validation + test (16 + 16)


def test_trained_null_output_is_used_for_h_yb(tmp_path, tok):
    suite = tiny_suite(("classification",))
    factory = Factory(suite, fixed_logits={("sent", "x"): [0.0, 0.0], ("sent", "null"): [math.log(0.9), math.log(0.1)]})
    res = compute_pvi(suite, tokenizer=tok, settings=_settings(learning_rate=1e-30), null="trained",
                      output_dir=tmp_path, model_factory=factory, progress=False)["sent"]
    names = sorted(set(suite["sent"].load()["train"]["label"]))
    y = [names.index(v) for v in suite["sent"].load()["test"]["label"]]
    np.testing.assert_allclose(res.scores["test"].h_yb, [-LOG2([0.9, 0.1][k]) for k in y], atol=1e-5)


def test_frozen_mode_encodes_every_example_once(tmp_path, tok):
    suite = tiny_suite(("classification",))
    seen: list[int] = []

    def factory(infos, role):
        model = tiny_model(suite)
        model.encoder.register_forward_pre_hook(lambda m, a, kw: seen.append(int(kw["input_ids"].shape[0])),
                                                with_kwargs=True)
        return model

    res = compute_pvi(suite, tokenizer=tok, settings=_settings(finetune="frozen"), null="trained", heldout="kfold",
                      folds=3, output_dir=tmp_path, model_factory=factory, progress=False)["sent"]
    raw = suite["sent"].load()
    null_models = 3 + 1  # one null input encoded per null model (3 folds + all of train)
    assert sum(seen) == len(raw["train"]) + len(raw["validation"]) + len(raw["test"]) + null_models
    assert set(res.scores) == {"train", "validation", "test"}


def _unique_word_suite(n_train=24, n_eval=6):
    """Every example carries its own word, so a model's inputs reveal which examples it saw."""
    words = [f"w{i}" for i in range(n_train + 2 * n_eval)]
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", *words])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")

    def split(start, n):
        return datasets.Dataset.from_dict({"text": [f"w{i} {'good' if i % 2 else 'bad'}" for i in range(start, start + n)],
                                           "label": ["pos" if i % 2 else "neg" for i in range(start, start + n)]})

    data = datasets.DatasetDict({"train": split(0, n_train), "validation": split(n_train, n_eval),
                                 "test": split(n_train + n_eval, n_eval)})
    suite = TaskSuite([TaskSpec(name="uniq", type="classification", text_columns=["text"], data=data)])
    return suite, tokenizer, {vocab[w]: int(w[1:]) for w in words}


def test_kfold_never_scores_an_example_with_a_model_that_saw_it(tmp_path):
    suite, tokenizer, example_of = _unique_word_suite()
    seen = defaultdict(lambda: {"train": set(), "eval": set()})

    def factory(infos, role):
        model = MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(vocab_size=64), tasks=infos,
                                               classifier_dropout=0.0))

        def hook(module, args, kwargs):
            ids = {example_of[i] for i in kwargs["input_ids"].reshape(-1).tolist() if i in example_of}
            seen[role]["train" if module.training else "eval"].update(ids)

        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model

    res = compute_pvi(suite, tokenizer=tokenizer, settings=_settings(), null="trained", heldout="kfold", folds=4,
                      output_dir=tmp_path, model_factory=factory, progress=False)["uniq"]
    fold_roles = [r for r in seen if r.startswith("x:fold")]
    assert len(fold_roles) == 4
    for role, ids in seen.items():  # by the actual inputs every model received
        if role.startswith("null"):
            assert not ids["train"] and not ids["eval"], role  # null inputs carry no example
        else:
            assert ids["train"] and not ids["train"] & ids["eval"], role
    assert set().union(*(seen[r]["eval"] for r in fold_roles)) == set(range(24))  # every train row scored out of fold
    for record in res.models:  # and by the ids compute_pvi records
        assert not set(record["train_row_ids"]) & set(record["scored"].get("train", []))
    scored = sorted(i for r in res.models for i in r["scored"].get("train", []))
    assert scored == list(range(24))  # each train row exactly once
    assert res.fold_of is not None and sorted(np.bincount(res.fold_of).tolist()) == [6, 6, 6, 6]
    assert res.summary["num_examples"] == {"train": 24, "validation": 6, "test": 6}
    assert res.trainings == 2 * (4 + 1)  # g_x and null per fold, plus both on all of train for dev/test


def test_collapsed_model_is_flagged_and_warned(tmp_path, tok):
    suite = tiny_suite(("classification",))
    factory = Factory(suite, fixed_logits={("sent", "x"): [2.0, -2.0]})  # always class 0
    with pytest.warns(PVICollapseWarning, match="task 'sent': g_x collapsed on validation, test") as caught:
        res = compute_pvi(suite, tokenizer=tok, settings=_settings(learning_rate=1e-30), null="analytic",
                          output_dir=tmp_path, model_factory=factory, progress=False)["sent"]
    assert len([w for w in caught if w.category is PVICollapseWarning]) == 1  # one warning per task, all splits
    assert res.summary["collapsed"] == {"validation": True, "test": True}
    saved = json.loads((tmp_path / "sent" / "summary.json").read_text())
    assert saved["collapsed"] == {"validation": True, "test": True}
    assert "!" in format_pvi_table({"sent": res})


def test_summary_and_dataset_artifacts(tmp_path, tok):
    suite = tiny_suite(("classification",))
    res = compute_pvi(suite, tokenizer=tok, settings=_settings(), null="analytic", output_dir=tmp_path,
                      model_factory=Factory(suite), progress=False)["sent"]
    summary = json.loads((tmp_path / "sent" / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary) and SETTINGS_KEYS <= set(summary["settings"])
    assert summary["task"] == "sent" and summary["task_type"] == "classification"
    assert summary["num_examples"] == {"validation": 16, "test": 16}
    assert summary["settings"]["heldout"] == "dev_test" and summary["settings"]["null"] == "analytic"
    assert summary["v_information"]["test"] == pytest.approx(res.scores["test"].v_information())
    assert not [p.name for p in (tmp_path / "sent").iterdir() if p.name.startswith(".")]  # no temp leftovers
    saved = datasets.DatasetDict.load_from_disk(str(tmp_path / "sent" / "dataset"))
    for split in ("train", "validation", "test"):
        assert {"text", "label", "pvi", "pvi_h_yx", "pvi_h_yb", "pvi_correct", "pvi_prediction"} <= set(
            saved[split].column_names)
    assert saved["test"]["text"][:] == suite["sent"].load()["test"]["text"][:]
    np.testing.assert_allclose(saved["test"]["pvi"][:], res.scores["test"].pvi)
    assert set(saved["train"]["pvi"][:]) == {None}  # not scored: rows kept, PVI columns null


def test_resume_skips_finished_tasks_and_recomputes_changed_settings(tmp_path, tok):
    suite = tiny_suite(("classification", "regression"))
    factory = Factory(suite)
    run = dict(tokenizer=tok, null="trained", output_dir=tmp_path, model_factory=factory, progress=False)
    first = compute_pvi(suite, settings=_settings(), **run)
    assert len(factory.roles) == 4  # g_x + null for 2 tasks
    again = compute_pvi(suite, settings=_settings(), **run)
    assert len(factory.roles) == 4 and all(r.resumed for r in again.values())
    np.testing.assert_allclose(again["sim"].scores["test"].pvi, first["sim"].scores["test"].pvi)
    compute_pvi(suite, settings=_settings(num_train_epochs=2), tasks=["sent"], **run)  # sent's settings change
    assert factory.roles[4:] == [("sent", "x"), ("sent", "null")]
    assert json.loads((tmp_path / "sent" / "summary.json").read_text())["settings"]["epochs"] == 2
    back = compute_pvi(suite, settings=_settings(), **run)  # sent changed again; sim is still finished
    assert factory.roles[6:] == [("sent", "x"), ("sent", "null")]
    assert back["sim"].resumed and not back["sent"].resumed


def test_killed_run_keeps_finished_task_artifacts(tmp_path, tok):
    from hf_taskgroup.publishing.pvi_dataset import load_pvi_artifacts

    suite = tiny_suite(("classification", "regression"))
    with pytest.raises(RuntimeError, match="injected failure"):
        compute_pvi(suite, tokenizer=tok, settings=_settings(), null="analytic", output_dir=tmp_path,
                    model_factory=Factory(suite, fail_on_task="sim"), progress=False)
    artifacts = load_pvi_artifacts(tmp_path)  # what the Hub publisher reads
    assert list(artifacts) == ["sent"]
    assert not (tmp_path / "sim" / "summary.json").exists()
    factory = Factory(suite)
    res = compute_pvi(suite, tokenizer=tok, settings=_settings(), null="analytic", output_dir=tmp_path,
                      model_factory=factory, progress=False)
    assert res["sent"].resumed and [t for t, _ in factory.roles] == ["sim"]


def test_existing_pvi_column_is_refused_before_training_unless_overwrite(tmp_path, tok):
    data = classification_dataset()
    data["test"] = data["test"].add_column("pvi", [9.0] * len(data["test"]))
    suite = TaskSuite([TaskSpec(name="sent", type="classification", text_columns=["text"], data=data)])
    factory = Factory(suite)
    with pytest.raises(PVIColumnExistsError, match="task 'sent'.*split 'test'.*overwrite"):
        compute_pvi(suite, tokenizer=tok, settings=_settings(), null="analytic", output_dir=tmp_path,
                    model_factory=factory, progress=False)
    assert factory.roles == []  # nothing trained
    res = compute_pvi(suite, tokenizer=tok, settings=_settings(), null="analytic", output_dir=tmp_path,
                      model_factory=factory, overwrite=True, progress=False)["sent"]
    saved = datasets.DatasetDict.load_from_disk(str(tmp_path / "sent" / "dataset"))
    assert saved["test"].column_names.count("pvi") == 1
    np.testing.assert_allclose(saved["test"]["pvi"][:], res.scores["test"].pvi)


def test_option_errors_name_the_problem(tmp_path, tok):
    suite = tiny_suite(("classification",))
    kw = dict(tokenizer=tok, output_dir=tmp_path, model_factory=Factory(suite), progress=False)
    with pytest.raises(ValueError, match="null must be one of"):
        compute_pvi(suite, null="prior", **kw)
    with pytest.raises(ValueError, match="'train'"):
        compute_pvi(suite, splits=("train", "test"), **kw)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        compute_pvi(suite, heldout="kfold", folds=1, **kw)
    with pytest.raises(ValueError, match="has none of the splits"):
        compute_pvi(suite, splits=("dev2",), **kw)
