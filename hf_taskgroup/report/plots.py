"""PNG plots of groupings for reports and model cards (matplotlib, Agg canvas; no pyplot, no display needed).

- :func:`plot_pvi_distributions`: per-task PVI distributions (box plots), tasks ordered and coloured by group.
- :func:`plot_pvalue_heatmap`: pairwise p-values, cells below ``alpha`` marked.
- :func:`plot_affinity_heatmap`: an affinity matrix with tasks reordered by group and each group outlined.

Every function writes ``path`` (parent folders created) and returns it as a ``Path``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG through the Agg canvas (the global matplotlib backend is left alone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path


def _order_by_groups(tasks: Sequence[str], groups: Sequence[Sequence[str]] | None) -> tuple[list[str], list[int]]:
    """Tasks in group order (first group first; with overlap a task is placed with its first group) and
    each placed task's group index; tasks in no group come last with index -1."""
    order: list[str] = []
    group_index: list[int] = []
    for gi, group in enumerate(groups or []):
        for task in group:
            if task in tasks and task not in order:
                order.append(task)
                group_index.append(gi)
    for task in tasks:
        if task not in order:
            order.append(task)
            group_index.append(-1)
    return order, group_index


def _size(n: int) -> float:
    return float(min(max(3.0, 0.6 * n + 2.0), 20.0))


def plot_pvi_distributions(
    pvi: Mapping[str, Sequence[float] | np.ndarray],
    groups: Sequence[Sequence[str]] | None,
    path: str | Path,
    *,
    title: str = "PVI per task",
) -> Path:
    """Box plots of each task's per-example PVI (bits), ordered and coloured by group.

    Example:
        >>> import tempfile, os
        >>> p = plot_pvi_distributions({"a": [0.1, 0.3], "b": [1.0, 1.2]}, [["a"], ["b"]],
        ...                            os.path.join(tempfile.mkdtemp(), "pvi.png"))
        >>> p.exists()
        True
    """
    tasks = list(pvi)
    if not tasks:
        raise ValueError("plot_pvi_distributions: pvi is empty")
    order, group_index = _order_by_groups(tasks, groups)
    data = [np.asarray(pvi[t], dtype=float).ravel() for t in order]
    fig = Figure(figsize=(_size(len(order)), 4.0))
    ax = fig.add_subplot()
    boxes = ax.boxplot(data, patch_artist=True, showfliers=False, medianprops={"color": "black"})
    colours = [f"C{gi % 10}" if gi >= 0 else "lightgrey" for gi in group_index]
    for patch, colour in zip(boxes["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.6)
    for x, values in enumerate(data, start=1):
        ax.plot([x], [values.mean()], marker="D", color="black", markersize=4)
    ax.set_xticks(range(1, len(order) + 1), order, rotation=45, ha="right")
    ax.set_ylabel("PVI (bits)")
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_pvalue_heatmap(
    tasks: Sequence[str],
    p_matrix: Any,
    path: str | Path,
    *,
    alpha: float = 0.05,
    title: str = "pairwise p-values",
) -> Path:
    """Heatmap of pairwise p-values (log scale colours); cells with p < ``alpha`` get a ``*``.

    Example:
        >>> import tempfile, os
        >>> plot_pvalue_heatmap(["a"], [[1.0]], os.path.join(tempfile.mkdtemp(), "p.png")).suffix
        '.png'
    """
    tasks = list(tasks)
    p = np.asarray(p_matrix, dtype=float)
    if p.shape != (len(tasks), len(tasks)):
        raise ValueError(f"p_matrix must be {len(tasks)}x{len(tasks)}, got shape {p.shape}")
    fig = Figure(figsize=(_size(len(tasks)) + 1.0, _size(len(tasks))))
    ax = fig.add_subplot()
    shown = np.log10(np.clip(np.nan_to_num(p, nan=1.0), 1e-12, 1.0))
    image = ax.imshow(shown, cmap="viridis", vmin=min(-12.0, float(shown.min())), vmax=0.0)
    fig.colorbar(image, ax=ax, label="log10 p")
    if len(tasks) <= 25:
        for i in range(len(tasks)):
            for j in range(len(tasks)):
                label = f"{p[i, j]:.2g}" + ("*" if p[i, j] < alpha else "")
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_title(f"{title} (* p < {alpha})")
    return save_figure(fig, path)


def plot_affinity_heatmap(
    tasks: Sequence[str],
    matrix: Any,
    groups: Sequence[Sequence[str]] | None,
    path: str | Path,
    *,
    title: str = "task affinity",
    row_label: str = "source task i",
    col_label: str = "target task j",
) -> Path:
    """Heatmap of ``matrix[i, j]`` with tasks reordered by group and every group outlined.

    A group whose members are contiguous in the order (always, for a partition) gets one rectangle; the
    cells of an overlapping group that is not contiguous are outlined one by one in the group's colour.

    Example:
        >>> import tempfile, os
        >>> S = np.array([[0.0, 1.0], [1.0, 0.0]])
        >>> plot_affinity_heatmap(["a", "b"], S, [["a", "b"]], os.path.join(tempfile.mkdtemp(), "s.png")).exists()
        True
    """
    tasks = list(tasks)
    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(tasks), len(tasks)):
        raise ValueError(f"matrix must be {len(tasks)}x{len(tasks)}, got shape {m.shape}")
    unknown = [t for g in (groups or []) for t in g if t not in tasks]
    if unknown:
        raise ValueError(f"groups name unknown task(s) {unknown}")
    order, _ = _order_by_groups(tasks, groups)
    pos = {t: k for k, t in enumerate(order)}
    idx = [tasks.index(t) for t in order]
    shown = m[np.ix_(idx, idx)]
    fig = Figure(figsize=(_size(len(tasks)) + 1.0, _size(len(tasks))))
    ax = fig.add_subplot()
    finite = shown[np.isfinite(shown)]
    bound = (float(np.abs(finite).max()) if finite.size else 0.0) or 1.0
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-bound, vmax=bound)
    fig.colorbar(image, ax=ax)
    for gi, group in enumerate(groups or []):
        colour = f"C{gi % 10}"
        places = sorted(pos[t] for t in group)
        if places == list(range(places[0], places[0] + len(places))):
            ax.add_patch(Rectangle((places[0] - 0.5, places[0] - 0.5), len(places), len(places),
                                   fill=False, edgecolor=colour, linewidth=2.5))
        else:
            for r in places:
                for c in places:
                    ax.add_patch(Rectangle((c - 0.45, r - 0.45), 0.9, 0.9, fill=False, edgecolor=colour,
                                           linewidth=1.5, linestyle="--"))
    if len(tasks) <= 25:
        for r in range(len(order)):
            for c in range(len(order)):
                ax.text(c, r, f"{shown[r, c]:.2g}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title)
    return save_figure(fig, path)
