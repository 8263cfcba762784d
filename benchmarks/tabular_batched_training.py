"""Training the groups of random partitions one at a time vs batched (train_tabular_groups), side by side.

Draws N uniform random partitions of a tabular suite's tasks (``sample_partition``, as the random
best-of-R baseline of ``tabular_grouping.py`` does), collects their distinct groups, and trains them
(1) one at a time with ``train_tabular_group`` and (2) with ``train_tabular_groups``, in chunks of about
one partition's worth of groups, ten partitions' worth, and the chunk size ``tabular_grouping.py`` uses.
Reports the wall time of each, the speed-up over one at a time, and how far the batched results are
from the separate ones (max absolute difference of validation / test losses; groups whose early-stopping
epoch differs). Same trainer settings as ``tabular_grouping.py`` (Landmine: 30 epochs), torch on one thread,
no cache: every group is trained in every mode.

    python benchmarks/tabular_batched_training.py --quick             # 3 partitions of Landmine
    python benchmarks/tabular_batched_training.py --partitions 20     # 20 partitions

Writes benchmarks/results/tabular_batched_training[_quick].json.
Data: ../shared/data/tabular/{landmine,parkinsons}.csv (skipped with a message when absent).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tabular_grouping import DATASETS, EVALUATE_CHUNK  # noqa: E402

from hf_taskgroup.grouping.evaluators.base import canonical_group  # noqa: E402
from hf_taskgroup.grouping.evaluators.tabular import (  # noqa: E402
    DEFAULT_TRAIN_KWARGS,
    TabularSuite,
    train_tabular_group,
    train_tabular_groups,
)
from hf_taskgroup.grouping.methods.baselines import sample_partition  # noqa: E402
from hf_taskgroup.utils import atomic_write_json  # noqa: E402

Results = list[dict[str, dict[str, float]]]


def distinct_groups(tasks: list[str], partitions: int, seed: int) -> list[list[str]]:
    """The distinct groups (canonical, in order of first appearance) of ``partitions`` random partitions."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, ...], None] = {}
    for _ in range(partitions):
        for block in sample_partition(len(tasks), rng):
            groups.setdefault(canonical_group([tasks[i] for i in block]))
    return [list(g) for g in groups]


def train_in_chunks(suite: TabularSuite, groups: list[list[str]], chunk: int, kwargs: dict[str, Any]
                    ) -> tuple[Results, float]:
    """Results of ``groups`` trained ``chunk`` at a time with train_tabular_groups, and the wall time."""
    start = time.perf_counter()
    results: Results = []
    for i in range(0, len(groups), chunk):
        results += train_tabular_groups(suite, groups[i:i + chunk], **kwargs)
    return results, time.perf_counter() - start


def difference(a: Results, b: Results) -> tuple[float, int]:
    """Max absolute difference of loss / test_loss over every (group, task), and groups whose best epoch differs."""
    worst, epochs = 0.0, 0
    for ra, rb in zip(a, b):
        epochs += any(ra[t]["best_epoch"] != rb[t]["best_epoch"] for t in ra)
        worst = max([worst] + [abs(ra[t][m] - rb[t][m]) for t in ra for m in ("loss", "test_loss")])
    return worst, epochs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 partitions")
    parser.add_argument("--dataset", default="landmine", choices=list(DATASETS))
    parser.add_argument("--partitions", type=int, default=None, help="N random partitions (default 20; quick 3)")
    parser.add_argument("--chunk-partitions", type=int, nargs="+", default=[1, 10],
                        help="batched chunk sizes, in partitions' worth of groups (plus the tabular_grouping chunk)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "tabular")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    partitions = args.partitions or (3 if args.quick else 20)
    spec = DATASETS[args.dataset]
    path = args.data_dir / spec["file"]
    if not path.is_file():
        print(f"SKIPPED: {path} is absent")
        return
    torch.set_num_threads(1)
    suite = TabularSuite.from_csv(path, task_type=spec["task_type"], drop_columns=spec["drop_columns"], seed=args.seed)
    kwargs = {**spec["train"], "seed": args.seed}
    groups = distinct_groups(suite.tasks, partitions, args.seed)
    per_partition = len(groups) / partitions
    wanted = {max(1, round(p * per_partition)) for p in args.chunk_partitions} | {EVALUATE_CHUNK}
    chunks = sorted({min(c, len(groups)) for c in wanted})  # a chunk never exceeds the groups there are
    print(f"{args.dataset}: {len(suite.tasks)} tasks, {partitions} random partitions -> {len(groups)} distinct groups "
          f"({per_partition:.1f} per partition, {sum(map(len, groups))} (group, task) slots); training "
          f"{ {**DEFAULT_TRAIN_KWARGS, **spec['train']} }, torch threads 1", flush=True)

    start = time.perf_counter()
    separate = [train_tabular_group(suite, g, **kwargs) for g in groups]
    separate_seconds = time.perf_counter() - start
    rows: list[dict[str, Any]] = [{"mode": "one at a time", "chunk_groups": 1, "seconds": separate_seconds,
                                   "speedup": 1.0, "max_abs_diff": 0.0, "best_epoch_differs": 0}]
    for chunk in chunks:
        batched, seconds = train_in_chunks(suite, groups, chunk, kwargs)
        worst, epochs = difference(batched, separate)
        rows.append({"mode": f"batched, chunks of {chunk} groups (~{chunk / per_partition:.1f} partitions)",
                     "chunk_groups": chunk, "seconds": seconds, "speedup": separate_seconds / seconds,
                     "max_abs_diff": worst, "best_epoch_differs": epochs})
    for row in rows:
        row["seconds_per_partition"] = row["seconds"] / partitions
        row["seconds_per_group"] = row["seconds"] / len(groups)

    print("\n| mode | seconds | s / partition | s / group | speed-up | max abs diff | groups with other best epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['seconds']:.1f} | {r['seconds_per_partition']:.3f} | {r['seconds_per_group']:.4f} | "
              f"{r['speedup']:.1f}x | {r['max_abs_diff']:.2g} | {r['best_epoch_differs']} of {len(groups)} |")
    meta = {"command": "python benchmarks/tabular_batched_training.py "
                       + " ".join(argv if argv is not None else sys.argv[1:]),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "platform": f"{platform.system()} {platform.machine()}, python {platform.python_version()}, "
                        f"torch {torch.__version__}, 1 thread",
            "dataset": args.dataset, "tasks": len(suite.tasks), "partitions": partitions, "groups": len(groups),
            "slots": sum(map(len, groups)), "train": {**DEFAULT_TRAIN_KWARGS, **spec["train"]}, "seed": args.seed}
    out = args.results_dir / f"tabular_batched_training{'_quick' if args.quick else ''}.json"
    atomic_write_json(out, {"meta": meta, "rows": rows})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
