"""Checkpoints that behave like the Hub's own (issue 16): custom code + auto_map, no local paths, LoRA checkpoints
that reload, single-task exports for pipeline(), the encoder stored once per run, publishing that never overwrites.

"Without the package" means a fresh interpreter, started in another folder, where ``import hf_taskgroup`` fails
(``sys.modules['hf_taskgroup'] = None``): only torch and transformers are there to load the checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from transformers import AutoModel, BertModel, pipeline
from utils import classification_dataset, tiny_bert_config, tiny_model, tiny_suite, tiny_tokenizer

import hf_taskgroup  # noqa: F401  (registers the Auto classes)
from hf_taskgroup.publishing.export import export_task
from hf_taskgroup.publishing.models import (
    ENCODER_SHARD,
    GroupModelPushError,
    push_group_model,
    save_group_model,
    write_group_model_folder,
)
from hf_taskgroup.training.modeling import (
    MultiTaskModel,
    apply_lora,
    is_lora_checkpoint,
    public_model_reference,
    save_lora_checkpoint,
)

INPUTS = {
    "sent": ["good great the", "bad awful"],
    "sim": [("good the", "great"), ("bad", "good good")],
    "hall": ["gene drug the", "tumor"],
    "ner": [["tumor", "cell", "the"], ["the", "dose"]],
}
BLOCK_PACKAGE = "import sys\nsys.modules['hf_taskgroup'] = None  # importing hf_taskgroup must fail here\n"


def _predict_all(model, tokenizer=None) -> dict:
    return {t: model.predict(t, x, tokenizer=tokenizer, return_scores=True) for t, x in INPUTS.items()}


def _run_without_package(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter that cannot import hf_taskgroup; return the JSON it prints last."""
    script = BLOCK_PACKAGE + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_OFFLINE")}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                         cwd=str(cwd))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _close(a, b, tol=1e-5) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= tol
    return a == b


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny pretrained encoder saved as a local folder (with its tokenizer), like a downloaded model."""
    folder = tmp_path_factory.mktemp("encoder") / "tiny-bert"
    torch.manual_seed(0)
    BertModel(tiny_bert_config(), add_pooling_layer=False).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def grouped(tmp_path) -> Path:
    """A saved grouped model (mean pooling + trunk, four task types) with its tokenizer."""
    model = tiny_model(tiny_suite(), trunk=(8,), pooling="mean", seed=1)
    # a regression head trained on standardized labels: the code shipped with the checkpoint must undo the scaling
    model.config.tasks = {**model.config.tasks, "sim": {**model.config.tasks["sim"], "label_mean": 2.0, "label_std": 1.5}}
    return save_group_model(model, tiny_tokenizer(), tmp_path / "grouped")


# ----------------------------------------------------------------------------------------- 1. custom code
def test_saved_checkpoint_carries_self_contained_code_and_auto_map(grouped):
    config = json.loads((grouped / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "modeling_hf_taskgroup.HfTaskGroupConfig",
                                  "AutoModel": "modeling_hf_taskgroup.HfTaskGroupModel"}
    code = (grouped / "modeling_hf_taskgroup.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in code.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "inspect", "collections", "dataclasses", "typing", "torch", "transformers"}


@pytest.mark.slow
def test_grouped_checkpoint_loads_without_the_package_with_the_same_outputs(grouped, tmp_path):
    expected = _predict_all(AutoModel.from_pretrained(grouped))
    got = _run_without_package(f"""
        import json
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(grouped)!r}, trust_remote_code=True)
        assert type(model).__name__ == "HfTaskGroupModel", type(model)
        inputs = {json.dumps(INPUTS)}
        inputs["sim"] = [tuple(p) for p in inputs["sim"]]
        print(json.dumps({{t: model.predict(t, x, return_scores=True) for t, x in inputs.items()}}))
        """, tmp_path)
    assert _close(got, json.loads(json.dumps(expected)))


@pytest.mark.hub
@pytest.mark.slow
def test_grouped_checkpoint_round_trips_through_the_hub_into_a_clean_process(grouped, local_hub, hub_repo_id, tmp_path):
    push_group_model(grouped, hub_repo_id)
    assert "modeling_hf_taskgroup.py" in local_hub.repo_files(hub_repo_id)
    expected = _predict_all(AutoModel.from_pretrained(grouped))
    got = _run_without_package(f"""
        import json
        from transformers import AutoModel
        model = AutoModel.from_pretrained({hub_repo_id!r}, trust_remote_code=True)
        print(json.dumps({{"sent": model.predict("sent", {INPUTS["sent"]!r}, return_scores=True),
                           "ner": model.predict("ner", {INPUTS["ner"]!r}, return_scores=True)}}))
        """, tmp_path)
    assert _close(got, json.loads(json.dumps({t: expected[t] for t in ("sent", "ner")})))


# ----------------------------------------------------------------------------------------- 2. no local paths
def test_config_records_a_hub_id_never_a_local_path(encoder_dir, tmp_path):
    model = MultiTaskModel.from_encoder(str(encoder_dir), tiny_suite().task_infos())
    assert model.config.encoder_name_or_path == str(encoder_dir)  # the running model keeps where it came from
    model.save_pretrained(tmp_path / "m")
    text = (tmp_path / "m" / "config.json").read_text()
    assert str(encoder_dir) not in text and str(tmp_path) not in text
    assert json.loads(text).get("encoder_name_or_path") is None
    assert model.config.encoder_name_or_path == str(encoder_dir)
    assert public_model_reference("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    from hf_taskgroup.training.train import default_model_path

    assert public_model_reference(default_model_path()) == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.hub
def test_no_published_file_holds_a_local_path(encoder_dir, tmp_path, local_hub, hub_repo_id):
    from hf_taskgroup.grouping.result import Grouping
    from hf_taskgroup.publishing.models import build_group_card_data
    from hf_taskgroup.publishing.pvi_dataset import push_pvi_datasets

    suite = tiny_suite(("classification",))
    model = MultiTaskModel.from_encoder(str(encoder_dir), suite.task_infos())
    grouping = Grouping(groups=[["sent"]], method="pvi", tasks=["sent"], params={}, scores={})
    card = build_group_card_data(grouping=grouping, group_index=0, suite=suite, encoder=str(encoder_dir),
                                 training={"model_name_or_path": str(encoder_dir)})
    folder = save_group_model(model, tiny_tokenizer(), tmp_path / "model", card)
    _write_pvi(tmp_path / "pvi", "sent", model=str(encoder_dir))
    push_group_model(folder, hub_repo_id)
    push_pvi_datasets(tmp_path / "pvi", f"{hub_repo_id}-pvi", suite=suite)
    published = {**local_hub.repo_files(hub_repo_id), **local_hub.repo_files(f"{hub_repo_id}-pvi", "dataset")}
    assert {"config.json", "README.md"} <= set(published)
    local = [str(tmp_path).encode(), str(encoder_dir).encode()]
    for name, content in published.items():
        assert not any(p in content for p in local), f"{name} records a local path"
    exported = export_task(model, "sent", tmp_path / "export-sent", tokenizer=tiny_tokenizer())
    standard = export_task(MultiTaskModel.from_encoder(str(encoder_dir), tiny_suite(("token_classification",))
                                                       .task_infos()), "ner", tmp_path / "export-ner",
                           tokenizer=tiny_tokenizer())
    assert standard.standard
    for folder in (exported.path, standard.path):
        for path in folder.iterdir():
            assert not any(p in path.read_bytes() for p in local), f"{path} records a local path"


def _write_pvi(root: Path, task: str, **settings) -> None:
    """PVI artifacts of one task as compute_pvi writes them (``<root>/<task>/{dataset,summary.json}``)."""
    from datasets import Dataset, DatasetDict

    def split(n: int) -> Dataset:
        return Dataset.from_dict({"text": ["good"] * n, "label": [i % 2 for i in range(n)], "pvi": [0.5] * n,
                                  "pvi_h_yx": [0.1] * n, "pvi_h_yb": [1.0] * n, "pvi_correct": [True] * n})

    splits = {"train": split(4), "validation": split(2)}
    DatasetDict(splits).save_to_disk(str(root / task / "dataset"))
    (root / task / "summary.json").write_text(json.dumps({
        "task": task, "task_type": "classification", "settings": {"finetune": "frozen", "null": "trained", **settings},
        "v_information": {s: 0.5 for s in splits}, "accuracy": {s: 1.0 for s in splits},
        "collapsed": {s: False for s in splits}, "num_examples": {s: len(d) for s, d in splits.items()}}))


# ----------------------------------------------------------------------------------------- 3. LoRA
def _lora_model(encoder_dir: Path):
    model = MultiTaskModel.from_encoder(str(encoder_dir), tiny_suite().task_infos())
    peft_model = apply_lora(model, r=2, target_modules=["query", "value"])
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, 0.5)  # trained-looking adapter and heads
    return peft_model


@pytest.mark.parametrize("merge", [False, True])
def test_lora_checkpoint_reloads_with_the_same_outputs(encoder_dir, tmp_path, merge):
    peft_model = _lora_model(encoder_dir)
    expected = _predict_all(peft_model.get_base_model(), tiny_tokenizer())
    folder = Path(save_lora_checkpoint(peft_model, tmp_path / "lora", merge=merge))
    tiny_tokenizer().save_pretrained(folder)
    assert is_lora_checkpoint(folder) is not merge
    if not merge:
        adapter = json.loads((folder / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(encoder_dir)  # resolves (not None, not a Hub lookup)
    reloaded = AutoModel.from_pretrained(folder)
    assert isinstance(reloaded, MultiTaskModel)
    assert _close(_predict_all(reloaded), expected)


@pytest.mark.slow
def test_train_cli_lora_save_model_writes_a_checkpoint_that_reloads(encoder_dir, tmp_path):
    from hf_taskgroup.cli import main

    suite_yaml = _write_suite(tmp_path)
    out = tmp_path / "train"
    assert main(["train", "--suite", str(suite_yaml), "--model", str(encoder_dir), "--finetune", "lora", "--mode",
                 "mtl", "--epochs", "1", "--batch_size", "8", "--max_length", "32", "--trunk_hidden_sizes", "",
                 "--save_model", "--output_dir", str(out)]) == 0
    folder = out / "mtl"
    assert is_lora_checkpoint(folder)
    model = AutoModel.from_pretrained(folder)
    assert set(model.predict("sent", ["good great", "bad awful"])) <= {"neg", "pos"}
    metrics = json.loads((out / "metrics.json").read_text())
    # 10. metrics.json records what the run used, not the mode's defaults (5 epochs at 3e-4 for lora)
    assert metrics["settings"]["num_train_epochs"] == 1.0
    assert metrics["settings"]["per_device_train_batch_size"] == 8
    assert metrics["training_arguments"]["num_train_epochs"] == 1.0
    assert metrics["settings"]["learning_rate"] == metrics["training_arguments"]["learning_rate"]
    merged = tmp_path / "merged"
    assert main(["train", "--suite", str(suite_yaml), "--model", str(encoder_dir), "--finetune", "lora", "--mode",
                 "mtl", "--epochs", "1", "--max_length", "32", "--save_model", "--merge_lora", "--output_dir",
                 str(merged)]) == 0
    assert not is_lora_checkpoint(merged / "mtl") and (merged / "mtl" / "modeling_hf_taskgroup.py").is_file()
    assert set(AutoModel.from_pretrained(merged / "mtl").predict("sent", ["good"])) <= {"neg", "pos"}


def _write_suite(root: Path) -> Path:
    import yaml

    data = classification_dataset(n_train=24, n_eval=8)
    files = {}
    for split, ds in data.items():
        path = root / "data" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_json(str(path))
        files[split] = f"data/{split}.jsonl"
    suite = {"name": "cli", "tasks": [{"name": "sent", "type": "classification", "text_columns": ["text"],
                                       "data_files": files, "license": "mit"}]}
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


# ----------------------------------------------------------------------------------------- 4. export_task
def test_token_head_without_trunk_exports_as_the_standard_class(tmp_path):
    model = tiny_model(tiny_suite(), pooling="cls", seed=2)
    result = export_task(model, "ner", tmp_path / "ner", tokenizer=tiny_tokenizer())
    assert result.standard and result.architecture == "BertForTokenClassification"
    config = json.loads((tmp_path / "ner" / "config.json").read_text())
    assert "auto_map" not in config and not (tmp_path / "ner" / "modeling_hf_taskgroup.py").exists()
    pipe = pipeline("token-classification", model=str(tmp_path / "ner"))  # no trust_remote_code
    words = ["tumor", "cell", "the"]
    expected = model.predict("ner", [words], tokenizer=tiny_tokenizer(), return_scores=True)[0]
    got = pipe(" ".join(words), ignore_labels=[])
    assert [max(e, key=e.get) for e in expected] == [g["entity"] for g in got]
    assert all(abs(e[g["entity"]] - float(g["score"])) < 1e-5 for e, g in zip(expected, got))


@pytest.mark.parametrize("task", ["sent", "sim", "hall", "ner"])
def test_exported_task_gives_the_grouped_models_outputs_in_pipeline(grouped, tmp_path, task):
    model = AutoModel.from_pretrained(grouped)
    result = export_task(str(grouped), task, tmp_path / task)
    assert not result.standard and "trunk" in result.reason  # mean pooling + trunk: documented custom code
    pipe = pipeline(result.pipeline_task, model=str(result.path), trust_remote_code=True)
    x = INPUTS[task][0]
    expected = model.predict(task, [x], return_scores=True)[0]
    if task == "ner":
        got = pipe(" ".join(x), ignore_labels=[])
        assert all(abs(e[g["entity"]] - float(g["score"])) < 1e-5 for e, g in zip(expected, got))
    elif task == "sim":
        (got,) = pipe([{"text": x[0], "text_pair": x[1]}])
        assert abs(got["score"] - expected) < 1e-5
    else:
        (got,) = pipe([x], top_k=None)
        assert _close({g["label"]: g["score"] for g in got}, expected)


def test_export_refuses_custom_code_when_asked_and_names_the_task(grouped, tmp_path):
    with pytest.raises(ValueError, match=r"task 'sent' cannot be exported as a standard transformers model: .*pooling"):
        export_task(str(grouped), "sent", tmp_path / "x", allow_custom_code=False)
    with pytest.raises(KeyError, match="no head for task 'nope'"):
        export_task(str(grouped), "nope", tmp_path / "y")
    assert not (tmp_path / "x").exists()


def test_export_cli_verb(grouped, tmp_path, capsys):
    from hf_taskgroup.cli import main

    assert main(["export", "--model", str(grouped), "--task", "hall", "--output_dir", str(tmp_path / "hall")]) == 0
    assert "trust_remote_code=True" in capsys.readouterr().out
    assert (tmp_path / "hall" / "config.json").is_file()


@pytest.mark.hub
@pytest.mark.slow
def test_exported_checkpoints_round_trip_through_the_hub_into_a_clean_process(tmp_path, local_hub, hub_repo_id):
    model = tiny_model(tiny_suite(), pooling="cls", seed=4)
    tok = tiny_tokenizer()
    export_task(model, "ner", tmp_path / "ner", tokenizer=tok)
    export_task(model, "sent", tmp_path / "sent", tokenizer=tok)
    api = HfApi()
    for task in ("ner", "sent"):
        api.create_repo(f"{hub_repo_id}-{task}")
        api.upload_folder(folder_path=str(tmp_path / task), repo_id=f"{hub_repo_id}-{task}")
    got = _run_without_package(f"""
        import json
        from transformers import pipeline
        ner = pipeline("token-classification", model="{hub_repo_id}-ner")
        sent = pipeline("text-classification", model="{hub_repo_id}-sent", trust_remote_code=True)
        print(json.dumps({{"ner": [[t["entity"], float(t["score"])] for t in ner("tumor cell the", ignore_labels=[])],
                           "sent": {{r["label"]: r["score"] for r in sent(["good great the"], top_k=None)[0]}}}}))
        """, tmp_path)
    ner = model.predict("ner", [["tumor", "cell", "the"]], tokenizer=tok, return_scores=True)[0]
    assert [e for e, _ in got["ner"]] == [max(s, key=s.get) for s in ner]
    assert _close(got["sent"], model.predict("sent", ["good great the"], tokenizer=tok, return_scores=True)[0])


# ----------------------------------------------------------------------------------------- 5. encoder once per run
def test_frozen_models_share_one_encoder_file_and_stay_complete(tmp_path):
    suite = tiny_suite()
    store = tmp_path / "runs" / "_shared"
    base = tiny_model(suite, trunk=(8,), seed=0)
    folders = []
    for seed in (1, 2):  # same (frozen) encoder, different trunk and heads
        model = tiny_model(suite, trunk=(8,), seed=seed)
        model.encoder.load_state_dict(base.encoder.state_dict())
        folders.append(save_group_model(model, tiny_tokenizer(), tmp_path / "runs" / f"g{seed}" / "model",
                                        shared_encoder_dir=store))
    a, b = (f / ENCODER_SHARD for f in folders)
    assert a.stat().st_ino == b.stat().st_ino  # stored once on disk
    assert len(list(store.iterdir())) == 1
    published = write_group_model_folder(folders[0], tmp_path / "models" / "g1")
    assert (published / ENCODER_SHARD).stat().st_ino == a.stat().st_ino
    expected = tiny_model(suite, trunk=(8,), seed=1)
    expected.encoder.load_state_dict(base.encoder.state_dict())
    assert _close(_predict_all(AutoModel.from_pretrained(published)), _predict_all(expected, tiny_tokenizer()))
    # re-saving a folder never writes through the shared link into the other folders
    other_before = _predict_all(AutoModel.from_pretrained(folders[1]))
    save_group_model(tiny_model(suite, trunk=(8,), seed=9), tiny_tokenizer(), folders[0], shared_encoder_dir=store)
    assert a.stat().st_ino != b.stat().st_ino and len(list(store.iterdir())) == 2
    assert _close(_predict_all(AutoModel.from_pretrained(folders[1])), other_before)


# ----------------------------------------------------------------------------------------- 6. never overwrite
@pytest.mark.hub
def test_pushing_into_a_repo_holding_another_model_is_refused_in_one_line(grouped, tmp_path, local_hub, hub_repo_id):
    other = save_group_model(tiny_model(tiny_suite(("classification",)), seed=5), tiny_tokenizer(), tmp_path / "other")
    push_group_model(other, hub_repo_id)
    before = dict(local_hub.repo_files(hub_repo_id))
    with pytest.raises(GroupModelPushError) as info:
        push_group_model(grouped, hub_repo_id)
    message = str(info.value)
    assert "\n" not in message and hub_repo_id in message and "overwrite=True" in message
    assert local_hub.repo_files(hub_repo_id) == before  # nothing merged, nothing replaced
    push_group_model(other, hub_repo_id)  # the identical model again: allowed (nothing changes)
    push_group_model(grouped, hub_repo_id, overwrite=True)
    after = local_hub.repo_files(hub_repo_id)
    assert after["config.json"] == (grouped / "config.json").read_bytes()
    expected = {p.relative_to(grouped).as_posix() for p in grouped.rglob("*") if p.is_file()} | {".gitattributes"}
    assert set(after) == expected  # the old model's leftovers are gone


@pytest.mark.slow
def test_overwrite_and_merge_lora_flags_come_from_the_dataclasses():
    from hf_taskgroup.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--overwrite"]).overwrite is True
    assert parser.parse_args(["run"]).overwrite is False
    assert parser.parse_args(["train", "--merge_lora"]).merge_lora is True


def test_push_to_hub_without_prefix_fails_up_front_in_one_line(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "hf_taskgroup.cli", "run", "--push_to_hub", "--output_dir", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "--hub_prefix" in errors[0]
    assert not out.exists()
