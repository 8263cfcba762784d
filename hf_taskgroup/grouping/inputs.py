"""The one input resolver of the grouping methods.

A method declares the inputs it needs when it is registered (``needs=("pvi",)``, ``("affinity",)``,
``("evaluator|group_value",)``, ``("embeddings|suite",)``, optional ``inputs=(...)``); the caller says where
inputs come from with :class:`InputSources`; :func:`resolve_inputs` builds exactly the inputs the method
declares, by input name (never by method name). The pipeline, ``hf-taskgroup group`` and
:func:`~hf_taskgroup.grouping.registry.group_tasks` (``sources=``) all go through it, so a method gets the
same inputs everywhere: validation-split PVI only, collapsed tasks named, the affinity kind the method reads.

Example:
    >>> import numpy as np
    >>> from hf_taskgroup.grouping.inputs import InputSources, resolve_inputs
    >>> sources = InputSources(tasks=["a", "b"], pvi=lambda: ({"a": np.zeros(3), "b": np.ones(3)}, []))
    >>> sorted(resolve_inputs("pvi", sources))
    ['collapsed', 'pvi']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["InputSources", "affinity_kind", "resolve_inputs"]

#: methods whose affinity matrix is of their own kind (the others, e.g. clustering, read ``affinity_kind``)
OWN_AFFINITY_KIND = ("transfer_gain", "tag")


@dataclass
class InputSources:
    """Where the inputs of a grouping method come from (each provider is called only if the method needs it).

    - ``pvi() -> ({task: per-example PVI of the grouping split}, [collapsed tasks])``
    - ``affinity(kind) -> square matrix over tasks`` (kind ``transfer_gain`` or ``tag``; a file or a collection)
    - ``evaluator() -> GroupEvaluator`` (trains and caches groups)
    - ``suite``, ``settings``, ``tokenizer``, ``model_factory``, ``cache_dir``: for methods that train probes
      themselves (task_embedding, grad_estimate)
    """

    tasks: list[str]
    pvi: Callable[[], tuple[Mapping[str, Any], list[str]]] | None = None
    affinity: Callable[[str], Any] | None = None
    evaluator: Callable[[], Any] | None = None
    suite: Any = None
    settings: Any = None
    tokenizer: Any = None
    model_factory: Callable[..., Any] | None = None
    cache_dir: str | Path | None = None


def affinity_kind(method: str, options: Mapping[str, Any] | None = None) -> str:
    """The kind of affinity matrix ``method`` reads (its own for transfer_gain/tag, else ``affinity_kind``)."""
    if method in OWN_AFFINITY_KIND:
        return method
    return str((options or {}).get("affinity_kind", "tag"))


def _missing(method: str, what: str) -> Exception:
    from hf_taskgroup.config import ConfigError

    return ConfigError(f"method {method!r} needs {what}")


def resolve_inputs(method: str, sources: InputSources, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyword inputs of ``method`` built from ``sources`` (by the input names it declares)."""
    import inspect

    from hf_taskgroup.grouping.registry import get_method, method_inputs

    declared = method_inputs(method)
    params = inspect.signature(get_method(method)).parameters
    out: dict[str, Any] = {}
    if "pvi" in declared:
        if sources.pvi is None:
            raise _missing(method, "per-example PVI (a PVI stage, or --pvi_dir)")
        values, collapsed = sources.pvi()
        out["pvi"] = dict(values)
        if "collapsed" in params:
            out["collapsed"] = list(collapsed)
    if "affinity" in declared:
        if sources.affinity is None:
            raise _missing(method, "an affinity matrix (--affinity, or a suite to collect it)")
        out["affinity"] = sources.affinity(affinity_kind(method, options))
    if "evaluator" in declared:
        if sources.evaluator is None:
            raise _missing(method, "an evaluator that trains groups (a suite)")
        out["evaluator"] = sources.evaluator()
    if "suite" in declared:  # trains its own models from the suite (task_embedding, grad_estimate)
        if sources.suite is None:
            raise _missing(method, "a suite (it trains its own models from it)")
        for name in ("suite", "settings", "tokenizer", "model_factory", "cache_dir"):
            value = getattr(sources, name)
            if value is not None and name in params:
                out[name] = value
    return out
