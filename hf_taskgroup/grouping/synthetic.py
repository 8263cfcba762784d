"""Small synthetic suites with planted task families, for tests and sanity checks of grouping methods.

- :func:`make_synthetic_tabular_suite`: a :class:`~hf_taskgroup.grouping.evaluators.tabular.TabularSuite` whose tasks
  in one family share a ground-truth projection and response shape (plus a little task noise), while
  families differ; trained pairs show the families (within-family gains above across-family gains).
- :func:`planted_train_fn` / :func:`planted_evaluator`: instant "trainings" with planted losses: grouping
  tasks of one family lowers their loss, mixing families raises it, so the families are the unique best
  partition. :func:`linear_planted_train_fn` plants the additive model of the surrogate method instead.
- :func:`make_synthetic_text_suite`: tiny ``datasets.DatasetDict`` per task (``text``, ``label``) where the
  tasks of a family share a keyword -> label rule and families use conflicting rules.
- :func:`make_synthetic_pvi`: per-example PVI arrays whose mean differs between families.

Task names are ``f{family}_t{index}`` (see :func:`family_names`).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_taskgroup.grouping.evaluators.base import CachedEvaluator, TrainFn, canonical_group

if TYPE_CHECKING:
    from datasets import DatasetDict

    from hf_taskgroup.grouping.evaluators.tabular import TabularSuite

__all__ = [
    "family_names",
    "family_of",
    "linear_planted_train_fn",
    "make_synthetic_pvi",
    "make_synthetic_tabular_suite",
    "make_synthetic_text_suite",
    "planted_evaluator",
    "planted_train_fn",
]

Families = Sequence[Sequence[str]] | Mapping[str, Any]


def family_names(num_families: int, tasks_per_family: int) -> list[list[str]]:
    """``[["f0_t0", "f0_t1", ...], ["f1_t0", ...], ...]``.

    Example:
        >>> family_names(2, 2)
        [['f0_t0', 'f0_t1'], ['f1_t0', 'f1_t1']]
    """
    if num_families < 1 or tasks_per_family < 1:
        raise ValueError("num_families and tasks_per_family must be >= 1")
    return [[f"f{f}_t{i}" for i in range(tasks_per_family)] for f in range(num_families)]


def family_of(families: Families) -> dict[str, int]:
    """Map task -> family index from a list of families or a ``{task: family label}`` mapping."""
    if isinstance(families, Mapping):
        labels = {label: i for i, label in enumerate(dict.fromkeys(families.values()))}
        return {str(t): labels[lab] for t, lab in families.items()}
    out: dict[str, int] = {}
    for f, members in enumerate(families):
        for t in members:
            if str(t) in out:
                raise ValueError(f"task {t!r} is in two families")
            out[str(t)] = f
    if not out:
        raise ValueError("no tasks in families")
    return out


def _shape(f: int) -> Callable[[np.ndarray], np.ndarray]:
    shapes: list[Callable[[np.ndarray], np.ndarray]] = [
        np.abs, lambda z: np.sin(3 * z), lambda z: z, lambda z: np.tanh(4 * z), lambda z: np.cos(3 * z),
    ]
    if f < len(shapes):
        return shapes[f]
    return lambda z: np.sin((f - len(shapes) + 4) * z)


def make_synthetic_tabular_suite(
    num_families: int = 2,
    tasks_per_family: int = 2,
    n_per_task: int = 120,
    seed: int = 0,
    *,
    num_features: int = 6,
    task_type: str = "regression",
    task_noise: float = 0.1,
    label_noise: float = 0.2,
    val_fraction: float = 0.5,
    test_fraction: float = 0.2,
) -> TabularSuite:
    """Tabular suite with planted families: ``y = g_f(x . w_t) + noise`` with ``w_t = w_f + task_noise * e``.

    Tasks of family ``f`` share the direction ``w_f`` and the response shape ``g_f`` (|z|, sin 3z, z,
    tanh 4z, cos 3z, ...); families differ in both. Classification thresholds the centred response at 0.
    The validation split is large on purpose (``val_fraction=0.5``) so validation losses are not all noise.

    Example:
        >>> suite = make_synthetic_tabular_suite(2, 2, n_per_task=60, seed=0)
        >>> suite.tasks
        ['f0_t0', 'f0_t1', 'f1_t0', 'f1_t1']
    """
    from hf_taskgroup.grouping.evaluators.tabular import TabularSuite

    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(num_families, num_features))
    features: dict[str, np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    for f, members in enumerate(family_names(num_families, tasks_per_family)):
        for task in members:
            w = directions[f] + task_noise * rng.normal(size=num_features)
            x = rng.normal(size=(n_per_task, num_features))
            z = _shape(f)(x @ w / np.linalg.norm(w))
            z = z - z.mean() + label_noise * rng.normal(size=n_per_task)
            features[task] = x
            targets[task] = (z > 0).astype(float) if task_type == "classification" else z
    suite = TabularSuite.from_arrays(
        features, targets, task_type=task_type, val_fraction=val_fraction, test_fraction=test_fraction,
        seed=seed, source=f"synthetic(families={num_families}x{tasks_per_family},n={n_per_task},seed={seed})",
    )
    suite.settings["families"] = family_names(num_families, tasks_per_family)
    return suite


def _unit_noise(group: Sequence[str], task: str, seed: int) -> float:
    """Deterministic N(0, 1) draw for (group, task, seed)."""
    digest = hashlib.sha256(("|".join(canonical_group(group)) + "#" + task + "#" + str(seed)).encode()).digest()
    return float(np.random.default_rng(int.from_bytes(digest[:8], "little")).normal())


def _base_losses(tasks: Sequence[str], base_loss: float | Mapping[str, float], spread: float, seed: int) -> dict[str, float]:
    if isinstance(base_loss, Mapping):
        return {str(t): float(base_loss[t]) for t in tasks}
    return {str(t): float(base_loss) * (1 + spread * (zlib.crc32(f"{t}#{seed}".encode()) / 2**32 - 0.5))
            for t in tasks}


def planted_train_fn(
    families: Families,
    *,
    base_loss: float | Mapping[str, float] = 1.0,
    base_spread: float = 0.2,
    within_gain: float = 0.3,
    mixing_penalty: float = 0.3,
    noise: float = 0.0,
    seed: int = 0,
) -> TrainFn:
    """A deterministic ``train_fn(tasks)`` with planted losses.

    For task t in group G with ``s`` other tasks of its family and ``m`` tasks of other families:
    ``loss_t = base_t * (1 - within_gain * s / (s + 1) + mixing_penalty * m / (|G| - 1)) + noise * eps``,
    with ``base_t`` spread by ``base_spread`` around ``base_loss`` and ``eps`` a fixed N(0, 1) per (group,
    task). Without noise the partition into families is the unique minimum of the total loss.

    Example:
        >>> fn = planted_train_fn([["a", "b"], ["c"]], base_spread=0.0)
        >>> fn(["a", "b"])["a"]["loss"], fn(["a", "c"])["a"]["loss"]
        (0.85, 1.3)
    """
    fam = family_of(families)
    base = _base_losses(list(fam), base_loss, base_spread, seed)

    def train_fn(tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        group = canonical_group(tasks)
        unknown = [t for t in group if t not in fam]
        if unknown:
            raise ValueError(f"planted evaluator: unknown task(s) {unknown}")
        out: dict[str, dict[str, float]] = {}
        for t in group:
            same = sum(1 for u in group if u != t and fam[u] == fam[t])
            mixed = len(group) - 1 - same
            factor = 1 - within_gain * same / (same + 1) + (mixing_penalty * mixed / (len(group) - 1) if mixed else 0.0)
            loss = base[t] * factor + (noise * _unit_noise(group, t, seed) if noise else 0.0)
            out[t] = {"loss": max(loss, 1e-6), "test_loss": max(loss, 1e-6)}
        return out

    return train_fn


def linear_planted_train_fn(
    tasks: Sequence[str], theta: np.ndarray, *, base: float | Mapping[str, float] = 1.0, noise: float = 0.0,
    seed: int = 0,
) -> TrainFn:
    """``train_fn`` with the surrogate model's additive losses: ``loss_t(S) = base_t + sum_{i in S, i != t} theta[t, i]``.

    ``theta`` is a square matrix over ``tasks`` (row = the task whose loss moves, column = the task added);
    negative entries mean the added task helps. ``noise`` adds a fixed N(0, noise^2) per (group, task).

    Example:
        >>> fn = linear_planted_train_fn(["a", "b"], np.array([[0.0, -0.2], [0.1, 0.0]]))
        >>> round(fn(["a", "b"])["a"]["loss"], 3), round(fn(["a", "b"])["b"]["loss"], 3)
        (0.8, 1.1)
    """
    names = [str(t) for t in tasks]
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (len(names), len(names)):
        raise ValueError(f"theta must be {len(names)}x{len(names)}, got {theta.shape}")
    index = {t: i for i, t in enumerate(names)}
    base_t = _base_losses(names, base, 0.0, seed)

    def train_fn(group_tasks: Sequence[str]) -> dict[str, dict[str, float]]:
        group = canonical_group(group_tasks)
        unknown = [t for t in group if t not in index]
        if unknown:
            raise ValueError(f"planted evaluator: unknown task(s) {unknown}")
        out = {}
        for t in group:
            loss = base_t[t] + sum(theta[index[t], index[u]] for u in group if u != t)
            out[t] = {"loss": float(loss + (noise * _unit_noise(group, t, seed) if noise else 0.0))}
        return out

    return train_fn


def planted_evaluator(
    families: Families, *, cache_dir: str | Path | None = None, seed: int = 0, **kwargs: Any
) -> CachedEvaluator:
    """A :class:`CachedEvaluator` over :func:`planted_train_fn` (in memory unless ``cache_dir`` is given).

    Example:
        >>> ev = planted_evaluator([["a", "b"], ["c", "d"]])
        >>> ev(["a", "b"])["a"]["loss"] < ev(["a"])["a"]["loss"] < ev(["a", "c"])["a"]["loss"]
        True
    """
    fam = family_of(families)
    settings = {"planted": sorted(fam.items()), **{k: v for k, v in kwargs.items() if k != "base_loss"}}
    if isinstance(kwargs.get("base_loss"), Mapping):
        settings["base_loss"] = sorted(kwargs["base_loss"].items())
    elif "base_loss" in kwargs:
        settings["base_loss"] = kwargs["base_loss"]
    return CachedEvaluator(planted_train_fn(families, seed=seed, **kwargs), cache_dir, settings, seed=seed)


_KEYWORDS = ["amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
             "kestrel", "lagoon"]
_FILLER = ["the", "a", "report", "note", "case", "item", "with", "and", "of", "seen", "today", "shows"]


def make_synthetic_text_suite(
    num_families: int = 2,
    tasks_per_family: int = 2,
    *,
    n_train: int = 32,
    n_validation: int = 16,
    n_test: int = 16,
    words_per_text: int = 6,
    label_noise: float = 0.05,
    seed: int = 0,
) -> dict[str, DatasetDict]:
    """``{task: DatasetDict(train/validation/test)}`` with columns ``text`` (str) and ``label`` (ClassLabel neg/pos).

    Each family maps each of 12 keywords to a label (a seeded random rule; different families get
    different rules, family 1 the exact opposite of family 0); a text's label is the majority label of its
    keywords (ties broken towards ``pos``), flipped with probability ``label_noise``. Tasks of a family share
    the rule; their texts use task-specific filler words.

    Example:
        >>> suite = make_synthetic_text_suite(2, 1, n_train=4, n_validation=2, n_test=2)
        >>> sorted(suite), suite["f0_t0"]["train"].column_names
        (['f0_t0', 'f1_t0'], ['text', 'label'])
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rng = np.random.default_rng(seed)
    base_rule = rng.integers(0, 2, size=len(_KEYWORDS))
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    suite: dict[str, DatasetDict] = {}
    for f, members in enumerate(family_names(num_families, tasks_per_family)):
        if f == 0:
            rule = base_rule
        elif f == 1:
            rule = 1 - base_rule
        else:
            rule = rng.integers(0, 2, size=len(_KEYWORDS))
        for t_index, task in enumerate(members):
            filler = [f"{w}{t_index}" if i % 3 == 0 else w for i, w in enumerate(_FILLER)]
            splits = {}
            for split, n in (("train", n_train), ("validation", n_validation), ("test", n_test)):
                texts, labels = [], []
                for _ in range(n):
                    k = int(rng.integers(1, max(words_per_text // 2, 1) + 1))
                    kw = rng.integers(0, len(_KEYWORDS), size=k)
                    words = [_KEYWORDS[i] for i in kw] + list(rng.choice(filler, size=max(words_per_text - k, 0)))
                    rng.shuffle(words)
                    label = int(rule[kw].mean() >= 0.5)
                    if rng.random() < label_noise:
                        label = 1 - label
                    texts.append(" ".join(words))
                    labels.append(label)
                splits[split] = Dataset.from_dict({"text": texts, "label": labels}, features=features)
            suite[task] = DatasetDict(splits)
    return suite


def make_synthetic_pvi(
    families: Families,
    *,
    n_per_task: int = 200,
    family_spacing: float = 1.0,
    task_jitter: float = 0.05,
    example_std: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``{task: per-example PVI (bits)}``: family f has mean ``f * family_spacing`` (+ task jitter), examples
    spread with ``example_std``.

    Example:
        >>> pvi = make_synthetic_pvi([["a", "b"], ["c"]], n_per_task=500, seed=0)
        >>> bool(abs(pvi["a"].mean() - pvi["b"].mean()) < 0.3 < abs(pvi["a"].mean() - pvi["c"].mean()))
        True
    """
    fam = family_of(families)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for task, f in fam.items():
        mean = f * family_spacing + task_jitter * rng.normal()
        out[task] = mean + example_std * rng.normal(size=n_per_task)
    return out
