"""``hf-taskgroup export``: write one task of a grouped model as a single-task checkpoint for ``pipeline()``.

Its flags are the fields of :class:`hf_taskgroup.config.ExportCommandConfig`.
"""

from __future__ import annotations

from typing import Any

from hf_taskgroup.config import ExportCommandConfig

CONFIG = ExportCommandConfig
HELP = "export one task of a grouped model as a single-task checkpoint (pipeline(), AutoModelFor...)"
DESCRIPTION = (
    "Write the shared encoder plus one task's head as a single-task checkpoint. Token-classification heads "
    "without a trunk become the encoder's standard ...ForTokenClassification; other heads (pooling/trunk that "
    "the standard classes lack) a custom-code model loaded with trust_remote_code=True, unless "
    "--no_allow_custom_code, which refuses them."
)


def run(config: ExportCommandConfig, ctx: Any = None) -> int:
    from hf_taskgroup.publishing.export import export_task

    result = export_task(config.model, config.task, config.output_dir, allow_custom_code=config.allow_custom_code)
    kind = "standard transformers class" if result.standard else f"custom code ({result.reason})"
    print(f"exported task {result.task!r} to {result.path} as {result.architecture}: {kind}")
    remote = "" if result.standard else ", trust_remote_code=True"
    print(f'load it with: pipeline("{result.pipeline_task}", model="{result.path}"{remote})')
    return 0
