"""Cached encoder outputs: the ``frozen`` and ``partial`` fine-tuning modes.

In ``frozen`` mode the encoder never changes, so its output for an example never changes either.
:meth:`FeatureCache.add_features` runs it once per example and stores the result in a ``features``
column; :class:`MultiTaskModel` then skips the encoder when it gets ``features``. Searches that train
hundreds of groups reuse the same features through :class:`FeatureCache`.

In ``partial`` mode only the top k encoder layers train, so the token states entering them never change.
:meth:`FeatureCache.add_token_states` computes them once per example (embeddings + lower layers, eval
mode) and keeps them as float16 ``.npy`` files that are memory-mapped (:class:`TokenStates`), so the RAM
held does not grow with the suite; training reads them through :class:`TokenStatesDataset`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from hf_taskgroup.data.collator import MultiTaskDataCollator
from hf_taskgroup.log import progress_bar

logger = logging.getLogger(__name__)

#: Environment variable naming a folder where pooled encoder features persist between runs.
FEATURE_CACHE_ENV = "HF_TASKGROUP_FEATURE_CACHE"


def encoder_fingerprint(model: Any) -> str:
    """A hash of the encoder's weights, pooling and name: features computed with another encoder differ."""
    h = hashlib.sha256()
    h.update(str(model.config.pooling).encode())
    h.update(str(model.config.encoder_name_or_path).encode())
    for name, tensor in sorted(model.encoder.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().float().cpu().reshape(-1)
        # a cheap but weight-sensitive digest: size plus a strided sample of values
        h.update(str(tuple(tensor.shape)).encode())
        h.update(t[:: max(1, t.numel() // 512)].numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_in_length_order(
    model: Any,
    lengths: Sequence[int],
    make_batch: Callable[[list[int]], Mapping[str, torch.Tensor]],
    *,
    token_level: bool = False,
    batch_size: int = 64,
    desc: str = "Encoding",
    progress: bool = True,
) -> list[Any]:
    """Run ``model.encode`` over rows batched in order of length (less padding) and return one array per
    row in the original order: ``[H]`` pooled, or ``[T_i, H]`` token states (padding cut off).

    ``make_batch(indices)`` builds the padded input tensors of those rows; eval mode during the pass,
    the model's mode restored after.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[Any] = [None] * len(order)
    was_training = model.training
    model.eval()
    try:
        for start in progress_bar(range(0, len(order), batch_size), desc=desc, nested=True, progress=progress):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in make_batch(idx).items()}
            feats = model.encode(**batch, token_level=token_level).float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = feats[j, : lengths[i]].copy() if token_level else feats[j].copy()
    finally:
        model.train(was_training)
    return out


def compute_encoder_features(
    model: Any,
    dataset: Any,
    *,
    token_level: bool = False,
    batch_size: int = 64,
    tokenizer: Any = None,
    desc: str = "Encoding",
) -> list[Any]:
    """Pooled encoder output (``[H]`` per example) or token states (``[T_i, H]``) of every row of a
    tokenized ``datasets.Dataset``, in the dataset's order (see :func:`encode_in_length_order`)."""
    lengths = [len(x) for x in dataset["input_ids"]]
    return encode_in_length_order(
        model, lengths, dataset_batcher(dataset, tokenizer), token_level=token_level, batch_size=batch_size, desc=desc
    )


def dataset_batcher(dataset: Any, tokenizer: Any = None) -> Callable[[list[int]], Mapping[str, torch.Tensor]]:
    """``make_batch(indices)``: the padded input tensors of those rows of a tokenized ``datasets.Dataset``."""
    collator = MultiTaskDataCollator(tokenizer)
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]

    def make_batch(idx: list[int]) -> Mapping[str, torch.Tensor]:
        rows = dataset.select(idx).select_columns(keep)
        return collator([rows[i] for i in range(len(idx))])

    return make_batch


def inputs_digest(columns: Mapping[str, Sequence[Sequence[int]]]) -> str:
    """A content hash of tokenized inputs (``input_ids`` and, when present, ``token_type_ids``; unpadded
    rows have an all-ones attention mask): two datasets with the same token ids share cached features."""
    import numpy as np

    h = hashlib.sha256()
    for name in ("input_ids", "token_type_ids"):
        rows = columns.get(name)
        if rows is None:
            continue
        h.update(name.encode())
        for row in rows:
            arr = np.asarray(row, dtype=np.int64)
            h.update(len(arr).to_bytes(4, "little"))
            h.update(arr.tobytes())
    return h.hexdigest()[:24]


class FeatureCache:
    """Cache of encoder features keyed by (encoder fingerprint, pooling level, input content).

    Keys depend on what the encoder sees, not on task or split names, so every stage that encodes the
    same tokens with the same frozen encoder (PVI models, grouped models, evaluators) computes them once.
    With ``cache_dir`` (default: ``$HF_TASKGROUP_FEATURE_CACHE`` when set), pooled features are also kept
    on disk, one ``.npy`` file per key written atomically, so a re-run or another process skips the
    encoder too. Token-level features (NER) stay in memory only: they are ~100x larger. Files on disk (and
    the token-state folders of ``partial`` mode) are sealed with a manifest
    (:class:`~hf_taskgroup.artifacts.ArtifactStore`: size, sha256, the key) and verified before reuse: a
    truncated or edited one is named in one :class:`~hf_taskgroup.artifacts.ArtifactWarning` and encoded
    again.

    Example::

        >>> cache = FeatureCache(cache_dir="outputs/run/cache/features")
        >>> ds_with_features = cache.add_features(model, "sst2", "train", tokenized["sst2"]["train"])  # doctest: +SKIP
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self._store: dict[tuple[str, ...], list[Any]] = {}
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0
        if cache_dir is None and os.environ.get(FEATURE_CACHE_ENV):
            cache_dir = os.environ[FEATURE_CACHE_ENV]
        self.cache_dir: Path | None = Path(cache_dir) if cache_dir is not None else None
        self._states: dict[tuple[str, ...], TokenStates] = {}
        self._scratch: Path | None = None  # token states live on disk even without cache_dir (a temp folder)
        self._artifacts: Any = None  # the ArtifactStore of cache_dir (manifests of the files there)

    def _path(self, key: tuple[str, ...]) -> Path | None:
        if self.cache_dir is None or key[1] != "pooled":
            return None
        return self.cache_dir / f"{'-'.join(key)}.npy"

    def _disk_store(self) -> Any:
        """The :class:`~hf_taskgroup.artifacts.ArtifactStore` of ``cache_dir`` (None without one)."""
        from hf_taskgroup.artifacts import ArtifactStore

        if self.cache_dir is None:
            return None
        if self._artifacts is None or self._artifacts.root != self.cache_dir:
            self._artifacts = ArtifactStore(self.cache_dir)
        return self._artifacts

    def get(self, model: Any, *, token_level: bool, digest: str, compute: Callable[[], list[Any]]) -> list[Any]:
        """The cached features for (``model``'s encoder, ``token_level``, ``digest``), computed on a miss.

        On disk, a file is used only when its manifest verifies (size, sha256, the key as fingerprint); a
        truncated or edited file is named in one :class:`~hf_taskgroup.artifacts.ArtifactWarning` and encoded
        again; one without a manifest (written before manifests existed) is encoded again quietly.
        """
        import numpy as np

        key = (encoder_fingerprint(model), "tokens" if token_level else "pooled", digest)
        path = self._path(key)
        store = self._disk_store()
        if key in self._store:
            self.hits += 1
            if path is not None and not path.exists():  # computed before this folder was set
                self._save(path, self._store[key], store, "-".join(key))
            return self._store[key]
        if path is not None:
            loaded = store.load(path, fingerprint="-".join(key),
                                loader=lambda p: list(np.load(p, allow_pickle=False)))
            if loaded is not None:
                self._store[key] = loaded
                self.disk_hits += 1
                return loaded
        self.misses += 1
        feats = compute()
        self._store[key] = feats
        if path is not None:
            self._save(path, feats, store, "-".join(key))
        return feats

    @staticmethod
    def _save(path: Path, feats: list[Any], store: Any, fingerprint: str) -> None:
        """Write pooled features as one float32 ``[n, hidden]`` array, atomically (temp file + rename), and seal
        it in ``store`` with ``fingerprint``."""
        import numpy as np

        if not feats:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        store.unseal(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.stack([np.asarray(x, dtype=np.float32) for x in feats]), allow_pickle=False)
        os.replace(tmp, path)
        store.seal(path, fingerprint=fingerprint)

    def add_features(self, model: Any, task: str, split: str, dataset: Any, *, batch_size: int = 64, tokenizer: Any = None) -> Any:
        token_level = model.config.tasks[task]["type"] == "token_classification"
        cols = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in dataset.column_names]
        digest = inputs_digest({c: dataset[c] for c in cols})
        feats = self.get(
            model, token_level=token_level, digest=digest,
            compute=lambda: compute_encoder_features(
                model, dataset, token_level=token_level, batch_size=batch_size, tokenizer=tokenizer,
                desc=f"Encoding {task}/{split}",
            ),
        )
        fingerprint = hashlib.sha256(f"{digest}|{token_level}|{getattr(dataset, '_fingerprint', '')}".encode()).hexdigest()[:16]
        return attach_features(dataset, feats, token_level=token_level, fingerprint=fingerprint)

    # ---- partial mode: token states of the frozen lower layers ----------------------------------------
    def states_root(self) -> Path:
        """Where token states are written: ``cache_dir``, or a temporary folder removed with this cache."""
        if self.cache_dir is not None:
            return self.cache_dir
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="hf_taskgroup_states_"))
            weakref.finalize(self, shutil.rmtree, str(self._scratch), True)
        return self._scratch

    def get_token_states(
        self,
        model: Any,
        *,
        trainable_layers: int,
        digest: str,
        lengths: Sequence[int],
        make_batch: Callable[[list[int]], Mapping[str, torch.Tensor]],
        batch_size: int = 64,
        desc: str = "Encoding",
        progress: bool = True,
    ) -> TokenStates:
        """The memory-mapped token states entering the top ``trainable_layers`` layers of ``model``'s encoder for
        the rows with input digest ``digest`` (see :func:`inputs_digest`), computed on a miss.

        The key is (fingerprint of the frozen part of the encoder and k, :func:`partial_fingerprint`; the input
        digest, which changes with the tokenizer and its ``max_length`` truncation), so states are never reused
        across another k, other lower-layer weights or other tokens.
        """
        fp = partial_fingerprint(model, trainable_layers)
        key = (fp, f"layers{int(trainable_layers)}", digest)
        if key in self._states:
            self.hits += 1
            return self._states[key]
        folder = self.states_root() / f"states-{fp}-k{int(trainable_layers)}-{digest}"
        fingerprint = folder.name
        store = self._disk_store()  # None: a temporary folder of this process, nothing to verify across runs
        if store is not None:
            def load(path: Path) -> TokenStates:
                states = TokenStates(path)
                if list(states.lengths()) != [int(n) for n in lengths]:
                    raise ValueError(f"{len(states)} cached rows do not match the {len(lengths)} rows' lengths")
                return states

            loaded = store.load(folder, fingerprint=fingerprint, loader=load)
            if loaded is not None:
                self._states[key] = loaded
                self.disk_hits += 1
                return loaded
        elif folder.exists():  # left by an earlier cache of this process in the same scratch folder
            shutil.rmtree(folder, ignore_errors=True)
        self.misses += 1
        states = compute_token_states(
            model, lengths, make_batch, folder, trainable_layers=trainable_layers, batch_size=batch_size, desc=desc,
            progress=progress,
        )
        if store is not None:
            try:
                store.seal(folder, fingerprint=fingerprint)
            except FileNotFoundError:  # another process sharing the folder discarded it meanwhile: memory only
                logger.info("token states %s were removed by another process; not kept on disk", folder)
        self._states[key] = states
        return states

    def add_token_states(
        self,
        model: Any,
        task: str,
        split: str,
        dataset: Any,
        *,
        trainable_layers: int,
        batch_size: int = 64,
        tokenizer: Any = None,
        columns: Sequence[str] = ("labels",),
    ) -> TokenStatesDataset:
        """``dataset`` (tokenized) as a :class:`TokenStatesDataset`: cached states + mask + ``columns``.

        Example::

            >>> ds = cache.add_token_states(model, "sst2", "train", tokenized["sst2"]["train"], trainable_layers=2)  # doctest: +SKIP
            >>> ds[0]["hidden_states"].shape  # [tokens, hidden], float16, memory-mapped  # doctest: +SKIP
        """
        cols = [c for c in ("input_ids", "token_type_ids") if c in dataset.column_names]
        digest = inputs_digest({c: dataset[c] for c in cols})
        states = self.get_token_states(
            model, trainable_layers=trainable_layers, digest=digest, lengths=[len(x) for x in dataset["input_ids"]],
            make_batch=dataset_batcher(dataset, tokenizer), batch_size=batch_size, desc=f"Encoding {task}/{split}",
        )
        extra = {c: dataset[c][:] for c in columns if c in dataset.column_names}
        return TokenStatesDataset(states, extra)


def partial_fingerprint(model: Any, trainable_layers: int) -> str:
    """A hash of what ``partial`` mode's cached token states depend on: the frozen part of the encoder (embeddings and
    every layer below the top ``trainable_layers``; weights sampled as in :func:`encoder_fingerprint`), the encoder's
    name and shape, and k. Training the top layers leaves it unchanged, so a trained model reuses its states."""
    start = model.partial_start(trainable_layers)
    layers = model.encoder_layers()
    top = {id(m) for m in layers[start:]}
    top_prefixes = tuple(f"{name}." for name, m in model.encoder.named_modules() if id(m) in top)
    enc = model.config.encoder
    h = hashlib.sha256()
    h.update(f"{model.config.encoder_name_or_path}|{enc.model_type}|{len(layers)}|{enc.hidden_size}|k={trainable_layers}".encode())
    for name, tensor in sorted(model.encoder.state_dict().items()):
        if name.startswith(top_prefixes):
            continue
        t = tensor.detach().float().cpu().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(t[:: max(1, t.numel() // 512)].numpy().tobytes())
    return h.hexdigest()[:16]


class TokenStates:
    """Token states of one tokenized dataset, memory-mapped from a folder of ``.npy`` files.

    ``states.npy`` (float16 ``[total_tokens, hidden]``), ``mask.npy`` (int8 ``[total_tokens]``, the attention mask)
    and ``offsets.npy`` (int64 ``[rows + 1]``): row ``i`` is ``states[offsets[i]:offsets[i + 1]]``. Only the pages
    a batch touches are read, so 13 tasks x 1,000 rows x 128 tokens x 384 dims (~1.3 GB) need no 1.3 GB of RAM.

    Example::

        >>> states = TokenStates("cache/features/states-ab12-k2-cd34")  # doctest: +SKIP
        >>> s, m = states.row(0)  # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        import numpy as np

        self.folder = Path(folder)
        self.states = np.load(self.folder / "states.npy", mmap_mode="r", allow_pickle=False)
        self.mask = np.load(self.folder / "mask.npy", mmap_mode="r", allow_pickle=False)
        self.offsets = np.load(self.folder / "offsets.npy", allow_pickle=False)
        if self.states.ndim != 2 or self.mask.shape != (self.states.shape[0],) or self.offsets.ndim != 1 \
                or int(self.offsets[-1]) != self.states.shape[0]:
            raise ValueError(f"inconsistent token-state files in {self.folder}")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def hidden_size(self) -> int:
        return int(self.states.shape[1])

    def lengths(self) -> list[int]:
        import numpy as np

        return np.diff(self.offsets).astype(int).tolist()

    def row(self, i: int) -> tuple[Any, Any]:
        """``(states [T_i, H] float16, mask [T_i] int8)`` of row ``i`` (views of the memory map)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.states[a:b], self.mask[a:b]


@torch.no_grad()
def compute_token_states(
    model: Any,
    lengths: Sequence[int],
    make_batch: Callable[[list[int]], Mapping[str, torch.Tensor]],
    folder: str | os.PathLike[str],
    *,
    trainable_layers: int,
    batch_size: int = 64,
    desc: str = "Encoding",
    progress: bool = True,
) -> TokenStates:
    """Run the embeddings and lower layers (``model.encode_lower``, eval mode) over rows batched by length and write
    their token states straight into float16 memory-mapped files under ``folder`` (atomically: a temporary folder
    renamed at the end), so no more than one batch is held in memory."""
    import numpy as np

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    lengths = [int(n) for n in lengths]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total, hidden = int(offsets[-1]), int(model.config.hidden_size)
    states = np.lib.format.open_memmap(tmp / "states.npy", mode="w+", dtype=np.float16, shape=(total, hidden))
    mask = np.lib.format.open_memmap(tmp / "mask.npy", mode="w+", dtype=np.int8, shape=(total,))
    np.save(tmp / "offsets.npy", offsets, allow_pickle=False)
    device = next(model.parameters()).device
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    was_training = model.training
    model.eval()
    try:
        for start in progress_bar(range(0, len(order), batch_size), desc=desc, nested=True, progress=progress):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in make_batch(idx).items()}
            h = model.encode_lower(**batch, trainable_layers=trainable_layers).to(torch.float16).cpu().numpy()
            m = batch.get("attention_mask")
            m = m.cpu().numpy().astype(np.int8) if m is not None else np.ones(h.shape[:2], dtype=np.int8)
            for j, i in enumerate(idx):
                a, b = offsets[i], offsets[i + 1]
                states[a:b] = h[j, : lengths[i]]
                mask[a:b] = m[j, : lengths[i]]
        states.flush()
        mask.flush()
        del states, mask
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        model.train(was_training)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished the same states first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenStates(folder)


class TokenStatesDataset(TorchDataset):
    """A torch dataset of cached token states (``partial`` mode): row ``i`` is ``{"hidden_states": [T_i, H] float16
    (memory-mapped view), "attention_mask": [T_i], <column>: value}`` for the extra columns (``labels``, ``task_ids``).

    Example::

        >>> ds = TokenStatesDataset(states, {"labels": [0, 1]})  # doctest: +SKIP
        >>> sorted(ds[0])  # doctest: +SKIP
        ['attention_mask', 'hidden_states', 'labels']
    """

    def __init__(self, states: TokenStates, columns: Mapping[str, Sequence[Any]] | None = None) -> None:
        self.states = states
        self.columns = {k: list(v) for k, v in (columns or {}).items()}
        bad = {k: len(v) for k, v in self.columns.items() if len(v) != len(states)}
        if bad:
            raise ValueError(f"columns {bad} do not match the {len(states)} rows of the cached token states")

    @property
    def column_names(self) -> list[str]:
        return ["hidden_states", "attention_mask", *self.columns]

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s, m = self.states.row(int(i))
        return {"hidden_states": s, "attention_mask": m, **{k: v[int(i)] for k, v in self.columns.items()}}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]

    def with_columns(self, **columns: Sequence[Any]) -> TokenStatesDataset:
        """A copy with columns added or replaced (the same memory-mapped states)."""
        return TokenStatesDataset(self.states, {**self.columns, **columns})


def attach_features(dataset: Any, feats: list[Any], *, token_level: bool, fingerprint: str | None = None) -> Any:
    """Return ``dataset`` with a ``features`` column (replacing an existing one).

    The column is built as an Arrow array straight from the numpy features (no Python lists, no
    hashing of the values: pass ``fingerprint`` to name the new dataset version).
    """
    import numpy as np
    import pyarrow as pa

    if "features" in dataset.column_names:
        dataset = dataset.remove_columns("features")
    if not feats:
        raise ValueError("no features to attach (empty dataset)")
    hidden = int(np.asarray(feats[0]).shape[-1])
    if token_level:
        flat = np.concatenate([np.asarray(f, dtype=np.float32).reshape(-1, hidden) for f in feats]).reshape(-1)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), hidden)
        offsets = np.concatenate([[0], np.cumsum([np.asarray(f).shape[0] for f in feats])]).astype(np.int32)
        column = pa.ListArray.from_arrays(pa.array(offsets), inner)
    else:
        flat = np.stack([np.asarray(f, dtype=np.float32) for f in feats]).reshape(-1)
        column = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), hidden)
    if fingerprint is None:
        fingerprint = hashlib.sha256(f"{getattr(dataset, '_fingerprint', id(dataset))}-features-{len(feats)}".encode()).hexdigest()[:16]
    return dataset.add_column("features", column, new_fingerprint=fingerprint)


_DEFAULT_CACHE = FeatureCache()


def default_feature_cache() -> FeatureCache:
    """The process-wide cache that :class:`MultiTaskTrainer` uses in frozen mode unless given another."""
    return _DEFAULT_CACHE
