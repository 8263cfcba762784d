"""Does ``full`` fine-tuning fail on a regression task because its labels are not standardized?

``partial_fidelity.py`` found that ``full`` fine-tuning (MiniLM, 300 training rows, 8 epochs, batch 16) does not
learn glue_stsb alone at lr 1e-4, 5e-5 or 2e-5 (test Pearson 0.06-0.15), while the same task reaches 0.68 in a
group and up to 0.67 in ``partial`` mode. The heads train on the raw labels (0-5 for STS-B) and a new head starts
near 0. This script trains the regression task alone in the given mode twice, side by side: on the raw labels and
on labels standardized with the train split's mean and standard deviation (applied to every split; Pearson and
Spearman do not change under that affine map, so the scores compare directly), and a third time on the raw labels
with the library's fix (``regression_labels="standardize"``: the trainer records the train split's statistics in
the model config, the head learns standardized labels and predicts on the label scale), which should match the
hand-standardized run. Reported per variant: validation and test Pearson and the training seconds.

    python benchmarks/regression_labels.py --quick          # 60 rows, 1 epoch (a smoke run)
    python benchmarks/regression_labels.py                  # glue_stsb, full at 1e-4, 300 rows, 8 epochs, seed 0
    python benchmarks/regression_labels.py --learning-rate 2e-5 --result-name regression_labels_lr2e-5

Writes benchmarks/results/regression_labels[_quick].json (or ``--result-name``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SharedDataUnavailable, environment, load_shared_nlp_suite, write_results  # noqa: E402
from evidence_common import V2_BATCH_SIZE, V2_EPOCHS, V2_MAX_TRAIN, study_config, v2_fields  # noqa: E402

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite  # noqa: E402


def standardized(spec: TaskSpec) -> tuple[TaskSpec, float, float]:
    """``spec`` with its label column mapped to ``(y - mean) / std`` of the train split (every split), and the
    mean and standard deviation used."""
    import numpy as np

    data = spec.load()
    column = spec.label_column
    train = np.asarray(data["train"][column], dtype=np.float64)
    mean, std = float(train.mean()), float(train.std()) or 1.0
    mapped = {split: ds.map(lambda row: {column: (float(row[column]) - mean) / std}) for split, ds in data.items()}
    kwargs = {k: v for k, v in spec.to_dict().items() if k not in ("data_files", "description", "label_names")}
    return TaskSpec(**kwargs, data=mapped, description=f"{spec.name}: labels standardized"), mean, std


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 rows, 1 epoch (a smoke run)")
    parser.add_argument("--task", default="glue_stsb", help="a regression task of ../shared/data/nlp")
    parser.add_argument("--finetune", default="full")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--trainable-layers", type=int, default=1, help="partial mode's k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result-name", default=None)
    args = parser.parse_args(argv)
    max_train, epochs = (60, 1.0) if args.quick else (V2_MAX_TRAIN, V2_EPOCHS)
    try:
        suite = load_shared_nlp_suite([args.task], max_train=max_train, seed=0)
    except SharedDataUnavailable as err:
        print(f"SKIPPED: {err}")
        return
    spec = suite[args.task]
    if spec.type != "regression":
        raise SystemExit(f"error: task {args.task!r} is {spec.type}, not regression")
    scaled, mean, std = standardized(spec)
    from hf_taskgroup.training.train import train_group

    fields = v2_fields(args.finetune, trainable_layers=args.trainable_layers, learning_rate=args.learning_rate,
                       batch_size=V2_BATCH_SIZE, epochs=epochs)
    raw = study_config(Path("unused"), ["all_in_one"], [args.seed], epochs, num_groups=None, num_tasks=1,
                       **fields, regression_labels="raw").train_settings(args.seed)
    library = dataclasses.replace(raw, regression_labels="standardize")
    rows: dict[str, dict[str, Any]] = {}
    variants = (("raw labels", spec, raw), ("standardized labels", scaled, raw),
                ("regression_labels=standardize", spec, library))
    for variant, task, settings in variants:
        t0 = time.perf_counter()
        res = train_group(TaskSuite([task]), [args.task], settings)
        per = res["tasks"][args.task]
        rows[variant] = {"validation_pearson": per["validation"]["pearson"], "test_pearson": per["test"]["pearson"],
                         "train_seconds": res["train_seconds"], "wall_seconds": time.perf_counter() - t0}
        print(f"{variant:<30} validation Pearson {rows[variant]['validation_pearson']:.3f}  test Pearson "
              f"{rows[variant]['test_pearson']:.3f}  ({res['train_seconds']:.0f} s)", flush=True)
    name = args.result_name or ("regression_labels_quick" if args.quick else "regression_labels")
    path = write_results(name, {"study": "regression_labels", "task": args.task, "max_train": max_train,
                                "epochs": epochs, "seed": args.seed, "settings": raw.to_dict(),
                                "label_mean": mean, "label_std": std, "rows": rows, "environment": environment()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
