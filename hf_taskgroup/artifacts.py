"""One stable hash and one artifact store: what every cache and resume decision of the library is built on.

- :func:`stable_hash` hashes any JSON-like value through one canonical JSON form (sorted keys, compact
  separators, numpy values as Python numbers, tuples as lists, sets sorted, non-finite floats tagged), so
  the same settings give the same key in every process and on every machine.
- Input fingerprints: :func:`data_fingerprint` (a task's data content: the bytes of its files, or the
  ``datasets`` fingerprint of in-memory / Hub splits, plus the spec fields that change what is read),
  :func:`model_fingerprint` (a local model folder's file hashes; a Hub id with its revision) and
  :func:`tokenizer_fingerprint` (the serialized tokenizer). A stage stamps its artifacts with the
  fingerprint of its actual inputs, so editing a training file recomputes exactly what depends on it.
- :class:`ArtifactStore` writes artifacts atomically and seals each with a *manifest*
  (``<name>.manifest``, JSON, beside the file or folder) that records every file's size and sha256 and the
  input fingerprint. :meth:`ArtifactStore.check` verifies them before reuse or publishing: a truncated or
  edited artifact is named in one :class:`ArtifactWarning` and treated as missing, so it is recomputed.

Example::

    >>> stable_hash({"b": 1, "a": [1.0, 2]}) == stable_hash({"a": [1.0, 2], "b": 1})
    True
    >>> store = ArtifactStore("outputs/run")                                   # doctest: +SKIP
    >>> store.write_json("runs/a/seed0.json", {"loss": 0.3}, fingerprint="f00d")  # doctest: +SKIP
    >>> store.read_json("runs/a/seed0.json", fingerprint="f00d")               # doctest: +SKIP
    {'loss': 0.3}
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hf_taskgroup.utils import atomic_write_json

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Bumped when the manifest layout changes: a manifest of another version is treated as missing.
MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest"

__all__ = [
    "MANIFEST_SUFFIX",
    "MANIFEST_VERSION",
    "ModelNotFoundError",
    "ArtifactCheck",
    "ArtifactError",
    "ArtifactStore",
    "ArtifactWarning",
    "canonical_json",
    "check_model_path",
    "data_fingerprint",
    "dataset_content_hash",
    "file_sha256",
    "load_verified",
    "model_fingerprint",
    "run_input_fingerprints",
    "stable_hash",
    "tokenizer_fingerprint",
    "verified_folder",
    "verify_all",
    "weights_fingerprint",
]


class ArtifactWarning(UserWarning):
    """An artifact on disk is truncated, edited or unreadable: it is ignored and recomputed."""


class ArtifactError(RuntimeError):
    """An artifact that must be verified (before publishing) is missing, corrupt or unsealed.

    A user-facing condition (the folder was modified, damaged or never finished; or a push would overwrite):
    the CLI reports it as one line naming the folder or file and exits 2. It stays a ``RuntimeError`` for
    library callers that catch that.

    Example::

        >>> raise ArtifactError("refusing to publish models/pvi/a: model.safetensors has 12 bytes, expected 4096")  # doctest: +SKIP
    """


# ------------------------------------------------------------------------------------- stable hash
def _plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (see :func:`canonical_json`)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        return {"__float__": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_plain(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return _plain(obj.value)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return _plain(obj.tolist())
    if hasattr(obj, "item"):
        return _plain(obj.item())
    text = str(obj)
    if " at 0x" in text:  # a default repr names a memory address: it would change every run
        raise TypeError(f"cannot hash a {type(obj).__name__} stably (its text names a memory address)")
    return text


def canonical_json(obj: Any) -> str:
    """The one canonical JSON text of ``obj``: sorted keys, ``(",", ":")`` separators, ASCII only.

    Floats use Python's shortest round-trip repr (the same on every platform); NaN and infinities become
    ``{"__float__": "nan" | "inf" | "-inf"}``; numpy values become Python numbers; tuples become lists; sets
    are sorted; dataclasses become dicts; ``Path`` and enums their text/value.

    Example::

        >>> canonical_json({"b": (1, 2.5), "a": float("inf")})
        '{"a":{"__float__":"inf"},"b":[1,2.5]}'
    """
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def stable_hash(obj: Any, length: int = 16) -> str:
    """The sha256 hex digest of :func:`canonical_json` of ``obj``, cut to ``length`` characters (max 64).

    Example::

        >>> stable_hash({"lr": 1e-3, "tasks": ["a", "b"]}) == stable_hash({"tasks": ["a", "b"], "lr": 0.001})
        True
    """
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


# --------------------------------------------------------------------------------- file hashing
_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}


#: Files at least this large have their sha256 memoised per process (path, inode, size, modification time);
#: smaller ones are hashed on every call, so an in-place edit within one timestamp tick is still seen.
MEMO_MIN_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, inode, size and modification time for files of
    :data:`MEMO_MIN_BYTES` or more).

    Example::

        >>> file_sha256("outputs/run/runs/a/model/model.safetensors")  # doctest: +SKIP
        '9f2c...'
    """
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if st.st_size < MEMO_MIN_BYTES or memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if st.st_size < MEMO_MIN_BYTES:
            return h.hexdigest()
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def _listing(path: Path) -> dict[str, dict[str, Any]]:
    """``{relative name: {"size", "sha256"}}`` of a file, or of every file under a folder (hidden ones skipped)."""
    if path.is_file():
        return {path.name: {"size": path.stat().st_size, "sha256": file_sha256(path)}}
    out = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return out


# ----------------------------------------------------------------------------- input fingerprints
_SPEC_FIELDS = ("type", "text_columns", "label_column", "tokens_column", "dataset", "config", "revision", "splits",
                "label_names")


def data_fingerprint(spec: Any) -> str:
    """A fingerprint of what a :class:`~hf_taskgroup.data.tasks.TaskSpec` reads: its data and the spec fields.

    Local files are hashed byte for byte (so editing ``train.jsonl`` changes it, and moving the folder does
    not); in-memory and Hub data hash the rows of each loaded split (:func:`dataset_content_hash`), so the
    same rows give the same fingerprint in every process and on every machine. The name and description do
    not count.

    Example::

        >>> data_fingerprint(suite["sst2"])  # doctest: +SKIP
        '4be1a0c2d9e3f871'
    """
    identity: dict[str, Any] = {k: getattr(spec, k, None) for k in _SPEC_FIELDS}
    if getattr(spec, "data_files", None) is not None:
        files = {}
        for split, value in sorted(spec.data_files.items()):
            paths = [value] if isinstance(value, (str, Path)) else list(value)
            files[split] = [(Path(p).suffix.lower(), file_sha256(p) if Path(p).is_file() else None) for p in paths]
        identity["files"] = files
    else:
        identity["splits_content"] = {split: dataset_content_hash(ds) for split, ds in sorted(spec.load().items())}
    return stable_hash(identity)


_CONTENT_HASHES: dict[str, str] = {}  # datasets' in-process fingerprint -> content hash (hashing is done once)


def dataset_content_hash(dataset: Any) -> str:
    """sha256 (16 hex digits) of the rows a ``datasets.Dataset`` exposes, in order, with its features.

    Unlike ``Dataset._fingerprint``, which for file-backed data follows the files' paths and metadata (a
    datasets cache rebuilt, or the same files at another path, gives another one), this depends on content
    only: the same rows give the same hash in every process and on every machine, and any changed row, order
    or column gives another. ``select``/``shuffle`` views hash the rows they select. Objects without Arrow
    data (a plain list) are hashed through JSON.
    """
    key = getattr(dataset, "_fingerprint", None)
    if key is not None and key in _CONTENT_HASHES:
        return _CONTENT_HASHES[key]
    digest = hashlib.sha256()
    if hasattr(dataset, "data") and hasattr(dataset, "features"):
        import pyarrow as pa

        digest.update(json.dumps(dataset.features.to_dict(), sort_keys=True, default=str).encode("utf-8"))
        table = getattr(dataset.data, "table", dataset.data)
        indices = getattr(dataset, "_indices", None)
        if indices is not None:
            table = table.take(indices.column(0))
        table = table.combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue().to_pybytes())
    else:
        digest.update(json.dumps(list(dataset), sort_keys=True, default=str).encode("utf-8"))
    value = digest.hexdigest()[:16]
    if key is not None:
        _CONTENT_HASHES[key] = value
    return value


def model_fingerprint(model_name_or_path: str | os.PathLike[str] | None, revision: str | None = None) -> str:
    """A fingerprint of a model's identity: every file of a local folder (name, size, sha256), else the Hub
    id with its revision (the library never downloads at run time, so a Hub id is taken by name).

    ``None`` means the demo model (``default_model_path()``).

    Example::

        >>> model_fingerprint("models/my-encoder")  # doctest: +SKIP
        'c01d...'
    """
    if model_name_or_path is None:
        from hf_taskgroup.training.train import default_model_path

        model_name_or_path = default_model_path()
    path = Path(model_name_or_path)
    if path.is_dir():
        return stable_hash({"folder": _listing(path)})
    return stable_hash({"hub": str(model_name_or_path), "revision": revision})


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A fingerprint of a tokenizer: its class, its serialized fast tokenizer (or vocabulary), special tokens
    and truncation settings. ``None`` for ``None``.

    Example::

        >>> tokenizer_fingerprint(AutoTokenizer.from_pretrained("models/my-encoder"))  # doctest: +SKIP
        '7e3a...'
    """
    if tokenizer is None:
        return None
    identity: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        state = json.loads(backend.to_str())
        for volatile in ("truncation", "padding"):  # set by each call (truncation=True, max_length=...), not identity
            state.pop(volatile, None)
        identity["backend"] = stable_hash(state, length=64)
    elif hasattr(tokenizer, "get_vocab"):
        identity["vocab"] = sorted(tokenizer.get_vocab().items())
    for attr in ("model_max_length", "padding_side", "truncation_side", "do_lower_case"):
        identity[attr] = getattr(tokenizer, attr, None)
    identity["special"] = {k: str(v) for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items()}
    return stable_hash(identity)


def weights_fingerprint(model: Any) -> str:
    """A fingerprint of a model built by a ``model_factory``: its class, config and every weight (sha256 of
    the bytes), so a factory that builds another model, or the same one from other weights, is another key.

    Example::

        >>> weights_fingerprint(model_factory(suite.subset(["sst2"]).task_infos()))  # doctest: +SKIP
        '5d1e...'
    """
    import torch

    h = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        try:
            h.update(stable_hash(config.to_dict(), length=64).encode())
        except TypeError:  # a config value without a stable text: the weights below still identify the model
            pass
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


class ModelNotFoundError(FileNotFoundError):
    """``--model`` names no usable model: a missing folder, a folder without ``config.json``, or (offline) a Hub
    id that is not in the local cache. The message names the path.

    Example::

        >>> check_model_path("/no/such/folder")  # doctest: +SKIP
        Traceback (most recent call last):
        ModelNotFoundError: model folder not found: /no/such/folder
    """


_HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def check_model_path(model_name_or_path: str | os.PathLike[str] | None) -> str:
    """Check a model argument before any work and return it (``None``: the demo model's folder).

    A local folder must exist and hold ``config.json``; something that can only be a path (absolute,
    ``./``, ``~``, more than one ``/``) must exist; a Hub id (``name`` or ``org/name``) is accepted, except
    when ``HF_HUB_OFFLINE`` is set and it is not in the Hugging Face cache. Raises :class:`ModelNotFoundError`.

    Example::

        >>> check_model_path("sentence-transformers/all-MiniLM-L6-v2")
        'sentence-transformers/all-MiniLM-L6-v2'
    """
    if model_name_or_path is None:
        from hf_taskgroup.training.train import default_model_path

        return default_model_path()
    text = str(model_name_or_path)
    path = Path(os.path.expanduser(text))
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model {text!r} is a file, not a model folder (a folder with config.json)")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {path} has no config.json: not a saved model folder")
        return text
    if not text.strip() or text.startswith((".", "/", "~")) or "\\" in text or not _HUB_ID_RE.fullmatch(text):
        raise ModelNotFoundError(f"model folder not found: {text}")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(text, "config.json"), str):
            raise ModelNotFoundError(f"model {text!r}: no local folder of that name, and the Hub id is not in the "
                                     "Hugging Face cache (HF_HUB_OFFLINE is set)")
    return text


# ---------------------------------------------------------------------------------- the store
#: Stores inside ``with store.collecting():`` (innermost last); see :meth:`ArtifactStore.collecting`.
_COLLECTING: list[ArtifactStore] = []

@dataclass
class ArtifactCheck:
    """The outcome of :meth:`ArtifactStore.check`: ``status`` is ``ok``, ``missing``, ``stale`` (made from
    other inputs, or never sealed) or ``corrupt`` (truncated, edited, unreadable manifest), with the reason in
    ``detail``."""

    path: Path
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ArtifactStore:
    """Write and verify the artifacts under one folder (a run's output folder, or any cache folder).

    Every artifact (a file or a folder) gets a manifest ``<name>.manifest`` (JSON) written after it, atomically:
    ``{"manifest_version", "fingerprint", "files": {name: {"size", "sha256"}}}``. An artifact is reusable only
    when its manifest exists, has this version, records the expected input fingerprint, and every file
    listed has the recorded size and sha256 (a folder must hold exactly the listed files). So an artifact
    killed half-way (no manifest yet), truncated, edited or made from other inputs is never reused;
    :meth:`check` names a corrupt one (truncated, edited) in one :class:`ArtifactWarning` and logs the others.
    Artifacts written by versions before manifests existed have none and are therefore recomputed once.

    ``reused`` lists (relative paths) what :meth:`read_json` / :meth:`check` accepted, for the report.
    Inside ``with store.collecting():`` a reuse (or a write) recorded by any other store for a path under this
    store's root is recorded here too, so caches that keep their own store (the evaluator cache, the affinity
    and task-embedding caches, the feature cache) show up in a run's reuse list.

    Example::

        >>> store = ArtifactStore("outputs/run")                                          # doctest: +SKIP
        >>> store.seal("runs/a/model", fingerprint="f00d")                                 # doctest: +SKIP
        >>> store.check("runs/a/model", fingerprint="f00d").ok                              # doctest: +SKIP
        True
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.reused: list[str] = []
        self._written: set[str] = set()  # sealed by this store: a later read in the same run is not a reuse

    @contextlib.contextmanager
    def collecting(self) -> Iterator[ArtifactStore]:
        """While active, reuses and writes that other stores record for paths under :attr:`root` are recorded
        in this store too (a run's store collects what its caches reused).

        Example::

            >>> with run_store.collecting():                                      # doctest: +SKIP
            ...     evaluator(["a", "b"])  # a verified cache entry under the run folder
            >>> run_store.reused                                                  # doctest: +SKIP
            ['cache/evaluator/3f2a....json']
        """
        _COLLECTING.append(self)
        try:
            yield self
        finally:
            _COLLECTING.remove(self)

    def _collectors(self, path: Path) -> list[ArtifactStore]:
        """This store and every collecting store whose root holds ``path``."""
        out: list[ArtifactStore] = [self]
        if _COLLECTING:
            resolved = path.resolve()
            for other in _COLLECTING:
                if other is not self and other not in out and resolved.is_relative_to(other.root.resolve()):
                    out.append(other)
        return out

    def record_reuse(self, path: Path) -> None:
        """Add ``path`` to :attr:`reused` once, unless this store wrote it (then it was computed in this run)."""
        path = Path(path)
        for store in self._collectors(path):
            rel = store._rel(path) if store is self else path.resolve().relative_to(store.root.resolve()).as_posix()
            if rel not in store._written and rel not in store.reused:
                store.reused.append(rel)

    def _record_written(self, path: Path) -> None:
        for store in self._collectors(path):
            store._written.add(store._rel(path) if store is self
                               else path.resolve().relative_to(store.root.resolve()).as_posix())

    def path(self, rel: str | os.PathLike[str]) -> Path:
        """An artifact's path: absolute paths and paths that already start with ``root`` are kept; others are
        taken relative to ``root``."""
        rel = Path(rel)
        if rel.is_absolute() or rel.parts[: len(self.root.parts)] == self.root.parts:
            return rel
        return self.root / rel

    @staticmethod
    def manifest_path(path: Path) -> Path:
        return path.with_name(path.name + MANIFEST_SUFFIX)

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # ---- writing
    def seal(self, rel: str | os.PathLike[str], *, fingerprint: str | None = None) -> Path:
        """Record the manifest of an artifact that is complete on disk (call it after the artifact is written)."""
        path = self.path(rel)
        if not path.exists():
            raise FileNotFoundError(f"cannot seal {path}: it does not exist")
        manifest = {"manifest_version": MANIFEST_VERSION, "kind": "folder" if path.is_dir() else "file",
                    "fingerprint": fingerprint, "files": _listing(path)}
        atomic_write_json(self.manifest_path(path), manifest)
        self._record_written(path)
        return path

    def unseal(self, rel: str | os.PathLike[str]) -> None:
        """Remove an artifact's manifest (do this before rewriting the artifact in place)."""
        self.manifest_path(self.path(rel)).unlink(missing_ok=True)

    def write_json(self, rel: str | os.PathLike[str], data: Any, *, fingerprint: str | None = None) -> Path:
        """Write ``data`` as JSON atomically and seal it with ``fingerprint``."""
        path = self.path(rel)
        self.unseal(path)
        atomic_write_json(path, data)
        return self.seal(path, fingerprint=fingerprint)

    # ---- reading
    def check(self, rel: str | os.PathLike[str], *, fingerprint: str | None = None, warn: bool = True,
              record: bool = True, stacklevel: int = 2) -> ArtifactCheck:
        """Verify an artifact against its manifest (and ``fingerprint`` when given).

        A corrupt artifact (truncated, edited, missing files) is named in one :class:`ArtifactWarning` when
        ``warn``; a stale one (other inputs, or no manifest) is only logged.
        """
        path = self.path(rel)
        result = self._check(path, fingerprint)
        if result.status == "corrupt" and warn:
            warnings.warn(f"{path}: {result.detail}; ignoring it and computing it again", ArtifactWarning,
                          stacklevel=stacklevel)
        elif result.status == "stale":
            logger.info("%s was made from other inputs (%s); computing it again", path, result.detail)
        elif result.ok and record:
            self.record_reuse(path)
        return result

    def _check(self, path: Path, fingerprint: str | None) -> ArtifactCheck:
        if not path.exists():
            return ArtifactCheck(path, "missing")
        mpath = self.manifest_path(path)
        if not mpath.is_file():
            # benign: killed between writing and sealing, or written before manifests existed; recomputed quietly
            return ArtifactCheck(path, "stale", f"no manifest {mpath.name} (unfinished, or written by an older version)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
            files = manifest["files"]
            version = manifest.get("manifest_version")
        except (OSError, ValueError, KeyError, TypeError) as err:
            return ArtifactCheck(path, "corrupt", f"unreadable manifest {mpath.name} ({err})")
        if version != MANIFEST_VERSION:
            return ArtifactCheck(path, "stale", f"manifest version {version}, expected {MANIFEST_VERSION}")
        if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
            return ArtifactCheck(path, "stale", f"fingerprint {manifest.get('fingerprint')} != {fingerprint}")
        base = path if path.is_dir() else path.parent
        for name, entry in files.items():
            f = base / name
            if not f.is_file():
                return ArtifactCheck(path, "corrupt", f"{f} is missing")
            size = f.stat().st_size
            if size != entry.get("size"):
                return ArtifactCheck(path, "corrupt", f"{f} has {size} bytes, expected {entry.get('size')} (truncated?)")
            if file_sha256(f) != entry.get("sha256"):
                return ArtifactCheck(path, "corrupt", f"{f} does not match its recorded sha256 (edited or damaged)")
        if path.is_dir():
            extra = sorted(set(_listing(path)) - set(files))
            if extra:
                return ArtifactCheck(path, "corrupt", f"files not in its manifest: {extra[:5]}")
        return ArtifactCheck(path, "ok")

    def read_json(self, rel: str | os.PathLike[str], *, fingerprint: str | None = None,
                  requires: Sequence[str | os.PathLike[str]] = ()) -> Any | None:
        """The JSON content of a verified artifact, or None (missing, stale or corrupt: recompute it).

        ``requires``: companion artifacts (e.g. the model folder saved with a training's scores) that must
        verify with the same fingerprint too, else the JSON is not reused either.
        """
        path = self.path(rel)
        for part in (path, *requires):
            if not self.check(part, fingerprint=fingerprint, record=False).ok:
                return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            warnings.warn(f"{path}: unreadable JSON ({err}); ignoring it and computing it again", ArtifactWarning,
                          stacklevel=2)
            return None
        self.record_reuse(path)
        return data

    def load(self, rel: str | os.PathLike[str], *, fingerprint: str | None,
             loader: Callable[[Path], T] | None = None) -> T | Any | None:
        """A cache entry for reuse: ``loader(path)`` (default: its JSON) when it verifies with ``fingerprint``,
        else None after discarding whatever is there, so the caller computes it again and writes it anew.

        Missing entries and stale ones (other inputs, or no manifest: written before manifests existed) are
        recomputed quietly; a corrupt one (truncated, edited, unreadable manifest) or one that verifies but
        cannot be loaded is named in one :class:`ArtifactWarning` and deleted. A loaded entry is recorded in
        :attr:`reused`.

        Example::

            >>> entry = store.load("task.3f2a.json", fingerprint=key)   # doctest: +SKIP
            >>> if entry is None:                                       # doctest: +SKIP
            ...     store.write_json("task.3f2a.json", compute(), fingerprint=key)
        """
        path = self.path(rel)
        check = self.check(path, fingerprint=fingerprint, record=False, stacklevel=3)
        if check.ok:
            try:
                value = (loader or _read_json)(path)
            except Exception as err:  # noqa: BLE001 - whatever the loader raises, the entry is computed again
                warnings.warn(f"{path}: cannot be loaded ({type(err).__name__}: {err}); ignoring it and computing it "
                              "again", ArtifactWarning, stacklevel=2)
            else:
                self.record_reuse(path)
                return value
        # a damaged entry goes now; a stale file is replaced atomically by the new one (deleting it here could
        # remove what another process is about to seal); a stale folder goes, as a new one cannot replace it
        if check.status != "missing" and (check.status != "stale" or path.is_dir()):
            self.discard(path)
        return None

    def discard(self, *rels: str | os.PathLike[str]) -> None:
        """Delete artifacts (files or folders) and their manifests before they are computed again."""
        import shutil

        for rel in rels:
            path = self.path(rel)
            self.unseal(path)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def require(self, rel: str | os.PathLike[str], *, fingerprint: str | None = None, action: str = "use") -> Path:
        """The artifact's path when it verifies, else :class:`ArtifactError` naming it (for publishing)."""
        path = self.path(rel)
        check = self._check(path, fingerprint)
        if not check.ok:
            raise ArtifactError(f"refusing to {action} {path}: {check.status}{': ' + check.detail if check.detail else ''}")
        return path


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_verified(store: ArtifactStore, rel: str | os.PathLike[str], fingerprint: str | None,
                  loader: Callable[[Path], T]) -> T | None:
    """``loader(path)`` of an artifact that verifies with ``fingerprint``, else None (recompute it).

    An artifact that verifies but fails to load is named in one :class:`ArtifactWarning`; a loaded one is
    recorded in ``store.reused``.

    Example::

        >>> grouping = load_verified(store, "groupings/pvi.json", stamp, Grouping.from_json)  # doctest: +SKIP
    """
    path = store.path(rel)
    if not store.check(path, fingerprint=fingerprint, record=False).ok:
        return None
    try:
        value = loader(path)
    except Exception as err:  # noqa: BLE001 - whatever the loader raises, the artifact is recomputed
        warnings.warn(f"{path}: cannot be loaded ({type(err).__name__}: {err}); ignoring it and computing it again",
                      ArtifactWarning, stacklevel=2)
        return None
    store.record_reuse(path)
    return value


def run_input_fingerprints(suite: Any, *, model: str | None, tokenizer: Any = None,
                           model_factory: Any = None) -> dict[str, Any]:
    """``{"data": {task: data_fingerprint}, "model": ..., "tokenizer": ...}`` of a run.

    With a ``model_factory`` the model is identified by the factory's qualified name; without a
    ``tokenizer`` object the tokenizer is the model folder's, already covered by :func:`model_fingerprint`.

    Example::

        >>> run_input_fingerprints(suite, model="models/my-encoder")["data"]["sst2"]  # doctest: +SKIP
        '4be1a0c2d9e3f871'
    """
    if model_factory is not None:
        model_id = f"model_factory:{getattr(model_factory, '__qualname__', type(model_factory).__name__)}"
    else:
        model_id = model_fingerprint(model)
    return {"data": {spec.name: data_fingerprint(spec) for spec in suite},
            "model": model_id, "tokenizer": tokenizer_fingerprint(tokenizer)}


def verified_folder(path: str | os.PathLike[str], *, action: str = "publish") -> Path:
    """``path`` when its manifest verifies (see :class:`ArtifactStore`), else :class:`ArtifactError`.

    Example::

        >>> push_group_model(verified_folder("outputs/run/models/pvi/a"), "me/demo-group0")  # doctest: +SKIP
    """
    path = Path(path)
    return ArtifactStore(path.parent).require(path, action=action)


def verify_all(paths: Sequence[str | os.PathLike[str]], *, action: str = "publish") -> list[Path]:
    """:func:`verified_folder` of every path (all must verify)."""
    return [verified_folder(p, action=action) for p in paths]
