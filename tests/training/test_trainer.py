import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback
from utils import classification_dataset, free_port, tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.trainer import MultiTaskTrainer

HERE = Path(__file__).parent




def _args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-2,
        report_to="none", disable_tqdm=True, save_strategy="no", seed=0, use_cpu=True,
    )
    defaults.update(kw)
    return MultiTaskTrainingArguments(**defaults)


def _trainer(suite, tokenized, tmp_path, tasks=None, model=None, **kw):
    tasks = tasks or suite.task_names
    model = model if model is not None else tiny_model(suite.subset(tasks))
    return MultiTaskTrainer(
        model=model,
        args=_args(tmp_path, **kw),
        train_dataset={t: tokenized[t]["train"] for t in tasks},
        eval_dataset={t: tokenized[t]["validation"] for t in tasks},
        processing_class=tiny_tokenizer(),
    )


def test_per_task_metrics_are_reported_with_task_prefix(suite, tokenized, tmp_path):
    trainer = _trainer(suite, tokenized, tmp_path)
    trainer.train()
    metrics = trainer.evaluate()
    for key in ("eval_sent_accuracy", "eval_sent_f1_macro", "eval_sent_mcc", "eval_sim_pearson", "eval_sim_spearman",
                "eval_hall_f1_micro", "eval_hall_f1_macro", "eval_ner_f1", "eval_sent_loss", "eval_ner_loss"):
        assert key in metrics, key
    task_losses = [metrics[f"eval_{t}_loss"] for t in suite.task_names]
    assert metrics["eval_loss"] == pytest.approx(sum(task_losses) / len(task_losses))


def test_training_lowers_the_loss(suite, tokenized, tmp_path):
    trainer = _trainer(suite, tokenized, tmp_path, tasks=["sent"], num_train_epochs=6)
    before = trainer.evaluate()["eval_sent_loss"]
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_sent_loss"] < before
    assert after["eval_sent_accuracy"] > 0.8


def test_batches_are_single_task_and_follow_the_sampler_schedule(suite, tokenized, tmp_path):
    seen = []

    class Recording(MultiTaskTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                ids = inputs["task_ids"]
                assert bool((ids == ids[0]).all())
                seen.append(int(ids[0]))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    tasks = suite.task_names
    trainer = Recording(
        model=tiny_model(suite), args=_args(tmp_path, task_sampling="temperature", sampling_temperature=2.0),
        train_dataset={t: tokenized[t]["train"] for t in tasks}, processing_class=tiny_tokenizer(),
    )
    trainer.train()
    sampler = trainer.train_batch_sampler
    sampler.set_epoch(0)
    assert seen == sampler.task_schedule()
    assert len(set(seen)) > 1


def test_task_weights_scale_the_training_loss(suite, tokenized, tmp_path):
    trainer = _trainer(suite, tokenized, tmp_path, tasks=["sent"], task_weights='{"sent": 3.0}')
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    weighted = trainer.compute_loss(trainer.model, batch)
    plain = trainer.model(**batch).loss
    torch.testing.assert_close(weighted, plain * 3.0)


def test_unknown_task_dataset_rejected(suite, tokenized, tmp_path):
    with pytest.raises(ValueError, match=r"task\(s\) \['nope'\] with no head"):
        MultiTaskTrainer(model=tiny_model(suite), args=_args(tmp_path), train_dataset={"nope": tokenized["sent"]["train"]})
    with pytest.raises(ValueError, match="task_weights names unknown"):
        _trainer(suite, tokenized, tmp_path, task_weights='{"zzz": 1}')


def _params_after_one_update(suite, tokenized, tmp_path, batch, accum):
    trainer = _trainer(
        suite, tokenized, tmp_path, tasks=["sent"], model=tiny_model(suite.subset(["sent"]), seed=3),
        per_device_train_batch_size=batch, gradient_accumulation_steps=accum, max_steps=1, optim="sgd",
        learning_rate=0.5, lr_scheduler_type="constant",
    )
    trainer.train()
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_gradient_accumulation_2x4_equals_batch_8(suite, tokenized, tmp_path):
    big = _params_after_one_update(suite, tokenized, tmp_path / "a", batch=8, accum=1)
    acc = _params_after_one_update(suite, tokenized, tmp_path / "b", batch=4, accum=2)
    start = {n: p.detach() for n, p in tiny_model(suite.subset(["sent"]), seed=3).named_parameters()}
    moved = sum(float((big[n] - start[n]).abs().sum()) for n in big)
    assert moved > 1e-3  # the update did something
    for n in big:
        torch.testing.assert_close(acc[n], big[n], rtol=1e-4, atol=1e-6)


def test_frozen_mode_trains_only_trunk_and_heads(suite, tokenized, tmp_path):
    model = tiny_model(suite, trunk=(8,))
    enc_before = {n: p.detach().clone() for n, p in model.encoder.named_parameters()}
    head_before = model.heads["sent"].out_proj.weight.detach().clone()
    trainer = _trainer(suite, tokenized, tmp_path, model=model, finetune="frozen")
    trainer.train()
    for n, p in model.encoder.named_parameters():
        assert torch.equal(p, enc_before[n]), n
    assert not torch.equal(model.heads["sent"].out_proj.weight, head_before)
    assert "eval_sent_accuracy" in trainer.evaluate()


def test_lora_mode_trains_adapters_and_heads_only(suite, tokenized, tmp_path):
    model = tiny_model(suite)
    trainer = _trainer(suite, tokenized, tmp_path, model=model, finetune="lora", lora_r=2, lora_target_modules=["query", "value"])
    trainer.train()
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert "eval_hall_f1_micro" in trainer.evaluate()


class _StopAt(TrainerCallback):
    """Simulates a run killed right after the checkpoint at ``step``."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def test_resume_from_checkpoint_continues_the_same_run(suite, tokenized, tmp_path):
    tasks = ["sent", "sim"]

    def run(out):
        return _trainer(suite, tokenized, tmp_path, tasks=tasks, model=tiny_model(suite.subset(tasks), seed=1),
                        output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=4,
                        save_strategy="steps", save_steps=5)

    full = run(tmp_path / "full")
    full.train()
    killed = run(tmp_path / "part")
    killed.add_callback(_StopAt(5))
    killed.train()
    assert killed.state.global_step == 5 and (tmp_path / "part" / "checkpoint-5").is_dir()
    resumed = run(tmp_path / "part")
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-5"))
    assert resumed.state.global_step == full.state.global_step > 5
    for (n, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)


def test_single_dataset_for_a_single_head_model(tmp_path):
    suite = TaskSuite([TaskSpec(name="only", data=classification_dataset())])
    tok = tiny_tokenizer()
    data = suite.tokenize(tok)["only"]
    trainer = MultiTaskTrainer(model=tiny_model(suite), args=_args(tmp_path), train_dataset=data["train"],
                               eval_dataset=data["validation"], processing_class=tok)
    trainer.train()
    assert "eval_only_accuracy" in trainer.evaluate()


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["full", "partial"])
def test_two_process_cpu_run_agrees_with_sampler_order(tmp_path, finetune):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), str(HERE / "ddp_worker.py"), str(tmp_path),
           finetune]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert logs[0]["world_size"] == 2
    assert logs[0]["tasks"] == logs[1]["tasks"] == logs[0]["schedule"]
    # each step: both ranks take disjoint slices of the same task's global batch
    assert len(logs[0]["batches"]) == len(logs[0]["tasks"])
    for a, b in zip(logs[0]["batches"], logs[1]["batches"]):
        assert a and b and not set(a) & set(b)
    assert logs[0]["final_step"] > 0 and (tmp_path / "metrics.json").exists()


def test_train_group_seed_controls_the_new_heads(tmp_path, monkeypatch):
    from hf_taskgroup.training import train as training
    from hf_taskgroup.training.modeling import MultiTaskModel

    suite = tiny_suite(("classification",))
    enc = tmp_path / "enc"
    from transformers import BertModel
    from utils import tiny_bert_config

    BertModel(tiny_bert_config()).save_pretrained(enc)
    tok = tiny_tokenizer()
    heads = []
    real = MultiTaskModel.from_encoder

    def spy(*a, **k):
        m = real(*a, **k)
        heads.append(m.heads["sent"].out_proj.weight.detach().clone())
        return m

    monkeypatch.setattr(MultiTaskModel, "from_encoder", spy)
    for i, seed in enumerate((3, 3, 4)):
        torch.manual_seed(100 + i)  # a different process RNG state each time: only the run's seed may decide
        training.train_group(suite, ["sent"], training.TrainSettings(model_name_or_path=str(enc), seed=seed,
                             num_train_epochs=1), tokenizer=tok, eval_splits=(), output_dir=tmp_path / "o")
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_batched_fetch_gives_the_rows_of_per_example_access(suite, tokenized, tmp_path):
    from torch.utils.data import ConcatDataset

    from hf_taskgroup.training.trainer import TaskConcatDataset

    trainer = _trainer(suite, tokenized, tmp_path, finetune="frozen")
    prepared = [trainer.prepare_task_dataset(t, tokenized[t]["train"], "train") for t in suite.task_names]
    fast, slow = TaskConcatDataset(prepared), ConcatDataset(prepared)
    sampler_batches = list(trainer.get_train_dataloader().batch_sampler)
    mixed = [0, len(fast) - 1, 3, -1]  # rows of several tasks and a negative index, in a chosen order
    for indices in [*sampler_batches[:4], mixed]:
        rows = fast.__getitems__(list(indices))
        expected = [slow[i] for i in indices]
        assert len(rows) == len(expected)
        for got, want in zip(rows, expected):
            assert got.keys() == want.keys()
            for key in want:
                assert torch.equal(torch.as_tensor(got[key]), torch.as_tensor(want[key])), key


def _padded_tokens(trainer):
    """Counts the token positions (rows x padded length) the model's forward sees."""
    seen = []
    model = trainer.model

    def hook(_module, _args, kwargs):
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("hidden_states")
        seen.append(int(x.shape[0] * x.shape[1]))

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_length_sorted_prediction_keeps_row_order_and_cuts_padding(suite, tokenized, tmp_path):
    task = "hall"  # a pooled head whose rows vary in length
    runs = {}
    for sort in (False, True):
        torch.manual_seed(0)
        trainer = _trainer(suite, tokenized, tmp_path, tasks=[task], per_device_eval_batch_size=4,
                           eval_sort_by_length=sort)
        seen, handle = _padded_tokens(trainer)
        out = trainer.predict_tasks({task: tokenized[task]["validation"]})[task]
        handle.remove()
        runs[sort] = (out, sum(seen), trainer)
    (plain, plain_tokens, _), (ordered, ordered_tokens, trainer) = runs[False], runs[True]
    lengths = [len(x) for x in tokenized[task]["validation"]["input_ids"]]
    trainer.current_task = task
    order = trainer._eval_order(tokenized[task]["validation"])
    assert order is not None and [lengths[i] for i in order] == sorted(lengths, reverse=True)
    assert ordered_tokens < plain_tokens  # longest-first batches carry less padding
    np.testing.assert_array_equal(ordered.label_ids, plain.label_ids)  # back in dataset order
    np.testing.assert_allclose(ordered.predictions, plain.predictions, atol=1e-5)
    for key, value in plain.metrics.items():  # the loss too: a mean over examples in any batching
        if not key.endswith(("_runtime", "_per_second", "_time")):
            assert ordered.metrics[key] == pytest.approx(value, abs=1e-5), key


def test_token_tasks_keep_dataset_order_so_their_loss_is_unchanged(suite, tokenized, tmp_path):
    # a token task's batch loss is a mean over its tokens: other batches would move eval_loss
    trainer = _trainer(suite, tokenized, tmp_path, tasks=["ner"], per_device_eval_batch_size=4)
    seen, handle = _padded_tokens(trainer)
    metrics = trainer.evaluate({"ner": tokenized["ner"]["validation"]})
    handle.remove()
    plain = _trainer(suite, tokenized, tmp_path, tasks=["ner"], per_device_eval_batch_size=4, eval_sort_by_length=False)
    plain_seen, handle = _padded_tokens(plain)
    reference = plain.evaluate({"ner": tokenized["ner"]["validation"]})
    handle.remove()
    assert seen == plain_seen  # the same batches
    assert metrics["eval_ner_loss"] == reference["eval_ner_loss"]
    trainer.current_task = "ner"
    assert trainer._eval_order(tokenized["ner"]["validation"]) is None


def test_length_sorting_is_off_for_rows_of_one_length(suite, tokenized, tmp_path):
    trainer = _trainer(suite, tokenized, tmp_path, tasks=["hall"])
    trainer.current_task = "hall"
    assert trainer._eval_order(tokenized["hall"]["validation"].select([0, 0, 0])) is None
    assert trainer._eval_order(tokenized["hall"]["validation"]) is not None
    trainer.args.eval_sort_by_length = False
    assert trainer._eval_order(tokenized["hall"]["validation"]) is None
