"""Grouping methods on the tabular multi-task benchmarks of arXiv 2310.16241 (Landmine, Parkinson's).

For every method of the registry that runs on tabular data, find a partition of the tasks, then report
the total validation loss (sum over tasks of each task's loss in its group's model), the total test loss,
the trainings the method needed to *find* the grouping (distinct groups it evaluated, counted as if the
cache were cold), their training time (from the cache entries), and the method's own wall time in this
run. All methods share one on-disk cache per dataset (benchmarks/results/cache/), so a group is trained
once per run and re-runs are cheap. The random best-of-R baseline and the pairwise gains train their
uncached groups together (``CachedEvaluator.evaluate_many``: EVALUATE_CHUNK groups per batched training).

    python benchmarks/tabular_grouping.py --quick          # first 8 tasks, small budgets: a few minutes
    python benchmarks/tabular_grouping.py                   # all tasks (29 / 42): see --help for budgets

Writes benchmarks/results/tabular_grouping[_quick].json and the quick/full results section of
docs/tabular_grouping.md.
Data: ../shared/data/tabular/{landmine,parkinsons}.csv (skipped with a message when absent).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_taskgroup.grouping import available_methods, group_tasks  # noqa: E402
from hf_taskgroup.grouping.evaluators.base import CachedEvaluator, ColdCostEvaluator, group_gain  # noqa: E402
from hf_taskgroup.grouping.evaluators.tabular import (  # noqa: E402
    DEFAULT_TRAIN_KWARGS,
    TabularSuite,
    make_tabular_evaluator,
)
from hf_taskgroup.grouping.methods.baselines import sample_partition  # noqa: E402
from hf_taskgroup.utils import atomic_write_json, atomic_write_text  # noqa: E402

DATASETS: dict[str, dict[str, Any]] = {
    "landmine": {"file": "landmine.csv", "task_type": "classification", "drop_columns": (),
                 "train": {"epochs": 30}},
    "parkinsons": {"file": "parkinsons.csv", "task_type": "regression", "drop_columns": ("motor_UPDRS",),
                   "train": {"epochs": 100}},
}
#: Groups per batched training in ``CachedEvaluator.evaluate_many`` (a few hundred: the time per group
#: stops falling there; see benchmarks/tabular_batched_training.py).
EVALUATE_CHUNK = 256


def doc_markers(quick: bool) -> tuple[str, str]:
    mode = "quick" if quick else "full"
    return f"<!-- results-{mode}:start -->", f"<!-- results-{mode}:end -->"


def evaluate_partition(ev: CachedEvaluator, groups: list[list[str]], assignment: dict[str, int] | None = None
                       ) -> tuple[float, float]:
    """Total validation and test loss of a grouping (with overlap: each task from its assigned group)."""
    val = test = 0.0
    for gi, group in enumerate(groups):
        result = ev(group)
        for task in group:
            if assignment is not None and assignment.get(task) != gi:
                continue
            val += result[task]["loss"]
            test += result[task].get("test_loss", float("nan"))
    return val, test


def pair_gain_matrix(rec: ColdCostEvaluator, tasks: list[str]) -> tuple[np.ndarray, dict[str, float]]:
    pairs = list(combinations(range(len(tasks)), 2))
    results = rec.evaluate_many([[t] for t in tasks] + [[tasks[i], tasks[j]] for i, j in pairs],
                                chunk_size=EVALUATE_CHUNK, progress=True)
    stl = {t: result[t]["loss"] for t, result in zip(tasks, results)}
    gains = np.zeros((len(tasks), len(tasks)))
    for (i, j), result in zip(pairs, results[len(tasks):]):
        gains[i, j] = gains[j, i] = group_gain(stl, result)
    return gains, stl


def run_dataset(name: str, args: argparse.Namespace, data_dir: Path, cache_root: Path) -> list[dict[str, Any]]:
    spec = DATASETS[name]
    suite = TabularSuite.from_csv(data_dir / spec["file"], task_type=spec["task_type"],
                                  drop_columns=spec["drop_columns"], seed=args.seed)
    if args.num_tasks:
        suite = suite.subset(suite.tasks[: args.num_tasks])
    tasks = suite.tasks
    n = len(tasks)
    train_kwargs = dict(spec["train"])
    ev = make_tabular_evaluator(suite, cache_root / name, seed=args.seed, **train_kwargs)
    print(f"\n== {name}: {n} tasks, {suite.num_features} features, training {train_kwargs} "
          f"(cache: {cache_root / name})", flush=True)
    rows: list[dict[str, Any]] = []

    def record(method: str, groups: list[list[str]], rec: ColdCostEvaluator | None, seconds: float, note: str = "",
               assignment: dict[str, int] | None = None) -> None:
        val, test = evaluate_partition(ev, groups, assignment)
        row = {"dataset": name, "method": method, "num_groups": len(groups), "val_loss": val, "test_loss": test,
               "trainings": rec.cold_trainings if rec else 0, "train_seconds": rec.cold_seconds() if rec else 0.0,
               "method_seconds": seconds, "groups": groups, "note": note}
        rows.append(row)
        print(f"  {method:<22} groups={len(groups):>3} val={val:9.4f} test={test:9.4f} "
              f"trainings={row['trainings']:>5} train_s={row['train_seconds']:8.1f} method_s={seconds:7.1f} {note}",
              flush=True)

    methods = available_methods()
    for method in ("single_task", "all_in_one"):
        start = time.perf_counter()
        g = group_tasks(method, tasks, seed=args.seed)
        record(method, g.groups, None, time.perf_counter() - start)

    # random partitions, best of R by validation loss: draw all R, train their distinct groups together
    rec = ColdCostEvaluator(ev)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    partitions = [[[tasks[i] for i in b] for b in sample_partition(n, rng)] for _ in range(args.random_partitions)]
    results = iter(rec.evaluate_many([g for partition in partitions for g in partition],
                                        chunk_size=EVALUATE_CHUNK, progress=True))
    best: tuple[float, list[list[str]]] | None = None
    for partition in partitions:
        total = sum(result[t]["loss"] for g, result in zip(partition, results) for t in g)  # one result per group
        if best is None or total < best[0]:
            best = (total, partition)
    assert best is not None
    record(f"random_best_of_{args.random_partitions}", best[1], rec, time.perf_counter() - start)

    # pairwise gains from trained pairs (B.1), shared by the affinity-based methods
    pair_rec = ColdCostEvaluator(ev)
    start = time.perf_counter()
    gains, stl = pair_gain_matrix(pair_rec, tasks)
    pair_seconds = time.perf_counter() - start
    off = ~np.eye(n, dtype=bool)
    print(f"  pairwise gains: mean {gains[off].mean():+.4f}, positive {np.mean(gains[off] > 0):.0%} of pairs",
          flush=True)
    threshold = float(gains[off].max())  # distance max(A) - A <= max(A)  <=>  merge while average gain >= 0
    affinity_runs: list[tuple[str, str, dict[str, Any]]] = [
        ("clustering", "clustering(pair gains)", {"distance_threshold": threshold}),
        ("transfer_gain", "transfer_gain(pair gains)", {"time_limit": args.milp_time_limit}),
    ]
    if n <= args.tag_max_tasks:
        affinity_runs.append(("tag", "tag(pair gains)", {"time_limit": args.milp_time_limit}))
    for method, label, kwargs in affinity_runs:
        if method not in methods:
            continue
        start = time.perf_counter()
        g = group_tasks(method, tasks, affinity=gains, seed=args.seed, **kwargs)
        assignment = g.scores.get("assignment") if g.overlap else None
        note = "overlap" if g.overlap else ""
        record(label, g.groups, pair_rec, pair_seconds + time.perf_counter() - start, note, assignment)

    if "exhaustive" in methods and n <= args.exhaustive_max_tasks:
        rec = ColdCostEvaluator(ev)
        start = time.perf_counter()
        g = group_tasks("exhaustive", tasks, evaluator=rec, max_tasks=args.exhaustive_max_tasks)
        record("exhaustive", g.groups, rec, time.perf_counter() - start, "optimum (validation)")

    if "affinity_search" in methods:
        rec = ColdCostEvaluator(ev)
        budget = n + n * (n - 1) // 2 + args.search_budget
        start = time.perf_counter()
        g = group_tasks(
            "affinity_search", tasks, evaluator=rec, budget=budget, initial_partitions=args.initial_partitions,
            task_sizes=suite.task_sizes(), task_target_variance=suite.target_variance(),
            task_target_mean=suite.target_mean(), predictor_epochs=args.predictor_epochs, seed=args.seed,
            state_dir=cache_root / name / "search_state",
        )
        note = (f"budget {budget} = STL+pairs+{args.search_budget}; {g.scores['candidates_evaluated']} candidates "
                f"evaluated in {g.scores['iterations']} iterations; {g.scores['stop_reason']}")
        record("affinity_search", g.groups, rec, time.perf_counter() - start, note)

    if "surrogate" in methods:
        rec = ColdCostEvaluator(ev)
        start = time.perf_counter()
        g = group_tasks("surrogate", tasks, evaluator=rec, num_subsets=args.surrogate_subsets, seed=args.seed,
                        grouping="transfer_gain", grouping_kwargs={"time_limit": args.milp_time_limit})
        r2 = [v for v in g.scores["r2"].values() if v is not None]
        note = f"{g.scores['subsets_trained']} subsets; median surrogate R2 {np.median(r2):.2f}" if r2 else ""
        record("surrogate", g.groups, rec, time.perf_counter() - start, note)

    for row in rows:
        row["stl_val_loss"] = float(sum(stl.values()))
        row["settings"] = {"tasks": n, "train": {**DEFAULT_TRAIN_KWARGS, **train_kwargs}, "seed": args.seed,
                           "split": suite.settings}
    return rows


def markdown(results: dict[str, list[dict[str, Any]]], meta: dict[str, Any]) -> str:
    lines = [f"Run: `{meta['command']}` on {meta['created_at']} ({meta['platform']}, torch threads 1); "
             f"total wall time {meta['seconds']:.0f} s.", ""]
    for name, rows in results.items():
        if not rows:
            continue
        s = rows[0]["settings"]
        lines += [f"### {name} ({s['tasks']} tasks)", "",
                  f"Trainer: {json.dumps({k: v for k, v in s['train'].items() if k != 'num_threads'})}; "
                  f"seed {s['seed']}; splits train/val/test = "
                  f"{1 - s['split']['val_fraction'] - s['split']['test_fraction']:.1f}/"
                  f"{s['split']['val_fraction']}/{s['split']['test_fraction']} per task.", "",
                  "| method | groups | val loss | vs STL | test loss | trainings | train s | method s | note |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        stl = rows[0]["stl_val_loss"]
        for r in rows:
            lines.append(f"| {r['method']} | {r['num_groups']} | {r['val_loss']:.4f} | "
                         f"{100 * (r['val_loss'] - stl) / stl:+.1f}% | {r['test_loss']:.4f} | {r['trainings']} | "
                         f"{r['train_seconds']:.0f} | {r['method_seconds']:.1f} | {r['note']} |")
        lines.append("")
    return "\n".join(lines)


def write_doc(doc: Path, table: str, quick: bool) -> None:
    """Replace the quick or full results section of ``doc`` (between its markers), keeping the rest."""
    start, end = doc_markers(quick)
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Tabular grouping benchmark\n"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(doc, f"{head}{start}\n{table}\n{end}{tail}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="first 8 tasks, 50 random partitions, small budgets")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "tabular")
    parser.add_argument("--num-tasks", type=int, default=None, help="use only the first N tasks")
    parser.add_argument("--random-partitions", type=int, default=None, help="R of random best-of-R (1000 in the paper)")
    parser.add_argument("--search-budget", type=int, default=None, help="affinity_search trainings beyond STL+pairs")
    parser.add_argument("--initial-partitions", type=int, default=None)
    parser.add_argument("--predictor-epochs", type=int, default=100)
    parser.add_argument("--surrogate-subsets", type=int, default=None)
    parser.add_argument("--exhaustive-max-tasks", type=int, default=8)
    parser.add_argument("--tag-max-tasks", type=int, default=12)
    parser.add_argument("--milp-time-limit", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "tabular_grouping.md")
    args = parser.parse_args(argv)
    quick_defaults = {"num_tasks": 8, "random_partitions": 50, "search_budget": 40, "initial_partitions": 5,
                      "surrogate_subsets": 40}
    full_defaults = {"num_tasks": None, "random_partitions": 1000, "search_budget": 300, "initial_partitions": 10,
                     "surrogate_subsets": None}
    for key, value in (quick_defaults if args.quick else full_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.data_dir.is_dir():
        print(f"data folder {args.data_dir} is absent; nothing to run")
        return
    start = time.perf_counter()
    cache_root = args.results_dir / "cache"
    results = {name: run_dataset(name, args, args.data_dir, cache_root) for name in args.datasets}
    suffix = "_quick" if args.quick else ""
    meta = {"command": "python benchmarks/tabular_grouping.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "platform": f"{platform.system()} {platform.machine()}, python {platform.python_version()}",
            "seconds": time.perf_counter() - start, "args": {k: str(v) for k, v in vars(args).items()}}
    atomic_write_json(args.results_dir / f"tabular_grouping{suffix}.json", {"meta": meta, "results": results})
    table = markdown(results, meta)
    print("\n" + table)
    if args.doc:
        write_doc(args.doc, table, args.quick)


if __name__ == "__main__":
    main()
