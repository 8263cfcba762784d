"""Synthetic suites with planted families: planted losses, tabular/text suites and PVI arrays."""

from __future__ import annotations

import numpy as np
import pytest

from hf_taskgroup.grouping.methods.baselines import set_partitions
from hf_taskgroup.grouping.synthetic import (
    family_names,
    family_of,
    linear_planted_train_fn,
    make_synthetic_pvi,
    make_synthetic_tabular_suite,
    make_synthetic_text_suite,
    planted_evaluator,
    planted_train_fn,
)


def test_family_names_and_family_of():
    fams = family_names(2, 3)
    assert fams == [["f0_t0", "f0_t1", "f0_t2"], ["f1_t0", "f1_t1", "f1_t2"]]
    assert family_of(fams)["f1_t2"] == 1
    assert family_of({"a": "x", "b": "y", "c": "x"}) == {"a": 0, "b": 1, "c": 0}
    with pytest.raises(ValueError, match="two families"):
        family_of([["a"], ["a"]])


@pytest.mark.parametrize("families", [[["a", "b"], ["c", "d", "e"]], [["a"], ["b", "c"], ["d", "e"]]])
def test_planted_families_are_the_unique_best_partition(families):
    fn = planted_train_fn(families, seed=1)
    tasks = [t for f in families for t in f]
    totals = []
    for partition in set_partitions(tasks):
        total = sum(fn(g)[t]["loss"] for g in partition for t in g)
        totals.append((total, sorted(sorted(g) for g in partition)))
    totals.sort()
    assert totals[0][1] == sorted(sorted(f) for f in families)
    assert totals[1][0] > totals[0][0] + 1e-6


def test_planted_losses_lower_within_families_and_raise_when_mixing():
    fn = planted_train_fn([["a", "b"], ["c"]], base_spread=0.0, within_gain=0.4, mixing_penalty=0.5)
    assert fn(["a"])["a"]["loss"] == pytest.approx(1.0)
    assert fn(["a", "b"])["a"]["loss"] == pytest.approx(0.8)
    assert fn(["a", "c"])["a"]["loss"] == pytest.approx(1.5)
    assert fn(["a", "b", "c"])["a"]["loss"] == pytest.approx(1 - 0.4 / 2 + 0.5 / 2)


def test_planted_noise_is_deterministic_per_group_and_varies_between_groups():
    fn = planted_train_fn([["a", "b"], ["c"]], noise=0.1, seed=0)
    assert fn(["a", "b"]) == fn(["b", "a"])
    fn2 = planted_train_fn([["a", "b"], ["c"]], noise=0.1, seed=0)
    assert fn(["a", "c"]) == fn2(["c", "a"])
    assert planted_train_fn([["a", "b"], ["c"]], noise=0.1, seed=1)(["a", "b"]) != fn(["a", "b"])
    with pytest.raises(ValueError, match="unknown task"):
        fn(["zzz"])


def test_planted_evaluator_counts_trainings():
    ev = planted_evaluator([["a", "b"], ["c"]])
    ev(["a", "b"])
    ev(["b", "a"])
    assert ev.trainings == 1 and ev.cache_hits == 1


def test_linear_planted_train_fn_is_additive():
    theta = np.array([[0.0, -0.1, 0.2], [0.3, 0.0, 0.0], [0.0, 0.0, 0.0]])
    fn = linear_planted_train_fn(["a", "b", "c"], theta, base={"a": 1.0, "b": 2.0, "c": 3.0})
    out = fn(["a", "b", "c"])
    assert out["a"]["loss"] == pytest.approx(1.1)
    assert out["b"]["loss"] == pytest.approx(2.3)
    assert out["c"]["loss"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="3x3"):
        linear_planted_train_fn(["a", "b", "c"], np.zeros((2, 2)))


def test_synthetic_tabular_suite_shape_and_determinism():
    a = make_synthetic_tabular_suite(3, 2, n_per_task=50, seed=4)
    b = make_synthetic_tabular_suite(3, 2, n_per_task=50, seed=4)
    assert a.tasks == [t for f in family_names(3, 2) for t in f]
    assert a.fingerprint() == b.fingerprint() != make_synthetic_tabular_suite(3, 2, n_per_task=50, seed=5).fingerprint()
    d = a.data["f2_t1"]
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 50
    cls = make_synthetic_tabular_suite(2, 1, n_per_task=80, seed=0, task_type="classification")
    assert set(np.unique(cls.data["f0_t0"].y_train)) == {0.0, 1.0}


def test_synthetic_tabular_suite_records_its_planted_families():
    suite = make_synthetic_tabular_suite(2, 2, n_per_task=60, seed=0)
    assert suite.settings["families"] == family_names(2, 2)
    assert suite.task_type == "regression"


def test_synthetic_text_suite_columns_splits_and_family_rules():
    suite = make_synthetic_text_suite(2, 2, n_train=80, n_validation=4, n_test=4, label_noise=0.0,
                                      words_per_text=2, seed=0)
    assert sorted(suite) == ["f0_t0", "f0_t1", "f1_t0", "f1_t1"]
    dd = suite["f0_t0"]
    assert set(dd) == {"train", "validation", "test"}
    assert dd["train"].column_names == ["text", "label"] and len(dd["train"]) == 80
    assert dd["train"].features["label"].names == ["neg", "pos"]

    def rule(task):
        # words_per_text=2 -> exactly one keyword per text: read the keyword -> label rule off the data
        out = {}
        for row in suite[task]["train"]:
            keywords = [w for w in row["text"].split() if not any(ch.isdigit() for ch in w) and w not in
                        {"the", "a", "report", "note", "case", "item", "with", "and", "of", "seen", "today", "shows"}]
            assert len(keywords) == 1
            out.setdefault(keywords[0], set()).add(row["label"])
        assert all(len(v) == 1 for v in out.values())  # a keyword always gives the same label
        return {k: next(iter(v)) for k, v in out.items()}

    r00, r01, r10 = rule("f0_t0"), rule("f0_t1"), rule("f1_t0")
    shared = set(r00) & set(r01)
    assert shared and all(r00[k] == r01[k] for k in shared)
    opposite = set(r00) & set(r10)
    assert opposite and all(r00[k] != r10[k] for k in opposite)


def test_synthetic_pvi_family_means_differ_and_tasks_within_agree():
    families = [["a", "b"], ["c", "d"]]
    pvi = make_synthetic_pvi(families, n_per_task=400, family_spacing=1.0, seed=0)
    assert set(pvi) == {"a", "b", "c", "d"} and pvi["a"].shape == (400,)
    means = {t: v.mean() for t, v in pvi.items()}
    assert abs(means["a"] - means["b"]) < 0.3 and abs(means["c"] - means["d"]) < 0.3
    assert abs(means["a"] - means["c"]) > 0.6
    assert np.array_equal(make_synthetic_pvi(families, seed=0)["a"], make_synthetic_pvi(families, seed=0)["a"])
