"""The stable hash, the input fingerprints and the artifact store (manifests with size, sha256, fingerprint)."""

import hashlib
import json
import os
import stat
import warnings

import numpy as np
import pytest

from hf_taskgroup.artifacts import (
    ArtifactError,
    ArtifactStore,
    ArtifactWarning,
    ModelNotFoundError,
    canonical_json,
    check_model_path,
    data_fingerprint,
    model_fingerprint,
    stable_hash,
    tokenizer_fingerprint,
    verified_folder,
)
from hf_taskgroup.data.tasks import TaskSpec
from hf_taskgroup.utils import atomic_write_json, atomic_write_text


def test_stable_hash_is_canonical():
    assert stable_hash({"b": 1, "a": [1.0, (2, 3)]}) == stable_hash({"a": [1.0, [2, 3]], "b": 1})
    assert stable_hash({"x": np.float64(0.1), "n": np.int64(3)}) == stable_hash({"x": 0.1, "n": 3})
    assert stable_hash({"s": {"b", "a"}}) == stable_hash({"s": ["a", "b"]})
    assert stable_hash({"lr": 1e-3}) != stable_hash({"lr": 1e-4})
    assert stable_hash(1) != stable_hash(True) and stable_hash(1) != stable_hash("1")
    # non-finite floats are hashed (tagged), not refused and not confused with strings
    assert canonical_json(float("nan")) == '{"__float__":"nan"}'
    assert stable_hash(float("inf")) != stable_hash(float("-inf"))
    assert len(stable_hash("x", length=64)) == 64


def test_stable_hash_refuses_values_whose_text_changes_every_run():
    with pytest.raises(TypeError, match="memory address"):
        stable_hash({"f": object()})


def test_evaluator_cache_keys_keep_their_format():
    """Existing evaluator caches stay readable: the key is the sha256 of the same canonical JSON as before."""
    from hf_taskgroup.grouping.evaluators.base import group_key

    settings = {"lr": 0.1, "layers": (1, 2), "name": "x"}
    legacy = json.dumps({"tasks": ["a", "b"], "settings": {"lr": 0.1, "layers": [1, 2], "name": "x"}, "seed": 3},
                        sort_keys=True, separators=(",", ":"))
    assert group_key(["b", "a"], settings, 3) == hashlib.sha256(legacy.encode()).hexdigest()


def test_store_reuses_only_verified_artifacts(tmp_path):
    writer = ArtifactStore(tmp_path)
    writer.write_json("runs/a/seed0.json", {"loss": 0.25}, fingerprint="f1")
    assert writer.read_json("runs/a/seed0.json", fingerprint="f1") == {"loss": 0.25}
    assert writer.reused == []  # written in this run: reading it back is not a reuse
    store = ArtifactStore(tmp_path)  # a later run
    assert store.read_json("runs/a/seed0.json", fingerprint="f1") == {"loss": 0.25}
    assert store.read_json("runs/a/seed0.json", fingerprint="f1") == {"loss": 0.25}
    assert store.reused == ["runs/a/seed0.json"]  # listed once
    # other inputs: stale, recomputed silently (no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read_json("runs/a/seed0.json", fingerprint="f2") is None
    # truncated: named in one warning, treated as missing
    path = tmp_path / "runs/a/seed0.json"
    path.write_bytes(path.read_bytes()[:5])
    with pytest.warns(ArtifactWarning, match=r"seed0\.json has 5 bytes") as record:
        assert store.read_json("runs/a/seed0.json", fingerprint="f1") is None
    assert len(record) == 1
    # same size, edited content: caught by the checksum
    store.write_json("b.json", {"v": 1})
    (tmp_path / "b.json").write_text((tmp_path / "b.json").read_text().replace("1", "2"))
    with pytest.warns(ArtifactWarning, match="sha256"):
        assert not store.check("b.json").ok
    # an artifact without a manifest (killed before sealing, or an older version) is not reused
    atomic_write_json(tmp_path / "c.json", {"v": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # benign (a kill before sealing): recomputed without a warning
        assert store.read_json("c.json") is None
    assert "no manifest" in store.check("c.json").detail
    with pytest.raises(ArtifactError, match="no manifest"):
        store.require("c.json", action="publish")
    assert store.check("missing.json").status == "missing"


def test_store_takes_paths_relative_to_its_root_or_already_under_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("out")  # a relative output folder, as `--output_dir out` gives
    store.write_json("out/groupings/a.json", {"v": 1}, fingerprint="f")
    store.write_json("groupings/b.json", {"v": 2}, fingerprint="f")
    assert (tmp_path / "out" / "groupings" / "a.json").is_file() and not (tmp_path / "out" / "out").exists()
    later = ArtifactStore("out")  # a later run
    assert later.read_json("groupings/a.json", fingerprint="f") == {"v": 1}
    assert later.read_json("out/groupings/b.json", fingerprint="f") == {"v": 2}
    assert later.reused == ["groupings/a.json", "groupings/b.json"]


def test_store_verifies_folders_file_by_file(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "config.json").write_text("{}")
    store = ArtifactStore(tmp_path)
    store.seal("model", fingerprint="f")
    assert store.check("model", fingerprint="f").ok
    assert verified_folder(folder) == folder
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.warns(ArtifactWarning, match="not in its manifest"):
        assert not store.check("model").ok
    (folder / "extra.bin").unlink()
    with open(folder / "model.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.warns(ArtifactWarning, match=r"model\.safetensors has 100 bytes, expected 4096"):
        assert store.check("model", fingerprint="f").status == "corrupt"
    with pytest.raises(ArtifactError, match="refusing to publish .*model.safetensors has 100 bytes"):
        verified_folder(folder)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)


def test_data_fingerprint_follows_file_content_not_location(tmp_path):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    a = TaskSpec(name="t", data_files={"train": str(tmp_path / "one" / "train.jsonl")})
    b = TaskSpec(name="t", data_files={"train": str(tmp_path / "two" / "train.jsonl")})
    assert data_fingerprint(a) == data_fingerprint(b)
    before = data_fingerprint(a)
    (tmp_path / "one" / "train.jsonl").write_text('{"text": "b", "label": "x"}\n')
    assert data_fingerprint(a) != before
    assert data_fingerprint(TaskSpec(name="t", label_column="y", data_files=a.data_files)) != data_fingerprint(a)


def test_in_memory_data_fingerprint_follows_rows_not_the_datasets_fingerprint(tmp_path):
    """A subsample of file-backed data (what the studies train on) must fingerprint by its rows: the same
    rows loaded from a copy of the file at another path (another ``datasets`` fingerprint) give the same
    fingerprint; another subsample, another order or an edited row give another."""
    from datasets import Dataset, load_dataset

    rows = [{"text": f"row {i}", "label": "ab"[i % 2]} for i in range(40)]
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def subsample(folder: str, seed: int = 0, n: int = 10) -> TaskSpec:
        train = load_dataset("json", data_files=str(tmp_path / folder / "train.jsonl"), split="train",
                             cache_dir=str(tmp_path / f"cache_{folder}"))
        return TaskSpec(name="t", data={"train": train.shuffle(seed=seed).select(range(n))})

    a, b = subsample("one"), subsample("two")
    assert a.load()["train"]._fingerprint != b.load()["train"]._fingerprint  # datasets' own id differs ...
    assert data_fingerprint(a) == data_fingerprint(b)  # ... the rows do not
    assert data_fingerprint(subsample("one", seed=1)) != data_fingerprint(a)
    assert data_fingerprint(subsample("one", n=11)) != data_fingerprint(a)
    same_rows = a.load()["train"].to_list()
    assert data_fingerprint(TaskSpec(name="t", data={"train": Dataset.from_list(same_rows)})) == data_fingerprint(a)
    edited = [dict(r) for r in same_rows]
    edited[3]["text"] += "!"
    assert data_fingerprint(TaskSpec(name="t", data={"train": Dataset.from_list(edited)})) != data_fingerprint(a)
    reordered = same_rows[1:] + same_rows[:1]
    assert data_fingerprint(TaskSpec(name="t", data={"train": Dataset.from_list(reordered)})) != data_fingerprint(a)


def test_model_and_tokenizer_fingerprints(tmp_path):
    from utils import tiny_tokenizer

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"a" * 10)
    before = model_fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"b" * 10)
    assert model_fingerprint(tmp_path) != before
    assert model_fingerprint("org/name") != model_fingerprint("org/name", revision="v2")
    tok = tiny_tokenizer()
    before = tokenizer_fingerprint(tok)
    tok(["good the"], truncation=True, max_length=3, padding="max_length")  # call-time state is not identity
    assert tokenizer_fingerprint(tok) == before == tokenizer_fingerprint(tiny_tokenizer())
    assert tokenizer_fingerprint(tiny_tokenizer()) != tokenizer_fingerprint(tiny_tokenizer(["x", "y"]))
    assert tokenizer_fingerprint(None) is None


def test_check_model_path_names_the_missing_folder(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    assert check_model_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ModelNotFoundError, match=f"model folder not found: {tmp_path}/nope"):
        check_model_path(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        check_model_path(str(tmp_path / "empty"))
    assert check_model_path("org/model") == "org/model"  # a Hub id is left to the Hub client
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        check_model_path("org/surely-not-cached-model")


def test_load_reuses_a_verified_entry_and_computes_a_damaged_or_stale_one_again(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write_json("e.json", {"v": 1}, fingerprint="k")
    assert ArtifactStore(tmp_path).load("e.json", fingerprint="k") == {"v": 1}
    fresh = ArtifactStore(tmp_path)
    assert fresh.load("e.json", fingerprint="other") is None  # stale: kept until the new one replaces it
    assert (tmp_path / "e.json").exists() and fresh.reused == []
    edited = (tmp_path / "e.json").read_text().replace("1", "2")
    (tmp_path / "e.json").write_text(edited)  # edited in place, in the same process: same size, another sha256
    with pytest.warns(ArtifactWarning, match=r"e\.json does not match its recorded sha256"):
        assert fresh.load("e.json", fingerprint="k") is None
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "e.json.manifest").exists()  # discarded
    store.write_json("bad.json", {"v": 1}, fingerprint="k")
    with pytest.warns(ArtifactWarning, match="cannot be loaded"):
        assert store.load("bad.json", fingerprint="k", loader=lambda p: 1 / 0) is None
    assert not (tmp_path / "bad.json").exists()


def test_a_collecting_store_lists_what_the_stores_below_it_reused_but_not_what_they_wrote(tmp_path):
    run, cache = ArtifactStore(tmp_path), ArtifactStore(tmp_path / "cache" / "x")
    with run.collecting():
        cache.write_json("new.json", {}, fingerprint="k")
        assert cache.load("new.json", fingerprint="k") == {} and run.reused == []  # computed in this run
    ArtifactStore(tmp_path / "cache" / "x").write_json("old.json", {}, fingerprint="k")  # an earlier run
    outside = ArtifactStore(tmp_path.parent / f"{tmp_path.name}-other")
    outside.write_json("elsewhere.json", {}, fingerprint="k")
    later, cache2 = ArtifactStore(tmp_path), ArtifactStore(tmp_path / "cache" / "x")
    with later.collecting():
        cache2.load("old.json", fingerprint="k")
        ArtifactStore(outside.root).load("elsewhere.json", fingerprint="k")  # not under the run folder
    cache2.load("new.json", fingerprint="k")  # after the run: not collected
    assert later.reused == ["cache/x/old.json"]
    assert cache2.reused == ["old.json", "new.json"]
