"""The real Hugging Face clients against tests/local_hub.py (the fake Hub started by conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import (
    HfApi,
    ModelCard,
    ModelCardData,
    hf_hub_download,
    metadata_update,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

pytestmark = pytest.mark.hub


def _write_folder(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def test_create_upload_folder_and_download(tmp_path, local_hub, hub_repo_id):
    api = HfApi()
    url = api.create_repo(hub_repo_id)
    assert url.startswith(local_hub.url)
    folder = _write_folder(
        tmp_path / "src", {"a.txt": "alpha", "sub/b.json": '{"b": 1}', "w.safetensors": b"\x00" * 64}
    )
    api.upload_folder(repo_id=hub_repo_id, folder_path=folder)

    assert Path(hf_hub_download(hub_repo_id, "a.txt")).read_text() == "alpha"
    assert Path(hf_hub_download(hub_repo_id, "sub/b.json")).read_text() == '{"b": 1}'
    assert Path(hf_hub_download(hub_repo_id, "w.safetensors")).read_bytes() == b"\x00" * 64
    assert sorted(api.list_repo_files(hub_repo_id)) == [
        ".gitattributes",
        "a.txt",
        "sub/b.json",
        "w.safetensors",
    ]
    assert api.repo_info(hub_repo_id).sha == local_hub.commits(hub_repo_id)[-1]
    # the binary file went through the LFS batch + PUT path
    (entry,) = api.get_paths_info(hub_repo_id, ["w.safetensors"])
    assert entry.lfs is not None and entry.lfs.size == 64


def test_missing_repo_and_file_raise_the_client_errors(hub_repo_id):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(hub_repo_id)
    api.create_repo(hub_repo_id, repo_type="dataset")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "nope.txt", repo_type="dataset")
    with pytest.raises(HfHubHTTPError):  # 409: already exists
        api.create_repo(hub_repo_id, repo_type="dataset")
    api.create_repo(hub_repo_id, repo_type="dataset", exist_ok=True)


def test_snapshot_download_and_deletions(tmp_path, local_hub, hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id, repo_type="dataset")
    folder = _write_folder(tmp_path / "src", {"x/1.txt": "one", "x/2.txt": "two", "y.txt": "why"})
    api.upload_folder(repo_id=hub_repo_id, folder_path=folder, repo_type="dataset")

    snap = Path(snapshot_download(hub_repo_id, repo_type="dataset", local_dir=tmp_path / "snap"))
    assert (snap / "x/2.txt").read_text() == "two" and (snap / "y.txt").read_text() == "why"

    api.delete_folder("x", repo_id=hub_repo_id, repo_type="dataset")
    assert set(local_hub.repo_files(hub_repo_id, "dataset")) == {".gitattributes", "y.txt"}


def test_revision_pinning_returns_old_content(tmp_path, local_hub, hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=hub_repo_id).oid
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id=hub_repo_id)

    assert local_hub.commits(hub_repo_id)[-2] == first
    assert Path(hf_hub_download(hub_repo_id, "f.txt")).read_bytes() == b"v2"
    assert Path(hf_hub_download(hub_repo_id, "f.txt", revision=first)).read_bytes() == b"v1"
    assert local_hub.repo_files(hub_repo_id, revision=first)["f.txt"] == b"v1"


def test_model_card_push_load_and_metadata_update(local_hub, hub_repo_id):
    HfApi().create_repo(hub_repo_id)
    card = ModelCard.from_template(
        ModelCardData(license="mit", tags=["multi-task"], task_groups=[["a", "b"], ["c"]])
    )
    card.push_to_hub(hub_repo_id)

    loaded = ModelCard.load(hub_repo_id)
    assert loaded.data.license == "mit"
    assert loaded.data.task_groups == [["a", "b"], ["c"]]

    metadata_update(hub_repo_id, {"tags": ["multi-task", "pvi"]}, overwrite=True)
    assert ModelCard.load(hub_repo_id).data.tags == ["multi-task", "pvi"]
    assert b"pvi" in local_hub.repo_files(hub_repo_id)["README.md"]


def test_failing_commit_switch(local_hub, hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id)
    before = local_hub.commits(hub_repo_id)
    local_hub.fail_next_commits(1)
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id)
    assert info.value.response.status_code == 500
    assert local_hub.commits(hub_repo_id) == before
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id)  # switch consumed
    assert len(local_hub.commits(hub_repo_id)) == len(before) + 1


def test_dataset_push_two_configs_and_load(local_hub, hub_repo_id):
    from datasets import Dataset, DatasetDict, get_dataset_config_names, load_dataset

    sst2 = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["good", "bad", "fine"], "label": [1, 0, 1]}),
            "validation": Dataset.from_dict({"text": ["meh"], "label": [0]}),
        }
    )
    stsb = DatasetDict(
        {"train": Dataset.from_dict({"s1": ["a", "b"], "s2": ["c", "d"], "score": [0.5, 4.0]})}
    )
    sst2.push_to_hub(hub_repo_id, config_name="sst2")
    stsb.push_to_hub(hub_repo_id, config_name="stsb")

    assert sorted(get_dataset_config_names(hub_repo_id)) == ["sst2", "stsb"]
    loaded = load_dataset(hub_repo_id, "sst2")
    assert set(loaded) == {"train", "validation"}
    assert loaded["train"].to_dict() == sst2["train"].to_dict()
    assert loaded["validation"].to_dict() == sst2["validation"].to_dict()
    assert load_dataset(hub_repo_id, "stsb", split="train").to_dict() == stsb["train"].to_dict()
    files = local_hub.repo_files(hub_repo_id, "dataset")
    assert any(p.startswith("sst2/train-") and p.endswith(".parquet") for p in files)
    assert b"config_name: stsb" in files["README.md"]


@pytest.mark.slow
def test_transformers_model_push_and_from_pretrained(hub_repo_id):
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = BertModel(config)
    model.push_to_hub(hub_repo_id)

    reloaded = AutoModel.from_pretrained(hub_repo_id)
    assert isinstance(reloaded, BertModel)
    original, loaded = model.state_dict(), reloaded.state_dict()
    assert original.keys() == loaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, loaded[name]), name


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "good": 4, "bad": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


@pytest.mark.slow
def test_tokenizer_and_trainer_push_to_hub(tmp_path, local_hub, hub_repo_id):
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
    )

    tokenizer = _tiny_tokenizer()
    config = BertConfig(
        vocab_size=6, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    train = Dataset.from_dict({"input_ids": [[2, 4, 3], [2, 5, 3]] * 2, "labels": [1, 0] * 2})
    args = TrainingArguments(
        str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4, push_to_hub=True,
        hub_model_id=hub_repo_id, report_to=[], use_cpu=True, save_strategy="no",
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    trainer.push_to_hub(tags=["multi-task"])

    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(
        local_hub.repo_files(hub_repo_id)
    )
    assert (
        AutoTokenizer.from_pretrained(hub_repo_id)("good bad")["input_ids"]
        == tokenizer("good bad")["input_ids"]
    )
    reloaded = AutoModelForSequenceClassification.from_pretrained(hub_repo_id)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
