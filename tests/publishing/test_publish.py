"""hf_taskgroup.publishing.models: group model folders (weights, tokenizer, card, plots) and their upload to the Hub."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel
from utils import tiny_model, tiny_suite, tiny_tokenizer

import hf_taskgroup  # noqa: F401  (registers the Auto classes)
from hf_taskgroup.grouping.result import Grouping
from hf_taskgroup.publishing.model_card import REPO_PLACEHOLDER, MultiTaskModelCardData
from hf_taskgroup.publishing.models import (
    GroupModelPushError,
    build_group_card_data,
    push_group_model,
    save_group_model,
    write_group_model_folder,
)
from hf_taskgroup.report.evaluation import MethodEvaluation, TaskRow
from hf_taskgroup.training.modeling import apply_lora

GROUPING = Grouping(groups=[["sent", "sim", "hall", "ner"], ["other"]], method="tag",
                    tasks=["sent", "sim", "hall", "ner", "other"], params={"num_groups": 2}, scores={})


@pytest.fixture(scope="module")
def suite():
    return tiny_suite()


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    return path


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _evaluation() -> MethodEvaluation:
    rows = {
        t: TaskRow(task=t, metric=m, group=["hall", "ner", "sent", "sim"], stl_mean=s, stl_std=0.0, mtl_mean=v,
                   mtl_std=0.0, gain=v - s, negative_transfer=v < s, seeds=2)
        for t, m, s, v in (("sent", "accuracy", 0.7, 0.8), ("sim", "pearson", 0.5, 0.4),
                           ("hall", "f1_micro", 0.3, 0.35), ("ner", "f1", 0.2, 0.25))
    }
    return MethodEvaluation(method="tag", groups=GROUPING.groups, rows=rows, stl_parameters=10, grouped_parameters=5)


@pytest.fixture(scope="module")
def card_data(suite):
    return build_group_card_data(grouping=GROUPING, group_index=0, evaluation=_evaluation(), suite=suite,
                                 encoder="/local/minilm", training={"finetune": "frozen"}, seeds=[0, 1])


# ----------------------------------------------------------------------------------------- card data
def test_build_group_card_data_collects_types_labels_inputs_and_results(card_data):
    assert card_data.tasks == ["sent", "sim", "hall", "ner"]
    assert card_data.task_types == {"sent": "classification", "sim": "regression", "hall": "multilabel",
                                    "ner": "token_classification"}
    assert card_data.task_inputs == {"sent": "text", "sim": "pair", "hall": "text", "ner": "words"}
    assert card_data.label_names["sent"] == ["neg", "pos"] and card_data.label_names["sim"] is None
    assert card_data.results["sim"] == {"metric": "pearson", "split": "test", "value": 0.4, "stl_value": 0.5,
                                        "gain": pytest.approx(-0.1), "seeds": 2}
    assert card_data.training == {"finetune": "frozen", "seeds": [0, 1]}
    assert card_data.grouping["method"] == "tag" and card_data.group_index == 0


def test_build_group_card_data_rejects_a_missing_group():
    with pytest.raises(IndexError, match="'tag' grouping has 2 groups"):
        build_group_card_data(grouping=GROUPING, group_index=2)


# ----------------------------------------------------------------------------------------- saving
def test_save_group_model_writes_weights_tokenizer_card_and_plots(suite, card_data, tmp_path):
    plot = _png(tmp_path / "run" / "plots" / "gains.png")
    card_data = MultiTaskModelCardData(**{**vars(card_data), "plots": [str(plot), str(tmp_path / "missing.png")]})
    folder = save_group_model(tiny_model(suite), tiny_tokenizer(), tmp_path / "model", card_data)
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "plots"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    assert (folder / "plots" / "gains.png").read_bytes() == plot.read_bytes()
    card = ModelCard.load(folder / "README.md")
    assert "![gains](plots/gains.png)" in card.text and "missing" not in card.text
    assert card.data.task_groups["groups"] == GROUPING.groups
    assert "base_model" not in card.data.to_dict()  # a local encoder path is no Hub repo id


def test_save_group_model_merges_lora_into_a_standalone_model(suite, tmp_path):
    peft_model = apply_lora(tiny_model(suite), r=2, target_modules=["query", "value"])
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # make the adapter matter
    tok = tiny_tokenizer()
    expected = peft_model.get_base_model().predict("sim", [("good the", "great")], tokenizer=tok)
    folder = save_group_model(peft_model, tok, tmp_path / "merged")
    assert not (folder / "adapter_config.json").exists()
    reloaded = AutoModel.from_pretrained(folder)
    assert reloaded.predict("sim", [("good the", "great")]) == pytest.approx(expected, abs=1e-5)
    assert hasattr(peft_model, "peft_config")  # the caller's model is not merged in place


def test_write_group_model_folder_copies_without_trainer_files(suite, card_data, tmp_path):
    source = tmp_path / "run"
    tiny_model(suite).save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    (source / "training_args.bin").write_bytes(b"pickle")
    (source / "README.md").write_text("old card")
    before = _snapshot(source)
    target = write_group_model_folder(source, tmp_path / "published", card_data)
    assert not (target / "training_args.bin").exists()
    assert ModelCard.load(target / "README.md").data.library_name == "hf-taskgroup"
    assert (target / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert _snapshot(source) == before


def test_write_group_model_folder_refuses_an_adapter_folder(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="LoRA adapter"):
        write_group_model_folder(tmp_path / "adapter", tmp_path / "out")


# ----------------------------------------------------------------------------------------- pushing
@pytest.fixture
def saved(suite, card_data, tmp_path):
    model = tiny_model(suite)
    return save_group_model(model, tiny_tokenizer(), tmp_path / "model", card_data)


@pytest.mark.hub
def test_push_returns_the_commit_and_uploads_the_folder(saved, local_hub, hub_repo_id):
    (saved / "training_args.bin").write_bytes(b"pickle")
    _png(saved / "plots" / "gains.png")
    _png(saved / "checkpoint-5" / "model.safetensors")
    local_card = (saved / "README.md").read_text()
    sha = push_group_model(saved, hub_repo_id, commit_message="first upload")
    assert sha == local_hub.commits(hub_repo_id)[-1]
    remote = local_hub.repo_files(hub_repo_id)
    assert {"model.safetensors", "config.json", "tokenizer.json", "plots/gains.png"} <= set(remote)
    assert "training_args.bin" not in remote and not [f for f in remote if f.startswith("checkpoint-")]
    # the uploaded card shows the real repo id; the local card keeps its placeholder
    assert f'AutoModel.from_pretrained("{hub_repo_id}")' in remote["README.md"].decode()
    assert (saved / "README.md").read_text() == local_card and REPO_PLACEHOLDER in local_card
    data = ModelCard.load(hub_repo_id).data.to_dict()
    assert data["task_groups"]["method"] == "tag"
    assert {r["dataset"]["name"] for r in data["model-index"][0]["results"]} == {"sent", "sim", "hall", "ner"}


@pytest.mark.hub
def test_push_failure_names_the_repo_and_leaves_the_folder_intact(saved, healthy_local_hub, hub_repo_id):
    before = _snapshot(saved)
    healthy_local_hub.fail_next_commits(1)
    with pytest.raises(GroupModelPushError, match=hub_repo_id) as info:
        push_group_model(saved, hub_repo_id, token="hf_secret_never_logged")
    assert info.value.repo_id == hub_repo_id
    assert "hf_secret_never_logged" not in str(info.value)
    assert _snapshot(saved) == before
    assert push_group_model(saved, hub_repo_id)  # the same call succeeds once the Hub recovers


def test_push_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing pushed to me/x"):
        push_group_model(tmp_path, "me/x")


@pytest.mark.hub
@pytest.mark.slow
def test_pushed_model_reloads_in_a_new_process_and_predicts_every_head(saved, local_hub, hub_repo_id):
    push_group_model(saved, hub_repo_id)
    code = textwrap.dedent(
        f"""
        import json
        import hf_taskgroup
        from transformers import AutoModel
        model = AutoModel.from_pretrained({hub_repo_id!r})
        out = {{
            "sent": model.predict("sent", ["good great the", "bad awful"]),
            "hall": model.predict("hall", ["gene drug the"]),
            "sim": model.predict("sim", [("good the", "great")]),
            "ner": model.predict("ner", [["tumor", "cell", "the"]]),
        }}
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(out["sent"]) == 2 and set(out["sent"]) <= {"neg", "pos"}
    assert isinstance(out["hall"][0], list) and set(out["hall"][0]) <= {"drug", "gene", "tumor"}
    assert isinstance(out["sim"][0], float)
    assert len(out["ner"][0]) == 3 and set(out["ner"][0]) <= {"B", "I", "O"}
    expected = AutoModel.from_pretrained(saved).predict("sent", ["good great the", "bad awful"])
    assert out["sent"] == expected
