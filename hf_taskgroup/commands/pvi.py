"""``hf-taskgroup pvi``: per-example PVI of every task of a suite, saved locally and optionally pushed to the Hub.

Its flags are the fields of :class:`hf_taskgroup.config.PVICommandConfig` (the PVI models' epochs and
learning rate are ``--pvi_num_train_epochs`` / ``--pvi_learning_rate``, the same flags as ``run``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from hf_taskgroup.config import PVICommandConfig

CONFIG = PVICommandConfig
HELP = "score every task with pointwise V-usable information (PVI) and optionally push the datasets"
DESCRIPTION = ("Train g_x and the null model per task, score held-out examples with PVI (bits), write "
               "OUTPUT_DIR/<task>/{dataset,summary.json}; a re-run skips finished tasks with the same settings. "
               "--executor ray trains the tasks side by side (one Ray task per task: its models, all folds, the "
               "scoring; docs/ray.md). For `accelerate launch` and mixed precision, use scripts/compute_pvi.py.")

#: old flag -> field (renamed in 0.2; accepted for one release)
ALIASES = {"--null": "pvi_null", "--heldout": "pvi_heldout", "--folds": "pvi_folds", "--splits": "pvi_splits",
           "--epochs": "pvi_num_train_epochs", "--num_train_epochs": "pvi_num_train_epochs",
           "--learning_rate": "pvi_learning_rate", "--smoothing": "pvi_smoothing"}


def configure(parser: Any) -> None:
    for old, dest in ALIASES.items():
        parser.add_alias(old, dest)


def run(config: PVICommandConfig, ctx: Any) -> int:
    return run_and_push(dataclasses.replace(config, no_progress=config.no_progress or not ctx.progress))


def run_and_push(job: PVICommandConfig, *, tokenizer: Any = None, model_factory: Any = None,
                 echo: Callable[[str], None] = print) -> int:
    """Compute PVI (:func:`hf_taskgroup.pvi.runner.run_pvi_job`), then push if asked; returns the exit code."""
    from hf_taskgroup.pvi.runner import run_pvi_job

    results = run_pvi_job(job, tokenizer=tokenizer, model_factory=model_factory, echo=echo)
    if results is None or not job.push_to_hub:
        return 0
    return push_results(job, list(results), echo=echo)


def push_results(job: PVICommandConfig, tasks: list[str], *, echo: Callable[[str], None] = print) -> int:
    """Push the PVI datasets of ``tasks``; on failure keep every local artifact and print the re-run (exit 1)."""
    from hf_taskgroup.data.tasks import TaskSuite
    from hf_taskgroup.demo import DEMO_SUITE_PATH
    from hf_taskgroup.publishing.pvi_dataset import PVIConfigExistsError, PVIPushError, push_pvi_datasets

    suite = TaskSuite.from_yaml(job.suite or DEMO_SUITE_PATH)  # licences and sources for the dataset card
    try:
        pushed = push_pvi_datasets(job.output_dir, job.hub_dataset_id, tasks=tasks,
                                   one_repo_per_task=job.one_repo_per_task, overwrite=job.overwrite,
                                   private=job.private, suite=suite)
    except PVIConfigExistsError as err:
        echo(f"Push refused: {err}\nLocal artifacts are kept in {job.output_dir}. Re-run with --overwrite to "
             f"replace the PVI values on the Hub:\n    {job.cli_command()} --overwrite")
        return 1
    except PVIPushError as err:
        rest = dataclasses.replace(job, tasks=list(err.not_pushed),
                                   overwrite=job.overwrite or "overwrite=True" in err.rerun)
        echo(f"Push failed: {err}\nLocal artifacts are kept in {job.output_dir} (finished tasks are not "
             f"recomputed). To push the tasks that did not make it, re-run:\n    {rest.cli_command()}")
        return 1
    for task, ref in pushed.items():
        echo(f"pushed {task}: {ref}")
    return 0
