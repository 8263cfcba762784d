#!/usr/bin/env python
"""Train a task suite (or a subset of its tasks) multi-task and/or single-task and write metrics JSON.

    accelerate launch --config_file accelerate_config.yaml scripts/train_mtl.py \
        --suite hf_taskgroup/demo/suite.yaml --output_dir outputs/train --finetune frozen --mode both

    python scripts/train_mtl.py --suite my_suite.yaml --tasks sst2,stsb --model bert-base-uncased \
        --output_dir outputs/sst2_stsb --finetune full --num_train_epochs 3

Any MultiTaskTrainingArguments / TrainingArguments flag works (``--learning_rate``, ``--bf16``,
``--gradient_accumulation_steps``, ``--task_sampling temperature``, ...).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.train import run_training_script


@dataclass
class ScriptArguments:
    suite: str | None = field(default=None, metadata={"help": "Task suite YAML (default: the built-in demo suite)."})
    tasks: str | None = field(default=None, metadata={"help": "Comma-separated subset of the suite's tasks."})
    model: str | None = field(default=None, metadata={"help": "Encoder: Hub id or folder (default: all-MiniLM-L6-v2)."})
    mode: str = field(default="mtl", metadata={"help": "mtl (one model for all tasks), stl (one per task) or both."})
    pooling: str = field(default="mean", metadata={"help": "cls or mean."})
    trunk_hidden_sizes: str = field(default="256", metadata={"help": "Shared trunk sizes, e.g. '256' or '256,128' ('' for none)."})
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example."})
    metrics_file: str | None = field(default=None, metadata={"help": "Where to write metrics JSON (default: output_dir/metrics.json)."})
    save_model: bool = field(default=False, metadata={"help": "Save the trained model(s) under output_dir."})


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ScriptArguments, MultiTaskTrainingArguments))
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return run_training_script(script_args, training_args)


if __name__ == "__main__":
    main(sys.argv[1:])
