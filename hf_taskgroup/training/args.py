"""MultiTaskTrainingArguments: TrainingArguments plus task sampling, task weights and fine-tuning mode."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments

from hf_taskgroup.config import DEFAULT_REGRESSION_LABELS, REGRESSION_LABEL_MODES
from hf_taskgroup.training.modeling import DEFAULT_TRAINABLE_LAYERS, FINETUNE_MODES

_SAMPLING = ("proportional", "temperature", "round_robin", "uniform")


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    """``TrainingArguments`` for :class:`MultiTaskTrainer`.

    Extra fields:
        task_sampling: which task each step trains: ``proportional`` (to the number of batches),
            ``temperature`` (``p ∝ n^(1/T)``), ``round_robin`` or ``uniform``.
        sampling_temperature: T for ``temperature`` sampling (T=1 is proportional).
        task_weights: per-task loss weights, a dict or its JSON string (``'{"sst2": 2.0}'``); default 1.
        finetune: ``full`` (every weight trains), ``lora`` (LoRA adapters on the encoder; heads and
            trunk train fully), ``frozen`` (encoder run once, its features cached; heads and trunk train) or
            ``partial`` (the top ``trainable_layers`` encoder layers, trunk and heads train; the token states
            of the lower layers are computed once and cached on disk, memory-mapped).
        trainable_layers: k of ``partial`` mode (1 <= k <= the encoder's layers).
        regression_labels: ``standardize`` (default): a regression head that has no label statistics yet gets the
            mean and standard deviation of its training labels in the model config, trains on standardized labels
            and predicts on the label scale; ``raw``: labels as given.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: LoRA settings (``lora`` mode).
        feature_batch_size: batch size of the one encoder pass in ``frozen`` mode.
        eval_sort_by_length: evaluate and predict the rows of each task longest first (single process only; not
            token tasks, whose loss would change with the batches), so each batch is padded to rows of similar
            length; predictions still come back in dataset order and every metric and loss is unchanged.

    Example::

        >>> args = MultiTaskTrainingArguments(output_dir="out", task_sampling="temperature",
        ...                                   sampling_temperature=2.0, finetune="frozen")  # doctest: +SKIP
    """

    task_sampling: str = field(default="proportional", metadata={"help": f"One of {', '.join(_SAMPLING)}."})
    sampling_temperature: float = field(default=1.0, metadata={"help": "T of temperature sampling (p ∝ n^(1/T))."})
    task_weights: dict | str | None = field(default=None, metadata={"help": "Per-task loss weights, JSON."})
    finetune: str = field(default="full", metadata={"help": f"One of {', '.join(FINETUNE_MODES)}."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "LoRA target modules (guessed if unset)."})
    merge_lora: bool = field(default=False, metadata={
        "help": "LoRA: save merged standalone weights instead of the adapter (the adapter folder records the base "
                "encoder and reloads with AutoModel.from_pretrained while that encoder is available)."})
    feature_batch_size: int = field(default=64, metadata={"help": "Batch size of the encoder pass in frozen and partial mode."})
    trainable_layers: int = field(
        default=DEFAULT_TRAINABLE_LAYERS,
        metadata={"help": "partial mode: how many top encoder layers train (1..number of layers); the rest are cached."},
    )
    regression_labels: str = field(default=DEFAULT_REGRESSION_LABELS, metadata={
        "help": f"Regression heads: {' or '.join(REGRESSION_LABEL_MODES)} (standardize: train on (label - mean) / std "
                "of the training split and predict on the label scale; the statistics are saved in the model config)."})
    eval_sort_by_length: bool = field(default=True, metadata={
        "help": "Evaluate/predict each task's rows longest first (one process; not token tasks) to cut padding; "
                "predictions are returned in dataset order, metrics and losses are unchanged."})
    ddp_broadcast_buffers: bool | None = field(
        default=False, metadata={"help": "Off by default: BERT's buffers break DDP with in-place ops."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task_sampling not in _SAMPLING:
            raise ValueError(f"task_sampling must be one of {_SAMPLING}, got {self.task_sampling!r}")
        if self.sampling_temperature <= 0:
            raise ValueError(f"sampling_temperature must be > 0, got {self.sampling_temperature}")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {self.finetune!r}")
        if isinstance(self.trainable_layers, bool) or not isinstance(self.trainable_layers, int) or self.trainable_layers < 1:
            raise ValueError(f"trainable_layers must be an integer >= 1, got {self.trainable_layers!r}")
        if self.regression_labels not in REGRESSION_LABEL_MODES:
            raise ValueError(f"regression_labels must be one of {REGRESSION_LABEL_MODES}, got {self.regression_labels!r}")
        if isinstance(self.task_weights, str):
            try:
                self.task_weights = json.loads(self.task_weights)
            except json.JSONDecodeError as err:
                raise ValueError(f"task_weights is not valid JSON: {self.task_weights!r} ({err})") from None
        if self.task_weights is not None:
            bad = {k: v for k, v in self.task_weights.items() if not isinstance(v, (int, float)) or v < 0}
            if bad:
                raise ValueError(f"task_weights must be non-negative numbers; bad entries: {bad}")
