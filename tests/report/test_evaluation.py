import pytest

from hf_taskgroup.grouping import Grouping
from hf_taskgroup.report.evaluation import evaluate_groupings, group_name, summary_table


def _res(tasks, scores, metric="accuracy", params=100):
    return {"tasks": {t: {"test": {metric: scores[t], "loss": 1.0}} for t in tasks},
            "primary": {t: metric for t in tasks}, "num_parameters": params}


@pytest.fixture
def results():
    stl = {"a": 0.70, "b": 0.60, "c": 0.80}
    out = {group_name([t]): {0: _res([t], stl), 1: _res([t], {k: v + 0.02 for k, v in stl.items()})} for t in stl}
    out[group_name(["a", "b"])] = {0: _res(["a", "b"], {"a": 0.75, "b": 0.58}, params=120),
                                  1: _res(["a", "b"], {"a": 0.77, "b": 0.60}, params=120)}
    return out


def test_gain_negative_transfer_and_parameters(results):
    g = Grouping(groups=[["a", "b"], ["c"]], method="pvi", tasks=["a", "b", "c"], params={}, scores={})
    ev = evaluate_groupings({"pvi": g}, results)["pvi"]
    assert ev.rows["a"].gain == pytest.approx(0.05)
    assert not ev.rows["a"].negative_transfer
    assert ev.rows["b"].gain == pytest.approx(-0.02)
    assert ev.rows["b"].negative_transfer
    assert ev.rows["c"].gain == pytest.approx(0.0) and ev.rows["c"].group == ["c"]
    assert ev.rows["a"].seeds == 2 and ev.rows["a"].stl_std == pytest.approx(0.01)
    assert ev.stl_parameters == 300 and ev.grouped_parameters == 220
    assert ev.tasks_gained == 1 and ev.tasks_negative == 1
    row = summary_table({"pvi": ev})[0]
    assert row["groups"] == 2 and row["mean_gain"] == pytest.approx((0.05 - 0.02 + 0.0) / 3)


def test_lower_is_better_metric_flips_the_sign():
    res = {group_name(["a"]): {0: _res(["a"], {"a": 2.0}, metric="mse")},
           group_name(["b"]): {0: _res(["b"], {"b": 1.0}, metric="mse")},
           group_name(["a", "b"]): {0: _res(["a", "b"], {"a": 1.5, "b": 1.0}, metric="mse")}}
    g = Grouping(groups=[["a", "b"]], method="all_in_one", tasks=["a", "b"], params={}, scores={})
    ev = evaluate_groupings({"all": g}, res)["all"]
    assert ev.rows["a"].gain == pytest.approx(0.5)


def test_missing_group_results_named(results):
    g = Grouping(groups=[["a", "c"], ["b"]], method="x", tasks=["a", "b", "c"], params={}, scores={})
    with pytest.raises(KeyError, match=r"no trained results for group \['a', 'c'\]"):
        evaluate_groupings({"x": g}, results)


def test_group_key_is_order_free_and_distinct():
    assert group_name(["b", "a"]) == group_name(["a", "b"])
    assert group_name(["a"]) != group_name(["a", "b"])
