"""Task grouping: every method behind one interface (:func:`group_tasks`), returning a :class:`Grouping`.

Importing this package registers the methods:

- ``pvi``: PVI-based grouping (Li et al. 2025), ``needs=("pvi",)``.
- ``transfer_gain``, ``tag``: grouping steps over a collected affinity matrix, ``needs=("affinity",)``.
- ``single_task``, ``all_in_one``, ``random``, ``exhaustive``, ``clustering``: baselines.
- ``affinity_search``, ``surrogate``, ``task_embedding``: methods that train candidate groups or probes.
- ``grad_estimate``: subset losses estimated from one training's projected gradients (Grad-TAG).

Example:
    >>> import numpy as np
    >>> from hf_taskgroup.grouping import group_tasks
    >>> S = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    >>> group_tasks("transfer_gain", ["a", "b", "c"], affinity=S).groups
    [['a', 'b'], ['c']]
"""

from __future__ import annotations

# Method modules: importing them registers their methods.
from hf_taskgroup.grouping.methods import (  # noqa: F401
    affinity,
    affinity_search,
    baselines,
    grad_estimate,
    pvi,
    surrogate,
    task_embedding,
)
from hf_taskgroup.grouping.registry import (
    GroupingMethod,
    available_methods,
    get_method,
    group_tasks,
    register_method,
)
from hf_taskgroup.grouping.result import Grouping, GroupingCost
from hf_taskgroup.grouping.solvers.partition import GroupingSolverError, InfeasibleGroupingError

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
