"""hf_taskgroup.executor: the serial / Ray seam for independent trainings (evaluator, pipeline, PVI).

The Ray tests start ONE local Ray (2 CPUs, no dashboard, no usage report, nothing from the network) in this
process for the module, and compare every result with the serial executor's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from utils import (
    classification_dataset,
    dataset_dict,
    regression_rows,
    tiny_bert_config,
    tiny_suite,
    tiny_tokenizer,
)

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.executor import ExecutorOptions, RayExecutor, Resources, SerialExecutor, make_executor
from hf_taskgroup.grouping import group_tasks
from hf_taskgroup.grouping.evaluators.base import CachedEvaluator
from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator
from hf_taskgroup.pipeline import Pipeline, PipelineConfig
from hf_taskgroup.training.train import TrainSettings

pytestmark = pytest.mark.filterwarnings("ignore::hf_taskgroup.pvi.scores.PVICollapseWarning")
SUITE = TaskSuite(
    [
        TaskSpec(name="ex_a", type="classification", data=classification_dataset(n_train=16, n_eval=8, seed=0)),
        TaskSpec(name="ex_b", type="classification", data=classification_dataset(n_train=16, n_eval=8, seed=3,
                                                                                  flip=True)),
        TaskSpec(name="ex_c", type="regression", text_columns=["text_a", "text_b"],
                 data=dataset_dict(regression_rows, n_train=16, n_eval=8)),
    ],
    name="executor-test",
)
TOKENIZER = tiny_tokenizer()
SETTINGS = TrainSettings(finetune="full", pooling="mean", num_train_epochs=1, per_device_train_batch_size=8, seed=0,
                         max_length=32)
GROUPS = [["ex_a"], ["ex_b"], ["ex_c"], ["ex_a", "ex_b"], ["ex_a", "ex_c"], ["ex_b", "ex_c"]]


def factory(infos, seed=0):
    import torch

    from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel

    torch.manual_seed(seed)
    config = MultiTaskConfig(encoder=tiny_bert_config(), tasks=dict(infos), pooling="mean", trunk_hidden_sizes=[8],
                             classifier_dropout=0.0, trunk_dropout=0.0)
    return MultiTaskModel(config)


def evaluator(cache_dir, executor=None):
    return make_suite_evaluator(SUITE, SETTINGS, cache_dir, tokenizer=TOKENIZER, model_factory=factory,
                                executor=executor)


class RecordingExecutor(SerialExecutor):
    """Serial, but says it is parallel and records every map call (desc, number of items)."""

    parallel = True

    def __init__(self):
        self.calls = []

    def map(self, fn, items, resources=None, **kwargs):
        items = list(items)
        self.calls.append((kwargs.get("desc"), len(items)))
        return super().map(fn, items, resources, **kwargs)


# ------------------------------------------------------------------------------------------- no Ray
def test_serial_run_never_imports_ray(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import hf_taskgroup, hf_taskgroup.pipeline, hf_taskgroup.executor
        from hf_taskgroup.grouping import group_tasks
        from hf_taskgroup.grouping.evaluators.base import CachedEvaluator
        from hf_taskgroup.pipeline import PipelineConfig
        ev = CachedEvaluator(lambda ts: {{t: {{"loss": 1.0 / len(ts)}} for t in ts}}, {str(tmp_path)!r}, {{}})
        g = group_tasks("exhaustive", ["a", "b", "c"], evaluator=ev)
        ev.evaluate_many([["a"], ["b", "c"]])
        PipelineConfig(executor="serial").make_executor().map(abs, [-1])
        print(g.groups, ev.trainings, "ray" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("7 False"), out.stdout + out.stderr


def test_executor_options_are_checked_before_any_work():
    with pytest.raises(ValueError, match="executor must be one of"):
        PipelineConfig(executor="dask")
    with pytest.raises(ValueError, match="needs --executor ray"):
        PipelineConfig(ray_address="auto")
    with pytest.raises(ValueError, match="max_retries"):
        ExecutorOptions(executor="ray", max_retries=-1)
    with pytest.raises(ValueError, match="both 0"):
        ExecutorOptions(executor="ray", num_cpus_per_training=0)
    ex = PipelineConfig(executor="ray", ray_address="auto", num_gpus_per_training=1, max_retries=5).make_executor()
    assert isinstance(ex, RayExecutor)
    assert (ex.address, ex.resources, ex.max_retries) == ("auto", Resources(1.0, 1.0), 5)
    assert isinstance(make_executor(None), SerialExecutor) and make_executor(ex) is ex
    with pytest.raises(TypeError, match="Executor"):
        make_executor(42)


def test_run_command_flags_come_from_the_executor_fields():
    from hf_taskgroup.config import make_parser, parse_config

    config = parse_config(make_parser(PipelineConfig), ["--executor", "ray", "--ray_address", "auto",
                                                        "--num_gpus_per_training", "0.5", "--max_retries", "4"])
    assert (config.executor, config.ray_address, config.num_gpus_per_training, config.max_retries) == ("ray", "auto", 0.5, 4)
    assert config.num_cpus_per_training == 1.0
    ex = Pipeline(config, suite=tiny_suite(("classification",)), tokenizer=tiny_tokenizer(), progress=False).executor
    assert isinstance(ex, RayExecutor) and ex.address == "auto" and ex.resources == Resources(1.0, 0.5)


def test_serial_executor_returns_in_order_and_reports_each_result():
    seen = []
    assert SerialExecutor().map(lambda x: x * 10, [3, 1, 2], on_result=lambda i, r: seen.append((i, r))) == [30, 10, 20]
    assert seen == [(0, 30), (1, 10), (2, 20)]


def test_each_result_is_cached_as_it_arrives_so_a_killed_run_resumes(tmp_path):
    calls = []

    def train_fn(tasks):
        calls.append(list(tasks))
        if tasks == ["c"] and len(calls) == 3:
            raise KeyboardInterrupt  # the driver is stopped during the third training
        return {t: {"loss": float(len(t))} for t in tasks}

    groups = [["a"], ["b"], ["c"], ["d"]]
    with pytest.raises(KeyboardInterrupt):
        CachedEvaluator(train_fn, tmp_path, {}, executor=RecordingExecutor()).evaluate_many(groups)
    assert len(list(tmp_path.glob("*.json"))) == 2
    again = CachedEvaluator(train_fn, tmp_path, {}, executor=RecordingExecutor())
    assert [r[g[0]]["loss"] for r, g in zip(again.evaluate_many(groups), groups)] == [1.0] * 4
    assert again.trainings == 2 and calls[3:] == [["c"], ["d"]]


def test_searches_hand_all_their_groups_to_a_parallel_executor(tmp_path):
    """exhaustive / surrogate / affinity_search prefetch their groups in one dispatch when the executor is
    parallel, and get the same grouping as the serial executor."""
    def train_fn(tasks):
        return {t: {"loss": 1.0 - 0.1 * len(tasks) * (t in "ab")} for t in tasks}

    for method, kw in [("exhaustive", {}), ("surrogate", {"num_subsets": 6, "seed": 0}),
                       ("affinity_search", {"seed": 0, "budget": 14})]:
        rec = RecordingExecutor()
        parallel = CachedEvaluator(train_fn, None, {}, executor=rec)
        serial = CachedEvaluator(train_fn, None, {})
        tasks = ["a", "b", "c", "d"]
        got, want = group_tasks(method, tasks, evaluator=parallel, **kw), group_tasks(method, tasks, evaluator=serial, **kw)
        assert got.groups == want.groups, method
        assert parallel.trainings == serial.trainings
        assert rec.calls and max(n for _, n in rec.calls) > 1, (method, rec.calls)  # many groups in one dispatch
        assert sum(n for _, n in rec.calls) == parallel.trainings
    assert rec.calls[0][1] >= 4 and len(rec.calls) < parallel.trainings


PIPELINE_SUITE = tiny_suite(("classification", "regression"))


def run_pipeline_with(out, inject=None, **kw):
    config = PipelineConfig(output_dir=str(out), methods=["exhaustive", "all_in_one"], num_train_epochs=1,
                            batch_size=8, trunk_hidden_sizes=[8], max_length=32, pvi_num_train_epochs=1,
                            **{"seeds": [0, 1], "recommend_seeds": 2, **kw})  # the recommendation reuses the run's 2 seeds
    pipe = Pipeline(config, suite=PIPELINE_SUITE, tokenizer=tiny_tokenizer(), model_factory=factory, progress=False)
    if inject is not None:
        pipe.executor = inject
    return pipe, pipe.run()


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """The pipeline through a recording (serial) executor: (output folder, executor, result)."""
    out = tmp_path_factory.mktemp("recorded") / "run"
    rec = RecordingExecutor()
    _, result = run_pipeline_with(out, rec)
    return out, rec, result


def test_pipeline_and_pvi_dispatch_through_the_executor(recorded_run):
    """stage_pvi (one call per task), the evaluator (exhaustive's groups) and stage_train (groups x seeds) all
    go through the pipeline's executor; the driver writes the artifacts."""
    out, rec, _ = recorded_run
    descs = {d: n for d, n in rec.calls}
    assert descs["PVI"] == 2
    assert any(d.startswith("training groups") and n == 3 for d, n in rec.calls)  # 2 singles + the pair
    assert descs["Training groups"] == 3 * 2  # {sent}, {sim}, {sent, sim} x 2 seeds
    assert len(list((out / "runs").rglob("seed*.json"))) == 6
    published = [p for p in (out / "runs").glob("*/model") if (p / "config.json").exists()]
    assert published, "the published group's model was written by the driver"


def test_recommendation_dispatches_its_missing_seeds_through_the_executor(tmp_path):
    """With one run seed and two recommendation seeds, the recommendation's extra trainings (seed 1 of every
    single task and candidate group) go to the executor together, and a second run trains nothing."""
    rec = RecordingExecutor()
    pipe, result = run_pipeline_with(tmp_path / "run", rec, seeds=[0], recommend_seeds=2)
    calls = [n for d, n in rec.calls if d == "Recommendation"]
    assert calls[0] == 2  # both single tasks' seed 1, in one dispatch
    assert result.recommendation.seeds == [0, 1]
    # every seed-1 training of the recommendation went through the executor, none through train_cached alone
    assert sum(calls) == len(list((tmp_path / "run" / "runs").rglob("seed1.json")))
    again = RecordingExecutor()
    run_pipeline_with(tmp_path / "run", again, seeds=[0], recommend_seeds=2)
    assert not [(d, n) for d, n in again.calls if d in ("Recommendation", "Training groups") and n]


# ------------------------------------------------------------------------------------------- Ray
def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x == y  # bit-identical floats: each training seeds itself, one torch thread on both sides


@pytest.mark.slow
def test_ray_evaluate_many_and_search_equal_serial(tmp_path, ray_local):
    serial = evaluator(tmp_path / "serial")
    want = serial.evaluate_many(GROUPS)
    ray_ex = RayExecutor(resources=Resources(num_cpus=1))
    parallel = evaluator(tmp_path / "ray", executor=ray_ex)
    got = parallel.evaluate_many(GROUPS, progress=True)
    _same(got, want)
    assert parallel.trainings == len(GROUPS)
    # the driver wrote every cache entry; a new evaluator on the folder resumes without training
    assert len(list((tmp_path / "ray").glob("*.json"))) == len(GROUPS)
    again = evaluator(tmp_path / "ray", executor=ray_ex)
    _same(again.evaluate_many(GROUPS), want)
    assert again.trainings == 0
    # a whole search through Ray: same groups and scores as serial
    g_ray = group_tasks("exhaustive", SUITE.task_names, evaluator=evaluator(tmp_path / "ray2", executor=ray_ex))
    g_ser = group_tasks("exhaustive", SUITE.task_names, evaluator=evaluator(tmp_path / "serial"))
    assert g_ray.groups == g_ser.groups and g_ray.objective == g_ser.objective
    assert g_ray.scores["group_losses"] == g_ser.scores["group_losses"]
    ray_ex.close()
    assert ray_local.is_initialized()  # an executor never shuts down a Ray it did not start


class DieOnce:
    """A train_fn that kills its worker process on the first attempt of one group (marker file), then trains."""

    def __init__(self, train_fn, marker, victim):
        self.train_fn, self.marker, self.victim = train_fn, str(marker), list(victim)

    def __call__(self, tasks):
        if list(tasks) == self.victim and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-training, as if killed
        return self.train_fn(tasks)


@pytest.mark.slow
def test_a_worker_that_dies_mid_training_is_retried_with_identical_results(tmp_path, ray_local):
    want = evaluator(tmp_path / "serial").evaluate_many(GROUPS[:4])
    marker = tmp_path / "died.pid"
    ev = evaluator(tmp_path / "ray", executor=RayExecutor(max_retries=2))
    ev.train_fn = DieOnce(ev.train_fn, marker, ["ex_a", "ex_b"])
    _same(ev.evaluate_many(GROUPS[:4]), want)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # it really died, in a worker
    # without retries the death is reported, naming the item
    marker.unlink()
    ev = evaluator(tmp_path / "ray0", executor=RayExecutor(max_retries=0))
    ev.train_fn = DieOnce(ev.train_fn, marker, ["ex_a", "ex_b"])
    with pytest.raises(RuntimeError, match="worker died"):
        ev.evaluate_many(GROUPS[:4])
    # an error raised by the training itself is not retried: it propagates with its type and message
    with pytest.raises(ValueError, match="bad group 3"):
        RayExecutor(max_retries=2).map(fail_on_three, [1, 2, 3])


def fail_on_three(item):
    if item == 3:
        raise ValueError(f"bad group {item}")
    return item


@pytest.mark.slow
def test_ray_pipeline_pvi_and_seeds_equal_serial(tmp_path, ray_local, recorded_run):
    serial_out, _, serial = recorded_run
    pipe, ray_run = run_pipeline_with(tmp_path / "ray", executor="ray")
    assert isinstance(pipe.executor, RayExecutor)
    assert {m: g.groups for m, g in ray_run.groupings.items()} == {m: g.groups for m, g in serial.groupings.items()}

    def scores(run):  # everything but the wall time in the cost
        out = {m: e.to_dict() for m, e in run.evaluations.items()}
        for e in out.values():
            e["cost"].pop("seconds")
        return out

    assert scores(ray_run) == scores(serial)
    for task in PIPELINE_SUITE.task_names:  # PVI with the trained null: same V-information
        a = json.loads((tmp_path / "ray" / "pvi" / task / "summary.json").read_text())
        b = json.loads((serial_out / "pvi" / task / "summary.json").read_text())
        assert a["v_information"] == b["v_information"]
    seed_files = list(serial_out.glob("runs/*/seed*.json"))
    assert len(seed_files) == 6
    for seed_file in seed_files:  # every group x seed: the same per-task scores
        twin = tmp_path / "ray" / seed_file.relative_to(serial_out)
        assert json.loads(twin.read_text())["tasks"] == json.loads(seed_file.read_text())["tasks"]
    model = next((tmp_path / "ray" / "runs").glob("*/model"))
    twin = serial_out / model.relative_to(tmp_path / "ray")
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in twin.iterdir())
    for weights in model.glob("*.safetensors"):  # encoder and heads shards (the encoder is stored once per run)
        assert np.array_equal(np.frombuffer(weights.read_bytes(), np.uint8),
                              np.frombuffer((twin / weights.name).read_bytes(), np.uint8))
