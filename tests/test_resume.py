"""Re-runs into the same output folder: a data change recomputes what depends on it (same results as a fresh
run), corrupt artifacts are named and recomputed, and nothing unverified is published."""

import json
import warnings
from pathlib import Path

import pytest
import yaml
from utils import regression_rows, sentiment_rows, tiny_bert_config, tiny_tokenizer

from hf_taskgroup.artifacts import ArtifactError, ArtifactWarning
from hf_taskgroup.data.tasks import TaskSuite
from hf_taskgroup.pipeline import Pipeline, PipelineConfig
from hf_taskgroup.publishing.models import HEADS_SHARD
from hf_taskgroup.report.evaluation import group_name
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel


def _factory(infos, seed):
    import torch

    torch.manual_seed(seed)
    config = MultiTaskConfig(encoder=tiny_bert_config(), tasks=dict(infos), pooling="mean", trunk_hidden_sizes=[8],
                             classifier_dropout=0.0, trunk_dropout=0.0)
    return MultiTaskModel(config)


def _write_rows(path: Path, rows: dict) -> None:
    keys = list(rows)
    path.write_text("".join(json.dumps(dict(zip(keys, vals))) + "\n" for vals in zip(*rows.values())))


def _suite_dir(root: Path) -> Path:
    """A file-backed suite of two tasks (what a user has on disk)."""
    for name, fn in (("sent", sentiment_rows), ("sim", regression_rows)):
        (root / name).mkdir(parents=True)
        for split, n, seed in (("train", 32, 0), ("dev", 16, 1), ("test", 16, 2)):
            _write_rows(root / name / f"{split}.jsonl", fn(n, seed))
    suite = {"name": "tiny", "tasks": [
        {"name": "sent", "type": "classification", "text_columns": ["text"],
         "data_files": {s: f"sent/{s}.jsonl" for s in ("train", "dev", "test")}},
        {"name": "sim", "type": "regression", "text_columns": ["text_a", "text_b"],
         "data_files": {s: f"sim/{s}.jsonl" for s in ("train", "dev", "test")}},
    ]}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    return root / "suite.yaml"


def _run(suite_yaml: Path, out: Path, **kw):
    config = PipelineConfig(output_dir=str(out), methods=["pvi", "all_in_one"], epochs=2, batch_size=8,
                            trunk_hidden_sizes=[8], max_length=32, pvi_null="analytic", pvi_epochs=2, **kw)
    # a new TaskSuite each time, as a new process would read it
    pipe = Pipeline(config, suite=TaskSuite.from_yaml(suite_yaml), tokenizer=tiny_tokenizer(), model_factory=_factory,
                    progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe.run()
    return pipe, result, [str(w.message) for w in caught if issubclass(w.category, ArtifactWarning)]


def _results(out: Path, result) -> dict:
    """Everything a run concludes (no timings): groupings, per-task rows, PVI values, every trained score."""
    runs = {}
    for path in sorted(out.glob("runs/*/seed*.json")):
        data = json.loads(path.read_text())
        runs[str(path.relative_to(out))] = {"tasks": data["tasks"], "primary": data["primary"]}
    pvi = {t: json.loads((out / "pvi" / t / "summary.json").read_text())["v_information"] for t in ("sent", "sim")}
    return {"groupings": {m: g.groups for m, g in result.groupings.items()},
            "rows": {m: ev.to_dict()["rows"] for m, ev in result.evaluations.items()}, "runs": runs, "pvi": pvi}


@pytest.mark.slow
def test_editing_a_train_file_recomputes_what_depends_on_it_like_a_fresh_run(tmp_path):
    suite_yaml = _suite_dir(tmp_path / "data")
    out = tmp_path / "run"
    _, first, _ = _run(suite_yaml, out)
    before = _results(out, first)

    # edit one task's training file: flip a few labels
    train = tmp_path / "data" / "sent" / "train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    for row in rows[:10]:
        row["label"] = "neg" if row["label"] == "pos" else "pos"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))

    pipe, again, _ = _run(suite_yaml, out)
    _, fresh, _ = _run(suite_yaml, tmp_path / "fresh")
    after, expected = _results(out, again), _results(tmp_path / "fresh", fresh)
    assert after == expected  # exactly what a fresh run gives
    assert after["pvi"]["sent"] != before["pvi"]["sent"]

    # only what does not depend on the edited task was reused, and the report says so
    reused = json.loads((out / "report.json").read_text())["reused"]
    sim_only = f"runs/{group_name(['sim'])}/seed0.json"
    assert "pvi/sim" in reused and sim_only in reused
    assert "pvi/sent" not in reused and not any(r.startswith("groupings/") for r in reused)
    assert not any(group_name(["sent"]) in r or group_name(["sent", "sim"]) in r for r in reused), reused
    assert "Reused from an earlier run" in (out / "report.md").read_text()
    assert sorted(reused) == sorted(pipe.store.reused) and len(set(reused)) == len(reused)

    # a third run with nothing changed reuses everything and trains nothing
    def forbid(*a, **k):
        raise AssertionError("nothing should be trained")

    third = Pipeline(pipe.config, suite=TaskSuite.from_yaml(suite_yaml), tokenizer=tiny_tokenizer(),
                     model_factory=_factory, progress=False)
    third._train = forbid
    third.run()
    reused = json.loads((out / "report.json").read_text())["reused"]
    assert {"pvi/sent", "pvi/sim", "groupings/pvi.json", "groupings/all_in_one.json"} <= set(reused)
    assert len([r for r in reused if r.startswith("runs/")]) == len(list(out.glob("runs/*/seed*.json")))


@pytest.mark.slow
def test_corrupt_artifacts_are_named_and_recomputed_and_never_published(tmp_path, monkeypatch):
    suite_yaml = _suite_dir(tmp_path / "data")
    out = tmp_path / "run"
    _, first, _ = _run(suite_yaml, out)
    before = _results(out, first)
    published = first.model_dirs
    key, folder = next(iter(published.items()))
    good_weights = (folder / HEADS_SHARD).read_bytes()

    # truncate one of each kind of artifact
    weights = out / "runs" / key / "model" / HEADS_SHARD  # trunk and heads (the encoder shard is shared)
    scores = out / "runs" / group_name(["sim"]) / "seed0.json"
    if key == group_name(["sim"]):
        scores = out / "runs" / group_name(["sent"]) / "seed0.json"
    arrow = next((out / "pvi" / "sent" / "dataset").rglob("*.arrow"))
    grouping = out / "groupings" / "all_in_one.json"
    for path in (weights, scores, arrow, grouping):
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)

    pipe, again, messages = _run(suite_yaml, out)
    for path in (weights, scores, arrow, grouping):
        named = [m for m in messages if str(path) in m]
        assert len(named) == 1, (path, messages)
    assert _results(out, again) == before  # recomputed, same results
    # the retrained weights are whole: the published copy loads and equals the good one
    assert (folder / HEADS_SHARD).read_bytes() == good_weights
    MultiTaskModel.from_pretrained(str(folder))
    reused = set(pipe.store.reused)
    assert not {"pvi/sent", "groupings/all_in_one.json", str(scores.relative_to(out))} & reused
    assert {"pvi/sim", "groupings/pvi.json"} <= reused

    # publishing refuses a published folder whose weights no longer match their manifest: nothing is pushed
    import hf_taskgroup.publishing.models as models
    import hf_taskgroup.publishing.pvi_dataset as pvi_dataset

    pushed = []
    monkeypatch.setattr(models, "push_group_model", lambda *a, **k: pushed.append(a) or "sha")
    monkeypatch.setattr(pvi_dataset, "push_pvi_datasets", lambda *a, **k: pushed.append(a) or [])
    assert pipe.stage_publish.__self__ is pipe
    pipe.config.hub_prefix = "me/tiny"
    pipe.stage_publish(again.model_dirs)  # verified folders: pushed
    assert pushed
    pushed.clear()
    with open(folder / HEADS_SHARD, "r+b") as f:
        f.truncate(10)
    with pytest.raises(ArtifactError, match=r"refusing to publish .*model-00002-of-00002\.safetensors has 10 bytes"):
        pipe.stage_publish(again.model_dirs)
    assert pushed == []
