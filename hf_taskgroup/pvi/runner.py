"""What ``hf-taskgroup pvi`` and ``scripts/compute_pvi.py`` compute: PVI for a suite, printed as a table.

Pushing the results is publishing's job (:func:`hf_taskgroup.commands.pvi.push_results` calls
:mod:`hf_taskgroup.publishing.pvi_dataset`); this module never talks to the Hub.

Example::

    >>> from hf_taskgroup.pvi.runner import PVIJob, run_pvi_job
    >>> results = run_pvi_job(PVIJob(suite="my_suite.yaml", finetune="frozen", output_dir="outputs/pvi"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hf_taskgroup.config import PVICommandConfig

logger = logging.getLogger(__name__)

__all__ = ["PVIJob", "run_pvi_job"]

#: Every option of a PVI run (``hf-taskgroup pvi --help``): the spine's :class:`PVICommandConfig`.
PVIJob = PVICommandConfig


def run_pvi_job(job: PVICommandConfig, *, tokenizer: Any = None, model_factory: Any = None,
                echo: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Validate the suite and the model, compute PVI (resuming finished tasks), print the table.

    Returns ``{task: PVIResult}`` on the main process (``None`` on the others). The resolved config (with
    the executor settings) is written to ``<output_dir>/config.json``. The tasks' trainings go through the
    job's executor (``--executor serial|ray``, :class:`hf_taskgroup.config.ExecutorArguments`), one call per
    task, as in the main job; the artifacts are written here as each task finishes.
    """
    from hf_taskgroup.data.tasks import TaskSuite
    from hf_taskgroup.demo import DEMO_SUITE_PATH
    from hf_taskgroup.pvi.estimate import _is_main_process, compute_pvi, format_pvi_table
    from hf_taskgroup.utils import atomic_write_json

    suite = TaskSuite.from_yaml(job.suite or DEMO_SUITE_PATH)
    tasks = job.task_list()
    if tasks:
        suite = suite.subset(tasks)
    suite.validate()
    job.check_model(tokenizer)  # the model exists and --max_length fits it, before any work
    job.check_single_process()  # --executor ray is not for `accelerate launch` (each training is one process)
    if _is_main_process():
        from pathlib import Path

        atomic_write_json(Path(job.output_dir) / "config.json", {**job.to_dict(), "tasks": suite.task_names})
    executor = job.make_executor()  # --executor: one dispatched call per task (its models, all folds, the scoring)
    try:
        results = compute_pvi(
            suite, tokenizer=tokenizer, settings=job.pvi_settings(job.seed), null=job.pvi_null,
            heldout=job.pvi_heldout, folds=job.pvi_folds, splits=list(job.pvi_splits), output_dir=job.output_dir,
            overwrite=job.overwrite, model_factory=model_factory, smoothing=job.pvi_smoothing,
            max_train_examples=job.max_train_examples, training_args=job.training_args, progress=job.progress,
            executor=executor,
        )
    finally:
        executor.close()  # a local Ray started for this job stops; a joined cluster keeps running
    if not _is_main_process():
        return None
    echo(format_pvi_table(results))
    echo(f"PVI artifacts: {job.output_dir}/<task>/{{dataset,summary.json}}")
    return results
