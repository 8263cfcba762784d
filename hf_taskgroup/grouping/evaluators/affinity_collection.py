"""Affinity collection during one multi-task training run: transfer gains (Wang et al.) and TAG (Fifty et al.).

:class:`AffinityCollector` is a ``TrainerCallback`` for :class:`~hf_taskgroup.training.trainer.MultiTaskTrainer`. Every
``every_k_steps`` real optimizer steps (``on_step_end``, after the optimizer and scheduler steps) it draws one
probe batch per task (seeded by ``(seed, global_step)``, from the trainer's prepared training datasets; in
frozen mode they carry the cached encoder ``features``) and measures an N x N matrix ``Z``, ``Z[i, j]`` =
effect of task i on task j. ``S`` = mean of ``Z`` over the collection steps that measured the pair.

``kind="transfer_gain"`` (arXiv 2402.15328, notes A.1). For each task j one REAL optimizer step on ``L_j`` alone,
for each pair {i, j} one real step on ``L_i + L_j`` (the trainer's optimizer with its momentum / Adam moments;
no gradient clipping, no scheduler step); the losses are re-measured on the same probe batches and
``Z[i, j] = 1 - L_j(after the {i, j} step) / L_j(after the {j} step)``; the diagonal is 0. A step moves every
trainable parameter that gets a gradient: the shared encoder / trunk and the heads of the tasks in the step
(other heads get no gradient, as in a real training step). Parameters and optimizer state are restored after
every lookahead. Each task's gradient is computed once at the current parameters and the pair steps use the
sum (exactly the gradient of ``L_i + L_j``: the lookahead runs without dropout); this keeps N gradient copies
of the trainable parameters in memory. The paper's code also collects a "doubled self" step (``2 grad L_j``);
it is not collected here.

``kind="tag"`` (Fifty et al. 2021, notes C.2). ``Z[i, j] = 1 - L_j(theta_s - lr * grad_s L_i) / L_j(theta_s)``:
a plain SGD lookahead on the shared parameters only (encoder + trunk; the task-specific heads stay put), no
optimizer state involved. ``lr`` is the scheduler's current learning rate (``lookahead_lr`` overrides it).
TAG's own code uses the optimizer's momentum after the first step and divides by ``lr``; we follow the
paper's formula (a ratio, so the scale of ``lr`` only sets the size of the lookahead). The diagonal is the
self-lookahead.

Cost per collection step of N tasks (one pass = one task batch):

==============  ===================  ==============  =====================
kind            forward              backward        optimizer steps
==============  ===================  ==============  =====================
transfer_gain   N + N^2              N               N + N(N-1)/2
tag             N + N^2              N               0
==============  ===================  ==============  =====================

A collection step where the learning rate is 0 (e.g. the last step of a linear decay) measures nothing and is
skipped. With ``task_subsample=k`` each collection step measures a random k-subset of the tasks (all pairs
inside it; cost as for N = k), and each pair is averaged over the steps that drew both tasks (``counts``); a
pair never drawn stays NaN. Measurements run with the model in eval mode (no dropout, so lookaheads are
deterministic; for a transformer encoder eval mode changes nothing else, and batch-norm running statistics
would not be updated), then the training mode is restored. After a collection step the parameters, their
gradients, the optimizer state and the torch RNG state equal what they were, so training continues exactly
as without collection. Losses are the unweighted task losses (``task_weights`` are ignored) in the model's
dtype without autocast. Each process of a distributed run computes the same matrix (same probe batches)
without communication.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from hf_taskgroup.utils import atomic_write_json

logger = logging.getLogger(__name__)

KINDS = ("transfer_gain", "tag")
AFFINITY_FORMAT_VERSION = 1


@dataclass
class AffinityResult:
    """A collected affinity matrix ``matrix[i, j]`` = effect of ``tasks[i]`` on ``tasks[j]``.

    ``passes`` counts what the collection cost on top of the training run: ``forward`` / ``backward``
    passes (one per task batch) and lookahead ``optimizer_steps``; ``counts[i, j]`` is how many collection
    steps measured the pair.

    Example:
        >>> r = AffinityResult(np.zeros((2, 2)), ["a", "b"], "tag", steps_collected=3, seconds=0.5)
        >>> AffinityResult.from_dict(r.to_dict()).tasks
        ['a', 'b']
    """

    matrix: np.ndarray
    tasks: list[str]
    kind: str
    steps_collected: int
    seconds: float
    forward_backward_passes: dict[str, int] = field(default_factory=dict)
    counts: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def plain(m: np.ndarray | None) -> Any:
            return None if m is None else [[None if not math.isfinite(v) else float(v) for v in row] for row in m]

        return {
            "format_version": AFFINITY_FORMAT_VERSION, "kind": self.kind, "tasks": list(self.tasks),
            "matrix": plain(np.asarray(self.matrix, dtype=float)), "steps_collected": int(self.steps_collected),
            "seconds": float(self.seconds), "forward_backward_passes": dict(self.forward_backward_passes),
            "counts": plain(None if self.counts is None else np.asarray(self.counts, dtype=float)),
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AffinityResult:
        for key in ("kind", "tasks", "matrix"):
            if key not in d:
                raise ValueError(f"affinity result lacks {key!r}")

        def arr(m: Any) -> np.ndarray:
            return np.array([[np.nan if v is None else v for v in row] for row in m], dtype=float)

        return cls(matrix=arr(d["matrix"]), tasks=list(d["tasks"]), kind=d["kind"],
                   steps_collected=int(d.get("steps_collected", 0)), seconds=float(d.get("seconds", 0.0)),
                   forward_backward_passes=dict(d.get("forward_backward_passes") or {}),
                   counts=None if d.get("counts") is None else arr(d["counts"]), params=dict(d.get("params") or {}))

    def to_json(self, path: str | Path) -> None:
        """Write atomically (temp file + ``os.replace``)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | Path) -> AffinityResult:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{path}: not an affinity result ({err})") from err


class AffinityCollector(TrainerCallback):
    """Collect transfer-gain or TAG affinities every ``every_k_steps`` steps of a multi-task training.

    Construct it with the trainer (``trainer.add_callback(collector)``), or without one and pass it in
    ``callbacks=[...]``: it then finds the model, the prepared task datasets and the collator in the
    ``on_train_begin`` arguments (``train_dataloader`` holds the trainer's per-task datasets).

    Example::

        >>> collector = AffinityCollector(trainer, kind="transfer_gain", every_k_steps=10)  # doctest: +SKIP
        >>> trainer.add_callback(collector); trainer.train()                              # doctest: +SKIP
        >>> collector.result().matrix                                                       # doctest: +SKIP
    """

    def __init__(
        self,
        trainer: Any = None,
        kind: str = "transfer_gain",
        every_k_steps: int = 10,
        probe_batch_size: int | None = None,
        task_subsample: int | None = None,
        seed: int = 0,
        tasks: Sequence[str] | None = None,
        lookahead_lr: float | None = None,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if int(every_k_steps) < 1:
            raise ValueError(f"every_k_steps must be >= 1, got {every_k_steps}")
        if probe_batch_size is not None and probe_batch_size < 1:
            raise ValueError(f"probe_batch_size must be >= 1, got {probe_batch_size}")
        if task_subsample is not None and task_subsample < 2:
            raise ValueError(f"task_subsample must be >= 2 (pairs are measured inside the subset), got {task_subsample}")
        self.kind, self.every_k_steps, self.seed = kind, int(every_k_steps), int(seed)
        self.probe_batch_size, self.task_subsample, self.lookahead_lr = probe_batch_size, task_subsample, lookahead_lr
        self._requested_tasks = list(tasks) if tasks is not None else None
        self.tasks: list[str] = []
        self.steps_collected = 0
        self.seconds = 0.0
        self.passes = {"forward": 0, "backward": 0, "optimizer_steps": 0}
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | None = None
        self._model: Any = None
        self._datasets: dict[str, Any] = {}
        self._collator: Any = None
        self._args: Any = None
        if trainer is not None:
            self.bind(trainer)

    # ---- wiring -------------------------------------------------------------------------------------
    def bind(self, trainer: Any) -> None:
        """Take the model, the prepared training datasets and the collator from a MultiTaskTrainer."""
        datasets = {t: trainer.prepare_task_dataset(t, ds, "train") for t, ds in trainer.train_datasets.items()}
        self._setup(trainer.model, datasets, trainer.data_collator, trainer.args)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        if self._model is not None:
            return
        if model is None or train_dataloader is None:
            raise RuntimeError("AffinityCollector: on_train_begin got no model/train_dataloader; construct it with the trainer")
        parts = getattr(train_dataloader.dataset, "datasets", None)
        if parts is None:
            raise RuntimeError("AffinityCollector: the train dataloader is not a MultiTaskTrainer's; pass trainer=...")
        names = _base_model(model).config.task_names
        datasets = {names[int(ds[0]["task_ids"])]: ds for ds in parts}
        self._setup(model, datasets, train_dataloader.collate_fn, args)

    def _setup(self, model: Any, datasets: Mapping[str, Any], collator: Any, args: Any) -> None:
        self._model, self._collator, self._args = model, collator, args
        tasks = self._requested_tasks or list(datasets)
        missing = [t for t in tasks if t not in datasets]
        if missing:
            raise ValueError(f"AffinityCollector: task(s) {missing} have no training data; trained tasks: {list(datasets)}")
        if len(tasks) < 2:
            raise ValueError(f"AffinityCollector needs at least 2 tasks, got {tasks}")
        self.tasks = tasks
        self._datasets = {t: datasets[t] for t in tasks}
        n = len(tasks)
        self._sum, self._count = np.zeros((n, n)), np.zeros((n, n))
        if not self._shared_params():
            raise ValueError(
                "AffinityCollector: the model has no shared trainable parameters (frozen encoder and no trunk): "
                "tasks cannot affect each other. Add a shared trunk (trunk_hidden_sizes) or fine-tune the encoder."
            )

    def on_step_end(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.every_k_steps == 0:
            self.collect_step(optimizer, step=state.global_step)

    # ---- results ------------------------------------------------------------------------------------
    @property
    def matrix(self) -> np.ndarray:
        """``S``: the mean of ``Z`` over the steps that measured each pair (NaN where none did)."""
        if self._sum is None:
            raise RuntimeError("AffinityCollector is not bound to a trainer yet")
        with np.errstate(invalid="ignore", divide="ignore"):
            S = np.where(self._count > 0, self._sum / np.maximum(self._count, 1), np.nan)
        if self.kind == "transfer_gain":
            np.fill_diagonal(S, 0.0)
        return S

    def result(self) -> AffinityResult:
        return AffinityResult(
            matrix=self.matrix, tasks=list(self.tasks), kind=self.kind, steps_collected=self.steps_collected,
            seconds=self.seconds, forward_backward_passes=dict(self.passes), counts=self._count.copy(),
            params={"every_k_steps": self.every_k_steps, "probe_batch_size": self.probe_batch_size,
                    "task_subsample": self.task_subsample, "seed": self.seed, "lookahead_lr": self.lookahead_lr},
        )

    # ---- one collection step ------------------------------------------------------------------------
    def collect_step(self, optimizer: Any = None, step: int = 0) -> np.ndarray:
        """Measure ``Z`` at the current parameters (NaN where not measured), add it to the running mean and
        leave parameters, gradients, optimizer state, RNG state and training mode unchanged."""
        if self._model is None:
            raise RuntimeError("AffinityCollector is not bound to a trainer; pass trainer= or add it as a callback")
        start = time.perf_counter()
        rng = np.random.default_rng([self.seed, int(step)])
        idx = list(range(len(self.tasks)))
        if self.task_subsample is not None and self.task_subsample < len(idx):
            idx = sorted(int(i) for i in rng.choice(len(idx), size=self.task_subsample, replace=False))
        batches = {i: self._probe_batch(self.tasks[i], rng) for i in idx}
        model = self._model
        params = [p for p in model.parameters() if p.requires_grad]
        saved = _Snapshot(model, params)
        try:
            model.eval()
            if self.kind == "transfer_gain":
                if optimizer is None:
                    raise ValueError("transfer_gain collection needs the trainer's optimizer")
                Z = self._transfer_gain(batches, params, optimizer, saved)
            else:
                Z = self._tag(batches, optimizer)
        finally:
            saved.restore()
        if Z is not None:
            measured = np.isfinite(Z)
            self._sum[measured] += Z[measured]
            self._count[measured] += 1
            self.steps_collected += 1
        self.seconds += time.perf_counter() - start
        return Z if Z is not None else np.full((len(self.tasks),) * 2, np.nan)

    def _transfer_gain(self, batches: dict[int, Any], params: list[torch.nn.Parameter], optimizer: Any,
                       saved: _Snapshot) -> np.ndarray | None:
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper skips steps while accumulating
        if all(float(g["lr"]) == 0 for g in inner.param_groups):
            logger.info("AffinityCollector(transfer_gain): learning rate is 0 at this step; nothing to measure, skipped")
            return None
        opt_state = copy.deepcopy(inner.state_dict())
        grads = {i: self._grads(b, params) for i, b in batches.items()}

        def lookahead(members: tuple[int, ...]) -> dict[int, float]:
            for k, p in enumerate(params):
                parts = [grads[i][k] for i in members if grads[i][k] is not None]
                p.grad = torch.stack(parts).sum(0) if len(parts) > 1 else (parts[0].clone() if parts else None)
            inner.step()
            self.passes["optimizer_steps"] += 1
            losses = {i: self._loss(batches[i]) for i in members}
            saved.restore_params()
            inner.load_state_dict(copy.deepcopy(opt_state))
            return losses

        n = len(self.tasks)
        Z = np.full((n, n), np.nan)
        single = {j: lookahead((j,))[j] for j in batches}
        for i, j in itertools.combinations(sorted(batches), 2):
            pair = lookahead((i, j))
            for a, b in ((i, j), (j, i)):  # Z[a, b]: effect of a on b
                if single[b] > 1e-12:
                    Z[a, b] = 1.0 - pair[b] / single[b]
        for j in batches:
            Z[j, j] = 0.0
        return Z

    def _tag(self, batches: dict[int, Any], optimizer: Any) -> np.ndarray | None:
        lr = self.lookahead_lr
        if lr is None:
            if optimizer is None:
                raise ValueError("tag collection needs the optimizer (for the current learning rate) or lookahead_lr")
            lr = float(getattr(optimizer, "optimizer", optimizer).param_groups[0]["lr"])
        if lr == 0:
            logger.info("AffinityCollector(tag): learning rate is 0 at this step; nothing to measure, skipped")
            return None
        shared = self._shared_params()
        base, grads = {}, {}
        for i, b in batches.items():
            base[i], grads[i] = self._loss_and_grads(b, shared)
        n = len(self.tasks)
        Z = np.full((n, n), np.nan)
        originals = [p.detach().clone() for p in shared]
        for i in batches:
            with torch.no_grad():
                for p, g in zip(shared, grads[i]):
                    if g is not None:
                        p.sub_(lr * g)
            for j, b in batches.items():
                if base[j] > 1e-12:
                    Z[i, j] = 1.0 - self._loss(b) / base[j]
            with torch.no_grad():
                for p, o in zip(shared, originals):
                    p.copy_(o)
        return Z

    # ---- helpers ------------------------------------------------------------------------------------
    def _shared_params(self) -> list[torch.nn.Parameter]:
        heads = {id(p) for p in _base_model(self._model).heads.parameters()}
        return [p for p in self._model.parameters() if p.requires_grad and id(p) not in heads]

    def _probe_batch(self, task: str, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ds = self._datasets[task]
        size = self.probe_batch_size or int(getattr(self._args, "per_device_train_batch_size", 8))
        rows = [int(r) for r in rng.choice(len(ds), size=min(size, len(ds)), replace=False)]
        # one batched read (datasets.Dataset: much faster than row by row for nested feature lists; partial mode's
        # TokenStatesDataset: rows of cached token states, which take only integer indices)
        examples = ds.__getitems__(rows) if hasattr(ds, "__getitems__") else [ds[r] for r in rows]
        batch = self._collator(examples)
        device = next(self._model.parameters()).device
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}

    def _loss(self, batch: Mapping[str, Any]) -> float:
        with torch.no_grad():
            out = self._model(**batch)
        self.passes["forward"] += 1
        return float(out.loss)

    def _loss_and_grads(self, batch: Mapping[str, Any], params: list[torch.nn.Parameter]) -> tuple[float, list]:
        with torch.enable_grad():
            loss = self._model(**batch).loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        self.passes["forward"] += 1
        self.passes["backward"] += 1
        return float(loss.detach()), [None if g is None else g.detach() for g in grads]

    def _grads(self, batch: Mapping[str, Any], params: list[torch.nn.Parameter]) -> list:
        return self._loss_and_grads(batch, params)[1]


class _Snapshot:
    """Copies of the trainable parameters, their gradients, the RNG states and the training mode."""

    def __init__(self, model: torch.nn.Module, params: list[torch.nn.Parameter]):
        self.model, self.params = model, params
        self.values = [p.detach().clone() for p in params]
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        self.training = model.training
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore_params(self) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, self.values):
                p.copy_(v)

    def restore(self) -> None:
        self.restore_params()
        for p, g in zip(self.params, self.grads):
            p.grad = None if g is None else g.clone()
        self.model.train(self.training)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _base_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "peft_config") and hasattr(model, "get_base_model") else model


def collect_affinity(
    suite: Any,
    tasks: Sequence[str] | None,
    settings: Any,
    kind: str = "transfer_gain",
    every_k_steps: int = 10,
    *,
    probe_batch_size: int | None = None,
    task_subsample: int | None = None,
    seed: int | None = None,
    lookahead_lr: float | None = None,
    tokenizer: Any = None,
    model: Any = None,
    output_path: str | Path | None = None,
) -> AffinityResult:
    """Train ``tasks`` of ``suite`` together once (``train_group`` with ``settings``) and collect affinities.

    With ``output_path`` the result is written there as JSON (atomically) with a manifest
    (``<output_path>.manifest``: size, sha256 and the key of the suite's data, tasks, settings, model, tokenizer
    and collection options; see :class:`~hf_taskgroup.artifacts.ArtifactStore`) and reused on a later call with
    the same key (the key does not cover a custom ``model``). A truncated or edited file is named in one
    :class:`~hf_taskgroup.artifacts.ArtifactWarning` and collected again; a file without a manifest (written
    before manifests existed) is collected again quietly.
    ``seed`` (probe-batch and subsampling RNG) defaults to ``settings.seed``.

    Example::

        >>> res = collect_affinity(suite, None, TrainSettings(finetune="frozen", trunk_hidden_sizes=[256]),
        ...                        kind="tag", every_k_steps=5, output_path="out/tag.json")  # doctest: +SKIP
        >>> res.matrix.shape                                                                     # doctest: +SKIP
    """
    import tempfile

    from hf_taskgroup.artifacts import ArtifactStore, model_fingerprint, stable_hash, tokenizer_fingerprint
    from hf_taskgroup.grouping.evaluators.text import suite_fingerprint
    from hf_taskgroup.training.train import train_group

    tasks = list(tasks) if tasks is not None else list(suite.task_names)
    seed = settings.seed if seed is None else int(seed)
    options = {"kind": kind, "every_k_steps": every_k_steps, "probe_batch_size": probe_batch_size,
               "task_subsample": task_subsample, "seed": seed, "lookahead_lr": lookahead_lr}
    identity = {"suite": suite_fingerprint(suite, tasks), "tasks": tasks, "settings": settings.to_dict(), **options,
                "inputs": {"model": None if model is not None else model_fingerprint(settings.model_name_or_path),
                           "tokenizer": tokenizer_fingerprint(tokenizer)}}
    key = stable_hash(identity, length=64)
    store = ArtifactStore(Path(output_path).parent) if output_path is not None else None
    if store is not None:
        def load(path: Path) -> AffinityResult:
            cached = AffinityResult.from_json(path)
            if cached.params.get("cache_key") != key:
                raise ValueError(f"holds cache key {cached.params.get('cache_key')}, its manifest says {key}")
            return cached

        cached = store.load(output_path, fingerprint=key, loader=load)
        if cached is not None:
            logger.info("affinity collection: reusing %s", output_path)
            return cached
    collector = AffinityCollector(kind=kind, every_k_steps=every_k_steps, probe_batch_size=probe_batch_size,
                                  task_subsample=task_subsample, seed=seed, tasks=tasks, lookahead_lr=lookahead_lr)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hf_taskgroup_collect_") as tmp:
        run = train_group(suite, tasks, settings, output_dir=tmp, eval_splits=(), tokenizer=tokenizer, model=model,
                          callbacks=[collector])
    run.pop("trainer", None)
    if collector.steps_collected == 0:
        raise ValueError(
            f"affinity collection measured nothing: training ran fewer than every_k_steps={every_k_steps} steps "
            "(lower every_k_steps or train longer)"
        )
    result = collector.result()
    result.params.update({"cache_key": key, "identity": identity, "train_seconds": run["train_seconds"],
                          "wall_seconds": time.perf_counter() - start})
    if store is not None:
        store.unseal(output_path)
        result.to_json(output_path)
        store.seal(output_path, fingerprint=key)
    return result
