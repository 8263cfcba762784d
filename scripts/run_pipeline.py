#!/usr/bin/env python
"""The main job as an `accelerate launch`-able script (the flags of `hf-taskgroup run`, from PipelineConfig).

    accelerate launch --config_file accelerate_config.yaml scripts/run_pipeline.py \
        --suite hf_taskgroup/demo/suite.yaml --methods pvi,all_in_one --output_dir outputs/run

Same stages and artifacts as `hf-taskgroup run` (also `--config file.yaml`); every stage resumes from its artifacts.
"""

from __future__ import annotations

import sys

from hf_taskgroup.commands.run import configure
from hf_taskgroup.config import PipelineConfig, make_parser, parse_config
from hf_taskgroup.pipeline import run_pipeline


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(PipelineConfig, prog="run_pipeline.py")
    configure(parser)
    result = run_pipeline(parse_config(parser, argv))
    if result is not None:
        print(f"report: {result.report_path}")


if __name__ == "__main__":
    from hf_taskgroup.cli import run_guarded

    argv = [a for a in sys.argv[1:] if a != "--debug"]
    sys.exit(run_guarded(lambda: main(argv) and 0, debug=len(argv) < len(sys.argv) - 1))
