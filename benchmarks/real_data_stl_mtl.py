"""Single-task vs multi-task training on three related real tasks (frozen MiniLM, shared trunk).

Tasks (default): ``glue_stsb`` (sentence-pair similarity, regression), ``glue_mrpc`` (news
paraphrase, binary) and ``mqp`` (doctor-written medical question pairs: same question or not,
binary). All three ask whether two texts mean the same thing, graded (STS-B) or yes/no (MRPC,
MQP), across general news and clinical questions; they share an input format (text pairs) and a
skill (semantic equivalence), which is the setting where a shared trunk should transfer, and they
mix two head types (regression + classification), so the benchmark also exercises mixed-type MTL.

Every model is trained with :func:`hf_taskgroup.training.train.train_group` (the library's one code
path): ``finetune="frozen"`` (MiniLM encoder run once, pooled features cached and shared by all
runs), ``trunk_hidden_sizes=[256]``, the same settings for the three single-task models (STL) and
the one multi-task model (MTL, proportional task sampling, so each head sees as many updates as in
its STL run). Scores are each task's primary metric on its test split (accuracy, Pearson);
several seeds give mean ± std; the gain is MTL - STL paired by seed. Training sets are subsampled
(seeded, the same rows for every seed); validation and test are used whole.

Usage::

    python benchmarks/real_data_stl_mtl.py --quick
    python benchmarks/real_data_stl_mtl.py                     # 2000 train rows per task, seeds 0 1 2
    python benchmarks/real_data_stl_mtl.py --tasks glue_mrpc,mqp,glue_rte --max-train 0   # all train rows
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    SharedDataUnavailable,
    environment,
    format_table,
    load_shared_nlp_suite,
    mean_std,
    write_results,
)

RESULT_NAME = "real_data_stl_mtl"
DEFAULT_TASKS = "glue_stsb,glue_mrpc,mqp"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated tasks of ../shared/data/nlp")
    p.add_argument("--max-train", type=int, default=2000, help="train rows per task (0: all)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--epochs", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=None, help="default: the library's (1e-3 frozen)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--trunk", default="256", help="shared trunk sizes, comma-separated ('' for none)")
    p.add_argument("--finetune", default="frozen", choices=["frozen", "lora", "full"])
    p.add_argument("--result-name", default=RESULT_NAME, help="results/<name>.json")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (0: torch's default); one is faster on a shared 2-core machine")
    p.add_argument("--quick", action="store_true", help="300 train rows per task, one seed, 3 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.max_train, args.seeds, args.epochs = 300, "0", 3.0
    args.task_list = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.trunk_sizes = [int(x) for x in args.trunk.split(",") if x.strip()]
    if len(args.task_list) < 2:
        p.error("--tasks needs at least two tasks for multi-task training")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train STL for every task and MTL for the group, for every seed; return per-seed scores and timings."""
    from transformers import set_seed

    from hf_taskgroup.training.train import TrainSettings, train_group

    suite = load_shared_nlp_suite(args.task_list, max_train=args.max_train or None, seed=0)
    suite.validate()
    tasks = suite.task_names
    sizes = {t: {split: len(ds) for split, ds in suite[t].load().items()} for t in tasks}
    per_seed: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seed_list:
            settings = TrainSettings(
                finetune=args.finetune, pooling="mean", trunk_hidden_sizes=args.trunk_sizes,
                max_length=args.max_length, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
                per_device_train_batch_size=args.batch_size, seed=seed,
            )
            record: dict[str, Any] = {"seed": seed, "stl": {}, "mtl": {}, "seconds": {}}
            plans = [(f"stl:{t}", [t]) for t in tasks] + [("mtl", tasks)]
            for name, group in plans:
                set_seed(seed)  # train_group builds the heads before Trainer seeds: seed them here
                start = time.perf_counter()
                res = train_group(suite, group, settings, output_dir=Path(scratch) / name.replace(":", "_"))
                res.pop("trainer")
                record["seconds"][name] = {"total": time.perf_counter() - start, "train": res["train_seconds"]}
                for split in ("validation", "test"):
                    for task, score in _scores_split(res, split).items():
                        side = "mtl" if name == "mtl" else "stl"
                        record[side].setdefault(split, {})[task] = score
                record.setdefault("trainable_parameters", {})[name] = res["trainable_parameters"]
                print(f"  seed {seed} {name:<22} test "
                      + ", ".join(f"{t} {s:.4f}" for t, s in _scores_split(res, "test").items())
                      + f"  ({record['seconds'][name]['total']:.1f} s)", flush=True)
            per_seed.append(record)
    primary = {t: res["primary"][t] for t in tasks}
    baselines = {t: majority_baseline(suite[t]) for t in tasks}
    return {"tasks": tasks, "primary": primary, "sizes": sizes, "per_seed": per_seed, "baselines": baselines}


def majority_baseline(spec: Any) -> dict[str, float] | None:
    """Accuracy of always predicting the most frequent train label, per eval split (classification only)."""
    if spec.type != "classification":
        return None
    from collections import Counter

    data = spec.load()
    top = Counter(data["train"][spec.label_column]).most_common(1)[0][0]
    return {split: sum(v == top for v in data[split][spec.label_column]) / len(data[split])
            for split in ("validation", "test") if split in data}


def _scores_split(result: dict[str, Any], split: str) -> dict[str, float]:
    return {t: float(result["tasks"][t][split][result["primary"][t]]) for t in result["tasks"] if split in result["tasks"][t]}


def summarise(raw: dict[str, Any], split: str = "test") -> dict[str, Any]:
    """Mean ± std over seeds of STL, MTL and the paired gain, per task and averaged over tasks."""
    rows, summary = [], {}
    seeds = raw["per_seed"]
    for task in [*raw["tasks"], "mean"]:
        if task == "mean":
            stl = [sum(r["stl"][split].values()) / len(raw["tasks"]) for r in seeds]
            mtl = [sum(r["mtl"][split].values()) / len(raw["tasks"]) for r in seeds]
            metric = "-"
        else:
            stl = [r["stl"][split][task] for r in seeds]
            mtl = [r["mtl"][split][task] for r in seeds]
            metric = raw["primary"][task]
        gains = [m - s for m, s in zip(mtl, stl)]
        (sm, ss), (mm, ms), (gm, gs) = mean_std(stl), mean_std(mtl), mean_std(gains)
        summary[task] = {"metric": metric, "stl_mean": sm, "stl_std": ss, "mtl_mean": mm, "mtl_std": ms,
                         "gain_mean": gm, "gain_std": gs, "gains": gains}
        base = (raw.get("baselines") or {}).get(task)
        summary[task]["majority_baseline"] = base[split] if base else None
        rows.append([task, metric, f"{base[split]:.4f}" if base else "-", f"{sm:.4f} ± {ss:.4f}",
                     f"{mm:.4f} ± {ms:.4f}", f"{gm:+.4f} ± {gs:.4f}"])
    headers = ["task", "metric", "majority class", f"STL ({split})", f"MTL ({split})", "gain (MTL - STL)"]
    return {"split": split, "per_task": summary, "headers": headers, "rows": rows, "table": format_table(headers, rows)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"tasks {args.task_list}; train rows per task <= {args.max_train or 'all'}; seeds {args.seed_list}; "
          f"{args.finetune}, trunk {args.trunk_sizes}, {args.epochs:g} epochs, batch {args.batch_size}, "
          f"max_length {args.max_length}")
    try:
        raw = run(args)
    except SharedDataUnavailable as err:
        print(f"SKIPPED real_data_stl_mtl: {err}")
        return 0
    test = summarise(raw, "test")
    validation = summarise(raw, "validation")
    print(f"\n{test['table']}\n(mean ± std over {len(args.seed_list)} seed(s); gain paired by seed)")
    report = {
        "settings": {k: v for k, v in vars(args).items()},
        "environment": environment(),
        "tasks": raw["tasks"],
        "sizes": raw["sizes"],
        "primary": raw["primary"],
        "test": test,
        "validation": validation,
        "per_seed": raw["per_seed"],
        "wall_seconds": time.perf_counter() - start,
    }
    path = write_results(args.result_name, report)
    print(f"results written to {path}; {report['wall_seconds']:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
