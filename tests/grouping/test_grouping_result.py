"""Grouping result type (JSON round-trip, validation, group_of) and the method registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_taskgroup.grouping import available_methods, group_tasks
from hf_taskgroup.grouping.registry import register_method, unregister_method
from hf_taskgroup.grouping.result import Grouping, GroupingCost, to_jsonable


def make(groups, tasks=None, **kw):
    tasks = tasks if tasks is not None else sorted({t for g in groups for t in g})
    return Grouping(groups=groups, method=kw.pop("method", "test"), tasks=tasks,
                    params=kw.pop("params", {}), scores=kw.pop("scores", {}), **kw)


# ------------------------------------------------------------------------------------ JSON round-trip
names = st.text(alphabet="abcdefghij_-0123456789", min_size=1, max_size=8)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=False, allow_infinity=False), names)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)), max_leaves=12)


@st.composite
def groupings(draw):
    tasks = draw(st.lists(names, min_size=1, max_size=7, unique=True))
    overlap = draw(st.booleans())
    labels = draw(st.lists(st.integers(0, len(tasks) - 1), min_size=len(tasks), max_size=len(tasks)))
    groups = {}
    for task, label in zip(tasks, labels):
        groups.setdefault(label, []).append(task)
    groups = list(groups.values())
    if overlap and len(tasks) > 1:
        extra = draw(st.lists(st.sampled_from(tasks), min_size=1, max_size=len(tasks), unique=True))
        if set(extra) not in [set(g) for g in groups]:
            groups.append(extra)
    return Grouping(
        groups=groups, method=draw(names), tasks=tasks,
        params=draw(st.dictionaries(names, json_values, max_size=4)),
        scores=draw(st.dictionaries(names, json_values, max_size=4)),
        objective=draw(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))),
        overlap=overlap,
        cost=GroupingCost(trainings=draw(st.integers(0, 1000)), examples=draw(st.integers(0, 10**7)),
                          seconds=draw(st.floats(0, 1e6))),
        provenance=draw(st.dictionaries(names, json_values, max_size=3)),
    )


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(g=groupings())
def test_every_grouping_round_trips_through_json(g, tmp_path):
    g.validate()
    assert Grouping.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    path = tmp_path / "sub" / "grouping.json"
    g.to_json(path)
    assert Grouping.from_json(path) == g
    assert not list(path.parent.glob("*.tmp"))  # the atomic write left no temp file


def test_numpy_values_become_plain_json():
    g = make([["a", "b"]], scores={"m": np.eye(2), "x": np.float32(0.5), "v": {"a": np.int64(3)},
                                   "bad": float("nan")}, objective=np.float64(1.5))
    d = g.to_dict()
    assert d["scores"]["m"] == [[1.0, 0.0], [0.0, 1.0]]
    assert d["scores"]["x"] == 0.5 and d["scores"]["v"] == {"a": 3}
    assert d["scores"]["bad"] is None  # strict JSON: NaN is written as null
    assert d["objective"] == 1.5
    json.dumps(d, allow_nan=False)


def test_to_jsonable_rejects_non_string_keys_and_objects():
    with pytest.raises(TypeError, match="keys must be strings"):
        to_jsonable({1: 2})
    with pytest.raises(TypeError, match="object is not JSON-able"):
        to_jsonable({"a": object()})


# ------------------------------------------------------------------------------------------ validate
@pytest.mark.parametrize(
    ("groups", "tasks", "overlap", "message"),
    [
        ([["a", "b"]], ["a", "b", "c"], False, r"\['c'\] are in no group"),
        ([["a", "x"]], ["a"], False, r"unknown task\(s\) \['x'\]"),
        ([["a", "b"], ["b"]], ["a", "b"], False, "'b' is in groups 0 and 1, but overlap=False"),
        ([["a"], []], ["a"], False, "group 1 is empty"),
        ([["a", "a"]], ["a"], False, "more than once"),
        ([["a", "b"], ["b", "a"]], ["a", "b"], True, "are the same group"),
        ([["a"]], ["a", "a"], False, "listed twice"),
        ([], ["a"], False, "no groups"),
    ],
)
def test_validate_errors_name_the_problem(groups, tasks, overlap, message):
    with pytest.raises(ValueError, match=message):
        make(groups, tasks, overlap=overlap).validate()


def test_validate_accepts_overlap_and_rejects_bad_objective_and_params():
    make([["a", "b"], ["b"]], ["a", "b"], overlap=True).validate()
    with pytest.raises(ValueError, match="objective must be a finite number"):
        make([["a"]], objective=float("inf")).validate()
    with pytest.raises(ValueError, match="not JSON-able"):
        make([["a"]], params={"f": lambda: 0}).validate()


def test_group_of_uses_assignment_with_overlap():
    g = make([["a", "b"], ["b", "c"]], ["a", "b", "c"], overlap=True, scores={"assignment": {"b": 1}})
    assert g.group_of("b") == ["b", "c"]
    assert g.group_of("a") == ["a", "b"]
    assert g.groups_of("b") == [["a", "b"], ["b", "c"]]
    with pytest.raises(KeyError, match="unknown task 'z'"):
        g.group_of("z")
    bad = make([["a", "b"], ["c"]], ["a", "b", "c"], scores={"assignment": {"a": 1}})
    with pytest.raises(ValueError, match="does not point to a group containing 'a'"):
        bad.group_of("a")
    with pytest.raises(ValueError, match=r"scores\['assignment'\]\['a'\] = 1 does not point"):
        bad.validate()


def test_from_dict_rejects_unknown_missing_and_newer():
    d = make([["a"]]).to_dict()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['extra'\]"):
        Grouping.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match=r"required key\(s\) \['groups'\]"):
        Grouping.from_dict({k: v for k, v in d.items() if k != "groups"})
    with pytest.raises(ValueError, match="newer"):
        Grouping.from_dict({**d, "format_version": 99})


def test_from_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        Grouping.from_json(path)


# ------------------------------------------------------------------------------------------ registry
def test_core_methods_are_registered():
    methods = available_methods()
    for name in ("pvi", "transfer_gain", "tag", "single_task", "all_in_one", "random", "exhaustive", "clustering"):
        assert name in methods
    assert methods["pvi"]["needs"] == ("pvi",)
    assert methods["tag"]["needs"] == ("affinity",)


def test_group_tasks_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown grouping method 'nope'; available: \[.*'pvi'"):
        group_tasks("nope", ["a"])


def test_group_tasks_names_missing_input_and_method():
    with pytest.raises(ValueError, match="grouping method 'transfer_gain' needs the input 'affinity'"):
        group_tasks("transfer_gain", ["a", "b"])
    with pytest.raises(ValueError, match="'evaluator' or 'group_value'"):
        group_tasks("exhaustive", ["a", "b"])


def test_group_tasks_fills_cost_and_provenance():
    g = group_tasks("transfer_gain", ["a", "b"], affinity=np.ones((2, 2)))
    assert g.cost.seconds > 0
    assert g.provenance["library"] == "hf_taskgroup"
    assert g.provenance["created_at"].endswith("+00:00")
    assert g.provenance["inputs"]["affinity"] == "ndarray of shape (2, 2)"


def test_group_tasks_rejects_bad_task_lists():
    with pytest.raises(ValueError, match=r"task\(s\) \['a'\] listed more than once"):
        group_tasks("single_task", ["a", "a"])
    with pytest.raises(TypeError, match="sequence of task names"):
        group_tasks("single_task", "ab")


def test_registry_validates_method_output_and_refuses_name_clash():
    @register_method("_broken_for_test")
    def broken(tasks, *, seed=0):
        return Grouping(groups=[[tasks[0]]], method="_broken_for_test", tasks=list(tasks), params={}, scores={})

    try:
        with pytest.raises(ValueError, match=r"\['b'\] are in no group"):
            group_tasks("_broken_for_test", ["a", "b"])
        with pytest.raises(ValueError, match="already registered"):
            register_method("_broken_for_test")(lambda tasks: None)
    finally:
        unregister_method("_broken_for_test")
    assert "_broken_for_test" not in available_methods()
