"""The evidence study's shared ledger: two workers writing one file keep each other's results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def evidence_v2():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import evidence_v2 as module
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_two_workers_keep_each_others_entries(tmp_path, evidence_v2):
    path = tmp_path / "ledger.json"
    first, second = evidence_v2.Ledger(path), evidence_v2.Ledger(path)
    first.put("a", {"seconds": 1.0})
    second.put("b", {"seconds": 2.0})  # second never saw "a" in memory: the write must merge, not overwrite
    on_disk = json.loads(path.read_text())["entries"]
    assert set(on_disk) == {"a", "b"}
    assert first.get("b") is None
    first.refresh()
    assert first.get("b") == {"seconds": 2.0}


def test_unreadable_ledger_is_reported_and_ignored(tmp_path, evidence_v2, capsys):
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    ledger = evidence_v2.Ledger(path)
    assert ledger.entries == {}
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2"])
def test_bad_shard_is_one_clear_error(evidence_v2, text):
    with pytest.raises(SystemExit, match="--shard"):
        evidence_v2.parse_shard(text)


def test_shard_parses(evidence_v2):
    assert evidence_v2.parse_shard("1/3") == (1, 3)
    assert evidence_v2.parse_shard(None) is None
