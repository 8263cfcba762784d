"""Evidence study 4: PVI and grouping outcomes with ``full`` fine-tuning against ``frozen``, on 4 real tasks.

Runs the whole pipeline (:func:`hf_taskgroup.run_pipeline`: PVI, the ``pvi`` and ``all_in_one`` groupings,
single-task and grouped models, test scores) once per fine-tuning mode on the same 4 tasks, then reports
each task's V-information (validation and test) under both modes, the Spearman rank correlation of the
tasks' V-information between the modes, the PVI groups of each mode and their test gains.

PVI uses the analytic null here in both modes (``pvi_null="analytic"``: one PVI model per task instead of
two; benchmarks/pvi_throughput.py measured |delta V-information| <= 0.001 bits against the trained null),
because full fine-tuning on this CPU is the expensive part.

    python benchmarks/evidence_modes.py --quick   # 100 train rows per task
    python benchmarks/evidence_modes.py           # 400 train rows per task, seed 0

Writes benchmarks/results/evidence_modes[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results  # noqa: E402
from evidence_common import open_study, study_config  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from hf_taskgroup.pipeline import Pipeline  # noqa: E402

TASKS = ["glue_sst2", "mqp", "medical_abstracts", "chemprot"]
MODES = {"frozen": {"epochs": 10.0, "batch_size": 32}, "full": {"epochs": 3.0, "batch_size": 16}}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    max_train = args.max_train or (100 if args.quick else 400)
    study = open_study("evidence_modes", args.quick, TASKS, max_train, args.output_dir)
    if study is None:
        return
    suite, name, out = study
    start = time.perf_counter()
    per_mode = {}
    for mode, train in MODES.items():
        config = study_config(out / mode, ["pvi", "all_in_one"], [args.seed], train["epochs"], num_groups=None,
                              num_tasks=len(TASKS), finetune=mode, batch_size=train["batch_size"], pvi_null="analytic")
        mode_start = time.perf_counter()
        result = Pipeline(config, suite=suite).run()
        assert result is not None
        report = json.loads((result.output_dir / "report.json").read_text())
        evaluations = {m: e.to_dict() for m, e in result.evaluations.items()}
        per_mode[mode] = {
            "settings": {"train": config.train_settings(args.seed).to_dict(), "pvi": config.pvi_settings().to_dict()},
            "seconds": time.perf_counter() - mode_start, "stage_seconds": result.timings,
            "v_information": {t: (report.get("pvi") or {}).get(t, {}).get("v_information") for t in TASKS},
            "groups": {m: e["groups"] for m, e in evaluations.items()},
            "mean_gain": {m: e["mean_gain"] for m, e in evaluations.items()},
            "per_task": {m: {t: {"stl": r["stl_mean"], "mtl": r["mtl_mean"], "gain": r["gain"], "metric": r["metric"]}
                             for t, r in e["rows"].items()} for m, e in evaluations.items()},
        }
        print(f"{mode}: {per_mode[mode]['groups']} mean gain {per_mode[mode]['mean_gain']} "
              f"({per_mode[mode]['seconds']:.0f} s)", flush=True)
    correlation = {}
    for split in ("validation", "test"):
        a = [per_mode["frozen"]["v_information"][t][split] for t in TASKS]
        b = [per_mode["full"]["v_information"][t][split] for t in TASKS]
        rho, p = spearmanr(a, b)
        correlation[split] = {"spearman_rho": float(rho), "p_value": float(p), "frozen": a, "full": b}
    payload = {"study": "modes", "tasks": TASKS, "max_train": max_train, "seed": args.seed, "modes": per_mode,
               "v_information_rank_correlation": correlation, "environment": environment(),
               "wall_seconds": time.perf_counter() - start}
    path = write_results(name, payload)
    for split, c in correlation.items():
        print(f"V-information ({split}) frozen {np.round(c['frozen'], 3).tolist()} full {np.round(c['full'], 3).tolist()} "
              f"spearman {c['spearman_rho']:+.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
