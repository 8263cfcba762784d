#!/usr/bin/env python
"""Train a task suite (or a subset of its tasks) multi-task and/or single-task and write metrics JSON.

    accelerate launch --config_file accelerate_config.yaml scripts/train_mtl.py \
        --suite hf_taskgroup/demo/suite.yaml --output_dir outputs/train --finetune frozen --mode both

    python scripts/train_mtl.py --suite my_suite.yaml --tasks sst2,stsb --model bert-base-uncased \
        --output_dir outputs/sst2_stsb --finetune full --num_train_epochs 3

The flags are those of ``hf-taskgroup train`` (:class:`hf_taskgroup.config.TrainCommandConfig`, also from
``--config file.yaml``); any other MultiTaskTrainingArguments / TrainingArguments flag (``--bf16``,
``--gradient_accumulation_steps``, ``--sampling_temperature``, ...) is passed through to the trainer.
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from hf_taskgroup.commands.train import configure
from hf_taskgroup.config import TrainCommandConfig, make_parser, parse_config
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.train import run_training_script

#: fields of the spine that set these TrainingArguments (so they are not flags of the pass-through)
SPINE_SETS = ("output_dir", "finetune", "num_train_epochs", "learning_rate", "per_device_train_batch_size", "seed",
              "data_seed", "task_sampling")


def main(argv: list[str] | None = None) -> dict:
    parser = make_parser(TrainCommandConfig, prog="train_mtl.py")
    configure(parser)
    config, extra = parse_config(parser, argv, return_remaining=True)
    # the other flags are TrainingArguments: parsed by transformers' own parser over MultiTaskTrainingArguments
    extra_parser = HfArgumentParser(MultiTaskTrainingArguments)
    namespace = extra_parser.parse_args(["--output_dir", config.output_dir, *extra])
    given = {k: v for k, v in vars(namespace).items() if k not in SPINE_SETS and v != extra_parser.get_default(k)}
    config.check_model()  # the model exists and --max_length fits it, before any work
    return run_training_script(config, config.training_arguments(**given))


if __name__ == "__main__":
    from hf_taskgroup.cli import run_guarded

    argv = [a for a in sys.argv[1:] if a != "--debug"]
    sys.exit(run_guarded(lambda: main(argv) and 0, debug=len(argv) < len(sys.argv) - 1))
