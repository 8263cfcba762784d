"""Export one task of a grouped model as an ordinary single-task checkpoint.

:func:`export_task` writes the shared encoder plus one task's head as a checkpoint that
``pipeline("text-classification")`` / ``pipeline("token-classification")`` and
``AutoModelForSequenceClassification`` / ``AutoModelForTokenClassification`` load, with the same outputs
as the grouped model for that task. Two kinds of checkpoint, chosen per task:

- **standard** (no custom code): the encoder architecture's own ``...ForTokenClassification`` (e.g.
  ``BertForTokenClassification``) when the task is token classification and the model has no shared trunk:
  that class is exactly "encoder token states -> dropout -> linear", our head.
- **custom code** (``trust_remote_code=True``): everything else. A sequence-level head does not map onto the
  standard ``...ForSequenceClassification`` classes: BERT's applies a pooler (dense + tanh) to the first
  token, RoBERTa's and ELECTRA's a dense layer + activation, none averages tokens (``mean`` pooling) or has
  our shared MLP trunk. Such a task is written as a single-task copy of the grouped model (encoder, pooling,
  trunk, this head) whose ``config.json`` maps ``AutoModelForSequenceClassification`` /
  ``AutoModelForTokenClassification`` to the self-contained code saved next to it; ``pipeline(...,
  trust_remote_code=True)`` loads it. ``allow_custom_code=False`` refuses these tasks with an error that
  says why.

Every standard export is checked on a probe input: if the standard class's logits differ from the grouped
model's, the task falls back to the custom-code export (or is refused).

Example::

    >>> from hf_taskgroup.publishing.export import export_task
    >>> result = export_task("outputs/run/models/pvi/hoc+ncbi_disease", "ncbi_disease", "exports/ncbi")  # doctest: +SKIP
    >>> result.standard, result.architecture  # doctest: +SKIP
    (True, 'BertForTokenClassification')
    >>> from transformers import pipeline
    >>> pipeline("token-classification", model="exports/ncbi")("Mutations cause breast cancer .")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["TaskExport", "export_task"]

_PROBLEM_TYPES = {"classification": "single_label_classification", "multilabel": "multi_label_classification",
                  "regression": "regression"}
_SINGLE_TASK_CLASSES = {"token_classification": ("AutoModelForTokenClassification",
                                                 "HfTaskGroupForTokenClassification")}
_SEQUENCE_CLASS = ("AutoModelForSequenceClassification", "HfTaskGroupForSequenceClassification")


@dataclass
class TaskExport:
    """What :func:`export_task` wrote: the folder, the model class, whether it is a standard transformers class
    (no custom code) and, if not, why not."""

    path: Path
    task: str
    architecture: str
    standard: bool
    reason: str | None = None
    pipeline_task: str = "text-classification"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "task": self.task, "architecture": self.architecture,
                "standard": self.standard, "reason": self.reason, "pipeline_task": self.pipeline_task}


def _label_names(info: dict[str, Any]) -> list[str]:
    names = info.get("id2label")
    if names:
        return [str(x) for x in (names.values() if isinstance(names, dict) else names)]
    return [str(i) for i in range(int(info["num_labels"]))]


def _load(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    from transformers import AutoModel

    if isinstance(model, (str, Path)):
        source = str(model)
        model = AutoModel.from_pretrained(source)
        if tokenizer is None:
            from hf_taskgroup.training.predict import load_predict_tokenizer

            tokenizer = load_predict_tokenizer(model)
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    if tokenizer is None:
        try:
            from hf_taskgroup.training.predict import load_predict_tokenizer

            tokenizer = load_predict_tokenizer(model)
        except ValueError:
            tokenizer = None
    return model, tokenizer


def _probe(model: Any, vocab_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(low=min(5, vocab_size - 1), high=vocab_size, size=(2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _standard_token_model(model: Any, task: str, labels: list[str]) -> tuple[Any | None, str | None]:
    """``AutoModelForTokenClassification`` of the encoder's architecture with this task's head, or (None, why)."""
    from transformers import AutoModelForTokenClassification

    if model.trunk is not None:
        return None, (f"a shared trunk {list(model.config.trunk_hidden_sizes)} sits between the encoder and the head; "
                      "...ForTokenClassification has none")
    from hf_taskgroup.training.modeling import public_model_reference

    config = copy.deepcopy(model.config.encoder)
    config._name_or_path = public_model_reference(getattr(config, "_name_or_path", None)) or ""  # no local paths
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    try:
        standard = AutoModelForTokenClassification.from_config(config)
    except ValueError as err:
        return None, f"the encoder type {config.model_type!r} has no ...ForTokenClassification class ({err})"
    base = getattr(standard, standard.base_model_prefix, None)
    classifier = getattr(standard, "classifier", None)
    head = model.heads[task].out_proj
    if base is None or not isinstance(classifier, torch.nn.Linear) or classifier.weight.shape != head.weight.shape:
        return None, f"{type(standard).__name__} does not end in one linear classifier over the token states"
    missing, _ = base.load_state_dict(model.encoder.state_dict(), strict=False)
    if missing:
        return None, f"{type(standard).__name__}'s encoder has weights the grouped encoder lacks, e.g. {missing[:2]}"
    with torch.no_grad():
        classifier.weight.copy_(head.weight)
        classifier.bias.copy_(head.bias)
    return standard, None


def _same_logits(standard: Any, model: Any, task: str) -> bool:
    probe = _probe(model, int(model.config.encoder.vocab_size))
    standard.eval()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = model(**probe, task_ids=torch.full((2,), model.task_index(task))).logits
            theirs = standard(**probe).logits
    finally:
        model.train(was_training)
    return ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)


def _single_task_copy(model: Any, task: str) -> Any:
    """A one-head MultiTaskModel holding the grouped model's encoder, trunk and this task's head."""
    from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel

    values = {k: v for k, v in model.config.to_dict().items()
              if k in ("pooling", "trunk_hidden_sizes", "trunk_dropout", "classifier_dropout", "encoder_name_or_path")}
    config = MultiTaskConfig(encoder=copy.deepcopy(model.config.encoder), tasks={task: dict(model.config.tasks[task])},
                             **values)
    single = MultiTaskModel(config)
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("heads.") or k.startswith(f"heads.{task}.")}
    single.load_state_dict(state, strict=True)
    return single


def _write_custom(model: Any, task: str, labels: list[str], out: Path) -> str:
    from hf_taskgroup.training.modeling import REMOTE_AUTO_MAP

    ttype = model.config.tasks[task]["type"]
    auto_class, class_name = _SINGLE_TASK_CLASSES.get(ttype, _SEQUENCE_CLASS)
    single = _single_task_copy(model, task)
    single.save_pretrained(str(out))
    path = out / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    module = REMOTE_AUTO_MAP["AutoConfig"].split(".")[0]
    config.update({
        "model_type": "hf-taskgroup-single-task",
        "architectures": [class_name],
        "auto_map": {"AutoConfig": f"{module}.HfTaskGroupSingleTaskConfig", auto_class: f"{module}.{class_name}"},
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    })
    if ttype in _PROBLEM_TYPES:
        config["problem_type"] = _PROBLEM_TYPES[ttype]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return class_name


def export_task(model: Any, task: str, output_dir: str | Path, *, tokenizer: Any = None,
                allow_custom_code: bool = True) -> TaskExport:
    """Write task ``task`` of a grouped model (a ``MultiTaskModel``, a LoRA-wrapped one, or a folder / Hub id
    of one) to ``output_dir`` as a single-task checkpoint with the tokenizer; see the module docstring for
    which tasks get a standard transformers class and which a custom-code one.

    Raises ``KeyError`` for an unknown task (listing the heads) and, with ``allow_custom_code=False``,
    ``ValueError`` naming the task and why no standard class represents it.

    Example::

        >>> export = export_task(model, "sst2", "exports/sst2", tokenizer=tokenizer)  # doctest: +SKIP
        >>> pipeline(export.pipeline_task, model="exports/sst2", trust_remote_code=not export.standard)  # doctest: +SKIP
    """
    model, tokenizer = _load(model, tokenizer)
    if task not in model.config.task_names:
        raise KeyError(f"model has no head for task {task!r}; heads: {model.config.task_names}")
    info = model.config.tasks[task]
    ttype = info["type"]
    labels = _label_names(info)
    out = Path(output_dir)
    pipeline_task = "token-classification" if ttype == "token_classification" else "text-classification"
    if ttype == "token_classification":
        standard, reason = _standard_token_model(model, task, labels)
        if standard is not None and not _same_logits(standard, model, task):
            standard, reason = None, f"{type(standard).__name__} does not reproduce the grouped model's logits"
    else:
        encoder = type(model.encoder).__name__.removesuffix("Model")
        standard, reason = None, (
            f"{encoder}ForSequenceClassification cannot hold this head: it classifies its own pooled output "
            f"(e.g. BERT: dense + tanh over the first token), while this model uses {model.config.pooling} pooling"
            + (f" and a shared trunk {list(model.config.trunk_hidden_sizes)}" if model.trunk is not None else "")
            + " straight into a linear head")
    if standard is None and not allow_custom_code:
        raise ValueError(f"task {task!r} cannot be exported as a standard transformers model: {reason}. "
                         "Export it with allow_custom_code=True (the default) and load it with "
                         "trust_remote_code=True.")
    out.mkdir(parents=True, exist_ok=True)
    if standard is not None:
        standard.save_pretrained(str(out))
        architecture = type(standard).__name__
    else:
        architecture = _write_custom(model, task, labels, out)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    else:
        logger.warning("export_task: no tokenizer saved in %s; pipeline() will need tokenizer=...", out)
    result = TaskExport(out, task, architecture, standard is not None, reason, pipeline_task)
    logger.info("Exported task %r to %s as %s (%s)", task, out, architecture,
                "standard" if result.standard else f"custom code: {reason}")
    return result
