"""``partial`` fine-tuning (top k MiniLM layers train on cached lower-layer states) against ``full``.

Two measurements on 4 real tasks (glue_sst2, mqp, medical_abstracts, chemprot; train subsampled, seeded):

1. Speed: per-epoch training time of one group (all 4 tasks in one model) in ``full`` and in ``partial``
   for each k, side by side in one process (modes interleaved, ``--timing-repeats`` rounds, median). The
   one-off cache build of ``partial`` (embeddings + lower layers over the train rows, float16 to disk) is
   timed on its own and counted once in the "E epochs incl. cache" ratio.
2. Fidelity: the test score (primary metric) of every task trained alone (single-task) and of the
   all-in-one model, per mode and seed, through :func:`hf_taskgroup.training.train.train_group`; the
   gain of all-in-one over single-task per task, and whether its sign agrees with ``full``.

Usage::

    python benchmarks/partial_mode.py --quick     # 100 rows/task, 1 epoch, 1 seed (a smoke run)
    python benchmarks/partial_mode.py             # 400 rows/task, 4 epochs, seeds 0 1, k = 1 2
    python benchmarks/partial_mode.py --skip-timing --max-train 300 --partial-learning-rate 3e-4 --ks 1,2,3

The score trainings are cached (``--cache-dir``), so a stopped run resumes.

Writes benchmarks/results/partial_mode[_quick].json. Runs with one torch thread (shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    SharedDataUnavailable,
    environment,
    format_table,
    load_shared_nlp_suite,
    write_results,
)
from transformers import TrainerCallback  # noqa: E402

TASKS = ["glue_sst2", "mqp", "medical_abstracts", "chemprot"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="100 rows/task, 1 epoch, 1 seed")
    p.add_argument("--max-train", type=int, default=None, help="train rows per task (default 400; quick 100)")
    p.add_argument("--max-test", type=int, default=None,
                   help="test rows per task (seeded subsample; default 300, quick 50; 0: all)")
    p.add_argument("--epochs", type=float, default=None, help="default 4 (quick 1)")
    p.add_argument("--seeds", default=None, help="comma-separated (default 0,1; quick 0)")
    p.add_argument("--ks", default="1,2", help="trainable_layers values of partial mode, comma-separated")
    p.add_argument("--learning-rate", type=float, default=5e-5, help="full mode's learning rate (and partial's unless "
                   "--partial-learning-rate is given)")
    p.add_argument("--partial-learning-rate", type=float, default=None,
                   help="partial mode's learning rate (default: --learning-rate); only the top k layers and heads train")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where the score trainings are cached, so a stopped run resumes (default "
                        "benchmarks/results/cache/partial_mode[_quick], whatever --result-name)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--timing-repeats", type=int, default=None, help="rounds of the timing (default 2; quick 1)")
    p.add_argument("--skip-scores", action="store_true", help="only the timing")
    p.add_argument("--skip-timing", action="store_true", help="only the scores")
    p.add_argument("--memory-check", action="store_true",
                   help="also stream one epoch of synthetic states of 13 tasks x 1000 rows x 128 tokens x 384 dims")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--result-name", default=None)
    return p.parse_args(argv)


def cap_test(suite: Any, max_test: int, seed: int = 0) -> Any:
    """The suite with each task's test split subsampled (seeded) to at most ``max_test`` rows."""
    from common import entry_kwargs

    from hf_taskgroup.data.tasks import TaskSpec, TaskSuite

    specs = []
    for spec in suite:
        data = dict(spec.load())
        if len(data["test"]) > max_test:
            data["test"] = data["test"].shuffle(seed=seed).select(range(max_test))
        kwargs = {k: v for k, v in entry_kwargs(spec).items() if k not in ("data_files", "data")}
        specs.append(TaskSpec(**kwargs, data=data, label_names=spec.get_label_names(), description=spec.description))
    return TaskSuite(specs, name=f"{suite.name}_test{max_test}")


def _settings(mode: str, args: argparse.Namespace, seed: int) -> Any:
    from hf_taskgroup.training.train import TrainSettings

    finetune, k = mode_parts(mode)
    lr = args.learning_rate if finetune == "full" or args.partial_learning_rate is None else args.partial_learning_rate
    return TrainSettings(finetune=finetune, trainable_layers=k or 2, pooling="mean", trunk_hidden_sizes=[256],
                         max_length=args.max_length, num_train_epochs=args.epochs, learning_rate=lr,
                         per_device_train_batch_size=args.batch_size, seed=seed)


def mode_parts(mode: str) -> tuple[str, int | None]:
    """``"full"`` -> ("full", None); ``"partial_k2"`` -> ("partial", 2)."""
    if mode == "full":
        return "full", None
    return "partial", int(mode.split("_k")[1])


class _EpochClock(TrainerCallback):
    """Trainer callback: wall seconds from each epoch's begin to its end (no trainer set-up in it)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._start = self._cpu = 0.0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start, self._cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu)


def time_epochs(suite: Any, modes: Sequence[str], args: argparse.Namespace, repeats: int) -> dict[str, Any]:
    """Per-epoch training time of the all-task group per mode (interleaved rounds) and the cache build."""
    from transformers.trainer_callback import PrinterCallback

    from hf_taskgroup.training.args import MultiTaskTrainingArguments
    from hf_taskgroup.training.features import FeatureCache
    from hf_taskgroup.training.modeling import MultiTaskModel
    from hf_taskgroup.training.train import _TOKENIZED, default_model_path, load_tokenizer

    path = default_model_path()
    tok = load_tokenizer(path)
    tasks = suite.task_names
    train = {t: _TOKENIZED.get(suite, t, tok, args.max_length)["train"] for t in tasks}
    rows = {mode: {"epoch_seconds": [], "cache_seconds": [], "epoch_cpu_seconds": [], "cache_cpu_seconds": []}
            for mode in modes}
    for r in range(repeats):
        for mode in modes:
            finetune, k = mode_parts(mode)
            model = MultiTaskModel.from_encoder(path, suite.task_infos(), pooling="mean", trunk_hidden_sizes=[256])
            with tempfile.TemporaryDirectory(prefix="partial_bench_") as tmp:
                targs = MultiTaskTrainingArguments(
                    output_dir=tmp, finetune=finetune, trainable_layers=k or 2, num_train_epochs=1,
                    learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size, seed=r,
                    save_strategy="no", eval_strategy="no", report_to="none", logging_strategy="no",
                    disable_tqdm=True, use_cpu=True,
                )
                from hf_taskgroup.training.trainer import MultiTaskTrainer

                cache = FeatureCache(cache_dir=Path(tmp) / "states")  # fresh: the build is measured every round
                trainer = MultiTaskTrainer(model=model, args=targs, train_dataset=train, processing_class=tok,
                                           feature_cache=cache)
                trainer.remove_callback(PrinterCallback)
                clock = _EpochClock()
                trainer.add_callback(clock)
                start, cpu = time.perf_counter(), time.process_time()
                for t in tasks:  # the cache build (partial) or nothing but bookkeeping (full)
                    trainer.prepare_task_dataset(t, train[t], "train")
                cache_s, cache_cpu = time.perf_counter() - start, time.process_time() - cpu
                start = time.perf_counter()
                trainer.train()
                train_s = time.perf_counter() - start
                epoch_s = clock.seconds[0]
                disk = sum(f.stat().st_size for f in (Path(tmp) / "states").rglob("*.npy")) if finetune == "partial" else 0
            rows[mode]["epoch_seconds"].append(epoch_s)
            rows[mode]["cache_seconds"].append(cache_s)
            rows[mode]["epoch_cpu_seconds"].append(clock.cpu_seconds[0])
            rows[mode]["cache_cpu_seconds"].append(cache_cpu)
            rows[mode].setdefault("train_call_seconds", []).append(train_s)
            rows[mode]["states_bytes"] = disk
            print(f"  timing round {r}: {mode:<11} epoch {epoch_s:7.1f}s (cpu {clock.cpu_seconds[0]:.1f}s)  cache build "
                  f"{cache_s:6.1f}s (cpu {cache_cpu:.1f}s)", flush=True)
            del model, trainer
    out: dict[str, Any] = {"rows_per_epoch": sum(len(d) for d in train.values()), "per_mode": {}}
    epochs = float(args.epochs)
    for clock_kind, suffix in (("", "seconds"), ("cpu_", "cpu_seconds")):
        full_epoch = statistics.median(rows["full"][f"epoch_{suffix}"])
        for mode in modes:
            ep = statistics.median(rows[mode][f"epoch_{suffix}"])
            cache_s = statistics.median(rows[mode][f"cache_{suffix}"]) if mode != "full" else 0.0
            out["per_mode"].setdefault(mode, dict(rows[mode])).update({
                f"{clock_kind}epoch_median": ep, f"{clock_kind}cache_median": cache_s,
                f"{clock_kind}speedup_per_epoch": full_epoch / ep,
                f"{clock_kind}speedup_incl_cache": (epochs * full_epoch) / (cache_s + epochs * ep),
            })
    out["speedup_incl_cache_epochs"] = epochs
    return out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def memory_check(num_tasks: int, rows: int, tokens: int, hidden: int, batch_size: int) -> dict[str, Any]:
    """Write synthetic float16 token states of ``num_tasks x rows x tokens x hidden`` to disk in the cache's format,
    then read one shuffled epoch of batches through TokenStatesDataset + the collator. Reports the anonymous
    (heap) memory of the process, which a cache held in RAM would grow by the cache's size, and the file-backed
    resident pages (page cache of the memory map: shared and reclaimable by the kernel)."""
    import numpy as np

    from hf_taskgroup.data.collator import MultiTaskDataCollator
    from hf_taskgroup.training.features import TokenStates, TokenStatesDataset

    rng = np.random.default_rng(0)
    collate = MultiTaskDataCollator()
    with tempfile.TemporaryDirectory(prefix="partial_mem_") as tmp:
        datasets_ = []
        start = time.perf_counter()
        for t in range(num_tasks):
            folder = Path(tmp) / f"task{t}"
            folder.mkdir()
            lengths = np.full(rows, tokens, dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            states = np.lib.format.open_memmap(folder / "states.npy", mode="w+", dtype=np.float16,
                                               shape=(int(offsets[-1]), hidden))
            for a in range(0, states.shape[0], 65536):
                states[a:a + 65536] = rng.standard_normal((min(65536, states.shape[0] - a), hidden), dtype=np.float32)
            states.flush()
            del states
            np.save(folder / "mask.npy", np.ones(int(offsets[-1]), dtype=np.int8))
            np.save(folder / "offsets.npy", offsets)
            datasets_.append(TokenStatesDataset(TokenStates(folder), {"labels": [0] * rows}))
        write_s = time.perf_counter() - start
        disk = sum(f.stat().st_size for f in Path(tmp).rglob("*.npy"))
        anon0, file0 = _status_kib("RssAnon"), _status_kib("RssFile")
        peak_anon = anon0
        start = time.perf_counter()
        order = [(t, i) for t in range(num_tasks) for i in range(0, rows, batch_size)]
        rng.shuffle(order)
        checksum = 0.0
        for t, i in order:
            batch = collate(datasets_[t].__getitems__(list(range(i, min(i + batch_size, rows)))))
            checksum += float(batch["hidden_states"][0, 0, 0])
            peak_anon = max(peak_anon, _status_kib("RssAnon"))
        read_s = time.perf_counter() - start
        file1 = _status_kib("RssFile")
    return {
        "num_tasks": num_tasks, "rows_per_task": rows, "tokens": tokens, "hidden": hidden,
        "states_bytes_on_disk": disk, "write_seconds": write_s, "epoch_read_seconds": read_s,
        "rss_anon_before_kib": anon0, "rss_anon_peak_kib": peak_anon,
        "rss_anon_growth_mib": (peak_anon - anon0) / 1024, "rss_file_after_epoch_mib": file1 / 1024,
        "rss_file_before_mib": file0 / 1024, "batches": len(order),
    }


def scores(suite: Any, modes: Sequence[str], seeds: Sequence[int], args: argparse.Namespace,
           cache_dir: Path) -> dict[str, Any]:
    """Test primary metric of single-task and all-in-one models per mode and seed.

    Each training goes through the evaluator cache under ``cache_dir`` (keyed by its settings and seed), so a
    stopped run resumes with the trainings it has not done yet."""
    from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator
    from hf_taskgroup.training.metrics import primary_metric

    tasks = suite.task_names
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    out: dict[str, Any] = {}
    for mode in modes:
        out[mode] = {"stl": {t: [] for t in tasks}, "mtl": {t: [] for t in tasks}, "train_seconds": 0.0}
        for seed in seeds:
            ev = make_suite_evaluator(suite, _settings(mode, args, seed), cache_dir)
            plans = [("mtl", tasks)] + [("stl", [t]) for t in tasks]
            for kind, group in plans:
                res = ev(list(group))
                out[mode]["train_seconds"] += float(ev.training_seconds(group) or 0.0)
                for t in group:
                    out[mode][kind][t].append(res[t][f"test_{metric[t]}"])
            print(f"  scores: {mode:<11} seed {seed} done (mtl {[round(v[-1], 3) for v in out[mode]['mtl'].values()]}, "
                  f"stl {[round(v[-1], 3) for v in out[mode]['stl'].values()]})", flush=True)
    return out


def summarize(score: dict[str, Any], modes: Sequence[str], tasks: Sequence[str]) -> dict[str, Any]:
    mean = statistics.fmean
    full = score["full"]
    summary: dict[str, Any] = {}
    for mode in modes:
        s = score[mode]
        per_task = {}
        for t in tasks:
            gain = [m - x for m, x in zip(s["mtl"][t], s["stl"][t])]
            full_gain = mean([m - x for m, x in zip(full["mtl"][t], full["stl"][t])])
            per_task[t] = {
                "stl": mean(s["stl"][t]), "mtl": mean(s["mtl"][t]), "gain": mean(gain), "gain_per_seed": gain,
                "stl_minus_full": mean(s["stl"][t]) - mean(full["stl"][t]),
                "mtl_minus_full": mean(s["mtl"][t]) - mean(full["mtl"][t]),
                "gain_sign_agrees_with_full": _sign(mean(gain)) == _sign(full_gain),
            }
        summary[mode] = {
            "per_task": per_task,
            "sign_agreement": sum(v["gain_sign_agrees_with_full"] for v in per_task.values()),
            "max_abs_score_gap_points": 100 * max(max(abs(v["stl_minus_full"]), abs(v["mtl_minus_full"]))
                                                  for v in per_task.values()),
        }
    return summary


def _sign(x: float, tol: float = 1e-9) -> int:
    return 0 if abs(x) <= tol else (1 if x > 0 else -1)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    max_train = args.max_train or (100 if args.quick else 400)
    args.epochs = args.epochs or (1.0 if args.quick else 4.0)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1")).split(",")]
    repeats = args.timing_repeats or (1 if args.quick else 2)
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    modes = ["full", *(f"partial_k{k}" for k in ks)]
    name = args.result_name or ("partial_mode_quick" if args.quick else "partial_mode")
    try:
        suite = load_shared_nlp_suite(TASKS, max_train=max_train, seed=0)
    except SharedDataUnavailable as err:
        print(f"SKIPPED: {err}")
        return
    max_test = args.max_test if args.max_test is not None else (50 if args.quick else 300)
    if max_test:
        suite = cap_test(suite, max_test)
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    payload: dict[str, Any] = {
        "tasks": TASKS, "max_train": max_train, "max_test": max_test, "epochs": args.epochs, "seeds": seeds, "modes": modes,
        "learning_rate": args.learning_rate,
        "partial_learning_rate": args.partial_learning_rate or args.learning_rate, "batch_size": args.batch_size, "max_length": args.max_length,
        "model": "all-MiniLM-L6-v2 (6 layers, 384 dims)", "environment": environment(),
    }
    start = time.perf_counter()
    if args.memory_check:
        n = 100 if args.quick else 1000
        mem = memory_check(13, n, 128, 384, args.batch_size)
        payload["memory_check"] = mem
        print(f"memory: 13 tasks x {n} rows x 128 tokens x 384 dims float16 = {mem['states_bytes_on_disk'] / 2**30:.2f} GiB "
              f"on disk; one epoch of batches read in {mem['epoch_read_seconds']:.1f}s; heap (RssAnon) grew "
              f"{mem['rss_anon_growth_mib']:.0f} MiB; memory-mapped pages resident {mem['rss_file_after_epoch_mib']:.0f} MiB "
              "(page cache, reclaimable)", flush=True)
    if not args.skip_timing:
        print(f"timing: one group of {len(TASKS)} tasks x {max_train} rows, {repeats} round(s)", flush=True)
        timing = time_epochs(suite, modes, args, repeats)
        payload["timing"] = timing
        rows = [[m, f"{v['epoch_median']:.1f}", f"{v['cpu_epoch_median']:.1f}", f"{v['cpu_cache_median']:.1f}",
                 f"{v['speedup_per_epoch']:.2f}x", f"{v['cpu_speedup_per_epoch']:.2f}x",
                 f"{v['cpu_speedup_incl_cache']:.2f}x", f"{v['states_bytes'] / 2**20:.0f}"]
                for m, v in timing["per_mode"].items()]
        print(format_table(["mode", "epoch wall s", "epoch cpu s", "cache cpu s", "speedup/epoch wall",
                            "speedup/epoch cpu", f"cpu speedup {args.epochs:g} ep incl. cache", "states MiB"], rows))
    if not args.skip_scores:
        print(f"scores: single-task and all-in-one, seeds {seeds}, {args.epochs:g} epochs", flush=True)
        from common import RESULTS_DIR

        # one cache for every --result-name: a run of other k values reuses the cached `full` trainings (the key
        # holds the settings, so nothing is reused across settings)
        cache = args.cache_dir or RESULTS_DIR / "cache" / ("partial_mode_quick" if args.quick else "partial_mode")
        score = scores(suite, modes, seeds, args, cache)
        payload["scores"] = score
        payload["summary"] = summarize(score, modes, TASKS)
        rows = []
        for mode in modes:
            for t, v in payload["summary"][mode]["per_task"].items():
                rows.append([mode, t, f"{v['stl']:.3f}", f"{v['mtl']:.3f}", f"{v['gain']:+.3f}",
                             f"{100 * v['stl_minus_full']:+.1f}", f"{100 * v['mtl_minus_full']:+.1f}",
                             "yes" if v["gain_sign_agrees_with_full"] else "NO"])
        print(format_table(["mode", "task", "single", "all-in-one", "gain", "single-full pts", "aio-full pts",
                            "sign = full"], rows))
        for mode in modes[1:]:
            s = payload["summary"][mode]
            print(f"{mode}: gain sign agrees with full on {s['sign_agreement']}/{len(TASKS)} tasks; "
                  f"largest score gap to full {s['max_abs_score_gap_points']:.1f} points; "
                  f"training {score[mode]['train_seconds']:.0f}s vs full {score['full']['train_seconds']:.0f}s")
    payload["seconds"] = time.perf_counter() - start
    print(f"results written to {write_results(name, payload)}")


if __name__ == "__main__":
    main()
