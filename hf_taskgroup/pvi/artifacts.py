"""On-disk PVI artifacts: ``<output_dir>/<task>/dataset/`` and ``<output_dir>/<task>/summary.json``.

A task is *finished* when its ``summary.json`` exists and records the settings hash of the current
run (settings, data content, model and tokenizer fingerprints) and its dataset folder verifies against
``dataset.manifest`` (every file's size and sha256, see :mod:`hf_taskgroup.artifacts`); the dataset
is saved to a temporary folder, renamed and sealed before the summary is written (also atomically), so a
run killed at any point leaves every finished task intact and no half-written task that looks finished,
and a truncated arrow file is named in a warning and the task recomputed. :mod:`hf_taskgroup.publishing.pvi_dataset` reads these artifacts to publish them.

Example::

    >>> done = read_finished("outputs/pvi/sst2", expected_hash="3f1c...")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.artifacts import ArtifactStore, ArtifactWarning, stable_hash
from hf_taskgroup.pvi.scores import PVIScores
from hf_taskgroup.utils import atomic_write_json

PVI_COLUMNS = ("pvi", "pvi_h_yx", "pvi_h_yb", "pvi_correct", "pvi_prediction")
SUMMARY_FILE = "summary.json"
DATASET_DIR = "dataset"

__all__ = [
    "DATASET_DIR",
    "PVIColumnExistsError",
    "PVI_COLUMNS",
    "SUMMARY_FILE",
    "annotate_dataset",
    "data_digest",
    "existing_pvi_columns",
    "read_finished",
    "save_task_artifacts",
    "scores_from_dataset",
    "settings_hash",
]


class PVIColumnExistsError(ValueError):
    """A split to score already has PVI columns and ``overwrite`` is False (raised before any training).

    Example::

        >>> raise PVIColumnExistsError("task 'sst2', split 'test' already has a 'pvi' column")  # doctest: +SKIP
    """


def existing_pvi_columns(dataset: Mapping[str, Any], splits: Sequence[str]) -> dict[str, list[str]]:
    """``{split: [PVI columns it already has]}`` for the given splits (only splits that have some)."""
    found = {}
    for split in splits:
        if split in dataset:
            cols = [c for c in PVI_COLUMNS if c in dataset[split].column_names]
            if cols:
                found[split] = cols
    return found


def data_digest(dataset: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A content hash of the given columns of every split (inputs and labels): a changed dataset is recomputed."""
    h = hashlib.sha256()
    for split in sorted(dataset):
        ds = dataset[split]
        h.update(f"{split}:{len(ds)}".encode())
        for col in columns:
            if col in ds.column_names:
                h.update(col.encode())
                h.update(json.dumps(ds[col][:], default=str, sort_keys=True).encode())
    return h.hexdigest()[:16]


def settings_hash(settings: Mapping[str, Any], **extra: Any) -> str:
    """Hash of the settings (plus e.g. the data digest and input fingerprints): decides whether a finished task
    is reused (:func:`~hf_taskgroup.artifacts.stable_hash`)."""
    return stable_hash({"settings": settings, **extra})


def annotate_dataset(raw: Any, scores: Mapping[str, PVIScores]) -> Any:
    """The raw ``DatasetDict`` with PVI columns on every split.

    Scored splits get ``pvi``, ``pvi_h_yx``, ``pvi_h_yb``, ``pvi_correct``, ``pvi_prediction``
    (replacing old PVI columns). Splits that were not scored keep their rows and columns; they get the
    PVI columns filled with nulls, so all splits of the task share one schema (the Hub stores a config's
    splits under one set of features). Existing non-PVI columns are never dropped.
    """
    import datasets

    out = {}
    for split, ds in raw.items():
        old = [c for c in PVI_COLUMNS if c in ds.column_names]
        if old:
            ds = ds.remove_columns(old)
        if split in scores:
            s = scores[split]
            if len(s) != len(ds):
                raise ValueError(f"split {split!r}: {len(s)} PVI scores for {len(ds)} rows")
            for name, values in s.to_columns().items():
                ds = ds.add_column(name, values)
        out[split] = ds
    features = next((out[s].features for s in out if s in scores), None)
    if features is not None:
        for split, ds in out.items():
            if split not in scores:
                for name in PVI_COLUMNS:
                    ds = ds.add_column(name, [None] * len(ds), feature=features[name])
                out[split] = ds
    return datasets.DatasetDict(out)


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def save_task_artifacts(task_dir: str | Path, dataset: Any, summary: Mapping[str, Any]) -> None:
    """Write ``dataset/`` (temp folder + rename) then ``summary.json`` (atomic); the old summary goes first."""
    task_dir = Path(task_dir)
    task_dir.mkdir(parents=True, exist_ok=True)
    summary_path = task_dir / SUMMARY_FILE
    if summary_path.exists():  # the task is unfinished from here until the new summary lands
        summary_path.unlink()
    tag = uuid.uuid4().hex[:8]
    tmp = task_dir / f".{DATASET_DIR}.tmp-{tag}"
    dataset.save_to_disk(str(tmp))
    final = task_dir / DATASET_DIR
    old = task_dir / f".{DATASET_DIR}.old-{tag}"
    store = ArtifactStore(task_dir)
    store.unseal(DATASET_DIR)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    store.seal(DATASET_DIR, fingerprint=summary.get("settings_hash"))
    clean = json.loads(json.dumps(summary, default=_default))
    atomic_write_json(summary_path, clean)


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, float)):
        return _json_float(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (Path,)):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_finished(task_dir: str | Path, expected_hash: str) -> tuple[Any, dict[str, Any]] | None:
    """``(DatasetDict, summary)`` when the task finished with settings hash ``expected_hash``, else None."""
    import datasets

    task_dir = Path(task_dir)
    summary_path, dataset_path = task_dir / SUMMARY_FILE, task_dir / DATASET_DIR
    if not (summary_path.is_file() and dataset_path.is_dir()):
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        warnings.warn(f"{summary_path}: unreadable ({err}); the task's PVI is computed again", ArtifactWarning,
                      stacklevel=2)
        return None
    if not isinstance(summary, dict) or summary.get("settings_hash") != expected_hash:
        return None
    if not ArtifactStore(task_dir).check(DATASET_DIR, fingerprint=expected_hash, record=False).ok:
        return None  # truncated/edited arrow files are named in the check's warning
    try:
        return datasets.DatasetDict.load_from_disk(str(dataset_path)), summary
    except Exception as err:  # noqa: BLE001 - an unloadable dataset is recomputed, whatever the error
        warnings.warn(f"{dataset_path}: cannot be loaded ({type(err).__name__}: {err}); the task's PVI is computed "
                      "again", ArtifactWarning, stacklevel=2)
        return None


def scores_from_dataset(ds: Any, task_type: str, collapsed: bool = False) -> PVIScores:
    """Rebuild :class:`PVIScores` from the PVI columns of a saved split (None scores become NaN)."""
    def floats(col: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in ds[col][:]], dtype=np.float64)

    return PVIScores(
        pvi=floats("pvi"), h_yx=floats("pvi_h_yx"), h_yb=floats("pvi_h_yb"),
        correct=np.array(ds["pvi_correct"][:], dtype=bool), prediction=list(ds["pvi_prediction"][:]),
        task_type=task_type, collapsed=collapsed,
    )
