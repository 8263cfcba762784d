"""``hf-taskgroup run``: the main job, from a task suite to grouped, evaluated (and published) models.

With no arguments it runs on the built-in demo suite with all-MiniLM-L6-v2 in frozen mode, offline.
Its flags are the fields of :class:`hf_taskgroup.config.PipelineConfig`.
"""

from __future__ import annotations

from typing import Any

from hf_taskgroup.config import PipelineConfig

CONFIG = PipelineConfig
HELP = "the whole pipeline: PVI -> grouping -> grouped and single-task models -> report -> cards (-> Hub)"
DESCRIPTION = ("Run the main job. Every stage resumes from its artifacts in --output_dir; the resolved "
               "settings are written to <output_dir>/config.json.")


def configure(parser: Any) -> None:
    """Flags renamed in 0.2, accepted for one release."""
    parser.add_alias("--epochs", "num_train_epochs")
    parser.add_alias("--pvi_epochs", "pvi_num_train_epochs")
    parser.add_alias("--pvi_group_collapsed", "pvi_keep_collapsed_single", value=False)


def run(config: PipelineConfig, ctx: Any) -> int:
    import time

    from hf_taskgroup.pipeline import run_pipeline
    from hf_taskgroup.report.render import format_console_summary

    start = time.perf_counter()
    result = run_pipeline(config, progress=ctx.progress)
    print()
    for method, grouping in result.groupings.items():
        print(f"{method}: " + "  ".join("{" + ", ".join(g) + "}" for g in grouping.groups))
    print()
    print(format_console_summary(result.evaluations, next(iter(result.groupings.values())).tasks))
    print()
    if result.published:
        for name, where in result.published.items():
            print(f"published {name}: {where}")
    print(f"report: {result.report_path}   (finished in {time.perf_counter() - start:.0f} s)")
    return 0
