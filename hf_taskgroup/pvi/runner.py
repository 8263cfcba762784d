"""What ``hf-taskgroup pvi`` and ``scripts/compute_pvi.py`` do: compute PVI for a suite, print, optionally push.

Example::

    >>> from hf_taskgroup.pvi.runner import PVIJob, run_pvi_job
    >>> run_pvi_job(PVIJob(suite="my_suite.yaml", finetune="frozen", output_dir="outputs/pvi"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["PVIJob", "run_pvi_job"]


@dataclass
class PVIJob:
    """Every option of a PVI run from the command line (see ``hf-taskgroup pvi --help``).

    Example::

        >>> PVIJob(suite="suite.yaml", null="analytic").heldout
        'dev_test'
    """

    suite: str | None = None  # None: the built-in demo suite
    tasks: str | None = None  # comma-separated subset
    model: str | None = None
    finetune: str = "frozen"
    null: str = "trained"
    heldout: str = "dev_test"
    folds: int = 5
    splits: str = "validation,test"
    epochs: float = 3.0
    learning_rate: float | None = None
    batch_size: int = 32
    max_length: int = 128
    pooling: str = "mean"
    seed: int = 0
    smoothing: float = 1.0
    max_train_examples: int | None = None
    use_cpu: bool = False
    output_dir: str = "outputs/pvi"
    overwrite: bool = False
    push_to_hub: bool = False
    hub_dataset_id: str | None = None
    one_repo_per_task: bool = False
    private: bool | None = None
    progress: bool = True
    training_args: dict[str, Any] = field(default_factory=dict)

    def task_list(self) -> list[str] | None:
        return [t.strip() for t in self.tasks.split(",") if t.strip()] if self.tasks else None

    def cli_command(self) -> str:
        """The ``hf-taskgroup pvi`` command that repeats this run (finished tasks are skipped on a re-run)."""
        parts = ["hf-taskgroup", "pvi"]
        defaults = PVIJob()
        for name in ("suite", "tasks", "model", "finetune", "null", "heldout", "folds", "splits", "epochs",
                     "learning_rate", "batch_size", "max_length", "pooling", "seed", "smoothing",
                     "max_train_examples", "output_dir", "hub_dataset_id"):
            value = getattr(self, name)
            if value is not None and value != getattr(defaults, name):
                parts += [f"--{name}", str(value)]
        for flag in ("overwrite", "push_to_hub", "one_repo_per_task", "use_cpu"):
            if getattr(self, flag):
                parts.append(f"--{flag}")
        return " ".join(shlex.quote(p) for p in parts)


def run_pvi_job(job: PVIJob, *, tokenizer: Any = None, model_factory: Any = None,
                echo: Callable[[str], None] = print) -> int:
    """Validate the suite, compute PVI (resuming finished tasks), print the table, push if asked.

    Returns the exit code: 0, or 1 when the push failed (every local artifact is kept and the message
    says what to re-run).
    """
    from hf_taskgroup.data.tasks import TaskSuite
    from hf_taskgroup.demo import DEMO_SUITE_PATH
    from hf_taskgroup.publishing.pvi_dataset import PVIConfigExistsError, PVIPushError, push_pvi_datasets
    from hf_taskgroup.pvi.estimate import _is_main_process, compute_pvi, format_pvi_table
    from hf_taskgroup.training.train import TrainSettings

    if job.push_to_hub and not job.hub_dataset_id:
        raise ValueError("--push_to_hub needs --hub_dataset_id (e.g. your-name/my-suite-pvi)")
    suite = TaskSuite.from_yaml(job.suite or DEMO_SUITE_PATH)
    tasks = job.task_list()
    if tasks:
        suite = suite.subset(tasks)
    suite.validate()
    settings = TrainSettings(
        model_name_or_path=job.model, finetune=job.finetune, pooling=job.pooling, max_length=job.max_length,
        num_train_epochs=job.epochs, learning_rate=job.learning_rate, per_device_train_batch_size=job.batch_size,
        seed=job.seed, use_cpu=job.use_cpu,
    )
    splits: Sequence[str] = [s.strip() for s in job.splits.split(",") if s.strip()]
    results = compute_pvi(
        suite, tokenizer=tokenizer, settings=settings, null=job.null, heldout=job.heldout, folds=job.folds,
        splits=splits, output_dir=job.output_dir, overwrite=job.overwrite, model_factory=model_factory,
        smoothing=job.smoothing, max_train_examples=job.max_train_examples, training_args=job.training_args,
        progress=job.progress,
    )
    if not _is_main_process():
        return 0
    echo(format_pvi_table(results))
    echo(f"PVI artifacts: {job.output_dir}/<task>/{{dataset,summary.json}}")
    if not job.push_to_hub:
        return 0
    try:
        pushed = push_pvi_datasets(job.output_dir, job.hub_dataset_id, tasks=list(results),
                                   one_repo_per_task=job.one_repo_per_task, overwrite=job.overwrite,
                                   private=job.private, suite=suite)
    except PVIConfigExistsError as err:
        echo(f"Push refused: {err}\nLocal artifacts are kept in {job.output_dir}. Re-run with --overwrite to "
             f"replace the PVI values on the Hub:\n    {job.cli_command()} --overwrite")
        return 1
    except PVIPushError as err:
        rest = dataclasses.replace(job, tasks=",".join(err.not_pushed),
                                   overwrite=job.overwrite or "overwrite=True" in err.rerun)
        echo(f"Push failed: {err}\nLocal artifacts are kept in {job.output_dir} (finished tasks are not "
             f"recomputed). To push the tasks that did not make it, re-run:\n    {rest.cli_command()}")
        return 1
    for task, ref in pushed.items():
        echo(f"pushed {task}: {ref}")
    return 0
