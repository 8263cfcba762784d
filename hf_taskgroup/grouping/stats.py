"""Two-sample tests and multiple-comparison corrections used by PVI grouping.

Tests (``two_sample_test``):

- ``welch``: Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``), H0: equal means.
- ``mannwhitney``: Mann-Whitney U (two-sided), H0: equal distributions (stochastic order).
- ``ks``: two-sample Kolmogorov-Smirnov, H0: equal distributions.
- ``tost``: equivalence of means within ``+-equivalence_margin`` (bits) by two one-sided Welch tests
  (Schuirmann's TOST). H0: ``|mean_a - mean_b| >= margin``; its p-value is the larger of the two one-sided
  p-values, and a small p-value *establishes* equivalence (the opposite reading of the other tests).

Corrections (``adjust_pvalues``): ``holm`` (step-down, controls the family-wise error rate), ``bh``
(Benjamini-Hochberg, controls the false discovery rate), ``bonferroni`` and ``none``.

Degenerate samples: when both samples are constant, scipy's t statistic is undefined; we return p = 1 for
equal values and p = 0 otherwise (for ``tost``: p = 0 when the difference is inside the margin, else 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

TestName = Literal["welch", "mannwhitney", "ks", "tost"]
CorrectionName = Literal["holm", "bh", "bonferroni", "none"]
TESTS: tuple[str, ...] = ("welch", "mannwhitney", "ks", "tost")
CORRECTIONS: tuple[str, ...] = ("holm", "bh", "bonferroni", "none")


def _welch_one_sided(a: np.ndarray, b: np.ndarray, shift: float, alternative: str) -> tuple[float, float]:
    """Welch test of ``mean(a) + shift`` against ``mean(b)`` (constant samples handled explicitly)."""
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        diff = a[0] + shift - b[0]
        if alternative == "two-sided":
            return (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
        holds = diff > 0 if alternative == "greater" else diff < 0
        return float(np.sign(diff) * np.inf) if diff else 0.0, 0.0 if holds else 1.0
    res = stats.ttest_ind(a + shift, b, equal_var=False, alternative=alternative)
    return float(res.statistic), float(res.pvalue)


def two_sample_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    test: TestName = "welch",
    *,
    equivalence_margin: float | None = None,
) -> tuple[float, float]:
    """Return ``(statistic, p_value)`` of ``test`` on samples ``a`` and ``b``.

    For ``tost`` the statistic is the t of the one-sided test with the larger p-value.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(0, 1, 50), rng.normal(0, 1, 50)
        >>> two_sample_test(a, b)[1] > 0.05
        True
        >>> two_sample_test(a, b, "tost", equivalence_margin=1.0)[1] < 0.05
        True
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size < 2 or b.size < 2:
        raise ValueError(f"two-sample tests need at least 2 values per sample, got {a.size} and {b.size}")
    if test == "welch":
        return _welch_one_sided(a, b, 0.0, "two-sided")
    if test == "mannwhitney":
        if np.ptp(np.concatenate([a, b])) == 0:
            return 0.0, 1.0
        res = stats.mannwhitneyu(a, b, alternative="two-sided")
        return float(res.statistic), float(res.pvalue)
    if test == "ks":
        res = stats.ks_2samp(a, b)
        return float(res.statistic), float(res.pvalue)
    if test == "tost":
        if equivalence_margin is None or not equivalence_margin > 0:
            raise ValueError(f"test='tost' needs equivalence_margin > 0 (in bits), got {equivalence_margin!r}")
        # H01: mean_a - mean_b <= -margin (reject when a + margin > b); H02: mean_a - mean_b >= margin.
        t_low, p_low = _welch_one_sided(a, b, float(equivalence_margin), "greater")
        t_high, p_high = _welch_one_sided(a, b, -float(equivalence_margin), "less")
        return (t_low, p_low) if p_low >= p_high else (t_high, p_high)
    raise ValueError(f"unknown test {test!r}; choose one of {TESTS}")


def adjust_pvalues(p: Sequence[float] | np.ndarray, method: CorrectionName = "holm") -> np.ndarray:
    """Multiple-comparison adjusted p-values (same order as ``p``), capped at 1.

    Example:
        >>> adjust_pvalues([0.01, 0.04, 0.03], "holm").round(3).tolist()
        [0.03, 0.06, 0.06]
        >>> adjust_pvalues([0.01, 0.04, 0.03], "bh").round(3).tolist()
        [0.03, 0.04, 0.04]
    """
    p = np.asarray(p, dtype=float).ravel()
    if p.size and (np.any(~np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    if method == "holm":
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out = np.empty(m)
        out[order] = np.minimum(1.0, stepped)
        return out
    if method == "bh":
        return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=float)
    raise ValueError(f"unknown correction {method!r}; choose one of {CORRECTIONS}")
