"""Pointwise V-usable information (PVI): per-example scores, estimation end to end, a Trainer callback.

- :func:`compute_pvi` (``hf_taskgroup.pvi.estimate``): train ``g_x`` and the null model per task, score
  held-out data (dev/test or k-fold cross-fitting), write ``<output_dir>/<task>/{dataset,summary.json}``.
- :class:`PVICallback` (``hf_taskgroup.pvi.callback``): PVI of held-out datasets at the end of training
  (and optionally at each evaluation), correct under several processes.
- ``hf_taskgroup.pvi.scores`` / ``hf_taskgroup.pvi.null``: the math (pure numpy).

The heavy names are imported lazily, so ``import hf_taskgroup.pvi.scores`` does not import torch.

Example::

    >>> from hf_taskgroup.pvi import compute_pvi   # doctest: +SKIP
    >>> results = compute_pvi("suite.yaml", null="analytic", output_dir="outputs/pvi")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hf_taskgroup.pvi.callback import PVICallback
    from hf_taskgroup.pvi.estimate import PVIResult, compute_pvi, format_pvi_table

__all__ = ["PVICallback", "PVIResult", "compute_pvi", "format_pvi_table"]

_LAZY = {
    "PVICallback": "callback",
    "PVIResult": "estimate",
    "compute_pvi": "estimate",
    "format_pvi_table": "estimate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
