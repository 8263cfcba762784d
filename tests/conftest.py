"""Shared pytest setup: an offline Hugging Face environment with a local fake Hub.

Everything at module level runs when pytest imports this file, i.e. before any test module imports
huggingface_hub / datasets / transformers. That matters: ``huggingface_hub.constants.ENDPOINT``,
``datasets.config.HF_ENDPOINT`` and the cache paths are read at import time.

- ``HF_HOME`` / ``HF_DATASETS_CACHE`` point to a fresh temporary directory (no user cache is read or written).
- ONE :class:`tests.local_hub.LocalHub` serves the whole session; ``HF_ENDPOINT`` points to it, so no
  test can reach the real Hub. ``HF_HUB_OFFLINE`` is deliberately NOT set: the client would then
  refuse the loopback server too.
- ``HF_HUB_DISABLE_XET=1``: hf_xet is installed and would otherwise try the Xet CAS for uploads.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make `local_hub` importable as a plain module

from local_hub import LocalHub  # noqa: E402

# not test modules (--doctest-modules would import them): the scripts torchrun runs in two tests, and the local
# Hub server (its examples start a server and set HF_ENDPOINT)
collect_ignore = ["training/ddp_worker.py", "pvi/pvi_ddp_worker.py", "local_hub.py"]

_HF_HOME = tempfile.mkdtemp(prefix="hf_taskgroup_tests_")
_LOCAL_HUB = LocalHub().start()

os.environ.update(
    {
        "HF_HOME": _HF_HOME,
        "HF_HUB_CACHE": os.path.join(_HF_HOME, "hub"),
        "HF_DATASETS_CACHE": os.path.join(_HF_HOME, "datasets"),
        "HF_ENDPOINT": _LOCAL_HUB.url,
        "HF_TOKEN": "hf_local_test_token",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_DATASETS_OFFLINE", None)
os.environ.pop("TRANSFORMERS_OFFLINE", None)


def _cleanup() -> None:
    _LOCAL_HUB.stop()
    shutil.rmtree(_HF_HOME, ignore_errors=True)


atexit.register(_cleanup)


@pytest.fixture(scope="session")
def local_hub() -> LocalHub:
    """The session's fake Hub (already started; ``HF_ENDPOINT`` points to ``local_hub.url``)."""
    return _LOCAL_HUB


@pytest.fixture
def hub_repo_id() -> str:
    """A fresh, unused repo id under the local Hub's user, e.g. ``test-user/repo-1a2b3c4d``."""
    return f"{_LOCAL_HUB.user}/repo-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def healthy_local_hub(local_hub: LocalHub) -> Iterator[LocalHub]:
    """The session Hub, with any pending simulated commit failures cleared after the test."""
    yield local_hub
    local_hub.fail_next_commits(0)


# =====================================================================================================
# Fixtures added by other engineers go below this line (tiny models, tokenizers, ... live in tests/utils.py).
# =====================================================================================================


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models: one intra-op thread is several times faster than two on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _frozen_gc():
    """Trainer.train runs gc.collect(); freezing the objects alive at start-up keeps each of the many tiny
    trainings from re-scanning the whole interpreter heap."""
    import gc

    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def suite():
    """One small in-memory task per type (sent, sim, hall, ner); modules may define their own."""
    from utils import tiny_suite

    return tiny_suite()


@pytest.fixture(scope="module")
def tokenized(suite):
    from utils import tiny_tokenizer

    return suite.tokenize(tiny_tokenizer(), max_length=32)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray with 2 CPUs for the module that asks for it (no dashboard, no usage report, no auth token,
    nothing from the network); workers find tests/utils.py and the test modules on PYTHONPATH."""
    ray = pytest.importorskip("ray")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), *filter(None, [saved["PYTHONPATH"]])])
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written to the home folder
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
