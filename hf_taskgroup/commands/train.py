"""``hf-taskgroup train``: train a suite (or some of its tasks) multi-task and/or single-task.

Its flags are the fields of :class:`hf_taskgroup.config.TrainCommandConfig`; ``scripts/train_mtl.py``
takes the same flags plus every ``TrainingArguments`` flag.
"""

from __future__ import annotations

from typing import Any

from hf_taskgroup.config import TrainCommandConfig

CONFIG = TrainCommandConfig
HELP = "train tasks multi-task (one model) and/or single-task (one model each) and print per-task scores"
DESCRIPTION = ("Train a task suite multi-task and/or single-task; write metrics JSON and the resolved config. "
               "--executor ray trains the models of --mode stl/both side by side (one Ray task per model; "
               "docs/ray.md); --mode mtl trains one model, so there is nothing to parallelise and it trains in "
               "this process. For every TrainingArguments flag and `accelerate launch`, use scripts/train_mtl.py.")


def configure(parser: Any) -> None:
    """Flags renamed in 0.2, accepted for one release."""
    parser.add_alias("--epochs", "num_train_epochs")


def run(config: TrainCommandConfig, ctx: Any) -> int:
    from hf_taskgroup.training.train import run_training_script

    config.check_model()  # the model exists and --max_length fits it, before any work
    run_training_script(config, config.training_arguments(disable_tqdm=not ctx.progress))
    return 0
