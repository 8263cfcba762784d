"""Tests of ``hf-taskgroup group`` (hf_taskgroup/commands/group.py)."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from utils import write_cli_suite

from hf_taskgroup.cli import main
from hf_taskgroup.grouping.evaluators.affinity_collection import AffinityResult
from hf_taskgroup.grouping.result import Grouping

FAMILIES = [["cli_a", "cli_b"], ["cli_c"]]


@pytest.fixture(scope="module")
def pvi_dir(tmp_path_factory) -> Path:
    """Synthetic PVI artifacts in the layout `hf-taskgroup pvi` writes: <dir>/<task>/{dataset,summary.json}."""
    from hf_taskgroup.grouping.synthetic import make_synthetic_pvi
    from hf_taskgroup.pvi.artifacts import save_task_artifacts

    root = tmp_path_factory.mktemp("pvi")
    values = make_synthetic_pvi(FAMILIES, n_per_task=60, family_spacing=2.0, example_std=0.5, seed=0)
    for task, v in values.items():
        half = len(v) // 2
        data = datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"text": ["x"] * 3, "pvi": [None] * 3}),
            "validation": datasets.Dataset.from_dict({"text": ["x"] * half, "pvi": v[:half].tolist()}),
            "test": datasets.Dataset.from_dict({"text": ["x"] * (len(v) - half), "pvi": v[half:].tolist()}),
        })
        save_task_artifacts(root / task, data, {"task": task, "v_information": float(v.mean())})
    return root


def test_pvi_method_writes_a_grouping_and_plots(pvi_dir, tmp_path, capsys):
    out, plots = tmp_path / "groups.json", tmp_path / "plots"
    rc = main(["group", "--method", "pvi", "--pvi_dir", str(pvi_dir), "--output", str(out), "--plots_dir", str(plots)])
    assert rc == 0
    grouping = Grouping.from_json(out)
    grouping.validate()
    assert grouping.method == "pvi" and grouping.tasks == ["cli_a", "cli_b", "cli_c"]
    assert sorted(map(sorted, grouping.groups)) == FAMILIES
    assert grouping.scores["n_examples"] == {"cli_a": 30, "cli_b": 30, "cli_c": 30}  # validation only: never test
    assert {p.name for p in plots.glob("*.png")} == {"pvi_pvi_distributions.png", "pvi_p_values.png"}
    assert "group 2: cli_c" in capsys.readouterr().out


def test_pvi_options_are_passed_through(pvi_dir, tmp_path):
    out = tmp_path / "g.json"
    rc = main(["group", "--method", "pvi", "--pvi_dir", str(pvi_dir), "--tasks", "cli_a,cli_b", "--test", "tost",
               "--margin", "0.5", "--correction", "bh", "--alpha", "0.1", "--option", 'strategy="clique"',
               "--option", "subsample=20", "--output", str(out)])
    assert rc == 0
    params = Grouping.from_json(out).params
    assert (params["test"], params["equivalence_margin"], params["correction"], params["alpha"], params["strategy"],
            params["subsample"]) == ("tost", 0.5, "bh", 0.1, "clique", 20)
    assert Grouping.from_json(out).scores["n_examples"] == {"cli_a": 20, "cli_b": 20}  # subsampled


def test_unknown_method_lists_the_valid_ones(tmp_path, capsys):
    assert main(["group", "--method", "telepathy", "--output", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "unknown grouping method 'telepathy'" in err
    for name in ("pvi", "transfer_gain", "tag", "task_embedding", "clustering"):
        assert name in err


def test_option_the_method_does_not_take_is_an_error(tmp_path, capsys):
    assert main(["group", "--method", "all_in_one", "--tasks", "a,b", "--num_groups", "2",
                 "--output", str(tmp_path / "g.json")]) == 2
    assert "method 'all_in_one' does not take 'num_groups'" in capsys.readouterr().err
    assert main(["group", "--method", "pvi", "--output", str(tmp_path / "g.json")]) == 2
    assert "needs --pvi_dir" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_list_methods(capsys):
    assert main(["group", "--list_methods"]) == 0
    out = capsys.readouterr().out
    assert "task_embedding" in out and "needs: affinity" in out
    assert "options: test, correction, alpha" in out  # each method lists its options


@pytest.mark.parametrize("method", ["transfer_gain", "tag"])
def test_affinity_file_methods(tmp_path, method):
    S = np.array([[0.0, 0.5, -0.4], [0.6, 0.0, -0.3], [-0.2, -0.5, 0.0]])
    path = tmp_path / "S.json"
    AffinityResult(S, ["cli_a", "cli_b", "cli_c"], method, 3, 1.0).to_json(path)
    out, plots = tmp_path / "g.json", tmp_path / "plots"
    assert main(["group", "--method", method, "--affinity", str(path), "--num_groups", "2", "--output", str(out),
                 "--plots_dir", str(plots)]) == 0
    grouping = Grouping.from_json(out)
    assert sorted(map(sorted, grouping.groups)) == FAMILIES
    assert (plots / f"{method}_affinity.png").exists()
    np.save(tmp_path / "S.npy", S[::-1, ::-1])  # .npy: tasks in the order of --tasks
    assert main(["group", "--method", method, "--affinity", str(tmp_path / "S.npy"), "--tasks", "cli_c,cli_b,cli_a",
                 "--num_groups", "2", "--output", str(out)]) == 0
    assert sorted(map(sorted, Grouping.from_json(out).groups)) == FAMILIES


@pytest.fixture(scope="module")
def tiny_suite_yaml(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-task suite on jsonl files and a tiny BERT + tokenizer folder to pass as --model."""
    return write_cli_suite(tmp_path_factory.mktemp("cli_suite"), "cli-suite")


@pytest.mark.slow
def test_tag_collects_the_affinity_from_a_suite(tiny_suite_yaml, tmp_path):
    suite, model = tiny_suite_yaml
    out, cache = tmp_path / "g.json", tmp_path / "cache"
    argv = ["group", "--method", "tag", "--suite", str(suite), "--model", str(model), "--num_train_epochs", "1",
            "--max_length", "32", "--trunk_hidden_sizes", "8",
            "--batch_size", "8", "--every_k_steps", "1", "--num_groups", "2", "--cache_dir", str(cache),
            "--output", str(out)]
    assert main(argv) == 0
    grouping = Grouping.from_json(out)
    collection = grouping.provenance["affinity_collection"]
    assert collection["kind"] == "tag" and collection["steps_collected"] >= 5
    assert grouping.cost.trainings == 1
    assert AffinityResult.from_json(cache / "affinity_tag.json").tasks == ["cli_a", "cli_b", "cli_c"]


@pytest.mark.slow
def test_task_embedding_and_exhaustive_train_from_a_suite(tiny_suite_yaml, tmp_path):
    suite, model = tiny_suite_yaml
    common = ["--suite", str(suite), "--model", str(model), "--num_train_epochs", "1", "--batch_size", "8",
              "--max_length", "32",
              "--cache_dir", str(tmp_path / "cache")]
    assert main(["group", "--method", "task_embedding", "--num_groups", "2", "--output", str(tmp_path / "e.json"),
                 *common]) == 0
    assert Grouping.from_json(tmp_path / "e.json").cost.trainings == 3
    assert main(["group", "--method", "exhaustive", "--output", str(tmp_path / "x.json"), *common]) == 0
    exhaustive = Grouping.from_json(tmp_path / "x.json")
    assert exhaustive.cost.trainings == 7  # every non-empty subset of 3 tasks, each trained once
    assert len(list((tmp_path / "cache" / "groups").glob("*.json"))) == 7


@pytest.mark.slow
def test_grad_estimate_trains_one_base_model_from_a_suite(tiny_suite_yaml, tmp_path):
    suite, model = tiny_suite_yaml
    argv = ["group", "--method", "grad_estimate", "--suite", str(suite), "--model", str(model), "--epochs", "1",
            "--batch_size", "8", "--max_length", "32", "--trunk_hidden_sizes", "8", "--option", "projection_dim=8",
            "--option", "search=\"exhaustive\"", "--cache_dir", str(tmp_path / "cache"), "--output", str(tmp_path / "g.json")]
    assert main(argv) == 0
    grouping = Grouping.from_json(tmp_path / "g.json")
    assert grouping.method == "grad_estimate" and grouping.cost.trainings == 1
    assert grouping.scores["subsets_estimated"] == 7
    assert list((tmp_path / "cache" / "grad_estimate").glob("*/meta.json"))
