"""grad_estimate (Grad-TAG) against real trainings of every subset: the 6 tasks of the oracle study.

One base model is trained on all tasks with the oracle study's settings (MiniLM, ``frozen`` mode with the
256-unit shared trunk, 10 epochs at 3e-3, batch 32, 1000 train rows per task, seed 0), the projected
output gradients of every train and validation unit are taken at it, and the linearised fine-tuning of
each of the 2^n - 1 subsets gives an estimated validation loss of each of its tasks. These are compared
with the losses of the subsets actually trained by ``benchmarks/evidence_oracle.py`` (mean of its seeds,
read from ``benchmarks/results/evidence_oracle[_quick].json``; the estimate runs in the same mode, so the
comparison is like for like):

- Spearman rank correlation of estimated vs trained loss over all (subset, task) pairs ("pooled"; task
  scales differ, so this is mostly the task identity) and within each task over the subsets holding it
  ("per task": does the estimate order a task's partners as training does?);
- mean relative error ``|est - trained| / trained`` over the pairs;
- the rank, among all partitions (scored by the oracle's mean test metric), of the partition that
  ``grad_estimate`` picks (default search; and the exhaustive search over the estimates);
- its cost (base training + gradient pass + fits) as a fraction of training every subset, measured two
  ways: against the recorded oracle training time of one seed, and against 2^(n-1) x this run's own
  base training (every task appears in 2^(n-1) subsets and training time scales with the examples).

Encoder features (frozen mode) come from the shared on-disk feature cache and are left out of both costs.

    python benchmarks/grad_estimate_validation.py --quick   # 4 tasks, 200 train rows (a minute or two)
    python benchmarks/grad_estimate_validation.py           # the 6 tasks, 1000 train rows

Writes benchmarks/results/grad_estimate_validation[_quick].json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, environment, format_table, load_results, write_results  # noqa: E402
from evidence_common import all_partitions, open_study, study_config  # noqa: E402


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    from hf_taskgroup.grouping import group_tasks
    from hf_taskgroup.grouping.methods.grad_estimate import (
        GradEstimateConfig,
        train_and_collect_gradients,
    )
    from hf_taskgroup.training.train import default_model_path, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--projection-dim", type=int, default=GradEstimateConfig.projection_dim)
    parser.add_argument("--max-units-per-example", type=int, default=8,
                        help="labelled tokens per NER sentence that get a gradient (seeded; bounds the CPU time)")
    parser.add_argument("--regularization", type=float, nargs="+", default=[1.0, 0.1],
                        help="values compared; the first is the one whose partition and cost are reported")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    oracle = load_results("evidence_oracle_quick" if args.quick else "evidence_oracle")
    tasks, max_train = oracle["tasks"], oracle["settings"]["max_train"]
    study = open_study("grad_estimate_validation", args.quick, tasks, max_train, None)
    if study is None:
        return
    suite, name, out = study
    epochs = float(oracle["settings"]["train"]["num_train_epochs"])
    settings = study_config(out, ["grad_estimate"], [0], epochs, num_groups=None, num_tasks=len(tasks)).train_settings(0)
    if settings.to_dict() != oracle["settings"]["train"]:
        raise SystemExit(f"settings differ from the oracle study's: {settings.to_dict()} vs {oracle['settings']['train']}")
    tokenizer = load_tokenizer(default_model_path())

    # encode once (shared feature cache) so that the timed part is training + gradients only
    t0 = time.perf_counter()
    from hf_taskgroup.training.features import default_feature_cache
    from hf_taskgroup.training.modeling import MultiTaskModel
    from hf_taskgroup.training.train import _TOKENIZED

    probe = MultiTaskModel.from_encoder(default_model_path(), suite.task_infos(), pooling=settings.pooling,
                                        trunk_hidden_sizes=settings.trunk_hidden_sizes)
    for t in tasks:
        tok = _TOKENIZED.get(suite, t, tokenizer, settings.max_length)
        for split in ("train", "validation"):
            default_feature_cache().add_features(probe, t, split, tok[split], tokenizer=tokenizer)
    encode_seconds = time.perf_counter() - t0
    del probe

    cfg = GradEstimateConfig(projection_dim=args.projection_dim, regularization=args.regularization[0],
                             max_units_per_example=args.max_units_per_example)
    t0 = time.perf_counter()
    feats = train_and_collect_gradients(suite, tasks, settings, cfg, tokenizer=tokenizer, cache_dir=out / "gradients")
    collect_seconds = time.perf_counter() - t0
    base_seconds = float(feats.info["train_seconds"])
    grad_seconds = float(feats.info["gradient_seconds"])
    print(f"base training {base_seconds:.1f}s, gradients {grad_seconds:.1f}s (this call {collect_seconds:.1f}s; "
          f"encoding {encode_seconds:.1f}s, excluded); units {feats.info['units']}", flush=True)

    subsets = [tuple(sorted(c)) for r in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, r)]
    trained = {tuple(k.split("+")): v for k, v in oracle["subsets"].items()}
    test_score = {g: {t: v["test_mean"] for t, v in per.items()} for g, per in trained.items()}
    partitions = all_partitions(tasks)
    scores = sorted((float(np.mean([test_score[tuple(sorted(b))][t] for b in p for t in b])) for p in partitions),
                    reverse=True)

    def rank_of(groups: Sequence[Sequence[str]]) -> tuple[int, float]:
        value = float(np.mean([test_score[tuple(sorted(b))][t] for b in groups for t in b]))
        return int(np.sum(np.array(scores) > value + 1e-12)) + 1, value

    rows: list[dict[str, Any]] = []
    for reg in args.regularization:
        searches = {}
        for search in ("surrogate", "exhaustive"):  # surrogate first: its fits are its own (timed in its cost)
            start = time.perf_counter()
            g = group_tasks("grad_estimate", tasks, gradients=feats, regularization=reg, search=search,
                            projection_dim=args.projection_dim, max_units_per_example=args.max_units_per_example)
            seconds = base_seconds + grad_seconds + (time.perf_counter() - start)
            rank, value = rank_of(g.groups)
            searches[search] = {"groups": g.groups, "rank": rank, "score": value, "seconds": seconds,
                                "fits": g.scores["fits"], "subsets_estimated": g.scores["subsets_estimated"]}
        est = feats.estimator(regularization=reg, split=cfg.split, max_iter=cfg.max_iter)  # the same fits
        t0 = time.perf_counter()
        pairs = [(g, t, est(list(g))[t]["loss"], trained[g][t]["val_loss"]) for g in subsets for t in g]
        fit_all_seconds = time.perf_counter() - t0
        e = np.array([p[2] for p in pairs])
        y = np.array([p[3] for p in pairs])
        per_task = {t: spearman([p[2] for p in pairs if p[1] == t], [p[3] for p in pairs if p[1] == t]) for t in tasks}
        # the gain of training with partners: change from the task alone, estimated vs trained
        alone_e = {t: est([t])[t]["loss"] for t in tasks}
        alone_y = {t: trained[(t,)][t]["val_loss"] for t in tasks}
        gain_sign = [np.sign(p[2] - alone_e[p[1]]) == np.sign(p[3] - alone_y[p[1]]) for p in pairs if len(p[0]) > 1]
        row: dict[str, Any] = {
            "regularization": reg, "pairs": len(pairs),
            "spearman_pooled": spearman(e, y), "spearman_per_task": per_task,
            "spearman_per_task_mean": float(np.nanmean(list(per_task.values()))),
            "mean_relative_error": float(np.mean(np.abs(e - y) / np.abs(y))),
            "mean_relative_error_per_task": {t: float(np.mean([abs(p[2] - p[3]) / abs(p[3]) for p in pairs if p[1] == t]))
                                             for t in tasks},
            "gain_sign_agreement": float(np.mean(gain_sign)),
            "fit_seconds_all_subsets": fit_all_seconds,
            "estimates": {"+".join(p[0]) + ":" + p[1]: [p[2], p[3]] for p in pairs},
        }
        row.update(searches)
        rows.append(row)
        print(f"reg {reg:g}: spearman pooled {row['spearman_pooled']:.3f}, per task {row['spearman_per_task_mean']:.3f}, "
              f"MRE {row['mean_relative_error']:.3f}, gain sign {row['gain_sign_agreement']:.2f}; "
              f"surrogate rank {row['surrogate']['rank']}, exhaustive rank {row['exhaustive']['rank']}", flush=True)

    # reference predictors, for scale: every subset predicted by the task's trained single-task loss, or by the
    # base model's loss (the estimate at w = 0)
    pairs_y = [(g, t, trained[g][t]["val_loss"]) for g in subsets for t in g]
    base_loss = feats.estimator(regularization=args.regularization[0]).base_losses()
    references = {
        "mre_single_task_loss": float(np.mean([abs(trained[(t,)][t]["val_loss"] - y) / y for _, t, y in pairs_y])),
        "mre_base_model_loss": float(np.mean([abs(base_loss[t] - y) / y for _, t, y in pairs_y])),
        "spearman_pooled_base_model_loss": spearman([base_loss[t] for _, t, _ in pairs_y], [y for *_, y in pairs_y]),
    }
    n_seeds = len(oracle["seeds"])
    oracle_seconds_one_seed = float(oracle["oracle_train_seconds"]) / n_seeds
    oracle_seconds_in_run = 2 ** (len(tasks) - 1) * base_seconds
    main_row = rows[0]
    cost = main_row["surrogate"]["seconds"]
    payload = {
        "study": "grad_estimate_validation", "tasks": tasks, "settings": settings.to_dict(), "max_train": max_train,
        "gradient_config": {"projection_dim": args.projection_dim, "max_units_per_example": args.max_units_per_example, "split": cfg.split, "search_default": cfg.search,
                            "grouping_default": cfg.grouping},
        "environment": environment(), "units": feats.info["units"], "num_parameters": feats.info["num_parameters"],
        "base_train_seconds": base_seconds, "gradient_seconds": grad_seconds, "encode_seconds_excluded": encode_seconds,
        "oracle": {"seeds": oracle["seeds"], "train_seconds_all_seeds": oracle["oracle_train_seconds"],
                   "train_seconds_one_seed": oracle_seconds_one_seed,
                   "train_seconds_in_run_estimate": oracle_seconds_in_run,
                   "partitions": len(partitions), "best_score": scores[0],
                   "single_task_rank": rank_of([[t] for t in tasks])[0]},
        "cost_seconds": cost,
        "cost_fraction_vs_recorded_oracle": cost / oracle_seconds_one_seed,
        "cost_fraction_vs_in_run_oracle": cost / oracle_seconds_in_run,
        "targets": {"cost_fraction": 0.03, "mean_relative_error": 0.05, "spearman": 0.8},
        "references": references,
        "rows": rows,
    }
    path = write_results(name, payload)
    headers = ["reg", "Spearman pooled", "Spearman per task", "MRE", "gain sign", "surrogate rank", "exhaustive rank"]
    print(format_table(headers, [[r["regularization"], f"{r['spearman_pooled']:.3f}", f"{r['spearman_per_task_mean']:.3f}",
                                  f"{r['mean_relative_error']:.3f}", f"{r['gain_sign_agreement']:.2f}",
                                  f"{r['surrogate']['rank']}/{len(partitions)}", f"{r['exhaustive']['rank']}/{len(partitions)}"]
                                 for r in rows]))
    print(f"cost {cost:.1f}s = {payload['cost_fraction_vs_recorded_oracle']:.3f} of the recorded oracle (one seed, "
          f"{oracle_seconds_one_seed:.0f}s), {payload['cost_fraction_vs_in_run_oracle']:.3f} of 2^(n-1) x this base training")
    print("references: " + ", ".join(f"{k} {v:.3f}" for k, v in references.items()))
    print(f"wrote {path}; gradients cached under {RESULTS_DIR.name}/evidence/{name}/gradients")


if __name__ == "__main__":
    main()
