"""hf-taskgroup: find which tasks to train together, train the grouped models and share them.

Importing the package registers :class:`MultiTaskConfig`/:class:`MultiTaskModel` with the transformers
Auto classes, so ``AutoModel.from_pretrained`` reloads a saved multi-task model.
"""

__version__ = "0.1.0.dev0"

from .modeling import MultiTaskConfig, MultiTaskModel  # noqa: E402  (registers the Auto classes)
from .tasks import TaskSpec, TaskSuite, TaskValidationError  # noqa: E402
from .trainer import MultiTaskTrainer  # noqa: E402
from .training_args import MultiTaskTrainingArguments  # noqa: E402

__all__ = [
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskTrainer",
    "MultiTaskTrainingArguments",
    "TaskSpec",
    "TaskSuite",
    "TaskValidationError",
    "__version__",
]
