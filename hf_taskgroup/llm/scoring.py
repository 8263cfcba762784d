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
    for every prefix). A prefix longer than ``max_prompt_tokens`` loses its oldest tokens. ``normalize``
    divides by the continuation's token count (label words of different lengths compete fairly).
    """
    device = _device(model)
    encoded = []
    for prefix, cont in pairs:
        text = render_prefix(tokenizer, prefix, chat)
        p = _ids(tokenizer, text, special=not chat)[-max_prompt_tokens:]
        c = _ids(tokenizer, cont, special=False)
        if not c:
            raise ValueError(f"continuation {cont!r} tokenizes to nothing")
        encoded.append((p, c))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    out = np.zeros(len(encoded), dtype=np.float64)
    pad = _pad_id(tokenizer)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        seqs = [encoded[i][0] + encoded[i][1] for i in chunk]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for r, i in enumerate(chunk):
            p, c = encoded[i]
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=logp.device)
            targets = torch.tensor(c, device=logp.device)
            total = logp[r, positions, targets].sum().item()
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
    encoded = [_ids(tokenizer, render_prefix(tokenizer, p, chat), special=not chat)[-max_prompt_tokens:] for p in prefixes]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, i in enumerate(chunk):
            seq = encoded[i]
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad,
        )
        for r, i in enumerate(chunk):
            out[i] = tokenizer.decode(generated[r, width:], skip_special_tokens=True)
    return out
