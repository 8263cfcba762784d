"""Evidence v2: the oracle study in a chosen fine-tuning mode, with the recommendation beside the methods.

Like ``evidence_oracle.py`` (every subset of the tasks trained as a group, all set partitions scored from that
table on the **test** split, each method's partition ranked among them), but in the fine-tuning mode given by
``--finetune`` (default ``partial`` when this installation has it, else ``frozen``, said on the first line of
the output), and with the recommendation (:func:`hf_taskgroup.grouping.recommend.recommend_grouping`) as one
more row: candidates are the affordable methods' groupings (every method but ``exhaustive``), its groups are
trained over ``--recommend-seeds`` seeds and chosen on validation only. Its per-task **test** gains over
single-task are reported with paired bootstrap intervals: how many tasks gain, how many are harmed beyond
noise (target: none).

Everything resumes after an interruption: PVI and groupings from the pipeline's artifacts, the oracle's
trainings from the evaluator cache, the recommendation's trainings from ``runs/<group>/seed<k>.json``.

    python benchmarks/evidence_v2.py --quick     # 4 tasks, 200 train rows, oracle 1 seed, recommendation 2 seeds
    python benchmarks/evidence_v2.py             # 6 tasks, 1000 train rows, 3 seeds (hours on 2 CPU cores)

Writes benchmarks/results/evidence_v2[_quick].json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results  # noqa: E402
from evidence_common import (  # noqa: E402
    all_partitions,
    grouping_record,
    metric_objective_groupings,
    open_study,
    run_grouping_stages,
    study_config,
)
from evidence_oracle import METHODS, METRIC_METHODS, QUICK_TASKS, TASKS, subsets  # noqa: E402

from hf_taskgroup.grouping import available_methods  # noqa: E402
from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator  # noqa: E402
from hf_taskgroup.grouping.recommend import stage_recommend  # noqa: E402
from hf_taskgroup.pipeline import Pipeline  # noqa: E402
from hf_taskgroup.training.metrics import primary_metric  # noqa: E402
from hf_taskgroup.training.train import TrainSettings  # noqa: E402


def choose_mode(requested: str | None) -> tuple[str, str]:
    """The fine-tuning mode to run and a sentence saying why."""
    if requested:
        return requested, f"fine-tuning mode {requested!r} (requested)"
    try:
        TrainSettings(finetune="partial")
    except ValueError:
        return "frozen", "fine-tuning mode 'frozen': 'partial' is not available in this installation"
    return "partial", "fine-tuning mode 'partial' (default)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--finetune", default=None, help="frozen, partial, lora or full (default: partial if available)")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="oracle and methods' seeds")
    parser.add_argument("--recommend-seeds", type=int, default=None, help="seeds of the recommendation (default 2 quick, 3)")
    parser.add_argument("--bootstrap-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--num-groups", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    mode, why = choose_mode(args.finetune)
    print(why, flush=True)
    tasks = QUICK_TASKS if args.quick else TASKS
    max_train = args.max_train or (200 if args.quick else 1000)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    rec_seeds = args.recommend_seeds or (2 if args.quick else 3)
    study = open_study(f"evidence_v2_{mode}", args.quick, tasks, max_train, args.output_dir)
    if study is None:
        return
    suite, name, out = study
    start = time.perf_counter()
    methods = [m for m in METHODS if m in available_methods()]
    if "grad_estimate" in available_methods():
        methods.insert(1, "grad_estimate")
    config = study_config(out / "pipeline", methods, seeds, args.epochs, num_groups=args.num_groups,
                          num_tasks=len(tasks), finetune=mode)
    config.recommend_seeds, config.bootstrap_samples = rec_seeds, args.bootstrap_samples
    config.publish_method = methods[0]  # a study: no model folders for the recommended groups
    pipe = Pipeline(config, suite=suite)
    # 1) the methods (resumable pipeline stages)
    pvi, groupings = run_grouping_stages(pipe)
    for method, grouping in metric_objective_groupings(pipe, METRIC_METHODS, num_tasks=len(tasks),
                                                       finetune=mode).items():
        groupings[f"{method} (metric)"] = grouping
    # 2) the oracle: every subset, every seed (resumable evaluator cache)
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    table: dict[tuple[str, ...], dict[str, list[float]]] = {}
    oracle_seconds = 0.0
    for seed in seeds:
        ev = make_suite_evaluator(suite, config.train_settings(seed), out / "pipeline" / "cache" / "evaluator",
                                  tokenizer=pipe._tok())
        for i, group in enumerate(subsets(tasks)):
            result = ev(list(group))
            for t in group:
                table.setdefault(group, {}).setdefault(t, []).append(result[t][f"test_{metric[t]}"])
            oracle_seconds += ev.training_seconds(group) or 0.0
            print(f"oracle seed {seed} subset {i + 1:>2}/{2 ** len(tasks) - 1} {'+'.join(group)}", flush=True)
    score = {g: {t: float(np.mean(v)) for t, v in per.items()} for g, per in table.items()}

    def partition_score(partition: Sequence[Sequence[str]]) -> float:
        return float(np.mean([score[tuple(sorted(g))][t] for g in partition for t in g]))

    def grouping_score(grouping: Any) -> float:
        return float(np.mean([score[tuple(sorted(grouping.group_of(t)))][t] for t in tasks]))

    partitions = all_partitions(tasks)
    all_scores = np.array(sorted((partition_score(p) for p in partitions), reverse=True))
    stl = partition_score([[t] for t in tasks])
    oracle = float(all_scores[0])

    def fraction(value: float) -> float | None:
        return None if abs(oracle - stl) < 1e-12 else (value - stl) / (oracle - stl)

    # 3) the recommendation over the affordable methods' groupings (resumable runs/)
    candidates = {m: g for m, g in groupings.items() if not m.startswith("exhaustive")}
    rec_start = time.perf_counter()
    rec = stage_recommend(pipe, candidates, pvi)
    rec_wall = time.perf_counter() - rec_start
    rows: list[dict[str, Any]] = []
    for method, grouping in {**groupings, "recommended": rec.grouping}.items():
        row = grouping_record(method, grouping)
        value = grouping_score(grouping)
        row.update({"score": value, "gain_vs_stl": value - stl, "fraction_of_oracle_gain": fraction(value),
                    "rank": int(np.sum(all_scores > value + 1e-12)) + 1,
                    "cost_fraction_of_oracle": row["seconds"] / oracle_seconds if oracle_seconds else None})
        rows.append(row)
    methods_seconds = sum(float(g.cost.seconds) for m, g in candidates.items())
    per_task = {t: {k: getattr(r, k) for k in ("metric", "group", "verdict", "difference", "low", "high",
                                                "test_difference", "test_low", "test_high")}
                for t, r in rec.rows.items()}
    harmed = [t for t, r in per_task.items() if r["test_high"] is not None and r["test_high"] < 0]
    gained = [t for t, r in per_task.items() if r["test_low"] is not None and r["test_low"] > 0]
    payload = {
        "study": "evidence_v2", "finetune": mode, "mode_note": why, "tasks": tasks, "metrics": metric,
        "seeds": seeds, "recommend_seeds": rec.seeds, "max_train": max_train,
        "settings": config.train_settings(seeds[0]).to_dict(), "environment": environment(),
        "wall_seconds": time.perf_counter() - start, "oracle_train_seconds": oracle_seconds,
        "references": {"single_task": stl, "oracle (test)": oracle, "mean partition": float(all_scores.mean())},
        "methods": rows,
        "recommendation": {"groups": rec.grouping.groups, "candidate": rec.candidate, "per_task_test": per_task,
                           "tasks_gained_beyond_noise": gained, "tasks_harmed_beyond_noise": harmed,
                           "trainings": rec.cost["trainings"], "train_seconds": rec.cost["seconds"],
                           "wall_seconds": rec_wall, "candidate_methods_seconds": methods_seconds,
                           "cost_fraction_of_oracle_incl_methods":
                               (rec.cost["seconds"] + methods_seconds) / oracle_seconds if oracle_seconds else None,
                           "flags": {t: f for t, f in rec.flags.items() if f}},
    }
    path = write_results(name, payload)
    print(f"\n{why}; STL {stl:.4f}  oracle {oracle:.4f}  ({len(partitions)} partitions, oracle training "
          f"{oracle_seconds:.0f} s)")
    for r in sorted(rows, key=lambda r: r["rank"]):
        frac, cost = r["fraction_of_oracle_gain"], r["cost_fraction_of_oracle"]
        print(f"  {r['method']:<24} rank {r['rank']:>3}/{len(partitions)}  score {r['score']:.4f}  "
              f"frac {'n/a' if frac is None else f'{frac:+.2f}'}  cost {'n/a' if cost is None else f'{cost:.3f}'}  "
              f"{r['groups']}")
    print(f"\nrecommendation {rec.grouping.groups} (from {rec.candidate}); per-task test gain "
          f"[{int(100 * rec.confidence)}% interval, seeds {rec.seeds}]:")
    for t, r in per_task.items():
        lo, hi = r["test_low"], r["test_high"]
        interval = "-" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"
        print(f"  {t:<20} {r['metric']:<9} {r['test_difference']:+.3f} {interval:<18} {r['verdict']}")
    print(f"gain beyond noise: {len(gained)}/{len(tasks)}; harmed beyond noise: {len(harmed)} {harmed}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
