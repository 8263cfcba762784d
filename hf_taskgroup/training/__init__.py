"""Stage 4, training: the multi-task model, its trainer, training arguments, samplers, cached features,
offline metrics, and ``train_group`` (one group trained and scored, as the pipeline and evaluators use it).

The names are imported on first use, so ``import hf_taskgroup.training.metrics`` stays light.
"""

import importlib

_LAZY = {
    "MultiTaskConfig": "modeling",
    "MultiTaskModel": "modeling",
    "MultiTaskTrainer": "trainer",
    "MultiTaskTrainingArguments": "args",
    "TrainSettings": "train",
    "train_group": "train",
    "default_model_path": "train",
    "load_tokenizer": "train",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
