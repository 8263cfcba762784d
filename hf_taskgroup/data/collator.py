"""Batch collation for multi-task training: pads inputs, token labels and cached token features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class MultiTaskDataCollator:
    """Collate examples of one task into a batch.

    Pads ``input_ids``/``attention_mask``/``token_type_ids`` with the tokenizer, token-level ``labels``
    with ``-100``, cached ``features`` (frozen mode) with zeros, cached ``hidden_states`` (partial mode,
    ``[T_i, H]`` per row, float16 on disk) with zeros and their ``attention_mask`` with 0, and stacks ``task_ids``.
    Works with a tokenizer (``tokenizer.pad``) or, for feature-only batches, without.

    Example::

        >>> collator = MultiTaskDataCollator(tokenizer)  # doctest: +SKIP
        >>> batch = collator([ds[0], ds[1]])  # doctest: +SKIP
    """

    tokenizer: Any = None
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        first = examples[0]
        if "hidden_states" in first:  # partial mode: cached token states + their mask, no token ids
            batch["hidden_states"], batch["attention_mask"] = _collate_states(examples)
            examples = [{k: v for k, v in ex.items() if k not in ("hidden_states", *_INPUT_KEYS)} for ex in examples]
        inputs = [{k: ex[k] for k in _INPUT_KEYS if k in ex} for ex in examples]
        if inputs[0]:
            if self.tokenizer is None:
                batch.update(_pad_inputs(inputs))
            else:
                batch.update(
                    self.tokenizer.pad(inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
                )
        if "labels" in first:
            batch["labels"] = _collate_labels([ex["labels"] for ex in examples])
        if "task_ids" in first:
            batch["task_ids"] = torch.tensor([int(ex["task_ids"]) for ex in examples], dtype=torch.long)
        if "features" in first:
            batch["features"] = _collate_features([ex["features"] for ex in examples])
        return batch


def _to_list(x: Any) -> Any:
    return x.tolist() if hasattr(x, "tolist") else x


def _pad_inputs(inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    out = {}
    for key in inputs[0]:
        rows = [_to_list(ex[key]) for ex in inputs]
        width = max(len(r) for r in rows)
        out[key] = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return out


def _collate_labels(labels: list[Any]) -> torch.Tensor:
    labels = [_to_list(v) for v in labels]
    if not isinstance(labels[0], list):
        dtype = torch.float if isinstance(labels[0], float) else torch.long
        return torch.tensor(labels, dtype=dtype)
    lengths = {len(v) for v in labels}
    if isinstance(labels[0][0] if labels[0] else 0, float):  # multi-hot (fixed width)
        return torch.tensor(labels, dtype=torch.float)
    width = max(lengths)  # token labels: pad with -100
    return torch.tensor([v + [-100] * (width - len(v)) for v in labels], dtype=torch.long)


def _collate_features(features: list[Any]) -> torch.Tensor:
    tensors = [torch.as_tensor(f, dtype=torch.float) for f in features]
    if tensors[0].dim() == 1:
        return torch.stack(tensors)
    width = max(t.shape[0] for t in tensors)
    out = torch.zeros(len(tensors), width, tensors[0].shape[-1])
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def _collate_states(examples: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    rows = [np.asarray(ex["hidden_states"]) for ex in examples]
    width = max(r.shape[0] for r in rows)
    states = torch.zeros(len(rows), width, rows[0].shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (r, ex) in enumerate(zip(rows, examples)):
        states[i, : r.shape[0]] = torch.from_numpy(r.astype(np.float32))
        m = ex.get("attention_mask")
        mask[i, : r.shape[0]] = torch.as_tensor(np.asarray(m, dtype=np.int64)) if m is not None else 1
    return states, mask
