"""hf_taskgroup.publishing.pvi_dataset: publishing PVI-annotated datasets, against the local fake Hub (tests/local_hub.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict, get_dataset_config_names, load_dataset

from hf_taskgroup.publishing.pvi_dataset import (
    PVIConfigExistsError,
    PVIPushError,
    _template_path,
    load_pvi_artifacts,
    push_pvi_datasets,
    render_pvi_dataset_card,
)

pytestmark = pytest.mark.hub


# ----------------------------------------------------------------------------------------- helpers
def _split(n: int, offset: float = 0.0, start: int = 0) -> Dataset:
    return Dataset.from_dict(
        {
            "idx": list(range(start, start + n)),
            "sentence": [f"sentence {i}" for i in range(start, start + n)],
            "label": [i % 2 for i in range(n)],
            "pvi": [0.25 * i - 0.5 + offset for i in range(n)],
            "pvi_h_yx": [0.1 * i for i in range(n)],
            "pvi_h_yb": [1.0] * n,
            "pvi_correct": [i % 3 != 0 for i in range(n)],
        }
    )


def _summary(task: str, splits: dict[str, Dataset], **settings) -> dict:
    return {
        "task": task,
        "task_type": "single_label_classification",
        "settings": {
            "model": "tiny-bert",
            "finetune": "frozen",
            "epochs": 2.0,
            "null": "trained",
            "heldout": "dev_test",
            "folds": None,
            "seed": 0,
            **settings,
        },
        "v_information": {
            s: sum(d["pvi"]) / len(d) if "pvi" in d.column_names else 0.0 for s, d in splits.items()
        },
        "accuracy": {s: 0.75 for s in splits},
        "collapsed": {s: s == "test" for s in splits},
        "num_examples": {s: len(d) for s, d in splits.items()},
        "library_version": "0.1.0",
    }


def write_task(pvi_dir: Path, task: str, splits: dict[str, Dataset], **settings) -> DatasetDict:
    """Write ``<pvi_dir>/<task>/{dataset,summary.json}`` as compute_pvi does; return the DatasetDict."""
    dataset = DatasetDict(splits)
    (pvi_dir / task).mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(pvi_dir / task / "dataset"))
    (pvi_dir / task / "summary.json").write_text(json.dumps(_summary(task, splits, **settings)))
    return dataset


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _card_yaml(local_hub, repo_id: str) -> dict:
    readme = local_hub.repo_files(repo_id, "dataset")["README.md"].decode()
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---", readme, re.S).group(1))


@pytest.fixture
def pvi_dir(tmp_path: Path) -> Path:
    root = tmp_path / "pvi"
    write_task(
        root, "sst2", {"train": _split(6), "validation": _split(3, start=6), "test": _split(2, start=9)}
    )
    write_task(root, "rte", {"train": _split(4, offset=1.0), "validation": _split(2, offset=1.0, start=4)})
    return root


# ----------------------------------------------------------------------------------------- artifacts and card
def test_load_pvi_artifacts_reads_all_tasks(pvi_dir):
    artifacts = load_pvi_artifacts(pvi_dir)
    assert list(artifacts) == ["rte", "sst2"]
    dataset, summary = artifacts["sst2"]
    assert set(dataset) == {"train", "validation", "test"} and summary["settings"]["model"] == "tiny-bert"


def test_load_pvi_artifacts_names_missing_task_and_missing_column(pvi_dir):
    with pytest.raises(FileNotFoundError, match="'cola'"):
        load_pvi_artifacts(pvi_dir, ["sst2", "cola"])
    write_task(pvi_dir, "bad", {"train": _split(3).remove_columns("pvi")})
    with pytest.raises(ValueError, match=r"Task 'bad', split 'train'.*\['pvi'\]"):
        load_pvi_artifacts(pvi_dir, ["bad"])


def test_template_path_errors_clearly():
    assert _template_path("pvi_dataset_card.md").is_file()
    with pytest.raises(FileNotFoundError, match="nope.md.*looked in"):
        _template_path("nope.md")


def test_rendered_card_records_settings_and_hides_secrets(pvi_dir):
    summary = load_pvi_artifacts(pvi_dir, ["rte"])["rte"][1]
    summary["settings"]["hub_token"] = "hf_secret_value"
    card = render_pvi_dataset_card({"rte": summary}, "me/glue-pvi")
    record = card.data.pvi_annotations["rte"]
    assert record["settings"]["null"] == "trained" and record["config_name"] == "rte"
    assert record["v_information"] == summary["v_information"]
    assert "hf_secret_value" not in str(card) and "hub_token" not in str(card)
    assert 'load_dataset("me/glue-pvi", "rte")' in card.text


# ----------------------------------------------------------------------------------------- pushing
def test_push_then_load_returns_identical_rows_and_columns(local_hub, hub_repo_id, pvi_dir):
    refs = push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["sst2"])
    repo, sha = refs["sst2"].split("@")
    assert repo == hub_repo_id and sha == local_hub.commits(hub_repo_id, "dataset")[-1]
    local = load_pvi_artifacts(pvi_dir, ["sst2"])["sst2"][0]
    remote = load_dataset(hub_repo_id, "sst2")
    assert set(remote) == set(local)
    for split in local:
        assert remote[split].column_names == local[split].column_names
        assert remote[split].to_dict() == local[split].to_dict()


def test_two_tasks_give_two_configs_and_card_yaml_records_them(local_hub, hub_repo_id, pvi_dir, caplog):
    with caplog.at_level(logging.DEBUG):
        refs = push_pvi_datasets(pvi_dir, hub_repo_id)
    assert set(refs) == {"rte", "sst2"}
    assert sorted(get_dataset_config_names(hub_repo_id)) == ["rte", "sst2"]
    assert list(load_dataset(hub_repo_id, "rte", split="validation")["pvi"]) == [0.5, 0.75]

    meta = _card_yaml(local_hub, hub_repo_id)
    assert sorted(c["config_name"] for c in meta["configs"]) == ["rte", "sst2"]
    assert sorted(i["config_name"] for i in meta["dataset_info"]) == ["rte", "sst2"]
    for task in ("rte", "sst2"):
        expected = json.loads((pvi_dir / task / "summary.json").read_text())
        record = meta["pvi_annotations"][task]
        assert record["v_information"] == expected["v_information"]
        assert record["settings"]["model"] == "tiny-bert" and record["settings"]["finetune"] == "frozen"
        assert record["collapsed"] == expected["collapsed"] and record["library_version"] == "0.1.0"
    readme = local_hub.repo_files(hub_repo_id, "dataset")["README.md"].decode()
    assert "hf_local_test_token" not in readme and "hf_local_test_token" not in caplog.text


def test_pushing_changed_values_without_overwrite_refuses_before_uploading(local_hub, hub_repo_id, pvi_dir):
    push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["sst2"])
    commits = local_hub.commits(hub_repo_id, "dataset")
    write_task(pvi_dir, "sst2", {"train": _split(6, offset=5.0)})  # other PVI values for the same config
    write_task(pvi_dir, "cola", {"train": _split(2)})  # a new task in the same call is not pushed either
    with pytest.raises(PVIConfigExistsError) as info:
        push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["cola", "sst2"])
    message = str(info.value)
    assert hub_repo_id in message and "'sst2'" in message and "overwrite=True" in message
    assert local_hub.commits(hub_repo_id, "dataset") == commits


def test_pushing_the_same_data_again_is_a_no_op(local_hub, hub_repo_id, pvi_dir):
    """A re-run (e.g. ``hf-taskgroup run --push_to_hub`` twice) needs no ``--overwrite`` for unchanged PVI data:
    nothing is uploaded, the refs are the repo's head, and a new task in the same call is still pushed."""
    first = push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["sst2"])
    commits = local_hub.commits(hub_repo_id, "dataset")
    assert push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["sst2"]) == first
    assert local_hub.commits(hub_repo_id, "dataset") == commits
    write_task(pvi_dir, "cola", {"train": _split(2)})
    again = push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["cola", "sst2"])
    assert again["sst2"] == first["sst2"] and again["cola"] != first["sst2"]
    assert sorted(get_dataset_config_names(hub_repo_id)) == ["cola", "sst2"]
    records = _card_yaml(local_hub, hub_repo_id)["pvi_annotations"]
    assert records["sst2"]["content_fingerprint"] != records["cola"]["content_fingerprint"]


def test_pushing_another_task_keeps_existing_configs(local_hub, hub_repo_id, pvi_dir):
    push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["sst2"])
    push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["rte"])
    assert sorted(get_dataset_config_names(hub_repo_id)) == ["rte", "sst2"]
    assert len(load_dataset(hub_repo_id, "sst2", split="train")) == 6
    assert sorted(_card_yaml(local_hub, hub_repo_id)["pvi_annotations"]) == ["rte", "sst2"]


def test_overwrite_replaces_pvi_values(local_hub, hub_repo_id, pvi_dir):
    push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["rte"])
    write_task(pvi_dir, "rte", {"train": _split(4, offset=5.0), "validation": _split(2, offset=5.0, start=4)})
    push_pvi_datasets(pvi_dir, hub_repo_id, tasks=["rte"], overwrite=True)
    assert list(load_dataset(hub_repo_id, "rte", split="validation")["pvi"]) == [4.5, 4.75]
    assert (
        _card_yaml(local_hub, hub_repo_id)["pvi_annotations"]["rte"]["v_information"]["validation"] == 4.625
    )


def test_overwrite_keeps_remote_splits_missing_locally(hub_repo_id, tmp_path):
    root = tmp_path / "pvi"
    write_task(root, "sst2", {"train": _split(4), "test": _split(2, start=4)})
    push_pvi_datasets(root, hub_repo_id)
    write_task(root / "v2", "sst2", {"test": _split(2, offset=3.0, start=4)})
    push_pvi_datasets(root / "v2", hub_repo_id, overwrite=True)
    remote = load_dataset(hub_repo_id, "sst2")
    assert set(remote) == {"train", "test"}
    assert remote["train"].to_dict() == _split(4).to_dict()
    assert list(remote["test"]["pvi"]) == [2.5, 2.75]


def test_one_repo_per_task_layout(local_hub, hub_repo_id, pvi_dir):
    refs = push_pvi_datasets(pvi_dir, hub_repo_id, one_repo_per_task=True)
    assert {t: ref.split("@")[0] for t, ref in refs.items()} == {
        "rte": f"{hub_repo_id}-rte",
        "sst2": f"{hub_repo_id}-sst2",
    }
    assert not local_hub.repo_exists(hub_repo_id, "dataset")
    assert get_dataset_config_names(f"{hub_repo_id}-rte") == ["default"]
    assert load_dataset(f"{hub_repo_id}-rte", split="train").to_dict() == _split(4, offset=1.0).to_dict()
    assert list(_card_yaml(local_hub, f"{hub_repo_id}-sst2")["pvi_annotations"]) == ["sst2"]


# ----------------------------------------------------------------------------------------- failures
def test_failed_push_keeps_local_files_and_names_unpushed_tasks(healthy_local_hub, hub_repo_id, pvi_dir):
    write_task(pvi_dir, "wnli", {"train": _split(3)})
    before = _snapshot(pvi_dir)
    healthy_local_hub.fail_next_commits(1, after=2)  # rte data + card succeed, sst2's data commit fails
    with pytest.raises(PVIPushError) as info:
        push_pvi_datasets(pvi_dir, hub_repo_id)
    err = info.value
    assert list(err.pushed) == ["rte"] and err.not_pushed == ["sst2", "wnli"]
    assert "Not pushed: sst2, wnli" in str(err) and "tasks=['sst2', 'wnli']" in err.rerun
    assert "overwrite" not in err.rerun and "token" not in err.rerun
    assert _snapshot(pvi_dir) == before
    assert get_dataset_config_names(hub_repo_id) == ["rte"]

    exec(err.rerun)  # the printed call pushes the rest
    assert sorted(get_dataset_config_names(hub_repo_id)) == ["rte", "sst2", "wnli"]
    assert _snapshot(pvi_dir) == before


def test_failed_card_commit_reruns_with_overwrite(healthy_local_hub, hub_repo_id, pvi_dir):
    healthy_local_hub.fail_next_commits(1, after=1)  # rte's data lands, its card commit fails
    with pytest.raises(PVIPushError) as info:
        push_pvi_datasets(pvi_dir, hub_repo_id)
    assert info.value.pushed == {} and info.value.not_pushed == ["rte", "sst2"]
    assert "card was not updated" in str(info.value) and "overwrite=True" in info.value.rerun
    exec(info.value.rerun)
    assert sorted(_card_yaml(healthy_local_hub, hub_repo_id)["pvi_annotations"]) == ["rte", "sst2"]
