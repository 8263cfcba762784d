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

``--oracle evidence_v2`` compares with the oracle of ``benchmarks/evidence_v2.py`` instead (a fine-tuned shared
encoder: ``partial`` mode, k = 1): the trained subsets are read from its committed ledger
``benchmarks/results/evidence_v2[_quick]_ledger.json`` and the settings (mode, k, epochs, learning rate, batch,
rows, max_length, trunk) from its ``..._progress.json``, so the base model trains exactly as each oracle subset
did. Per subset and task the trained validation loss and test metric are the mean over the seeds for which
*every* subset is in the ledger (at least one is needed; the run refuses otherwise, naming what is missing). The
cost is compared with the ledger's recorded training seconds of one seed (mean over those seeds). The lower
layers' token states (partial mode) come from the shared on-disk cache and are left out like the features above.

    python benchmarks/grad_estimate_validation.py --quick   # 4 tasks, 200 train rows (a minute or two)
    python benchmarks/grad_estimate_validation.py           # the 6 tasks, 1000 train rows
    python benchmarks/grad_estimate_validation.py --oracle evidence_v2 [--quick]   # partial mode, evidence_v2's ledger
    python benchmarks/grad_estimate_validation.py --oracle evidence_v2 --gradients-only   # while the oracle runs

Writes benchmarks/results/grad_estimate_validation[_quick].json
(``--oracle evidence_v2``: grad_estimate_validation_v2[_quick].json).
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
from evidence_common import all_partitions, open_study, training_key  # noqa: E402


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def load_frozen_oracle(quick: bool) -> dict[str, Any]:
    """The trained subsets of ``evidence_oracle.py`` (frozen mode) as ``{"tasks", "max_train", "recorded_settings",
    "subsets": {(tasks): {task: {"val_loss", "test_mean"}}}, "seeds", "train_seconds_one_seed", ...}``."""
    oracle = load_results("evidence_oracle_quick" if quick else "evidence_oracle")
    return {"source": "evidence_oracle", "tasks": oracle["tasks"], "max_train": oracle["settings"]["max_train"],
            "recorded_settings": oracle["settings"]["train"], "seeds": oracle["seeds"],
            "subsets": {tuple(k.split("+")): {t: {"val_loss": v["val_loss"], "test_mean": v["test_mean"]}
                                              for t, v in per.items()} for k, per in oracle["subsets"].items()},
            "train_seconds_all_seeds": float(oracle["oracle_train_seconds"]),
            "train_seconds_one_seed": float(oracle["oracle_train_seconds"]) / len(oracle["seeds"])}


def read_evidence_v2(quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(progress, ledger)`` of ``evidence_v2.py``: a clear ``SystemExit`` naming the file when one is missing."""
    stem = "evidence_v2_quick" if quick else "evidence_v2"
    out = []
    for suffix in ("progress", "ledger"):
        path = RESULTS_DIR / f"{stem}_{suffix}.json"
        if not path.is_file():
            raise SystemExit(f"--oracle evidence_v2: {path} not found; run `python benchmarks/evidence_v2.py"
                             f"{' --quick' if quick else ''} --stage oracle` first")
        try:
            out.append(load_results(f"{stem}_{suffix}"))
        except ValueError as err:
            raise SystemExit(f"--oracle evidence_v2: {path} is not valid JSON ({err})") from err
    progress, ledger = out
    for field_ in ("tasks", "max_train", "seeds", "settings"):
        if field_ not in progress:
            raise SystemExit(f"--oracle evidence_v2: {RESULTS_DIR / f'{stem}_progress.json'} has no {field_!r}")
    if not isinstance(ledger.get("entries"), dict):
        raise SystemExit(f"--oracle evidence_v2: {RESULTS_DIR / f'{stem}_ledger.json'} has no 'entries'")
    return progress, ledger


def evidence_v2_oracle(progress: dict[str, Any], ledger: dict[str, Any], suite: Any) -> dict[str, Any]:
    """The trained subsets of ``evidence_v2.py``'s ledger, like :func:`load_frozen_oracle`.

    An entry is found by the ledger's own key (settings with the seed, seed, group, each member's data
    fingerprint, for the suite at the progress file's ``max_train``), so the low-resource stage's trainings of
    the same groups are never mistaken for the oracle's. Seeds with every subset are used, averaged; the others
    are listed in ``"seeds_incomplete"``.
    """
    from hf_taskgroup.artifacts import data_fingerprint
    from hf_taskgroup.training.metrics import primary_metric

    tasks = list(progress["tasks"])
    subsets = [tuple(sorted(c)) for r in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, r)]
    data = {t: data_fingerprint(suite[t]) for t in tasks}
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    entries = ledger["entries"]
    first_by_group: dict[tuple[int, tuple[str, ...]], dict[str, Any]] = {}
    for entry in entries.values():  # ledger order: the oracle stage writes before any later stage
        seed = int(entry["seed"])
        if entry.get("settings") == dict(progress["settings"], seed=seed):  # never another settings' training
            first_by_group.setdefault((seed, tuple(sorted(entry["group"]))), entry)

    def lookup(seed: int) -> dict[tuple[str, ...], dict[str, Any]]:
        settings = dict(progress["settings"], seed=seed)
        found = {}
        for g in subsets:
            key = training_key(settings, seed, g, data)
            if key in entries:
                found[g] = entries[key]
        return found

    found = {int(seed): lookup(int(seed)) for seed in progress["seeds"]}
    match = "ledger key (settings, seed, group, data fingerprints)"
    if not any(found.values()) and first_by_group:
        # no key matches (e.g. the data fingerprint changed since the ledger was written): by the recorded
        # settings, seed and group
        match = "recorded settings, seed and group (no ledger key matched: the data fingerprints differ)"
        print(f"WARNING: no ledger entry has this suite's key; matching by {match}", flush=True)
        found = {int(seed): {g: first_by_group[(int(seed), g)] for g in subsets if (int(seed), g) in first_by_group}
                 for seed in progress["seeds"]}
    complete = [s for s, f in found.items() if len(f) == len(subsets)]
    if not complete:
        missing = {s: [g for g in subsets if g not in f] for s, f in found.items()}
        detail = "; ".join(f"seed {s}: {len(m)} of {len(subsets)} missing, e.g. {['+'.join(g) for g in m[:3]]}"
                           for s, m in missing.items())
        raise SystemExit(f"--oracle evidence_v2: no seed has all {len(subsets)} subsets of {tasks} in the ledger "
                         f"({detail}); let `benchmarks/evidence_v2.py --stage oracle` finish at least one seed")
    table: dict[tuple[str, ...], dict[str, dict[str, float]]] = {}
    for g in subsets:
        for t in g:
            rows = [found[s][g]["results"][t] for s in complete]
            for r, s in zip(rows, complete):
                if "loss" not in r or f"test_{metric[t]}" not in r:
                    raise SystemExit(f"--oracle evidence_v2: ledger entry of seed {s}, group {'+'.join(g)} has no "
                                     f"'loss' or 'test_{metric[t]}' for task {t!r} (has {sorted(r)})")
            table.setdefault(g, {})[t] = {"val_loss": float(np.mean([r["loss"] for r in rows])),
                                          "test_mean": float(np.mean([r[f"test_{metric[t]}"] for r in rows]))}
    per_seed_seconds = {s: float(sum(float(e["seconds"]) for e in found[s].values())) for s in complete}
    return {"source": "evidence_v2 ledger", "tasks": tasks, "max_train": int(progress["max_train"]),
            "recorded_settings": dict(progress["settings"]), "seeds": complete, "metrics": metric,
            "seeds_incomplete": {s: f"{len(f)}/{len(subsets)} subsets" for s, f in found.items() if s not in complete},
            "ledger_match": match, "subsets": table,
            "train_seconds_per_seed": per_seed_seconds,
            "train_seconds_all_seeds": float(sum(per_seed_seconds.values())),
            "train_seconds_one_seed": float(np.mean(list(per_seed_seconds.values())))}


def warm_encoder_cache(suite: Any, tasks: Sequence[str], settings: Any, tokenizer: Any) -> float:
    """Encode the train and validation splits once into the shared on-disk cache (pooled features in frozen
    mode, the lower layers' token states in partial mode), so the timed part is training + gradients only;
    returns the seconds it took."""
    from hf_taskgroup.training.features import default_feature_cache
    from hf_taskgroup.training.modeling import MultiTaskModel
    from hf_taskgroup.training.train import _TOKENIZED, default_model_path

    t0 = time.perf_counter()
    probe = MultiTaskModel.from_encoder(settings.model_name_or_path or default_model_path(), suite.task_infos(),
                                        pooling=settings.pooling, trunk_hidden_sizes=settings.trunk_hidden_sizes)
    cache = default_feature_cache()
    for t in tasks:
        tok = _TOKENIZED.get(suite, t, tokenizer, settings.max_length)
        for split in ("train", "validation"):
            if settings.finetune == "partial":
                cache.add_token_states(probe, t, split, tok[split], trainable_layers=settings.trainable_layers,
                                       tokenizer=tokenizer)
            elif settings.finetune == "frozen":
                cache.add_features(probe, t, split, tok[split], tokenizer=tokenizer)
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> None:
    import torch

    from hf_taskgroup.grouping import group_tasks
    from hf_taskgroup.grouping.methods.grad_estimate import (
        GradEstimateConfig,
        train_and_collect_gradients,
    )
    from hf_taskgroup.training.train import TrainSettings, default_model_path, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--oracle", choices=("evidence_oracle", "evidence_v2"), default="evidence_oracle",
                        help="the trained subsets compared with: evidence_oracle.py's JSON (frozen mode, default) or "
                             "evidence_v2.py's ledger (its mode and settings, from its progress file)")
    parser.add_argument("--projection-dim", type=int, default=GradEstimateConfig.projection_dim)
    parser.add_argument("--max-units-per-example", type=int, default=8,
                        help="labelled tokens per NER sentence that get a gradient (seeded; bounds the CPU time)")
    parser.add_argument("--projection-cache-mb", type=float, default=2048.0,
                        help="keep the projection matrix in memory up to this size (partial mode, k = 1: ~1.9 GB; "
                             "else it is regenerated for every buffer of units)")
    parser.add_argument("--regularization", type=float, nargs="+", default=[1.0, 0.1],
                        help="values compared; the first is the one whose partition and cost are reported")
    parser.add_argument("--gradients-only", action="store_true",
                        help="--oracle evidence_v2: train the base model and compute the gradients (cached under the "
                             "output folder) with the oracle's settings, then stop; the comparison, which needs a "
                             "complete oracle seed, reuses them")
    args = parser.parse_args(argv)
    if args.gradients_only and args.oracle != "evidence_v2":
        parser.error("--gradients-only goes with --oracle evidence_v2")
    torch.set_num_threads(1)
    if args.oracle == "evidence_v2":
        progress, ledger = read_evidence_v2(args.quick)
        tasks, max_train = list(progress["tasks"]), int(progress["max_train"])
        stem = "grad_estimate_validation_v2"
    else:
        oracle = load_frozen_oracle(args.quick)
        tasks, max_train = oracle["tasks"], oracle["max_train"]
        stem = "grad_estimate_validation"
    study = open_study(stem, args.quick, tasks, max_train, None)
    if study is None:
        return
    suite, name, out = study
    if args.gradients_only:  # the oracle's settings, without its (possibly unfinished) trainings
        oracle = {"source": "evidence_v2 settings (--gradients-only)", "seeds": [], "recorded_settings": dict(progress["settings"])}
    elif args.oracle == "evidence_v2":
        oracle = evidence_v2_oracle(progress, ledger, suite)
    # the oracle study's own recorded settings (mode, k, trunk, epochs, learning rate, batch, max_length, seed 0)
    settings = TrainSettings(**oracle["recorded_settings"])
    if settings.to_dict() != oracle["recorded_settings"]:
        raise SystemExit(f"settings differ from the oracle study's: {settings.to_dict()} vs {oracle['recorded_settings']}")
    print(f"oracle: {oracle['source']}, {len(tasks)} tasks, seeds {oracle['seeds']}, {settings.finetune} mode"
          + (f" (k = {settings.trainable_layers})" if settings.finetune == "partial" else "")
          + f", {max_train} train rows, {settings.num_train_epochs:g} epochs at {settings.learning_rate:g}, "
            f"batch {settings.per_device_train_batch_size}", flush=True)
    tokenizer = load_tokenizer(settings.model_name_or_path or default_model_path())

    # encode once (shared on-disk cache) so that the timed part is training + gradients only
    encode_seconds = warm_encoder_cache(suite, tasks, settings, tokenizer)

    cfg = GradEstimateConfig(projection_dim=args.projection_dim, regularization=args.regularization[0],
                             max_units_per_example=args.max_units_per_example,
                             projection_cache_mb=args.projection_cache_mb)
    t0 = time.perf_counter()
    feats = train_and_collect_gradients(suite, tasks, settings, cfg, tokenizer=tokenizer, cache_dir=out / "gradients")
    collect_seconds = time.perf_counter() - t0
    base_seconds = float(feats.info["train_seconds"])
    grad_seconds = float(feats.info["gradient_seconds"])
    print(f"base training {base_seconds:.1f}s, gradients {grad_seconds:.1f}s (this call {collect_seconds:.1f}s; "
          f"encoding {encode_seconds:.1f}s, excluded); {feats.info['num_parameters']} shared parameters; "
          f"units {feats.info['units']}", flush=True)
    if args.gradients_only:
        print(f"gradients cached under {out / 'gradients'}; run again without --gradients-only once a seed of the "
              f"oracle is complete")
        return

    subsets = [tuple(sorted(c)) for r in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, r)]
    trained = oracle["subsets"]
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
    oracle_seconds_one_seed = float(oracle["train_seconds_one_seed"])
    oracle_seconds_in_run = 2 ** (len(tasks) - 1) * base_seconds
    main_row = rows[0]
    cost = main_row["surrogate"]["seconds"]
    payload = {
        "study": name, "tasks": tasks, "settings": settings.to_dict(), "max_train": max_train,
        "gradient_config": {"projection_dim": args.projection_dim, "max_units_per_example": args.max_units_per_example,
                            "projection_cache_mb": args.projection_cache_mb, "projection_cached": feats.info.get("projection_cached"),
                            "split": cfg.split, "search_default": cfg.search, "grouping_default": cfg.grouping},
        "environment": environment(), "units": feats.info["units"], "num_parameters": feats.info["num_parameters"],
        "base_train_seconds": base_seconds, "gradient_seconds": grad_seconds, "encode_seconds_excluded": encode_seconds,
        "oracle": {"source": oracle["source"], "seeds": oracle["seeds"],
                   **{k: oracle[k] for k in ("seeds_incomplete", "ledger_match", "metrics", "train_seconds_per_seed")
                      if k in oracle},
                   "train_seconds_all_seeds": oracle["train_seconds_all_seeds"],
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
    print(f"cost {cost:.1f}s = {payload['cost_fraction_vs_recorded_oracle']:.3f} of the recorded oracle ({oracle['source']}, one seed, "
          f"{oracle_seconds_one_seed:.0f}s), {payload['cost_fraction_vs_in_run_oracle']:.3f} of 2^(n-1) x this base training")
    print("references: " + ", ".join(f"{k} {v:.3f}" for k, v in references.items()))
    print(f"wrote {path}; gradients cached under {RESULTS_DIR.name}/evidence/{name}/gradients")


if __name__ == "__main__":
    main()
