"""Grouping plots write valid PNG files, also for a single task and for overlapping groups."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from hf_taskgroup.report.plots import plot_affinity_heatmap, plot_pvalue_heatmap, plot_pvi_distributions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.exists()
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_pvi_distributions(tmp_path):
    rng = np.random.default_rng(0)
    pvi = {t: rng.normal(m, 0.3, 40) for t, m in [("a", 0.2), ("b", 1.0), ("c", 0.25)]}
    out = plot_pvi_distributions(pvi, [["a", "c"], ["b"]], tmp_path / "deep" / "pvi.png")
    assert out == tmp_path / "deep" / "pvi.png"
    assert_png(out)


def test_pvalue_heatmap(tmp_path):
    p = np.array([[1.0, 0.3, 1e-20], [0.3, 1.0, 0.01], [1e-20, 0.01, 1.0]])
    assert_png(plot_pvalue_heatmap(["a", "b", "c"], p, tmp_path / "p.png", alpha=0.05))


def test_affinity_heatmap_partition_and_overlap(tmp_path):
    S = np.arange(16, dtype=float).reshape(4, 4) - 8
    assert_png(plot_affinity_heatmap(list("abcd"), S, [["b", "d"], ["a", "c"]], tmp_path / "s.png"))
    assert_png(plot_affinity_heatmap(list("abcd"), S, [["a", "b"], ["b", "c"], ["a", "d"]], tmp_path / "o.png"))


def test_single_task_plots(tmp_path):
    assert_png(plot_pvi_distributions({"a": [0.1, 0.2, 0.4]}, [["a"]], tmp_path / "1.png"))
    assert_png(plot_pvalue_heatmap(["a"], [[1.0]], tmp_path / "2.png"))
    assert_png(plot_affinity_heatmap(["a"], [[0.0]], [["a"]], tmp_path / "3.png"))


def test_plot_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="p_matrix must be 2x2"):
        plot_pvalue_heatmap(["a", "b"], np.ones((3, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['z'\]"):
        plot_affinity_heatmap(["a"], [[0.0]], [["z"]], tmp_path / "y.png")
