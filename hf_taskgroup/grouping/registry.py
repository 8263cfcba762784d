"""Registry of grouping methods: every method is a function registered by name, called through :func:`group_tasks`.

A method is ``def method(tasks: Sequence[str], *, <inputs>, <params>..., seed: int = 0) -> Grouping``.
Registering it records which inputs it needs, so :func:`group_tasks` can fail early with a message that
names the missing input and the method.

Example:
    >>> from hf_taskgroup.grouping import group_tasks
    >>> group_tasks("single_task", ["a", "b"]).groups
    [['a'], ['b']]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hf_taskgroup.grouping.result import Grouping

GroupingMethod = Callable[..., Grouping]

#: Inputs a method may declare in ``needs`` (others are allowed; these are the documented ones).
KNOWN_INPUTS = {
    "pvi": "dict task -> 1-D np.ndarray of per-example PVI",
    "affinity": "square np.ndarray over `tasks` (S[i, j] = effect of task i on task j)",
    "evaluator": "a GroupEvaluator: evaluator(tasks) -> {task: {'loss': ...}}",
    "collector": "a trainer-side collection of affinities",
    "group_value": "callable(tuple of task names) -> float to maximise",
    "collapsed": "task names whose PVI model collapsed (the pvi method keeps them single-task by default)",
    "embeddings": "dict task -> 1-D np.ndarray (a task embedding)",
    "suite": "a TaskSuite (methods that train their own probes)",
    "settings": "TrainSettings of those trainings",
    "tokenizer": "the tokenizer of those trainings",
    "model_factory": "a model factory for those trainings (tests use tiny models)",
    "cache_dir": "a folder caching those trainings",
}


@dataclass(frozen=True)
class _Entry:
    name: str
    func: GroupingMethod
    needs: tuple[str, ...]
    description: str
    config: type | None = None


_REGISTRY: dict[str, _Entry] = {}
_CONFIGS: dict[str, type] = {}


def register_method(
    name: str, *, needs: tuple[str, ...] = (), description: str = "", config: type | None = None
) -> Callable[[GroupingMethod], GroupingMethod]:
    """Decorator registering a grouping method under ``name``.

    ``needs`` lists the keyword inputs the method requires (see :data:`KNOWN_INPUTS`). An entry
    ``"a|b"`` means "at least one of ``a`` or ``b``". ``config`` is the method's options dataclass; without
    it one is generated from the function's keyword parameters that are not inputs (their defaults are the
    options' defaults), see :func:`method_config_class`. Registering another function under a taken name
    raises ``ValueError``; re-registering the same function (module reload) replaces the entry.

    Example:
        >>> @register_method("_doc_example", description="every task alone")
        ... def _doc_example(tasks, *, seed=0):
        ...     return Grouping(groups=[[t] for t in tasks], method="_doc_example", tasks=list(tasks),
        ...                     params={}, scores={})
        >>> "_doc_example" in available_methods()
        True
        >>> unregister_method("_doc_example")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a method name must be a non-empty string, got {name!r}")
    needs = tuple(needs)
    for need in needs:
        if not isinstance(need, str) or not need or any(not part for part in need.split("|")):
            raise ValueError(f"method {name!r}: invalid entry {need!r} in needs")

    def decorator(func: GroupingMethod) -> GroupingMethod:
        existing = _REGISTRY.get(name)
        if existing is not None and (
            existing.func.__module__,
            existing.func.__qualname__,
        ) != (func.__module__, func.__qualname__):
            raise ValueError(
                f"grouping method {name!r} is already registered by "
                f"{existing.func.__module__}.{existing.func.__qualname__}"
            )
        _REGISTRY[name] = _Entry(name=name, func=func, needs=needs, description=description, config=config)
        _CONFIGS.pop(name, None)
        return func

    return decorator


def unregister_method(name: str) -> None:
    """Remove ``name`` from the registry (mainly for tests); unknown names raise ``KeyError``."""
    if name not in _REGISTRY:
        raise KeyError(f"no grouping method named {name!r}")
    del _REGISTRY[name]


def available_methods() -> dict[str, dict[str, Any]]:
    """Registered methods: ``name -> {"needs": (...), "description": "...", "options": [...]}``, sorted by name."""
    return {
        name: {"needs": entry.needs, "description": entry.description, "options": method_option_names(name)}
        for name, entry in sorted(_REGISTRY.items())
    }


def get_method(name: str) -> GroupingMethod:
    """The function registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown grouping method {name!r}; available: {sorted(_REGISTRY)}")
    return entry.func


#: ``method_options`` of the methods that read a collected affinity matrix which configure the collection
#: (one multi-task training), not the method: ``affinity_kind`` (clustering only: which matrix to cluster)
#: and the options of :func:`~hf_taskgroup.grouping.evaluators.affinity_collection.collect_affinity`.
COLLECTION_OPTIONS = ("affinity_kind", "every_k_steps", "task_subsample", "probe_batch_size", "lookahead_lr")
COLLECTING_METHODS = ("transfer_gain", "tag", "clustering")


def known_methods() -> list[str]:
    """Names of every registered method (importing :mod:`hf_taskgroup.grouping` registers the built-in ones)."""
    import hf_taskgroup.grouping  # noqa: F401

    return sorted(_REGISTRY)


def method_inputs(method: str) -> set[str]:
    """The inputs ``method`` declares (``needs``, alternatives split) plus the known inputs it takes."""
    import inspect

    get_method(method)
    entry = _REGISTRY[method]
    params = set(inspect.signature(entry.func).parameters)
    return {n for need in entry.needs for n in need.split("|")} | (params & set(KNOWN_INPUTS))


def method_config_class(method: str) -> type:
    """The options dataclass of ``method``: the registered ``config``, or one generated from its keyword
    parameters that are not inputs (defaults = the function's defaults).

    Example:
        >>> cfg = method_config_class("pvi")(test="tost")
        >>> cfg.test, cfg.alpha
        ('tost', 0.05)
    """
    get_method(method)
    if method in _CONFIGS:
        return _CONFIGS[method]
    entry = _REGISTRY[method]
    if entry.config is not None:
        cls = entry.config
    else:
        import dataclasses
        import inspect

        inputs = method_inputs(method)
        spec = []
        for pname, param in inspect.signature(entry.func).parameters.items():
            if pname == "tasks" or pname in inputs or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            default = None if param.default is param.empty else param.default
            spec.append((pname, Any, dataclasses.field(default=default)))
        cls = dataclasses.make_dataclass("".join(p.title() for p in method.split("_")) + "MethodConfig", spec)
        cls.__doc__ = f"Options of the grouping method {method!r}: {entry.description}"
    _CONFIGS[method] = cls
    return cls


def method_option_names(method: str) -> list[str]:
    """The options ``method`` takes: the fields of its config, plus the collection options of the methods
    that collect an affinity matrix."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(method_config_class(method))]
    if method in COLLECTING_METHODS:
        names += [o for o in COLLECTION_OPTIONS if o != "affinity_kind" or method == "clustering"]
    return names


def check_method_options(method: str, options: Mapping[str, Any], *, flag: str = "option",
                         collection: bool = True) -> None:
    """Refuse (``ConfigError``) an option that ``method`` does not take, naming the options it does take.

    Example:
        >>> check_method_options("all_in_one", {"num_groups": 2})
        Traceback (most recent call last):
        ...
        hf_taskgroup.config.ConfigError: option: method 'all_in_one' does not take 'num_groups'; its options: seed
    """
    from hf_taskgroup.config import ConfigError

    if method not in known_methods():
        raise ConfigError(f"{flag}: unknown grouping method {method!r}; available: {', '.join(known_methods())}")
    accepted = method_option_names(method)
    if not collection:  # the caller has no affinity collection to configure
        accepted = [k for k in accepted if k not in COLLECTION_OPTIONS]
    for key in options:
        if key not in accepted:
            raise ConfigError(f"{flag}: method {method!r} does not take {key!r}; its options: "
                              f"{', '.join(accepted) or 'none'}")


def _describe(value: Any) -> str:
    """A short, JSON-able description of an input (for provenance), never its content."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {tuple(int(s) for s in shape)}"
    if isinstance(value, Mapping):
        sizes = [len(v) for v in value.values() if hasattr(v, "__len__") and not isinstance(v, str)]
        if value and len(sizes) == len(value):
            return f"dict of {len(value)} entries, {sum(sizes)} values in total"
        return f"dict of {len(value)} entries"
    if callable(value):
        return f"callable {getattr(value, '__qualname__', type(value).__name__)}"
    return type(value).__name__


def group_tasks(method: str, tasks: Sequence[str], *, sources: Any = None, **kwargs: Any) -> Grouping:
    """Run the grouping method ``method`` on ``tasks`` and return its validated :class:`Grouping`.

    ``kwargs`` are the method's inputs and options; an option the method does not take is refused
    (``ConfigError``) before the method runs. With ``sources`` (an
    :class:`~hf_taskgroup.grouping.inputs.InputSources`) the inputs not given are built by the one input
    resolver (:func:`~hf_taskgroup.grouping.inputs.resolve_inputs`), as in the pipeline and the CLI.

    Looks the method up, checks that the inputs it needs are given (not None), times the call (fills
    ``cost.seconds`` when the method left it at 0), records provenance (library version, UTC creation
    time, a description of the inputs) and validates the result.

    Example:
        >>> group_tasks("all_in_one", ["a", "b"]).groups
        [['a', 'b']]
    """
    entry = _REGISTRY.get(method)
    if entry is None:
        raise ValueError(f"unknown grouping method {method!r}; available: {sorted(_REGISTRY)}")
    if isinstance(tasks, str):
        raise TypeError(f"tasks must be a sequence of task names, got the string {tasks!r}")
    tasks = list(tasks)
    if not tasks:
        raise ValueError(f"method {method!r}: no tasks given")
    bad = [t for t in tasks if not isinstance(t, str) or not t]
    if bad:
        raise ValueError(f"method {method!r}: task names must be non-empty strings, got {bad}")
    duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
    if duplicates:
        raise ValueError(f"method {method!r}: task(s) {duplicates} listed more than once")
    import dataclasses

    from hf_taskgroup.config import ConfigError

    inputs = method_inputs(method)
    options = {k: v for k, v in kwargs.items() if k not in inputs}
    config_fields = [f.name for f in dataclasses.fields(method_config_class(method))]
    unknown = [k for k in options if k not in config_fields]
    if unknown:
        raise ConfigError(f"method {method!r} does not take {', '.join(map(repr, unknown))}; its options: "
                          f"{', '.join(config_fields) or 'none'}")
    if sources is not None:
        from hf_taskgroup.grouping.inputs import resolve_inputs

        missing = {k: v for k, v in resolve_inputs(method, sources, options).items() if kwargs.get(k) is None}
        kwargs.update(missing)
    for need in entry.needs:
        options = need.split("|")
        if all(kwargs.get(option) is None for option in options):
            wanted = " or ".join(f"{o}=..." for o in options)
            hints = "; ".join(f"{o}: {KNOWN_INPUTS[o]}" for o in options if o in KNOWN_INPUTS)
            raise ValueError(
                f"grouping method {method!r} needs the input {' or '.join(map(repr, options))}: "
                f"call group_tasks({method!r}, tasks, {wanted})" + (f" ({hints})" if hints else "")
            )

    start = time.perf_counter()
    result = entry.func(tasks, **kwargs)
    elapsed = time.perf_counter() - start
    if not isinstance(result, Grouping):
        raise TypeError(f"grouping method {method!r} returned {type(result).__name__}, not a Grouping")
    if result.tasks != tasks:
        raise ValueError(f"grouping method {method!r} returned tasks {result.tasks}, expected {tasks}")
    if not result.cost.seconds:
        result.cost.seconds = elapsed
    from hf_taskgroup import __version__

    result.provenance.setdefault("library", "hf_taskgroup")
    result.provenance.setdefault("library_version", __version__)
    result.provenance.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    result.provenance.setdefault("registry_name", method)
    inputs = {
        name: _describe(value)
        for name, value in kwargs.items()
        if value is not None and (name in KNOWN_INPUTS or any(name in n.split("|") for n in entry.needs))
    }
    if inputs:
        result.provenance.setdefault("inputs", inputs)
    result.validate()
    return result
