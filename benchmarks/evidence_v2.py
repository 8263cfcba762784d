"""Evidence v2: the oracle study in a chosen fine-tuning mode, with the recommendation beside the methods.

Like ``evidence_oracle.py`` (every subset of the tasks trained as a group, all set partitions scored from that
table on the **test** split, each method's partition ranked among them), but in the fine-tuning mode given by
``--finetune`` (default ``partial`` when this installation has it, else ``frozen``, said on the first line of
the output), and with the recommendation (:func:`hf_taskgroup.grouping.recommend.recommend_grouping`) as one
more row: candidates are the affordable methods' groupings (every method but ``exhaustive``), its groups are
trained over ``--recommend-seeds`` seeds and chosen on validation only. Its per-task **test** gains over
single-task are reported with paired bootstrap intervals: how many tasks gain, how many are harmed beyond
noise (target: none).

The stages run in this order, each resumable, so a run that is stopped anywhere continues where it was:

1. ``oracle``: every subset of the tasks trained as a group, for every seed. Each training's result is written
   at once to the evaluator cache *and* to a ledger committed with the results,
   ``benchmarks/results/evidence_v2[_quick]_ledger.json`` (keyed by the training settings, the seed and the
   group), so a fresh clone resumes the study from the ledger; ``..._progress.json`` says how far it got and
   holds the table so far.
2. ``methods``: PVI and every grouping method through the pipeline's stages (their artifacts resume them; the
   evaluator-based methods find the oracle's trainings in the cache).
3. ``recommend``: the recommendation over the affordable methods' groupings (resumes from ``runs/``).
4. ``lowres``: single-task, all-in-one, the recommendation's groups, the best methods' groups and the oracle
   partition trained again at ``--low-resource`` rows per task (same seeds and settings otherwise).

``--stage oracle`` stops after the oracle (the other stages need it). ``--shard I/N`` splits the oracle over
``N`` worker processes that share the ledger (on 2 cores, two single-threaded workers train about twice as
fast as one two-threaded process); each stops after its share, and a last run without ``--shard`` goes on.
Settings (see docs/benchmarks.md for why): ``partial`` mode with ``--trainable-layers 1``, 300 training rows per task, 8 epochs at 1e-3, batch 16 (single-task
models converged: ``convergence_check.py``); the low-resource cap is 100 rows, trained for as many optimizer steps
per task as the main cap (24 epochs), so both caps follow one budget rule.

    python benchmarks/evidence_v2.py --quick     # 4 tasks, 100 train rows, 2 epochs, oracle 1 seed (a smoke run)
    python benchmarks/evidence_v2.py             # 6 tasks x 63 subsets x 3 seeds (about 4 hours on 2 idle cores)
    OMP_NUM_THREADS=1 python benchmarks/evidence_v2.py --shard 0/2 &   # the oracle on two workers,
    OMP_NUM_THREADS=1 python benchmarks/evidence_v2.py --shard 1/2     # then the line above
    python benchmarks/evidence_v2.py --executor ray   # the later stages' trainings two at a time (docs/ray.md)

With ``--executor ray`` (and no ``--shard``) the trainings the stages dispatch (a seed's missing oracle subsets,
the PVI models, the recommendation's groups and seeds, the low-resource groups) run side by side on a local Ray,
one core each; results are the same as with the serial executor.

Writes benchmarks/results/evidence_v2[_quick].json (and the ledger and progress files above).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, environment, load_shared_nlp_suite, write_results  # noqa: E402
from evidence_common import (  # noqa: E402
    V2_BATCH_SIZE,
    V2_EPOCHS,
    V2_LEARNING_RATE,
    V2_MAX_TRAIN,
    V2_TRAINABLE_LAYERS,
    add_executor_arguments,
    all_partitions,
    grouping_record,
    metric_objective_groupings,
    open_study,
    recommendation_record,
    run_grouping_stages,
    study_config,
    training_key,
    v2_fields,
)
from evidence_oracle import METHODS, METRIC_METHODS, QUICK_TASKS, TASKS, subsets  # noqa: E402

from hf_taskgroup.grouping import available_methods  # noqa: E402
from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator  # noqa: E402
from hf_taskgroup.grouping.recommend import stage_recommend  # noqa: E402
from hf_taskgroup.pipeline import Pipeline  # noqa: E402
from hf_taskgroup.training.metrics import primary_metric  # noqa: E402
from hf_taskgroup.training.train import TrainSettings  # noqa: E402
from hf_taskgroup.utils import atomic_write_json  # noqa: E402


def choose_mode(requested: str | None) -> tuple[str, str]:
    """The fine-tuning mode to run and a sentence saying why."""
    if requested:
        return requested, f"fine-tuning mode {requested!r} (requested)"
    try:
        TrainSettings(finetune="partial")
    except ValueError:
        return "frozen", "fine-tuning mode 'frozen': 'partial' is not available in this installation"
    return "partial", "fine-tuning mode 'partial' (default)"


class Ledger:
    """The results of finished trainings, one JSON file committed with the study, so a fresh clone resumes.

    Keyed by a hash of (training settings, seed, group, each member's data fingerprint); written atomically
    after every training, so an interruption loses at most the training under way. Several worker processes
    (``--shard``) may share one ledger: every write merges the file's entries under a lock first.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.refresh()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            return dict(json.loads(self.path.read_text(encoding="utf-8"))["entries"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"WARNING: ignoring unreadable ledger {self.path} ({err})", flush=True)
            return {}

    def refresh(self) -> None:
        """Merge in the entries other workers have written since."""
        self.entries.update(self._read())

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.refresh()
            self.entries[key] = entry
            atomic_write_json(self.path, {"study": "evidence_v2", "entries": self.entries})


def ledger_table(ledger: Ledger, suite: Any, groups: Sequence[Sequence[str]], seeds: Sequence[int],
                 config: Any) -> tuple[dict[tuple[str, ...], dict[str, list[float | None]]], float, int, int]:
    """What every worker has put in the ledger so far: ``{group: {task: [test metric or None per seed]}}``, the
    summed training seconds, the number of trainings done and the number of leading seeds that are complete."""
    from hf_taskgroup.artifacts import data_fingerprint

    ledger.refresh()
    tasks = sorted({t for g in groups for t in g})
    data = {t: data_fingerprint(suite[t]) for t in tasks}
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    table: dict[tuple[str, ...], dict[str, list[float | None]]] = {}
    seconds, done, complete, prefix = 0.0, 0, 0, True
    for seed in seeds:
        settings = config.train_settings(seed).to_dict()
        whole = True
        for group in groups:
            group = tuple(sorted(group))
            entry = ledger.get(training_key(settings, seed, group, data))
            whole = whole and entry is not None
            if entry is not None:
                seconds += float(entry["seconds"])
                done += 1
            for t in group:
                value = None if entry is None else entry["results"][t][f"test_{metric[t]}"]
                table.setdefault(group, {}).setdefault(t, []).append(value)
        prefix = prefix and whole
        complete += int(prefix)
    return table, seconds, done, complete


def rekey_ledger(ledger: Ledger, suite: Any, groups: Sequence[Sequence[str]], seeds: Sequence[int],
                 config: Any) -> int:
    """Give ledger entries of this study's (seed, group) pairs the keys of the current fingerprints; return how
    many were re-keyed.

    For a change of how keys are computed (not of the data or settings): only an entry that records its
    settings, equal to this run's, is taken (entries written before settings were recorded carry them since
    session 5, see docs/benchmarks.md section 7). Trainings are deterministic here (retrained entries matched
    their ledger values to 1e-6), so an entry of the same settings, seed and group is the same result.
    """
    from hf_taskgroup.artifacts import data_fingerprint

    ledger.refresh()
    tasks = sorted({t for g in groups for t in g})
    data = {t: data_fingerprint(suite[t]) for t in tasks}
    wanted = {(seed, tuple(sorted(g))) for seed in seeds for g in groups}
    moved = 0
    for old_key, entry in list(ledger.entries.items()):
        pair = (entry["seed"], tuple(sorted(entry["group"])))
        if pair not in wanted:
            continue
        settings = config.train_settings(entry["seed"]).to_dict()
        if entry.get("settings") != settings:
            continue
        key = training_key(settings, entry["seed"], entry["group"], data)
        if key != old_key and ledger.get(key) is None:
            ledger.put(key, {**entry, "settings": settings, "data": {t: data[t] for t in pair[1]}})
            moved += 1
    return moved


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; None stays None."""
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"error: --shard must look like I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise SystemExit(f"error: --shard {text}: need 0 <= I < N")
    return index, count


def _resume(ev: Any, group: tuple[str, ...], entry: Mapping[str, Any] | None) -> None:
    """A training the committed ledger holds goes into the evaluator's cache (so it is not trained again)."""
    if entry is not None and not ev.is_cached(group):
        ev._store(group, entry["results"], float(entry["seconds"]))


def train_groups(suite: Any, groups: Sequence[tuple[str, ...]], seeds: Sequence[int], config: Any, cache: Path,
                 tokenizer: Any, ledger: Ledger, *, label: str, on_result: Any = None,
                 shard: tuple[int, int] | None = None, executor: Any = None,
                 ) -> tuple[dict[tuple[str, ...], dict[str, list[float]]], float]:
    """Train every group for every seed (evaluator cache, then ledger, then a real training); return
    ``{group: {task: [test metric per seed]}}`` and the summed training seconds.

    With ``shard=(I, N)`` this worker trains only the trainings whose position (seeds outer, groups inner) is
    ``I`` modulo ``N``; the others count only if another worker has already put them in the ledger. Without a
    shard, a seed's uncached groups are dispatched at once through ``executor`` (side by side on Ray; one after
    another with the serial executor or None), each cached as it finishes, then recorded in the ledger."""
    from hf_taskgroup.artifacts import data_fingerprint

    tasks = sorted({t for g in groups for t in g})
    data = {t: data_fingerprint(suite[t]) for t in tasks}
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    table: dict[tuple[str, ...], dict[str, list[float]]] = {}
    seconds = 0.0
    total = len(groups) * len(seeds)
    done = 0
    position = -1
    for seed in seeds:
        settings = config.train_settings(seed)
        ev = make_suite_evaluator(suite, settings, cache, tokenizer=tokenizer, executor=executor)
        if shard is None and executor is not None:
            for group in groups:  # the ledger first, so that only missing trainings are dispatched
                group = tuple(sorted(group))
                _resume(ev, group, ledger.get(training_key(settings.to_dict(), seed, group, data)))
            ev.evaluate_many([list(g) for g in groups if not ev.is_cached(tuple(sorted(g)))], progress=True)
        for group in groups:
            position += 1
            group = tuple(sorted(group))
            key = training_key(settings.to_dict(), seed, group, data)
            entry = ledger.get(key)
            if shard is not None and position % shard[1] != shard[0]:
                if entry is None:
                    ledger.refresh()
                    entry = ledger.get(key)
                if entry is None and not ev.is_cached(group):
                    continue  # another worker's training, not finished yet
            _resume(ev, group, entry)
            result = ev(list(group))
            secs = float(ev.training_seconds(group) or 0.0)
            if entry is None:
                ledger.put(key, {"seed": seed, "group": list(group), "seconds": secs, "results": result,
                                 "settings": settings.to_dict(), "data": {t: data[t] for t in group}})
            seconds += secs
            for t in group:
                table.setdefault(group, {}).setdefault(t, []).append(result[t][f"test_{metric[t]}"])
            done += 1
            print(f"{label} seed {seed} {done:>3}/{total} {'+'.join(group)} ({secs:.0f} s)", flush=True)
            if on_result is not None:
                on_result(seed, group, table, seconds, done, total)
    return table, seconds


def partition_scores(table: dict[tuple[str, ...], dict[str, list[float]]], tasks: Sequence[str],
                     seeds_done: int) -> dict[str, Any]:
    """Single-task, all-in-one and the oracle partition from the first ``seeds_done`` seeds of ``table``."""
    score = {g: {t: float(np.mean(v[:seeds_done])) for t, v in per.items()} for g, per in table.items()}

    def value(partition: Sequence[Sequence[str]]) -> float:
        return float(np.mean([score[tuple(sorted(g))][t] for g in partition for t in g]))

    partitions = all_partitions(tasks)
    values = [value(p) for p in partitions]
    best = int(np.argmax(values))
    return {"seeds": seeds_done, "single_task": value([[t] for t in tasks]), "all_in_one": value([list(tasks)]),
            "oracle": values[best], "oracle_partition": partitions[best], "mean_partition": float(np.mean(values)),
            "num_partitions": len(partitions)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stage", choices=("all", "oracle"), default="all",
                        help="'oracle': stop after the oracle's trainings (the other stages need all of them)")
    parser.add_argument("--finetune", default=None, help="frozen, partial, lora or full (default: partial if available)")
    parser.add_argument("--trainable-layers", type=int, default=V2_TRAINABLE_LAYERS, help="partial mode's k (default 1)")
    parser.add_argument("--max-train", type=int, default=None, help="training rows per task (default 300; quick 100)")
    parser.add_argument("--low-resource", type=int, default=None, help="the low-resource cap (default 100; quick 50)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="oracle and methods' seeds")
    parser.add_argument("--recommend-seeds", type=int, default=None, help="seeds of the recommendation (default 2 quick, 3)")
    parser.add_argument("--bootstrap-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=None, help="training epochs (default 4; quick 2)")
    parser.add_argument("--learning-rate", type=float, default=V2_LEARNING_RATE)
    parser.add_argument("--batch-size", type=int, default=V2_BATCH_SIZE)
    parser.add_argument("--num-groups", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=None)
    add_executor_arguments(parser)
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="train only oracle trainings I, I+N, I+2N, ... and stop (run N workers, then once "
                             "without --shard; they share the ledger)")
    parser.add_argument("--rekey-ledger", action="store_true",
                        help="first give ledger entries of the same settings, seed and group the keys of the current "
                             "data fingerprints (after a change of how fingerprints are computed), then go on")
    args = parser.parse_args(argv)
    shard = parse_shard(args.shard)
    mode, why = choose_mode(args.finetune)
    print(why, flush=True)
    tasks = QUICK_TASKS if args.quick else TASKS
    max_train = args.max_train or (100 if args.quick else V2_MAX_TRAIN)
    low_cap = args.low_resource or (50 if args.quick else 100)
    epochs = args.epochs or (2.0 if args.quick else V2_EPOCHS)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    rec_seeds = args.recommend_seeds or (2 if args.quick else 3)
    study = open_study(f"evidence_v2_{mode}", args.quick, tasks, max_train, args.output_dir)
    if study is None:
        return
    suite, name, out = study
    name = "evidence_v2_quick" if args.quick else "evidence_v2"
    ledger = Ledger(RESULTS_DIR / f"{name}_ledger.json")
    progress_path = RESULTS_DIR / f"{name}_progress.json"
    start = time.perf_counter()
    methods = [m for m in METHODS if m in available_methods()]
    if "grad_estimate" in available_methods():
        methods.insert(1, "grad_estimate")
    fields = v2_fields(mode, trainable_layers=args.trainable_layers, learning_rate=args.learning_rate,
                       batch_size=args.batch_size, epochs=epochs)
    # lookahead collection every 50 steps, or 4 times over a short (--quick) training of all tasks together
    steps = int(epochs * -(-max_train * len(tasks) // args.batch_size))
    fields["every_k_steps"] = max(1, min(50, steps // 4))
    config = study_config(out / "pipeline", methods, seeds, epochs, num_groups=args.num_groups,
                          num_tasks=len(tasks), **fields)
    config = dataclasses.replace(config, executor=args.executor, ray_address=args.ray_address)
    config.recommend_seeds, config.bootstrap_samples = rec_seeds, args.bootstrap_samples
    config.publish_method = methods[0]  # a study: no model folders for the recommended groups
    pipe = Pipeline(config, suite=suite)
    settings = config.train_settings(seeds[0]).to_dict()
    groups = list(subsets(tasks))

    if args.rekey_ledger:
        print(f"re-keyed {rekey_ledger(ledger, suite, groups, seeds, config)} ledger entries", flush=True)

    # 1) the oracle: every subset, every seed (evaluator cache + committed ledger)
    def progress(*_: Any) -> None:  # read from the ledger, not from this worker's table: every worker's trainings
        table, seconds, done, complete = ledger_table(ledger, suite, groups, seeds, config)
        atomic_write_json(progress_path, {
            "study": "evidence_v2", "stage": "oracle", "finetune": mode, "tasks": tasks, "max_train": max_train,
            "seeds": seeds, "settings": settings, "trainings_done": done,
            "trainings_total": len(groups) * len(seeds),
            "oracle_train_seconds": seconds, "seeds_complete": complete,
            "summary_of_complete_seeds": partition_scores(table, tasks, complete) if complete else None,
            "table": {"+".join(g): per for g, per in table.items()},
        })

    table, oracle_seconds = train_groups(suite, groups, seeds, config, out / "pipeline" / "cache" / "evaluator",
                                         pipe._tok(), ledger, label="oracle", on_result=progress, shard=shard,
                                         executor=pipe.executor)
    if args.stage == "oracle" or shard is not None:
        print(f"oracle done: {len(groups)} subsets x {len(seeds)} seeds, {oracle_seconds:.0f} s of training")
        return
    metric = {t: primary_metric(suite[t].type) for t in tasks}
    score = {g: {t: float(np.mean(v)) for t, v in per.items()} for g, per in table.items()}

    def partition_score(partition: Sequence[Sequence[str]]) -> float:
        return float(np.mean([score[tuple(sorted(g))][t] for g in partition for t in g]))

    def grouping_score(grouping: Any) -> float:
        return float(np.mean([score[tuple(sorted(grouping.group_of(t)))][t] for t in tasks]))

    partitions = all_partitions(tasks)
    scored = sorted(((partition_score(p), p) for p in partitions), key=lambda x: -x[0])
    all_scores = np.array([s for s, _ in scored])
    stl = partition_score([[t] for t in tasks])
    oracle, oracle_partition = scored[0]

    def fraction(value: float) -> float | None:
        return None if abs(oracle - stl) < 1e-12 else (value - stl) / (oracle - stl)

    # 2) the methods (resumable pipeline stages; evaluator-based ones reuse the oracle's trainings)
    pvi, groupings = run_grouping_stages(pipe)
    for method, grouping in metric_objective_groupings(pipe, METRIC_METHODS, num_tasks=len(tasks), **fields).items():
        groupings[f"{method} (metric)"] = grouping
    rows: list[dict[str, Any]] = []

    def add_row(method: str, grouping: Any) -> None:
        row = grouping_record(method, grouping)
        value = grouping_score(grouping)
        row.update({"score": value, "gain_vs_stl": value - stl, "fraction_of_oracle_gain": fraction(value),
                    "rank": int(np.sum(all_scores > value + 1e-12)) + 1,
                    "cost_fraction_of_oracle": row["seconds"] / oracle_seconds if oracle_seconds else None})
        rows.append(row)

    for method, grouping in groupings.items():
        add_row(method, grouping)
    payload: dict[str, Any] = {
        "study": "evidence_v2", "finetune": mode, "mode_note": why, "tasks": tasks, "metrics": metric,
        "seeds": seeds, "recommend_seeds": config.recommendation_seeds(), "max_train": max_train,
        "low_resource_cap": low_cap, "settings": settings, "environment": environment(),
        "stages_done": ["oracle", "methods"], "wall_seconds": time.perf_counter() - start,
        "oracle_train_seconds": oracle_seconds,
        "references": {"single_task": stl, "oracle (test)": oracle, "mean partition": float(all_scores.mean()),
                       "all_in_one": partition_score([list(tasks)])},
        "oracle_partition": oracle_partition, "num_partitions": len(partitions),
        "all_partition_scores": all_scores.tolist(), "methods": rows, "recommendation": None, "low_resource": None,
    }
    write_results(name, payload)  # each finished stage is kept: a later stage may span sessions

    # 3) the recommendation over the affordable methods' groupings (resumable runs/)
    candidates = {m: g for m, g in groupings.items() if not m.startswith("exhaustive")}
    rec_start = time.perf_counter()
    rec = stage_recommend(pipe, candidates, pvi)
    rec_wall = time.perf_counter() - rec_start
    add_row("recommended", rec.grouping)
    record = recommendation_record(rec, candidates, rec_wall)
    record["cost_fraction_of_oracle_incl_methods"] = (
        (rec.cost["seconds"] + record["candidate_methods_seconds"]) / oracle_seconds if oracle_seconds else None)
    per_task, gained, harmed = (record[k] for k in ("per_task_test", "tasks_gained_beyond_noise",
                                                    "tasks_harmed_beyond_noise"))
    payload["recommendation"] = record
    payload["stages_done"].append("recommend")
    payload["wall_seconds"] = time.perf_counter() - start
    write_results(name, payload)

    # 4) low resource: the same comparison at --low-resource rows per task
    low_suite = load_shared_nlp_suite(tasks, max_train=low_cap, seed=0)
    best_methods = [r for r in sorted(rows, key=lambda r: r["rank"])
                    if r["method"] not in ("recommended", "all_in_one") and not r["method"].startswith("exhaustive")][:3]
    low_partitions: dict[str, list[list[str]]] = {"single_task": [[t] for t in tasks], "all_in_one": [list(tasks)],
                                                 "recommended": [list(g) for g in rec.grouping.groups],
                                                 "oracle (main cap)": [list(g) for g in oracle_partition]}
    for r in best_methods:
        low_partitions[r["method"]] = r["groups"]
    low_groups = sorted({tuple(sorted(g)) for p in low_partitions.values() for g in p})
    # the budget rule: every task gets the same optimizer steps on its own rows at any cap (epochs x rows constant)
    low_epochs = epochs * max_train / low_cap
    low_config = study_config(out / "lowres", methods, seeds, low_epochs, num_groups=args.num_groups,
                              num_tasks=len(tasks), **{**fields, "pvi_num_train_epochs": low_epochs})
    low_table, low_seconds = train_groups(low_suite, low_groups, seeds, low_config, out / "lowres" / "evaluator",
                                          pipe._tok(), ledger, label="low-resource",
                                          executor=pipe.executor)
    pipe.executor.close()
    low_score = {g: {t: float(np.mean(v)) for t, v in per.items()} for g, per in low_table.items()}
    low_stl = {t: low_score[(t,)][t] for t in tasks}
    low_rows = {}
    for label, partition in low_partitions.items():
        per = {t: low_score[tuple(sorted(g))][t] for g in partition for t in g}
        main_per = {t: score[tuple(sorted(g))][t] for g in partition for t in g}
        low_rows[label] = {"groups": partition, "score": float(np.mean(list(per.values()))),
                           "gain_vs_stl": float(np.mean([per[t] - low_stl[t] for t in tasks])),
                           "main_cap_gain_vs_stl": float(np.mean(list(main_per.values()))) - stl,
                           "tasks_below_stl": sorted(t for t in tasks if per[t] < low_stl[t] - 1e-12),
                           "per_task_gain": {t: per[t] - low_stl[t] for t in tasks}}
    payload["low_resource"] = {"cap": low_cap, "epochs": low_epochs, "train_seconds": low_seconds, "rows": low_rows}
    payload["stages_done"].append("lowres")
    payload["wall_seconds"] = time.perf_counter() - start
    path = write_results(name, payload)
    try:
        from evidence_common import save_oracle_figures

        save_oracle_figures(payload, name)
    except ImportError:  # matplotlib missing: the JSON is the result
        pass
    print(f"\n{why}; STL {stl:.4f}  all-in-one {payload['references']['all_in_one']:.4f}  oracle {oracle:.4f} "
          f"{oracle_partition}  ({len(partitions)} partitions, oracle training {oracle_seconds:.0f} s)")
    for r in sorted(rows, key=lambda r: r["rank"]):
        frac, cost = r["fraction_of_oracle_gain"], r["cost_fraction_of_oracle"]
        print(f"  {r['method']:<24} rank {r['rank']:>3}/{len(partitions)}  score {r['score']:.4f}  "
              f"frac {'n/a' if frac is None else f'{frac:+.2f}'}  cost {'n/a' if cost is None else f'{cost:.3f}'}  "
              f"{r['groups']}")
    print(f"\nrecommendation {rec.grouping.groups} (from {rec.candidate}); per-task test gain "
          f"[{int(100 * rec.confidence)}% interval, seeds {rec.seeds}]:")
    for t, r in per_task.items():
        lo, hi = r["test_low"], r["test_high"]
        interval = "-" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]"
        print(f"  {t:<20} {r['metric']:<9} {r['test_difference']:+.3f} {interval:<18} {r['verdict']}")
    print(f"gain beyond noise: {len(gained)}/{len(tasks)}; harmed beyond noise: {len(harmed)} {harmed}")
    print(f"\nlow resource ({low_cap} rows/task) vs main cap ({max_train}): mean gain over single-task")
    for label, r in low_rows.items():
        print(f"  {label:<24} low {r['gain_vs_stl']:+.4f}  main {r['main_cap_gain_vs_stl']:+.4f}  "
              f"below STL at low cap: {r['tasks_below_stl']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
