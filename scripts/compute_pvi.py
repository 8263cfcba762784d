#!/usr/bin/env python
"""Compute PVI for a task suite (or some of its tasks), write OUTPUT_DIR/<task>/{dataset,summary.json}, optionally push.

    python scripts/compute_pvi.py --suite hf_taskgroup/demo/suite.yaml --finetune frozen --pvi_null trained \
        --output_dir outputs/pvi

    accelerate launch --config_file accelerate_config.yaml scripts/compute_pvi.py --suite my_suite.yaml \
        --model bert-base-uncased --finetune full --pvi_num_train_epochs 2 --pvi_heldout kfold --pvi_folds 5 \
        --bf16 --push_to_hub --hub_dataset_id me/my-suite-pvi

The flags are those of ``hf-taskgroup pvi`` (:class:`hf_taskgroup.config.PVICommandConfig`, also from
``--config file.yaml``) plus ``--bf16``, ``--fp16`` and ``--gradient_accumulation_steps``. Under several
processes, training is data-parallel, every process scores, and only the main process writes and pushes.
"""

from __future__ import annotations

import dataclasses
import sys

from hf_taskgroup.commands.pvi import configure, run_and_push
from hf_taskgroup.config import PrecisionArguments, PVICommandConfig, make_parser, parse_config


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(PVICommandConfig, PrecisionArguments, prog="compute_pvi.py")
    configure(parser)
    job, precision = parse_config(parser, argv)
    job = dataclasses.replace(job, training_args={**job.training_args, **precision.training_args()})
    return run_and_push(job)


if __name__ == "__main__":
    from hf_taskgroup.cli import run_guarded

    argv = [a for a in sys.argv[1:] if a != "--debug"]
    sys.exit(run_guarded(lambda: main(argv), debug=len(argv) < len(sys.argv) - 1))
