"""`hf-taskgroup pvi` and scripts/compute_pvi.py on a tiny suite and a tiny saved model (offline, local Hub)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from transformers import BertModel
from utils import classification_dataset, dataset_dict, regression_rows, tiny_bert_config, tiny_tokenizer

from hf_taskgroup.cli import main, parse

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::hf_taskgroup.pvi.scores.PVICollapseWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny encoder folder + tokenizer, as a user would pass with --model."""
    path = tmp_path_factory.mktemp("tiny_encoder")
    torch.manual_seed(0)
    BertModel(tiny_bert_config(), add_pooling_layer=False).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def suite_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    tasks = []
    for name, dd, cols in (("sent", classification_dataset(), ["text"]),
                           ("sim", dataset_dict(regression_rows), ["text_a", "text_b"])):
        files = {}
        for split, ds in dd.items():
            ds.to_json(str(root / name / f"{split}.jsonl"))
            files[split] = f"{name}/{split}.jsonl"
        tasks.append({"name": name, "type": "classification" if name == "sent" else "regression",
                      "text_columns": cols, "label_column": "label", "data_files": files})
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "tasks": tasks}))
    return path


def _args(suite_yaml, model_dir, out, *extra):
    return ["pvi", "--suite", str(suite_yaml), "--model", str(model_dir), "--output_dir", str(out),
            "--pvi_num_train_epochs", "1", "--batch_size", "8", "--max_length", "32", "--use_cpu", "--no_progress", *extra]


def test_parser_reads_every_pvi_option(capsys):
    command, job = parse(
        ["pvi", "--suite", "s.yaml", "--model", "m", "--finetune", "full", "--pvi_null", "analytic",
         "--pvi_heldout", "kfold", "--pvi_folds", "3", "--output_dir", "o", "--tasks", "a,b",
         "--pvi_num_train_epochs", "2", "--push_to_hub", "--hub_dataset_id", "me/x", "--one_repo_per_task", "--overwrite"])
    assert command == "pvi"
    assert (job.finetune, job.pvi_null, job.pvi_heldout, job.pvi_folds, job.tasks, job.pvi_num_train_epochs) == (
        "full", "analytic", "kfold", 3, ["a", "b"], 2.0)
    assert job.push_to_hub and job.one_repo_per_task and job.overwrite and job.hub_dataset_id == "me/x"


def test_pre_0_2_pvi_flags_still_work_with_a_warning(capsys):
    _, job = parse(["pvi", "--null", "analytic", "--heldout", "kfold", "--folds", "3", "--epochs", "2",
                    "--learning_rate", "0.01", "--splits", "validation"])
    assert (job.pvi_null, job.pvi_heldout, job.pvi_folds, job.pvi_num_train_epochs, job.pvi_learning_rate,
            job.pvi_splits) == ("analytic", "kfold", 3, 2.0, 0.01, ["validation"])
    err = capsys.readouterr().err
    assert "--null is deprecated; use --pvi_null" in err and "--epochs is deprecated" in err


def test_cli_runs_on_a_tiny_suite_and_resumes(tmp_path, suite_yaml, model_dir, capsys):
    out = tmp_path / "pvi"
    assert main(_args(suite_yaml, model_dir, out, "--finetune", "full", "--pvi_null", "trained")) == 0
    printed = capsys.readouterr().out
    assert "sent" in printed and "sim" in printed and "V-info" in printed
    for task in ("sent", "sim"):
        summary = json.loads((out / task / "summary.json").read_text())
        assert summary["settings"]["model"] == str(model_dir) and summary["settings"]["finetune"] == "full"
        assert set(summary["v_information"]) == {"validation", "test"}
    stamp = (out / "sent" / "summary.json").stat().st_mtime_ns
    assert main(_args(suite_yaml, model_dir, out, "--finetune", "full", "--pvi_null", "trained", "--tasks", "sent")) == 0
    assert (out / "sent" / "summary.json").stat().st_mtime_ns == stamp  # finished: not recomputed


@pytest.mark.hub
def test_cli_push_to_hub_round_trips_rows_and_columns(tmp_path, suite_yaml, model_dir, healthy_local_hub, hub_repo_id):
    out = tmp_path / "pvi"
    assert main(_args(suite_yaml, model_dir, out, "--pvi_null", "analytic", "--push_to_hub",
                      "--hub_dataset_id", hub_repo_id)) == 0
    for task in ("sent", "sim"):
        local = datasets.DatasetDict.load_from_disk(str(out / task / "dataset"))
        remote = datasets.load_dataset(hub_repo_id, task)
        assert sorted(remote) == sorted(local)
        for split in local:
            assert remote[split].column_names == local[split].column_names
            assert remote[split].to_list() == local[split].to_list()


@pytest.mark.hub
def test_failed_push_keeps_artifacts_and_prints_the_rerun(tmp_path, suite_yaml, model_dir, healthy_local_hub,
                                                          hub_repo_id, capsys):
    out = tmp_path / "pvi"
    healthy_local_hub.fail_next_commits(1, after=2)  # sent's data + card land; sim's data commit fails
    code = main(_args(suite_yaml, model_dir, out, "--pvi_null", "analytic", "--push_to_hub", "--hub_dataset_id",
                      hub_repo_id))
    printed = capsys.readouterr().out
    assert code == 1
    assert "Push failed" in printed and "--tasks sim" in printed and "hf-taskgroup pvi" in printed
    assert (out / "sent" / "summary.json").exists() and (out / "sim" / "summary.json").exists()
    assert main(_args(suite_yaml, model_dir, out, "--pvi_null", "analytic", "--push_to_hub", "--hub_dataset_id",
                      hub_repo_id, "--tasks", "sim")) == 0  # the printed re-run pushes the rest
    assert datasets.get_dataset_config_names(hub_repo_id) == ["sent", "sim"]


def test_script_runs_with_hf_argument_parser(tmp_path, suite_yaml, model_dir, monkeypatch):
    spec = importlib.util.spec_from_file_location("compute_pvi_script", ROOT / "scripts" / "compute_pvi.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look their module up while building
    spec.loader.exec_module(script)
    out = tmp_path / "pvi"
    code = script.main(["--suite", str(suite_yaml), "--model", str(model_dir), "--output_dir", str(out),
                        "--tasks", "sent", "--pvi_null", "analytic", "--pvi_heldout", "kfold", "--pvi_folds", "2",
                        "--pvi_num_train_epochs", "1", "--max_length", "32", "--use_cpu"])
    assert code == 0
    summary = json.loads((out / "sent" / "summary.json").read_text())
    assert summary["settings"]["heldout"] == "kfold" and summary["settings"]["folds"] == 2
    assert set(summary["v_information"]) == {"train", "validation", "test"}
