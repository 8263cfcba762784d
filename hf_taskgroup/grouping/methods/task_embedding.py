"""``task_embedding``: Fisher task embeddings (Vu et al., EMNLP 2020, "TaskEmb"; notes C.3), clustered.

Per task: fine-tune a single-task model (``train_group(suite, [task], settings)``; frozen mode by default, i.e.
trunk + head on cached encoder features), then compute the empirical Fisher diagonal with respect to the
**pooled encoder representation** (the encoder's pooled output, the input of the trunk, or of the head when
there is no trunk; token states for token classification):

    e_task = mean over training examples x of (d loss(x, y) / d h(x))^2       (elementwise, one H-vector)

with the gold labels (Vu et al.'s ``--use_labels``), the model in eval mode (no dropout). The encoder output
is used rather than the trunk output because it lives in the same coordinate system for every task (in
frozen mode it is literally the same encoder), so cosines between tasks are meaningful; a per-task trained
trunk would give each task its own coordinates. For token classification the per-example gradient is that of
the example's mean token loss with respect to its token states, squared and summed over tokens.

Tasks are then compared by the cosine similarity of their embeddings and grouped by the ``clustering``
method (hierarchical, average linkage by default) on the distance ``1 - cosine``: give ``num_groups`` or a
``distance_threshold`` (in ``1 - cosine`` units). Cost: one single-task training plus one gradient pass over
the training set per task (recorded in ``Grouping.cost``); embeddings are cached per task in ``cache_dir``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.artifacts import stable_hash
from hf_taskgroup.grouping.registry import register_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost

logger = logging.getLogger(__name__)

ModelFactory = Callable[[dict[str, Any]], Any]  # model_factory(task_infos) -> MultiTaskModel
GRADIENT_TARGET = "pooled encoder representation (trunk input)"


def fisher_embedding(trainer: Any, task: str, *, max_examples: int | None = None, batch_size: int = 64,
                     seed: int = 0) -> tuple[np.ndarray, int]:
    """Mean squared gradient of the loss w.r.t. the pooled encoder representation over ``task``'s training set.

    ``trainer`` is a :class:`~hf_taskgroup.training.trainer.MultiTaskTrainer` whose model was fine-tuned on ``task``.
    Returns ``(embedding [H], number of examples used)``; ``max_examples`` draws a seeded subset.

    Example::

        >>> result = train_group(suite, ["sst2"], TrainSettings())               # doctest: +SKIP
        >>> vector, n = fisher_embedding(result["trainer"], "sst2")             # doctest: +SKIP
    """
    import torch

    model = trainer.base_model_ref
    ds = trainer.prepare_task_dataset(task, trainer.train_datasets[task], "train")
    rows = np.arange(len(ds))
    if max_examples is not None and max_examples < len(ds):
        rows = np.sort(np.random.default_rng(seed).choice(len(ds), size=max_examples, replace=False))
    ttype = model.config.tasks[task]["type"]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total: torch.Tensor | None = None
    try:
        for start in range(0, len(rows), batch_size):
            chunk = [int(r) for r in rows[start:start + batch_size]]
            columns = ds[chunk]
            batch = trainer.data_collator([{k: v[i] for k, v in columns.items()} for i in range(len(chunk))])
            batch = {k: v.to(device) for k, v in batch.items()}
            feats = batch.pop("features", None)
            if feats is None:
                with torch.no_grad():
                    feats = model.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                                         token_level=ttype == "token_classification")
            feats = feats.detach().float().requires_grad_(True)
            with torch.enable_grad():
                logits = model(features=feats, task_ids=batch["task_ids"]).logits
                losses = per_example_losses(ttype, logits, batch["labels"])
                (grad,) = torch.autograd.grad(losses.sum(), feats)  # examples are independent: per-example grads
            sq = grad.pow(2)
            if sq.dim() == 3:  # token states: sum over tokens (padding has zero gradient)
                sq = sq.sum(dim=1)
            part = sq.sum(dim=0)
            total = part if total is None else total + part
    finally:
        model.train(was_training)
    assert total is not None
    return (total / len(rows)).double().cpu().numpy(), len(rows)


def per_example_losses(task_type: str, logits: Any, labels: Any) -> Any:
    """One loss per example (the model's task loss before averaging over the batch)."""
    import torch.nn.functional as F

    if task_type == "classification":
        return F.cross_entropy(logits.float(), labels.long(), reduction="none")
    if task_type == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none").mean(dim=-1)
    if task_type == "regression":
        return (logits.float().reshape(labels.shape) - labels.float()) ** 2
    if task_type == "token_classification":
        per_token = F.cross_entropy(logits.float().transpose(1, 2), labels.long(), ignore_index=-100, reduction="none")
        counts = (labels != -100).sum(dim=1).clamp(min=1)
        return per_token.sum(dim=1) / counts
    raise ValueError(f"unknown task type {task_type!r}")


def _cache_key(suite: Any, task: str, settings: Any, max_examples: int | None, *, model: str | None,
               tokenizer: str | None) -> str:
    from hf_taskgroup.grouping.evaluators.text import suite_fingerprint

    identity = {"suite": suite_fingerprint(suite, [task]), "settings": settings.to_dict(),
                "max_examples": max_examples, "target": GRADIENT_TARGET,
                "inputs": {"model": model, "tokenizer": tokenizer}}
    return stable_hash(identity, length=64)


def compute_task_embeddings(
    suite: Any,
    tasks: Sequence[str],
    settings: Any,
    *,
    tokenizer: Any = None,
    model_factory: ModelFactory | None = None,
    cache_dir: str | Path | None = None,
    max_examples: int | None = None,
) -> tuple[dict[str, np.ndarray], GroupingCost]:
    """Fine-tune each task alone and return ``({task: Fisher embedding}, cost)``; cached per task in ``cache_dir``.

    ``model_factory(task_infos)`` builds the single-task model (default: the settings' encoder).

    Cache entries ``<cache_dir>/<task>.<key>.json`` are written through an
    :class:`~hf_taskgroup.artifacts.ArtifactStore` with a manifest (size, sha256, the key as input
    fingerprint). The key covers the task's data content and spec, the settings, ``max_examples``, the
    model (:func:`~hf_taskgroup.artifacts.model_fingerprint` of the settings' encoder; with a
    ``model_factory``, :func:`~hf_taskgroup.artifacts.weights_fingerprint` of the model it builds, so seed the factory) and the
    tokenizer (:func:`~hf_taskgroup.artifacts.tokenizer_fingerprint`). A corrupt entry is named in one
    :class:`~hf_taskgroup.artifacts.ArtifactWarning` and computed again; an entry without a manifest (written
    before manifests existed) is computed again quietly.

    Example::

        >>> embeddings, cost = compute_task_embeddings(suite, suite.task_names, TrainSettings())  # doctest: +SKIP
    """
    from hf_taskgroup.artifacts import (
        ArtifactStore,
        model_fingerprint,
        tokenizer_fingerprint,
        weights_fingerprint,
    )
    from hf_taskgroup.training.train import train_group

    start = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    cost = GroupingCost()
    store = ArtifactStore(cache_dir) if cache_dir is not None else None
    tok_fp = tokenizer_fingerprint(tokenizer)
    encoder_fp = None if model_factory is not None else model_fingerprint(settings.model_name_or_path)
    for task in tasks:
        model = model_factory(suite.subset([task]).task_infos()) if model_factory is not None else None
        model_fp = weights_fingerprint(model) if model is not None else encoder_fp
        key = _cache_key(suite, task, settings, max_examples, model=model_fp, tokenizer=tok_fp)
        name = f"{task}.{key[:16]}.json"

        def load(path: Path, key: str = key) -> np.ndarray:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("key") != key:
                raise ValueError(f"holds key {entry.get('key')}, expected {key}")
            return np.asarray(entry["embedding"], dtype=float)

        if store is not None:
            cached = store.load(name, fingerprint=key, loader=load)
            if cached is not None:
                out[task] = cached
                continue
        with tempfile.TemporaryDirectory(prefix="hf_taskgroup_taskemb_") as tmp:
            run = train_group(suite, [task], settings, output_dir=tmp, eval_splits=(), tokenizer=tokenizer, model=model)
            trainer = run.pop("trainer")
            vector, used = fisher_embedding(trainer, task, max_examples=max_examples, seed=settings.seed,
                                            batch_size=settings.per_device_eval_batch_size)
        n_train = len(trainer.train_datasets[task])
        cost.trainings += 1
        cost.examples += int(round(n_train * settings.num_train_epochs)) + used
        out[task] = vector
        if store is not None:
            store.write_json(name, {"task": task, "key": key, "target": GRADIENT_TARGET, "examples": used,
                                    "embedding": vector.tolist()}, fingerprint=key)
        logger.info("task_embedding: %s done (%d examples)", task, used)
    cost.seconds = time.perf_counter() - start
    return out, cost


def cosine_matrix(embeddings: Mapping[str, Any], tasks: Sequence[str]) -> np.ndarray:
    """Cosine similarity between the tasks' embeddings (0 where an embedding is all zeros).

    >>> cosine_matrix({"a": [1.0, 0.0], "b": [2.0, 0.0], "c": [0.0, 1.0]}, ["a", "b", "c"]).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    missing = [t for t in tasks if t not in embeddings]
    if missing:
        raise ValueError(f"no embedding for task(s) {missing}; embeddings has {sorted(embeddings)}")
    vectors = [np.asarray(embeddings[t], dtype=float).ravel() for t in tasks]
    if len({v.shape for v in vectors}) != 1:
        raise ValueError(f"embeddings differ in size: { {t: v.size for t, v in zip(tasks, vectors)} }")
    m = np.stack(vectors)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    unit = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


@register_method(
    "task_embedding",
    needs=("embeddings|suite",),
    description="Vu et al. 2020: Fisher task embeddings (pooled representation), cosine similarity, clustering",
)
def task_embedding(
    tasks: Sequence[str],
    *,
    embeddings: Mapping[str, Any] | None = None,
    suite: Any = None,
    settings: Any = None,
    num_groups: int | None = None,
    distance_threshold: float | None = None,
    algorithm: str = "hierarchical",
    linkage: str = "average",
    max_examples: int | None = None,
    cache_dir: str | Path | None = None,
    tokenizer: Any = None,
    model_factory: ModelFactory | None = None,
    seed: int = 0,
) -> Grouping:
    """Group tasks by the cosine similarity of their Fisher embeddings (see the module docstring).

    Give ``embeddings`` ({task: vector}) or a ``suite`` (+ ``settings``, default ``TrainSettings()``: frozen)
    to compute them; ``num_groups`` or ``distance_threshold`` (``1 - cosine``) for the clustering.

    Example:
        >>> task_embedding(["a", "b", "c"], embeddings={"a": [1, 0], "b": [0.9, 0.1], "c": [0, 1]}, num_groups=2).groups
        [['a', 'b'], ['c']]
    """
    from hf_taskgroup.grouping.methods.baselines import clustering

    tasks = list(tasks)
    if (num_groups is None) == (distance_threshold is None) and algorithm == "hierarchical":
        raise ValueError("task_embedding needs exactly one of num_groups or distance_threshold (in 1 - cosine units)")
    cost = GroupingCost()
    if embeddings is None:
        if suite is None:
            raise ValueError("task_embedding needs embeddings=... or suite=... (to fine-tune each task)")
        if settings is None:
            from hf_taskgroup.training.train import TrainSettings

            settings = TrainSettings(seed=seed)
        embeddings, cost = compute_task_embeddings(suite, tasks, settings, tokenizer=tokenizer, model_factory=model_factory,
                                                   cache_dir=cache_dir, max_examples=max_examples)
    cos = cosine_matrix(embeddings, tasks)
    clustered = clustering(tasks, affinity=1.0 - cos, matrix_kind="distance", algorithm=algorithm,
                           num_groups=num_groups, distance_threshold=distance_threshold, linkage=linkage, seed=seed)
    return Grouping(
        groups=clustered.groups,
        method="task_embedding",
        tasks=tasks,
        params={"num_groups": num_groups, "distance_threshold": distance_threshold, "algorithm": algorithm,
                "linkage": linkage, "distance": "1 - cosine", "gradient_target": GRADIENT_TARGET,
                "fisher": "empirical (gold labels)", "max_examples": max_examples,
                "settings": None if settings is None else settings.to_dict(), "seed": seed},
        scores={"cosine": cos.tolist(), "affinity": cos.tolist(),
                "embeddings": {t: np.asarray(embeddings[t], dtype=float).ravel().tolist() for t in tasks},
                "labels": clustered.scores.get("labels", {})},
        cost=cost,
    )
