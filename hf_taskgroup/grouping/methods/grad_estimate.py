"""``grad_estimate``: the loss of any subset of tasks from one multi-task training (Grad-TAG).

Li, Sharma & Zhang, "Scalable Multitask Learning Using Gradient-based Estimation of Task Affinity"
(KDD 2024, arXiv 2409.06091):

1. **Base model.** Train one model on all tasks (``train_group``: the same ``MultiTaskTrainer`` as every
   other training of the library, with the run's :class:`~hf_taskgroup.training.train.TrainSettings`).
2. **Gradients.** For every training and validation *unit* (an example; a label of a multilabel example; a
   labelled token of a token-classification example) take the model's output ``s`` for the unit's label
   and its gradient ``g = ds/dtheta`` w.r.t. the trainable **shared** parameters at the base model (the
   task heads are left out, as in the paper). ``s`` is the label's log-odds
   ``log p_y - log(1 - p_y)`` for classification, multilabel and token classification (so the unit's
   cross-entropy is exactly ``softplus(-s)``) and the prediction for regression (loss ``(s - y)^2``).
   Each ``g`` is projected to ``projection_dim`` dimensions by a fixed, seeded Gaussian
   (Johnson-Lindenstrauss) matrix, generated block by block (:class:`GaussianProjector`): memory stays
   bounded whatever the number of parameters.
3. **Linearised fine-tuning of a subset S.** Fine-tuning on S from the base model moves the outputs to
   ``s(x) ~ s0(x) + <g(x), w>`` to first order. :class:`GradientEstimator` fits ``w`` by minimising the
   tasks' own losses over S's training units plus ``regularization`` times an L2 penalty (a logistic
   regression with offset ``s0`` for classification units, a ridge regression for regression units), then
   evaluates each task of S on its validation units with the same linear model: an *estimated* validation
   loss of every task of S, without training S. ``w = 0`` gives back the base model's own losses.
4. **Grouping.** The estimator acts as a :class:`~hf_taskgroup.grouping.evaluators.base.GroupEvaluator`
   (``estimator(tasks) -> {task: {"loss": ...}}``, zero trainings), so the library's evaluator-based
   searches run on estimates instead of trainings: ``search="surrogate"`` (default: sampled subsets ->
   linear surrogate affinity -> the ``grouping`` step, transfer_gain's MILP unless told otherwise; the paper
   samples subsets and clusters their affinities), ``"exhaustive"`` (every partition, for few tasks),
   ``"affinity_search"``, or ``"pairwise"`` (every pair: ``A[i, j]`` = relative drop of j's estimated loss
   when trained with i, then the ``grouping`` step).

Fine-tuning modes: gradients are taken w.r.t. the parameters that train in the run's mode, heads excluded:
``full`` (the whole encoder and trunk: a GPU job for real encoders, since every projection of a 22M-vector
costs a 22M x d Gaussian block pass), ``lora`` (the adapters and the trunk), ``frozen`` (the shared trunk
only: the encoder does not train, so what the tasks share, and what the estimate can see, is the trunk
of ``trunk_hidden_sizes``; frozen mode without a trunk has nothing shared and is an error), and any
future mode whose trainable parameters the trainer marks with ``requires_grad``.

Cost (``Grouping.cost``): trainings = 1 (the base model); seconds = base training + gradient pass + fits +
search. Cached gradients (``cache_dir``) are charged at the cost recorded when they were computed.

Example::

    >>> from hf_taskgroup.grouping import group_tasks
    >>> g = group_tasks("grad_estimate", suite.task_names, suite=suite,
    ...                 settings=TrainSettings(finetune="frozen", trunk_hidden_sizes=[256]))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.artifacts import stable_hash
from hf_taskgroup.grouping.evaluators.base import canonical_group
from hf_taskgroup.grouping.registry import register_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.utils import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = [
    "GaussianProjector",
    "GradEstimateConfig",
    "GradientEstimator",
    "GradientFeatures",
    "UnitGradients",
    "compute_gradient_features",
    "grad_estimate",
    "shared_trainable_parameters",
    "train_and_collect_gradients",
]

SEARCHES = ("surrogate", "exhaustive", "affinity_search", "pairwise")
_HEAD_NAME = re.compile(r"(^|\.)heads\.")


@dataclass
class GradEstimateConfig:
    """Options of :func:`grad_estimate` (one default each; validated on construction).

    Example:
        >>> GradEstimateConfig(projection_dim=64).projection_dim
        64
    """

    projection_dim: int = field(default=256, metadata={"help": "Dimension d of the random Gaussian projection of each gradient."})
    regularization: float = field(default=1.0, metadata={
        "help": "L2 penalty on the linearised update w, in units of the mean squared norm of the projected "
                "gradients divided by d (scale-free; larger = smaller steps from the base model)."})
    search: str = field(default="surrogate", metadata={"help": f"How the estimates are searched: one of {SEARCHES}."})
    num_subsets: int | None = field(default=None, metadata={
        "help": "Subsets (size >= 2) the surrogate search estimates (default: min(2^n - n - 1, 10 n))."})
    grouping: str = field(default="transfer_gain", metadata={
        "help": "Registered method run on the affinity (surrogate and pairwise searches)."})
    grouping_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "Options of the grouping step."})
    num_groups: int | None = field(default=None, metadata={"help": "Groups for the grouping step, if it takes it."})
    max_group_size: int | None = field(default=None, metadata={"help": "Largest group, if the grouping step takes it."})
    normalize: bool = field(default=True, metadata={"help": "Affinities relative to each task's loss."})
    split: str = field(default="validation", metadata={"help": "Split whose loss is estimated (never test)."})
    max_examples: int | None = field(default=None, metadata={
        "help": "At most this many examples per task and split get a gradient (seeded choice; None: all)."})
    max_units_per_example: int | None = field(default=None, metadata={
        "help": "At most this many labelled tokens (token classification) or labels (multilabel) per example."})
    batch_size: int | None = field(default=None, metadata={
        "help": "Examples per forward pass of the gradient pass (default: 64 pooled rows in frozen mode, else 1)."})
    chunk_size: int = field(default=1 << 16, metadata={"help": "Parameters per block of the projection matrix."})
    projection_cache_mb: float = field(default=512.0, metadata={
        "help": "Keep the projection blocks in memory when they fit in this many MB; else regenerate them per batch."})
    buffer_mb: float = field(default=256.0, metadata={"help": "Memory for unprojected per-unit gradients at once."})
    max_iter: int = field(default=500, metadata={"help": "L-BFGS iterations per subset fit."})
    seed: int = field(default=0, metadata={"help": "Seed of the projection, the example choice and the search."})

    def __post_init__(self) -> None:
        if int(self.projection_dim) < 1:
            raise ValueError(f"projection_dim must be >= 1, got {self.projection_dim}")
        if not (self.regularization > 0 and math.isfinite(self.regularization)):
            raise ValueError(f"regularization must be a positive finite number, got {self.regularization}")
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
        if self.num_subsets is not None and int(self.num_subsets) < 1:
            raise ValueError(f"num_subsets must be >= 1, got {self.num_subsets}")
        if self.split == "test":
            raise ValueError("split='test': grouping must not see the evaluation split")
        for name in ("max_examples", "max_units_per_example", "batch_size"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if int(self.chunk_size) < 1 or int(self.max_iter) < 1:
            raise ValueError("chunk_size and max_iter must be >= 1")
        if self.projection_cache_mb < 0 or self.buffer_mb <= 0:
            raise ValueError("projection_cache_mb must be >= 0 and buffer_mb > 0")
        self.grouping_kwargs = dict(self.grouping_kwargs or {})


# ------------------------------------------------------------------------------------------- projection
class GaussianProjector:
    """A fixed ``num_params x dim`` Gaussian matrix (entries ``N(0, 1/dim)``), generated in blocks of rows.

    Block ``i`` (rows ``[i * chunk_size, (i + 1) * chunk_size)``) comes from a CPU generator seeded with
    ``(seed, i)``: the matrix depends on the seed only, not on the device, the batch or the order of
    calls. Blocks are kept when the whole matrix fits in ``cache_mb``; otherwise each :meth:`project`
    regenerates them one at a time, so at most one block (``chunk_size x dim`` floats) is alive.

    Example:
        >>> import torch
        >>> p = GaussianProjector(10, 4, seed=0, chunk_size=3)
        >>> p.project(torch.ones(2, 10)).shape
        torch.Size([2, 4])
        >>> bool((p.project(torch.eye(10)) == p.matrix()).all())
        True
    """

    def __init__(self, num_params: int, dim: int, *, seed: int = 0, chunk_size: int = 1 << 16, cache_mb: float = 512.0):
        if num_params < 1 or dim < 1 or chunk_size < 1:
            raise ValueError(f"need num_params, dim, chunk_size >= 1; got {num_params}, {dim}, {chunk_size}")
        self.num_params, self.dim, self.seed, self.chunk_size = int(num_params), int(dim), int(seed), int(chunk_size)
        self.num_blocks = -(-self.num_params // self.chunk_size)
        self.cache = self.num_params * self.dim * 4 <= cache_mb * 2**20
        self._blocks: dict[int, Any] = {}
        if not self.cache:
            logger.warning(
                "grad_estimate: the projection matrix (%d parameters x %d = %.0f MB) is above projection_cache_mb "
                "(%.0f MB), so it is regenerated for every buffer of gradients, which is slow; raise "
                "projection_cache_mb (--method_options '{\"grad_estimate\": {\"projection_cache_mb\": ...}}') "
                "if memory allows", self.num_params, self.dim, self.num_params * self.dim * 4 / 2**20, cache_mb)

    @property
    def block_bytes(self) -> int:
        """Bytes of the largest block (what one projection step holds besides the gradients)."""
        return min(self.chunk_size, self.num_params) * self.dim * 4

    @property
    def cached_bytes(self) -> int:
        return sum(int(b.numel()) * 4 for b in self._blocks.values())

    def block(self, index: int, device: Any = None) -> Any:
        """Block ``index`` (generated on the CPU, so identical on every device), on ``device`` (default CPU)."""
        import torch

        hit = self._blocks.get(index)
        if hit is not None:
            if device is not None and hit.device != torch.device(device):
                hit = self._blocks[index] = hit.to(device)  # kept where it is used
            return hit
        rows = min(self.chunk_size, self.num_params - index * self.chunk_size)
        seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{index}".encode()).digest()[:8], "little") & (2**63 - 1)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        block = torch.randn(rows, self.dim, generator=gen) / math.sqrt(self.dim)
        if device is not None:
            block = block.to(device)
        if self.cache:
            self._blocks[index] = block
        return block

    def project(self, flat: Any) -> Any:
        """``flat @ matrix`` for a ``[k, num_params]`` tensor, block by block; returns ``[k, dim]`` (float32)."""
        import torch

        if flat.shape[-1] != self.num_params:
            raise ValueError(f"gradient of {flat.shape[-1]} values for a projection of {self.num_params} parameters")
        out = torch.zeros(flat.shape[0], self.dim, dtype=torch.float32, device=flat.device)
        for i in range(self.num_blocks):
            start = i * self.chunk_size
            block = self.block(i, flat.device)
            out += flat[:, start:start + block.shape[0]].float() @ block
        return out

    def matrix(self) -> Any:
        """The whole matrix (tests and small problems only)."""
        import torch

        return torch.cat([self.block(i).cpu() for i in range(self.num_blocks)])


# ------------------------------------------------------------------------------------------- gradients
@dataclass
class UnitGradients:
    """Projected gradients of one task's units on one split.

    ``grads[u]`` (d,) is the projected gradient of unit u's output, ``base[u]`` the base model's output,
    ``target[u]`` the regression target (0 for log-odds units), ``example[u]`` the row it came from.
    """

    grads: np.ndarray
    base: np.ndarray
    target: np.ndarray
    example: np.ndarray

    @property
    def num_units(self) -> int:
        return int(self.base.shape[0])

    @property
    def num_examples(self) -> int:
        return int(len(np.unique(self.example))) if self.example.size else 0


@dataclass
class GradientFeatures:
    """Projected gradients of every task and split at the base model, plus how they were made.

    ``kinds[task]`` is ``"logistic"`` (unit loss ``softplus(-s)``) or ``"squared"`` (``(s - y)^2``).
    ``info`` records the projection, the parameters, the base losses and the seconds spent.
    """

    units: dict[str, dict[str, UnitGradients]]
    kinds: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(self.units)

    def estimator(self, **options: Any) -> GradientEstimator:
        """The :class:`GradientEstimator` with these options, memoised: searches on the same gradients share fits."""
        memo = self.__dict__.setdefault("_estimators", {})
        key = tuple(sorted(options.items()))
        if key not in memo:
            memo[key] = GradientEstimator(self, **options)
        return memo[key]

    @property
    def dim(self) -> int:
        first = next(iter(next(iter(self.units.values())).values()))
        return int(first.grads.shape[1])

    def save(self, folder: str | Path) -> None:
        """One ``.npz`` per task and split plus ``meta.json`` (written last, atomically: its presence marks completion)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for i, (task, splits) in enumerate(self.units.items()):
            for split, u in splits.items():
                name = f"task{i}_{split}.npz"
                tmp = folder / f".{name}.tmp.npz"
                np.savez(tmp, grads=u.grads, base=u.base, target=u.target, example=u.example)
                tmp.replace(folder / name)
                files.setdefault(task, {})[split] = name
        atomic_write_json(folder / "meta.json", {"kinds": self.kinds, "files": files, "info": self.info})

    @classmethod
    def load(cls, folder: str | Path) -> GradientFeatures:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        units: dict[str, dict[str, UnitGradients]] = {}
        for task, splits in meta["files"].items():
            for split, name in splits.items():
                with np.load(folder / name, allow_pickle=False) as z:
                    units.setdefault(task, {})[split] = UnitGradients(z["grads"], z["base"], z["target"], z["example"])
        return cls(units=units, kinds=dict(meta["kinds"]), info=dict(meta["info"]))


def shared_trainable_parameters(model: Any) -> list[tuple[str, Any]]:
    """``(name, parameter)`` of the parameters that train and are shared by the tasks (task heads excluded).

    Works on a :class:`~hf_taskgroup.training.modeling.MultiTaskModel` and on its peft wrapper (LoRA).

    Example::

        >>> [n for n, _ in shared_trainable_parameters(model)]  # frozen mode, trunk [256]  # doctest: +SKIP
        ['trunk.0.weight', 'trunk.0.bias']
    """
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and not _HEAD_NAME.search(n)]


def _unit_outputs(task_type: str, logits: Any, labels: Any) -> tuple[Any, Any, Any]:
    """``(s, target, example_index)`` of every unit of a batch (1-D tensors)."""
    import torch

    def log_odds(z: Any, y: Any) -> Any:  # log p_y - log(1 - p_y) of rows z [m, C], labels y [m]
        onehot = torch.nn.functional.one_hot(y, z.shape[-1]).bool()
        return z.gather(-1, y[:, None]).squeeze(-1) - z.masked_fill(onehot, float("-inf")).logsumexp(-1)

    b = logits.shape[0]
    rows = torch.arange(b, device=logits.device)
    if task_type == "classification":
        y = labels.long()
        return log_odds(logits.float(), y), torch.zeros(b, device=logits.device), rows
    if task_type == "regression":
        return logits.float().reshape(b), labels.float().reshape(b), rows
    if task_type == "multilabel":
        sign = labels.float() * 2 - 1
        s = (logits.float() * sign).reshape(-1)
        return s, torch.zeros_like(s), rows.repeat_interleave(logits.shape[1])
    if task_type == "token_classification":
        mask = labels != -100
        z = logits.float()[mask]
        return log_odds(z, labels[mask].long()), torch.zeros(z.shape[0], device=logits.device), rows[:, None].expand_as(labels)[mask]
    raise ValueError(f"unknown task type {task_type!r}")


def _per_unit_grads(s: Any, params: list[Any], rows: Any, per_call: int) -> Any:
    """Unprojected gradients of ``s[rows]`` w.r.t. ``params``, ``per_call`` units per backward; yields
    ``[m, num_params]`` blocks in unit order."""
    import torch

    for start in range(0, len(rows), per_call):
        idx = rows[start:start + per_call]
        grad_out = torch.zeros(len(idx), s.shape[0], device=s.device, dtype=s.dtype)
        grad_out[torch.arange(len(idx)), idx] = 1.0
        try:
            grads = torch.autograd.grad(s, params, grad_outputs=grad_out, retain_graph=True, is_grads_batched=True,
                                        allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros(len(idx), *p.shape, device=s.device)).reshape(len(idx), -1)
                              for g, p in zip(grads, params)], dim=1)
        except RuntimeError:  # an op without a batching rule: one backward per unit
            rows_ = []
            for u in idx.tolist():
                gs = torch.autograd.grad(s[u], params, retain_graph=True, allow_unused=True)
                rows_.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, params)]))
            flat = torch.stack(rows_)
        yield flat


class _ProjectionBuffer:
    """Unprojected per-unit gradients gathered across batches and projected together, ``capacity`` units at a time.

    With a projection too large to keep (``GaussianProjector.cache`` false) every :meth:`GaussianProjector.project`
    regenerates the whole matrix; when the encoder trains (``partial``, ``full``) a batch is one example with one
    or a few units, so projecting per batch would regenerate the matrix for nearly every unit. Gathering up to
    ``capacity`` units (``buffer_mb`` of gradients) first regenerates it once per ``capacity`` units instead.
    """

    def __init__(self, projector: GaussianProjector, capacity: int) -> None:
        self.projector, self.capacity = projector, max(1, int(capacity))
        self.pending: list[Any] = []
        self.size = 0
        self.out: list[np.ndarray] = []
        self.projections = 0  # project() calls, for tests and the record

    def add(self, flat: Any) -> None:
        if self.size and self.size + flat.shape[0] > self.capacity:
            self.flush()
        self.pending.append(flat.detach())
        self.size += int(flat.shape[0])
        if self.size >= self.capacity:
            self.flush()

    def flush(self) -> None:
        import torch

        if self.pending:
            flat = self.pending[0] if len(self.pending) == 1 else torch.cat(self.pending)
            self.out.append(self.projector.project(flat).cpu().numpy())
            self.projections += 1
        self.pending, self.size = [], 0

    def take(self) -> np.ndarray:
        """Every projected gradient so far, in unit order (``[units, d]`` float32); empties the buffer."""
        self.flush()
        out = np.concatenate(self.out) if self.out else np.zeros((0, self.projector.dim), np.float32)
        self.out = []
        return out.astype(np.float32, copy=False)


def compute_gradient_features(
    model: Any,
    datasets: Mapping[str, Mapping[str, Any]],
    collator: Any,
    config: GradEstimateConfig | None = None,
    *,
    finetune: str = "frozen",
    device: Any = None,
    progress: bool = False,
) -> GradientFeatures:
    """Projected output gradients of every unit of ``datasets[task][split]`` at ``model`` (see the module docstring).

    ``datasets`` hold rows as the model consumes them (``MultiTaskTrainer.prepare_task_dataset``: ``task_ids``,
    ``labels`` and ``features`` or ``input_ids``); ``collator`` batches them (the trainer's data collator).

    Example::

        >>> feats = compute_gradient_features(trainer.model, {"a": {"train": ds, "validation": dev}},
        ...                                   trainer.data_collator, GradEstimateConfig(projection_dim=64))  # doctest: +SKIP
    """
    import torch

    from hf_taskgroup.log import progress_bar
    from hf_taskgroup.training.modeling import label_scale

    config = config or GradEstimateConfig()
    base = model.get_base_model() if hasattr(model, "get_base_model") and hasattr(model, "peft_config") else model
    named = shared_trainable_parameters(model)
    if not named:
        raise ValueError(
            f"grad_estimate: the model has no trainable shared parameters in {finetune!r} mode (the heads are "
            "per task); in frozen mode give it a shared trunk (trunk_hidden_sizes, e.g. [256])")
    params = [p for _, p in named]
    num_params = sum(int(p.numel()) for p in params)
    projector = GaussianProjector(num_params, config.projection_dim, seed=config.seed, chunk_size=config.chunk_size,
                                  cache_mb=config.projection_cache_mb)
    per_call = max(1, int(config.buffer_mb * 2**20 // (4 * num_params)))
    buffer = _ProjectionBuffer(projector, per_call)  # units are projected together across batches
    # a unit's backward runs over its whole batch: one example per forward when an example has many units
    # (tokens) or when the encoder trains, a batch of pooled rows otherwise
    def batch_size_of(task_type: str) -> int:
        if config.batch_size is not None:
            return int(config.batch_size)
        return 64 if finetune == "frozen" and task_type != "token_classification" else 1

    device = device if device is not None else next(model.parameters()).device
    rng = np.random.default_rng(config.seed)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    units: dict[str, dict[str, UnitGradients]] = {}
    kinds: dict[str, str] = {}
    losses: dict[str, dict[str, float]] = {}
    try:
        for task, splits in datasets.items():
            ttype = base.config.tasks[task]["type"]
            kinds[task] = "squared" if ttype == "regression" else "logistic"
            scale = label_scale(base.config.tasks[task]) if ttype == "regression" else None
            batch_size = batch_size_of(ttype)
            for split, ds in splits.items():
                order = np.arange(len(ds))
                if config.max_examples is not None and len(ds) > config.max_examples:
                    order = np.sort(rng.choice(len(ds), size=config.max_examples, replace=False))
                outs, targets, examples = [], [], []
                for b0 in progress_bar(range(0, len(order), batch_size), desc=f"Gradients {task}/{split}",
                                       nested=True, progress=progress):
                    idx = order[b0:b0 + batch_size].tolist()
                    rows = ds.__getitems__(idx) if hasattr(ds, "__getitems__") else [ds[i] for i in idx]
                    batch = {k: v.to(device) for k, v in collator(rows).items()}
                    labels = batch.pop("labels")
                    logits = model(**batch).logits
                    s, target, row = _unit_outputs(ttype, logits, labels)
                    if scale is not None:  # a head trained on standardized labels: its loss is on that scale
                        s, target = (s - scale[0]) / scale[1], (target - scale[0]) / scale[1]
                    keep = torch.arange(s.shape[0], device=s.device)
                    if config.max_units_per_example is not None and ttype in ("multilabel", "token_classification"):
                        chosen = []
                        row_np = row.cpu().numpy()
                        for r in np.unique(row_np):
                            members = np.flatnonzero(row_np == r)
                            if len(members) > config.max_units_per_example:
                                members = np.sort(rng.choice(members, size=config.max_units_per_example, replace=False))
                            chosen.extend(members.tolist())
                        keep = torch.as_tensor(chosen, dtype=torch.long, device=s.device)
                    for flat in _per_unit_grads(s, params, keep, per_call):
                        buffer.add(flat)
                    outs.append(s[keep].detach().double().cpu().numpy())
                    targets.append(target[keep].detach().double().cpu().numpy())
                    examples.append(np.asarray(idx)[row[keep].cpu().numpy()])
                    del logits, s
                unit = UnitGradients(buffer.take(), np.concatenate(outs), np.concatenate(targets),
                                     np.concatenate(examples).astype(np.int64))
                units.setdefault(task, {})[split] = unit
                losses.setdefault(task, {})[split] = float(_unit_loss(kinds[task], unit.base, unit.target).mean()) if unit.num_units else float("nan")
    finally:
        model.train(was_training)
    info = {"projection_dim": config.projection_dim, "seed": config.seed, "num_parameters": num_params,
            "parameters": [n for n, _ in named], "finetune": finetune, "gradient_seconds": time.perf_counter() - start,
            "units": {t: {s: u.num_units for s, u in sp.items()} for t, sp in units.items()},
            "base_unit_losses": losses, "projection_cached": projector.cache, "block_bytes": projector.block_bytes,
            "projections": buffer.projections}
    return GradientFeatures(units=units, kinds=kinds, info=info)


# ------------------------------------------------------------------------------------------- estimation
def _unit_loss(kind: str, z: np.ndarray, target: np.ndarray) -> np.ndarray:
    if kind == "logistic":
        return np.logaddexp(0.0, -z)
    return (z - target) ** 2


def _unit_dloss(kind: str, z: np.ndarray, target: np.ndarray) -> np.ndarray:
    if kind == "logistic":
        from scipy.special import expit

        return -expit(-z)
    return 2.0 * (z - target)


class GradientEstimator:
    """Estimated validation losses of any subset of tasks from :class:`GradientFeatures` (a zero-training evaluator).

    For a subset S, ``w_S`` minimises ``sum_{t in S} n_t / N * mean_{u in train(t)} loss_t(s0_u + <g_u, w>)
    + lam / 2 * |w|^2`` with ``n_t`` the task's training examples (proportional sampling, as the trainer) and
    ``lam = regularization * (mean squared gradient norm) / d``; each task of S then gets
    ``mean_{u in split(t)} loss_t(s0_u + <g_u, w_S>)``. Fits are memoised per subset.

    Example::

        >>> est = GradientEstimator(features, regularization=1.0)  # doctest: +SKIP
        >>> est(["sst2", "mqp"])["sst2"]["loss"]  # doctest: +SKIP
    """

    def __init__(self, features: GradientFeatures, *, regularization: float = 1.0, split: str = "validation",
                 train_split: str = "train", max_iter: int = 500):
        missing = [(t, s) for t in features.tasks for s in (train_split, split) if s not in features.units[t]]
        if missing:
            raise ValueError(f"gradient features lack (task, split) {missing}")
        if not regularization > 0:
            raise ValueError(f"regularization must be > 0, got {regularization}")
        self.features = features
        self.regularization = float(regularization)
        self.split, self.train_split, self.max_iter = split, train_split, int(max_iter)
        self.trainings = 0  # the GroupEvaluator protocol: estimates train nothing
        self.fits = 0
        self.fit_seconds = 0.0
        self.requested: list[tuple[str, ...]] = []  # every subset asked for, in order (repeats included)
        self._weights: dict[tuple[str, ...], np.ndarray] = {}
        self._results: dict[tuple[str, ...], dict[str, dict[str, float]]] = {}

    @property
    def tasks(self) -> list[str]:
        return self.features.tasks

    def _check(self, tasks: Sequence[str]) -> tuple[str, ...]:
        group = canonical_group(tasks)
        unknown = [t for t in group if t not in self.features.units]
        if unknown:
            raise ValueError(f"no gradient features for task(s) {unknown}; have {self.tasks}")
        return group

    def weights(self, tasks: Sequence[str]) -> np.ndarray:
        """The fitted linearised update ``w_S`` (d,) of the subset."""
        from scipy.optimize import minimize

        group = self._check(tasks)
        if group in self._weights:
            return self._weights[group]
        start = time.perf_counter()
        parts = [self.features.units[t][self.train_split] for t in group]
        n_examples = np.array([max(u.num_examples, 1) for u in parts], dtype=float)
        G = np.concatenate([u.grads for u in parts]).astype(np.float64)
        s0 = np.concatenate([u.base for u in parts])
        y = np.concatenate([u.target for u in parts])
        coef = np.concatenate([np.full(u.num_units, n / n_examples.sum() / max(u.num_units, 1))
                               for u, n in zip(parts, n_examples)])
        bounds = np.cumsum([0] + [u.num_units for u in parts])
        kinds = [self.features.kinds[t] for t in group]
        lam = self.regularization * float(coef @ (G * G).sum(axis=1)) / G.shape[1] if G.size else self.regularization

        def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
            z = s0 + G @ w
            value, dz = 0.5 * lam * float(w @ w), np.empty_like(z)
            for kind, a, b in zip(kinds, bounds[:-1], bounds[1:]):
                value += float(coef[a:b] @ _unit_loss(kind, z[a:b], y[a:b]))
                dz[a:b] = coef[a:b] * _unit_dloss(kind, z[a:b], y[a:b])
            return value, G.T @ dz + lam * w

        d = self.features.dim
        if G.size:
            res = minimize(fun, np.zeros(d), jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
            w = res.x
        else:
            w = np.zeros(d)
        self._weights[group] = w
        self.fits += 1
        self.fit_seconds += time.perf_counter() - start
        return w

    def losses(self, tasks: Sequence[str], w: np.ndarray | None = None, split: str | None = None) -> dict[str, float]:
        """Mean unit loss of each task on ``split`` (default: the estimator's) under the update ``w`` (None: 0)."""
        split = split or self.split
        out = {}
        for t in tasks:
            u = self.features.units[t][split]
            z = u.base if w is None else u.base + u.grads.astype(np.float64) @ w
            out[t] = float(_unit_loss(self.features.kinds[t], z, u.target).mean()) if u.num_units else float("nan")
        return out

    def base_losses(self) -> dict[str, float]:
        """The base model's own losses on the estimator's split (the estimate at ``w = 0``)."""
        return self.losses(self.tasks)

    def __call__(self, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        group = self._check(tasks)
        self.requested.append(group)
        if group not in self._results:
            est = self.losses(group, self.weights(group))
            base = self.losses(group)
            self._results[group] = {t: {"loss": est[t], "base_loss": base[t]} for t in group}
        return {t: dict(v) for t, v in self._results[group].items()}

    def pairwise_affinity(self, normalize: bool = True) -> np.ndarray:
        """``A[i, j]`` = drop of task j's estimated loss when trained with task i instead of alone (relative with ``normalize``)."""
        names = self.tasks
        n = len(names)
        alone = {t: self([t])[t]["loss"] for t in names}
        A = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if i != j:
                    with_i = self([names[i], names[j]])[names[j]]["loss"]
                    A[i, j] = alone[names[j]] - with_i
                    if normalize and abs(alone[names[j]]) > 1e-12:
                        A[i, j] /= abs(alone[names[j]])
        return A


# ------------------------------------------------------------------------------------------- base run
def train_and_collect_gradients(
    suite: Any,
    tasks: Sequence[str],
    settings: Any,
    config: GradEstimateConfig | None = None,
    *,
    tokenizer: Any = None,
    model_factory: Any = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> GradientFeatures:
    """Train the base model on ``tasks`` (``train_group``) and compute the projected gradients at it.

    With ``cache_dir`` the gradients are stored there (keyed by the tasks' data content, settings, model,
    tokenizer and the gradient options; sealed with a manifest, see
    :class:`~hf_taskgroup.artifacts.ArtifactStore`) and reused; a damaged folder is named in one
    :class:`~hf_taskgroup.artifacts.ArtifactWarning` and computed again. ``info["cold_seconds"]`` keeps what
    computing them cost.
    """
    import tempfile

    from hf_taskgroup.artifacts import (
        ArtifactStore,
        model_fingerprint,
        tokenizer_fingerprint,
        weights_fingerprint,
    )
    from hf_taskgroup.grouping.evaluators.text import suite_fingerprint
    from hf_taskgroup.training.train import train_group

    config = config or GradEstimateConfig()
    tasks = list(tasks)
    sub = suite.subset(tasks)
    model = None
    if model_factory is not None:
        model = model_factory(sub.task_infos(), settings.seed)
    stamp = stable_hash({
        "tasks": tasks, "settings": settings.to_dict(), "suite": suite_fingerprint(suite, tasks),
        "rows": {t: {s: len(d) for s, d in sub[t].load().items()} for t in tasks},
        "gradients": {k: getattr(config, k) for k in ("projection_dim", "seed", "split", "max_examples",
                                                      "max_units_per_example", "chunk_size")},
        "inputs": {"model": weights_fingerprint(model) if model is not None
                   else model_fingerprint(settings.model_name_or_path),
                   "tokenizer": tokenizer_fingerprint(tokenizer)},
    }, length=64)
    folder = Path(cache_dir) / stamp[:16] if cache_dir is not None else None
    store = ArtifactStore(cache_dir) if cache_dir is not None else None
    if folder is not None:
        cached = store.load(folder, fingerprint=stamp, loader=GradientFeatures.load)
        if cached is not None:
            return cached
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        result = train_group(suite, tasks, settings, tokenizer=tokenizer, model=model, eval_splits=(config.split,),
                             output_dir=scratch)
        train_seconds = time.perf_counter() - start
        trainer = result.pop("trainer")
        from hf_taskgroup.training.train import _TOKENIZED

        tok = trainer.processing_class
        datasets = {}
        for t in tasks:
            tokenized = _TOKENIZED.get(suite, t, tok, settings.max_length)
            if config.split not in tokenized:
                raise ValueError(f"task {t!r} has no {config.split!r} split to estimate losses on")
            datasets[t] = {s: trainer.prepare_task_dataset(t, tokenized[s], s) for s in ("train", config.split)}
        features = compute_gradient_features(trainer.model, datasets, trainer.data_collator, config,
                                             finetune=settings.finetune, device=trainer.args.device, progress=progress)
    features.info.update({
        "train_seconds": train_seconds,
        "cold_seconds": train_seconds + features.info["gradient_seconds"],
        "base_results": {t: result["tasks"][t].get(config.split, {}) for t in tasks},
        "settings": settings.to_dict(), "trainable_parameters": result.get("trainable_parameters"),
    })
    if folder is not None:
        features.save(folder)
        store.seal(folder, fingerprint=stamp)
    return features


# ------------------------------------------------------------------------------------------- the method
def _search(names: list[str], estimator: GradientEstimator, cfg: GradEstimateConfig) -> tuple[Grouping, np.ndarray | None]:
    from hf_taskgroup.grouping.registry import available_methods, get_method

    n = len(names)

    def step_kwargs(method: str) -> dict[str, Any]:
        accepted = inspect.signature(get_method(method)).parameters
        kwargs = dict(cfg.grouping_kwargs)
        for name in ("num_groups", "max_group_size"):
            value = getattr(cfg, name)
            if value is not None and name in accepted:
                kwargs.setdefault(name, value)
        return kwargs

    if cfg.search in ("surrogate", "pairwise"):
        needs = available_methods().get(cfg.grouping, {}).get("needs")
        if needs is None or "affinity" not in needs:
            raise ValueError(f"grouping={cfg.grouping!r} must be a registered method that takes an affinity matrix "
                             "(e.g. 'transfer_gain', 'clustering', 'tag')")
    if n == 1:
        return Grouping(groups=[list(names)], method="grad_estimate", tasks=names, params={}, scores={}), None
    if cfg.search == "pairwise":
        affinity = estimator.pairwise_affinity(normalize=cfg.normalize)
        step = get_method(cfg.grouping)(names, affinity=affinity, seed=cfg.seed, **step_kwargs(cfg.grouping))
        return step, affinity
    if cfg.search == "surrogate":
        from hf_taskgroup.grouping.methods.surrogate import surrogate

        num = cfg.num_subsets if cfg.num_subsets is not None else min(2**n - n - 1, 10 * n)
        step = surrogate(names, evaluator=estimator, num_subsets=num, max_size=n, ridge=0.0, normalize=cfg.normalize,
                         grouping=cfg.grouping, grouping_kwargs=step_kwargs(cfg.grouping), seed=cfg.seed)
        return step, np.asarray(step.scores["affinity"], dtype=float).T
    kwargs = {} if cfg.search == "exhaustive" else step_kwargs(cfg.search)
    step = get_method(cfg.search)(names, evaluator=estimator, seed=cfg.seed, **kwargs)
    return step, None


def _build_signature(func: Any) -> inspect.Signature:
    params = [inspect.Parameter("tasks", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for name in ("gradients", "suite", "settings", "tokenizer", "model_factory", "cache_dir"):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None))
    for f in dataclasses.fields(GradEstimateConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params, return_annotation=Grouping)


@register_method(
    "grad_estimate",
    needs=("gradients|suite",),
    description="Li, Sharma, Zhang 2024 (Grad-TAG): subset losses estimated from one training's projected gradients",
    config=GradEstimateConfig,
)
def grad_estimate(
    tasks: Sequence[str],
    *,
    gradients: GradientFeatures | None = None,
    suite: Any = None,
    settings: Any = None,
    tokenizer: Any = None,
    model_factory: Any = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> Grouping:
    """Group tasks with losses estimated from one base training (see the module docstring).

    Inputs: ``gradients`` (a :class:`GradientFeatures`, e.g. from :func:`train_and_collect_gradients`) or a
    ``suite`` (+ ``settings``, default ``TrainSettings()``; ``tokenizer``, ``model_factory(task_infos, seed)``,
    ``cache_dir`` for the gradients). Options: the fields of :class:`GradEstimateConfig`.

    Example::

        >>> g = grad_estimate(["a", "b", "c"], suite=suite, settings=TrainSettings(trunk_hidden_sizes=[32]),
        ...                   projection_dim=64, search="exhaustive")  # doctest: +SKIP
    """
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(GradEstimateConfig)})
    if unknown:
        raise TypeError(f"grad_estimate got unknown option(s) {unknown}")
    cfg = GradEstimateConfig(**options)
    names = [str(t) for t in tasks]
    start = time.perf_counter()
    cold_extra = 0.0
    if gradients is None:
        if suite is None:
            raise ValueError("grad_estimate needs gradients=... or suite=... (to train the base model)")
        if settings is None:
            from hf_taskgroup.training.train import TrainSettings

            settings = TrainSettings(seed=cfg.seed)
        computed_at = time.perf_counter()
        gradients = train_and_collect_gradients(suite, names, settings, cfg, tokenizer=tokenizer,
                                                model_factory=model_factory, cache_dir=cache_dir)
        real = time.perf_counter() - computed_at
        cold_extra = max(float(gradients.info.get("cold_seconds", real)) - real, 0.0)  # cached: charge the cold cost
    missing = [t for t in names if t not in gradients.units]
    if missing:
        raise ValueError(f"gradients have no task(s) {missing}; they cover {gradients.tasks}")
    estimator = gradients.estimator(regularization=cfg.regularization, split=cfg.split, max_iter=cfg.max_iter)
    fits_before, fit_seconds_before, calls_before = estimator.fits, estimator.fit_seconds, len(estimator.requested)
    step, affinity = _search(names, estimator, cfg)
    used = list(dict.fromkeys(estimator.requested[calls_before:]))
    estimates = {"+".join(g): {t: v["loss"] for t, v in estimator._results[g].items()} for g in used}
    scores: dict[str, Any] = {
        "base_loss": estimator.losses(names),
        "estimated_losses": estimates,
        "subsets_estimated": len(estimates),
        "fits": estimator.fits - fits_before,
        "fit_seconds": estimator.fit_seconds - fit_seconds_before,
        "search_step": {"method": step.method, "objective": step.objective, "params": step.params},
        "gradient_info": {k: v for k, v in gradients.info.items() if k not in ("parameters", "settings")},
    }
    if affinity is not None:
        scores["affinity"] = affinity.tolist()
    if "assignment" in step.scores:
        scores["assignment"] = step.scores["assignment"]
    params = {**dataclasses.asdict(cfg), "settings": None if settings is None else settings.to_dict()}
    seconds = time.perf_counter() - start + cold_extra
    return Grouping(
        groups=[list(g) for g in step.groups],
        method="grad_estimate",
        tasks=names,
        params=params,
        scores=scores,
        objective=step.objective,
        overlap=step.overlap,
        cost=GroupingCost(trainings=1, seconds=seconds,
                          examples=sum(u.num_examples for sp in gradients.units.values() for u in sp.values())),
        provenance={"affinity_orientation": "affinity[i][j] = effect of task i on task j (the grouping step's input)",
                    "estimate": "first-order (linearised) fine-tuning from the base model on each subset"},
    )


grad_estimate.__signature__ = _build_signature(grad_estimate)  # the options are GradEstimateConfig's fields
