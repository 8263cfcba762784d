"""Self-contained code of an hf-taskgroup multi-task checkpoint, for ``trust_remote_code=True``.

Every checkpoint that ``MultiTaskModel.save_pretrained`` writes carries a copy of this file and an ``auto_map``
in its ``config.json``, so an environment with only ``torch`` and ``transformers`` (5.x) loads it::

    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("me/demo-group0", trust_remote_code=True)  # doctest: +SKIP
    >>> model.predict("hoc", ["BRCA1 mutations sustain proliferative signalling."])   # doctest: +SKIP

This file must import nothing but the standard library, ``torch`` and ``transformers``: it is executed where
``hf_taskgroup`` is not installed. It mirrors ``hf_taskgroup.training.modeling`` (same module names, so the
same weights load) and ``hf_taskgroup.training.predict``; the package's tests check that both give the same
outputs for every task type.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

TASK_TYPES = ("classification", "multilabel", "regression", "token_classification")
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class HfTaskGroupConfig(PreTrainedConfig):
    """Configuration of a grouped multi-task model: the encoder's config, the tasks (in head order), pooling and trunk."""

    model_type = "hf-taskgroup-multitask"
    sub_configs_defaults = {"encoder": SubConfigSpec(AutoConfig, model_type="bert")}

    encoder: dict | PreTrainedConfig | None = None
    tasks: dict | None = None
    pooling: str = "cls"
    trunk_hidden_sizes: list | None = None
    trunk_dropout: float = 0.1
    classifier_dropout: float = 0.1
    encoder_name_or_path: str | None = None
    task_groups: list | dict | None = None
    task_order: list | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.tasks and not self.task_order:
            self.task_order = list(self.tasks)
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        for name, info in (self.tasks or {}).items():
            if info.get("type") not in TASK_TYPES:
                raise ValueError(f"task {name!r}: unknown type {info.get('type')!r}; expected one of {TASK_TYPES}")

    @property
    def task_names(self) -> list[str]:
        return list(self.task_order or [])

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.hidden_size)


@dataclass
class HfTaskGroupOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


class TaskHead(nn.Module):
    def __init__(self, in_features: int, out_features: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(x))


def _build_trunk(hidden: int, sizes: Sequence[int], dropout: float) -> tuple[nn.Module | None, int]:
    if not sizes:
        return None, hidden
    layers: list[nn.Module] = []
    prev = hidden
    for size in sizes:
        layers += [nn.Linear(prev, int(size)), nn.GELU(), nn.Dropout(dropout)]
        prev = int(size)
    return nn.Sequential(*layers), prev


def _encoder_from_config(config: PreTrainedConfig) -> PreTrainedModel:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    params = inspect.signature(MODEL_MAPPING[type(config)].__init__).parameters
    kwargs = {"add_pooling_layer": False} if "add_pooling_layer" in params else {}
    return AutoModel.from_config(config, **kwargs)


def _task_loss(task_type: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task_type == "classification":
        return F.cross_entropy(logits.float(), labels.long())
    if task_type == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    if task_type == "regression":
        return F.mse_loss(logits.float(), labels.float().reshape(logits.shape))
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.long().reshape(-1), ignore_index=-100)


class HfTaskGroupModel(PreTrainedModel):
    """Shared encoder (no pooler), pooling, optional shared trunk and one head per task.

    ``forward`` takes one task per batch (``task_ids``: the head index, all equal). ``predict(task, inputs)``
    returns label names, lists of label names, floats or one tag per word.
    """

    config_class = HfTaskGroupConfig
    base_model_prefix = "encoder"
    accepts_loss_kwargs = False
    _no_split_modules: list[str] = []

    def __init__(self, config: HfTaskGroupConfig):
        super().__init__(config)
        self.encoder = _encoder_from_config(config.encoder)
        self.trunk, head_in = _build_trunk(config.hidden_size, config.trunk_hidden_sizes or [], config.trunk_dropout)
        self.heads = nn.ModuleDict({
            name: TaskHead(head_in, int(config.tasks[name]["num_labels"]), config.classifier_dropout)
            for name in config.task_names
        })
        self.post_init()

    @property
    def task_names(self) -> list[str]:
        return self.config.task_names

    def task_index(self, task: str) -> int:
        try:
            return self.config.task_names.index(task)
        except ValueError:
            raise KeyError(f"model has no head for task {task!r}; heads: {self.config.task_names}") from None

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None, *, token_level: bool = False) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        if token_level:
            return hidden
        if self.config.pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                task_ids: torch.Tensor | int | None = None, features: torch.Tensor | None = None,
                return_features: bool = False, return_dict: bool | None = None) -> HfTaskGroupOutput:
        names = self.config.task_names
        if task_ids is None:
            if len(names) != 1:
                raise ValueError(f"task_ids is required: this model has {len(names)} heads ({names})")
            index = 0
        else:
            index = int(task_ids.reshape(-1)[0]) if isinstance(task_ids, torch.Tensor) else int(task_ids)
        task = names[index]
        ttype = self.config.tasks[task]["type"]
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids,
                                   token_level=ttype == "token_classification")
        h = self.trunk(features) if self.trunk is not None else features
        logits = self.heads[task](h)
        info = self.config.tasks[task]
        scaled = ttype == "regression" and info.get("label_std") is not None
        if ttype == "regression":
            logits = logits.squeeze(-1)
        if scaled:  # trained on standardized labels: the loss compares on that scale, the outputs are on the label scale
            mean, std = float(info.get("label_mean") or 0.0), float(info["label_std"])
            labels = (labels.float() - mean) / std if labels is not None else None
        loss = _task_loss(ttype, logits, labels) if labels is not None else None
        if scaled:
            logits = logits * std + mean
        return HfTaskGroupOutput(loss=loss, logits=logits, features=features if return_features else None)

    # ---- prediction (same behaviour as hf_taskgroup.training.predict) ------------------------------
    @torch.no_grad()
    def predict(self, task: str, texts: Sequence[Any], tokenizer: Any = None, batch_size: int = 32,
                return_scores: bool = False, max_length: int | None = None) -> list[Any]:
        """Predictions of head ``task``: a label name (classification), a list of label names (multilabel),
        a float (regression) or one tag per word (token classification; inputs are word lists). Pair tasks
        take ``(text_a, text_b)`` tuples. The tokenizer defaults to the one saved with the model."""
        index = self.task_index(task)
        info = self.config.tasks[task]
        task_type = info["type"]
        if isinstance(texts, (str, tuple)):
            raise TypeError(f"task {task!r}: predict takes a list of inputs, got {type(texts).__name__}")
        if not texts:
            return []
        if tokenizer is None:
            tokenizer = getattr(self, "_hf_taskgroup_tokenizer", None)
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=True)
                self._hf_taskgroup_tokenizer = tokenizer
        words = task_type == "token_classification"
        pair = not words and not isinstance(texts[0], str)
        limit = int(max_length) if max_length is not None else _max_length(self, tokenizer)
        names = info.get("id2label")
        names = [str(x) for x in (names.values() if isinstance(names, dict) else names)] if names else [
            str(i) for i in range(int(info["num_labels"]))]
        device = next(self.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) if isinstance(texts[i], str)
                       else sum(len(x) for x in texts[i]))
        out: list[Any] = [None] * len(texts)
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                ids = order[start:start + batch_size]
                batch = [texts[i] for i in ids]
                if words:
                    enc = tokenizer([list(b) for b in batch], is_split_into_words=True, truncation=True,
                                    max_length=limit, padding=True, return_tensors="pt")
                elif pair:
                    enc = tokenizer([a for a, _ in batch], [b for _, b in batch], truncation=True, max_length=limit,
                                    padding=True, return_tensors="pt")
                else:
                    enc = tokenizer(list(batch), truncation=True, max_length=limit, padding=True, return_tensors="pt")
                inputs = {k: enc[k].to(device) for k in _INPUT_KEYS if k in enc}
                task_ids = torch.full((len(batch),), index, dtype=torch.long, device=device)
                logits = self(**inputs, task_ids=task_ids).logits.float().cpu()
                for row, i in enumerate(ids):
                    if words:
                        out[i] = _decode_words(logits[row], enc.word_ids(row), len(batch[row]), names, return_scores)
                    else:
                        out[i] = _decode(task_type, logits[row], names, return_scores)
        finally:
            self.train(was_training)
        return out


def _max_length(model: Any, tokenizer: Any) -> int:
    limits = [int(tokenizer.model_max_length)] if getattr(tokenizer, "model_max_length", None) else []
    positions = getattr(model.config.encoder, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    limits = [x for x in limits if 0 < x < 1_000_000]
    return min(limits) if limits else 512


def _decode(task_type: str, logits: torch.Tensor, names: list[str], scores: bool) -> Any:
    if task_type == "regression":
        return float(logits.reshape(-1)[0])
    if task_type == "classification":
        if scores:
            return dict(zip(names, torch.softmax(logits, dim=-1).tolist()))
        return names[int(logits.argmax())]
    if scores:
        return dict(zip(names, torch.sigmoid(logits).tolist()))
    return [name for name, value in zip(names, logits.tolist()) if value > 0]


def _decode_words(logits: torch.Tensor, word_ids: list[int | None], num_words: int, names: list[str],
                  scores: bool) -> list[Any]:
    tags: list[Any] = [None] * num_words
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous and tags[word] is None:
            row = logits[position]
            tags[word] = dict(zip(names, torch.softmax(row, dim=-1).tolist())) if scores else names[int(row.argmax())]
        previous = word
    return tags


# ---- single-task exports (hf_taskgroup.publishing.export.export_task) --------------------------------
class HfTaskGroupSingleTaskConfig(HfTaskGroupConfig):
    """Config of one task exported from a grouped model: ``tasks`` holds that task only; ``num_labels``,
    ``id2label`` and ``problem_type`` are set so that ``pipeline()`` decodes the logits."""

    model_type = "hf-taskgroup-single-task"


class HfTaskGroupForSequenceClassification(HfTaskGroupModel):
    """One sequence-level head (classification, multilabel or regression) with the grouped model's pooling and
    trunk, called like ``...ForSequenceClassification`` (logits ``[batch, num_labels]``)."""

    config_class = HfTaskGroupSingleTaskConfig

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> HfTaskGroupOutput:
        out = super().forward(input_ids, attention_mask, token_type_ids, labels=labels)
        if out.logits.dim() == 1:  # regression: [batch] -> [batch, 1] like transformers' heads
            out.logits = out.logits.unsqueeze(-1)
        return out


class HfTaskGroupForTokenClassification(HfTaskGroupModel):
    """One token-classification head with the grouped model's trunk, called like ``...ForTokenClassification``."""

    config_class = HfTaskGroupSingleTaskConfig

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> HfTaskGroupOutput:
        return super().forward(input_ids, attention_mask, token_type_ids, labels=labels)
