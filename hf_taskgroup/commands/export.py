"""``hf-taskgroup export``: write one task of a grouped model as a single-task checkpoint for ``pipeline()``.

The options are the fields of :class:`ExportConfig`; the parser is built from it with ``HfArgumentParser``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

HELP = "export one task of a grouped model as a single-task checkpoint (pipeline(), AutoModelFor...)"
DESCRIPTION = (
    "Write the shared encoder plus one task's head as a single-task checkpoint. Token-classification heads "
    "without a trunk become the encoder's standard ...ForTokenClassification; other heads (pooling/trunk that "
    "the standard classes lack) a custom-code model loaded with trust_remote_code=True, unless "
    "--allow_custom_code false, which refuses them."
)


@dataclass
class ExportConfig:
    """Options of ``hf-taskgroup export``.

    Example::

        >>> ExportConfig(model="outputs/run/models/pvi/hoc", task="hoc", output_dir="exports/hoc").task
        'hoc'
    """

    model: str = field(metadata={"help": "grouped model: a saved folder or a Hub repo id"})
    task: str = field(metadata={"help": "the task (head) to export"})
    output_dir: str = field(metadata={"help": "folder to write the single-task checkpoint to"})
    allow_custom_code: bool = field(default=True, metadata={
        "help": "write heads that no standard transformers class can hold as custom code (trust_remote_code=True); "
                "false: refuse them with an error"})


CONFIG = ExportConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from transformers import HfArgumentParser

    template = HfArgumentParser(ExportConfig, add_help=False)
    p = subparsers.add_parser("export", parents=[template], help=HELP, description=DESCRIPTION)
    p.set_defaults(func=lambda args: run(ExportConfig(**{f.name: getattr(args, f.name) for f in fields(ExportConfig)})))


def run(config: ExportConfig, ctx: Any = None) -> int:
    from hf_taskgroup.publishing.export import export_task

    result = export_task(config.model, config.task, config.output_dir, allow_custom_code=config.allow_custom_code)
    kind = "standard transformers class" if result.standard else f"custom code ({result.reason})"
    print(f"exported task {result.task!r} to {result.path} as {result.architecture}: {kind}")
    remote = "" if result.standard else ", trust_remote_code=True"
    print(f'load it with: pipeline("{result.pipeline_task}", model="{result.path}"{remote})')
    return 0
