"""Where independent trainings run: in this process (serial, the default) or as Ray tasks on a cluster.

Every search here is many independent trainings (the evaluator's candidate groups, the pipeline's
groups x seeds, the PVI models of each task). They all go through ONE seam, :meth:`Executor.map`:
``executor.map(fn, items, resources) -> [fn(item) for item in items]`` (results in input order), with
``on_result(index, result)`` called on the driver as each one finishes, so the caller (the driver) writes
every result to its cache or artifact folder at once and a killed run resumes from there. A worker only
returns results; it never writes shared state.

- :class:`SerialExecutor` (``executor="serial"``): one after another in this process, exactly as before.
- :class:`RayExecutor` (``executor="ray"``, the optional ``ray`` extra): each item is one Ray task declaring
  ``num_cpus`` / ``num_gpus`` (so a cluster with GPUs places one training per GPU), retried up to
  ``max_retries`` times when its worker process dies. ``fn`` (with everything it captures: the suite's
  in-memory data, the tokenizer, settings) goes into the object store once per ``map`` call; task data
  loaded from files is read by each worker from the same path, so on a multi-node cluster those paths
  (and ``HF_DATASETS_CACHE``/the model folder) must be visible on every node. Encoder features of the
  frozen mode are computed by each worker process and kept in its memory (a worker process serves many
  trainings); workers never write the driver's feature cache.

Ray is imported only when a :class:`RayExecutor` dispatches its first training.

Example:
    >>> ex = make_executor("serial")
    >>> ex.map(lambda x: x * x, [1, 2, 3])
    [1, 4, 9]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from hf_taskgroup.config import ExecutorArguments

logger = logging.getLogger(__name__)

EXECUTORS = ("serial", "ray")
OnResult = Callable[[int, Any], None]

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorOptions",
    "RayExecutor",
    "Resources",
    "SerialExecutor",
    "make_executor",
]


@dataclass(frozen=True)
class Resources:
    """What one training needs: CPU cores (also its torch threads on a Ray worker) and GPUs (fractions allowed).

    Example:
        >>> Resources(num_cpus=2, num_gpus=1).num_gpus
        1
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f"resources must be >= 0, got num_cpus={self.num_cpus}, num_gpus={self.num_gpus}")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise ValueError("a training needs some resource: num_cpus and num_gpus are both 0")


#: The executor knobs (``executor``, ``ray_address``, ``num_cpus_per_training``, ``num_gpus_per_training``,
#: ``max_retries``), declared once in the configuration spine and part of ``PipelineConfig`` and of the
#: ``pvi`` / ``group`` / ``train`` subcommands' configs.
ExecutorOptions = ExecutorArguments


@runtime_checkable
class Executor(Protocol):
    """Runs independent calls ``fn(item)`` and returns their results in input order.

    ``on_result(index, result)`` runs on the driver as each call finishes (in completion order); ``progress``
    shows one tqdm bar over the calls with the number running. ``parallel`` tells callers whether it pays to
    hand over many items at once.
    """

    parallel: bool

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], resources: Resources | None = None, *,
            on_result: OnResult | None = None, desc: str = "trainings", progress: bool = False) -> list[Any]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Every call in this process, one after another (today's behaviour; ``resources`` is ignored).

    Example:
        >>> done = []
        >>> SerialExecutor().map(str.upper, ["a", "b"], on_result=lambda i, r: done.append((i, r)))
        ['A', 'B']
        >>> done
        [(0, 'A'), (1, 'B')]
    """

    parallel = False

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], resources: Resources | None = None, *,
            on_result: OnResult | None = None, desc: str = "trainings", progress: bool = False) -> list[Any]:
        from hf_taskgroup.log import progress_bar

        items = list(items)
        results = []
        with progress_bar(total=len(items), desc=desc, unit="training", progress=progress and bool(items)) as bar:
            for index, item in enumerate(items):
                bar.set_postfix(running=1)
                result = fn(item)
                results.append(result)
                if on_result is not None:
                    on_result(index, result)
                bar.update(1)
        return results

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "SerialExecutor()"


def _call_in_worker(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    """The body of every Ray task: one torch thread per reserved core, then the call."""
    import torch

    torch.set_num_threads(max(1, threads))
    return fn(item)


class RayExecutor:
    """Each call is one Ray task with declared resources, retried when its worker process dies.

    ``address``: None starts a local Ray for this executor (shut down by :meth:`close`); ``"auto"`` or
    ``"ray://host:port"`` joins a running cluster. When Ray is already initialised in this process, that Ray
    is used as it is. ``init_kwargs`` go to ``ray.init`` (e.g. ``num_cpus=2`` for a local Ray). Exceptions
    raised by ``fn`` are not retried (a training that fails once fails again with the same seed); they
    cancel the remaining calls and propagate. A worker that dies (killed, out of memory, node lost) is
    retried up to ``max_retries`` times; past that, :class:`RuntimeError` names the failed item.

    Example::

        >>> with RayExecutor(init_kwargs={"num_cpus": 2}) as ex:           # doctest: +SKIP
        ...     ex.map(train_one, groups, Resources(num_cpus=1))
    """

    parallel = True

    def __init__(self, address: str | None = None, *, resources: Resources | None = None, max_retries: int = 2,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address = address
        self.resources = resources or Resources()
        self.max_retries = int(max_retries)
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False
        self._remote: Any = None

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as err:
            raise ImportError('executor="ray" needs Ray: pip install "hf-taskgroup[ray]"') from err
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report is sent from a run
            kwargs: dict[str, Any] = {}
            if self.address is None or not self.address.startswith("ray://"):  # Ray Client takes neither
                kwargs.update(include_dashboard=False, log_to_driver=False)
            # None: a new local Ray, even when RAY_ADDRESS or a `ray start` cluster exists ("local" forces that)
            kwargs["address"] = self.address if self.address is not None else "local"
            kwargs.update(self.init_kwargs)
            logger.info("starting Ray (address=%s)", self.address or "a new local instance")
            ray.init(**kwargs)
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(_call_in_worker)
        return ray

    def _slots(self, ray: Any, res: Resources) -> int:
        """How many trainings the cluster can run at once with these resources (for the progress bar)."""
        total = ray.cluster_resources()
        slots = [int(total.get("CPU", 0) // res.num_cpus)] if res.num_cpus > 0 else []
        if res.num_gpus > 0:
            slots.append(int(total.get("GPU", 0) // res.num_gpus))
        return max(1, min(slots) if slots else 1)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], resources: Resources | None = None, *,
            on_result: OnResult | None = None, desc: str = "trainings", progress: bool = False) -> list[Any]:
        from hf_taskgroup.log import progress_bar

        items = list(items)
        if not items:
            return []
        ray = self._ray()
        res = resources or self.resources
        if res.num_gpus > 0 and ray.cluster_resources().get("GPU", 0) < res.num_gpus:
            raise ValueError(f"each training asks for {res.num_gpus} GPU(s) but the Ray cluster has "
                             f"{ray.cluster_resources().get('GPU', 0)}")
        task = self._remote.options(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=self.max_retries,
                                    retry_exceptions=False)
        fn_ref = ray.put(fn)  # shipped once, not once per item
        threads = max(1, int(res.num_cpus))
        refs = [task.remote(fn_ref, item, threads) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(items)
        pending = list(refs)
        slots = self._slots(ray, res)
        with progress_bar(total=len(items), desc=desc, unit="training", progress=progress) as bar:
            try:
                while pending:
                    bar.set_postfix(running=min(len(pending), slots))
                    done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                    for ref in done:
                        i = index[ref]
                        try:
                            results[i] = ray.get(ref)
                        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                ray.exceptions.ObjectLostError) as err:
                            raise RuntimeError(f"{desc}: item {i} ({_short(items[i])}) failed after "
                                               f"{self.max_retries} retries: its worker died ({err})") from err
                        if on_result is not None:
                            on_result(i, results[i])
                        bar.update(1)
            except BaseException:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
        return results

    def close(self) -> None:
        """Disconnect from the Ray this executor initialised: a local Ray it started stops, a joined cluster keeps
        running; a Ray that was already initialised in this process is left alone."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            self._remote = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, resources={self.resources}, max_retries={self.max_retries})"


def _short(item: Any, limit: int = 80) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def make_executor(executor: str | Executor | None = "serial", *, ray_address: str | None = None,
                  resources: Resources | None = None, max_retries: int = 2) -> Executor:
    """An executor from its name (``"serial"`` or ``"ray"``); an :class:`Executor` instance is returned as is.

    Example:
        >>> make_executor(None)
        SerialExecutor()
        >>> make_executor("ray", ray_address="auto").address
        'auto'
    """
    if executor is None or executor == "serial":
        if ray_address is not None:
            raise ValueError(f"ray_address={ray_address!r} needs executor='ray'")
        return SerialExecutor()
    if executor == "ray":
        return RayExecutor(ray_address, resources=resources, max_retries=max_retries)
    if isinstance(executor, str):
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if not callable(getattr(executor, "map", None)):
        raise TypeError(f"executor must be 'serial', 'ray' or an Executor (with .map), got {type(executor).__name__}")
    return executor


