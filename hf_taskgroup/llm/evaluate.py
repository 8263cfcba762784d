"""Evaluate a prompted causal LM (zero- or few-shot) on every task of a suite, with each task's primary metric.

This answers "should I fine-tune grouped encoders at all, or just prompt an LLM?" on the user's own suite,
as arXiv 2410.12774 does for its clinical tasks. Scoring, not free generation, where possible:

- classification: each label's verbalisation is scored by its (length-normalised) log-likelihood after the
  prompt; the best one is the prediction;
- multi-label: one yes/no question per label; ``log p(yes) - log p(no)`` is the label's logit;
- regression: a short greedy generation, the first number in it is the prediction (the training mean when
  none can be parsed; the unparseable fraction is reported);
- token classification: the model lists the entity mentions, which are matched back to word spans
  (approximate: reported as such).

Per task, predictions are saved as a dataset with a summary under ``output_dir/<task>/``; a re-run with the
same settings reuses them (resumable per task).

Example::

    >>> from hf_taskgroup.llm import LLMConfig, evaluate_llm
    >>> results = evaluate_llm(suite, LLMConfig(model="Qwen/Qwen2.5-0.5B-Instruct", shots=3))  # doctest: +SKIP
    >>> results["pubmedqa"].score  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.config import LLMArguments
from hf_taskgroup.data.tasks import TaskSpec, TaskSuite, TaskValidationError
from hf_taskgroup.llm.prompts import NO, YES, PromptBuilder, entity_types, mentions_to_tags
from hf_taskgroup.llm.scoring import continuation_logprobs, generate, uses_chat_template
from hf_taskgroup.training.metrics import compute_task_metrics, primary_metric
from hf_taskgroup.utils import atomic_write_json

logger = logging.getLogger(__name__)

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


#: the settings of a prompted causal LM (declared once, in the configuration spine)
LLMConfig = LLMArguments


def scoring_key(config: LLMArguments) -> dict[str, Any]:
    """The settings that change predictions (batch size, device placement and remote-code trust do not)."""
    d = asdict(config)
    for k in ("batch_size", "device_map", "trust_remote_code"):
        d.pop(k)
    return d


@dataclass
class LLMTaskResult:
    """One task's result: metrics on ``split``, the primary metric, and the saved predictions."""

    task: str
    type: str
    split: str
    num_examples: int
    metrics: dict[str, float]
    primary_metric: str
    unparseable_fraction: float | None = None
    approximate: bool = False
    predictions_path: str | None = None

    @property
    def score(self) -> float:
        return self.metrics[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_causal_lm(config: LLMConfig) -> tuple[Any, Any]:
    """Load ``config.model`` with ``AutoModelForCausalLM`` and its tokenizer (left padding, a pad token)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not config.model:
        raise ValueError("no model given: pass a causal LM's Hub id or local folder (--model)")
    looks_local = config.model.startswith((".", "/", "~")) or config.model.count("/") > 1
    if looks_local and not Path(config.model).expanduser().is_dir():
        raise FileNotFoundError(f"model folder not found: {config.model}")
    dtype: Any = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(config.dtype)
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(config.model, trust_remote_code=config.trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": config.trust_remote_code}
    if config.device_map:
        kwargs["device_map"] = config.device_map
    model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
    if not config.device_map and torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


def parse_number(text: str) -> float | None:
    """The first number in ``text`` (``None`` when there is none or it is not finite)."""
    m = _NUMBER.search(text or "")
    if m is None:
        return None
    value = float(m.group(0))
    return value if math.isfinite(value) else None


def _examples(task: TaskSpec, config: LLMConfig) -> Any:
    data = task.load()
    if config.split not in data:
        raise TaskValidationError([f"task {task.name!r}: no split {config.split!r} (have {sorted(data)})"])
    ds = data[config.split]
    if len(ds) == 0:
        raise TaskValidationError([f"task {task.name!r}, split {config.split!r}: the split is empty"])
    if config.max_examples is not None and len(ds) > config.max_examples:
        ds = ds.shuffle(seed=config.seed).select(range(config.max_examples))
    return ds


def _task_key(task: TaskSpec, config: LLMConfig) -> dict[str, Any]:
    spec = {k: v for k, v in task.to_dict().items() if k != "data"}
    ds = task.load()[config.split]
    fingerprint = getattr(ds, "_fingerprint", None)
    return {"task": spec, "data": fingerprint, "settings": scoring_key(config), "version": 1}


def _predict_task(task: TaskSpec, rows: Any, config: LLMConfig, model: Any, tokenizer: Any,
                  progress: bool) -> tuple[dict[str, list], dict[str, float], float | None]:
    builder = PromptBuilder(task, shots=config.shots, seed=config.seed, max_text_chars=config.max_text_chars)
    chat = uses_chat_template(tokenizer, config.chat_template)
    space = "" if chat else " "
    score_kw = {"chat": chat, "batch_size": config.batch_size, "max_prompt_tokens": config.max_prompt_tokens}
    gen_kw = {**score_kw, "max_new_tokens": config.max_new_tokens}
    examples = [rows[i] for i in range(len(rows))]
    labels_col = [ex[task.label_column] for ex in examples]
    n = len(examples)
    unparseable = None
    if task.type == "classification":
        words = builder.label_words
        pairs = [(builder.prefix(ex), space + w) for ex in examples for w in words]
        scores = _chunked(lambda p: continuation_logprobs(model, tokenizer, p, **score_kw), pairs, progress, task.name)
        scores = scores.reshape(n, len(words))
        gold = np.array([builder.labels.index(str(y)) for y in labels_col])
        metrics = compute_task_metrics("classification", scores, gold)
        preds = {"prediction": [builder.labels[i] for i in scores.argmax(1)], "scores": scores.tolist()}
    elif task.type == "multilabel":
        labels = builder.labels
        pairs = [(builder.prefix(ex, lab), space + ans) for ex in examples for lab in labels for ans in (YES, NO)]
        flat = _chunked(lambda p: continuation_logprobs(model, tokenizer, p, **score_kw), pairs, progress, task.name)
        logits = flat.reshape(n, len(labels), 2) @ np.array([1.0, -1.0])
        gold = np.array([[1.0 if lab in {str(v) for v in (y or [])} else 0.0 for lab in labels] for y in labels_col])
        metrics = compute_task_metrics("multilabel", logits, gold)
        preds = {"prediction": [[labels[j] for j in np.flatnonzero(row > 0)] for row in logits], "scores": logits.tolist()}
    elif task.type == "regression":
        texts = _chunked_text(lambda p: generate(model, tokenizer, p, **gen_kw), [builder.prefix(ex) for ex in examples],
                              progress, task.name)
        parsed = [parse_number(t) for t in texts]
        fallback = float(np.mean([float(y) for y in task.load()["train"][task.label_column]]))
        unparseable = sum(v is None for v in parsed) / n
        values = np.array([fallback if v is None else v for v in parsed], dtype=np.float64)
        metrics = compute_task_metrics("regression", values, np.array(labels_col, dtype=np.float64))
        preds = {"prediction": values.tolist(), "generated": texts}
    else:
        tag_names = builder.labels
        kinds = entity_types(tag_names)
        texts = _chunked_text(lambda p: generate(model, tokenizer, p, **gen_kw), [builder.prefix(ex) for ex in examples],
                              progress, task.name)
        tags = [mentions_to_tags(t, ex[task.tokens_column], kinds, tag_names) for t, ex in zip(texts, examples)]
        width = max(len(t) for t in tags)
        onehot = np.zeros((n, width, len(tag_names)), dtype=np.float32)
        gold = np.full((n, width), -100, dtype=np.int64)
        for r, (row, y) in enumerate(zip(tags, labels_col)):
            for j, (p, g) in enumerate(zip(row, y)):
                onehot[r, j, tag_names.index(p)] = 1.0
                gold[r, j] = tag_names.index(str(g))
        metrics = compute_task_metrics("token_classification", onehot, gold, id2label=tag_names)
        preds = {"prediction": tags, "generated": texts}
    return preds, metrics, unparseable


def _chunked(fn: Any, items: Sequence[Any], progress: bool, name: str, chunk: int = 64) -> np.ndarray:
    from hf_taskgroup.log import progress_bar

    out = []
    with progress_bar(total=len(items), desc=f"llm {name}", unit="seq", nested=True, progress=progress) as bar:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            out.append(fn(part))
            bar.update(len(part))
    return np.concatenate(out) if out else np.zeros(0)


def _chunked_text(fn: Any, items: Sequence[str], progress: bool, name: str, chunk: int = 32) -> list[str]:
    from hf_taskgroup.log import progress_bar

    out: list[str] = []
    with progress_bar(total=len(items), desc=f"llm {name}", unit="ex", nested=True, progress=progress) as bar:
        for start in range(0, len(items), chunk):
            part = list(items[start:start + chunk])
            out.extend(fn(part))
            bar.update(len(part))
    return out


def _load_cached(task_dir: Path, key: dict[str, Any]) -> LLMTaskResult | None:
    summary = task_dir / "summary.json"
    if not summary.is_file() or not (task_dir / "predictions").is_dir():
        return None
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable; the task is evaluated again", summary)
        return None
    if data.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    return LLMTaskResult(**data["result"])


def _save(task_dir: Path, key: dict[str, Any], result: LLMTaskResult, preds: Mapping[str, list]) -> None:
    import datasets

    task_dir.mkdir(parents=True, exist_ok=True)
    tmp = task_dir / "predictions.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cols = {"index": list(range(result.num_examples))}
    for name, values in preds.items():
        cols[name] = [json.dumps(v) if isinstance(v, list) and name == "prediction" and result.type != "regression"
                      else v for v in values]
    datasets.Dataset.from_dict(cols).save_to_disk(str(tmp))
    final = task_dir / "predictions"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    result.predictions_path = str(final)
    atomic_write_json(task_dir / "summary.json", {"key": key, "result": result.to_dict()})


def evaluate_llm(
    suite: TaskSuite,
    config: LLMConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    output_dir: str | Path | None = "outputs/llm",
    progress: bool = True,
) -> dict[str, LLMTaskResult]:
    """Prompt a causal LM on every task of ``suite`` (see the module docstring) and score it.

    Args:
        suite: the tasks (validated first; the evaluated split must exist and be non-empty).
        config: prompting and scoring settings.
        model, tokenizer: an already loaded causal LM (otherwise ``config.model`` is loaded).
        output_dir: per-task predictions and summaries; a task whose summary matches the settings is reused.
            ``None`` keeps nothing on disk.
        progress: show a progress bar per task.

    Returns:
        ``{task: LLMTaskResult}`` in suite order.
    """
    suite.validate()
    for task in suite:  # every split problem before any model is loaded
        _examples(task, config)
    out = Path(output_dir) if output_dir is not None else None
    results: dict[str, LLMTaskResult] = {}
    for task in suite:
        key = _task_key(task, config)
        task_dir = out / task.name if out is not None else None
        cached = _load_cached(task_dir, key) if task_dir is not None else None
        if cached is not None:
            results[task.name] = cached
            continue
        if model is None or tokenizer is None:
            model, tokenizer = load_causal_lm(config)
        rows = _examples(task, config)
        preds, metrics, unparseable = _predict_task(task, rows, config, model, tokenizer, progress)
        result = LLMTaskResult(
            task=task.name, type=task.type, split=config.split, num_examples=len(rows), metrics=metrics,
            primary_metric=primary_metric(task.type), unparseable_fraction=unparseable,
            approximate=task.type == "token_classification",
        )
        if task_dir is not None:
            _save(task_dir, key, result, preds)
        results[task.name] = result
    return results


def llm_method_evaluation(results: Mapping[str, LLMTaskResult], reference: Any) -> Any:
    """The LLM's scores as a report column: a :class:`~hf_taskgroup.report.evaluation.MethodEvaluation` named
    ``llm`` whose rows compare each task's LLM score with its single-task score from ``reference`` (any method's
    evaluation of the same run; every method shares the single-task baseline). Parameters are not counted
    (the LLM trains nothing), so ``grouped_parameters`` is 0.
    """
    from hf_taskgroup.report.evaluation import MethodEvaluation, TaskRow
    from hf_taskgroup.training.metrics import greater_is_better

    rows = {}
    for task, res in results.items():
        ref = reference.rows[task]
        if ref.metric != res.primary_metric:
            raise ValueError(f"task {task!r}: the run reports {ref.metric!r}, the LLM {res.primary_metric!r}")
        sign = 1.0 if greater_is_better(ref.metric) else -1.0
        gain = sign * (res.score - ref.stl_mean)
        rows[task] = TaskRow(task=task, metric=ref.metric, group=[task], stl_mean=ref.stl_mean, stl_std=ref.stl_std,
                             mtl_mean=float(res.score), mtl_std=0.0, gain=gain, negative_transfer=gain < 0, seeds=1)
    return MethodEvaluation(method="llm", groups=[[t] for t in results], rows=rows,
                            stl_parameters=reference.stl_parameters, grouped_parameters=0,
                            cost={"trainings": 0, "examples": sum(r.num_examples for r in results.values())})


def format_llm_table(results: Mapping[str, LLMTaskResult]) -> str:
    """A plain-text table of the primary metric per task (with the caveats that apply)."""
    lines = [f"{'task':<20} {'metric':<10} {'llm':>7}  notes"]
    for name, r in results.items():
        notes = []
        if r.unparseable_fraction:
            notes.append(f"{r.unparseable_fraction:.0%} unparseable (train mean used)")
        if r.approximate:
            notes.append("approximate (mentions matched to spans)")
        lines.append(f"{name:<20} {r.primary_metric:<10} {r.score:>7.3f}  {'; '.join(notes)}")
    return "\n".join(lines)
