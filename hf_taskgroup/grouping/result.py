"""The result type every grouping method returns: :class:`Grouping` (and its :class:`GroupingCost`).

A ``Grouping`` is plain data: task names, the groups, the method and its parameters, the matrices and
scores it used (JSON-able lists and dicts), what it cost and where it came from. It round-trips through
JSON (:meth:`Grouping.to_json` / :meth:`Grouping.from_json`) so every later stage (training, evaluation,
model cards) can read it from disk.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_taskgroup.utils import atomic_write_text

#: Version of the on-disk layout written by :meth:`Grouping.to_dict`.
GROUPING_FORMAT_VERSION = 1


def to_jsonable(value: Any, *, where: str = "value") -> Any:
    """Convert ``value`` to plain JSON types (dict/list/str/int/float/bool/None).

    numpy arrays and scalars become lists and Python numbers, tuples become lists, mapping keys must be
    strings. Non-finite floats (NaN, +-inf) become ``None`` so the output is strict JSON.

    >>> import numpy as np
    >>> to_jsonable({"a": np.array([[1.0, np.nan]])})
    {'a': [[1.0, None]]}
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy array or scalar
        return to_jsonable(value.tolist(), where=where)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: mapping keys must be strings for JSON, got {key!r}")
            out[key] = to_jsonable(item, where=f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-able")


@dataclass
class GroupingCost:
    """What finding a grouping cost.

    Example:
        >>> GroupingCost(trainings=3, seconds=1.5).to_dict()
        {'trainings': 3, 'examples': 0, 'seconds': 1.5}
    """

    trainings: int = 0  # full model trainings run (cached results count 0)
    examples: int = 0  # training examples processed (forward passes on examples), if known
    seconds: float = 0.0  # wall time of the method itself

    def to_dict(self) -> dict[str, Any]:
        return {"trainings": int(self.trainings), "examples": int(self.examples), "seconds": float(self.seconds)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupingCost:
        unknown = set(d) - {"trainings", "examples", "seconds"}
        if unknown:
            raise ValueError(f"GroupingCost: unknown keys {sorted(unknown)}")
        return cls(
            trainings=int(d.get("trainings", 0)),
            examples=int(d.get("examples", 0)),
            seconds=float(d.get("seconds", 0.0)),
        )


_REQUIRED_KEYS = ("groups", "method", "tasks")
_OPTIONAL_KEYS = ("params", "scores", "objective", "overlap", "cost", "provenance", "format_version")


@dataclass
class Grouping:
    """Groups of tasks found by one method, with everything needed to explain and reproduce them.

    ``tasks`` fixes the order that every matrix in ``scores`` refers to. ``groups`` is a partition of
    ``tasks`` unless ``overlap`` is true (then every task is in at least one group). With overlap, a
    method may record each task's best group in ``scores["assignment"]`` (task -> group index), which
    :meth:`group_of` uses.

    Example:
        >>> g = Grouping(groups=[["a", "b"], ["c"]], method="all_in_one", tasks=["a", "b", "c"],
        ...              params={}, scores={})
        >>> g.validate()
        >>> g.group_of("b")
        ['a', 'b']
        >>> Grouping.from_dict(g.to_dict()) == g
        True
    """

    groups: list[list[str]]
    method: str
    tasks: list[str]
    params: dict[str, Any]
    scores: dict[str, Any]
    objective: float | None = None
    overlap: bool = False
    cost: GroupingCost = field(default_factory=GroupingCost)
    provenance: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def groups_of(self, task: str) -> list[list[str]]:
        """Every group that contains ``task`` (one for a partition)."""
        self._check_known(task)
        return [list(g) for g in self.groups if task in g]

    def group_of(self, task: str) -> list[str]:
        """The group that serves ``task``: its best group when ``scores["assignment"]`` names one, else the first."""
        self._check_known(task)
        assignment = self.scores.get("assignment") if isinstance(self.scores, Mapping) else None
        if isinstance(assignment, Mapping) and task in assignment:
            index = int(assignment[task])
            if not 0 <= index < len(self.groups) or task not in self.groups[index]:
                raise ValueError(
                    f"scores['assignment'][{task!r}] = {index} does not point to a group containing {task!r}"
                )
            return list(self.groups[index])
        for group in self.groups:
            if task in group:
                return list(group)
        raise ValueError(f"task {task!r} is in no group of this {self.method!r} grouping")

    def _check_known(self, task: str) -> None:
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; the grouping covers {self.tasks}")

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` unless the grouping is consistent and JSON-able.

        Checks: tasks are unique non-empty strings; every group is non-empty, has no repeated task and
        names only known tasks; every task is covered; no task is in two groups unless ``overlap``; no
        group is listed twice; ``scores["assignment"]``, if present, maps tasks to groups that contain them;
        the objective is a finite number or None; params/scores/provenance are JSON-able.
        """
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"Grouping.method must be a non-empty string, got {self.method!r}")
        if not self.tasks:
            raise ValueError(f"{self.method}: Grouping.tasks is empty")
        for task in self.tasks:
            if not isinstance(task, str) or not task:
                raise ValueError(f"{self.method}: task names must be non-empty strings, got {task!r}")
        seen_tasks: set[str] = set()
        for task in self.tasks:
            if task in seen_tasks:
                raise ValueError(f"{self.method}: task {task!r} is listed twice in Grouping.tasks")
            seen_tasks.add(task)
        if not self.groups:
            raise ValueError(f"{self.method}: the grouping has no groups")
        where: dict[str, int] = {}
        seen_groups: dict[frozenset[str], int] = {}
        for gi, group in enumerate(self.groups):
            if not group:
                raise ValueError(f"{self.method}: group {gi} is empty")
            if len(set(group)) != len(group):
                dup = sorted({t for t in group if list(group).count(t) > 1})
                raise ValueError(f"{self.method}: group {gi} lists task(s) {dup} more than once")
            unknown = [t for t in group if t not in seen_tasks]
            if unknown:
                raise ValueError(f"{self.method}: group {gi} names unknown task(s) {unknown}; known tasks: {self.tasks}")
            key = frozenset(group)
            if key in seen_groups:
                raise ValueError(f"{self.method}: groups {seen_groups[key]} and {gi} are the same group {sorted(key)}")
            seen_groups[key] = gi
            for task in group:
                if task in where and not self.overlap:
                    raise ValueError(
                        f"{self.method}: task {task!r} is in groups {where[task]} and {gi}, but overlap=False "
                        "(a partition puts every task in exactly one group)"
                    )
                where.setdefault(task, gi)
        missing = [t for t in self.tasks if t not in where]
        if missing:
            raise ValueError(f"{self.method}: task(s) {missing} are in no group")
        assignment = self.scores.get("assignment") if isinstance(self.scores, Mapping) else None
        if assignment is not None:
            if not isinstance(assignment, Mapping):
                raise ValueError(f"{self.method}: scores['assignment'] must map task -> group index")
            for task, index in assignment.items():
                if (task not in seen_tasks or isinstance(index, bool) or not isinstance(index, numbers.Integral)
                        or not 0 <= int(index) < len(self.groups) or task not in self.groups[int(index)]):
                    raise ValueError(
                        f"{self.method}: scores['assignment'][{task!r}] = {index!r} does not point to a group "
                        f"containing {task!r}"
                    )
        if self.objective is not None and not (
            isinstance(self.objective, numbers.Real) and math.isfinite(float(self.objective))
        ):
            raise ValueError(f"{self.method}: objective must be a finite number or None, got {self.objective!r}")
        for name in ("params", "scores", "provenance"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{self.method}: Grouping.{name} must be a dict, got {type(value).__name__}")
            try:
                to_jsonable(value, where=name)
            except TypeError as err:
                raise ValueError(f"{self.method}: {err}") from err

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (numpy values converted, non-finite floats become None)."""
        return {
            "format_version": GROUPING_FORMAT_VERSION,
            "method": self.method,
            "tasks": [str(t) for t in self.tasks],
            "groups": [[str(t) for t in g] for g in self.groups],
            "overlap": bool(self.overlap),
            "objective": to_jsonable(None if self.objective is None else float(self.objective)),
            "params": to_jsonable(self.params, where="params"),
            "scores": to_jsonable(self.scores, where="scores"),
            "cost": self.cost.to_dict(),
            "provenance": to_jsonable(self.provenance, where="provenance"),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Grouping:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on missing or unknown keys or a newer format."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a Grouping must be read from a dict, got {type(d).__name__}")
        missing = [k for k in _REQUIRED_KEYS if k not in d]
        if missing:
            raise ValueError(f"Grouping dict lacks required key(s) {missing}")
        unknown = sorted(set(d) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            raise ValueError(f"Grouping dict has unknown key(s) {unknown}")
        version = int(d.get("format_version", GROUPING_FORMAT_VERSION))
        if version > GROUPING_FORMAT_VERSION:
            raise ValueError(
                f"Grouping format_version {version} is newer than this library reads ({GROUPING_FORMAT_VERSION})"
            )
        objective = d.get("objective")
        return cls(
            groups=[list(g) for g in d["groups"]],
            method=d["method"],
            tasks=list(d["tasks"]),
            params=dict(d.get("params") or {}),
            scores=dict(d.get("scores") or {}),
            objective=None if objective is None else float(objective),
            overlap=bool(d.get("overlap", False)),
            cost=GroupingCost.from_dict(d.get("cost") or {}),
            provenance=dict(d.get("provenance") or {}),
        )

    def to_json(self, path: str | Path) -> None:
        """Write the grouping to ``path`` atomically (temp file + ``os.replace``)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> Grouping:
        """Read a grouping written by :meth:`to_json`; errors name the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
