#!/usr/bin/env python
"""The main job as an `accelerate launch`-able script (HfArgumentParser over PipelineConfig).

    accelerate launch --config_file accelerate_config.yaml scripts/run_pipeline.py \
        --suite hf_taskgroup/demo/suite.yaml --methods pvi all_in_one --output_dir outputs/run

Same stages and artifacts as `hf-taskgroup run`; every stage resumes from its artifacts.
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from hf_taskgroup.pipeline import PipelineConfig, run_pipeline


def main(argv: list[str] | None = None) -> None:
    (config,) = HfArgumentParser(PipelineConfig).parse_args_into_dataclasses(args=argv)
    result = run_pipeline(config)
    if result is not None:
        print(f"report: {result.report_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
