"""Evidence study 1: every grouping method against the exhaustive oracle on 6 real NLP tasks.

Trains every one of the 2^6 - 1 = 63 task subsets as a group (MiniLM, ``frozen`` mode with a shared
trunk, 3 seeds) with the library's own evaluator (:func:`hf_taskgroup.grouping.make_suite_evaluator`,
i.e. ``train_group``), scores all 203 partitions of the 6 tasks from that table, and places each method's
partition among them. The methods run through the library's own pipeline (:class:`hf_taskgroup.Pipeline`:
PVI stage, then the grouping stage), whose evaluator cache is shared with the oracle, so no group is trained
twice and the training-based methods are charged for the trainings they ran on a cold cache.

Score of a partition: the mean over the 6 tasks of each task's primary **test** metric (accuracy,
Pearson r, entity F1), averaged over seeds, in the group the partition puts it in. A method's
"fraction of the oracle gain" is ``(score - STL) / (oracle - STL)``; its rank is among all 203
partitions (1 = best). Grouping never sees the test split (PVI uses validation, the evaluator-based
methods use validation losses).

    python benchmarks/evidence_oracle.py --quick   # 4 tasks, 200 train rows, 1 seed: a few minutes
    python benchmarks/evidence_oracle.py           # 6 tasks, 1000 train rows, 3 seeds
    python benchmarks/evidence_oracle.py --executor ray [--ray_address auto]   # trainings on Ray (docs/ray.md)

Writes benchmarks/results/evidence_oracle[_quick].json and the figures under docs/figures/.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results  # noqa: E402
from evidence_common import (  # noqa: E402
    add_executor_arguments,
    all_partitions,
    grouping_record,
    metric_objective_groupings,
    open_study,
    run_grouping_stages,
    save_oracle_figures,
    study_config,
)

from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator  # noqa: E402
from hf_taskgroup.pipeline import Pipeline  # noqa: E402
from hf_taskgroup.training.metrics import primary_metric  # noqa: E402

TASKS = ["glue_stsb", "glue_sst2", "chemprot", "ner_NCBI-disease", "mqp", "medical_abstracts"]
QUICK_TASKS = ["glue_sst2", "chemprot", "mqp", "medical_abstracts"]
METHODS = ["pvi", "transfer_gain", "tag", "affinity_search", "task_embedding", "surrogate", "clustering",
           "all_in_one", "random", "exhaustive"]
#: the evaluator-based methods again, minimising 1 - each task's primary validation metric instead of the
#: summed validation loss (``evaluator_objective="metric"``), on the same evaluator cache
METRIC_METHODS = ["affinity_search", "surrogate", "exhaustive"]


def subsets(tasks: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(sorted(c)) for r in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, r)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--num-groups", type=int, default=2,
                        help="groups for the methods that take a number (tag: at most; transfer_gain, random: exactly)")
    parser.add_argument("--output-dir", type=Path, default=None)
    add_executor_arguments(parser)
    args = parser.parse_args(argv)
    tasks = QUICK_TASKS if args.quick else TASKS
    max_train = args.max_train or (200 if args.quick else 1000)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    study = open_study("evidence_oracle", args.quick, tasks, max_train, args.output_dir)
    if study is None:
        return
    suite, name, out = study
    start = time.perf_counter()
    config = study_config(out / "pipeline", METHODS, seeds, args.epochs, num_groups=args.num_groups,
                          num_tasks=len(tasks))
    config = dataclasses.replace(config, executor=args.executor, ray_address=args.ray_address)
    pipe = Pipeline(config, suite=suite)
    # 1) the methods, through the pipeline (PVI stage, grouping stage); the evaluator cache starts cold
    pvi, groupings = run_grouping_stages(pipe)
    for method, grouping in metric_objective_groupings(pipe, METRIC_METHODS, num_tasks=len(tasks)).items():
        groupings[f"{method} (metric)"] = grouping
    # 2) the oracle: every subset, every seed, through the same evaluator (cache shared with the pipeline)
    type_of = {t: suite[t].type for t in tasks}
    metric = {t: primary_metric(type_of[t]) for t in tasks}
    table: dict[tuple[str, ...], dict[str, dict[str, list[float]]]] = {}
    train_seconds = 0.0
    for seed in seeds:  # every subset of a seed dispatched at once through the run's executor
        ev = make_suite_evaluator(suite, config.train_settings(seed), out / "pipeline" / "cache" / "evaluator",
                                  tokenizer=pipe._tok(), executor=pipe.executor)
        results = ev.evaluate_many([list(g) for g in subsets(tasks)], progress=True)
        for i, (group, result) in enumerate(zip(subsets(tasks), results)):
            for t in group:
                entry = table.setdefault(group, {}).setdefault(t, {"test": [], "val_loss": []})
                entry["test"].append(result[t][f"test_{metric[t]}"])
                entry["val_loss"].append(result[t]["loss"])
            seconds = ev.training_seconds(group) or 0.0
            train_seconds += seconds
            print(f"seed {seed} subset {i + 1:>2}/{2 ** len(tasks) - 1} {'+'.join(group):<70} {seconds:6.1f}s",
                  flush=True)
    score = {g: {t: float(np.mean(v["test"])) for t, v in per.items()} for g, per in table.items()}
    val_loss = {g: {t: float(np.mean(v["val_loss"])) for t, v in per.items()} for g, per in table.items()}
    spread = {g: {t: float(np.std(v["test"])) for t, v in per.items()} for g, per in table.items()}

    def partition_score(partition: Sequence[Sequence[str]]) -> float:
        return float(np.mean([score[tuple(sorted(g))][t] for g in partition for t in g]))

    def grouping_score(grouping: Any) -> float:  # with overlap, each task counts in the group serving it
        return float(np.mean([score[tuple(sorted(grouping.group_of(t)))][t] for t in tasks]))

    def partition_val_loss(partition: Sequence[Sequence[str]]) -> float:
        return float(sum(val_loss[tuple(sorted(g))][t] for g in partition for t in g))

    partitions = all_partitions(tasks)
    scored = sorted(((partition_score(p), p) for p in partitions), key=lambda x: -x[0])
    all_scores = np.array([s for s, _ in scored])
    stl = partition_score([[t] for t in tasks])
    oracle_score, oracle = scored[0]
    val_oracle = min(partitions, key=partition_val_loss)

    def rank(value: float) -> int:
        return int(np.sum(all_scores > value + 1e-12)) + 1

    def fraction(value: float) -> float | None:
        return None if abs(oracle_score - stl) < 1e-12 else (value - stl) / (oracle_score - stl)

    rows: list[dict[str, Any]] = []
    for method, grouping in groupings.items():
        rec = grouping_record(method, grouping)
        value = grouping_score(grouping)
        rec.update({"score": value, "gain_vs_stl": value - stl, "fraction_of_oracle_gain": fraction(value),
                    "rank": rank(value), "val_loss": partition_val_loss(grouping.groups) if not grouping.overlap else None})
        rows.append(rec)
    references = {
        "single_task": stl, "oracle (test)": oracle_score, "oracle by validation loss": partition_score(val_oracle),
        "mean of all partitions (uniform random)": float(all_scores.mean()),
        "median partition": float(np.median(all_scores)), "worst partition": float(all_scores[-1]),
    }
    payload = {
        "study": "oracle", "tasks": tasks, "task_types": type_of, "metrics": metric, "seeds": seeds,
        "settings": {"max_train": max_train, "train": config.train_settings(seeds[0]).to_dict(),
                     "pvi": config.pvi_settings().to_dict(), "num_groups": args.num_groups,
                     "method_options": config.method_options},
        "environment": environment(), "wall_seconds": time.perf_counter() - start,
        "oracle_train_seconds": train_seconds, "num_partitions": len(partitions),
        "references": references, "oracle_partition": oracle, "val_oracle_partition": val_oracle,
        "rank_of_val_oracle": rank(partition_score(val_oracle)),
        "methods": rows,
        "subsets": {"+".join(g): {t: {"test_mean": score[g][t], "test_std": spread[g][t], "val_loss": val_loss[g][t]}
                                  for t in g} for g in table},
        "top_partitions": [{"score": s, "partition": p} for s, p in scored[:10]],
        "all_partition_scores": all_scores.tolist(),
        "pvi_v_information": {t: r.summary.get("v_information") for t, r in pvi.items()},
    }
    pipe.executor.close()
    path = write_results(name, payload)
    save_oracle_figures(payload, name)
    print(f"\nSTL {stl:.4f}  oracle {oracle_score:.4f} {oracle}  (203 partitions: mean {all_scores.mean():.4f})")
    for r in sorted(rows, key=lambda r: r["rank"]):
        frac = r["fraction_of_oracle_gain"]
        print(f"  {r['method']:<18} rank {r['rank']:>3}/{len(partitions)}  score {r['score']:.4f}  "
              f"frac {'n/a' if frac is None else f'{frac:+.2f}'}  trainings {r['trainings']:>4}  "
              f"{r['seconds']:7.1f}s  {r['groups']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
