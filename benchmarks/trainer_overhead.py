"""MultiTaskTrainer vs the plain ``transformers.Trainer`` on one task, and frozen vs full fine-tuning.

Both trainers get the same ``MultiTaskModel`` (MiniLM, one head, identical initial weights), the
same tokenized rows, batch size, step count, optimizer settings and seed, in one process, in
interleaved repeats (A B, B A, A B, ...: the order alternates so drift in machine load hits both
alike). The plain Trainer runs its default data path: ``remove_unused_columns``, a
``RandomSampler`` and ``DataCollatorWithPadding``; the dataset carries a constant ``task_ids``
column so the model does exactly the same work in both runs. Using the same model class (rather than
``AutoModelForSequenceClassification``) isolates what the benchmark is about: the cost of the
trainer (task sampler, collator, per-task dataset preparation, loss routing), not a difference
between model classes.

Throughput is reported two ways: end to end (``steps * batch / train() seconds``, setup included)
and steady state (median time between consecutive ``on_step_end`` callbacks after the first two
steps: data loading + forward + backward + optimizer step). Both trainers shuffle differently, so
their batches pad to different lengths: padded tokens per second is reported beside samples per
second, and repeats change the seed (the same seed for both trainers within a repeat).

Frozen mode (``finetune="frozen"``: one encoder pass over the training set, cached features, then
only the head trains) runs the same number of steps; its time is reported with and without that
one-off encoding pass.

Usage::

    python benchmarks/trainer_overhead.py --quick
    python benchmarks/trainer_overhead.py               # 512 x glue_sst2, 30 steps, 9 repeats
    python benchmarks/trainer_overhead.py --profile     # also cProfile one run of each trainer
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    SharedDataUnavailable,
    environment,
    format_table,
    load_shared_nlp_suite,
    median,
    write_results,
)

RESULT_NAME = "trainer_overhead"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="glue_sst2", help="a single-text or pair task of ../shared/data/nlp")
    p.add_argument("--num-examples", type=int, default=512)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=9, help="measured runs of each trainer (after one warm-up)")
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for both trainers (0: torch's default). One thread keeps timings "
                        "stable on a shared machine: with 2 threads on 2 busy cores every step waits on a descheduled thread")
    p.add_argument("--no-frozen", action="store_true", help="skip the frozen-mode runs")
    p.add_argument("--profile", action="store_true", help="cProfile one run of each trainer (also done when ratio < 0.95)")
    p.add_argument("--quick", action="store_true", help="256 examples, 10 steps, 3 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.num_examples, args.steps, args.repeats = min(args.num_examples, 256), 10, 3
    return args


class _StepTimer:
    """Records ``perf_counter`` at train begin and at every step end."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.marks = [time.perf_counter()]

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.marks.append(time.perf_counter())

        self.marks: list[float] = []
        self.callback = _Callback()

    def steady_step_seconds(self, skip: int = 2) -> float:
        gaps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return median(gaps[skip:] if len(gaps) > skip + 2 else gaps)


class _CountingCollator:
    """Wraps a collator and counts the padded input tokens it produces."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokens = 0
        self.batches = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        if "input_ids" in batch:
            self.tokens += int(batch["input_ids"].numel())
        self.batches += 1
        return batch


def _context_switches() -> tuple[int, int] | None:
    """(voluntary, involuntary) context switches of this process's threads so far (Linux only).

    Involuntary switches are preemptions by other processes (machine load); voluntary ones are waits
    (I/O, locks, sleeps). Off-CPU time with few voluntary switches is load, not the code under test."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    vol = invol = 0
    for status in tasks.glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
        except FileNotFoundError:  # a thread ended while we read
            continue
    return vol, invol


def _timed_train(trainer: Any) -> tuple[float, float, dict[str, int] | None]:
    """Run ``trainer.train()``; return wall seconds, CPU seconds and the context switches it took."""
    before = _context_switches()
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    after = _context_switches()
    switches = None
    if before is not None and after is not None:
        switches = {"voluntary": after[0] - before[0], "involuntary": after[1] - before[1]}
    return seconds, cpu_seconds, switches


def _common_args(out_dir: str, args: argparse.Namespace, seed: int, steps: int) -> dict[str, Any]:
    return dict(
        output_dir=out_dir,
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=seed,
        data_seed=seed,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def run_multitask(template: Any, ds: Any, tok: Any, task: str, args: argparse.Namespace, *, seed: int,
                  steps: int, finetune: str = "full") -> dict[str, Any]:
    """One MultiTaskTrainer run; frozen mode times the feature pass apart from ``train()``."""
    from hf_taskgroup.data.collator import MultiTaskDataCollator
    from hf_taskgroup.training.args import MultiTaskTrainingArguments
    from hf_taskgroup.training.features import FeatureCache
    from hf_taskgroup.training.trainer import MultiTaskTrainer

    timer, collator = _StepTimer(), _CountingCollator(MultiTaskDataCollator(tok))
    with tempfile.TemporaryDirectory() as out:
        targs = MultiTaskTrainingArguments(**_common_args(out, args, seed, steps), finetune=finetune)
        trainer = MultiTaskTrainer(
            model=copy.deepcopy(template), args=targs, train_dataset={task: ds}, processing_class=tok,
            data_collator=collator, callbacks=[timer.callback], feature_cache=FeatureCache(),
        )
        encode_seconds = encode_cpu = 0.0
        if finetune == "frozen":  # the one-off encoder pass (memoised; train() reuses it)
            start, cpu = time.perf_counter(), time.process_time()
            trainer.prepare_task_dataset(task, ds, "train")
            encode_seconds, encode_cpu = time.perf_counter() - start, time.process_time() - cpu
        seconds, cpu_seconds, switches = _timed_train(trainer)
    return _summary(seconds, cpu_seconds, timer, collator, args.batch_size, steps, switches,
                    encode_seconds=encode_seconds, encode_cpu_seconds=encode_cpu)


def run_plain(template: Any, ds: Any, tok: Any, args: argparse.Namespace, *, seed: int, steps: int) -> dict[str, Any]:
    """One plain ``transformers.Trainer`` run (default data path; ``task_ids`` column added)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    timer, collator = _StepTimer(), _CountingCollator(DataCollatorWithPadding(tok))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=copy.deepcopy(template), args=TrainingArguments(**_common_args(out, args, seed, steps)),
            train_dataset=ds, processing_class=tok, data_collator=collator, callbacks=[timer.callback],
        )
        seconds, cpu_seconds, switches = _timed_train(trainer)
    return _summary(seconds, cpu_seconds, timer, collator, args.batch_size, steps, switches)


def _summary(seconds: float, cpu_seconds: float, timer: _StepTimer, collator: _CountingCollator, batch: int,
             steps: int, switches: dict[str, int] | None, encode_seconds: float = 0.0,
             encode_cpu_seconds: float = 0.0) -> dict[str, Any]:
    steady = timer.steady_step_seconds()
    return {
        "off_cpu_seconds": seconds - cpu_seconds,
        "context_switches": switches,
        "train_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "encode_seconds": encode_seconds,
        "encode_cpu_seconds": encode_cpu_seconds,
        "samples_per_second": steps * batch / seconds,
        "samples_per_cpu_second": steps * batch / cpu_seconds,
        "steady_step_seconds": steady,
        "steady_samples_per_second": batch / steady,
        "padded_tokens": collator.tokens,
        "tokens_per_second": collator.tokens / seconds if collator.tokens else None,
        "steps_seen": len(timer.marks) - 1,
    }


def profile_runs(template: Any, ds: Any, ds_plain: Any, tok: Any, task: str, args: argparse.Namespace,
                 top: int = 20) -> dict[str, Any]:
    """cProfile one run of each trainer. Per trainer: seconds in C builtins (torch kernels, autograd) vs
    in Python-level functions (trainer, data loading, module glue) per step, and the top functions."""
    out: dict[str, Any] = {}
    for name, fn in (
        ("multitask_trainer", lambda: run_multitask(template, ds, tok, task, args, seed=0, steps=args.steps)),
        ("trainer", lambda: run_plain(template, ds_plain, tok, args, seed=0, steps=args.steps)),
    ):
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        stats = pstats.Stats(prof)
        raw = stats.stats  # type: ignore[attr-defined]
        builtin = sum(v[2] for k, v in raw.items() if k[0] == "~")
        python = sum(v[2] for k, v in raw.items() if k[0] != "~")
        ours = sum(v[2] for k, v in raw.items() if "hf_taskgroup" in k[0])
        text = io.StringIO()
        stats.stream = text  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(top)
        out[name] = {
            "builtin_seconds_per_step": builtin / args.steps,
            "python_seconds_per_step": python / args.steps,
            "hf_taskgroup_seconds_per_step": ours / args.steps,
            "top_by_tottime": text.getvalue(),
        }
    return out


def build(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, str]:
    """Tokenizer, the template model, the tokenized train rows (and a copy with ``task_ids``)."""
    import torch

    from hf_taskgroup.training.modeling import MultiTaskModel
    from hf_taskgroup.training.train import default_model_path, load_tokenizer

    suite = load_shared_nlp_suite([args.task], max_train=args.num_examples, seed=0)
    task = args.task
    path = default_model_path()
    tok = load_tokenizer(path)
    ds = suite.tokenize(tok, max_length=args.max_length, splits=["train"])[task]["train"]
    torch.manual_seed(0)
    template = MultiTaskModel.from_encoder(path, suite.task_infos(), pooling="mean")
    ds_plain = ds.add_column("task_ids", [0] * len(ds))
    return tok, template, ds, ds_plain, task


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        tok, template, ds, ds_plain, task = build(args)
    except SharedDataUnavailable as err:
        print(f"SKIPPED trainer_overhead: {err}")
        return 0
    n_params = sum(p.numel() for p in template.parameters())
    print(f"task {task}: {len(ds)} examples, max_length {args.max_length}, batch {args.batch_size}, "
          f"{args.steps} steps, {args.repeats} repeats; model {n_params / 1e6:.1f}M parameters")

    # warm-up (not measured): first-call costs (lazy imports, allocator, kernels) hit neither side
    run_multitask(template, ds, tok, task, args, seed=0, steps=3)
    run_plain(template, ds_plain, tok, args, seed=0, steps=3)

    runs: dict[str, list[dict[str, Any]]] = {"multitask_trainer": [], "trainer": [], "frozen": []}
    for rep in range(args.repeats):
        seed = rep
        order = ("multitask_trainer", "trainer") if rep % 2 == 0 else ("trainer", "multitask_trainer")
        for name in order:
            if name == "multitask_trainer":
                res = run_multitask(template, ds, tok, task, args, seed=seed, steps=args.steps)
            else:
                res = run_plain(template, ds_plain, tok, args, seed=seed, steps=args.steps)
            runs[name].append(res)
            sw = res["context_switches"] or {}
            print(f"  repeat {rep} {name:<18} {res['samples_per_second']:7.2f} samples/s, "
                  f"{res['samples_per_cpu_second']:7.2f} samples/cpu-s (steady {res['steady_samples_per_second']:7.2f}) "
                  f"{res['train_seconds']:6.2f} s, off-CPU {res['off_cpu_seconds']:5.2f} s "
                  f"(switches: {sw.get('voluntary', '?')} voluntary, {sw.get('involuntary', '?')} preempted)", flush=True)
        if not args.no_frozen:
            res = run_multitask(template, ds, tok, task, args, seed=seed, steps=args.steps, finetune="frozen")
            runs["frozen"].append(res)
            print(f"  repeat {rep} {'frozen':<18} encode {res['encode_seconds']:6.2f} s + train "
                  f"{res['train_seconds']:6.2f} s", flush=True)

    report = summarise(runs, args)
    print()
    print(report["table"])
    worst = min(report["ratio_samples_per_second"], report["ratio_samples_per_cpu_second"], report["median_paired_ratio"])
    if worst < 0.95 or args.profile:
        print("\nprofiling one run of each trainer (cProfile) ...")
        report["profiles"] = profile_runs(template, ds, ds_plain, tok, task, args)
        for name, prof in report["profiles"].items():
            print(f"  {name:<18} per step: {prof['builtin_seconds_per_step']:.3f} s in C builtins (torch), "
                  f"{prof['python_seconds_per_step']:.4f} s in Python functions, of which "
                  f"{prof['hf_taskgroup_seconds_per_step']:.4f} s in hf_taskgroup")
    report.update(
        settings={k: v for k, v in vars(args).items()},
        environment=environment(),
        runs=runs,
        model_parameters=n_params,
        choice_of_baseline="same MultiTaskModel (one head) under a plain transformers.Trainer with its "
                           "default data path (DataCollatorWithPadding, RandomSampler) and a task_ids column",
    )
    path = write_results(RESULT_NAME, report)
    print(f"\nresults written to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


def summarise(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """Medians per trainer, the MultiTaskTrainer/Trainer ratios and the frozen speed-ups, plus a table."""
    def med(name: str, key: str) -> float:
        return median(r[key] for r in runs[name])

    mtt, tr = "multitask_trainer", "trainer"
    keys = ("train_seconds", "cpu_seconds", "samples_per_second", "samples_per_cpu_second",
            "steady_samples_per_second", "tokens_per_second", "encode_seconds", "encode_cpu_seconds", "off_cpu_seconds")
    out: dict[str, Any] = {
        "median": {name: {k: med(name, k) for k in keys if runs[name][0].get(k) is not None}
                   for name in runs if runs[name]},
    }
    for key in ("samples_per_second", "samples_per_cpu_second", "steady_samples_per_second", "tokens_per_second"):
        out[f"ratio_{key}"] = med(mtt, key) / med(tr, key)
    out["paired_ratios"] = [a["samples_per_second"] / b["samples_per_second"] for a, b in zip(runs[mtt], runs[tr])]
    out["median_paired_ratio"] = median(out["paired_ratios"])
    rows = [
        [label, med(name, "samples_per_second"), med(name, "samples_per_cpu_second"),
         med(name, "steady_samples_per_second"), f"{med(name, 'tokens_per_second'):.0f}", med(name, "train_seconds"),
         med(name, "off_cpu_seconds")]
        for label, name in (("Trainer (full)", tr), ("MultiTaskTrainer (full)", mtt))
    ]
    if runs["frozen"]:
        n = args.steps * args.batch_size
        with_enc = median(r["train_seconds"] + r["encode_seconds"] for r in runs["frozen"])
        with_enc_cpu = median(r["cpu_seconds"] + r["encode_cpu_seconds"] for r in runs["frozen"])
        without, without_cpu = med("frozen", "train_seconds"), med("frozen", "cpu_seconds")
        out["frozen"] = {
            "seconds_with_encoding": with_enc,
            "seconds_without_encoding": without,
            "encode_seconds": med("frozen", "encode_seconds"),
            "speedup_with_encoding": med(mtt, "train_seconds") / with_enc,
            "speedup_without_encoding": med(mtt, "train_seconds") / without,
            "cpu_speedup_with_encoding": med(mtt, "cpu_seconds") / with_enc_cpu,
            "cpu_speedup_without_encoding": med(mtt, "cpu_seconds") / without_cpu,
            "steady_step_speedup": med("frozen", "steady_samples_per_second") / med(mtt, "steady_samples_per_second"),
        }
        rows += [
            ["MultiTaskTrainer (frozen, incl. encoding)", n / with_enc, n / with_enc_cpu, "-", "-", with_enc, "-"],
            ["MultiTaskTrainer (frozen, excl. encoding)", n / without, n / without_cpu,
             med("frozen", "steady_samples_per_second"), "-", without, med("frozen", "off_cpu_seconds")],
        ]
    headers = ["run (median of repeats)", "samples/s", "samples/cpu-s", "steady samples/s", "tokens/s", "seconds",
               "off-CPU s"]
    out["table_rows"] = {"headers": headers, "rows": rows}
    table = format_table(headers, rows)
    table += (f"\n\nMultiTaskTrainer / Trainer (target >= 0.95): samples/s {out['ratio_samples_per_second']:.3f}, "
              f"samples/cpu-s {out['ratio_samples_per_cpu_second']:.3f}, steady {out['ratio_steady_samples_per_second']:.3f}, "
              f"tokens/s {out['ratio_tokens_per_second']:.3f}; paired per repeat: "
              f"{', '.join(f'{r:.3f}' for r in out['paired_ratios'])} (median {out['median_paired_ratio']:.3f})")
    if runs["frozen"]:
        f = out["frozen"]
        table += (f"\nfrozen vs full, {args.steps} steps: x{f['speedup_with_encoding']:.2f} including the encoding pass "
                  f"({f['encode_seconds']:.2f} s over {args.num_examples} examples), x{f['speedup_without_encoding']:.1f} "
                  f"without it (CPU time: x{f['cpu_speedup_with_encoding']:.2f} / x{f['cpu_speedup_without_encoding']:.1f}); "
                  f"steady per step x{f['steady_step_speedup']:.1f}")
    out["table"] = table
    return out


if __name__ == "__main__":
    sys.exit(main())
