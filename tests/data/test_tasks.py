import json

import datasets
import pytest
from utils import classification_dataset, dataset_dict, ner_rows, regression_rows, tiny_suite, tiny_tokenizer

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite, TaskValidationError


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(d):
    keys = list(d)
    return [dict(zip(keys, vals)) for vals in zip(*d.values())]


@pytest.fixture
def yaml_suite(tmp_path):
    from utils import sentiment_rows

    for split, n in (("train", 20), ("dev", 8), ("test", 8)):
        _write_jsonl(tmp_path / "sent" / f"{split}.jsonl", _rows(sentiment_rows(n, seed=len(split))))
        _write_jsonl(tmp_path / "sim" / f"{split}.jsonl", _rows(regression_rows(n, seed=len(split))))
    (tmp_path / "suite.yaml").write_text(
        """
name: mini
tasks:
  - name: sent
    type: classification
    text_columns: [text]
    data_files: {train: sent/train.jsonl, dev: sent/dev.jsonl, test: sent/test.jsonl}
  - name: sim
    type: regression
    text_columns: [text_a, text_b]
    data_files: {train: sim/train.jsonl, validation: sim/dev.jsonl, test: sim/test.jsonl}
"""
    )
    return tmp_path / "suite.yaml"


def test_yaml_suite_loads_resolves_paths_and_canonical_splits(yaml_suite):
    suite = TaskSuite.from_yaml(yaml_suite)
    assert suite.name == "mini"
    assert suite.task_names == ["sent", "sim"]
    suite.validate()
    dd = suite["sent"].load()
    assert set(dd) == {"train", "validation", "test"}  # dev -> validation
    assert len(dd["train"]) == 20
    assert suite.task_infos()["sent"] == {"type": "classification", "num_labels": 2, "id2label": ["neg", "pos"]}
    assert suite.task_infos()["sim"]["num_labels"] == 1


def test_python_suite_round_trips_through_yaml(tmp_path, yaml_suite):
    suite = TaskSuite.from_yaml(yaml_suite)
    out = tmp_path / "copy.yaml"
    suite.to_yaml(out)
    again = TaskSuite.from_yaml(out)
    assert again.task_names == suite.task_names
    assert again["sim"].text_columns == ["text_a", "text_b"]
    assert len(again["sent"].load()["test"]) == 8


def test_duplicate_task_names_rejected():
    spec = TaskSpec(name="a", data=classification_dataset())
    with pytest.raises(TaskValidationError, match="'a': duplicate task name"):
        TaskSuite([spec, TaskSpec(name="a", data=classification_dataset())])


def test_missing_column_names_task_split_and_column():
    dd = classification_dataset()
    dd["validation"] = dd["validation"].rename_column("label", "gold")
    suite = TaskSuite([TaskSpec(name="sent", data=dd)])
    with pytest.raises(TaskValidationError, match=r"task 'sent', split 'validation', column 'label': missing"):
        suite.validate()


def test_empty_split_rejected():
    dd = classification_dataset()
    dd["test"] = dd["test"].select([])
    with pytest.raises(TaskValidationError, match=r"task 'sent', split 'test': split is empty"):
        TaskSuite([TaskSpec(name="sent", data=dd)]).validate()


def test_unknown_label_in_dev_rejected():
    dd = classification_dataset()
    labels = list(dd["validation"]["label"])
    labels[3] = "neutral"
    dd["validation"] = datasets.Dataset.from_dict({"text": list(dd["validation"]["text"]), "label": labels})
    with pytest.raises(TaskValidationError, match=r"split 'validation', column 'label': unknown label 'neutral' at row 3"):
        TaskSuite([TaskSpec(name="sent", data=dd)]).validate()


def test_single_class_task_rejected():
    dd = classification_dataset()
    dd = dd.map(lambda ex: {"label": "pos"})
    with pytest.raises(TaskValidationError, match=r"task 'sent', split 'train', column 'label': single-class task"):
        TaskSuite([TaskSpec(name="sent", data=dd)]).validate()


def test_non_numeric_regression_labels_rejected():
    rows = regression_rows(10)
    rows["label"] = [str(v) for v in rows["label"]]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)})
    spec = TaskSpec(name="sim", type="regression", text_columns=["text_a", "text_b"], data=dd)
    with pytest.raises(TaskValidationError, match=r"task 'sim', split 'train', column 'label': regression label is not a number"):
        TaskSuite([spec]).validate()


def test_token_and_tag_length_mismatch_rejected():
    rows = ner_rows(8)
    rows["label"][2] = rows["label"][2][:-1]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)})
    with pytest.raises(TaskValidationError, match=r"task 'ner', split 'train', columns 'tokens'/'label': \d+ tokens but \d+ labels at row 2"):
        TaskSuite([TaskSpec(name="ner", type="token_classification", data=dd)]).validate()


def test_all_problems_reported_in_one_error():
    dd = classification_dataset()
    dd["test"] = dd["test"].select([])
    sim = dataset_dict(regression_rows)
    sim["validation"] = sim["validation"].remove_columns("text_b")
    suite = TaskSuite([TaskSpec(name="sent", data=dd),
                       TaskSpec(name="sim", type="regression", text_columns=["text_a", "text_b"], data=sim)])
    with pytest.raises(TaskValidationError) as err:
        suite.validate()
    assert len(err.value.problems) == 2
    assert "task 'sent', split 'test'" in str(err.value) and "task 'sim', split 'validation', column 'text_b'" in str(err.value)


def test_bad_spec_fails_at_construction():
    with pytest.raises(TaskValidationError, match="unknown type 'ranking'"):
        TaskSpec(name="x", type="ranking", data=classification_dataset())
    with pytest.raises(TaskValidationError, match="exactly one source"):
        TaskSpec(name="x")


def test_missing_file_named(tmp_path):
    spec = TaskSpec(name="x", data_files={"train": str(tmp_path / "nope.jsonl")})
    with pytest.raises(TaskValidationError, match=r"task 'x', split 'train': file not found: .*nope.jsonl"):
        TaskSuite([spec]).validate()


def test_tokenize_every_type_keeps_row_order_and_encodes_labels():
    suite = tiny_suite()
    tok = tiny_tokenizer()
    out = suite.tokenize(tok, max_length=32)
    sent_raw = suite["sent"].load()["train"]
    sent = out["sent"]["train"]
    assert sent["labels"][:5] == [["neg", "pos"].index(v) for v in sent_raw["label"][:5]]
    assert sent["input_ids"][0] == tok(sent_raw["text"][0])["input_ids"]
    assert out["sim"]["train"][0]["token_type_ids"].count(1) > 0  # pair input
    assert isinstance(out["sim"]["train"]["labels"][0], float)
    hall = out["hall"]["train"][0]["labels"]
    assert hall == [1.0, 1.0, 1.0]  # first row has every label
    ner_raw = suite["ner"].load()["train"][0]
    ner = out["ner"]["train"][0]
    id2label = suite.task_infos()["ner"]["id2label"]
    tags = [id2label[i] for i in ner["labels"] if i != -100]
    assert tags == ner_raw["label"]  # first sub-word of each word carries the word's tag
    assert ner["labels"][0] == -100 and ner["labels"][-1] == -100  # special tokens ignored


def test_null_input_tokenizes_to_special_tokens_only():
    suite = tiny_suite(("classification",))
    tok = tiny_tokenizer()
    out = suite.tokenize(tok, null_input=True)["sent"]["train"]
    assert all(ids == [tok.cls_token_id, tok.sep_token_id] for ids in out["input_ids"])
