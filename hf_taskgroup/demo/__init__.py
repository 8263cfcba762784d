"""The built-in demo suite: a small, redistributable sample of five real biomedical/clinical tasks.

The tasks (pubmedqa, medical_abstracts, hoc, biosses, ncbi_disease) cover every head type:
single-label classification of one text and of a text pair, multi-label classification,
regression and token classification. Sources, licences and how the sample was drawn are in
``README.md`` beside this file; ``scripts/make_demo_suite.py`` rebuilds it. The sample is for
demonstration only: a few hundred examples per task give noisy results.

Example::

    >>> from hf_taskgroup.demo import DEMO_SUITE_PATH
    >>> DEMO_SUITE_PATH.name
    'suite.yaml'
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR: Path = Path(__file__).resolve().parent
"""Folder holding the demo data: ``<task>/{train,validation,test}.jsonl``, ``suite.yaml``, ``README.md``."""

DEMO_SUITE_PATH: Path = DEMO_DIR / "suite.yaml"
"""The demo suite's YAML description (data file paths in it are relative to this file)."""

__all__ = ["DEMO_DIR", "DEMO_SUITE_PATH"]
