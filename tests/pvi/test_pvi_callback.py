"""hf_taskgroup.pvi.callback.PVICallback: scores during/after training, sharded and gathered across processes."""

from __future__ import annotations

import json
import math
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from utils import free_port, tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.pvi.callback import PVICallback
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.trainer import MultiTaskTrainer

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.filterwarnings("ignore::hf_taskgroup.pvi.scores.PVICollapseWarning")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _state(step=3, main=True):
    return SimpleNamespace(global_step=step, is_world_process_zero=main, log_history=[])


def _fixed_logits_model(suite, task, logits):
    model = tiny_model(suite)
    with torch.no_grad():
        model.heads[task].out_proj.weight.zero_()
        model.heads[task].out_proj.bias.copy_(torch.tensor(logits))
    return model


def test_callback_pvi_equals_hand_computed_bits_and_writes_on_main_only(tmp_path, tok):
    suite = tiny_suite(("classification",))
    data = suite.tokenize(tok, 32)["sent"]
    model = _fixed_logits_model(suite, "sent", [math.log(0.7), math.log(0.3)])
    cb = PVICallback(data["test"], null=np.log([0.4, 0.6]), output_dir=tmp_path)
    cb.on_train_end(SimpleNamespace(process_index=0, world_size=1), _state(main=False), None, model=model)
    y = np.array(data["test"]["labels"][:])
    expected = np.where(y == 0, math.log2(0.7) - math.log2(0.4), math.log2(0.3) - math.log2(0.6))
    np.testing.assert_allclose(cb.results["sent"].pvi, expected, atol=1e-5)
    assert not (tmp_path / "pvi").exists()  # not the main process: nothing written
    state = _state(main=True)
    cb.on_train_end(SimpleNamespace(process_index=0, world_size=1), state, None, model=model)
    saved = json.loads((tmp_path / "pvi" / "final" / "sent.json").read_text())
    np.testing.assert_allclose(saved["columns"]["pvi"], expected, atol=1e-5)
    assert saved["summary"]["v_information"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert state.log_history[-1]["pvi_sent_v_information"] == pytest.approx(float(expected.mean()), abs=1e-5)


def test_callback_with_trained_null_model_runs_it_once_per_task(tok):
    suite = tiny_suite(("classification", "multilabel"))
    data = suite.tokenize(tok, 32)
    null_data = suite.tokenize(tok, 32, null_input=True)
    null_model = tiny_model(suite, seed=1)
    calls = []
    null_model.register_forward_pre_hook(lambda m, a, kw: calls.append(int(kw["input_ids"].shape[0])), with_kwargs=True)
    cb = PVICallback({t: data[t]["validation"] for t in suite.task_names}, null=null_model,
                     null_inputs={t: null_data[t]["train"][0] for t in suite.task_names})
    cb.on_train_end(SimpleNamespace(process_index=0, world_size=1), _state(main=False), None, model=tiny_model(suite))
    assert calls == [1, 1]  # one forward pass of one null input per task
    assert set(cb.results) == {"sent", "hall"}
    h_yb = cb.results["sent"].h_yb
    labels = np.array(data["sent"]["validation"]["labels"][:])
    assert len(set(np.round(h_yb[labels == 0], 9))) == 1  # the null output does not depend on the example


def test_callback_on_evaluate_computes_once_per_step_in_a_trainer(tmp_path, tok):
    suite = tiny_suite(("classification", "regression"))
    data = suite.tokenize(tok, 32)
    train = {t: data[t]["train"] for t in suite.task_names}
    cb = PVICallback({t: data[t]["validation"] for t in suite.task_names}, null="analytic", train_datasets=train,
                     on_evaluate=True)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=2,
                                      eval_strategy="epoch", save_strategy="no", report_to="none", disable_tqdm=True,
                                      use_cpu=True, dataloader_pin_memory=False)
    trainer = MultiTaskTrainer(model=tiny_model(suite), args=args, train_dataset=train,
                               eval_dataset={t: data[t]["validation"] for t in suite.task_names},
                               processing_class=tok, callbacks=[cb])
    trainer.train()
    assert [h["tag"] for h in cb.history] == ["step-8", "step-16", "final"]  # evaluate fires per task: deduplicated
    assert sorted(p.name for p in (tmp_path / "pvi").iterdir()) == ["final", "step-16", "step-8"]
    assert np.isfinite(cb.results["sim"].pvi).all()


def test_callback_errors_name_the_missing_input(tok):
    suite = tiny_suite(("regression", "token_classification"))
    data = suite.tokenize(tok, 32)
    model = tiny_model(suite)
    args = SimpleNamespace(process_index=0, world_size=1)
    cb = PVICallback({"sim": data["sim"]["test"]}, null={"sim": {"null_mean": 1.0, "null_sigma": 1.0}})
    with pytest.raises(ValueError, match="regression task 'sim' needs sigma_x"):
        cb.on_train_end(args, _state(), None, model=model)
    cb = PVICallback({"ner": data["ner"]["test"]}, null=tiny_model(suite), null_inputs={"ner": {}})
    with pytest.raises(ValueError, match="tag prior"):
        cb.on_train_end(args, _state(), None, model=model)
    cb = PVICallback({"other": data["ner"]["test"]}, null="analytic")
    with pytest.raises(ValueError, match="no head"):
        cb.on_train_end(args, _state(), None, model=model)


@pytest.mark.slow
def test_two_process_cpu_run_equals_one_process_run(tmp_path, monkeypatch):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(HERE / "pvi_ddp_worker.py"),
           str(tmp_path / "ddp")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    monkeypatch.setattr(sys, "argv", ["pvi_ddp_worker.py", str(tmp_path / "single")])  # meanwhile, 1 process
    runpy.run_path(str(HERE / "pvi_ddp_worker.py"), run_name="__main__")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    single = json.loads((tmp_path / "single" / "rank0.json").read_text())
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert single["world_size"] == 1 and ranks[0]["world_size"] == 2
    for task in ("sent", "sim"):
        assert len(ranks[0]["pvi"][task]) == {"sent": 15, "sim": 13}[task]  # odd sizes: padded shards de-duplicated
        np.testing.assert_allclose(ranks[0]["pvi"][task], single["pvi"][task], rtol=1e-5, atol=1e-5)
        assert ranks[0]["pvi"][task] == ranks[1]["pvi"][task]  # every rank holds the gathered result
    assert [h["tag"] for h in ranks[0]["history"]] == [h["tag"] for h in single["history"]]
    written = json.loads((tmp_path / "ddp" / "pvi" / "final" / "sent.json").read_text())
    np.testing.assert_allclose(written["columns"]["pvi"], ranks[0]["pvi"]["sent"])
