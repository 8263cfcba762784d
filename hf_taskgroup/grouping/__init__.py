"""Task grouping: every method behind one interface (:func:`group_tasks`), returning a :class:`Grouping`.

Importing this package registers the methods:

- ``pvi``: PVI-based grouping (Li et al. 2025), ``needs=("pvi",)``.
- ``transfer_gain``, ``tag``: grouping steps over a collected affinity matrix, ``needs=("affinity",)``.
- ``single_task``, ``all_in_one``, ``random``, ``exhaustive``, ``clustering``: baselines.
- search-based methods (``affinity_search``, ``surrogate``, ...) when their modules are present.

Example:
    >>> import numpy as np
    >>> from hf_taskgroup.grouping import group_tasks
    >>> S = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    >>> group_tasks("transfer_gain", ["a", "b", "c"], affinity=S).groups
    [['a', 'b'], ['c']]
"""

from __future__ import annotations

import importlib
import importlib.util

# Method modules: importing them registers their methods.
from hf_taskgroup.grouping import affinity_methods, baselines, pvi_grouping  # noqa: F401
from hf_taskgroup.grouping.registry import (
    GroupingMethod,
    available_methods,
    get_method,
    group_tasks,
    register_method,
)
from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.grouping.solvers import GroupingSolverError, InfeasibleGroupingError

# Modules built alongside (search-based methods). Skip only a module that does not exist yet; a module
# that exists but fails to import raises, so a broken method never disappears silently.
_OPTIONAL_MODULES = ("evaluator", "search", "surrogate", "synthetic", "tabular", "collect", "nlp_evaluator", "task_embedding")
for _name in _OPTIONAL_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
del _name

__all__ = [
    "Grouping",
    "GroupingCost",
    "GroupingMethod",
    "GroupingSolverError",
    "InfeasibleGroupingError",
    "available_methods",
    "get_method",
    "group_tasks",
    "register_method",
]
