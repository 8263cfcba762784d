"""Causal-LM scoring: log-likelihood of continuations after a prefix, and short greedy generation.

Both batch their inputs (sorted by length, so padding stays small) and work on CPU or GPU, with or without
a chat template.

Example::

    >>> scores = continuation_logprobs(model, tokenizer, [("Answer:", " yes"), ("Answer:", " no")])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def uses_chat_template(tokenizer: Any, enabled: bool = True) -> bool:
    """True when prompts go through the tokenizer's chat template (it has one and it is enabled)."""
    return bool(enabled and getattr(tokenizer, "chat_template", None))


def render_prefix(tokenizer: Any, prefix: str, chat: bool) -> str:
    """The prefix as the model reads it: wrapped as one user turn by the chat template, or as is."""
    if not chat:
        return prefix
    return tokenizer.apply_chat_template([{"role": "user", "content": prefix}], tokenize=False, add_generation_prompt=True)


def _ids(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _context_size(model: Any) -> int | None:
    """The model's maximum sequence length, where its config says it (``None``: unbounded or unknown)."""
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _left_padded(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, attention mask and position ids of left-padded sequences (positions count real tokens only)."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s)
        mask[r, width - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def _forward_tail(model: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions (``logits_to_keep`` where the model supports it: no full-vocab
    logits for the whole prompt)."""
    try:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep)
    except TypeError:  # a model without logits_to_keep
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions)
    return out.logits[:, -keep:]


@torch.no_grad()
def continuation_logprobs(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    chat: bool = False,
    batch_size: int = 8,
    max_prompt_tokens: int = 1024,
    normalize: bool = True,
) -> np.ndarray:
    """Log-probability (nats) of each ``continuation`` given its ``prefix``, for ``(prefix, continuation)`` pairs.

    The prefix is tokenized with the tokenizer's special tokens (a BOS where the model uses one), the
    continuation without, and the two id lists are concatenated (so the continuation's tokens are the same
    for every prefix). A prefix longer than ``max_prompt_tokens``, or than the model's context minus the
    continuation, loses its oldest tokens. ``normalize``
    divides by the continuation's token count (label words of different lengths compete fairly).
    """
    device = _device(model)
    context = _context_size(model)
    encoded = []
    for prefix, cont in pairs:
        text = render_prefix(tokenizer, prefix, chat)
        c = _ids(tokenizer, cont, special=False)
        if not c:
            raise ValueError(f"continuation {cont!r} tokenizes to nothing")
        keep = max_prompt_tokens if context is None else min(max_prompt_tokens, context - len(c))
        p = _ids(tokenizer, text, special=not chat)[-keep:]
        encoded.append((p, c))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    out = np.zeros(len(encoded), dtype=np.float64)
    pad = _pad_id(tokenizer)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        seqs = [encoded[i][0] + encoded[i][1] for i in chunk]
        ids, mask, positions = _left_padded(seqs, pad)
        # left padding puts every continuation at the end, so only the last positions need logits
        keep = max(len(encoded[i][1]) for i in chunk) + 1
        logits = _forward_tail(model, ids.to(device), mask.to(device), positions.to(device), keep)
        logp = torch.log_softmax(logits.float(), dim=-1)
        for r, i in enumerate(chunk):
            c = encoded[i][1]
            rows = torch.arange(keep - len(c) - 1, keep - 1, device=logp.device)
            total = logp[r, rows, torch.tensor(c, device=logp.device)].sum().item()
            out[i] = total / len(c) if normalize else total
    return out


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prefixes: Sequence[str],
    *,
    chat: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    max_prompt_tokens: int = 1024,
) -> list[str]:
    """Greedy continuations of ``prefixes`` (new text only), batched with left padding."""
    device = _device(model)
    pad = _pad_id(tokenizer)
    context = _context_size(model)
    keep = max_prompt_tokens if context is None else min(max_prompt_tokens, context - max_new_tokens)
    encoded = [_ids(tokenizer, render_prefix(tokenizer, p, chat), special=not chat)[-keep:] for p in prefixes]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask, _ = _left_padded([encoded[i] for i in chunk], pad)
        width = ids.shape[1]
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad,
        )
        for r, i in enumerate(chunk):
            out[i] = tokenizer.decode(generated[r, width:], skip_special_tokens=True)
    return out
