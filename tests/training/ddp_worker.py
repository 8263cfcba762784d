"""Worker for the 2-process CPU test: `torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_DIR [FINETUNE]`.

Trains a 2-task suite under DDP (gloo) and writes, per rank, the task of every training step, the
sampler's schedule and the first input id of each batch.
"""

import json
import sys
from pathlib import Path

from utils import tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.trainer import MultiTaskTrainer

out = Path(sys.argv[1])
suite = tiny_suite(("classification", "regression"))
tok = tiny_tokenizer()
data = suite.tokenize(tok, max_length=32)
record = {"tasks": [], "first_ids": []}


class Recording(MultiTaskTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            record["tasks"].append(int(inputs["task_ids"][0]))
            first = inputs["input_ids"][0] if "input_ids" in inputs else inputs["hidden_states"][0, :, 0]
            record["first_ids"].append(first.tolist())
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


args = MultiTaskTrainingArguments(
    output_dir=str(out / "run"), per_device_train_batch_size=4, num_train_epochs=1, use_cpu=True,
    report_to="none", disable_tqdm=True, save_strategy="no", task_sampling="uniform", seed=0,
    finetune=sys.argv[2] if len(sys.argv) > 2 else "full", trainable_layers=1,
)
trainer = Recording(
    model=tiny_model(suite), args=args,
    train_dataset={t: data[t]["train"] for t in suite.task_names},
    eval_dataset={t: data[t]["validation"] for t in suite.task_names},
    processing_class=tok,
)
trainer.train()
metrics = trainer.evaluate()
sampler = trainer.train_batch_sampler
sampler.set_epoch(0)
record.update(
    schedule=sampler.task_schedule(), batches=[list(map(int, b)) for b in sampler], world_size=args.world_size, final_step=trainer.state.global_step,
)
(out / f"rank{args.process_index}.json").write_text(json.dumps(record))
if trainer.is_world_process_zero():
    (out / "metrics.json").write_text(json.dumps(metrics))
