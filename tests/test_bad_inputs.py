"""A table of bad inputs: each is refused before any work with one error naming the task, split, file and row."""

import json
import re

import pytest
import yaml

from hf_taskgroup.artifacts import ModelNotFoundError, check_model_path
from hf_taskgroup.data.tasks import TaskSpec, TaskSuite, TaskValidationError

GOOD_TRAIN = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in
                     [("good fine", "pos"), ("bad poor", "neg"), ("nice great", "pos"), ("awful sad", "neg")])
GOOD_REG = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in [("a", 0.5), ("b", 1.5), ("c", 2.0)])


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


#: (case, {file: content (str or bytes)}, task entry (data_files relative to the suite folder), expected pieces)
CASES = [
    ("regression target inf", {"r/train.jsonl": GOOD_REG, "r/dev.csv": "text,label\na,0.5\nb,inf\n"},
     {"name": "r", "type": "regression", "data_files": {"train": "r/train.jsonl", "dev": "r/dev.csv"}},
     ["task 'r'", "split 'validation'", "r/dev.csv", "column 'label'", "row 1", "not a finite number"]),
    ("regression target -inf", {"r/train.csv": "text,label\na,0.5\nb,-inf\nc,1\n"},
     {"name": "r", "type": "regression", "data_files": {"train": "r/train.csv"}},
     ["task 'r'", "split 'train'", "r/train.csv", "row 1", "-inf"]),
    ("regression target 1e300", {"r/train.jsonl": GOOD_REG + _jsonl([{"text": "d", "label": 1e300}])},
     {"name": "r", "type": "regression", "data_files": {"train": "r/train.jsonl"}},
     ["task 'r'", "split 'train'", "r/train.jsonl", "row 3", "1e+300"]),
    ("empty split file (0 bytes)", {"a/train.jsonl": GOOD_TRAIN, "a/dev.jsonl": ""},
     {"name": "a", "data_files": {"train": "a/train.jsonl", "dev": "a/dev.jsonl"}},
     ["task 'a'", "split 'dev'", "a/dev.jsonl", "split is empty", "0 bytes"]),
    ("empty split file (CSV header only)", {"a/train.jsonl": GOOD_TRAIN, "a/test.csv": "text,label\n"},
     {"name": "a", "data_files": {"train": "a/train.jsonl", "test": "a/test.csv"}},
     ["task 'a'", "split 'test'", "a/test.csv", "split is empty", "no rows"]),
    ("non-UTF-8 bytes", {"a/train.jsonl": GOOD_TRAIN.encode() + b'{"text": "caf\xe9", "label": "pos"}\n'},
     {"name": "a", "data_files": {"train": "a/train.jsonl"}},
     ["task 'a'", "split 'train'", "a/train.jsonl", "line 5", "not UTF-8", "0xe9"]),
    ("non-UTF-8 bytes in CSV", {"a/train.csv": b"text,label\ngood,pos\nbad\xff,neg\n"},
     {"name": "a", "data_files": {"train": "a/train.csv"}},
     ["task 'a'", "split 'train'", "a/train.csv", "line 3", "not UTF-8"]),
    ("malformed JSONL line", {"a/train.jsonl": "".join(GOOD_TRAIN.splitlines(True)[:2]) + '{"text": "x", "label": }\n'
                       + "".join(GOOD_TRAIN.splitlines(True)[2:])},
     {"name": "a", "data_files": {"train": "a/train.jsonl"}},
     ["task 'a'", "split 'train'", "a/train.jsonl", "line 3", "malformed JSON", "column 24"]),
    ("null text", {"a/train.jsonl": GOOD_TRAIN + _jsonl([{"text": None, "label": "pos"}])},
     {"name": "a", "data_files": {"train": "a/train.jsonl"}},
     ["task 'a'", "split 'train'", "a/train.jsonl", "column 'text'", "null text at row 4"]),
    ("null text in a pair", {"p/train.jsonl": _jsonl([{"a": "x", "b": "y", "label": "s"}, {"a": "x", "b": None, "label": "d"}])},
     {"name": "p", "text_columns": ["a", "b"], "data_files": {"train": "p/train.jsonl"}},
     ["task 'p'", "split 'train'", "column 'b'", "null text at row 1"]),
    ("missing split file", {"a/train.jsonl": GOOD_TRAIN},
     {"name": "a", "data_files": {"train": "a/train.jsonl", "validation": "a/nope.jsonl"}},
     ["task 'a'", "split 'validation'", "file not found", "a/nope.jsonl"]),
]

NAME_CASES = [
    ("a name with '.'", "bio.ner"),
    ("a name ending in a newline", "sst2\n"),
    ("a name with a space", "my task"),
    ("a name starting with '-'", "-x"),
]


def _write_suite(root, files, entry):
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "suite.yaml").write_text(yaml.safe_dump({"name": "bad", "tasks": [entry]}))
    return root / "suite.yaml"


@pytest.mark.parametrize("case,files,entry,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_suite_is_refused_with_one_error_naming_the_place(tmp_path, case, files, entry, expected):
    suite = TaskSuite.from_yaml(_write_suite(tmp_path, files, entry))
    with pytest.raises(TaskValidationError) as info:
        suite.validate()
    assert len(info.value.problems) == 1, info.value.problems
    message = info.value.problems[0]
    for piece in expected:
        assert piece in message, (piece, message)


@pytest.mark.parametrize("case,name", NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_bad_task_names_are_refused(case, name):
    with pytest.raises(TaskValidationError, match=re.escape(repr(name)) + ".*|.*name must start with a letter"):
        TaskSpec(name=name, data_files={"train": "x.jsonl"})
    with pytest.raises(TaskValidationError, match="only letters, digits, '_' or '-'"):
        TaskSuite.from_dict({"tasks": [{"name": name, "data_files": {"train": "x.jsonl"}}]})


def test_valid_names_still_work():
    for name in ("sst2", "ner_NCBI-disease", "glue_cola", "9x"):
        assert TaskSpec(name=name, data_files={"train": "x.jsonl"}).name == name


def test_missing_model_folder_is_one_error_before_any_work(tmp_path):
    from utils import tiny_suite

    from hf_taskgroup.pipeline import Pipeline, PipelineConfig

    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ModelNotFoundError, match=f"^model folder not found: {re.escape(str(missing))}$"):
        check_model_path(str(missing))
    from hf_taskgroup.config import ConfigError

    out = tmp_path / "run"
    # the configuration refuses it first (the pipeline and compute_pvi also call check_model_path)
    with pytest.raises((ModelNotFoundError, ConfigError), match=re.escape(str(missing))):
        Pipeline(PipelineConfig(output_dir=str(out), model=str(missing)), suite=tiny_suite(("classification",)),
                 progress=False).run()
    assert not out.exists()  # nothing was started


CLI_CASES = ["empty split file (0 bytes)", "malformed JSONL line", "null text"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_a_bad_suite_in_one_line_with_exit_2(tmp_path, case):
    import subprocess
    import sys

    _, files, entry, expected = next(c for c in CASES if c[0] == case)
    suite = _write_suite(tmp_path, files, entry)
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "hf_taskgroup.cli", "run", "--suite", str(suite), "--output_dir", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("hf-taskgroup: error:")]
    assert len(error) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    for piece in expected:
        assert piece in error[0], (piece, error[0])
    assert not out.exists()  # refused before any work
