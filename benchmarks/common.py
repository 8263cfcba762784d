"""Shared helpers for the benchmark scripts: the real NLP tasks of ``../shared/data`` as a TaskSuite,
small statistics, plain-text tables, environment facts and result files.

Scripts in this folder are run as ``python benchmarks/<name>.py`` (so ``import common`` works).
The real data lives outside the project, in ``<repo>/../shared/data`` (override with the
``HF_TASKGROUP_SHARED_DATA`` environment variable); when it is absent, :func:`load_shared_nlp_suite`
raises :class:`SharedDataUnavailable` and the scripts print a ``SKIPPED`` line and exit 0.

Example::

    >>> from common import load_shared_nlp_suite                                   # doctest: +SKIP
    >>> suite = load_shared_nlp_suite(["glue_mrpc", "mqp"], max_train=2000, seed=0)  # doctest: +SKIP
    >>> len(suite["glue_mrpc"].load()["train"])                                     # doctest: +SKIP
    2000
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.utils import atomic_write_json

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
SHARED_DATA_ENV = "HF_TASKGROUP_SHARED_DATA"

# name -> (type, input columns). Input columns are the text column(s), or the token column for NER.
NLP_TASKS: dict[str, tuple[str, list[str]]] = {
    "glue_rte": ("classification", ["text_a", "text_b"]),
    "glue_mrpc": ("classification", ["text_a", "text_b"]),
    "glue_stsb": ("regression", ["text_a", "text_b"]),
    "glue_cola": ("classification", ["text_a"]),
    "glue_sst2": ("classification", ["text_a"]),
    "chemprot": ("classification", ["text_a"]),
    "gad": ("classification", ["text_a"]),
    "pubmedqa": ("classification", ["text_a", "text_b"]),
    "hoc": ("multilabel", ["text_a"]),
    "biosses": ("regression", ["text_a", "text_b"]),
    "ner_NCBI-disease": ("token_classification", ["tokens"]),
    "mqp": ("classification", ["text_a", "text_b"]),
    "medical_abstracts": ("classification", ["text_a"]),
}
_SPLIT_FILES = {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"}


class SharedDataUnavailable(FileNotFoundError):
    """Raised when ``../shared/data`` (or one of its task files) is missing; benchmarks skip on it."""


def shared_data_dir() -> Path:
    """``$HF_TASKGROUP_SHARED_DATA`` if set, else ``<repo>/../shared/data`` (may not exist)."""
    env = os.environ.get(SHARED_DATA_ENV)
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def nlp_task_dict(name: str, data_dir: str | Path | None = None) -> dict[str, Any]:
    """The suite entry of one shared NLP task (``TaskSuite.from_dict`` format, absolute file paths)."""
    if name not in NLP_TASKS:
        raise KeyError(f"unknown shared NLP task {name!r}; known: {', '.join(NLP_TASKS)}")
    ttype, columns = NLP_TASKS[name]
    folder = Path(data_dir) if data_dir is not None else shared_data_dir() / "nlp" / name
    entry: dict[str, Any] = {
        "name": name,
        "type": ttype,
        "label_column": "label",
        "data_files": {split: str(folder / f) for split, f in _SPLIT_FILES.items()},
    }
    if ttype == "token_classification":
        entry["tokens_column"] = columns[0]
    else:
        entry["text_columns"] = list(columns)
    return entry


def load_shared_nlp_suite(
    names: Sequence[str] | None = None,
    max_train: int | None = None,
    seed: int = 0,
    *,
    root: str | Path | None = None,
) -> TaskSuite:
    """The NLP tasks of ``../shared/data/nlp`` as a validated :class:`TaskSuite`.

    Args:
        names: task folder names (default: all 13, in the README's order).
        max_train: keep at most this many train rows per task: a seeded shuffle then the first
            ``max_train`` rows (the same rows for the same seed, on every machine). Validation and test
            are kept whole. The label vocabulary is always taken from the full train split, so a
            subsample that misses a rare label still maps dev/test labels.
        seed: the subsampling seed.
        root: the shared data folder (default :func:`shared_data_dir`).

    Raises:
        SharedDataUnavailable: the folder or one of the task files is missing (message says which).
    """
    base = Path(root) if root is not None else shared_data_dir()
    if not (base / "nlp").is_dir():
        raise SharedDataUnavailable(
            f"shared benchmark data not found at {base / 'nlp'} (set ${SHARED_DATA_ENV} to its folder)"
        )
    names = list(names) if names is not None else list(NLP_TASKS)
    entries = []
    for name in names:
        entry = nlp_task_dict(name, base / "nlp" / name)
        missing = [p for p in entry["data_files"].values() if not Path(p).is_file()]
        if missing:
            raise SharedDataUnavailable(f"task {name!r}: missing file(s) {missing}")
        entries.append(entry)
    suite = TaskSuite.from_dict({"name": "shared_nlp", "tasks": entries})
    if max_train is None:
        return suite
    specs = []
    for spec in suite:
        loaded = spec.load()
        train = loaded["train"]
        labels = spec.get_label_names()  # from the full train split
        if len(train) > max_train:
            train = train.shuffle(seed=seed).select(range(max_train))
        data = {split: (train if split == "train" else ds) for split, ds in loaded.items()}
        kwargs = {k: v for k, v in entry_kwargs(spec).items() if k != "data_files"}
        specs.append(TaskSpec(**kwargs, data=data, label_names=labels,
                              description=f"{spec.name}: train subsampled to {len(train)} (seed {seed})"))
    return TaskSuite(specs, name=f"shared_nlp_train{max_train}_seed{seed}")


def entry_kwargs(spec: TaskSpec) -> dict[str, Any]:
    """The constructor arguments of a file-backed spec (for rebuilding it around other data)."""
    out = spec.to_dict()
    out.pop("label_names", None)
    out.pop("description", None)
    return out


# ---- statistics and tables ----------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    return float(statistics.fmean(values)), (float(statistics.stdev(values)) if len(values) > 1 else 0.0)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width plain-text table (floats with 4 significant decimals unless pre-formatted)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    lines = ["  ".join(f"{h:<{w}}" for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table in Markdown (for docs)."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# ---- environment and results --------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Versions, thread count and load average: what a reader needs to judge a timing."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    return info


def write_results(name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically and return its path."""
    path = RESULTS_DIR / f"{name}.json"
    atomic_write_json(path, dict(payload))
    return path


def load_results(name: str) -> dict[str, Any]:
    return json.loads((RESULTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
