"""MultiTaskTrainer: the transformers Trainer for a dict of task datasets and a MultiTaskModel."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from transformers import EvalPrediction, Trainer
from transformers.trainer_utils import PredictionOutput

from hf_taskgroup.data.collator import MultiTaskDataCollator
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.features import FeatureCache, default_feature_cache
from hf_taskgroup.training.metrics import MetricModule, make_compute_metrics
from hf_taskgroup.training.modeling import MultiTaskModel, apply_lora, label_scale
from hf_taskgroup.training.sampler import MultiTaskBatchSampler

logger = logging.getLogger(__name__)

MetricsFn = Callable[[EvalPrediction], dict[str, float]]
#: ``compute_metrics`` of :class:`MultiTaskTrainer`: one function for every task, or per task a function (replaces
#: the built-in metrics) or an ``evaluate`` module / object with ``.compute(predictions=, references=)`` (adds to them).
TaskMetrics = MetricsFn | MetricModule | Mapping[str, MetricsFn | MetricModule]


class TaskConcatDataset(ConcatDataset):
    """``ConcatDataset`` of per-task datasets that fetches a batch with one call per task dataset.

    The data loader asks for a whole batch of global indices at once (``__getitems__``); the batches of
    :class:`MultiTaskBatchSampler` come from one task, so a batch is one batched read of that task's
    ``datasets.Dataset`` instead of one Arrow row lookup per example (which dominates the step time of
    small heads, e.g. ``frozen`` mode). Rows are the same dicts as ``dataset[i]`` gives, in index order.

    Example:
        >>> from datasets import Dataset
        >>> cat = TaskConcatDataset([Dataset.from_dict({"x": [0, 1]}), Dataset.from_dict({"x": [2, 3, 4]})])
        >>> cat.__getitems__([3, 0, 4])
        [{'x': 3}, {'x': 0}, {'x': 4}]
    """

    def __getitems__(self, indices: list[int]) -> list[Any]:
        rows: list[Any] = [None] * len(indices)
        per_dataset: dict[int, list[tuple[int, int]]] = {}
        for pos, index in enumerate(indices):
            index = int(index)
            if index < 0:
                index += len(self)
            which = bisect.bisect_right(self.cumulative_sizes, index)
            local = index - (self.cumulative_sizes[which - 1] if which else 0)
            per_dataset.setdefault(which, []).append((pos, local))
        for which, items in per_dataset.items():
            dataset = self.datasets[which]
            local_indices = [local for _, local in items]
            fetch = getattr(dataset, "__getitems__", None)
            fetched = fetch(local_indices) if fetch is not None else [dataset[i] for i in local_indices]
            for (pos, _), row in zip(items, fetched):
                rows[pos] = row
        return rows


def _label_column(dataset: Any) -> Any:
    """The ``labels`` column of a task's training data (a ``datasets.Dataset`` or the PVI stage's in-memory rows)."""
    columns = getattr(dataset, "columns", None)
    if isinstance(columns, Mapping):
        return columns["labels"]
    return dataset.with_format("numpy")["labels"]


class MultiTaskTrainer(Trainer):
    """Trainer for :class:`MultiTaskModel` with one dataset per task.

    - ``train_dataset`` / ``eval_dataset``: ``{task: Dataset}`` (tokenized, with ``labels``), task names
      matching the model's heads. A single ``Dataset`` is accepted for a one-head model.
    - Every batch holds one task; the task of each step comes from ``args.task_sampling`` and is the
      same on every process under DDP (each process takes its own slice of that task's global batch).
    - Evaluation runs task by task and reports ``eval_<task>_<metric>`` (metrics work offline), plus
      ``eval_loss`` = mean of the task losses. ``compute_metrics={"ner": evaluate.load("seqeval")}`` adds an
      ``evaluate`` metric to a task's built-in ones (it gets class ids, 0/1 rows, floats or tag names, see
      :func:`~hf_taskgroup.training.metrics.metric_inputs`); a plain function replaces them.
    - ``args.finetune``: ``full``, ``lora`` (wraps the model with peft; heads stay trainable) or
      ``frozen`` (encoder features computed once and cached; only trunk and heads train) or ``partial``
      (the top ``args.trainable_layers`` encoder layers train on cached, memory-mapped token states of the
      frozen lower layers; the saved model is an ordinary full checkpoint).
    - The model averages its loss per batch, so the class sets ``loss_is_scaled_for_ga = False``: the
      Trainer divides by the accumulation steps and ``2 x 4`` accumulation equals a batch of 8.

    Example::

        >>> trainer = MultiTaskTrainer(model=model, args=MultiTaskTrainingArguments("out"),
        ...                            train_dataset={"a": ds_a, "b": ds_b}, eval_dataset={"a": dev_a},
        ...                            processing_class=tokenizer)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        >>> trainer.evaluate()["eval_a_accuracy"]  # doctest: +SKIP
    """

    loss_is_scaled_for_ga = False
    _tag_names = ["hf-taskgroup", "multi-task"]

    def __init__(
        self,
        model: MultiTaskModel | None = None,
        args: MultiTaskTrainingArguments | None = None,
        train_dataset: Mapping[str, Any] | Any = None,
        eval_dataset: Mapping[str, Any] | Any = None,
        processing_class: Any = None,
        data_collator: Any = None,
        compute_metrics: TaskMetrics | None = None,
        callbacks: list | None = None,
        feature_cache: FeatureCache | None = None,
        model_card_data: Any = None,
        **kwargs: Any,
    ):
        if model is None:
            raise ValueError("MultiTaskTrainer needs a MultiTaskModel (model_init is not supported)")
        if args is None:
            args = MultiTaskTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, MultiTaskTrainingArguments):
            raise TypeError(
                f"args must be MultiTaskTrainingArguments, got {type(args).__name__}; "
                "build it with MultiTaskTrainingArguments(**your_args.to_dict())"
            )
        base = _unwrap(model)
        if not isinstance(base, MultiTaskModel):
            raise TypeError(f"model must be a MultiTaskModel (or a peft wrapper of one), got {type(base).__name__}")
        self.base_model_ref = base
        self.model_card_data = model_card_data  # a model_card.MultiTaskModelCardData; see create_model_card
        self.task_names = base.config.task_names
        self.train_datasets = self._as_task_dict(train_dataset, "train_dataset")
        self.eval_datasets = self._as_task_dict(eval_dataset, "eval_dataset")
        self._check_task_weights(args)
        if args.regression_labels == "standardize":
            self._set_label_scales(base)
        self.feature_cache = feature_cache if feature_cache is not None else default_feature_cache()
        self._prepared: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._eval_orders: dict[str, list[int] | None] = {}  # longest-first order per datasets fingerprint
        self.current_task: str | None = None
        self._user_compute_metrics = compute_metrics

        if args.finetune == "frozen":
            base.freeze_encoder()
        elif args.finetune == "partial":
            base.freeze_lower_layers(args.trainable_layers)  # validates k against the encoder, names its type
        elif args.finetune == "lora" and not _is_peft(model):
            model = apply_lora(
                base, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                target_modules=args.lora_target_modules,
            )
        if data_collator is None:
            data_collator = MultiTaskDataCollator(processing_class)

        train_concat = ConcatDataset(list(self.train_datasets.values())) if self.train_datasets else None
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_concat,
            eval_dataset=self.eval_datasets or None,
            processing_class=processing_class,
            compute_metrics=self._compute_metrics,
            callbacks=callbacks,
            **kwargs,
        )
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

    # ---- inputs -----------------------------------------------------------------------------------
    def _as_task_dict(self, data: Any, what: str) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            if len(self.task_names) != 1:
                raise ValueError(f"{what} must be a dict of task -> Dataset for a model with heads {self.task_names}")
            data = {self.task_names[0]: data}
        unknown = [t for t in data if t not in self.task_names]
        if unknown:
            raise ValueError(f"{what} has task(s) {unknown} with no head in the model; heads: {self.task_names}")
        for task, ds in data.items():
            if len(ds) == 0:
                raise ValueError(f"{what}: task {task!r} has an empty dataset")
            if "labels" not in ds.column_names:
                raise ValueError(f"{what}: task {task!r} has no 'labels' column (columns: {ds.column_names}); tokenize it first")
        return {t: data[t] for t in self.task_names if t in data}  # model's head order

    def _set_label_scales(self, base: MultiTaskModel) -> None:
        """Give each regression head without label statistics the mean and standard deviation of its training
        labels (``label_mean`` / ``label_std`` in ``config.tasks``): it then trains on standardized labels and
        predicts on the label scale. A head that has them (a checkpoint trained further) keeps its own."""
        tasks = dict(base.config.tasks)
        for task, ds in self.train_datasets.items():
            info = tasks[task]
            if info.get("type") != "regression" or label_scale(info) is not None:
                continue
            labels = np.asarray(_label_column(ds), dtype=np.float64).reshape(-1)
            labels = labels[np.isfinite(labels)]
            if labels.size == 0:
                continue
            std = float(labels.std())
            # constant labels: centre only (a zero or tiny scale would blow the standardized values up)
            tasks[task] = {**info, "label_mean": float(labels.mean()), "label_std": std if std > 1e-8 else 1.0}
        base.config.tasks = tasks  # a new dict: a task table shared with the caller is never changed

    def _check_task_weights(self, args: MultiTaskTrainingArguments) -> None:
        unknown = [t for t in (args.task_weights or {}) if t not in self.task_names]
        if unknown:
            raise ValueError(f"task_weights names unknown task(s) {unknown}; heads: {self.task_names}")

    def prepare_task_dataset(self, task: str, dataset: Any, split: str) -> Any:
        """The dataset as the model consumes it: ``task_ids`` added, in frozen mode the encoder
        ``features`` added (cached), unused columns dropped. Memoised per (task, split, dataset)."""
        key = (task, split, id(dataset))
        hit = self._prepared.get(key)
        if hit is not None and hit[0] is dataset:  # ids are reused after garbage collection
            return hit[1]
        ds = dataset
        if self.args.finetune == "partial":
            ds = self._partial_dataset(task, split, ds)
            self._prepared[key] = (dataset, ds)
            return ds
        if self.args.finetune == "frozen":
            base = self.base_model_ref
            base.to(self.args.device)
            ds = self.feature_cache.add_features(
                base, task, split, ds, batch_size=self.args.feature_batch_size, tokenizer=self.processing_class
            )
            ds = ds.remove_columns([c for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names])
        if "task_ids" in ds.column_names:
            ds = ds.remove_columns("task_ids")
        ds = ds.add_column("task_ids", [self.task_names.index(task)] * len(ds), new_fingerprint=_fp(ds, task))
        ds = self._remove_unused_columns(ds, description=f"{task}/{split}")
        if "features" in ds.column_names:  # numpy rows: no per-float Python objects in the data loader
            ds = ds.with_format("numpy", columns=["features"], output_all_columns=True)
        self._prepared[key] = (dataset, ds)
        return ds

    def _partial_dataset(self, task: str, split: str, dataset: Any) -> Any:
        """Cached token states of the frozen lower layers (+ labels, task_ids) as a memory-mapped torch dataset."""
        from hf_taskgroup.training.features import TokenStatesDataset

        if isinstance(dataset, TokenStatesDataset):
            return dataset.with_columns(task_ids=[self.task_names.index(task)] * len(dataset))
        if "input_ids" not in dataset.column_names:
            raise ValueError(f"{task}/{split}: partial mode needs tokenized inputs (input_ids); columns: {dataset.column_names}")
        base = self.base_model_ref
        base.to(self.args.device)
        ds = self.feature_cache.add_token_states(
            base, task, split, dataset, trainable_layers=self.args.trainable_layers,
            batch_size=self.args.feature_batch_size, tokenizer=self.processing_class,
        )
        return ds.with_columns(task_ids=[self.task_names.index(task)] * len(ds))

    # ---- training ---------------------------------------------------------------------------------
    def get_train_dataloader(self) -> DataLoader:
        if not self.train_datasets:
            raise ValueError("MultiTaskTrainer: training requires train_dataset")
        prepared = [self.prepare_task_dataset(t, ds, "train") for t, ds in self.train_datasets.items()]
        sampler = MultiTaskBatchSampler(
            [len(d) for d in prepared],
            batch_size=self._train_batch_size,
            strategy=self.args.task_sampling,
            temperature=self.args.sampling_temperature,
            seed=self.args.seed,
            drop_last=self.args.dataloader_drop_last,
            num_replicas=self.args.world_size,
            rank=self.args.process_index,
        )
        self.train_batch_sampler = sampler
        loader = DataLoader(
            TaskConcatDataset(prepared),
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        loader = self.accelerator.prepare(loader)
        # The sampler is already rank-aware: make accelerate's BatchSamplerShard a passthrough.
        shard = getattr(loader, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes = 1
            shard.process_index = 0
        return loader

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        loss = outputs.loss
        weights = self.args.task_weights
        if weights and model.training and "task_ids" in inputs:
            task = self.task_names[int(inputs["task_ids"].reshape(-1)[0])]
            loss = loss * float(weights.get(task, 1.0))
        return (loss, outputs) if return_outputs else loss

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(
        self,
        eval_dataset: Mapping[str, Any] | Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluate every task; keys ``{prefix}_{task}_{metric}`` plus ``{prefix}_loss`` (mean over tasks)."""
        datasets = self.eval_datasets if eval_dataset is None else self._as_task_dict(eval_dataset, "eval_dataset")
        if not datasets:
            raise ValueError("MultiTaskTrainer: evaluation requires eval_dataset")
        metrics: dict[str, float] = {}
        for task, ds in datasets.items():
            self.current_task = task
            try:
                task_metrics = super().evaluate(
                    eval_dataset=self.prepare_task_dataset(task, ds, metric_key_prefix),
                    ignore_keys=ignore_keys,
                    metric_key_prefix=f"{metric_key_prefix}_{task}",
                )
            finally:
                self.current_task = None
            metrics.update(task_metrics)
        losses = [metrics[f"{metric_key_prefix}_{t}_loss"] for t in datasets if f"{metric_key_prefix}_{t}_loss" in metrics]
        if losses:
            metrics[f"{metric_key_prefix}_loss"] = float(np.mean(losses))
            self.log({f"{metric_key_prefix}_loss": metrics[f"{metric_key_prefix}_loss"]})
        return metrics

    def predict_tasks(
        self, test_datasets: Mapping[str, Any], metric_key_prefix: str = "test"
    ) -> dict[str, PredictionOutput]:
        """``predict`` for each task: ``{task: PredictionOutput}`` with metrics ``{prefix}_{task}_{metric}``."""
        out = {}
        for task, ds in self._as_task_dict(test_datasets, "test_datasets").items():
            self.current_task = task
            try:
                out[task] = self.predict(
                    self.prepare_task_dataset(task, ds, metric_key_prefix), metric_key_prefix=f"{metric_key_prefix}_{task}"
                )
            finally:
                self.current_task = None
        return out

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
                ) -> PredictionOutput:
        """``Trainer.predict``, with predictions and labels in ``test_dataset``'s row order also when the rows were
        run longest first (``args.eval_sort_by_length``)."""
        out = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        order = self._eval_order(test_dataset)
        if order is None:
            return out
        inverse = np.argsort(np.asarray(order))
        return PredictionOutput(predictions=_take_rows(out.predictions, inverse),
                                label_ids=_take_rows(out.label_ids, inverse), metrics=out.metrics)

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler | None:
        order = self._eval_order(eval_dataset)
        return super()._get_eval_sampler(eval_dataset) if order is None else _FixedOrderSampler(order)

    def _eval_order(self, dataset: Any) -> list[int] | None:
        """The longest-first row order of an evaluation/prediction pass, or None for the dataset's own order (sorting
        off, several processes, ``group_by_length``, rows of one length, or a token task).

        Token tasks keep the dataset's order: Trainer's ``eval_loss`` is a mean of per-batch losses weighted by
        rows, which equals the mean over examples for one-output-per-row tasks in any batching, but for a token
        task each batch's loss is a mean over its tokens, so other batches would change that loss (by 3% on NCBI
        disease) and make it disagree with results computed before."""
        if (dataset is None or not getattr(self.args, "eval_sort_by_length", False) or self.args.world_size > 1
                or self.args.train_sampling_strategy == "group_by_length"):
            return None
        task = self.current_task
        if task is not None and self.base_model_ref.config.tasks.get(task, {}).get("type") == "token_classification":
            return None
        key = getattr(dataset, "_fingerprint", None)  # a datasets.Dataset's content id: the order is computed once
        if key is not None and key in self._eval_orders:
            return self._eval_orders[key]
        lengths = _row_lengths(dataset)
        order = None if lengths is None or len(set(lengths)) <= 1 else \
            sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep dataset order
        if key is not None:
            self._eval_orders[key] = order
        return order

    # ---- model card: rendered by the publishing stage through a registered writer -------------------------------
    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write the card (``README.md``) into ``args.output_dir``: tasks, grouping, per-task results, how to load
        each head; ``self.model_card_data`` wins over what is read from the model and the log history. Called by
        ``push_to_hub`` after saving, so it replaces PEFT's card under LoRA.

        The trainer holds the card data; the rendering belongs to the publishing stage, which registers its
        writer with :func:`set_model_card_writer` (``import hf_taskgroup`` does it), so this module never
        imports publishing.
        """
        if _MODEL_CARD_WRITER is None:
            logger.warning("no model card writer is registered (import hf_taskgroup.publishing.model_card); "
                           "no card written to %s", self.args.output_dir)
            return
        _MODEL_CARD_WRITER(
            self, language=language, license=license, tags=tags, model_name=model_name,
            finetuned_from=finetuned_from, dataset=dataset,
        )

    def _compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        task = self.current_task
        if task is None:
            raise RuntimeError("compute_metrics called outside a per-task evaluation")
        user = self._user_compute_metrics
        user = user.get(task) if isinstance(user, Mapping) else user
        if user is not None and not isinstance(user, MetricModule):
            return user(eval_pred)
        info = self.base_model_ref.config.tasks[task]
        return make_compute_metrics(info["type"], id2label=info.get("id2label"), metric_module=user)(eval_pred)


_MODEL_CARD_WRITER: Callable[..., Any] | None = None


def set_model_card_writer(writer: Callable[..., Any] | None) -> None:
    """Register the function that renders :meth:`MultiTaskTrainer.create_model_card` (the publishing stage's).

    Example::

        >>> from hf_taskgroup.publishing.model_card import write_trainer_model_card
        >>> set_model_card_writer(write_trainer_model_card)
    """
    global _MODEL_CARD_WRITER
    _MODEL_CARD_WRITER = writer


def _fp(dataset: Any, task: str) -> str:
    import hashlib

    return hashlib.sha256(f"{getattr(dataset, '_fingerprint', id(dataset))}-task_ids-{task}".encode()).hexdigest()[:16]


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _unwrap(model: Any) -> Any:
    return model.get_base_model() if _is_peft(model) else model


class _FixedOrderSampler(torch.utils.data.Sampler):
    """Yields a fixed list of row indices (the longest-first order of an evaluation pass)."""

    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self) -> Any:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def _row_lengths(dataset: Any) -> list[int] | None:
    """Tokens per row: the lengths of cached token states (partial mode) or of ``input_ids``; None when the rows
    have no length (frozen-mode features)."""
    from hf_taskgroup.training.features import TokenStatesDataset

    if isinstance(dataset, TokenStatesDataset):
        return dataset.states.lengths()
    names = getattr(dataset, "column_names", None)
    if names is None or "input_ids" not in names:
        return None
    return [len(ids) for ids in dataset["input_ids"]]


def _take_rows(value: Any, index: np.ndarray) -> Any:
    """``value`` (an array, or a tuple/list/dict of them, as ``Trainer.predict`` returns) with its rows reordered."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_take_rows(v, index) for v in value)
    if isinstance(value, dict):
        return {k: _take_rows(v, index) for k, v in value.items()}
    return np.asarray(value)[index]
