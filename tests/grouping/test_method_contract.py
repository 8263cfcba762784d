"""The grouping-method contract: each method's options dataclass, its declared inputs and ONE input resolver
shared by the pipeline, `hf-taskgroup group` and `group_tasks(..., sources=...)`."""

from __future__ import annotations

import dataclasses
import json

import datasets
import numpy as np
import pytest

from hf_taskgroup.cli import main
from hf_taskgroup.config import ConfigError
from hf_taskgroup.grouping import group_tasks
from hf_taskgroup.grouping.inputs import InputSources, resolve_inputs
from hf_taskgroup.grouping.registry import available_methods, method_config_class, method_inputs
from hf_taskgroup.grouping.result import Grouping

RNG = np.random.default_rng(0)
#: three tasks with similar PVI; c's PVI model collapsed
_BASE = RNG.normal(0.2, 0.3, 40)
PVI = {"a": _BASE, "b": _BASE + 0.01, "c": _BASE + 0.02}


def test_every_method_declares_options_inputs_and_a_description():
    for name, info in available_methods().items():
        cls = method_config_class(name)
        assert dataclasses.is_dataclass(cls) and info["description"], name
        options = {f.name for f in dataclasses.fields(cls)}
        assert not options & method_inputs(name), f"{name}: an input is listed as an option"
        cls()  # every option has a default


def test_method_config_defaults_come_from_the_method():
    cfg = method_config_class("pvi")()
    assert (cfg.test, cfg.alpha, cfg.strategy, cfg.keep_collapsed_single) == ("welch", 0.05, "interval", True)
    assert method_inputs("pvi") == {"pvi", "collapsed"}
    assert method_inputs("tag") == {"affinity"}


def test_unknown_option_is_refused_before_the_method_runs():
    with pytest.raises(ConfigError, match="method 'pvi' does not take 'alfa'"):
        group_tasks("pvi", ["a", "b"], pvi=PVI, alfa=0.1)
    with pytest.raises(ConfigError, match="'all_in_one' does not take 'num_groups'"):
        group_tasks("all_in_one", ["a", "b"], num_groups=2)
    assert group_tasks("all_in_one", ["a", "b"]).groups == [["a", "b"]]  # the keyword API still works


def test_collapsed_tasks_stay_single_unless_the_option_says_otherwise():
    kept = group_tasks("pvi", ["a", "b", "c"], pvi=PVI, collapsed=["c"])
    assert sorted(map(sorted, kept.groups)) == [["a", "b"], ["c"]]
    assert kept.scores["collapsed_tasks"] == ["c"] and kept.params["collapsed_kept_single"] is True
    grouped = group_tasks("pvi", ["a", "b", "c"], pvi=PVI, collapsed=["c"], keep_collapsed_single=False)
    assert grouped.groups == [["a", "b", "c"]] and "collapsed_tasks" not in grouped.scores


def test_group_tasks_with_sources_uses_the_resolver():
    sources = InputSources(tasks=["a", "b", "c"], pvi=lambda: (PVI, ["c"]))
    assert sorted(resolve_inputs("pvi", sources)) == ["collapsed", "pvi"]
    via_sources = group_tasks("pvi", ["a", "b", "c"], sources=sources)
    explicit = group_tasks("pvi", ["a", "b", "c"], pvi=PVI, collapsed=["c"])
    assert via_sources.groups == explicit.groups
    with pytest.raises(ConfigError, match="needs an affinity matrix"):
        resolve_inputs("tag", InputSources(tasks=["a", "b"]))
    asked = []
    S = np.array([[0.0, 1.0], [1.0, 0.0]])
    resolve_inputs("clustering", InputSources(tasks=["a", "b"], affinity=lambda kind: asked.append(kind) or S),
                   {"affinity_kind": "transfer_gain"})
    resolve_inputs("tag", InputSources(tasks=["a", "b"], affinity=lambda kind: asked.append(kind) or S))
    assert asked == ["transfer_gain", "tag"]  # the kind each method reads


def test_group_command_matches_the_python_api_on_collapsed_tasks(tmp_path):
    """`hf-taskgroup group --method pvi` keeps a collapsed task alone, as `run` does, reading validation only."""
    from hf_taskgroup.pvi.artifacts import save_task_artifacts

    root = tmp_path / "pvi"
    for task, values in PVI.items():
        data = datasets.DatasetDict({
            "validation": datasets.Dataset.from_dict({"pvi": values.tolist()}),
            "test": datasets.Dataset.from_dict({"pvi": (values + 50.0).tolist()}),  # would split every task
        })
        save_task_artifacts(root / task, data, {"task": task, "collapsed": {"validation": task == "c", "test": False}})
    out = tmp_path / "g.json"
    assert main(["group", "--method", "pvi", "--pvi_dir", str(root), "--output", str(out)]) == 0
    grouping = Grouping.from_json(out)
    assert grouping.groups == group_tasks("pvi", ["a", "b", "c"], pvi=PVI, collapsed=["c"]).groups
    assert grouping.scores["collapsed_tasks"] == ["c"]
    assert json.loads(out.read_text())["provenance"]["config"]["pvi_split"] == "validation"
    assert main(["group", "--method", "pvi", "--pvi_dir", str(root), "--output", str(out),
                 "--no_pvi_keep_collapsed_single"]) == 0
    assert "collapsed_tasks" not in Grouping.from_json(out).scores
