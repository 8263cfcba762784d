"""hf-taskgroup: find which tasks to train together, train the grouped models and share them.

Importing the package registers :class:`MultiTaskConfig`/:class:`MultiTaskModel` with the transformers
Auto classes, so ``AutoModel.from_pretrained`` reloads a saved multi-task model.
"""

__version__ = "0.1.0.dev0"

import hf_taskgroup.publishing.model_card  # noqa: E402,F401  (registers the trainer's model card writer)
from hf_taskgroup.data.tasks import TaskSpec, TaskSuite, TaskValidationError  # noqa: E402
from hf_taskgroup.training.args import MultiTaskTrainingArguments  # noqa: E402
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel  # noqa: E402  (registers the Auto classes)
from hf_taskgroup.training.trainer import MultiTaskTrainer  # noqa: E402

_LAZY = {
    "compute_pvi": "hf_taskgroup.pvi",
    "PVICallback": "hf_taskgroup.pvi",
    "Grouping": "hf_taskgroup.grouping",
    "group_tasks": "hf_taskgroup.grouping",
    "PipelineConfig": "hf_taskgroup.pipeline",
    "ConfigError": "hf_taskgroup.config",
    "run_pipeline": "hf_taskgroup.pipeline",
}


def __getattr__(name: str):
    """Import the PVI, grouping and pipeline entry points on first use (they pull in scipy and more)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_taskgroup' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "Grouping",
    "PVICallback",
    "PipelineConfig",
    "compute_pvi",
    "group_tasks",
    "run_pipeline",
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "TaskSpec",
    "TaskSuite",
    "TaskValidationError",
    "__version__",
]
