"""``hf-taskgroup llm`` end to end with a tiny causal LM saved in the test, and its bad values."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from transformers import GPT2Config, GPT2LMHeadModel
from utils import WORDS, multilabel_rows, ner_rows, regression_rows, sentiment_rows, tiny_tokenizer

from hf_taskgroup.cli import main

EXTRA = "pos neg yes no answer text task none b i gene drug tumor 0 1 2 3".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm_cli")
    tok = tiny_tokenizer([*WORDS, *EXTRA])
    cfg = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=16, n_layer=1, n_head=2,
                     pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    tasks = []
    for name, kind, rows, extra in [
        ("sent", "classification", sentiment_rows, {"text_columns": ["text"]}),
        ("sim", "regression", regression_rows, {"text_columns": ["text_a", "text_b"]}),
        ("hall", "multilabel", multilabel_rows, {"text_columns": ["text"]}),
        ("ner", "token_classification", ner_rows, {}),
    ]:
        files = {}
        for split, seed in (("train", 0), ("validation", 1), ("test", 2)):
            data = rows(12, seed)
            path = root / name / f"{split}.jsonl"
            path.parent.mkdir(exist_ok=True)
            keys = list(data)
            path.write_text("\n".join(json.dumps({k: data[k][i] for k in keys}) for i in range(12)) + "\n")
            files[split] = f"{name}/{split}.jsonl"
        tasks.append({"name": name, "type": kind, "data_files": files, **extra})
    (root / "suite.yaml").write_text(yaml.safe_dump({"name": "tiny", "tasks": tasks}))
    return root


def test_llm_command_scores_every_task_and_saves_predictions(setup, tmp_path, capsys):
    out = tmp_path / "llm"
    argv = ["llm", "--suite", str(setup / "suite.yaml"), "--model", str(setup / "lm"), "--shots", "1",
            "--max_examples", "5", "--max_new_tokens", "4", "--output_dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for task, metric in (("sent", "accuracy"), ("sim", "pearson"), ("hall", "f1_micro"), ("ner", "f1")):
        assert f"{task}" in printed and metric in printed
        summary = json.loads((out / task / "summary.json").read_text())
        assert summary["result"]["num_examples"] == 5
        assert summary["key"]["settings"]["shots"] == 1
        assert (out / task / "predictions").is_dir()
    # a re-run reuses the saved predictions: the same table, nothing recomputed (summaries untouched)
    stamps = {t: (out / t / "summary.json").stat().st_mtime_ns for t in ("sent", "sim", "hall", "ner")}
    assert main(argv) == 0
    assert capsys.readouterr().out == printed
    assert stamps == {t: (out / t / "summary.json").stat().st_mtime_ns for t in stamps}


@pytest.mark.parametrize("flags, named", [
    (["--shots", "-1"], "--shots"),
    (["--max_examples", "0"], "--max_examples"),
    (["--dtype", "float8"], "--dtype"),
    (["--split", "dev2"], "dev2"),
])
def test_bad_llm_values_are_one_line_exit_2(setup, tmp_path, capsys, flags, named):
    argv = ["llm", "--suite", str(setup / "suite.yaml"), "--model", str(setup / "lm"), "--output_dir",
            str(tmp_path / "o"), *flags]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert err[0].startswith("hf-taskgroup: error: ") and named in err[0], err
    assert not (tmp_path / "o").exists()


def test_llm_command_in_a_subprocess_without_a_model_is_a_user_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hf_taskgroup.cli", "llm", "--model", str(tmp_path / "no-such-lm")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"hf-taskgroup: error: model folder not found: {tmp_path / 'no-such-lm'}"
    assert "Traceback" not in proc.stderr
