"""Frozen fine-tuning: run the encoder once, cache its pooled features (or token states), train heads only.

In ``frozen`` mode the encoder never changes, so its output for an example never changes either.
:func:`add_encoder_features` runs it once per example and stores the result in a ``features``
column; :class:`MultiTaskModel` then skips the encoder when it gets ``features``. Searches that train
hundreds of groups reuse the same features through :class:`FeatureCache`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .data import MultiTaskDataCollator

logger = logging.getLogger(__name__)


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
        for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=not progress):
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
    """In-process cache of encoder features keyed by (encoder fingerprint, pooling level, input content).

    Keys depend on what the encoder sees, not on task or split names, so every stage that encodes the
    same tokens with the same frozen encoder (PVI models, grouped models, evaluators) computes them once.

    Example::

        >>> cache = FeatureCache()
        >>> ds_with_features = cache.add_features(model, "sst2", "train", tokenized["sst2"]["train"])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._store: dict[tuple[str, ...], list[Any]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, model: Any, *, token_level: bool, digest: str, compute: Callable[[], list[Any]]) -> list[Any]:
        """The cached features for (``model``'s encoder, ``token_level``, ``digest``), computed on a miss."""
        key = (encoder_fingerprint(model), "tokens" if token_level else "pooled", digest)
        if key in self._store:
            self.hits += 1
        else:
            self.misses += 1
            self._store[key] = compute()
        return self._store[key]

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
