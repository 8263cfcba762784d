"""Evaluation with each task's rows longest first (``eval_sort_by_length``) against the dataset's order.

One ``MultiTaskModel`` (MiniLM, one head per task, untrained heads: the forward work is what is measured), the
validation splits of real tasks of ``../shared/data``, one process, one torch thread, interleaved repeats
(sorted, plain, plain, sorted, ...) so drift in machine load hits both alike. For each task and mode it prints the
median ``evaluate`` seconds, the padded token positions the model saw, and the ratio plain / sorted; and it checks
that the metrics computed from predictions agree.

``full`` runs every encoder layer on token ids; ``partial`` runs only the top ``--trainable-layers`` on cached
token states (the cache is built once, before timing).

Usage::

    python benchmarks/eval_sort.py --quick
    python benchmarks/eval_sort.py            # sst2, chemprot, ncbi, mqp; full and partial; 3 repeats
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

from common import (
    SharedDataUnavailable,
    environment,
    format_table,
    load_shared_nlp_suite,
    median,
    write_results,
)

RESULT_NAME = "eval_sort"
TASKS = ["glue_sst2", "chemprot", "ner_NCBI-disease", "mqp"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=TASKS)
    p.add_argument("--modes", nargs="+", default=["full", "partial"], choices=["full", "partial", "lora"])
    p.add_argument("--max-eval", type=int, default=None, help="validation rows per task (default: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--trainable-layers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 tasks, 200 rows each, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.max_eval, args.repeats = args.tasks[:2], 200, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from transformers.trainer_callback import PrinterCallback

    torch.set_num_threads(1)
    from hf_taskgroup.training.args import MultiTaskTrainingArguments
    from hf_taskgroup.training.features import FeatureCache
    from hf_taskgroup.training.modeling import MultiTaskModel
    from hf_taskgroup.training.train import default_model_path, load_tokenizer
    from hf_taskgroup.training.trainer import MultiTaskTrainer

    try:
        suite = load_shared_nlp_suite(args.tasks, max_train=16, seed=0)
    except SharedDataUnavailable as err:
        print(f"SKIPPED: {err}")
        return
    path = default_model_path()
    tok = load_tokenizer(path)
    data = suite.tokenize(tok, max_length=args.max_length)
    evals = {t: d["validation"] for t, d in data.items()}
    if args.max_eval:
        evals = {t: ds.select(range(min(args.max_eval, len(ds)))) for t, ds in evals.items()}
    rows: list[list[Any]] = []
    records: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        for mode in args.modes:
            torch.manual_seed(0)
            model = MultiTaskModel.from_encoder(path, suite.task_infos(), pooling="mean")
            trainers = {}
            for sort in (True, False):
                targs = MultiTaskTrainingArguments(
                    f"{tmp}/{mode}-{sort}", finetune=mode, trainable_layers=args.trainable_layers, use_cpu=True,
                    per_device_eval_batch_size=args.batch_size, report_to="none", disable_tqdm=True,
                    eval_sort_by_length=sort)
                trainers[sort] = MultiTaskTrainer(model=model, args=targs, processing_class=tok,
                                                  train_dataset={t: d["train"] for t, d in data.items()})
                trainers[sort].feature_cache = cache
                trainers[sort].remove_callback(PrinterCallback)
            for task, ds in evals.items():
                seen: dict[bool, list[int]] = {True: [], False: []}
                times: dict[bool, list[float]] = {True: [], False: []}
                metrics: dict[bool, dict[str, float]] = {}
                for sort in (True, False):  # warm-up, and the partial-mode cache built outside the timing
                    trainers[sort].evaluate({task: ds})
                for r in range(args.repeats):
                    for sort in ((True, False) if r % 2 == 0 else (False, True)):
                        tokens: list[int] = []

                        def hook(_m: Any, _a: Any, kwargs: dict[str, Any], tokens: list[int] = tokens) -> None:
                            x = kwargs.get("input_ids")
                            x = kwargs.get("hidden_states") if x is None else x
                            tokens.append(int(x.shape[0] * x.shape[1]))

                        handle = trainers[sort].model.register_forward_pre_hook(hook, with_kwargs=True)
                        start = time.perf_counter()
                        metrics[sort] = trainers[sort].evaluate({task: ds})
                        times[sort].append(time.perf_counter() - start)
                        handle.remove()
                        seen[sort] = [sum(tokens)]
                agree = all(abs(metrics[True][k] - v) < 1e-4 for k, v in metrics[False].items()
                            if not k.endswith(("_loss", "_runtime", "_per_second", "_time")))
                on, off = median(times[True]), median(times[False])
                rows.append([mode, task, len(ds), f"{off:.2f}", f"{on:.2f}", f"{off / on:.2f}x",
                             seen[False][0], seen[True][0], "yes" if agree else "NO"])
                records[f"{mode}/{task}"] = {"rows": len(ds), "plain_seconds": times[False],
                                             "sorted_seconds": times[True], "speedup": off / on,
                                             "plain_padded_tokens": seen[False][0],
                                             "sorted_padded_tokens": seen[True][0], "metrics_agree": agree}
                print(f"{mode:<8} {task:<18} plain {off:6.2f} s  sorted {on:6.2f} s  {off / on:.2f}x", flush=True)
    print()
    print(format_table(["mode", "task", "rows", "plain s", "sorted s", "speedup", "plain tokens", "sorted tokens",
                        "metrics agree"], rows))
    out = write_results(f"{RESULT_NAME}_quick" if args.quick else RESULT_NAME, {
        "benchmark": RESULT_NAME, "args": vars(args), "environment": environment(), "results": records})
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
