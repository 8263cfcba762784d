"""Evidence study 2 and 3: every grouping method on all 13 real NLP tasks, and the PVI claims checked.

Runs the library's pipeline (:class:`hf_taskgroup.Pipeline`) on the 13 tasks of ``../shared/data/nlp``:
PVI stage, every grouping method, then every group of every method and every single task trained for
3 seeds (MiniLM, ``frozen`` with a 256-unit shared trunk) and scored on the test split
(:func:`hf_taskgroup.report.evaluation.evaluate_groupings`). Beside the registry's methods it adds

- ``pvi_<test>``: the PVI grouping under the other pairwise tests (Mann-Whitney U, KS, TOST with a
  0.1-bit margin);
- ``pvi_dissimilar``: groups of the same sizes as the PVI groups, built to make the members' mean PVI as
  *different* as possible (collapsed tasks stay single, as in the PVI grouping), to test the claim of
  arXiv 2410.12774 that tasks with similar PVI group better than tasks with dissimilar PVI.

    python benchmarks/evidence_suite.py --quick   # 5 tasks, 200 train rows, 1 seed
    python benchmarks/evidence_suite.py           # 13 tasks, 1000 train rows, seeds 0 1 2

Writes benchmarks/results/evidence_suite[_quick].json, the pipeline's report.md under
benchmarks/results/evidence/, and docs/figures/evidence_suite[_quick]_gains.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    NLP_TASKS,
    environment,
    write_results,
)
from evidence_common import (  # noqa: E402
    dissimilar_groups,
    grouping_record,
    metric_objective_groupings,
    open_study,
    run_grouping_stages,
    save_gain_figure,
    study_config,
)

from hf_taskgroup.grouping import Grouping  # noqa: E402
from hf_taskgroup.pipeline import Pipeline  # noqa: E402
from hf_taskgroup.report.evaluation import evaluate_groupings, group_name  # noqa: E402
from hf_taskgroup.training.metrics import greater_is_better  # noqa: E402

QUICK_TASKS = ["glue_sst2", "chemprot", "mqp", "medical_abstracts", "glue_rte"]
METHODS = ["pvi", "transfer_gain", "tag", "affinity_search", "task_embedding", "surrogate", "clustering",
           "all_in_one", "random"]
#: the evaluator-based methods again with ``evaluator_objective="metric"`` (same evaluator cache)
METRIC_METHODS = ["affinity_search", "surrogate"]


def dissimilar_grouping(pvi_grouping: Grouping, values: Mapping[str, np.ndarray], seed: int) -> Grouping:
    """Groups with the PVI grouping's sizes but maximally different member PVI (collapsed tasks kept single)."""
    collapsed = set(pvi_grouping.scores.get("collapsed_tasks", []))
    scored_groups = [g for g in pvi_grouping.groups if not (len(g) == 1 and g[0] in collapsed)]
    means = {t: float(np.mean(values[t])) for g in scored_groups for t in g}
    groups = dissimilar_groups(means, [len(g) for g in scored_groups], seed=seed) if means else []
    grouping = Grouping(groups=[*groups, *[[t] for t in sorted(collapsed)]], method="pvi_dissimilar",
                        tasks=list(pvi_grouping.tasks), params={"sizes_from": "pvi", "objective": "max within-group PVI spread"},
                        scores={"mean_pvi": means}, cost=pvi_grouping.cost)
    grouping.validate()
    return grouping


def seed_gains(grouping: Grouping, results: Mapping[str, Mapping[int, Mapping[str, Any]]], seeds: Sequence[int],
               split: str = "test") -> list[float]:
    """Mean over tasks of (grouped - single-task) primary test metric, one value per seed (paired by seed)."""
    out = []
    for seed in seeds:
        gains = []
        for task in grouping.tasks:
            stl = results[group_name([task])][seed]
            mtl = results[group_name(grouping.group_of(task))][seed]
            metric = stl["primary"][task]
            sign = 1.0 if greater_is_better(metric) else -1.0
            gains.append(sign * (mtl["tasks"][task][split][metric] - stl["tasks"][task][split][metric]))
        out.append(float(np.mean(gains)))
    return out


def method_rows(evaluations: Mapping[str, Any], groupings: Mapping[str, Grouping],
                results: Mapping[str, Mapping[int, Mapping[str, Any]]], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One JSON row per method: groups, cost, mean test gain (and per seed), tasks gained / negative, parameters,
    per-task scores (``evaluations``: :func:`~hf_taskgroup.report.evaluation.evaluate_groupings` on test)."""
    rows = []
    for method, ev in evaluations.items():
        per_seed = seed_gains(groupings[method], results, seeds)
        multi = [r for r in ev.rows.values() if len(r.group) > 1]
        rec = grouping_record(method, groupings[method])
        rec.update({
            "mean_gain": ev.mean_gain, "mean_gain_seed_std": float(np.std(per_seed)), "mean_gain_per_seed": per_seed,
            "tasks_gained": ev.tasks_gained, "tasks_negative": ev.tasks_negative, "tasks_in_multitask_groups": len(multi),
            "multitask_tasks_gained": sum(r.gain > 0 for r in multi),
            "multitask_tasks_matched_or_gained": sum(r.gain >= 0 for r in multi),
            "grouped_parameters": ev.grouped_parameters, "stl_parameters": ev.stl_parameters,
            "mean_score": ev.mean_score,
            "per_task": {t: {"metric": r.metric, "stl": r.stl_mean, "stl_std": r.stl_std, "mtl": r.mtl_mean,
                             "mtl_std": r.mtl_std, "gain": r.gain, "group": r.group} for t, r in ev.rows.items()},
        })
        rows.append(rec)
    return rows


def pvi_claims(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The claims of arXiv 2410.12774 from :func:`method_rows` (needs the ``pvi`` and ``pvi_dissimilar`` rows):
    grouped tasks match or beat single-task, and PVI groups beat groups of maximally dissimilar PVI."""
    by_method = {r["method"]: r for r in rows}
    pvi_row, diss_row = by_method["pvi"], by_method["pvi_dissimilar"]
    pvi_multi = [t for t, r in pvi_row["per_task"].items() if len(r["group"]) > 1]
    return {
        "pvi_tasks_matched_or_gained": sum(r["gain"] >= 0 for r in pvi_row["per_task"].values()),
        "pvi_multitask_tasks": len(pvi_multi),
        "pvi_multitask_tasks_matched_or_gained": pvi_row["multitask_tasks_matched_or_gained"],
        "pvi_mean_gain": pvi_row["mean_gain"], "pvi_dissimilar_mean_gain": diss_row["mean_gain"],
        "pvi_minus_dissimilar_per_seed": [a - b for a, b in zip(pvi_row["mean_gain_per_seed"], diss_row["mean_gain_per_seed"])],
        "pvi_groups": pvi_row["groups"], "dissimilar_groups": diss_row["groups"],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--num-groups", type=int, default=None, help="default 4 (quick: 2)")
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    tasks = QUICK_TASKS if args.quick else list(NLP_TASKS)
    max_train = args.max_train or (200 if args.quick else 1000)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    num_groups = args.num_groups or (2 if args.quick else 4)
    study = open_study("evidence_suite", args.quick, tasks, max_train, args.output_dir)
    if study is None:
        return
    suite, name, out = study
    start = time.perf_counter()
    config = study_config(out / "pipeline", METHODS, seeds, args.epochs, num_groups=num_groups, num_tasks=len(tasks),
                          search_extra=2 * len(tasks))
    pipe = Pipeline(config, suite=suite)
    pvi, groupings = run_grouping_stages(pipe)
    groupings["pvi_dissimilar"] = dissimilar_grouping(groupings["pvi"], pipe._pvi_values(pvi), seeds[0])
    for method, grouping in metric_objective_groupings(pipe, METRIC_METHODS, num_tasks=len(tasks),
                                                       search_extra=2 * len(tasks)).items():
        groupings[f"{method}_metric"] = grouping
    for method, g in groupings.items():
        print(f"{method:<16} {g.groups}", flush=True)
    results = pipe._timed("train", pipe.stage_train, groupings)
    evaluations = evaluate_groupings(groupings, results, split="test")
    report = pipe.stage_report(evaluations, pvi, {})

    rows = method_rows(evaluations, groupings, results, seeds)
    claims = pvi_claims(rows)
    payload = {
        "study": "suite", "tasks": tasks, "seeds": seeds,
        "settings": {"max_train": max_train, "train": config.train_settings(seeds[0]).to_dict(),
                     "pvi": config.pvi_settings().to_dict(), "num_groups": num_groups,
                     "method_options": config.method_options},
        "environment": environment(), "wall_seconds": time.perf_counter() - start, "stage_seconds": pipe.timings,
        "pvi_v_information": {t: r.summary.get("v_information") for t, r in pvi.items()},
        "pvi_collapsed": {t: r.summary.get("collapsed") for t, r in pvi.items()},
        "methods": rows, "pvi_claims": claims, "report": str(report),
        "group_sizes": {m: sorted(Counter(len(g) for g in gr.groups).items()) for m, gr in groupings.items()},
    }
    path = write_results(name, payload)
    save_gain_figure({m: e.to_dict() for m, e in evaluations.items()}, tasks, f"{name}_gains",
                     f"{len(tasks)} tasks, test gain vs single-task (mean of {len(seeds)} seed(s))")
    print()
    for r in sorted(rows, key=lambda r: -r["mean_gain"]):
        print(f"{r['method']:<16} groups {r['num_groups']:>2}  mean gain {r['mean_gain']:+.4f} ± {r['mean_gain_seed_std']:.4f}"
              f"  gained {r['tasks_gained']:>2}  negative {r['tasks_negative']:>2}  params {r['grouped_parameters']:,}"
              f"  trainings {r['trainings']:>4}  {r['seconds']:7.1f}s")
    print(f"PVI claims: {claims}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
