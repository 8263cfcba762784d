"""Tabular multi-task suites and a small multi-task MLP trainer (the benchmarks of arXiv 2310.16241).

A :class:`TabularSuite` holds one small supervised problem per task in a shared feature space (Landmine:
29 fields, 9 features, binary mine label; Parkinson's: 42 patients, voice measures, total UPDRS).
:func:`train_tabular_group` trains one multi-task network on a group of tasks with the architecture of
Ayman et al. (B.4): a task-specific input layer, a shared trunk and a per-task output, and returns each
task's validation loss at the epoch with the lowest summed validation loss (plus the test loss there).
:func:`train_tabular_groups` trains many groups at once, each as its own model, in one batched network
(the results of separate trainings up to float rounding, at a fraction of the cost).
:func:`make_tabular_evaluator` wraps both in a :class:`~hf_taskgroup.grouping.evaluators.base.CachedEvaluator`.

Losses: binary cross-entropy for classification; MSE on targets standardised per task with that task's
training mean and standard deviation for regression (so a loss of 1.0 is "predict the training mean", and
tasks with different target scales weigh the same; ``mse_raw`` gives the MSE in the original units).
"""

from __future__ import annotations

import csv
import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.grouping.evaluators.base import CachedEvaluator

__all__ = [
    "DEFAULT_TRAIN_KWARGS",
    "TabularSuite",
    "TabularTask",
    "make_tabular_evaluator",
    "train_tabular_group",
    "train_tabular_groups",
]

#: The task types a tabular suite supports (a subset of :data:`hf_taskgroup.data.tasks.TASK_TYPES`).
TABULAR_TASK_TYPES = ("classification", "regression")

#: Defaults of :func:`train_tabular_group`: small enough for hundreds of trainings on a CPU.
DEFAULT_TRAIN_KWARGS: dict[str, Any] = {
    "input_units": 16,
    "hidden": (16, 8),
    "epochs": 60,
    "lr": 0.01,
    "batch_size": 32,
    "weight_decay": 0.0,
    "activation": "elu",
    "input_layer": "task",
    "num_threads": 1,
}
ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid")


@dataclass
class TabularTask:
    """One task's splits: float32 features (standardised with suite-wide training statistics) and targets.

    For regression, ``y_*`` are standardised with this task's training mean/std (``target_mean``,
    ``target_std``); ``raw_target_variance`` is the variance of the training targets before standardising.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    target_mean: float = 0.0
    target_std: float = 1.0
    raw_target_variance: float = 0.0


@dataclass
class TabularSuite:
    """Tabular multi-task suite: one :class:`TabularTask` per task over a shared feature space.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = {"a": rng.normal(size=(50, 3)), "b": rng.normal(size=(50, 3))}
        >>> y = {t: (x[:, 0] > 0).astype(float) for t, x in X.items()}
        >>> suite = TabularSuite.from_arrays(X, y, task_type="classification")
        >>> suite.tasks, suite.num_features, len(suite.data["a"].y_train)
        (['a', 'b'], 3, 30)
    """

    tasks: list[str]
    task_type: str
    feature_names: list[str]
    data: dict[str, TabularTask]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        features: Mapping[str, np.ndarray],
        targets: Mapping[str, np.ndarray],
        *,
        task_type: str = "classification",
        feature_names: Sequence[str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        source: str = "arrays",
    ) -> TabularSuite:
        """Split each task (seeded; per class for classification), standardise features with the training
        rows of all tasks and, for regression, targets per task with that task's training statistics."""
        if task_type not in TABULAR_TASK_TYPES:
            raise ValueError(f"task_type must be one of {TABULAR_TASK_TYPES}, got {task_type!r}")
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(f"need 0 <= val_fraction, test_fraction and val+test < 1; got {val_fraction}, {test_fraction}")
        tasks = [str(t) for t in features]
        if not tasks:
            raise ValueError("a tabular suite needs at least one task")
        missing = [t for t in features if t not in targets]
        if missing:
            raise ValueError(f"no targets for task(s) {missing}")
        dims = {t: np.asarray(features[t]).shape[1] if np.asarray(features[t]).ndim == 2 else -1 for t in features}
        if len(set(dims.values())) != 1 or -1 in dims.values():
            raise ValueError(f"every task needs a 2-D feature array with the same number of columns; got {dims}")
        num_features = next(iter(dims.values()))
        names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(num_features)]
        if len(names) != num_features:
            raise ValueError(f"{len(names)} feature names for {num_features} feature columns")

        splits: dict[str, tuple[np.ndarray, ...]] = {}
        for key in features:
            task = str(key)
            x = np.asarray(features[key], dtype=np.float64)
            y = np.asarray(targets[key], dtype=np.float64).reshape(-1)
            if len(x) != len(y):
                raise ValueError(f"task {task!r}: {len(x)} feature rows but {len(y)} targets")
            if not np.isfinite(x).all() or not np.isfinite(y).all():
                raise ValueError(f"task {task!r}: features or targets contain NaN/inf")
            if task_type == "classification" and not np.isin(y, (0.0, 1.0)).all():
                raise ValueError(f"task {task!r}: classification targets must be 0/1, got {sorted(set(y.tolist()))[:5]}")
            tr, va, te = _split_indices(y, task_type, val_fraction, test_fraction, seed, task)
            splits[task] = (x[tr], y[tr], x[va], y[va], x[te], y[te])

        train_x = np.concatenate([s[0] for s in splits.values()])
        mean = train_x.mean(axis=0)
        std = train_x.std(axis=0)
        std[std < 1e-12] = 1.0
        data: dict[str, TabularTask] = {}
        for task, (xtr, ytr, xva, yva, xte, yte) in splits.items():
            def fx(a: np.ndarray) -> np.ndarray:
                return ((a - mean) / std).astype(np.float32)

            raw_var = float(ytr.var()) if len(ytr) else 0.0
            t_mean, t_std = 0.0, 1.0
            if task_type == "regression":
                t_mean = float(ytr.mean())
                t_std = float(ytr.std()) if ytr.std() > 1e-12 else 1.0

            def fy(a: np.ndarray, m: float = t_mean, s: float = t_std) -> np.ndarray:
                return ((a - m) / s).astype(np.float32)

            data[task] = TabularTask(fx(xtr), fy(ytr), fx(xva), fy(yva), fx(xte), fy(yte), t_mean, t_std, raw_var)
        settings = {"source": source, "task_type": task_type, "val_fraction": val_fraction,
                    "test_fraction": test_fraction, "seed": seed, "feature_names": names}
        suite = cls(tasks=tasks, task_type=task_type, feature_names=names, data=data, settings=settings)
        suite.settings["fingerprint"] = suite.fingerprint()
        return suite

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        task_column: str = "task_id",
        target_column: str = "target",
        drop_columns: Sequence[str] = (),
        task_type: str = "classification",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        tasks: Sequence[str] | None = None,
    ) -> TabularSuite:
        """Load a long-format CSV (one row per example: task id, numeric features, target).

        Every column other than ``task_column``, ``target_column`` and ``drop_columns`` is a feature (e.g.
        Parkinson's needs ``drop_columns=("motor_UPDRS",)``: it is a second target, not a feature). ``tasks``
        keeps only those task ids, in that order.

        Example:
            >>> suite = TabularSuite.from_csv("parkinsons.csv", task_type="regression",
            ...                               drop_columns=("motor_UPDRS",))  # doctest: +SKIP
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tabular CSV at {path}")
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path} is empty")
            rows = list(reader)
        header = [h.strip() for h in header]
        for col in (task_column, target_column, *drop_columns):
            if col not in header:
                raise ValueError(f"{path}: no column {col!r} (columns: {header})")
        skip = {task_column, target_column, *drop_columns}
        feature_cols = [i for i, h in enumerate(header) if h not in skip]
        t_idx, y_idx = header.index(task_column), header.index(target_column)
        by_task: dict[str, list[list[str]]] = {}
        for line_no, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{line_no}: {len(row)} fields, header has {len(header)}")
            by_task.setdefault(row[t_idx].strip(), []).append(row)
        order = list(by_task) if tasks is None else [str(t) for t in tasks]
        unknown = [t for t in order if t not in by_task]
        if unknown:
            raise ValueError(f"{path}: unknown task id(s) {unknown} in column {task_column!r}")
        features: dict[str, np.ndarray] = {}
        targets: dict[str, np.ndarray] = {}
        for task in order:
            try:
                features[task] = np.array([[float(r[i]) for i in feature_cols] for r in by_task[task]])
                targets[task] = np.array([float(r[y_idx]) for r in by_task[task]])
            except ValueError as err:
                raise ValueError(f"{path}: task {task!r} has a non-numeric feature or target ({err})") from err
        return cls.from_arrays(
            features, targets, task_type=task_type, feature_names=[header[i] for i in feature_cols],
            val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, source=path.name,
        )

    # ------------------------------------------------------------------ views
    def subset(self, tasks: Sequence[str]) -> TabularSuite:
        """The same suite restricted to ``tasks`` (same splits and standardisation)."""
        unknown = [t for t in tasks if t not in self.data]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; suite has {self.tasks}")
        sub = TabularSuite([str(t) for t in tasks], self.task_type, list(self.feature_names),
                           {t: self.data[t] for t in tasks}, dict(self.settings))
        sub.settings["fingerprint"] = sub.fingerprint()
        return sub

    def task_sizes(self) -> dict[str, int]:
        """Number of training examples per task."""
        return {t: int(len(self.data[t].y_train)) for t in self.tasks}

    def target_variance(self) -> dict[str, float]:
        """Variance of each task's raw training targets (feature ``group_variance`` of the affinity search)."""
        return {t: self.data[t].raw_target_variance for t in self.tasks}

    def target_mean(self) -> dict[str, float]:
        """Mean of each task's raw training targets."""
        return {t: float(self.data[t].target_mean if self.task_type == "regression" else self.data[t].y_train.mean())
                for t in self.tasks}

    def fingerprint(self) -> str:
        """sha256 of the processed arrays, task order and task type (part of every cache key)."""
        h = hashlib.sha256(self.task_type.encode())
        for task in self.tasks:
            h.update(task.encode() + b"\0")
            d = self.data[task]
            for arr in (d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test):
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def _split_indices(
    y: np.ndarray, task_type: str, val_fraction: float, test_fraction: float, seed: int, task: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of one task; classification splits each class separately (stratified)."""
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    strata = [np.flatnonzero(y == c) for c in np.unique(y)] if task_type == "classification" else [np.arange(len(y))]
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for idx in strata:
        idx = rng.permutation(idx)
        n_val = int(round(len(idx) * val_fraction))
        n_test = int(round(len(idx) * test_fraction))
        n_test = min(n_test, max(len(idx) - n_val - 1, 0))  # keep at least one training example per stratum
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    tr, va, te = (np.sort(np.concatenate(p)) for p in parts)
    if len(tr) == 0 or (val_fraction > 0 and len(va) == 0):
        raise ValueError(f"task {task!r}: {len(y)} examples are too few for val_fraction={val_fraction}, "
                         f"test_fraction={test_fraction}")
    return tr, va, te


def _stack(arrays: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad per-task arrays to [k, max_n, ...] with a mask [k, max_n]."""
    n_max = max(max(len(a) for a in arrays), 1)
    shape = (len(arrays), n_max) + ((width,) if width else ())
    out = np.zeros(shape, dtype=np.float32)
    mask = np.zeros((len(arrays), n_max), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
        mask[i, : len(a)] = 1.0
    return out, mask


def train_tabular_group(
    suite: TabularSuite,
    tasks: Sequence[str],
    *,
    input_units: int = DEFAULT_TRAIN_KWARGS["input_units"],
    hidden: Sequence[int] = DEFAULT_TRAIN_KWARGS["hidden"],
    epochs: int = DEFAULT_TRAIN_KWARGS["epochs"],
    lr: float = DEFAULT_TRAIN_KWARGS["lr"],
    batch_size: int = DEFAULT_TRAIN_KWARGS["batch_size"],
    weight_decay: float = DEFAULT_TRAIN_KWARGS["weight_decay"],
    activation: str = DEFAULT_TRAIN_KWARGS["activation"],
    input_layer: str = DEFAULT_TRAIN_KWARGS["input_layer"],
    num_threads: int = DEFAULT_TRAIN_KWARGS["num_threads"],
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Train one multi-task MLP on ``tasks`` and return ``{task: {"loss": val, "test_loss": ..., metric: ...}}``.

    Architecture (B.4 of arXiv 2310.16241): per task a ``Linear(num_features, input_units)`` + activation,
    a shared trunk of ``Linear`` + activation layers of sizes ``hidden``, and per task a linear output
    (ELU by default: with ReLU these tiny nets often die at initialisation). ``input_layer="shared"``
    shares the input layer too (hard parameter sharing: only the outputs are task-specific). Each step takes a mini-batch
    of ``batch_size`` examples from every task (tasks are sampled equally, whatever their size) and
    minimises the sum of the per-task mean losses with Adam; an epoch is as many steps as the largest task
    needs to see its training set once. The losses reported are those of the epoch (0 = untrained, up to
    ``epochs``) with the lowest summed validation loss (early-stopping selection of one checkpoint for the
    group); ``best_epoch`` records it. Classification adds ``accuracy`` and ``auc`` (when the validation
    split has both classes) on validation; regression adds ``mse_raw`` (validation MSE in original units).
    Deterministic for a given ``seed``. The networks are tiny, so torch runs with ``num_threads`` threads
    (1 by default: fastest for them; the previous setting is restored on return).

    This is :func:`train_tabular_groups` with one group (bit-identical results); train many groups with
    that function instead.

    Example:
        >>> res = train_tabular_group(suite, ["1", "2"], epochs=20)  # doctest: +SKIP
        >>> res["1"]["loss"], res["1"]["test_loss"]  # doctest: +SKIP
    """
    return train_tabular_groups(
        suite, [tasks], input_units=input_units, hidden=hidden, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, activation=activation, input_layer=input_layer, num_threads=num_threads, seed=seed,
    )[0]


def train_tabular_groups(
    suite: TabularSuite,
    groups: Sequence[Sequence[str]],
    *,
    input_units: int = DEFAULT_TRAIN_KWARGS["input_units"],
    hidden: Sequence[int] = DEFAULT_TRAIN_KWARGS["hidden"],
    epochs: int = DEFAULT_TRAIN_KWARGS["epochs"],
    lr: float = DEFAULT_TRAIN_KWARGS["lr"],
    batch_size: int = DEFAULT_TRAIN_KWARGS["batch_size"],
    weight_decay: float = DEFAULT_TRAIN_KWARGS["weight_decay"],
    activation: str = DEFAULT_TRAIN_KWARGS["activation"],
    input_layer: str = DEFAULT_TRAIN_KWARGS["input_layer"],
    num_threads: int = DEFAULT_TRAIN_KWARGS["num_threads"],
    seed: int = 0,
) -> list[dict[str, dict[str, float]]]:
    """Train every group of ``groups`` as its own model, all in one batched network; one result per group.

    ``result[i]`` is what ``train_tabular_group(suite, groups[i], ...)`` returns, up to float rounding (the
    batched matrix products and Adam update round differently; with one group the computation is exactly that
    function's). Each group keeps everything a separate training has: its own parameters, initialised from
    its own ``torch.Generator`` seeded with ``seed`` in the same order; its own batch sampling
    (``np.random.default_rng(seed)``), batch size (``min(batch_size, largest task of the group)``), steps per
    epoch, Adam state and step count, and early-stopping epoch. The batch is a list of (group, task) slots, so
    a task may appear in several groups. The parameters of all groups are stacked (input and output layers:
    one row per slot; trunk layers: one row per group, gathered per slot for a batched product), the loss is
    the sum of the groups' losses (the groups share no parameter, so each group's gradient is its own), and
    an Adam that keeps per-group step counts moves only the groups that still have steps left in the epoch;
    resting groups neither sample nor move. The Python and autograd overhead per step, which dominates
    for these tiny nets, is paid once per pass instead of once per group: on Landmine a pass over ~200 groups
    costs about as much as 20 single trainings (``benchmarks/tabular_batched_training.py``).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = {t: rng.normal(size=(40, 3)) for t in "abc"}
        >>> suite = TabularSuite.from_arrays(X, {t: x[:, 0] for t, x in X.items()}, task_type="regression")
        >>> many = train_tabular_groups(suite, [["a", "b"], ["c"], ["a"]], epochs=3)
        >>> one = train_tabular_group(suite, ["a", "b"], epochs=3)
        >>> abs(many[0]["a"]["loss"] - one["a"]["loss"]) < 1e-5, sorted(many[2])
        (True, ['a'])
    """
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(int(num_threads), 1))
    try:
        return _train_groups(suite, groups, input_units, hidden, epochs, lr, batch_size, weight_decay, activation,
                             input_layer, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _check_groups(suite: TabularSuite, groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """Task names of each group as strings; clear errors (naming the group) for bad groups."""
    if isinstance(groups, (str, bytes)):
        raise TypeError(f"groups must be a list of task lists, got the string {groups!r}")
    named: list[list[str]] = []
    for gi, group in enumerate(groups):
        if isinstance(group, (str, bytes)):
            raise TypeError(f"group {gi} is the string {group!r}; pass a list of task names per group")
        names = [str(t) for t in group]
        unknown = [t for t in names if t not in suite.data]
        if unknown:
            raise ValueError(f"group {gi} {names}: unknown task(s) {unknown}; suite has {suite.tasks}")
        if not names or len(set(names)) != len(names):
            raise ValueError(f"group {gi}: need a non-empty group of distinct tasks, got {names}")
        named.append(names)
    return named


@dataclass
class _Group:
    """Sampling state and early-stopping record of one group of a batched training."""

    slots: slice
    rng: np.random.Generator
    batch: int = 0
    steps: int = 0
    best: tuple[float, np.ndarray, np.ndarray, Any, int] | None = None


def _init_group(k: int, d: int, input_units: int, hidden: Sequence[int], input_layer: str, seed: int) -> list[Any]:
    """One group's initial parameters ``[w_in, b_in, w_1, b_1, ..., w_out, b_out]`` (uniform +-1/sqrt(fan_in)),
    drawn in that order from the group's own ``torch.Generator`` seeded with ``seed``."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))

    def init(*shape: int, fan_in: int) -> torch.Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=gen) * 2 - 1) * bound

    k_in = k if input_layer == "task" else 1
    params = [init(k_in, d, input_units, fan_in=d), init(k_in, 1, input_units, fan_in=d)]
    width = input_units
    for h in hidden:
        params += [init(width, h, fan_in=width), init(h, fan_in=width)]
        width = h
    return params + [init(k, width, 1, fan_in=width), init(k, 1, 1, fan_in=width)]


class _RowAdam:
    """Adam (``torch.optim.Adam``'s update with L2 ``weight_decay``) for parameters stacked over independent models.

    Row ``r`` of a parameter belongs to model ``owner[r]``. :meth:`step` moves only the rows of the active
    models and counts steps per model, so each model follows the trajectory its own ``torch.optim.Adam``
    would (up to float rounding), however often the others step.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.ones(2, 3))
        >>> opt = _RowAdam([(p, torch.tensor([0, 1]))], num_models=2, lr=0.1, weight_decay=0.0)
        >>> p.sum().backward(); opt.step(np.array([True, False]))
        >>> [round(v, 4) for v in p.detach()[:, 0].tolist()]  # Adam's first step moves by lr
        [0.9, 1.0]
    """

    def __init__(self, params: Sequence[tuple[Any, Any]], num_models: int, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.params = [p for p, _ in params]
        self.owners = [owner for _, owner in params]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = np.zeros(num_models)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, active: np.ndarray) -> None:
        """One Adam step for the models where ``active`` (bool per model) is True."""
        import torch

        beta1, beta2 = self.betas
        self.steps += active
        t = np.maximum(self.steps, 1)  # resting models that never stepped: any finite value, their rows are kept
        step_size = torch.from_numpy(-self.lr / (1 - beta1**t)).float()
        bias_correction2_sqrt = torch.from_numpy((1 - beta2**t) ** 0.5).float()
        moving = None if active.all() else torch.from_numpy(active)
        with torch.no_grad():
            for p, owner, m, v in zip(self.params, self.owners, self.exp_avg, self.exp_avg_sq):
                rows = (-1,) + (1,) * (p.dim() - 1)
                grad = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
                new_m = m.lerp(grad, 1 - beta1)
                new_v = (v * beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (new_v.sqrt() / bias_correction2_sqrt[owner].view(rows)).add_(self.eps)
                new_p = p + step_size[owner].view(rows) * (new_m / denom)
                if moving is not None:
                    keep = ~moving[owner].view(rows)
                    new_m, new_v, new_p = (torch.where(keep, old, new) for old, new in
                                           ((m, new_m), (v, new_v), (p, new_p)))
                m.copy_(new_m)
                v.copy_(new_v)
                p.copy_(new_p)


def _train_groups(
    suite: TabularSuite, groups: Sequence[Sequence[str]], input_units: int, hidden: Sequence[int], epochs: int,
    lr: float, batch_size: int, weight_decay: float, activation: str, input_layer: str, seed: int,
) -> list[dict[str, dict[str, float]]]:
    import torch

    named = _check_groups(suite, groups)
    if epochs < 0 or batch_size < 1 or input_units < 1 or any(h < 1 for h in hidden):
        raise ValueError("epochs must be >= 0; batch_size, input_units and hidden sizes >= 1")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    act = {"relu": torch.relu, "elu": torch.nn.functional.elu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    if input_layer not in ("task", "shared"):
        raise ValueError(f"input_layer must be 'task' (B.4) or 'shared', got {input_layer!r}")
    if not named:
        return []
    d = suite.num_features
    classification = suite.task_type == "classification"
    single = len(named) == 1  # one group: exactly a lone training's computation (torch Adam, unbatched trunk)

    # slots: the (group, task) pairs, group after group; parameters stacked over groups (input and output
    # layers: one row per slot, or per group for a shared input layer; trunk layers: one row per group)
    slot_tasks = [t for names in named for t in names]
    k = len(slot_tasks)
    slot_group = torch.tensor([gi for gi, names in enumerate(named) for _ in names])
    every_group = torch.arange(len(named))
    starts = np.cumsum([0] + [len(names) for names in named]).tolist()
    state = [_Group(slice(starts[gi], starts[gi + 1]), np.random.default_rng(int(seed))) for gi in range(len(named))]
    initial = [_init_group(len(names), d, input_units, hidden, input_layer, seed) for names in named]
    layers = list(zip(*initial))
    w_in, b_in = (torch.nn.Parameter(torch.cat(p)) for p in layers[:2])
    trunk = [(torch.nn.Parameter(torch.stack(w)), torch.nn.Parameter(torch.stack(b)))
             for w, b in zip(layers[2:-2:2], layers[3:-2:2])]
    w_out, b_out = (torch.nn.Parameter(torch.cat(p)) for p in layers[-2:])
    in_owner = slot_group if input_layer == "task" else every_group  # the group of each input-layer row
    in_row = torch.arange(k) if input_layer == "task" else slot_group  # the input-layer row of each slot
    params = [(w_in, in_owner), (b_in, in_owner), (w_out, slot_group), (b_out, slot_group),
              *[(p, every_group) for layer in trunk for p in layer]]

    def forward(x: torch.Tensor) -> torch.Tensor:  # x: [k, b, d] -> [k, b]
        if single:
            h = act(torch.bmm(x, w_in.expand(k, -1, -1)) + b_in)
            for w, b in trunk:
                h = act(h @ w[0] + b[0])
        else:
            h = act(torch.bmm(x, w_in[in_row]) + b_in[in_row])
            for w, b in trunk:
                h = act(torch.bmm(h, w[slot_group]) + b[slot_group].unsqueeze(1))
        return (torch.bmm(h, w_out) + b_out).squeeze(-1)

    def per_example_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if classification:
            return torch.nn.functional.binary_cross_entropy_with_logits(pred, y, reduction="none")
        return (pred - y) ** 2

    # training rows of every distinct task in one tensor; a slot samples rows offset + [0, size)
    distinct = list(dict.fromkeys(slot_tasks))
    offsets = dict(zip(distinct, np.cumsum([0] + [len(suite.data[t].y_train) for t in distinct]).tolist()))
    x_all = torch.from_numpy(np.concatenate([suite.data[t].x_train for t in distinct]))
    y_all = torch.from_numpy(np.concatenate([suite.data[t].y_train for t in distinct]))
    data = [suite.data[t] for t in slot_tasks]
    sizes = [len(t.y_train) for t in data]
    xv, mv = _stack([t.x_val for t in data], d)
    yv, _ = _stack([t.y_val for t in data], 0)
    xt, mt = _stack([t.x_test for t in data], d)
    yt, _ = _stack([t.y_test for t in data], 0)
    xv, mv, yv, xt, mt, yt = (torch.from_numpy(a) for a in (xv, mv, yv, xt, mt, yt))

    def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    if single:
        opt = torch.optim.Adam([p for p, _ in params], lr=lr, weight_decay=weight_decay, foreach=True)
    else:
        row_adam = _RowAdam(params, len(named), lr, weight_decay)
    for g in state:
        g.batch = min(batch_size, max(sizes[g.slots]))
        g.steps = max(math.ceil(s / g.batch) for s in sizes[g.slots])
    group_steps = np.array([g.steps for g in state])
    orders = [np.empty(0, dtype=np.int64)] * k
    for g in state:  # each group draws its first permutations from its own rng, task by task
        for i in range(g.slots.start, g.slots.stop):
            orders[i] = g.rng.permutation(sizes[i])
    cursors = [0] * k
    width = max(g.batch for g in state)
    rows = np.zeros((k, width), dtype=np.int64)  # rows of x_all per slot; a slot's padding (>= its batch) stays 0
    slot_batch = torch.tensor([float(g.batch) for g in state for _ in range(g.slots.start, g.slots.stop)])
    in_batch = torch.arange(width)[None, :] < slot_batch[:, None]  # [k, width]: the slot's own batch positions
    for epoch in range(epochs + 1):  # epoch 0 scores the untrained network (early stopping may keep it)
        for step in range(int(group_steps.max()) if epoch else 0):
            active = step < group_steps
            for g in (g for g, on in zip(state, active) if on):  # each group samples from its own rng as alone
                b, rng = g.batch, g.rng
                for i in range(g.slots.start, g.slots.stop):
                    take = min(b, sizes[i])
                    if cursors[i] + take > sizes[i]:
                        orders[i], cursors[i] = rng.permutation(sizes[i]), 0
                    idx = orders[i][cursors[i]:cursors[i] + take]
                    cursors[i] += take
                    if take < b:  # small task: repeat examples so every task contributes one [b, d] block
                        idx = idx[np.arange(b) % take]
                    rows[i, :b] = offsets[slot_tasks[i]] + idx
            index = torch.from_numpy(rows)
            per_example = per_example_loss(forward(x_all[index]), y_all[index])
            if single:
                opt.zero_grad()
                per_example.mean(1).sum().backward()
                opt.step()
            else:  # sum of each active slot's mean over its own batch; resting groups get no update
                mask = in_batch & torch.from_numpy(active)[slot_group][:, None]
                row_adam.zero_grad()
                ((per_example * mask).sum(1) / slot_batch).sum().backward()
                row_adam.step(active)
        with torch.no_grad():
            val_pred = forward(xv)
            val = masked_mean(per_example_loss(val_pred, yv), mv).numpy()
            improved = [g for g in state if g.best is None or float(val[g.slots].sum()) < g.best[0]]
            if improved:
                test = masked_mean(per_example_loss(forward(xt), yt), mt).numpy()
                for g in improved:
                    g.best = (float(val[g.slots].sum()), val[g.slots].copy(), test[g.slots].copy(),
                              val_pred[g.slots].clone(), epoch)
    return [_group_metrics(g, data[g.slots], names, classification) for g, names in zip(state, named)]


def _group_metrics(
    group: _Group, data: list[TabularTask], names: list[str], classification: bool
) -> dict[str, dict[str, float]]:
    """Per-task results of one group at its best epoch."""
    assert group.best is not None
    _, val_loss, test_loss, val_pred, best_epoch = group.best
    out: dict[str, dict[str, float]] = {}
    for i, task in enumerate(names):
        n_val, n_test = len(data[i].y_val), len(data[i].y_test)
        metrics = {"loss": float(val_loss[i]), "test_loss": float(test_loss[i]) if n_test else float("nan"),
                   "best_epoch": float(best_epoch)}
        pred = val_pred[i, :n_val].numpy()
        if classification:
            metrics["accuracy"] = float(((pred > 0) == (data[i].y_val > 0.5)).mean())
            metrics["auc"] = _auc(data[i].y_val, pred)
        else:
            metrics["mse_raw"] = float(val_loss[i]) * data[i].target_std ** 2
        out[task] = metrics
    return out


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank statistic; NaN when only one class is present."""
    pos, neg = score[y > 0.5], score[y <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def make_tabular_evaluator(
    suite: TabularSuite, cache_dir: str | Path | None, *, seed: int = 0, **train_kwargs: Any
) -> CachedEvaluator:
    """A :class:`CachedEvaluator` that trains groups of ``suite`` with :func:`train_tabular_group`.

    The cache key covers the suite's fingerprint (data, splits, standardisation), every training setting
    (defaults included) and ``seed``. :meth:`~CachedEvaluator.evaluate_many` trains many groups together with
    :func:`train_tabular_groups` (same results up to float rounding, under the same cache keys).

    Example:
        >>> ev = make_tabular_evaluator(suite, "cache/landmine", epochs=40)  # doctest: +SKIP
        >>> ev(["1", "2"])["1"]["loss"]  # doctest: +SKIP
        >>> results = ev.evaluate_many([["1"], ["2"], ["1", "2"]], chunk_size=256)  # doctest: +SKIP
    """
    unknown = sorted(set(train_kwargs) - set(DEFAULT_TRAIN_KWARGS))
    if unknown:
        raise TypeError(f"unknown training setting(s) {unknown}; valid: {sorted(DEFAULT_TRAIN_KWARGS)}")
    kwargs = {**DEFAULT_TRAIN_KWARGS, **train_kwargs}
    kwargs["hidden"] = [int(h) for h in kwargs["hidden"]]
    settings = {"trainer": "train_tabular_group/v1", "suite": suite.fingerprint(), "task_type": suite.task_type,
                **kwargs}

    def train_fn(tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        return train_tabular_group(suite, tasks, seed=seed, **kwargs)

    def batch_train_fn(groups: list[list[str]]) -> list[dict[str, dict[str, float]]]:
        return train_tabular_groups(suite, groups, seed=seed, **kwargs)

    return CachedEvaluator(train_fn, cache_dir, settings, seed=seed, batch_train_fn=batch_train_fn)
