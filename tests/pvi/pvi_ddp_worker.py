"""Worker for the PVICallback multi-process test: `torchrun --nproc_per_node 2 tests/pvi_ddp_worker.py OUT_DIR`.

Also runs as one process (`python tests/pvi_ddp_worker.py OUT_DIR`). Trains a 2-task tiny model with the
same global batches either way (per-device batch 8 / world size) and a PVICallback on held-out sets of odd
sizes (so shards are padded and de-duplicated); writes the callback's results per rank.
"""

import json
import os
import sys
from pathlib import Path

import torch
from utils import tiny_model, tiny_suite, tiny_tokenizer

from hf_taskgroup.pvi.callback import PVICallback
from hf_taskgroup.training.args import MultiTaskTrainingArguments
from hf_taskgroup.training.trainer import MultiTaskTrainer

torch.set_num_threads(1)
out = Path(sys.argv[1])
world = int(os.environ.get("WORLD_SIZE", "1"))
suite = tiny_suite(("classification", "regression"))
tok = tiny_tokenizer()
data = suite.tokenize(tok, max_length=32)
train = {t: data[t]["train"] for t in suite.task_names}
held_out = {"sent": data["sent"]["validation"].select(range(15)), "sim": data["sim"]["test"].select(range(13))}
callback = PVICallback(held_out, null="analytic", train_datasets=train, on_evaluate=True, output_dir=out)
args = MultiTaskTrainingArguments(
    output_dir=str(out / "run"), per_device_train_batch_size=8 // world, num_train_epochs=2, learning_rate=1e-3,
    use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", eval_strategy="epoch",
    task_sampling="proportional", seed=0, dataloader_pin_memory=False,
)
trainer = MultiTaskTrainer(
    model=tiny_model(suite), args=args, train_dataset=train, eval_dataset={"sent": held_out["sent"]},
    processing_class=tok, callbacks=[callback],
)
trainer.train()
record = {
    "world_size": args.world_size,
    "pvi": {t: s.pvi.tolist() for t, s in callback.results.items()},
    "h_yx": {t: s.h_yx.tolist() for t, s in callback.results.items()},
    "history": callback.history,
}
(out / f"rank{args.process_index}.json").write_text(json.dumps(record))
