"""Task suites: describe N labelled tasks once, load them from the Hub or local files, validate, tokenize.

A suite is a list of :class:`TaskSpec`. Each task has a source (a Hub dataset, local
jsonl/csv/parquet files, or an in-memory ``Dataset``/``DatasetDict``), the text column(s) or the
token column, a label column and a type. Every split is exposed under the canonical names
``train``, ``validation`` and ``test``.

Example::

    >>> from hf_taskgroup import TaskSpec, TaskSuite
    >>> suite = TaskSuite.from_yaml("hf_taskgroup/demo/suite.yaml")   # doctest: +SKIP
    >>> suite.validate()                                              # doctest: +SKIP
    >>> tokenized = suite.tokenize(tokenizer, max_length=128)         # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASK_TYPES = ("classification", "multilabel", "regression", "token_classification")
CANONICAL_SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"dev": "validation", "val": "validation", "valid": "validation", "eval": "validation"}
# Task names become folder names, Hub config names and ``nn.ModuleDict`` keys (which cannot hold "."): checked with
# fullmatch, so a trailing newline is refused too.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
#: Regression targets must be finite and at most this large: training computes in float32, where squared
#: errors of larger targets overflow.
MAX_REGRESSION_TARGET = 1e15
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class TaskValidationError(ValueError):
    """Raised when a task suite is malformed. The message names every task, split and column at fault."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid task suite ({len(self.problems)} problem(s)):\n{lines}")


def canonical_split(name: str) -> str:
    """Map ``dev``/``val``/``valid``/``eval`` to ``validation``; other names are kept."""
    return _SPLIT_ALIASES.get(name, name)


@dataclass
class TaskSpec:
    """One labelled task.

    Args:
        name: unique task name: a letter or digit, then letters, digits, ``_`` or ``-`` (no ``.``: the name is
            the head's key in the model, a folder name and a Hub config name).
        type: ``classification``, ``multilabel``, ``regression`` or ``token_classification``.
        text_columns: one column (single text) or two columns (text pair).
        label_column: the label column (for token classification: the list of tags per example).
        tokens_column: token classification only: the column with the list of words.
        data_files: local files per split, e.g. ``{"train": "a/train.jsonl", "validation": ...}``.
        dataset: a Hub dataset id (with ``config``, ``revision`` and ``splits`` mapping canonical names
            to the dataset's split names).
        data: an in-memory ``DatasetDict`` or ``{split: Dataset}``.
        label_names: fixes the label vocabulary and its order (otherwise taken from train, sorted).
        description: what the task is (shown in cards and in prompts to causal LMs).
        prompt: the instruction given to a prompted causal LM (``hf-taskgroup llm``) instead of the default.
        label_words: how a prompted causal LM says each label (a list in label order, or ``{label: words}``).
        license: the data's licence (a Hub licence id such as ``mit``; ``other`` when none fits), for model cards.

    Example::

        >>> TaskSpec(name="sst2", type="classification", text_columns=["sentence"],
        ...          data_files={"train": "sst2/train.jsonl", "validation": "sst2/dev.jsonl"})  # doctest: +SKIP
    """

    name: str
    type: str = "classification"
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str = "label"
    tokens_column: str | None = None
    data_files: dict[str, str | list[str]] | None = None
    dataset: str | None = None
    config: str | None = None
    revision: str | None = None
    splits: dict[str, str] | None = None
    data: Any = None
    label_names: list[Any] | None = None
    description: str | None = None
    license: str | None = None  # the data's licence as a Hub licence id (e.g. "mit", "cc-by-4.0"); goes into model cards
    prompt: str | None = None
    label_words: list[str] | dict[str, str] | None = None
    _loaded: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.text_columns, str):
            self.text_columns = [self.text_columns]
        self.text_columns = list(self.text_columns)
        if self.type == "token_classification" and self.tokens_column is None:
            self.tokens_column = "tokens"
        problems = self._static_problems()
        if problems:
            raise TaskValidationError(problems)

    # ---- description checks that need no data -------------------------------------------------
    def _static_problems(self) -> list[str]:
        where = f"task {self.name!r}"
        problems = []
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            problems.append(f"{where}: name must start with a letter or digit and use only letters, digits, '_' "
                            f"or '-' (got {self.name!r})")
        if self.type not in TASK_TYPES:
            problems.append(f"{where}: unknown type {self.type!r}; expected one of {', '.join(TASK_TYPES)}")
        sources = [s for s in (self.data_files, self.dataset, self.data) if s is not None]
        if len(sources) != 1:
            problems.append(f"{where}: give exactly one source: data_files, dataset (Hub id) or data (in memory)")
        if self.type != "token_classification" and not 1 <= len(self.text_columns) <= 2:
            problems.append(f"{where}: text_columns must name one or two columns (got {self.text_columns})")
        return problems

    @property
    def is_pair(self) -> bool:
        return self.type != "token_classification" and len(self.text_columns) == 2

    @property
    def input_columns(self) -> list[str]:
        return [self.tokens_column] if self.type == "token_classification" else list(self.text_columns)

    # ---- loading --------------------------------------------------------------------------------
    def load(self) -> Any:
        """Load the task's splits as a ``DatasetDict`` keyed by canonical split names (cached on the spec)."""
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def _load(self) -> Any:
        import datasets

        if self.data is not None:
            raw = self.data if isinstance(self.data, Mapping) else {"train": self.data}
            dd = datasets.DatasetDict({canonical_split(k): v for k, v in raw.items()})
        elif self.data_files is not None:
            dd = datasets.DatasetDict()
            problems: list[str] = []
            for split, files in self.data_files.items():
                paths = [files] if isinstance(files, (str, Path)) else list(files)
                loaded, split_problems = _load_split_files(self.name, split, paths)
                problems += split_problems
                if loaded is not None:
                    dd[canonical_split(split)] = loaded
            if problems:
                raise TaskValidationError(problems)
        else:
            mapping = self.splits or {s: s for s in CANONICAL_SPLITS}
            dd = datasets.DatasetDict()
            for canonical, source_split in mapping.items():
                dd[canonical_split(canonical)] = datasets.load_dataset(
                    self.dataset, self.config, split=source_split, revision=self.revision
                )
        if "train" not in dd:
            raise TaskValidationError([f"task {self.name!r}: no 'train' split (found {sorted(dd)})"])
        return dd

    # ---- labels ---------------------------------------------------------------------------------
    def get_label_names(self) -> list[Any] | None:
        """The label vocabulary (None for regression): given ``label_names`` or the sorted labels of train."""
        if self.type == "regression":
            return None
        if self.label_names is not None:
            return list(self.label_names)
        train = self.load()["train"]
        if self.label_column not in train.column_names:
            return None
        values = set()
        for v in train[self.label_column]:
            if self.type in ("multilabel", "token_classification"):
                values.update(v or [])
            elif v is not None:
                values.add(v)
        return _sorted_labels(values)

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-able description (in-memory data is not serialised)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.type == "token_classification":
            out["tokens_column"] = self.tokens_column
        else:
            out["text_columns"] = list(self.text_columns)
        out["label_column"] = self.label_column
        for key in ("data_files", "dataset", "config", "revision", "splits", "label_names", "description", "prompt",
                    "label_words", "license"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def _sorted_labels(values: Iterable[Any]) -> list[Any]:
    values = list(values)
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


class TaskSuite:
    """An ordered collection of uniquely named :class:`TaskSpec`.

    Example::

        >>> suite = TaskSuite([TaskSpec(name="a", data_files={"train": "a.jsonl"}),
        ...                    TaskSpec(name="b", data_files={"train": "b.jsonl"})])
        >>> suite.task_names
        ['a', 'b']
    """

    def __init__(self, tasks: Sequence[TaskSpec], name: str = "suite", description: str | None = None):
        self.tasks = list(tasks)
        self.name = name
        self.description = description
        problems = []
        if not self.tasks:
            problems.append(f"suite {name!r} has no tasks")
        seen: set[str] = set()
        for t in self.tasks:
            if t.name in seen:
                problems.append(f"task {t.name!r}: duplicate task name in suite {name!r}")
            seen.add(t.name)
        if problems:
            raise TaskValidationError(problems)

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, config: Mapping[str, Any], base_dir: str | Path | None = None) -> TaskSuite:
        """Build from a mapping ``{"name", "description", "tasks": [{...}, ...]}``; file paths relative to ``base_dir``."""
        if "tasks" not in config or not isinstance(config["tasks"], list):
            raise TaskValidationError(["suite: expected a 'tasks' list"])
        base = Path(base_dir) if base_dir is not None else None
        specs = []
        allowed = {f for f in TaskSpec.__dataclass_fields__ if not f.startswith("_")} - {"data"}
        for i, raw in enumerate(config["tasks"]):
            if not isinstance(raw, Mapping) or "name" not in raw:
                raise TaskValidationError([f"suite: task #{i} must be a mapping with a 'name'"])
            unknown = set(raw) - allowed
            if unknown:
                raise TaskValidationError(
                    [f"task {raw['name']!r}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}"]
                )
            kwargs = dict(raw)
            if kwargs.get("data_files") is not None and base is not None:
                kwargs["data_files"] = {
                    split: _resolve(files, base) for split, files in kwargs["data_files"].items()
                }
            specs.append(TaskSpec(**kwargs))
        return cls(specs, name=config.get("name", "suite"), description=config.get("description"))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TaskSuite:
        """Load a suite from a YAML file; relative ``data_files`` are resolved against the file's folder."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"task suite file not found: {path}")
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        if not isinstance(config, Mapping):
            raise TaskValidationError([f"suite file {path}: expected a mapping at the top level"])
        return cls.from_dict(config, base_dir=path.parent)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tasks": [t.to_dict() for t in self.tasks]}

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    # ---- access ---------------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self.tasks)

    def __getitem__(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"no task {name!r} in suite {self.name!r}; tasks: {', '.join(self.task_names)}")

    def subset(self, names: Sequence[str]) -> TaskSuite:
        """A suite of the named tasks, in the given order (the specs, and their loaded data, are shared)."""
        return TaskSuite([self[n] for n in names], name=self.name, description=self.description)

    def task_infos(self) -> dict[str, dict[str, Any]]:
        """``{task: {"type", "num_labels", "id2label"}}``: what :class:`MultiTaskConfig` needs to build heads."""
        infos = {}
        for t in self.tasks:
            names = t.get_label_names()
            if t.type == "regression":
                infos[t.name] = {"type": t.type, "num_labels": 1, "id2label": None}
            else:
                infos[t.name] = {"type": t.type, "num_labels": len(names), "id2label": [str(n) for n in names]}
        return infos

    # ---- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every task before any training; raise one :class:`TaskValidationError` listing all problems."""
        problems: list[str] = []
        for t in self.tasks:
            try:
                dd = t.load()
            except TaskValidationError as err:
                problems.extend(err.problems)
                continue
            problems.extend(_validate_task(t, dd))
        if problems:
            raise TaskValidationError(problems)

    # ---- tokenization ---------------------------------------------------------------------------
    def tokenize(
        self,
        tokenizer: Any,
        max_length: int = 128,
        *,
        null_input: bool = False,
        splits: Sequence[str] | None = None,
        num_proc: int | None = None,
    ) -> dict[str, Any]:
        """Tokenize every task: ``{task: DatasetDict}`` with ``input_ids``, ``attention_mask`` (and
        ``token_type_ids`` when the tokenizer makes them) and ``labels``.

        Rows keep their order, so row ``i`` of a tokenized split is row ``i`` of the raw split. Labels:
        class index (classification), multi-hot floats (multilabel), float (regression), or one tag id per
        sub-word with the tag on the first sub-word of each word and ``-100`` elsewhere (token
        classification). ``null_input=True`` replaces every text by the empty string (for PVI's null model).
        Uses ``datasets`` caching for file-backed data.
        """
        return {t.name: tokenize_task(t, tokenizer, max_length, null_input=null_input, splits=splits, num_proc=num_proc)
                for t in self.tasks}


def _resolve(files: str | list[str], base: Path) -> str | list[str]:
    if isinstance(files, (list, tuple)):
        return [str(base / f) for f in files]
    return str(base / files)


_TEXT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


def _load_split_files(task: str, split: str, paths: Sequence[str | Path]) -> tuple[Any, list[str]]:
    """Load one split's local files; ``(dataset or None, problems)``. Every problem names the task, split and
    file (and the line, for text that is not UTF-8 or JSON lines that do not parse)."""
    import datasets

    where = f"task {task!r}, split {split!r}"
    problems = []
    for p in paths:
        if not Path(p).is_file():
            problems.append(f"{where}: file not found: {p}")
    if problems:
        return None, problems
    suffix = Path(paths[0]).suffix.lower()
    builder = _FILE_BUILDERS.get(suffix)
    if builder is None:
        return None, [f"{where}: unsupported file type {suffix!r} ({paths[0]}); use one of {', '.join(_FILE_BUILDERS)}"]
    if all(Path(p).stat().st_size == 0 for p in paths):
        return None, [f"{where}: split is empty (file {paths[0]} has 0 bytes)"]
    if suffix in _TEXT_SUFFIXES:
        for p in paths:
            bad = _first_non_utf8_line(Path(p))
            if bad is not None:
                return None, [f"{where}: file {p}, line {bad[0]}: not UTF-8 text ({bad[1]}); re-save the file as UTF-8"]
    kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
    try:
        return datasets.load_dataset(builder, data_files={"data": [str(p) for p in paths]}, split="data", **kwargs), []
    except Exception as err:  # noqa: BLE001 - turned into one problem naming the file (and line when found)
        if "corresponds to no data" in str(err):
            return None, [f"{where}: split is empty (file {paths[0]} has no rows)"]
        if builder == "json":
            for p in paths:
                bad = _first_bad_json_line(Path(p))
                if bad is not None:
                    return None, [f"{where}: file {p}, line {bad[0]}: malformed JSON ({bad[1]})"]
        cause = err.__cause__ or err
        return None, [f"{where}: cannot read {', '.join(map(str, paths))} ({type(cause).__name__}: {cause})"]


def _first_non_utf8_line(path: Path) -> tuple[int, str] | None:
    """``(line number, reason)`` of the first line of ``path`` that is not UTF-8, or None."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return line, f"byte 0x{data[err.start]:02x} at byte offset {err.start}"


def _first_bad_json_line(path: Path) -> tuple[int, str] | None:
    """``(line number, reason)`` of the first non-empty line that is not a JSON object (JSON-lines files; a
    file holding one JSON document is fine), or None."""
    import json

    text = path.read_text(encoding="utf-8")
    try:
        json.loads(text)
        return None
    except ValueError:
        pass
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            return number, f"{err.msg} at column {err.colno}"
        if not isinstance(row, dict):
            return number, f"expected an object per line, got {type(row).__name__}"
    return None


def _file_of(t: TaskSpec, split: str) -> str:
    """``" (file <path>)"`` for a split read from local files, else ``""``: appended to problem locations."""
    if not t.data_files:
        return ""
    for name, files in t.data_files.items():
        if canonical_split(name) == split:
            paths = [files] if isinstance(files, (str, Path)) else list(files)
            return f" (file {', '.join(map(str, paths))})"
    return ""


def _validate_task(t: TaskSpec, dd: Any) -> list[str]:
    problems = []
    where = f"task {t.name!r}"
    needed = [*t.input_columns, t.label_column]
    for split, ds in dd.items():
        missing = [c for c in needed if c not in ds.column_names]
        for c in missing:
            problems.append(f"{where}, split {split!r}{_file_of(t, split)}, column {c!r}: missing (columns: {ds.column_names})")
        if len(ds) == 0:
            problems.append(f"{where}, split {split!r}{_file_of(t, split)}: split is empty")
    if problems:
        return problems

    for split, ds in dd.items():  # null text is refused, not silently encoded as empty text
        for col in t.input_columns:
            for i, v in enumerate(ds[col]):
                if v is None:
                    problems.append(f"{where}, split {split!r}{_file_of(t, split)}, column {col!r}: "
                                    f"null {'tokens' if col == t.tokens_column else 'text'} at row {i}")
                    break

    if t.type == "regression":
        for split, ds in dd.items():
            for i, v in enumerate(ds[t.label_column]):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v is None or math.isnan(float(v)):
                    problems.append(f"{where}, split {split!r}{_file_of(t, split)}, column {t.label_column!r}: "
                                    f"regression label is not a number at row {i}: {v!r}")
                    break
                if not math.isfinite(float(v)) or abs(float(v)) > MAX_REGRESSION_TARGET:
                    problems.append(f"{where}, split {split!r}{_file_of(t, split)}, column {t.label_column!r}: "
                                    f"regression label {v!r} at row {i} is not a finite number within "
                                    f"+/-{MAX_REGRESSION_TARGET:g}")
                    break
        return problems

    vocab = t.get_label_names()
    known = set(vocab)
    train_seen: set[Any] = set()
    for split, ds in dd.items():
        labels = ds[t.label_column]
        for i, v in enumerate(labels):
            values = [v] if t.type == "classification" else (v if isinstance(v, list) else None)
            if values is None:
                problems.append(f"{where}, split {split!r}{_file_of(t, split)}, column {t.label_column!r}: expected a list at row {i}, got {v!r}")
                break
            unknown = [x for x in values if x not in known]
            if unknown:
                problems.append(
                    f"{where}, split {split!r}{_file_of(t, split)}, column {t.label_column!r}: unknown label {unknown[0]!r} at row {i}; "
                    f"labels known from train: {vocab}"
                )
                break
            if split == "train":
                train_seen.update(values)
        if t.type == "token_classification":
            tokens = ds[t.tokens_column]
            for i, (tok, tags) in enumerate(zip(tokens, labels)):
                if not isinstance(tok, list) or len(tok) != len(tags or []):
                    problems.append(
                        f"{where}, split {split!r}{_file_of(t, split)}, columns {t.tokens_column!r}/{t.label_column!r}: "
                        f"{len(tok) if isinstance(tok, list) else tok!r} tokens but {len(tags or [])} labels at row {i}"
                    )
                    break
    if t.type in ("classification", "token_classification") and len(train_seen) < 2:
        problems.append(f"{where}, split 'train', column {t.label_column!r}: single-class task "
                        f"(only {sorted(map(str, train_seen))} in train); nothing to learn")
    if t.type == "multilabel" and len(vocab) < 1:
        problems.append(f"{where}, split 'train', column {t.label_column!r}: no labels at all in train")
    return problems


def tokenize_task(
    task: TaskSpec,
    tokenizer: Any,
    max_length: int = 128,
    *,
    null_input: bool = False,
    splits: Sequence[str] | None = None,
    num_proc: int | None = None,
) -> Any:
    """Tokenize one task's splits (see :meth:`TaskSuite.tokenize`)."""
    import datasets

    dd = task.load()
    vocab = task.get_label_names()
    label2id = {v: i for i, v in enumerate(vocab)} if vocab is not None else None
    out = datasets.DatasetDict()
    for split, ds in dd.items():
        if splits is not None and split not in splits:
            continue
        fn = _make_encoder(task, tokenizer, max_length, label2id, null_input)
        out[split] = ds.map(
            fn,
            batched=True,
            remove_columns=ds.column_names,
            # worker processes only when they help: datasets warns when num_proc exceeds the rows
            num_proc=min(num_proc, len(ds)) if num_proc and num_proc > 1 and len(ds) > 1 else None,
            desc=f"Tokenizing {task.name}/{split}",
        )
    return out


def _make_encoder(task: TaskSpec, tokenizer: Any, max_length: int, label2id: dict | None, null_input: bool):
    ttype, label_col = task.type, task.label_column
    num_labels = len(label2id) if label2id is not None else 1

    if ttype == "token_classification":
        tokens_col = task.tokens_column
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"task {task.name!r}: token classification needs a fast tokenizer (word_ids)")

        def encode_tokens(batch: dict[str, list]) -> dict[str, list]:
            words = [[] for _ in batch[tokens_col]] if null_input else batch[tokens_col]
            enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
            all_labels = []
            for i, tags in enumerate(batch[label_col]):
                word_ids = enc.word_ids(i)
                prev = None
                row = []
                for w in word_ids:
                    if w is None or w == prev:
                        row.append(-100)
                    else:
                        row.append(label2id[tags[w]])
                    prev = w
                all_labels.append(row)
            enc["labels"] = all_labels
            return dict(enc)

        return encode_tokens

    cols = task.text_columns

    def encode(batch: dict[str, list]) -> dict[str, list]:
        n = len(batch[label_col])
        texts = [[""] * n for _ in cols] if null_input else [[str(x) if x is not None else "" for x in batch[c]] for c in cols]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        labels = batch[label_col]
        if ttype == "classification":
            enc["labels"] = [label2id[v] for v in labels]
        elif ttype == "multilabel":
            rows = []
            for v in labels:
                hot = [0.0] * num_labels
                for x in v:
                    hot[label2id[x]] = 1.0
                rows.append(hot)
            enc["labels"] = rows
        else:
            enc["labels"] = [float(v) for v in labels]
        return dict(enc)

    return encode
