"""``hf-taskgroup llm``: score a prompted causal LM (zero- or few-shot) on every task of a suite.

Its flags are the fields of :class:`hf_taskgroup.config.LLMCommandConfig`. Predictions and a summary per
task go to ``--output_dir/<task>/``; a re-run with the same settings reuses finished tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hf_taskgroup.config import LLMArguments, LLMCommandConfig

CONFIG = LLMCommandConfig
HELP = "score a prompted causal LM (zero- or few-shot) on the suite's tasks, each with its primary metric"
DESCRIPTION = ("Prompt a causal LM with each task's instruction, label words and --shots demonstrations from train, "
               "score it on --split with the task's primary metric (classification by label likelihood, regression "
               "by a parsed number, entities by matching generated mentions: approximate) and save the predictions.")


def run(config: LLMCommandConfig, ctx: Any) -> int:
    from hf_taskgroup.data.tasks import TaskSuite
    from hf_taskgroup.demo import DEMO_SUITE_PATH
    from hf_taskgroup.llm import evaluate_llm, format_llm_table

    suite = TaskSuite.from_yaml(config.suite or DEMO_SUITE_PATH)
    if config.tasks:
        suite = suite.subset(config.tasks)
    llm = LLMArguments(**{f.name: getattr(config, f.name) for f in dataclasses.fields(LLMArguments)})
    results = evaluate_llm(suite, llm, output_dir=config.output_dir, progress=ctx.progress)
    print(format_llm_table(results))
    print(f"predictions: {config.output_dir}/<task>/predictions")
    return 0
