"""Is ``partial`` mode (top k layers) a faithful proxy for ``full`` fine-tuning, with converged baselines?

Section 6 of docs/benchmarks.md compared ``partial`` (k = 1, 2, 3) with ``full`` at 4 epochs, where the ``full``
models were likely undertrained, and found no k faithful. This script repeats the comparison at budgets where the
single-task models have converged, on the 6 tasks of evidence v2 (``evidence_v2.py``), with its settings: 300
training rows per task, batch 16, ``V2_EPOCHS`` (8) epochs; ``partial`` at ``V2_LEARNING_RATE`` (1e-3), ``full``
at ``--full-learning-rate`` (default 1e-4: a whole encoder takes a smaller step).

For every mode and seed it trains each task alone and all tasks together (first, in every mode), then the groups
of ``--groups`` (default: two triples) and (``--pairs``) every pair. Reported per
mode: each task's **test** score alone and in each group, the gain of the group over single-task (mean over
seeds), and against ``full``: the largest score gap (points) and the share of (group, task) gains whose sign
agrees. A k is *faithful* when every task's single-task and all-in-one scores are within ``--tolerance``
(default 0.01, one point) of ``full`` and every gain has ``full``'s sign; the smallest faithful k is reported, or
none. ``--full-more-epochs`` (default twice the epochs; 0 to skip) also trains ``full`` single-task models longer
on the first seed and reports the validation rise, to show the ``full`` baseline is converged;
``--full-rate-check LR ...`` trains ``full`` single-task models at other learning rates on the first seed (a task
that ``full`` does not learn at ``--full-learning-rate`` may at a smaller one). ``--check-tasks`` and
``--rate-check-tasks`` limit the two checks to some tasks.

The k = V2_TRAINABLE_LAYERS (1) trainings have exactly the oracle's settings, so they are read from evidence
v2's ledger (``benchmarks/results/evidence_v2_ledger.json``) when the oracle has them; the others go to this
study's ledger ``benchmarks/results/partial_fidelity[_quick]_ledger.json`` (committed), so a fresh clone resumes.
``--shard I/N`` splits the trainings over N worker processes; a last run without it writes the result.

    python benchmarks/partial_fidelity.py --quick          # 2 tasks, 60 rows, 1 epoch, 1 seed (a smoke run)
    OMP_NUM_THREADS=1 python benchmarks/partial_fidelity.py --shard 0/2 &
    OMP_NUM_THREADS=1 python benchmarks/partial_fidelity.py --shard 1/2; python benchmarks/partial_fidelity.py
    python benchmarks/partial_fidelity.py --seeds 0 --groups --full-more-epochs 16 --full-rate-check 5e-5 2e-5 \
        --rate-check-tasks glue_stsb   # seed 0, single-task and all-in-one only, the rate check on one task

Writes benchmarks/results/partial_fidelity[_quick].json (``--result-name``: another name, e.g. for another partial
learning rate; the trainings still go to the one ledger, keyed by their settings).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, environment, write_results  # noqa: E402
from evidence_common import (  # noqa: E402
    V2_BATCH_SIZE,
    V2_EPOCHS,
    V2_LEARNING_RATE,
    V2_MAX_TRAIN,
    V2_TRAINABLE_LAYERS,
    open_study,
    save_fidelity_figure,
    study_config,
    v2_fields,
)
from evidence_oracle import QUICK_TASKS, TASKS  # noqa: E402
from evidence_v2 import Ledger, parse_shard, train_groups  # noqa: E402

from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator  # noqa: E402
from hf_taskgroup.pipeline import Pipeline  # noqa: E402
from hf_taskgroup.training.metrics import primary_metric  # noqa: E402

FULL_LEARNING_RATE = 1e-4
#: two groups of three beside all-in-one: the best partition of evidence v2's first (4-epoch) oracle seed
DEFAULT_EXTRA_GROUPS = ["glue_sst2+glue_stsb+mqp", "chemprot+medical_abstracts+ner_NCBI-disease"]
TOLERANCE = 0.01


def mode_name(finetune: str, k: int) -> str:
    return "full" if finetune == "full" else f"partial k={k}"


def compare(scores: dict[str, dict[tuple[str, ...], dict[str, float]]], tasks: Sequence[str], tolerance: float
            ) -> dict[str, dict[str, Any]]:
    """Each partial mode against ``full``: score gaps of single-task and all-in-one, and gain-sign agreement over
    every (group, task) of more than one task. ``scores[mode][group][task]`` is the mean test score."""
    full = scores["full"]
    everyone = tuple(sorted(tasks))
    out: dict[str, dict[str, Any]] = {}
    for mode, table in scores.items():
        if mode == "full":
            continue
        gaps = {f"{t} alone": table[(t,)][t] - full[(t,)][t] for t in tasks}
        gaps.update({f"{t} all-in-one": table[everyone][t] - full[everyone][t] for t in tasks})
        signs = []
        disagree = []
        for g in table:
            if len(g) == 1 or g not in full:
                continue
            for t in g:
                mine, theirs = table[g][t] - table[(t,)][t], full[g][t] - full[(t,)][t]
                agree = bool(np.sign(mine) == np.sign(theirs))
                signs.append(agree)
                if not agree:
                    disagree.append({"group": list(g), "task": t, "gain": mine, "full_gain": theirs})
        max_gap = max(abs(v) for v in gaps.values())
        out[mode] = {"gaps": gaps, "max_abs_gap": max_gap, "sign_agreement": float(np.mean(signs)) if signs else None,
                     "signs_compared": len(signs), "sign_disagreements": disagree,
                     "faithful": bool(max_gap <= tolerance and all(signs))}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 tasks, 60 rows, 1 epoch, seed 0, k = 1 2")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="partial mode's k values (default 1 2 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 (quick 0)")
    parser.add_argument("--max-train", type=int, default=None, help="training rows per task (default 300; quick 60)")
    parser.add_argument("--epochs", type=float, default=None, help="default V2_EPOCHS (8; quick 1)")
    parser.add_argument("--learning-rate", type=float, default=V2_LEARNING_RATE, help="partial mode's (default 1e-3)")
    parser.add_argument("--full-learning-rate", type=float, default=FULL_LEARNING_RATE)
    parser.add_argument("--full-more-epochs", type=float, default=None,
                        help="full single-task models also trained this long on the first seed (default twice "
                             "--epochs; 0: skip)")
    parser.add_argument("--full-rate-check", type=float, nargs="*", default=[],
                        help="also train full single-task models at these learning rates on the first seed (e.g. "
                             "5e-5 2e-5) and report their validation and test scores")
    parser.add_argument("--check-tasks", nargs="+", default=None,
                        help="the tasks of the --full-more-epochs check (default: every task)")
    parser.add_argument("--rate-check-tasks", nargs="+", default=None,
                        help="the tasks of the --full-rate-check (default: every task)")
    parser.add_argument("--groups", nargs="*", default=None,
                        help="further groups, 'a+b+c' (default: the two triples of DEFAULT_EXTRA_GROUPS; quick none)")
    parser.add_argument("--pairs", action="store_true", help="also every pair of tasks")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--result-name", default=None,
                        help="the result file's name (default partial_fidelity[_quick]); the ledger is shared")
    parser.add_argument("--shard", default=None, metavar="I/N", help="train only trainings I, I+N, ... and stop")
    args = parser.parse_args(argv)
    shard = parse_shard(args.shard)
    tasks = QUICK_TASKS[:2] if args.quick else TASKS
    ks = args.ks or ([1, 2] if args.quick else [1, 2, 3])
    seeds = args.seeds or ([0] if args.quick else [0, 1])
    max_train = args.max_train or (60 if args.quick else V2_MAX_TRAIN)
    epochs = args.epochs or (1.0 if args.quick else V2_EPOCHS)
    more = 2 * epochs if args.full_more_epochs is None else args.full_more_epochs
    extra = [tuple(sorted(g.split("+"))) for g in (args.groups if args.groups is not None else
                                                   ([] if args.quick else DEFAULT_EXTRA_GROUPS))]
    unknown = sorted({t for g in extra for t in g} - set(tasks))
    if unknown:
        raise SystemExit(f"error: --groups names task(s) {unknown} that are not among {tasks}")
    check_tasks, rate_tasks = list(args.check_tasks or tasks), list(args.rate_check_tasks or tasks)
    for flag, named in (("--check-tasks", check_tasks), ("--rate-check-tasks", rate_tasks)):
        unknown = sorted(set(named) - set(tasks))
        if unknown:
            raise SystemExit(f"error: {flag} names task(s) {unknown} that are not among {tasks}")
    study = open_study("evidence_v2_partial", args.quick, tasks, max_train, None)  # evidence v2's folder and cache
    if study is None:
        return
    suite, _, out = study
    name = "partial_fidelity_quick" if args.quick else "partial_fidelity"
    own = Ledger(RESULTS_DIR / f"{name}_ledger.json")
    name = args.result_name or name
    oracle_ledger = Ledger(RESULTS_DIR / "evidence_v2_ledger.json")
    base_groups = [(t,) for t in tasks] + [tuple(sorted(tasks))]
    if args.pairs:
        extra += [tuple(sorted(p)) for p in itertools.combinations(tasks, 2)]
    extra = [g for g in dict.fromkeys(extra) if g not in base_groups]
    groups = base_groups + extra
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    runs = [("full", V2_TRAINABLE_LAYERS, args.full_learning_rate)] + [("partial", k, args.learning_rate) for k in ks]
    start = time.perf_counter()
    tables: dict[str, dict[tuple[str, ...], dict[str, list[float]]]] = {}
    seconds: dict[str, float] = {}
    tokenizer = None
    # single-task and all-in-one in every mode first (the comparison of the issue), then the extra groups
    for phase in (base_groups, extra):
        for finetune, k, lr in runs:
            if not phase:
                continue
            fields = v2_fields(finetune, trainable_layers=k, learning_rate=lr, batch_size=V2_BATCH_SIZE, epochs=epochs)
            config = study_config(out / "pipeline", ["all_in_one"], seeds, epochs, num_groups=None,
                                  num_tasks=len(tasks), **fields)
            tokenizer = tokenizer or Pipeline(config, suite=suite)._tok()
            same_as_oracle = (not args.quick and finetune == "partial" and k == V2_TRAINABLE_LAYERS
                              and lr == V2_LEARNING_RATE and epochs == V2_EPOCHS and max_train == V2_MAX_TRAIN)
            label = mode_name(finetune, k)
            table, secs = train_groups(suite, phase, seeds, config, out / "pipeline" / "cache" / "evaluator",
                                       tokenizer, oracle_ledger if same_as_oracle else own, label=label, shard=shard)
            seconds[label] = seconds.get(label, 0.0) + secs
            tables.setdefault(label, {}).update(table)
    scores = {label: {g: {t: float(np.mean(v)) for t, v in per.items()} for g, per in table.items()
                      if all(len(v) == len(seeds) for v in per.values())} for label, table in tables.items()}
    per_seed = {label: {"+".join(g): per for g, per in table.items()} for label, table in tables.items()}
    checked = [0]  # check trainings so far: they are numbered across the checks, so --shard spreads them evenly

    def full_single(budget: float, lr: float, label: str, names: list[str]) -> dict[str, dict[str, float]]:
        """``full`` single-task models of the tasks ``names`` at this budget and rate, first seed: per task its
        validation and test primary metric (the cached ones only: a shard sees its own trainings)."""
        fields = v2_fields("full", trainable_layers=V2_TRAINABLE_LAYERS, learning_rate=lr, batch_size=V2_BATCH_SIZE,
                           epochs=budget)
        config = study_config(out / "pipeline", ["all_in_one"], seeds[:1], budget, num_groups=None,
                              num_tasks=len(tasks), **fields)
        mine = None if shard is None else ((shard[0] - checked[0]) % shard[1], shard[1])
        checked[0] += len(names)
        train_groups(suite, [(t,) for t in names], seeds[:1], config, out / "pipeline" / "cache" / "evaluator",
                     tokenizer, own, label=label, shard=mine)
        ev = make_suite_evaluator(suite, config.train_settings(seeds[0]), out / "pipeline" / "cache" / "evaluator",
                                  tokenizer=tokenizer)
        found = {}
        for t in names:
            if ev.is_cached((t,)):
                r = ev([t])[t]
                found[t] = {"validation": float(r[metric[t]]), "test": float(r[f"test_{metric[t]}"])}
        return found

    convergence: dict[str, Any] = {}
    if more > 0:  # is the full baseline converged? its single-task models at `more` epochs, first seed, validation
        for budget in (epochs, more):
            for t, r in full_single(budget, args.full_learning_rate, f"full {budget:g} epochs", check_tasks).items():
                convergence.setdefault(t, {})[f"{budget:g}"] = r["validation"]
    rate_check = {f"{lr:g}": full_single(epochs, lr, f"full lr {lr:g}", rate_tasks) for lr in args.full_rate_check}
    if shard is not None:
        print(f"shard {args.shard} done")
        return
    missing = [m for m, table in scores.items() if len(table) < len(groups)]
    if missing:
        raise SystemExit(f"trainings missing for {missing}: run the --shard workers to the end first")
    verdicts = compare(scores, tasks, args.tolerance)
    faithful = [int(m.split("=")[1]) for m, v in verdicts.items() if v["faithful"]]
    rise = {t: c[f"{more:g}"] - c[f"{epochs:g}"] for t, c in convergence.items() if len(c) == 2}
    payload = {
        "study": "partial_fidelity", "tasks": tasks, "metrics": metric, "seeds": seeds, "max_train": max_train,
        "epochs": epochs, "learning_rate_partial": args.learning_rate, "learning_rate_full": args.full_learning_rate,
        "batch_size": V2_BATCH_SIZE, "ks": ks, "tolerance": args.tolerance,
        "groups": ["+".join(g) for g in groups],
        "scores": {m: {"+".join(g): per for g, per in table.items()} for m, table in scores.items()},
        "per_seed": per_seed, "train_seconds": seconds, "comparison": verdicts,
        "smallest_faithful_k": min(faithful) if faithful else None,
        "full_convergence": {"epochs": [epochs, more], "validation": convergence, "rise": rise},
        "full_rate_check": {"learning_rates": rate_check, "reference": {
            f"{args.full_learning_rate:g}": {t: scores["full"][(t,)][t] for t in rate_tasks}}} if rate_check else None,
        "wall_seconds": time.perf_counter() - start, "environment": environment(),
    }
    path = write_results(name, payload)
    figure = None
    if not args.quick:  # one figure of every fidelity result on these tasks (other partial learning rates too)
        others = [json.loads(f.read_text()) for f in sorted(RESULTS_DIR.glob("partial_fidelity*.json"))
                  if f.stem != name and "quick" not in f.stem and "ledger" not in f.stem]
        others = [d for d in others if sorted(d.get("tasks", [])) == sorted(tasks)]
        try:
            figure = save_fidelity_figure([payload, *others], "partial_fidelity")
        except ImportError:  # matplotlib missing: the JSON is the result
            pass
    everyone = tuple(sorted(tasks))
    print(f"\ntest scores (mean of seeds {seeds}); gain of all-in-one over single-task in brackets")
    for t in tasks:
        cells = "  ".join(f"{m}: {scores[m][(t,)][t]:.3f} ({scores[m][everyone][t] - scores[m][(t,)][t]:+.3f})"
                          for m in scores)
        print(f"  {t:<20} {cells}")
    for m, v in verdicts.items():
        print(f"{m}: max gap to full {v['max_abs_gap']:.3f}, gain signs agree {v['sign_agreement']:.2f} "
              f"({v['signs_compared']}), {'FAITHFUL' if v['faithful'] else 'not faithful'}")
    if rise:
        print("full single-task validation rise with " + f"{more:g} epochs: "
              + ", ".join(f"{t} {r:+.3f}" for t, r in rise.items()))
    for lr, per in rate_check.items():
        print(f"full single-task at lr {lr} (seed {seeds[0]}, validation / test): "
              + ", ".join(f"{t} {r['validation']:.3f} / {r['test']:.3f}" for t, r in per.items()))
    print(f"smallest faithful k: {payload['smallest_faithful_k']}\nwrote {path}" + (f" and {figure}" if figure else ""))


if __name__ == "__main__":
    main()
