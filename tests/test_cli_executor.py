"""The executor flags of ``hf-taskgroup pvi``, ``group`` and ``train`` (hf_taskgroup/commands, docs/ray.md).

Each subcommand takes the fields of :class:`hf_taskgroup.config.ExecutorArguments` and dispatches its independent
trainings through that executor: a recording executor (serial, but saying it is parallel) proves the dispatch
without Ray; a local Ray (2 CPUs, the ``ray_local`` fixture of conftest.py) gives the same PVI values, grouping
and metrics as the serial executor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest
from utils import write_cli_suite

from hf_taskgroup.cli import main
from hf_taskgroup.config import ExecutorArguments
from hf_taskgroup.executor import RayExecutor, SerialExecutor
from hf_taskgroup.grouping.result import Grouping

pytestmark = pytest.mark.filterwarnings("ignore::hf_taskgroup.pvi.scores.PVICollapseWarning")
TASKS = ["cli_a", "cli_b", "cli_c"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_executor")
    suite, model_dir = write_cli_suite(root, "cli-executor")
    return {"suite": suite, "model": model_dir}


def _common(tiny) -> list[str]:
    return ["--suite", str(tiny["suite"]), "--model", str(tiny["model"]), "--max_length", "32",
            "--trunk_hidden_sizes", "8", "--batch_size", "8"]


def pvi_argv(tiny, out: Path, *extra: str) -> list[str]:
    return ["pvi", *_common(tiny), "--output_dir", str(out), "--pvi_num_train_epochs", "1", "--pvi_splits",
            "validation", *extra]


def group_argv(tiny, out: Path, *extra: str) -> list[str]:
    return ["group", *_common(tiny), "--method", "exhaustive", "--num_train_epochs", "1", "--output",
            str(out / "grouping.json"), "--cache_dir", str(out / "cache"), *extra]


def train_argv(tiny, out: Path, *extra: str) -> list[str]:
    return ["train", *_common(tiny), "--output_dir", str(out), "--num_train_epochs", "1", *extra]


class RecordingExecutor(SerialExecutor):
    """Serial, but says it is parallel (so callers hand over all their work at once) and records each dispatch."""

    parallel = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.closed = 0

    def map(self, fn, items, resources=None, **kwargs):
        items = list(items)
        self.calls.append((kwargs.get("desc"), len(items)))
        return super().map(fn, items, resources, **kwargs)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def recording(monkeypatch):
    """Every subcommand's ``config.make_executor()`` returns this recording executor (with the flags it was given)."""
    rec = RecordingExecutor()
    made = []

    def make(self):
        made.append({f: getattr(self, f) for f in ExecutorArguments.__dataclass_fields__})
        return rec

    monkeypatch.setattr(ExecutorArguments, "make_executor", make)
    rec.made = made
    return rec


FLAGS = ["--executor", "ray", "--num_cpus_per_training", "1", "--max_retries", "3"]
RECORDED = {"executor": "ray", "ray_address": None, "num_cpus_per_training": 1.0, "num_gpus_per_training": 0.0,
            "max_retries": 3}


def _executor_settings(recorded: dict) -> dict:
    return {k: recorded[k] for k in RECORDED}


# ------------------------------------------------------------------------------------------- no Ray
def test_pvi_dispatches_one_call_per_task_through_the_executor(tiny, tmp_path, recording):
    out = tmp_path / "pvi"
    assert main(pvi_argv(tiny, out, *FLAGS)) == 0
    assert recording.calls == [("PVI", 3)]  # the three tasks in one dispatch
    assert recording.made == [RECORDED] and recording.closed == 1
    assert _executor_settings(json.loads((out / "config.json").read_text())) == RECORDED
    for task in TASKS:  # the driver wrote every task's artifacts
        assert (out / task / "summary.json").is_file()


def test_group_dispatches_the_evaluator_trainings_through_the_executor(tiny, tmp_path, recording):
    out = tmp_path / "group"
    assert main(group_argv(tiny, out, *FLAGS)) == 0
    assert sum(n for _, n in recording.calls) == 7  # every non-empty subset of 3 tasks trained once
    assert max(n for _, n in recording.calls) == 7  # exhaustive hands all its groups over in one dispatch
    assert recording.made == [RECORDED] and recording.closed == 1
    grouping = Grouping.from_json(out / "grouping.json")
    assert _executor_settings(grouping.provenance["config"]) == RECORDED
    assert len(list((out / "cache" / "groups").glob("*.json"))) == 7  # the driver cached every result


def test_group_without_trainings_says_the_executor_had_nothing_to_do(tmp_path, recording, caplog):
    caplog.set_level(logging.INFO, logger="hf_taskgroup.commands.group")
    assert main(["group", "--method", "all_in_one", "--tasks", "a,b", "--output", str(tmp_path / "g.json"),
                 *FLAGS]) == 0
    assert recording.calls == []
    assert "trains no candidate groups" in caplog.text


def test_train_dispatches_each_model_through_the_executor_and_writes_the_models(tiny, tmp_path, recording):
    out = tmp_path / "train"
    assert main(train_argv(tiny, out, "--mode", "both", "--save_model", *FLAGS)) == 0
    assert recording.calls == [("Training", 4)]  # the multi-task model and the three single-task ones
    assert recording.made == [RECORDED] and recording.closed == 1
    assert _executor_settings(json.loads((out / "config.json").read_text())) == RECORDED
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["runs"]["mtl"]["tasks"]) == TASKS and sorted(metrics["runs"]["stl"]["tasks"]) == TASKS
    # the models came back from the trainings as files and were written by the driver
    for folder in [out / "mtl", *(out / "stl" / t for t in TASKS)]:
        assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors")), folder
        assert (folder / "tokenizer_config.json").is_file()


def test_train_with_one_model_has_nothing_to_parallelise_and_says_so(tiny, tmp_path, recording, caplog):
    caplog.set_level(logging.INFO, logger="hf_taskgroup.training.train")
    out = tmp_path / "train"
    assert main(train_argv(tiny, out, "--mode", "mtl", *FLAGS)) == 0
    assert recording.calls == [] and recording.made == []  # trained in this process, no executor made
    lines = [r.getMessage() for r in caplog.records if "nothing runs side by side" in r.getMessage()]
    assert len(lines) == 1 and "--mode mtl trains one model" in lines[0]
    assert _executor_settings(json.loads((out / "config.json").read_text())) == RECORDED  # still recorded
    assert sorted(json.loads((out / "metrics.json").read_text())["runs"]["mtl"]["tasks"]) == TASKS


def test_ray_is_refused_under_a_multi_process_launch(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for argv in (train_argv(tiny, tmp_path / "t", "--executor", "ray"), pvi_argv(tiny, tmp_path / "p", "--executor", "ray"),
                 group_argv(tiny, tmp_path / "g", "--executor", "ray")):
        assert main(argv) == 2, argv[0]
        assert "use --executor serial" in capsys.readouterr().err
    assert not (tmp_path / "t" / "metrics.json").exists() and not (tmp_path / "p" / "cli_a").exists()


# ------------------------------------------------------------------------------------------- Ray
@pytest.fixture
def ray_dispatches(monkeypatch) -> list[tuple[str, int]]:
    """``(desc, number of items)`` of every :meth:`RayExecutor.map` call (the real one runs)."""
    calls: list[tuple[str, int]] = []
    real = RayExecutor.map

    def spy(self, fn, items, *args, **kwargs):
        items = list(items)
        calls.append((kwargs.get("desc"), len(items)))
        return real(self, fn, items, *args, **kwargs)

    monkeypatch.setattr(RayExecutor, "map", spy)
    return calls


def _pvi_values(out: Path) -> dict:
    values = {}
    for task in TASKS:
        summary = json.loads((out / task / "summary.json").read_text())
        data = datasets.load_from_disk(str(out / task / "dataset"))
        values[task] = (summary["v_information"], list(data["validation"]["pvi"]))
    return values


@pytest.mark.slow
def test_pvi_with_ray_equals_serial(tiny, tmp_path, ray_local, ray_dispatches):
    """--pvi_null trained: two trainings per task, each task one Ray task; bit-identical PVI (1 thread each side)."""
    assert main(pvi_argv(tiny, tmp_path / "serial")) == 0
    assert main(pvi_argv(tiny, tmp_path / "ray", "--executor", "ray")) == 0
    assert ray_dispatches == [("PVI", 3)]
    serial, ray = _pvi_values(tmp_path / "serial"), _pvi_values(tmp_path / "ray")
    assert ray == serial
    assert json.loads((tmp_path / "ray" / "config.json").read_text())["executor"] == "ray"
    assert ray_local.is_initialized()  # the command joined the running Ray and left it running


@pytest.mark.slow
def test_group_with_ray_equals_serial(tiny, tmp_path, ray_local, ray_dispatches):
    assert main(group_argv(tiny, tmp_path / "serial")) == 0
    assert main(group_argv(tiny, tmp_path / "ray", "--executor", "ray")) == 0
    assert sum(n for _, n in ray_dispatches) == 7
    serial = Grouping.from_json(tmp_path / "serial" / "grouping.json")
    ray = Grouping.from_json(tmp_path / "ray" / "grouping.json")
    assert ray.groups == serial.groups and ray.objective == serial.objective
    assert ray.scores == serial.scores  # every subset's losses, bit for bit
    assert ray.cost.trainings == serial.cost.trainings == 7


@pytest.mark.slow
def test_train_with_ray_equals_serial(tiny, tmp_path, ray_local, ray_dispatches):
    assert main(train_argv(tiny, tmp_path / "serial", "--mode", "both", "--save_model")) == 0
    assert main(train_argv(tiny, tmp_path / "ray", "--mode", "both", "--save_model", "--executor", "ray")) == 0
    assert ray_dispatches == [("Training", 4)]
    serial = json.loads((tmp_path / "serial" / "metrics.json").read_text())["runs"]
    ray = json.loads((tmp_path / "ray" / "metrics.json").read_text())["runs"]
    assert ray["mtl"]["tasks"] == serial["mtl"]["tasks"] and ray["stl"]["tasks"] == serial["stl"]["tasks"]
    for folder in [Path("mtl"), *(Path("stl") / t for t in TASKS)]:  # the same weights, written by the driver
        a, b = tmp_path / "ray" / folder, tmp_path / "serial" / folder
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        for weights in b.glob("*.safetensors"):
            assert np.array_equal(np.frombuffer((a / weights.name).read_bytes(), np.uint8),
                                  np.frombuffer(weights.read_bytes(), np.uint8))
