"""The built-in demo suite (hf_taskgroup/demo) and the script that samples it (scripts/make_demo_suite.py)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from hf_taskgroup.demo import DEMO_DIR, DEMO_SUITE_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "make_demo_suite.py"
SHARED_NLP = REPO_ROOT.parent / "shared" / "data" / "nlp"
SPLITS = ("train", "validation", "test")
TYPES = {"classification", "multilabel", "regression", "token_classification"}
MAX_BYTES = 2 * 1024 * 1024


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_demo_suite"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


mds = _load_script()


@pytest.fixture(scope="module")
def suite() -> dict:
    return yaml.safe_load(DEMO_SUITE_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rows(suite) -> dict[str, dict[str, list[dict]]]:
    """{task: {split: [row, ...]}} for every file listed in suite.yaml."""
    out: dict[str, dict[str, list[dict]]] = {}
    for task in suite["tasks"]:
        out[task["name"]] = {}
        for split, rel in task["data_files"].items():
            path = DEMO_SUITE_PATH.parent / rel
            with path.open(encoding="utf-8") as f:
                out[task["name"]][split] = [json.loads(line) for line in f if line.strip()]
    return out


def _tasks_of_type(suite: dict, *types: str) -> list[dict]:
    return [t for t in suite["tasks"] if t["type"] in types]


def _labels(row: dict, task: dict) -> list:
    lab = row[task["label_column"]]
    return lab if isinstance(lab, list) else [lab]


# ---------------------------------------------------------------- the shipped suite


def test_exported_paths_point_at_the_suite():
    assert DEMO_SUITE_PATH == DEMO_DIR / "suite.yaml"
    assert DEMO_SUITE_PATH.is_file()
    assert (DEMO_DIR / "README.md").is_file()


def test_suite_yaml_has_the_loader_format(suite):
    assert suite["name"] == "demo"
    assert isinstance(suite["description"], str) and suite["description"]
    names = [t["name"] for t in suite["tasks"]]
    assert len(names) == len(set(names)) >= 4
    for task in suite["tasks"]:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", task["name"]), task["name"]
        assert task["type"] in TYPES, task
        assert set(task["data_files"]) == set(SPLITS), task["name"]
        if task["type"] == "token_classification":
            assert isinstance(task["tokens_column"], str) and "text_columns" not in task
        else:
            assert 1 <= len(task["text_columns"]) <= 2, task["name"]


def test_every_head_type_and_a_text_pair_are_covered(suite):
    assert {t["type"] for t in suite["tasks"]} == TYPES
    single = [t for t in _tasks_of_type(suite, "classification") if len(t["text_columns"]) == 1]
    pair = [t for t in _tasks_of_type(suite, "classification") if len(t["text_columns"]) == 2]
    assert single and pair


def test_every_listed_file_exists_parses_and_is_non_empty(suite, rows):
    for task in suite["tasks"]:
        for split in SPLITS:
            data = rows[task["name"]][split]
            assert data, f"{task['name']}/{split} is empty"
            columns = ["id", task["label_column"], *task.get("text_columns", [])]
            if task["type"] == "token_classification":
                columns.append(task["tokens_column"])
            for row in data:
                missing = [c for c in columns if c not in row]
                assert not missing, f"{task['name']}/{split} row {row.get('id')}: missing {missing}"


def test_ids_are_unique_and_splits_do_not_overlap(suite, rows):
    for task in suite["tasks"]:
        ids = [row["id"] for split in SPLITS for row in rows[task["name"]][split]]
        dup = [i for i, n in Counter(ids).items() if n > 1]
        assert not dup, f"{task['name']}: ids in more than one row: {dup[:5]}"


def test_classification_eval_labels_are_in_train(suite, rows):
    for task in _tasks_of_type(suite, "classification"):
        train = {lab for row in rows[task["name"]]["train"] for lab in _labels(row, task)}
        assert len(train) >= 2, task["name"]
        for split in ("validation", "test"):
            labels = {lab for row in rows[task["name"]][split] for lab in _labels(row, task)}
            assert labels <= train, f"{task['name']}/{split}: labels {labels - train} not in train"


def test_label_names_cover_every_label(suite, rows):
    for task in _tasks_of_type(suite, "classification", "multilabel", "token_classification"):
        names = task["label_names"]
        assert len(names) == len(set(names)) >= 2, task["name"]
        for split in SPLITS:
            labels = {lab for row in rows[task["name"]][split] for lab in _labels(row, task)}
            assert labels <= set(names), f"{task['name']}/{split}: {labels - set(names)} not in label_names"


def test_multilabel_train_sample_holds_every_label(suite, rows):
    for task in _tasks_of_type(suite, "multilabel"):
        train = {lab for row in rows[task["name"]]["train"] for lab in row[task["label_column"]]}
        assert train == set(task["label_names"]), task["name"]
        for split in SPLITS:
            assert all(isinstance(row[task["label_column"]], list) for row in rows[task["name"]][split])


def test_regression_labels_are_numbers(suite, rows):
    for task in _tasks_of_type(suite, "regression"):
        for split in SPLITS:
            values = [row[task["label_column"]] for row in rows[task["name"]][split]]
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        assert len({row[task["label_column"]] for row in rows[task["name"]]["train"]}) > 1


def test_token_and_tag_lengths_match(suite, rows):
    for task in _tasks_of_type(suite, "token_classification"):
        for split in SPLITS:
            for row in rows[task["name"]][split]:
                tokens, tags = row[task["tokens_column"]], row[task["label_column"]]
                assert tokens and len(tokens) == len(tags), f"{task['name']}/{split} row {row['id']}"


def test_total_size_is_at_most_2_mib():
    size = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert size <= MAX_BYTES, f"{DEMO_DIR} holds {size} bytes"


def test_readme_names_every_task_and_its_sizes(suite, rows):
    readme = (DEMO_DIR / "README.md").read_text(encoding="utf-8")
    assert "demonstration only" in readme.lower()
    for task in suite["tasks"]:
        sizes = " / ".join(str(len(rows[task["name"]][s])) for s in SPLITS)
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{task['name']}` |")), None)
        assert row is not None, f"README table has no row for {task['name']}"
        assert sizes in row, f"README row for {task['name']} does not state {sizes}"


def test_licence_files_referenced_by_the_readme_exist():
    readme = (DEMO_DIR / "README.md").read_text(encoding="utf-8")
    for rel in set(re.findall(r"licenses/[\w.-]+\.txt", readme)):
        assert (DEMO_DIR / rel).is_file(), rel


# ---------------------------------------------------------------- the sampling script, on synthetic data


def _write_source(root: Path, task: str, splits: dict[str, list[dict]]) -> None:
    (root / task).mkdir(parents=True)
    for split, data in splits.items():
        with (root / task / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in data:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _cls_rows(prefix: str, n: int, rare_every: int = 10) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "text_a": f"tëxt {i}", "label": "rare" if i % rare_every == 0 else "common"}
        for i in range(n)
    ]


@pytest.fixture()
def synthetic(tmp_path: Path) -> tuple[Path, tuple]:
    src = tmp_path / "src"
    _write_source(
        src, "toy", {"train": _cls_rows("tr", 100), "dev": _cls_rows("dv", 30), "test": _cls_rows("te", 30)}
    )
    task = mds.DemoTask("toy_cls", "toy", "classification", (20, 10, None), text_columns=("text_a",))
    return src, (task,)


def test_allocate_is_proportional_with_one_per_stratum():
    alloc = mds.allocate({"a": 90, "b": 9, "c": 1}, 20)
    assert sum(alloc.values()) == 20
    assert alloc == {"a": 18, "b": 1, "c": 1}
    assert mds.allocate({"a": 3, "b": 2}, 10) == {"a": 3, "b": 2}


def test_build_renames_dev_keeps_lines_verbatim_and_stratifies(synthetic, tmp_path):
    src, tasks = synthetic
    counts = mds.build(src, tmp_path / "out", seed=0, tasks=tasks)
    assert counts == {"toy_cls": {"train": 20, "validation": 10, "test": 30}}
    source_lines = set((src / "toy" / "dev.jsonl").read_text(encoding="utf-8").splitlines())
    out_lines = (tmp_path / "out" / "toy_cls" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    assert set(out_lines) <= source_lines
    train = [
        json.loads(line) for line in (tmp_path / "out" / "toy_cls" / "train.jsonl").open(encoding="utf-8")
    ]
    assert Counter(r["label"] for r in train) == {"common": 18, "rare": 2}
    ids = [int(r["id"].split("-")[1]) for r in train]
    assert ids == sorted(ids)  # written in source order
    suite = yaml.safe_load((tmp_path / "out" / "suite.yaml").read_text(encoding="utf-8"))
    assert suite["tasks"][0]["label_names"] == ["common", "rare"]
    assert suite["tasks"][0]["data_files"]["validation"] == "toy_cls/validation.jsonl"


def test_build_is_deterministic_and_depends_on_the_seed(synthetic, tmp_path):
    src, tasks = synthetic
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        mds.build(src, tmp_path / name, seed=seed, tasks=tasks)

    def read(name: str) -> bytes:
        return (tmp_path / name / "toy_cls" / "train.jsonl").read_bytes()

    assert read("a") == read("b")
    assert read("a") != read("c")


def test_build_names_task_split_and_column_when_a_column_is_missing(tmp_path):
    src = tmp_path / "src"
    rows = [{"id": str(i), "label": "x"} for i in range(5)]
    _write_source(src, "toy", {"train": rows, "dev": rows, "test": rows})
    task = mds.DemoTask("toy_cls", "toy", "classification", (2, 2, 2), text_columns=("text_a",))
    with pytest.raises(KeyError, match=r"toy_cls.*train.*text_a"):
        mds.build(src, tmp_path / "out", seed=0, tasks=(task,))


def test_build_refuses_a_multilabel_train_sample_missing_a_label(tmp_path):
    src = tmp_path / "src"
    train = [{"id": f"t{i}", "text_a": "t", "label": ["a"]} for i in range(20)]
    eval_rows = [{"id": "d0", "text_a": "t", "label": ["b"]}]
    _write_source(src, "toy", {"train": train, "dev": eval_rows, "test": eval_rows})
    task = mds.DemoTask("toy_ml", "toy", "multilabel", (5, None, None), text_columns=("text_a",))
    with pytest.raises(ValueError, match=r"toy_ml.*\['b'\].*absent from the train sample"):
        mds.build(src, tmp_path / "out", seed=0, tasks=(task,))


def test_parse_size_accepts_counts_and_all():
    assert mds.parse_size("pubmedqa=100,all,60") == ("pubmedqa", (100, None, 60))
    for bad in ("pubmedqa=100,60", "pubmedqa=0,1,1", "pubmedqa:1,1,1"):
        with pytest.raises(argparse.ArgumentTypeError, match="TASK=TRAIN,VAL,TEST"):
            mds.parse_size(bad)


# ---------------------------------------------------------------- reproducing the shipped sample


@pytest.mark.data
@pytest.mark.skipif(not SHARED_NLP.is_dir(), reason="../shared/data/nlp is absent")
def test_script_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--data_dir", str(SHARED_NLP), "--out", str(out), "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    generated = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert Path("suite.yaml") in generated and len(generated) > 1
    shipped = sorted(p.relative_to(DEMO_DIR) for p in DEMO_DIR.rglob("*.jsonl"))
    assert sorted(p for p in generated if p.suffix == ".jsonl") == shipped
    for rel in generated:
        assert (out / rel).read_bytes() == (DEMO_DIR / rel).read_bytes(), (
            f"{rel} differs from the shipped file"
        )
