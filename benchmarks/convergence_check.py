"""Are evidence v2's single-task models converged? Single-task trainings at the study's epochs and at more, side by side.

The budget rule of evidence v2 (``evidence_v2.py``) is the same number of optimizer steps on each task's own rows,
alone or in a group (same epochs; every task has the same row cap): in a group a task sees its rows as often as
alone. A group's gain could still be an artefact if the single-task models were undertrained (a group takes
more optimizer steps in all, and its shared layer gets them). This script trains every task alone with the
study's settings at ``--epochs`` (default ``V2_EPOCHS``) and at each of ``--more-epochs`` (default twice that),
for ``--seeds``, at ``--learning-rate`` (default ``V2_LEARNING_RATE``), and reports the **validation** score of
each: a task whose score still rises by more than ``--tolerance`` with twice the training was not converged.

Trainings go to the study's evaluator cache (``benchmarks/results/evidence/evidence_v2_partial/...``), so a
stopped run resumes. The runs behind docs/benchmarks.md section 7 (``evidence_report.py`` merges every
``convergence_check*.json`` into one table)::

    python benchmarks/convergence_check.py --quick   # 2 tasks, 60 rows, 1 vs 2 epochs (a smoke run)
    python benchmarks/convergence_check.py --learning-rate 3e-4 --epochs 4 --more-epochs 8   # seeds 0, 1
    python benchmarks/convergence_check.py --learning-rate 3e-4 --seeds 0 --epochs 8 --more-epochs 16 \
        --result-name convergence_check_16
    python benchmarks/convergence_check.py --learning-rate 1e-3 --seeds 0 --epochs 4 --more-epochs 8 \
        --result-name convergence_check_lr1e-3
    python benchmarks/convergence_check.py --seeds 0 --result-name convergence_check_lr1e-3_16   # 8 vs 16 at 1e-3

Writes benchmarks/results/convergence_check[_quick].json (or ``--result-name``).
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
    V2_BATCH_SIZE,
    V2_EPOCHS,
    V2_LEARNING_RATE,
    V2_MAX_TRAIN,
    V2_TRAINABLE_LAYERS,
    open_study,
    study_config,
    v2_fields,
)
from evidence_oracle import QUICK_TASKS, TASKS  # noqa: E402

from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator  # noqa: E402
from hf_taskgroup.pipeline import Pipeline  # noqa: E402
from hf_taskgroup.training.metrics import primary_metric  # noqa: E402

#: a validation gain larger than this from doubling the training counts as "not converged"
TOLERANCE = 0.01


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=float, default=None, help="the study's epochs (default V2_EPOCHS; quick 1)")
    parser.add_argument("--more-epochs", type=float, nargs="+", default=None,
                        help="longer budgets (default twice V2_EPOCHS; quick 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 (quick: 0)")
    parser.add_argument("--max-train", type=int, default=None, help="training rows per task (default 300; quick 60)")
    parser.add_argument("--learning-rate", type=float, default=V2_LEARNING_RATE, help="default: the study's (V2_LEARNING_RATE)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--result-name", default=None, help="default convergence_check[_quick]")
    args = parser.parse_args(argv)
    tasks = QUICK_TASKS[:2] if args.quick else TASKS
    epochs = args.epochs or (1.0 if args.quick else V2_EPOCHS)
    budgets = [epochs, *(args.more_epochs or ([2.0] if args.quick else [2 * V2_EPOCHS]))]
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    max_train = args.max_train or (60 if args.quick else V2_MAX_TRAIN)
    study = open_study("evidence_v2_partial", args.quick, tasks, max_train, None)  # the study's output folder
    if study is None:
        return
    suite, _, out = study
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    start = time.perf_counter()
    scores: dict[str, dict[str, dict[str, list[float]]]] = {t: {} for t in tasks}
    seconds = 0.0
    for budget in budgets:
        fields = v2_fields("partial", trainable_layers=V2_TRAINABLE_LAYERS, learning_rate=args.learning_rate,
                           batch_size=V2_BATCH_SIZE, epochs=budget)
        config = study_config(out / "pipeline", ["all_in_one"], seeds, budget, num_groups=None,
                              num_tasks=len(tasks), **fields)
        tokenizer = Pipeline(config, suite=suite)._tok()
        for seed in seeds:
            ev = make_suite_evaluator(suite, config.train_settings(seed), out / "pipeline" / "cache" / "evaluator",
                                      tokenizer=tokenizer)
            for task in tasks:
                result = ev([task])[task]
                seconds += float(ev.training_seconds((task,)) or 0.0)
                per = scores[task].setdefault(f"{budget:g}", {"validation": [], "test": []})
                per["validation"].append(float(result[metric[task]]))
                per["test"].append(float(result[f"test_{metric[task]}"]))
                print(f"{budget:g} epochs  seed {seed}  {task:<20} validation {result[metric[task]]:.4f}  "
                      f"test {result[f'test_{metric[task]}']:.4f}", flush=True)
    rows: dict[str, Any] = {}
    base = f"{epochs:g}"
    for task in tasks:
        val = {b: float(np.mean(v["validation"])) for b, v in scores[task].items()}
        rise = max(val[b] for b in val if b != base) - val[base]
        rows[task] = {"metric": metric[task], "validation_mean": val,
                      "test_mean": {b: float(np.mean(v["test"])) for b, v in scores[task].items()},
                      "validation_rise_with_more_training": rise, "converged": rise <= args.tolerance,
                      "per_seed": scores[task]}
    payload = {"study": "convergence_check", "tasks": tasks, "seeds": seeds, "epochs": epochs, "budgets": budgets,
               "max_train": max_train, "tolerance": args.tolerance, "finetune": "partial",
               "trainable_layers": V2_TRAINABLE_LAYERS, "learning_rate": args.learning_rate, "batch_size": V2_BATCH_SIZE,
               "rows": rows, "train_seconds": seconds, "wall_seconds": time.perf_counter() - start,
               "environment": environment()}
    path = write_results(args.result_name or ("convergence_check_quick" if args.quick else "convergence_check"), payload)
    print(f"\nsingle-task validation score, mean of seeds {seeds}: {base} epochs against "
          f"{', '.join(f'{b:g}' for b in budgets[1:])}")
    for task, r in rows.items():
        cells = "  ".join(f"{b}: {v:.4f}" for b, v in r["validation_mean"].items())
        print(f"  {task:<20} {r['metric']:<9} {cells}  rise {r['validation_rise_with_more_training']:+.4f}  "
              f"{'converged' if r['converged'] else 'NOT converged'}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
