#!/usr/bin/env python
"""Compute PVI for a task suite (or some of its tasks), write OUTPUT_DIR/<task>/{dataset,summary.json}, optionally push.

    python scripts/compute_pvi.py --suite hf_taskgroup/demo/suite.yaml --finetune frozen --null trained \
        --output_dir outputs/pvi

    accelerate launch --config_file accelerate_config.yaml scripts/compute_pvi.py --suite my_suite.yaml \
        --model bert-base-uncased --finetune full --epochs 2 --heldout kfold --folds 5 --bf16 \
        --push_to_hub --hub_dataset_id me/my-suite-pvi

Under several processes, training is data-parallel, every process scores, and only the main process
writes and pushes. Extra TrainingArguments go through ``--bf16``, ``--fp16``, ``--gradient_accumulation_steps``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_taskgroup.pvi.runner import PVIJob, run_pvi_job


@dataclass
class PVIArguments:
    suite: str | None = field(default=None, metadata={"help": "Task suite YAML (default: the built-in demo suite)."})
    tasks: str | None = field(default=None, metadata={"help": "Comma-separated subset of the suite's tasks."})
    null: str = field(default="trained", metadata={"help": "trained (null model on empty inputs) or analytic."})
    heldout: str = field(default="dev_test", metadata={"help": "dev_test or kfold (cross-fit train)."})
    folds: int = field(default=5, metadata={"help": "Number of folds for --heldout kfold."})
    splits: str = field(default="validation,test", metadata={"help": "Held-out splits to score."})
    smoothing: float = field(default=1.0, metadata={"help": "Add-k smoothing of the analytic null."})
    max_train_examples: int | None = field(default=None, metadata={"help": "Seeded train subsample (dev_test only)."})
    output_dir: str = field(default="outputs/pvi", metadata={"help": "Where <task>/{dataset,summary.json} go."})
    overwrite: bool = field(default=False, metadata={"help": "Replace existing PVI columns (input data and Hub)."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the annotated datasets to the Hub."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Dataset repo id (one config per task)."})
    one_repo_per_task: bool = field(default=False, metadata={"help": "Push to HUB_DATASET_ID-<task> instead."})
    private: bool | None = field(default=None, metadata={"help": "Create private repos."})


@dataclass
class ModelArguments:
    model: str | None = field(default=None, metadata={"help": "Encoder: Hub id or folder (default: all-MiniLM-L6-v2)."})
    finetune: str = field(default="frozen", metadata={"help": "full, lora or frozen."})
    pooling: str = field(default="mean", metadata={"help": "cls or mean."})
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs of g_x and of the null model."})
    learning_rate: float | None = field(default=None, metadata={"help": "Default: 1e-3 frozen, 3e-4 lora, 5e-5 full."})
    batch_size: int = field(default=32, metadata={"help": "Per-device training batch size."})
    seed: int = field(default=0, metadata={"help": "Training and fold seed."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU even when a GPU is there."})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision."})
    fp16: bool = field(default=False, metadata={"help": "fp16 mixed precision."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Gradient accumulation steps."})


def main(argv: list[str] | None = None) -> int:
    pvi_args, model_args = HfArgumentParser((PVIArguments, ModelArguments)).parse_args_into_dataclasses(args=argv)
    extra = {k: getattr(model_args, k) for k in ("bf16", "fp16") if getattr(model_args, k)}
    if model_args.gradient_accumulation_steps != 1:
        extra["gradient_accumulation_steps"] = model_args.gradient_accumulation_steps
    job = PVIJob(
        **vars(pvi_args),
        **{k: v for k, v in vars(model_args).items() if k not in ("bf16", "fp16", "gradient_accumulation_steps")},
        training_args=extra,
    )
    return run_pvi_job(job)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
