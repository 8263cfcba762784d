#!/usr/bin/env python
"""Rebuild the built-in demo suite (``hf_taskgroup/demo``) from the benchmark data.

The demo suite is a small, redistributable, deterministic sample of five real biomedical /
clinical tasks that together cover every head type of ``MultiTaskModel``:

- pubmedqa           (source pubmedqa)          classification, text pair   MIT
- medical_abstracts  (source medical_abstracts) classification, one text    CC BY-SA 3.0
- hoc                (source hoc)               multilabel                  GPL-3.0
- biosses            (source biosses)           regression, text pair       GPL-3.0
- ncbi_disease       (source ner_NCBI-disease)  token_classification        NCBI public domain notice

Sampling is deterministic and independent of the Python / NumPy version: inside each stratum
(label for classification, rarest label for multilabel, integer part of the score for
regression, "has an entity" for NER) examples are ranked by ``sha256(f"{seed}:{task}:{split}:{id}")``
and the lowest ranks are kept; stratum sizes are proportional (largest remainder, at least one
per stratum when there is room). Kept lines are copied byte for byte, in source order, so every
field of the source (``id`` included) is preserved. The source ``dev`` split is written as
``validation``.

Example::

    python scripts/make_demo_suite.py                      # defaults: ../shared/data/nlp -> hf_taskgroup/demo
    python scripts/make_demo_suite.py --out /tmp/demo --seed 1 --size pubmedqa=100,40,60
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "nlp"
DEFAULT_OUT = REPO_ROOT / "hf_taskgroup" / "demo"
MAX_BYTES = 2 * 1024 * 1024
SPLITS = {"train": "train", "validation": "dev", "test": "test"}  # demo split -> source split


@dataclass(frozen=True)
class DemoTask:
    """One task of the demo suite: where it comes from and how it is described in suite.yaml.

    Example::

        DemoTask("ncbi_disease", "ner_NCBI-disease", "token_classification", (240, 60, 100))
    """

    name: str
    source: str
    type: str
    sizes: tuple[int | None, int | None, int | None]  # train, validation, test; None = all
    text_columns: tuple[str, ...] = ()
    tokens_column: str | None = None
    label_column: str = "label"
    label_order: tuple[str, ...] | None = None  # fixed label order; None = sorted union of labels
    license: str | None = None  # SPDX-style Hub licence id of the source dataset ("other": see README.md)


DEMO_TASKS: tuple[DemoTask, ...] = (
    DemoTask("pubmedqa", "pubmedqa", "classification", (160, 40, 80), text_columns=("text_a", "text_b"),
             license="mit"),
    DemoTask(
        "medical_abstracts", "medical_abstracts", "classification", (200, 50, 80), text_columns=("text_a",),
        license="cc-by-sa-3.0",
    ),
    DemoTask("hoc", "hoc", "multilabel", (200, 50, 80), text_columns=("text_a",), license="gpl-3.0"),
    DemoTask("biosses", "biosses", "regression", (None, None, None), text_columns=("text_a", "text_b"),
             license="gpl-3.0"),
    DemoTask(
        "ncbi_disease",
        "ner_NCBI-disease",
        "token_classification",
        (240, 60, 100),
        tokens_column="tokens",
        label_order=("O", "B", "I"),
        license="other",
    ),
)


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Read a JSONL file as (raw line without newline, parsed object) pairs."""
    if not path.is_file():
        raise FileNotFoundError(f"demo suite source file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            try:
                rows.append((line, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({err})") from err
    return rows


def _rank(seed: int, task: str, split: str, example_id: str) -> str:
    return hashlib.sha256(f"{seed}:{task}:{split}:{example_id}".encode()).hexdigest()


def stratum_key(task: DemoTask, label: Any, label_freq: Counter) -> str:
    """Stratum of one example: label (classification), rarest label (multilabel), score bin, has-entity."""
    if task.type == "classification":
        return str(label)
    if task.type == "multilabel":
        return min(label, key=lambda lab: (label_freq[lab], lab)) if label else "<none>"
    if task.type == "regression":
        return str(math.floor(float(label)))
    if task.type == "token_classification":
        return "entity" if any(tag != "O" for tag in label) else "none"
    raise ValueError(f"task {task.name!r}: unknown type {task.type!r}")


def allocate(strata: dict[str, int], n: int) -> dict[str, int]:
    """Split n over strata proportionally (largest remainder), at least one each when n allows."""
    total = sum(strata.values())
    keys = sorted(strata)
    if n >= total:
        return dict(strata)
    quotas = {k: n * strata[k] / total for k in keys}
    alloc = {k: int(quotas[k]) for k in keys}
    if n >= len(keys):
        for k in keys:
            alloc[k] = max(alloc[k], 1)
    while sum(alloc.values()) > n:  # the minimums overshot: take back where allocation exceeds quota most
        k = max((k for k in keys if alloc[k] > 1), key=lambda k: (alloc[k] - quotas[k], k))
        alloc[k] -= 1
    for k in sorted(keys, key=lambda k: (-(quotas[k] - alloc[k]), k)):
        if sum(alloc.values()) >= n:
            break
        if alloc[k] < strata[k]:
            alloc[k] += 1
    return alloc


def sample_split(
    task: DemoTask,
    split: str,
    rows: list[tuple[str, dict[str, Any]]],
    n: int | None,
    seed: int,
    label_freq: Counter,
) -> list[str]:
    """Pick n rows (all when n is None) stratified by label; return their raw lines in source order."""
    if n is None or n >= len(rows):
        return [line for line, _ in rows]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (_, obj) in enumerate(rows):
        groups[stratum_key(task, obj[task.label_column], label_freq)].append(i)
    alloc = allocate({k: len(v) for k, v in groups.items()}, n)
    keep: list[int] = []
    for key, idx in groups.items():
        idx = sorted(idx, key=lambda i: _rank(seed, task.name, split, str(rows[i][1]["id"])))
        keep.extend(idx[: alloc[key]])
    return [rows[i][0] for i in sorted(keep)]


def check_columns(task: DemoTask, split: str, rows: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    """Fail with the task, split and column when a source row lacks a column the suite names."""
    needed = ["id", task.label_column, *task.text_columns]
    if task.tokens_column:
        needed.append(task.tokens_column)
    for lineno, (_, obj) in enumerate(rows, 1):
        for col in needed:
            if col not in obj:
                raise KeyError(
                    f"task {task.name!r}, split {split!r}: column {col!r} missing ({path}, row {lineno})"
                )


def label_names(task: DemoTask, all_rows: list[dict[str, Any]]) -> list[str] | None:
    """Full label list from train + dev + test of the source (None for regression)."""
    if task.type == "regression":
        return None
    labels: set[str] = set()
    for obj in all_rows:
        lab = obj[task.label_column]
        labels.update(lab if isinstance(lab, list) else [lab])
    if task.label_order is not None:
        unknown = labels - set(task.label_order)
        if unknown:
            raise ValueError(f"task {task.name!r}: labels {sorted(unknown)} missing from label_order")
        return list(task.label_order)
    return sorted(labels)


def suite_entry(task: DemoTask, names: list[str] | None) -> dict[str, Any]:
    """The suite.yaml entry of one task."""
    entry: dict[str, Any] = {"name": task.name, "type": task.type}
    if task.tokens_column:
        entry["tokens_column"] = task.tokens_column
    else:
        entry["text_columns"] = list(task.text_columns)
    entry["label_column"] = task.label_column
    if names is not None:
        entry["label_names"] = names
    entry["data_files"] = {split: f"{task.name}/{split}.jsonl" for split in SPLITS}
    if task.license:
        entry["license"] = task.license
    return entry


def build(
    data_dir: Path, out: Path, seed: int, tasks: tuple[DemoTask, ...] = DEMO_TASKS
) -> dict[str, dict[str, int]]:
    """Write the sampled files and suite.yaml under ``out``; return {task: {split: n_rows}}."""
    entries, counts = [], {}
    for task in tasks:
        source = {split: read_jsonl(data_dir / task.source / f"{src}.jsonl") for split, src in SPLITS.items()}
        for split, rows in source.items():
            check_columns(task, split, rows, data_dir / task.source)
        label_freq: Counter = Counter()
        if task.type == "multilabel":
            label_freq = Counter(lab for _, obj in source["train"] for lab in obj[task.label_column])
        names = label_names(task, [obj for rows in source.values() for _, obj in rows])
        counts[task.name] = {}
        for (split, rows), n in zip(source.items(), task.sizes):
            lines = sample_split(task, split, rows, n, seed, label_freq)
            if not lines:
                raise ValueError(f"task {task.name!r}, split {split!r}: sample is empty")
            path = out / task.name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")
            counts[task.name][split] = len(lines)
        if task.type == "multilabel":
            train_labels = {
                lab
                for line in (out / task.name / "train.jsonl").read_text("utf-8").splitlines()
                for lab in json.loads(line)[task.label_column]
            }
            missing = set(names or []) - train_labels
            if missing:
                raise ValueError(
                    f"task {task.name!r}: labels {sorted(missing)} absent from the train sample; "
                    "raise the train size"
                )
        entries.append(suite_entry(task, names))
    suite = {
        "name": "demo",
        "description": "A small redistributable sample of real biomedical/clinical NLP tasks for the "
        "hf-taskgroup demo.",
        "tasks": entries,
    }
    header = (
        f"# Generated by scripts/make_demo_suite.py (seed {seed}); do not edit by hand.\n"
        "# Sources, licences and the sampling command: README.md in this folder.\n"
    )
    (out / "suite.yaml").write_text(
        header + yaml.safe_dump(suite, sort_keys=False, allow_unicode=True, width=1000),
        encoding="utf-8",
        newline="\n",
    )
    return counts


def parse_size(spec: str) -> tuple[str, tuple[int | None, int | None, int | None]]:
    """Parse ``TASK=TRAIN,VAL,TEST`` (each a count or ``all``)."""
    try:
        name, sizes = spec.split("=", 1)
        parts = [None if p.strip() == "all" else int(p) for p in sizes.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--size {spec!r}: expected TASK=TRAIN,VAL,TEST") from err
    if len(parts) != 3 or any(p is not None and p < 1 for p in parts):
        raise argparse.ArgumentTypeError(
            f"--size {spec!r}: expected TASK=TRAIN,VAL,TEST, each a positive count or 'all'"
        )
    return name, (parts[0], parts[1], parts[2])


def dir_bytes(path: Path) -> int:
    """Total size in bytes of the regular files under path."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data_dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder holding <task>/{train,dev,test}.jsonl (default: ../shared/data/nlp)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: hf_taskgroup/demo)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size",
        type=parse_size,
        action="append",
        default=[],
        metavar="TASK=TRAIN,VAL,TEST",
        help="override one task's sample sizes, e.g. pubmedqa=100,40,60 or biosses=all,all,all",
    )
    parser.add_argument(
        "--max_bytes",
        type=int,
        default=MAX_BYTES,
        help="fail when the output folder exceeds this many bytes (default: 2 MiB)",
    )
    args = parser.parse_args(argv)

    overrides = dict(args.size)
    unknown = set(overrides) - {t.name for t in DEMO_TASKS}
    if unknown:
        parser.error(f"--size: unknown task(s) {sorted(unknown)}; demo tasks: {[t.name for t in DEMO_TASKS]}")
    tasks = tuple(
        DemoTask(**{**t.__dict__, "sizes": overrides[t.name]}) if t.name in overrides else t
        for t in DEMO_TASKS
    )
    if not args.data_dir.is_dir():
        parser.error(f"--data_dir {args.data_dir} is not a directory")
    counts = build(args.data_dir, args.out, args.seed, tasks)
    for name, per_split in counts.items():
        print(f"{name:<18} " + "  ".join(f"{s}={n}" for s, n in per_split.items()))
    size = dir_bytes(args.out)
    print(f"total size of {args.out}: {size} bytes")
    if size > args.max_bytes:
        print(f"error: {args.out} is {size} bytes, over --max_bytes {args.max_bytes}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
