"""Serial vs Ray executor: wall time of ``evaluate_many`` over 8 groups, side by side in one run.

Four real tasks of ``../shared/data`` (small train subsets), MiniLM fully fine-tuned (``finetune="full"``),
64 validation/test rows, one epoch: 8 groups (4 single tasks + 4 pairs), each a training of seconds. The same groups are trained by
(1) the serial executor in this process with 1 torch thread and (2) a local Ray with 2 workers (``num_cpus=2``,
1 CPU and 1 torch thread per training). Ray's start-up (``ray.init`` plus the first task on each worker,
which imports torch/transformers) is timed apart from the search; the results of both are checked equal.

The per-task overhead is measured with trivial calls that carry the same payload as a training (the
evaluator's ``train_fn`` with the suite and tokenizer it captures): ``wall x workers / calls`` on warm workers.

    OMP_NUM_THREADS=1 python benchmarks/ray_executor.py            # 8 groups, 64 train rows per task
    OMP_NUM_THREADS=1 python benchmarks/ray_executor.py --quick    # 32 rows: a quicker check

Writes benchmarks/results/ray_executor[_quick].json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import SharedDataUnavailable, environment, format_table, load_shared_nlp_suite, write_results  # noqa: E402

TASKS = ["glue_sst2", "chemprot", "mqp", "medical_abstracts"]
GROUPS = [[t] for t in TASKS] + [["glue_sst2", "chemprot"], ["mqp", "medical_abstracts"],
                                  ["glue_sst2", "mqp"], ["chemprot", "medical_abstracts"]]


class _Payload:
    """A trivial call that carries (and unpickles on the worker) the same objects as a training."""

    def __init__(self, train_fn: Any) -> None:
        self.train_fn = train_fn

    def __call__(self, item: int) -> int:
        return item


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-eval", type=int, default=64, help="validation/test rows kept per task")
    parser.add_argument("--overhead-calls", type=int, default=40)
    args = parser.parse_args(argv)
    max_train = args.max_train or (32 if args.quick else 64)
    try:
        suite = load_shared_nlp_suite(TASKS, max_train=max_train, seed=0)
    except SharedDataUnavailable as err:
        print(f"SKIPPED: {err}")
        return
    suite = _cap_eval(suite, args.max_eval)
    import ray
    import torch

    from hf_taskgroup.executor import RayExecutor, Resources, SerialExecutor
    from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator
    from hf_taskgroup.training.train import TrainSettings, default_model_path, load_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(default_model_path())
    settings = TrainSettings(finetune="full", num_train_epochs=1, per_device_train_batch_size=16, max_length=64,
                             trunk_hidden_sizes=[], seed=0)

    def evaluator(executor: Any) -> Any:
        return make_suite_evaluator(suite, settings, None, tokenizer=tokenizer, executor=executor)

    # warm the serial process the way Ray's start-up warms its workers (imports, tokenizer, model files)
    evaluator(SerialExecutor())(["glue_sst2"])

    start = time.perf_counter()
    serial_results = evaluator(SerialExecutor()).evaluate_many(GROUPS)
    serial_wall = time.perf_counter() - start

    start = time.perf_counter()
    ray_ex = RayExecutor(init_kwargs={"num_cpus": 2}, resources=Resources(num_cpus=1))
    ray_ex.map(_Payload(None), [0, 1])  # starts Ray and two workers
    ray_ex.map(_warm, [0, 1])  # torch + transformers imported on each worker
    startup = time.perf_counter() - start
    ev = evaluator(ray_ex)
    start = time.perf_counter()
    ray_results = ev.evaluate_many(GROUPS, progress=True)
    ray_wall = time.perf_counter() - start
    per_group = {"+".join(g): ev.training_seconds(g) for g in GROUPS}

    payload = _Payload(ev.train_fn)
    start = time.perf_counter()
    ray_ex.map(payload, list(range(args.overhead_calls)))
    overhead = (time.perf_counter() - start) * 2 / args.overhead_calls
    ray_ex.close()

    identical = serial_results == ray_results
    speedup = serial_wall / ray_wall
    rows = [["serial (1 process, 1 thread)", f"{serial_wall:.1f}", "1.00x", "-"],
            ["ray (2 workers x 1 thread)", f"{ray_wall:.1f}", f"{speedup:.2f}x", f"{startup:.1f}"]]
    print(format_table(["executor", "8 groups (s)", "speed-up", "ray start-up (s)"], rows))
    print(f"per-task overhead (trivial call with the training's payload, warm workers): {overhead * 1000:.0f} ms")
    print(f"mean training time per group (on a Ray worker): {sum(per_group.values()) / len(per_group):.1f} s")
    print(f"results identical to serial: {identical}; load average at the end: {os.getloadavg()}")
    out = {
        "benchmark": "ray_executor", "tasks": TASKS, "groups": GROUPS, "max_train": max_train, "max_eval": args.max_eval,
        "settings": settings.to_dict(), "serial_seconds": serial_wall, "ray_seconds": ray_wall,
        "speedup": speedup, "ray_startup_seconds": startup, "overhead_seconds_per_task": overhead,
        "overhead_calls": args.overhead_calls, "training_seconds_per_group": per_group,
        "identical_results": identical, "load_average": os.getloadavg(), "environment": environment(),
        "ray_version": ray.__version__,
    }
    path = write_results("ray_executor_quick" if args.quick else "ray_executor", out)
    print(f"wrote {path}")


def _cap_eval(suite: Any, max_eval: int) -> Any:
    """The suite with at most ``max_eval`` rows in every split but train (the first rows; labels kept)."""
    from common import entry_kwargs

    from hf_taskgroup.data.tasks import TaskSpec, TaskSuite

    specs = []
    for spec in suite:
        data = {split: ds if split == "train" else ds.select(range(min(max_eval, len(ds))))
                for split, ds in spec.load().items()}
        kwargs = {k: v for k, v in entry_kwargs(spec).items() if k not in ("data_files", "label_names")}
        specs.append(TaskSpec(**kwargs, data=data, label_names=spec.get_label_names()))
    return TaskSuite(specs, name=f"{suite.name}_eval{max_eval}")


def _warm(item: int) -> int:
    import transformers  # noqa: F401

    from hf_taskgroup.training import train  # noqa: F401

    return item


if __name__ == "__main__":
    main()
