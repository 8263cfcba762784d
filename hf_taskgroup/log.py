"""Output of the library: log levels, the progress bars of the stages, and quiet loading of our own encoders.

The library never configures the root logger; it logs to the ``hf_taskgroup`` logger (one child per module)
and lets the application decide where records go (``hf-taskgroup`` sets up a console handler itself).
:func:`set_verbosity` is the one switch an application or the CLI calls: it sets the level of the
``hf_taskgroup`` logger and the verbosity and progress bars of transformers and datasets together.

Progress bars: each stage shows one bar (:func:`progress_bar`); a bar nested inside another one
(``nested=True``) disappears when done (``leave=False``) and is drawn only on a terminal, where tqdm can
move the cursor; in a log file or CI output nested bars would print as a pile of half lines.

Example::

    >>> import logging
    >>> from hf_taskgroup.log import set_verbosity
    >>> set_verbosity(logging.WARNING)   # quiet: warnings and errors only, no library progress bars
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LIBRARY_LOGGER", "set_verbosity", "progress_bar", "quiet_hf_progress", "quiet_hf_loading"]

#: The name of the logger every module of the package logs under.
LIBRARY_LOGGER = "hf_taskgroup"



def set_verbosity(level: int | str) -> None:
    """Set how much the package, transformers and datasets print: ``logging.DEBUG``/``INFO`` (verbose: our
    messages, their warnings and progress bars), ``WARNING`` (the CLI default: our warnings and stage bars,
    their errors only) or ``ERROR`` (quiet). Only the ``hf_taskgroup``, ``transformers`` and ``datasets`` loggers change; the root
    logger and its handlers are the application's.

    Example::

        >>> set_verbosity("INFO")  # what ``hf-taskgroup -v`` does
    """
    if isinstance(level, str):
        name = level.upper()
        if not isinstance(logging.getLevelName(name), int):
            raise ValueError(f"unknown log level {level!r}; expected DEBUG, INFO, WARNING or ERROR")
        level = int(logging.getLevelName(name))
    import datasets
    import transformers

    logging.getLogger(LIBRARY_LOGGER).setLevel(level)
    # transformers and datasets stay one step quieter than we are: their warnings are about our internal calls
    # (shown with INFO), their INFO chatter (config dumps, file lists) only with DEBUG
    hf_level = logging.INFO if level <= logging.DEBUG else logging.WARNING if level <= logging.INFO else logging.ERROR
    transformers.logging.set_verbosity(hf_level)
    datasets.logging.set_verbosity(hf_level)
    if level <= logging.INFO:
        transformers.logging.enable_progress_bar()
        datasets.enable_progress_bars()
    else:
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()


def _quiet() -> bool:
    """True when bars are switched off: the package logger above WARNING, or ``TQDM_DISABLE`` set."""
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no", "off"):
        return True
    return logging.getLogger(LIBRARY_LOGGER).getEffectiveLevel() > logging.WARNING


def progress_bar(iterable: Iterable[Any] | None = None, *, progress: bool = True, nested: bool = False,
                 **kwargs: Any) -> Any:
    """A tqdm bar for a stage (``nested=False``) or a step inside one (``nested=True``: ``leave=False`` and
    drawn on a terminal only). ``progress=False`` gives a silent bar with the same interface, and so does a
    quiet setting: the ``hf_taskgroup`` logger above WARNING (:func:`set_verbosity` ``ERROR``, ``hf-taskgroup
    -q``) or ``TQDM_DISABLE`` set in the environment.

    Example::

        >>> for task in progress_bar(["a", "b"], desc="PVI", unit="task", progress=False):
        ...     pass
    """
    from tqdm.auto import tqdm

    if progress and _quiet():
        progress = False
    if nested:
        kwargs.setdefault("leave", False)
        kwargs["disable"] = None if progress else True  # None: tqdm disables itself when stderr is no terminal
    else:
        kwargs["disable"] = not progress
    return tqdm(iterable, **kwargs)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Inside one of our stages: no progress bars from datasets (map, save) or transformers (loading, saving
    weights); the stage's own bar says where we are. Works as a decorator too.

    Example::

        >>> with quiet_hf_progress():
        ...     pass  # dataset.map(...), model.save_pretrained(...)
    """
    import datasets
    from transformers.utils import logging as hf_logging

    def no_bar(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kwargs = {**kwargs, "disable": True}
        return previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)

    datasets_bars = datasets.is_progress_bar_enabled()
    if datasets_bars:
        datasets.disable_progress_bars()
    previous = hf_logging.set_tqdm_hook(no_bar)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)
        if datasets_bars:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def quiet_hf_loading() -> Iterator[None]:
    """Around our own ``from_pretrained`` calls: no transformers load report (the table of unused or missing
    weights, e.g. the pooler an encoder without pooling layer leaves out; the caller checks the weights it
    needs) and no "Loading weights" bar. Other transformers warnings still pass.

    Example::

        >>> with quiet_hf_loading():
        ...     pass  # AutoModel.from_pretrained(path, add_pooling_layer=False)
    """
    target = logging.getLogger("transformers.modeling_utils")
    report_filter = _DropLoadReport()
    target.addFilter(report_filter)
    try:
        with quiet_hf_progress():
            yield
    finally:
        target.removeFilter(report_filter)
