"""Predict with one head of a :class:`~hf_taskgroup.training.modeling.MultiTaskModel`: texts in, label names out.

Used by :meth:`MultiTaskModel.predict`. Inputs per task type:

- classification / multilabel / regression: a list of strings, or of ``(text_a, text_b)`` pairs for pair tasks;
- token classification: a list of word lists (each word gets the tag predicted for its first sub-word).

Outputs: a label name (classification), a list of label names (multilabel: logit > 0), a float
(regression) or a list of tags, one per word (token classification; ``None`` for a word truncated away or
that the tokenizer turns into no token). With ``return_scores=True``: ``{label: probability}`` per input
(softmax for classification, sigmoid per label for multilabel), a list of such dicts per word for token
classification; regression returns floats either way.

Example::

    >>> import hf_taskgroup
    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("me/demo-group0")          # doctest: +SKIP
    >>> model.predict("hoc", ["BRCA1 mutations sustain proliferative signalling."])  # doctest: +SKIP
    [['sustaining proliferative signaling']]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def load_predict_tokenizer(model: Any) -> Any:
    """The tokenizer saved with ``model`` (``AutoTokenizer.from_pretrained(model.name_or_path)``, else the
    encoder's ``config.encoder_name_or_path``), cached on the model. ``ValueError`` naming what was tried otherwise."""
    cached = getattr(model, "_hf_taskgroup_tokenizer", None)
    if cached is not None:
        return cached
    sources = [s for s in (getattr(model, "name_or_path", ""), getattr(model.config, "encoder_name_or_path", None)) if s]
    if not sources:
        raise ValueError(
            "predict needs a tokenizer: pass tokenizer=... (this model was not loaded from a folder or Hub repo, "
            "so there is no saved tokenizer to load)"
        )
    from transformers import AutoTokenizer

    errors = []
    for source in dict.fromkeys(sources):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as err:  # any loading failure: try the next source, then report them all
            errors.append(f"{source!r}: {type(err).__name__}: {err}")
            continue
        model._hf_taskgroup_tokenizer = tokenizer
        return tokenizer
    raise ValueError("predict needs a tokenizer: none could be loaded from " + "; ".join(errors)
                     + ". Pass tokenizer=...")


def _max_length(model: Any, tokenizer: Any, max_length: int | None) -> int:
    if max_length is not None:
        return int(max_length)
    limits = [int(tokenizer.model_max_length)] if getattr(tokenizer, "model_max_length", None) else []
    positions = getattr(model.config.encoder, "max_position_embeddings", None)
    if positions:
        # RoBERTa-style encoders reserve positions for padding; their tokenizers carry the real limit.
        limits.append(int(positions))
    limits = [x for x in limits if 0 < x < 1_000_000]
    return min(limits) if limits else 512


def _check_inputs(task: str, task_type: str, texts: Sequence[Any]) -> str:
    """Validate the inputs; return their kind: ``text``, ``pair`` or ``words``."""
    if isinstance(texts, (str, tuple)) or not isinstance(texts, Sequence):
        raise TypeError(f"task {task!r}: predict takes a list of inputs, got {type(texts).__name__}")
    if task_type == "token_classification":
        for i, item in enumerate(texts):
            if isinstance(item, str) or not isinstance(item, Sequence) or not all(isinstance(w, str) for w in item):
                raise TypeError(
                    f"task {task!r} (token classification): input {i} must be a list of words, got {item!r}"
                )
        return "words"
    kinds = set()
    for i, item in enumerate(texts):
        if isinstance(item, str):
            kinds.add("text")
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            kinds.add("pair")
        else:
            raise TypeError(f"task {task!r}: input {i} must be a string or a (text_a, text_b) pair, got {item!r}")
    if len(kinds) > 1:
        raise TypeError(f"task {task!r}: mix of single texts and text pairs in one call")
    return kinds.pop() if kinds else "text"


def _length(item: Any) -> int:
    if isinstance(item, str):
        return len(item)
    return sum(len(x) for x in item)


def _label_names(info: dict[str, Any]) -> list[str]:
    names = info.get("id2label")
    if names:
        return [str(x) for x in (names.values() if isinstance(names, dict) else names)]
    return [str(i) for i in range(int(info["num_labels"]))]


@torch.no_grad()
def predict(
    model: Any,
    task: str,
    texts: Sequence[Any],
    tokenizer: Any = None,
    batch_size: int = 32,
    return_scores: bool = False,
    max_length: int | None = None,
) -> list[Any]:
    """Predictions of ``model``'s head ``task`` for ``texts`` (see the module docstring for types).

    Runs in eval mode without gradients, in batches sorted by length, on the model's device; the
    model's train/eval mode is restored afterwards. Unknown task: ``KeyError`` listing the heads.
    """
    index = model.task_index(task)
    info = model.config.tasks[task]
    task_type = info["type"]
    kind = _check_inputs(task, task_type, texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        return []
    tokenizer = tokenizer if tokenizer is not None else load_predict_tokenizer(model)
    if kind == "words" and not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"task {task!r}: token classification needs a fast tokenizer (word_ids)")
    limit = _max_length(model, tokenizer, max_length)
    names = _label_names(info)
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: _length(texts[i]))
    out: list[Any] = [None] * len(texts)
    was_training = model.training
    model.eval()
    truncated = 0
    try:
        for start in range(0, len(order), batch_size):
            ids = order[start:start + batch_size]
            batch = [texts[i] for i in ids]
            if kind == "words":
                enc = tokenizer([list(b) for b in batch], is_split_into_words=True, truncation=True,
                                max_length=limit, padding=True, return_tensors="pt")
            elif kind == "pair":
                enc = tokenizer([a for a, _ in batch], [b for _, b in batch], truncation=True, max_length=limit,
                                padding=True, return_tensors="pt")
            else:
                enc = tokenizer(list(batch), truncation=True, max_length=limit, padding=True, return_tensors="pt")
            inputs = {k: enc[k].to(device) for k in _INPUT_KEYS if k in enc}
            task_ids = torch.full((len(batch),), index, dtype=torch.long, device=device)
            logits = model(**inputs, task_ids=task_ids).logits.float().cpu()
            for row, i in enumerate(ids):
                if kind == "words":
                    out[i], lost = _decode_words(logits[row], enc.word_ids(row), len(batch[row]), names, return_scores)
                    truncated += lost
                else:
                    out[i] = _decode(task_type, logits[row], names, return_scores)
    finally:
        model.train(was_training)
    if truncated:
        logger.warning("predict(%r): %d word(s) got no tag (truncated at %d tokens or empty); they are None",
                       task, truncated, limit)
    return out


def _decode(task_type: str, logits: torch.Tensor, names: list[str], scores: bool) -> Any:
    if task_type == "regression":
        return float(logits.reshape(-1)[0])
    if task_type == "classification":
        if scores:
            probs = torch.softmax(logits, dim=-1).tolist()
            return dict(zip(names, probs))
        return names[int(logits.argmax())]
    if task_type == "multilabel":
        if scores:
            return dict(zip(names, torch.sigmoid(logits).tolist()))
        return [name for name, value in zip(names, logits.tolist()) if value > 0]
    raise ValueError(f"unknown task type {task_type!r}")


def _decode_words(logits: torch.Tensor, word_ids: list[int | None], num_words: int, names: list[str],
                  scores: bool) -> tuple[list[Any], int]:
    """One tag (or ``{tag: probability}``) per word from its first sub-word; ``None`` for words without tokens."""
    tags: list[Any] = [None] * num_words
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous and tags[word] is None:
            row = logits[position]
            tags[word] = dict(zip(names, torch.softmax(row, dim=-1).tolist())) if scores else names[int(row.argmax())]
        previous = word
    return tags, sum(t is None for t in tags)
