"""Evidence v2 on all 13 tasks: the recommendation in the shared-encoder regime, and the PVI claims re-checked.

The two parts of issue 14's "evidence v2" that are not the 6-task oracle (``evidence_v2.py``), with exactly its
training settings (``evidence_common.V2_*``: ``partial`` mode with k = 1 trainable layer, 300 training rows per
task, 8 epochs at lr 1e-3, batch 16; the PVI models with the same epochs and learning rate):

1. **The recommendation on all 13 tasks.** The pipeline (:class:`hf_taskgroup.Pipeline`) runs PVI (in ``partial``
   mode) and the affordable methods only (pvi, grad_estimate, tag, transfer_gain, clustering, task_embedding,
   all_in_one, random: no exhaustive / affinity_search / surrogate search over 13 tasks), then the recommendation
   stage (``--recommend-seeds``, default 3) over their groupings. Reported: per-task **test** gains over
   single-task with paired bootstrap intervals, how many tasks gain beyond noise, how many are harmed beyond noise
   (target: none), the flags, parameters saved and the cost (trainings, seconds). ``--score-methods`` (off by
   default) also scores each method's groups on test like ``evidence_suite.py``; most of those trainings are the
   recommendation's, but groups that held a task flagged "not learned" are trained anew for every seed.
2. **The PVI claims of arXiv 2410.12774** in this regime: the PVI grouping under each test (``pvi_<test>``) and
   ``pvi_dissimilar`` (same group sizes, maximally different member PVI) trained for the recommendation's seeds
   and scored on test with ``evidence_suite.py``'s functions (``method_rows``, ``pvi_claims``).

Resumable: the pipeline's PVI and grouping stages resume from their artifacts; every training (the
recommendation's and the scoring's) is cached as ``runs/<group>/seed<k>.json`` under the output folder (shared:
a group trained for the recommendation is not trained again for the claims), and the methods' own caches
(affinity, evaluator, task embeddings) resume too. After each stage ``benchmarks/results/
evidence_v2_suite[_quick]_progress.json`` says how far the run got (and holds what the finished stages found).

    OMP_NUM_THREADS=1 python benchmarks/evidence_v2_suite.py --quick   # 5 tasks, 60 rows, 1 epoch, 2 seeds
    python benchmarks/evidence_v2_suite.py                             # 13 tasks, the v2 settings, 3 seeds
    python benchmarks/evidence_v2_suite.py --score-methods             # ... and every method's groups scored
    python benchmarks/evidence_v2_suite.py --executor ray              # trainings two at a time (docs/ray.md)

Cost estimate of the full run (from the quick run's timings, scaled; see the end of this docstring for how):
- Quick run measured (5 tasks, 60 rows, 1 epoch, 2 seeds, from scratch on a machine at load ~7 on 2 cores):
  PVI 146 s (10 models), grad_estimate 206 s (capped gradients), tag 37 s, transfer_gain 22 s, task_embedding
  23 s, recommendation 18 trainings in 138 s, claims scoring 6 new trainings in 170 s: about 12.5 minutes.
- Full run, scaled with evidence v2's calibration at these settings (docs/benchmarks.md section 7: about 62
  CPU-seconds per task trained in a group, i.e. ~31 s of wall time on 2 idle cores) and the quick run's ratios:
  PVI 26 models ~0.5 h CPU; tag + transfer_gain (one 13-task training each plus lookaheads, ~4.5x a training in
  the quick run) ~2 h CPU; task_embedding ~0.2 h CPU; grad_estimate uncapped (whole validation splits, ~11k
  examples, every token / label a unit) 1.5-5 h CPU, the least certain part; the recommendation, 3 seeds x
  (13 single tasks + ~120 tasks in the candidates' distinct groups) ~7 h CPU; the claims, ~13 further tasks x 3
  seeds for pvi_dissimilar ~0.7 h CPU. In all about 12-16 CPU-hours: **about 6-8 hours on 2 idle cores** at the
  first settings (4 epochs); the trainings (not the gradient pass) take about twice that at the current 8 epochs.
  It resumes, so it can span sessions. ``--score-methods`` adds little: the recommendation already trains every
  candidate group for every seed, so only groups that contained a task flagged "not learned" (taken out of the
  candidates) are trained anew.

``--quick`` also caps grad_estimate's gradients at 60 examples per task and split (2 units each for multilabel
and token tasks); the affinities are collected every 50 steps, or 4 times over a short training, as in
``evidence_v2.py``.

Writes benchmarks/results/evidence_v2_suite[_quick].json (and the progress file above); caches live under
benchmarks/results/evidence/evidence_v2_suite_<mode>[_quick]/ (ignored by git, never committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import NLP_TASKS, RESULTS_DIR, environment, write_results  # noqa: E402
from evidence_common import (  # noqa: E402
    V2_BATCH_SIZE,
    V2_EPOCHS,
    V2_LEARNING_RATE,
    V2_MAX_TRAIN,
    V2_TRAINABLE_LAYERS,
    add_executor_arguments,
    grouping_record,
    open_study,
    recommendation_record,
    run_grouping_stages,
    save_recommendation_figure,
    study_config,
    v2_fields,
)
from evidence_suite import dissimilar_grouping, method_rows, pvi_claims  # noqa: E402
from evidence_v2 import choose_mode  # noqa: E402

from hf_taskgroup.grouping import Grouping, available_methods  # noqa: E402
from hf_taskgroup.grouping.recommend import stage_recommend  # noqa: E402
from hf_taskgroup.pipeline import Pipeline  # noqa: E402
from hf_taskgroup.report.evaluation import evaluate_groupings, group_name  # noqa: E402
from hf_taskgroup.utils import atomic_write_json  # noqa: E402

QUICK_TASKS = ["glue_rte", "mqp", "medical_abstracts", "hoc", "biosses"]
#: the affordable methods (no search over the partitions of 13 tasks); grad_estimate when installed
METHODS = ["pvi", "grad_estimate", "tag", "transfer_gain", "clustering", "task_embedding", "all_in_one", "random"]
PVI_VARIANTS = ("pvi", "pvi_mannwhitney", "pvi_ks", "pvi_tost", "pvi_dissimilar")


def score_groupings(pipe: Pipeline, groupings: Mapping[str, Grouping], seeds: Sequence[int]
                    ) -> dict[str, dict[int, dict[str, Any]]]:
    """Every group of ``groupings`` and every single task trained for ``seeds`` through the pipeline's run cache
    (``runs/<group>/seed<k>.json``, shared with the recommendation): ``{group_name: {seed: result}}``."""
    groups = {group_name([t]): [t] for t in pipe.tasks}
    for grouping in groupings.values():
        for g in grouping.groups:
            groups.setdefault(group_name(g), sorted(g))
    jobs = [(tasks, seed) for tasks in groups.values() for seed in seeds]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for (tasks, seed), res in zip(jobs, pipe.train_cached_many(jobs), strict=True):
        results.setdefault(group_name(tasks), {})[seed] = res
    return results


def save_figure(payload: Mapping[str, Any], quick: bool) -> Path:
    """The recommendation's per-task test gains with intervals (docs/figures/evidence_v2_suite[_quick].png)."""
    rec = payload["recommendation"]
    harmed = len(rec["tasks_harmed_beyond_noise"])
    gained = len(rec["tasks_gained_beyond_noise"])
    title = (f"recommendation on {len(payload['tasks'])} tasks ({payload['finetune']}, seeds {rec['seeds']}): "
             f"{gained} gain beyond noise, {harmed} harmed")
    return save_recommendation_figure(rec, "evidence_v2_suite_quick" if quick else "evidence_v2_suite", title)


def single_task_grouping(tasks: Sequence[str]) -> Grouping:
    return Grouping(groups=[[t] for t in tasks], method="single_task", tasks=list(tasks), params={}, scores={})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 tasks, 60 train rows, 1 epoch, 2 seeds (a smoke run)")
    parser.add_argument("--finetune", default=None, help="frozen, partial, lora or full (default: partial if available)")
    parser.add_argument("--trainable-layers", type=int, default=V2_TRAINABLE_LAYERS, help="partial mode's k")
    parser.add_argument("--max-train", type=int, default=None, help=f"training rows per task (default {V2_MAX_TRAIN}; quick 60)")
    parser.add_argument("--epochs", type=float, default=None, help=f"training epochs (default {V2_EPOCHS:g}; quick 1)")
    parser.add_argument("--learning-rate", type=float, default=V2_LEARNING_RATE)
    parser.add_argument("--batch-size", type=int, default=V2_BATCH_SIZE)
    parser.add_argument("--recommend-seeds", type=int, default=None, help="seeds of the recommendation (default 3; quick 2)")
    parser.add_argument("--recommend-screen", type=int, default=0,
                        help="the recommendation's screening (PipelineConfig.recommend_screen): keep the N best "
                             "candidates after the first seed (0: off)")
    parser.add_argument("--bootstrap-samples", type=int, default=1000)
    parser.add_argument("--num-groups", type=int, default=None,
                        help="groups for the methods that take a number (default 4 as in evidence_suite.py; quick 2)")
    parser.add_argument("--score-methods", action="store_true",
                        help="also score every method's groups on test for every seed (off; mostly the recommendation's "
                             "trainings, plus groups holding a task flagged not learned)")
    parser.add_argument("--no-claims", action="store_true", help="skip part 2 (the PVI claims' trainings)")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the figure from the written result (evidence_v2_suite[_quick].json)")
    add_executor_arguments(parser)
    args = parser.parse_args(argv)
    if args.replot:
        path = RESULTS_DIR / ("evidence_v2_suite_quick.json" if args.quick else "evidence_v2_suite.json")
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist yet; run the study first")
        print(f"wrote {save_figure(json.loads(path.read_text(encoding='utf-8')), args.quick)}")
        return
    mode, why = choose_mode(args.finetune)
    print(why, flush=True)
    tasks = QUICK_TASKS if args.quick else list(NLP_TASKS)
    max_train = args.max_train or (60 if args.quick else V2_MAX_TRAIN)
    epochs = args.epochs or (1.0 if args.quick else V2_EPOCHS)
    rec_seeds = args.recommend_seeds or (2 if args.quick else 3)
    num_groups = args.num_groups or (2 if args.quick else 4)
    seeds = list(range(rec_seeds))  # the methods use seeds[0]; the recommendation all of them
    study = open_study(f"evidence_v2_suite_{mode}", args.quick, tasks, max_train, args.output_dir)
    if study is None:
        return
    suite, _, out = study
    name = "evidence_v2_suite_quick" if args.quick else "evidence_v2_suite"
    progress_path = RESULTS_DIR / f"{name}_progress.json"
    start = time.perf_counter()
    methods = [m for m in METHODS if m in available_methods()]
    fields = v2_fields(mode, trainable_layers=args.trainable_layers, learning_rate=args.learning_rate,
                       batch_size=args.batch_size, epochs=epochs)
    # lookahead collection as in evidence_v2.py: every 50 steps, or 4 times over a short (--quick) training
    steps = int(epochs * -(-max_train * len(tasks) // args.batch_size))
    config = study_config(out / "pipeline", methods, seeds, epochs, num_groups=num_groups, num_tasks=len(tasks),
                          every_k_steps=max(1, min(50, steps // 4)), **fields)
    if args.quick:  # a smoke run: gradients of at most 60 examples (2 labels / tokens each) per task and split
        config.method_options["grad_estimate"].update(max_examples=60, max_units_per_example=2)
    config = dataclasses.replace(config, executor=args.executor, ray_address=args.ray_address)
    config.recommend_seeds, config.bootstrap_samples = rec_seeds, args.bootstrap_samples
    config.recommend_screen = args.recommend_screen
    config.publish_method = methods[0]  # a study: no model folders for the recommended groups
    pipe = Pipeline(config, suite=suite)
    settings = config.train_settings(seeds[0]).to_dict()
    state: dict[str, Any] = {"study": "evidence_v2_suite", "finetune": mode, "mode_note": why, "tasks": tasks,
                             "max_train": max_train, "seeds": seeds, "num_groups": num_groups, "settings": settings,
                             "pvi_settings": config.pvi_settings().to_dict(), "methods_run": methods,
                             "stages_done": [], "stage_seconds": {}}

    def stage_done(stage: str, seconds: float, **found: Any) -> None:
        state["stages_done"].append(stage)
        state["stage_seconds"][stage] = seconds
        state.update(found)
        state["wall_seconds"] = time.perf_counter() - start
        atomic_write_json(progress_path, state)
        print(f"stage {stage} done ({seconds:.0f} s); progress in {progress_path.name}", flush=True)

    # 1) PVI (partial mode) and the affordable methods' groupings (resumable pipeline stages)
    t0 = time.perf_counter()
    pvi, groupings = run_grouping_stages(pipe)
    groupings["pvi_dissimilar"] = dissimilar_grouping(groupings["pvi"], pipe._pvi_values(pvi), seeds[0])
    for method, g in groupings.items():
        print(f"{method:<16} {g.groups}", flush=True)
    stage_done("methods", time.perf_counter() - t0,
               pvi_v_information={t: r.summary.get("v_information") for t, r in pvi.items()},
               pvi_collapsed={t: r.summary.get("collapsed") for t, r in pvi.items()},
               groupings={m: grouping_record(m, g) for m, g in groupings.items()})

    # 2) the recommendation over the methods' groupings (the PVI test variants are candidates too; resumable runs/)
    candidates = {m: g for m, g in groupings.items() if m != "pvi_dissimilar"}
    t0 = time.perf_counter()
    rec = stage_recommend(pipe, candidates, pvi)
    rec_wall = time.perf_counter() - t0
    recommendation = recommendation_record(rec, candidates, rec_wall)
    stage_done("recommend", rec_wall, recommendation=recommendation)

    # 3) scoring on test: the PVI-derived groupings (the claims) and, with --score-methods, every method's groups
    scored: dict[str, Grouping] = {}
    if not args.no_claims:
        scored.update({m: groupings[m] for m in PVI_VARIANTS if m in groupings})
    if args.score_methods:
        scored.update(groupings)
    rows: list[dict[str, Any]] = []
    claims = None
    if scored:
        scored = {**scored, "single_task": single_task_grouping(tasks), "recommended": rec.grouping}
        t0 = time.perf_counter()
        results = score_groupings(pipe, scored, rec.seeds)
        evaluations = evaluate_groupings(scored, results, split="test")
        rows = method_rows(evaluations, scored, results, rec.seeds)
        if "pvi" in scored and "pvi_dissimilar" in scored:
            claims = pvi_claims(rows)
        stage_done("score", time.perf_counter() - t0, methods=rows, pvi_claims=claims)

    payload = {**state, "environment": environment(), "wall_seconds": time.perf_counter() - start,
               "pipeline_stage_seconds": pipe.timings, "recommendation": recommendation,
               "methods": rows, "methods_scored": sorted(scored), "score_methods": bool(args.score_methods),
               "pvi_claims": claims}
    payload.pop("stages_done", None)
    path = write_results(name, payload)
    try:
        print(f"wrote {save_figure(payload, args.quick)}")
    except ImportError:  # matplotlib missing: the JSON is the result
        pass
    state["stages_done"].append("done")
    atomic_write_json(progress_path, {**state, "wall_seconds": payload["wall_seconds"]})

    print(f"\n{why}; recommendation {rec.grouping.groups} (from {rec.candidate}); per-task test gain "
          f"[{int(100 * rec.confidence)}% interval, seeds {rec.seeds}]:")
    for t, r in recommendation["per_task_test"].items():
        lo, hi = r["test_low"], r["test_high"]
        interval = "-" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"
        diff = "n/a" if r["test_difference"] is None else f"{r['test_difference']:+.3f}"
        print(f"  {t:<20} {r['metric']:<9} {diff} {interval:<18} {r['verdict']}")
    print(f"gain beyond noise: {len(recommendation['tasks_gained_beyond_noise'])}/{len(tasks)}; harmed beyond noise: "
          f"{len(recommendation['tasks_harmed_beyond_noise'])} {recommendation['tasks_harmed_beyond_noise']}; "
          f"flags: {recommendation['flags'] or 'none'}")
    print(f"parameters {rec.parameters:,} vs single-task {rec.single_task_parameters:,}; recommendation cost "
          f"{recommendation['trainings']} trainings, {recommendation['train_seconds']:.0f} s "
          f"(+ candidate methods {recommendation['candidate_methods_seconds']:.0f} s)")
    for r in sorted(rows, key=lambda r: -r["mean_gain"]):
        print(f"{r['method']:<16} groups {r['num_groups']:>2}  mean test gain {r['mean_gain']:+.4f} ± "
              f"{r['mean_gain_seed_std']:.4f}  gained {r['tasks_gained']:>2}  negative {r['tasks_negative']:>2}")
    if claims is not None:
        print(f"PVI claims: {claims}")
    print(f"wrote {path} (wall {payload['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
