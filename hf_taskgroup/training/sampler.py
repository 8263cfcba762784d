"""Task-homogeneous batch samplers for multi-task training.

The training data is a ``torch.utils.data.ConcatDataset`` of per-task datasets in a fixed task
order. :class:`MultiTaskBatchSampler` yields batches of global indices into it, every batch from
ONE task, and under DDP every process trains the same task at the same step (the property that lets
the task heads stay out of ``find_unused_parameters``).

Strategies (:class:`TaskSampling`) decide which task each step trains:

- ``proportional``: each task gets exactly as many steps as it has global batches, in a seeded
  random order, so every example is visited about once per epoch (exactly once with
  ``drop_last=False`` and one process).
- ``temperature``: tasks drawn i.i.d. with ``p_t ∝ n_t^(1/T)`` (T=1 is proportional to the
  number of examples, T→∞ uniform); small tasks are up-sampled, large ones down-sampled.
- ``uniform``: tasks drawn i.i.d. with ``p_t = 1/K``.
- ``round_robin``: tasks in order 0, 1, ..., K-1, 0, 1, ... (deterministic).

Example::

    >>> from hf_taskgroup.training.sampler import MultiTaskBatchSampler, task_probabilities
    >>> task_probabilities([100, 400], "temperature", temperature=2.0).round(3).tolist()
    [0.333, 0.667]
    >>> sampler = MultiTaskBatchSampler([5, 3], batch_size=2, strategy="round_robin")
    >>> len(sampler), sampler.task_schedule()
    (5, [0, 1, 0, 1, 0])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from enum import Enum

import numpy as np
from torch.utils.data import Sampler

__all__ = ["TaskSampling", "task_probabilities", "MultiTaskBatchSampler"]

_SCHEDULE_STREAM, _PERMUTATION_STREAM = 0, 1  # independent random streams per (seed, epoch)


class TaskSampling(str, Enum):
    """How :class:`MultiTaskBatchSampler` chooses the task of each step.

    Example::

        >>> TaskSampling("temperature") is TaskSampling.TEMPERATURE
        True
    """

    PROPORTIONAL = "proportional"
    TEMPERATURE = "temperature"
    ROUND_ROBIN = "round_robin"
    UNIFORM = "uniform"

    @classmethod
    def parse(cls, value: str | TaskSampling) -> TaskSampling:
        """The member for ``value`` (a member or its string, case-insensitive); ValueError listing the valid ones."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if member.value == value.strip().lower():
                    return member
        raise ValueError(f"unknown task sampling strategy {value!r}; expected one of {', '.join(m.value for m in cls)}")


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = list(sizes)
    if not sizes:
        raise ValueError("dataset_sizes is empty; need at least one task")
    for i, n in enumerate(sizes):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise ValueError(f"dataset_sizes[{i}] = {n!r} is not an integer")
        if n < 1:
            raise ValueError(f"dataset_sizes[{i}] = {n}: task {i} has no examples (every task needs at least one)")
    return [int(n) for n in sizes]


def _check_temperature(temperature: float) -> float:
    if not isinstance(temperature, numbers.Real) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def task_probabilities(
    sizes: Sequence[int], strategy: str | TaskSampling, temperature: float = 1.0
) -> np.ndarray:
    """The probability of drawing each task at a step under ``strategy``.

    - proportional: ``n_t / sum(n)``;
    - temperature: ``p_t ∝ n_t^(1/T)`` (computed in log space, so huge sizes and large T are stable);
    - uniform and round_robin: ``1/K`` (round_robin visits tasks in a fixed order; this is its long-run share).

    Raises:
        ValueError: no tasks, a size below 1 (naming its index), ``temperature <= 0``, unknown strategy.

    Example::

        >>> task_probabilities([1, 3], "proportional").tolist()
        [0.25, 0.75]
    """
    sizes = _check_sizes(sizes)
    temperature = _check_temperature(temperature)
    strategy = TaskSampling.parse(strategy)
    n = np.asarray(sizes, dtype=np.float64)
    if strategy is TaskSampling.PROPORTIONAL:
        return n / n.sum()
    if strategy is TaskSampling.TEMPERATURE:
        logits = np.log(n) / temperature
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()
    return np.full(len(sizes), 1.0 / len(sizes))


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Yields task-homogeneous batches of global indices into a ``ConcatDataset`` of per-task datasets.

    Steps per epoch: ``num_steps`` when given, else the sum over tasks of the number of *global*
    batches of that task, where a global batch holds ``batch_size * num_replicas`` examples
    (``ceil(n_t / global)``, or ``floor`` with ``drop_last=True``).

    Which task each step trains: a ``numpy.random.Generator`` seeded by ``(seed, epoch)`` draws it.
    ``proportional`` builds an exact schedule, a random permutation of the multiset in which task t
    appears exactly as many times as it has global batches (with ``num_steps``, such permutations are
    concatenated and truncated); ``temperature`` and ``uniform`` draw i.i.d. from
    :func:`task_probabilities`; ``round_robin`` cycles 0, 1, ..., K-1. The schedule is identical on
    every rank (:meth:`task_schedule`).

    Which examples: each task's examples are visited in a seeded permutation, cut into global
    batches (the last one partial with ``drop_last=False``, dropped with ``drop_last=True``). When a
    task's batches run out before the epoch ends (possible with every strategy but proportional), a
    new pass starts with a fresh permutation, so a task may be seen more than once per epoch.

    DDP: every rank computes the same schedule and the same global batch and keeps its own slice,
    positions ``[rank * batch_size, (rank + 1) * batch_size)``, so all ranks train the same task
    at each step on disjoint examples. A partial last global batch (``drop_last=False``) is split
    as evenly as possible (sizes differ by at most one); when it holds fewer examples than ranks,
    it is padded by wrapping around to the start of that pass's permutation, so no rank gets an
    empty batch (those few examples are seen twice in the epoch; with fewer examples than ranks,
    ranks share examples). The sampler is already rank-aware: pass it as ``batch_sampler=`` and keep
    ``accelerator.prepare`` from sharding its batches again (as Trainer does for its rank-aware
    ``BatchRebalanceSampler``: set the wrapping ``BatchSamplerShard``'s ``num_processes = 1`` and
    ``process_index = 0``).

    Reproducible: the same arguments and epoch give the same batches; call :meth:`set_epoch` at each
    epoch for a new order.

    Args:
        dataset_sizes: number of examples of each task, in ConcatDataset order.
        batch_size: examples per batch on each process.
        strategy: a :class:`TaskSampling` or its string value.
        temperature: T for ``temperature`` sampling (> 0).
        seed: non-negative base seed.
        drop_last: drop each task's last incomplete global batch.
        num_replicas: number of processes (DDP world size).
        rank: this process's rank, ``0 <= rank < num_replicas``.
        num_steps: steps per epoch, overriding the default above.

    Example::

        >>> from torch.utils.data import ConcatDataset, DataLoader
        >>> sampler = MultiTaskBatchSampler([len(ds_a), len(ds_b)], batch_size=16,
        ...                                 strategy="temperature", temperature=2.0)  # doctest: +SKIP
        >>> loader = DataLoader(ConcatDataset([ds_a, ds_b]), batch_sampler=sampler)  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        batch_size: int,
        strategy: str | TaskSampling = "proportional",
        temperature: float = 1.0,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        num_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.dataset_sizes = _check_sizes(dataset_sizes)
        for name, value, low in (("batch_size", batch_size, 1), ("num_replicas", num_replicas, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an integer in [0, num_replicas={num_replicas}), got {rank!r}")
        if num_steps is not None and (
            isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1
        ):
            raise ValueError(f"num_steps must be None or an integer >= 1, got {num_steps!r}")
        self.strategy = TaskSampling.parse(strategy)
        self.temperature = _check_temperature(temperature)
        self.batch_size, self.num_replicas, self.rank = int(batch_size), int(num_replicas), int(rank)
        self.seed, self.drop_last = int(seed), bool(drop_last)
        self.num_steps = None if num_steps is None else int(num_steps)
        self.epoch = 0

        self.global_batch_size = self.batch_size * self.num_replicas
        rounding = math.floor if self.drop_last else math.ceil
        #: Global batches in one pass over each task's examples.
        self.batches_per_task = [rounding(n / self.global_batch_size) for n in self.dataset_sizes]
        empty = [i for i, b in enumerate(self.batches_per_task) if b == 0]
        if empty:
            raise ValueError(
                f"with drop_last=True, task(s) {empty} (sizes {[self.dataset_sizes[i] for i in empty]}) have fewer "
                f"examples than one global batch (batch_size * num_replicas = {self.global_batch_size}) and would "
                f"never be trained; lower batch_size or set drop_last=False"
            )
        #: Offset of each task's first example in the ConcatDataset.
        self.offsets = np.concatenate([[0], np.cumsum(self.dataset_sizes)[:-1]]).astype(int).tolist()
        #: Per-step probability of each task (informational for proportional/round_robin).
        self.probabilities = task_probabilities(self.dataset_sizes, self.strategy, self.temperature)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose schedule and permutations :meth:`__iter__` produces."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Number of steps (batches per process) in one epoch."""
        return self.num_steps if self.num_steps is not None else sum(self.batches_per_task)

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *key])

    def task_schedule(self) -> list[int]:
        """The task index of every step of the current epoch; identical on every rank."""
        steps, k = len(self), len(self.dataset_sizes)
        rng = self._rng(_SCHEDULE_STREAM)
        if self.strategy is TaskSampling.ROUND_ROBIN:
            return [i % k for i in range(steps)]
        if self.strategy is TaskSampling.PROPORTIONAL:
            multiset = np.repeat(np.arange(k), self.batches_per_task)
            cycles = [rng.permutation(multiset) for _ in range(-(-steps // len(multiset)))]
            return np.concatenate(cycles)[:steps].tolist()
        return rng.choice(k, size=steps, p=self.probabilities).tolist()

    def _task_batches(self, task: int) -> Iterator[list[int]]:
        """Endless global batches (task-local indices) of one task: pass after pass, each freshly shuffled."""
        n, size = self.dataset_sizes[task], self.global_batch_size
        n_pass = 0
        while True:
            perm = self._rng(_PERMUTATION_STREAM, task, n_pass).permutation(n)
            for b in range(self.batches_per_task[task]):
                batch = perm[b * size : (b + 1) * size]
                if len(batch) < self.num_replicas:  # pad by wrapping around perm: every rank gets an example
                    batch = np.concatenate([batch, np.resize(perm, self.num_replicas - len(batch))])
                yield batch.tolist()
            n_pass += 1

    def _rank_slice(self, global_batch: list[int]) -> list[int]:
        m = len(global_batch)
        if m == self.global_batch_size:
            start = self.rank * self.batch_size
            return global_batch[start : start + self.batch_size]
        base, extra = divmod(m, self.num_replicas)  # even split of a partial batch: sizes differ by <= 1
        start = self.rank * base + min(self.rank, extra)
        return global_batch[start : start + base + (1 if self.rank < extra else 0)]

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this rank's batch of global ConcatDataset indices for every step of the epoch."""
        streams = [self._task_batches(t) for t in range(len(self.dataset_sizes))]
        for task in self.task_schedule():
            offset = self.offsets[task]
            yield [offset + i for i in self._rank_slice(next(streams[task]))]
