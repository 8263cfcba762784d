"""Frozen fine-tuning: run the encoder once, cache its pooled features (or token states), train heads only.

In ``frozen`` mode the encoder never changes, so its output for an example never changes either.
:func:`add_encoder_features` runs it once per example and stores the result in a ``features``
column; :class:`MultiTaskModel` then skips the encoder when it gets ``features``. Searches that train
hundreds of groups reuse the same features through :class:`FeatureCache`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

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
    collator = MultiTaskDataCollator(tokenizer)
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]

    def make_batch(idx: list[int]) -> Mapping[str, torch.Tensor]:
        rows = dataset.select(idx).select_columns(keep)
        return collator([rows[i] for i in range(len(idx))])

    lengths = [len(x) for x in dataset["input_ids"]]
    return encode_in_length_order(model, lengths, make_batch, token_level=token_level, batch_size=batch_size, desc=desc)


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
    encoder too. Token-level features (NER) stay in memory only: they are ~100x larger.

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

    def _path(self, key: tuple[str, ...]) -> Path | None:
        if self.cache_dir is None or key[1] != "pooled":
            return None
        return self.cache_dir / f"{'-'.join(key)}.npy"

    def get(self, model: Any, *, token_level: bool, digest: str, compute: Callable[[], list[Any]]) -> list[Any]:
        """The cached features for (``model``'s encoder, ``token_level``, ``digest``), computed on a miss."""
        import numpy as np

        key = (encoder_fingerprint(model), "tokens" if token_level else "pooled", digest)
        path = self._path(key)
        if key in self._store:
            self.hits += 1
            if path is not None and not path.exists():  # computed before this folder was set
                self._save(path, self._store[key])
            return self._store[key]
        if path is not None and path.exists():
            try:
                self._store[key] = list(np.load(path, allow_pickle=False))
                self.disk_hits += 1
                return self._store[key]
            except (OSError, ValueError) as err:  # a torn or foreign file: encode again and overwrite it
                logger.warning("ignoring unreadable feature cache file %s (%s)", path, err)
        self.misses += 1
        feats = compute()
        self._store[key] = feats
        if path is not None:
            self._save(path, feats)
        return feats

    @staticmethod
    def _save(path: Path, feats: list[Any]) -> None:
        """Write pooled features as one float32 ``[n, hidden]`` array, atomically (temp file + rename)."""
        import numpy as np

        if not feats:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.stack([np.asarray(x, dtype=np.float32) for x in feats]), allow_pickle=False)
        os.replace(tmp, path)

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
