"""Stage 1, the data: task specs and suites (load, validate, tokenize) and batch collation."""

from hf_taskgroup.data.tasks import TASK_TYPES, TaskSpec, TaskSuite, TaskValidationError

__all__ = ["TASK_TYPES", "TaskSpec", "TaskSuite", "TaskValidationError"]
