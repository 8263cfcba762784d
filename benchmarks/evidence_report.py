"""Write the tables of docs/benchmarks.md from the JSON results of the evidence studies.

    python benchmarks/evidence_report.py           # full results (evidence_*.json)
    python benchmarks/evidence_report.py --quick   # the --quick results, printed (or written to --doc)

Each table goes between its ``<!-- evidence-<name>:start -->`` / ``end`` markers in docs/benchmarks.md;
the prose around the markers is left alone. A study whose JSON is absent keeps its old table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, markdown_table  # noqa: E402

from hf_taskgroup.utils import atomic_write_text  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _f(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _groups(groups: Sequence[Sequence[str]]) -> str:
    return " ".join("{" + ", ".join(g) + "}" for g in groups)


def _cost(row: dict[str, Any], pvi_row: dict[str, Any] | None) -> tuple[Any, str]:
    """Trainings and seconds of a method; the PVI variants share the PVI stage (the grouping itself is free)."""
    if row["method"].startswith("pvi_") and pvi_row is not None:
        return f"{pvi_row['trainings']} (PVI stage)", f"{pvi_row['seconds']:.0f}"
    return row["trainings"], f"{row['seconds']:.0f}"


def oracle_table(d: dict[str, Any]) -> str:
    refs = d["references"]
    s = d["settings"]
    lines = [f"Tasks: {', '.join(d['tasks'])}; train rows <= {s['max_train']} per task; seeds {d['seeds']}; "
             f"{s['train']['finetune']} MiniLM, trunk {s['train']['trunk_hidden_sizes']}, "
             f"{s['train']['num_train_epochs']:g} epochs, lr {s['train']['learning_rate']:g}, batch "
             f"{s['train']['per_device_train_batch_size']}; num_groups {s['num_groups']} for the methods that take it. "
             f"Oracle table: {len(d['subsets'])} subsets x {len(d['seeds'])} seeds trained in "
             f"{d['oracle_train_seconds']:.0f} s of training (sum of the cache entries' training times).", ""]
    rows = [[name, "", _f(value), _f(value - refs["single_task"], "+.4f"), "", "", "", ""]
            for name, value in refs.items()]
    rows[2][5] = f"{d['rank_of_val_oracle']}/{d['num_partitions']}"
    pvi_cost = next((r for r in d["methods"] if r["method"] == "pvi"), None)
    for r in sorted(d["methods"], key=lambda r: r["rank"]):
        trainings, seconds = _cost(r, pvi_cost)
        rows.append([r["method"], _groups(r["groups"]), _f(r["score"]), _f(r["gain_vs_stl"], "+.4f"),
                     _f(r["fraction_of_oracle_gain"], "+.2f"), f"{r['rank']}/{d['num_partitions']}", trainings, seconds])
    lines.append(markdown_table(["method / reference", "groups", "score", "vs STL", "fraction of oracle gain",
                                 "rank", "trainings", "seconds"], rows))
    lines += ["", f"Oracle partition: {_groups(d['oracle_partition'])}. Best partition by validation loss: "
              f"{_groups(d['val_oracle_partition'])}.", ""]
    per_task = []
    for t in d["tasks"]:
        single = d["subsets"][t][t]
        best = max(((g, v[t]) for g, v in d["subsets"].items() if t in v), key=lambda x: x[1]["test_mean"])
        worst = min(((g, v[t]) for g, v in d["subsets"].items() if t in v), key=lambda x: x[1]["test_mean"])
        everything = d["subsets"]["+".join(sorted(d["tasks"]))][t]
        per_task.append([t, d["metrics"][t], f"{single['test_mean']:.4f} ± {single['test_std']:.4f}",
                         f"{everything['test_mean']:.4f}", f"{best[1]['test_mean']:.4f} ({best[0]})",
                         f"{worst[1]['test_mean']:.4f} ({worst[0]})"])
    lines.append(markdown_table(["task", "metric", "single-task (mean ± sd)", "all tasks", "best group", "worst group"],
                                per_task))
    return "\n".join(lines)


def suite_table(d: dict[str, Any]) -> str:
    s = d["settings"]
    lines = [f"{len(d['tasks'])} tasks; train rows <= {s['max_train']} per task; seeds {d['seeds']}; "
             f"{s['train']['finetune']} MiniLM, trunk {s['train']['trunk_hidden_sizes']}, "
             f"{s['train']['num_train_epochs']:g} epochs; num_groups {s['num_groups']} for the methods that take it; "
             f"wall time of the last (resumed) run {d['wall_seconds']:.0f} s.", ""]
    rows = []
    pvi_cost = next((r for r in d["methods"] if r["method"] == "pvi"), None)
    for r in sorted(d["methods"], key=lambda r: -r["mean_gain"]):
        trainings, seconds = _cost(r, pvi_cost)
        gains = {t: v["gain"] for t, v in r["per_task"].items()}
        robust = [g for t, g in gains.items() if t != "biosses"]
        rows.append([r["method"], r["num_groups"], f"{r['mean_gain']:+.4f} ± {r['mean_gain_seed_std']:.4f}",
                     f"{sum(robust) / len(robust):+.4f}", f"{sorted(gains.values())[len(gains) // 2]:+.4f}",
                     r["tasks_gained"], r["tasks_negative"], f"{r['grouped_parameters'] / 1e6:.1f}M",
                     trainings, seconds])
    lines.append(markdown_table(["method", "groups", "mean test gain ± sd over seeds", "mean without biosses",
                                 "median gain", "tasks gained", "negative transfer", "parameters", "trainings",
                                 "seconds"], rows))
    lines += ["", "Groups chosen:", ""]
    lines += [f"- **{r['method']}**: {_groups(r['groups'])}" for r in d["methods"]]
    vi = d.get("pvi_v_information") or {}
    if vi:
        lines += ["", markdown_table(["task", "V-information validation (bits)", "V-information test (bits)", "collapsed"],
                                     [[t, _f((v or {}).get("validation"), ".3f"), _f((v or {}).get("test"), ".3f"),
                                       (d["pvi_collapsed"].get(t) or {}).get("validation")] for t, v in vi.items()])]
    return "\n".join(lines)


def claims_table(d: dict[str, Any]) -> str:
    c = d["pvi_claims"]
    by = {r["method"]: r for r in d["methods"]}
    rows = []
    for name in ("pvi", "pvi_mannwhitney", "pvi_ks", "pvi_tost", "pvi_dissimilar", "single_task", "all_in_one"):
        if name in by:
            r = by[name]
            rows.append([name, _groups(r["groups"]), f"{r['mean_gain']:+.4f} ± {r['mean_gain_seed_std']:.4f}",
                         f"{r['multitask_tasks_matched_or_gained']}/{r['tasks_in_multitask_groups']}",
                         r["tasks_negative"]])
    diff = c["pvi_minus_dissimilar_per_seed"]
    return "\n".join([
        markdown_table(["grouping", "groups", "mean test gain ± sd", "tasks in shared groups matching or beating STL",
                        "negative transfer"], rows), "",
        f"PVI groups minus dissimilar groups, mean gain per seed: {', '.join(f'{x:+.4f}' for x in diff)}.",
    ])


def modes_table(d: dict[str, Any]) -> str:
    rows = []
    fr, fu = d["modes"]["frozen"], d["modes"]["full"]
    for t in d["tasks"]:
        rows.append([t, _f(fr["v_information"][t]["validation"], ".3f"), _f(fu["v_information"][t]["validation"], ".3f"),
                     _f(fr["v_information"][t]["test"], ".3f"), _f(fu["v_information"][t]["test"], ".3f")])
    corr = d["v_information_rank_correlation"]
    lines = [f"Train rows <= {d['max_train']} per task, seed {d['seed']}; frozen: "
             f"{fr['settings']['train']['num_train_epochs']:g} epochs at {fr['settings']['train']['learning_rate']:g}, "
             f"full: {fu['settings']['train']['num_train_epochs']:g} epochs at {fu['settings']['train']['learning_rate']:g}; "
             f"PVI models: frozen {fr['settings']['pvi']['num_train_epochs']:g} epochs at {fr['settings']['pvi']['learning_rate']:g}, "
             f"full {fu['settings']['pvi']['num_train_epochs']:g} at {fu['settings']['pvi']['learning_rate']:g}; "
             f"frozen run {fr['seconds']:.0f} s, full run {fu['seconds']:.0f} s.", "",
             markdown_table(["task", "V-info val, frozen", "V-info val, full", "V-info test, frozen", "V-info test, full"],
                            rows), "",
             f"Spearman rank correlation of V-information between the modes: validation "
             f"{corr['validation']['spearman_rho']:+.2f}, test {corr['test']['spearman_rho']:+.2f} "
             f"({len(d['tasks'])} tasks).", ""]
    mrows = []
    for mode, m in d["modes"].items():
        for method in m["groups"]:
            mrows.append([mode, method, _groups(m["groups"][method]), f"{m['mean_gain'][method]:+.4f}",
                          " ".join(f"{t} {v['stl']:.3f}->{v['mtl']:.3f}" for t, v in m["per_task"][method].items())])
    lines.append(markdown_table(["mode", "method", "groups", "mean test gain", "per task: STL -> grouped"], mrows))
    return "\n".join(lines)


def tabular_table(d: dict[str, Any]) -> str:
    lines = []
    for name, rows in d["results"].items():
        if not rows:
            continue
        stl = rows[0]["stl_val_loss"]
        rand = next((r for r in rows if r["method"].startswith("random_best_of")), None)
        table = []
        for r in rows:
            vs_random = "" if rand is None else f"{100 * (r['val_loss'] - rand['val_loss']) / rand['val_loss']:+.1f}%"
            table.append([r["method"], r["num_groups"], f"{r['val_loss']:.4f}", f"{100 * (r['val_loss'] - stl) / stl:+.1f}%",
                          vs_random, f"{r['test_loss']:.4f}", r["trainings"], f"{r['train_seconds']:.0f}"])
        lines += [f"**{name}** ({rows[0]['settings']['tasks']} tasks)", "",
                  markdown_table(["method", "groups", "val loss", "vs STL", "vs best random", "test loss", "trainings",
                                  "train s"], table), ""]
    return "\n".join(lines)


def v2_progress_table(d: dict[str, Any]) -> str:
    """How far the evidence v2 oracle got, and what its finished part says (``evidence_v2_progress.json``)."""
    s = d["settings"]
    lines = [f"Tasks: {', '.join(d['tasks'])}; {d['finetune']} mode, k = {s.get('trainable_layers')}, "
             f"{d['max_train']} train rows per task, {s['num_train_epochs']:g} epochs at lr {s['learning_rate']:g}, "
             f"batch {s['per_device_train_batch_size']}, max_length {s['max_length']}; seeds {d['seeds']}.",
             "", f"Oracle trainings done: **{d['trainings_done']}/{d['trainings_total']}** "
             f"({d['oracle_train_seconds']:.0f} s of training); seeds complete: {d['seeds_complete']}.", ""]
    summary = d.get("summary_of_complete_seeds")
    if summary:
        stl = summary["single_task"]
        rows = [[name, _f(summary[key]), _f(summary[key] - stl, "+.4f")]
                for name, key in (("single-task", "single_task"), ("all-in-one", "all_in_one"),
                                  ("mean partition", "mean_partition"), ("oracle (test)", "oracle"))]
        lines += [f"Over the {summary['seeds']} complete seed(s), all {summary['num_partitions']} partitions scored "
                  "(mean primary test metric):", "",
                  markdown_table(["reference", "score", "vs single-task"], rows), "",
                  f"Oracle partition: {_groups(summary['oracle_partition'])}.", ""]
    table = d["table"]
    everything = "+".join(sorted(d["tasks"]))
    per_task = []
    for t in d["tasks"]:
        single = table.get(t, {}).get(t) or []
        seeds = [i for i, x in enumerate(single) if x is not None]  # a worker may have filled a later seed first
        if d.get("seeds_complete"):  # compare over the complete seeds only
            seeds = [i for i in seeds if i < d["seeds_complete"]]
        if not seeds:
            continue
        n = len(seeds)

        def mean(values: list[float | None], seeds: list[int] = seeds) -> float:
            return sum(values[i] for i in seeds) / len(seeds)  # type: ignore[misc]

        mean_single = mean(single)
        groups = [(g, v[t]) for g, v in table.items()
                  if t in v and g != t and all(i < len(v[t]) and v[t][i] is not None for i in seeds)]
        if not groups:
            continue
        best = max(groups, key=lambda x: mean(x[1]))
        worst = min(groups, key=lambda x: mean(x[1]))
        aio = table.get(everything, {}).get(t)
        aio_txt = (_f(mean(aio) - mean_single, "+.4f") if aio and all(i < len(aio) and aio[i] is not None for i in seeds)
                   else "not yet")
        # the same sign in every seed (paired by seed): with 3 seeds, a 1-in-4 chance for a group without effect
        below = sum(all(v[i] < single[i] for i in seeds) for _, v in groups)  # type: ignore[operator]
        above = sum(all(v[i] > single[i] for i in seeds) for _, v in groups)  # type: ignore[operator]
        per_task.append([t, str(n), _f(mean_single), aio_txt, f"{mean(best[1]) - mean_single:+.4f} ({best[0]})",
                         f"{mean(worst[1]) - mean_single:+.4f} ({worst[0]})", str(below), str(above),
                         str(len(groups))])
    if per_task:
        lines += ["Per task, over the groups trained so far (gain = group minus single-task, same seeds; \"below / "
                  "above in every seed\": how many groups are on that side of single-task in each seed; a group "
                  "without effect is, by chance, with probability 1/2^seeds):", "",
                  markdown_table(["task", "seeds", "single-task", "all-in-one gain", "best group gain",
                                  "worst group gain", "below in every seed", "above in every seed",
                                  "groups so far"], per_task)]
    return "\n".join(lines)


def v2_table(d: dict[str, Any]) -> str:
    """The finished evidence v2 study (``evidence_v2.json``): methods, recommendation, low resource."""
    refs = d["references"]
    s = d["settings"]
    lines = [f"Tasks: {', '.join(d['tasks'])}; {d['finetune']} mode, k = {s.get('trainable_layers')}, "
             f"{d['max_train']} train rows per task, {s['num_train_epochs']:g} epochs at lr {s['learning_rate']:g}; "
             f"seeds {d['seeds']}; oracle training {d['oracle_train_seconds']:.0f} s.", ""]
    rows = [[name, "", _f(value), _f(value - refs["single_task"], "+.4f"), "", "", "", ""] for name, value in refs.items()]
    pvi_cost = next((r for r in d["methods"] if r["method"] == "pvi"), None)
    for r in sorted(d["methods"], key=lambda r: r["rank"]):
        trainings, seconds = _cost(r, pvi_cost)
        rows.append([r["method"], _groups(r["groups"]), _f(r["score"]), _f(r["gain_vs_stl"], "+.4f"),
                     _f(r["fraction_of_oracle_gain"], "+.2f"), f"{r['rank']}/{d['num_partitions']}", trainings,
                     _f(r["cost_fraction_of_oracle"], ".3f")])
    lines.append(markdown_table(["method / reference", "groups", "score", "vs STL", "fraction of oracle gain",
                                 "rank", "trainings", "cost / oracle"], rows))
    rec = d.get("recommendation")
    if rec is None:  # a run still under way: the stages finished so far
        lines += ["", f"Stages finished so far: {', '.join(d.get('stages_done', []))}; the recommendation and the "
                  "low-resource comparison are still to come (`python benchmarks/evidence_v2.py` resumes)."]
        return "\n".join(lines)
    lines += ["", f"Recommendation {_groups(rec['groups'])} (from {rec['candidate']}); per task, test gain over "
              "single-task with its interval (seeds paired):", ""]
    per = [[t, r["metric"], _f(r["test_difference"], "+.3f"),
             "-" if r["test_low"] is None else f"[{r['test_low']:+.3f}, {r['test_high']:+.3f}]", r["verdict"]]
           for t, r in rec["per_task_test"].items()]
    lines.append(markdown_table(["task", "metric", "test gain", "interval", "verdict (validation)"], per))
    lines += ["", f"Gain beyond noise: {len(rec['tasks_gained_beyond_noise'])}/{len(d['tasks'])}; harmed beyond noise: "
              f"{len(rec['tasks_harmed_beyond_noise'])} {rec['tasks_harmed_beyond_noise']}.", ""]
    if rec.get("candidates"):
        cands = sorted(rec["candidates"].items(), key=lambda x: -x[1]["mean_validation_gain"])
        lines += ["Candidates after the split-out rounds (mean validation gain over single-task):", "",
                  markdown_table(["candidate", "groups", "split out", "mean validation gain"],
                                 [[n, _groups(c["groups"]), ", ".join(c["split_out"]) or "-",
                                   _f(c["mean_validation_gain"], "+.4f")] for n, c in cands]), ""]
    low = d.get("low_resource")
    if low is None:
        lines += ["The low-resource comparison is still to come (`python benchmarks/evidence_v2.py` resumes)."]
    if low:
        rows = [[label, _groups(r["groups"]), _f(r["main_cap_gain_vs_stl"], "+.4f"), _f(r["gain_vs_stl"], "+.4f"),
                 ", ".join(r["tasks_below_stl"]) or "-"] for label, r in low["rows"].items()]
        lines += [f"Low resource ({low['cap']} rows per task) beside the main cap ({d['max_train']}):", "",
                  markdown_table(["partition", "groups", f"gain at {d['max_train']} rows", f"gain at {low['cap']} rows",
                                  f"tasks below single-task at {low['cap']}"], rows)]
    return "\n".join(lines)


def v2_suite_table(d: dict[str, Any]) -> str:
    """Evidence v2 on all tasks (``evidence_v2_suite.json``): the recommendation, and the PVI claims re-checked."""
    s = d["settings"]
    rec = d["recommendation"]
    lines = [f"{len(d['tasks'])} tasks; {d['finetune']} mode, k = {s.get('trainable_layers')}, {d['max_train']} train "
             f"rows per task, {s['num_train_epochs']:g} epochs at lr {s['learning_rate']:g}, batch "
             f"{s['per_device_train_batch_size']}; PVI models {d['pvi_settings']['num_train_epochs']:g} epochs at lr "
             f"{d['pvi_settings']['learning_rate']:g}; methods {', '.join(d['methods_run'])} (num_groups "
             f"{d['num_groups']}); recommendation seeds {rec['seeds']}; wall time of the last (resumed) run "
             f"{d['wall_seconds']:.0f} s.", "",
             f"Recommendation {_groups(rec['groups'])} (from {rec['candidate']}); per task, test gain over single-task "
             f"with its {int(100 * rec['confidence'])}% interval (seeds paired):", ""]
    per = [[t, r["metric"], _f(r["test_single"]), _f(r["test_grouped"]), _f(r["test_difference"], "+.3f"),
            "-" if r["test_low"] is None else f"[{r['test_low']:+.3f}, {r['test_high']:+.3f}]", r["verdict"]]
           for t, r in rec["per_task_test"].items()]
    lines.append(markdown_table(["task", "metric", "single-task", "recommended", "test gain", "interval",
                                 "verdict (validation)"], per))
    flags = "; ".join(f"{t}: {', '.join(f)}" for t, f in rec["flags"].items()) or "none"
    lines += ["", f"Gain beyond noise: **{len(rec['tasks_gained_beyond_noise'])}/{len(d['tasks'])}**; harmed beyond "
              f"noise: **{len(rec['tasks_harmed_beyond_noise'])}** {rec['tasks_harmed_beyond_noise']}. Flags: {flags}. "
              f"Parameters {rec['parameters'] / 1e6:.1f}M vs single-task {rec['single_task_parameters'] / 1e6:.1f}M "
              f"(saved {rec['parameters_saved'] / 1e6:.1f}M). Cost: {rec['trainings']} trainings, "
              f"{rec['train_seconds']:.0f} s of training, besides the candidate methods' {rec['candidate_methods_seconds']:.0f} s.",
              ""]
    cands = [[n, _groups(c["initial_groups"]), ", ".join(c["split_out"]) or "-", _f(c["mean_validation_gain"], "+.4f")]
             for n, c in rec["candidates"].items()]
    lines += [markdown_table(["candidate", "groups proposed", "split out", "mean validation gain"], cands), ""]
    if d.get("methods"):
        scope = "every method's groups" if d.get("score_methods") else "the PVI-derived groupings only (--score-methods off)"
        rows = []
        pvi_cost = next((r for r in d["methods"] if r["method"] == "pvi"), None)
        for r in sorted(d["methods"], key=lambda r: -r["mean_gain"]):
            trainings, seconds = _cost(r, pvi_cost)
            rows.append([r["method"], _groups(r["groups"]), f"{r['mean_gain']:+.4f} ± {r['mean_gain_seed_std']:.4f}",
                         f"{r['multitask_tasks_matched_or_gained']}/{r['tasks_in_multitask_groups']}",
                         r["tasks_negative"], trainings, seconds])
        lines += [f"Scored on test ({scope}), mean over the recommendation's seeds:", "",
                  markdown_table(["grouping", "groups", "mean test gain ± sd over seeds",
                                  "tasks in shared groups matching or beating STL", "negative transfer", "trainings",
                                  "seconds"], rows)]
    c = d.get("pvi_claims")
    if c:
        lines += ["", f"PVI claims: PVI groups mean gain {c['pvi_mean_gain']:+.4f} vs dissimilar-PVI groups "
                  f"{c['pvi_dissimilar_mean_gain']:+.4f}; PVI minus dissimilar per seed: "
                  f"{', '.join(f'{x:+.4f}' for x in c['pvi_minus_dissimilar_per_seed'])}; tasks in shared PVI groups "
                  f"matching or beating single-task: {c['pvi_multitask_tasks_matched_or_gained']}/{c['pvi_multitask_tasks']}."]
    return "\n".join(lines)


def partial_scores_table(d: dict[str, Any]) -> str:
    """``partial`` against ``full``: single-task and all-in-one test scores per mode (``partial_mode.json``, plus the
    modes of any ``partial_mode_k<k>.json`` run beside it with ``--result-name``)."""
    summary, scores = dict(d["summary"]), dict(d["scores"])
    for extra in sorted(RESULTS_DIR.glob("partial_mode_k*.json")):
        more = json.loads(extra.read_text(encoding="utf-8"))
        for mode in more.get("summary", {}):
            if mode != "full" and mode not in summary:
                summary[mode], scores[mode] = more["summary"][mode], more["scores"][mode]
    modes = ["full", *sorted(m for m in summary if m != "full")]
    label = {m: "full" if m == "full" else f"k = {m.split('_k')[1]}" for m in modes}
    headers = ["task"] + [h for m in modes for h in (f"{label[m]}: single", f"{label[m]}: gain")]
    rows = []
    for t in summary["full"]["per_task"]:
        row = [t]
        for m in modes:
            r = summary[m]["per_task"][t]
            seeds = ", ".join(f"{g:+.3f}" for g in r["gain_per_seed"])
            row += [f"{r['stl']:.3f}", f"{r['gain']:+.3f} [{seeds}]"]
        rows.append(row)
    n = len(summary["full"]["per_task"])

    def gap(m: str) -> str:
        worst = max(summary[m]["per_task"].items(),
                    key=lambda x: max(abs(x[1]["stl_minus_full"]), abs(x[1]["mtl_minus_full"])))
        kind = "single" if abs(worst[1]["stl_minus_full"]) >= abs(worst[1]["mtl_minus_full"]) else "all-in-one"
        return f"{summary[m]['max_abs_score_gap_points']:.1f} ({worst[0]}, {kind})"

    rows.append(["**sign of the gain = full's**"] + [x for m in modes for x in
                                                     ("", "" if m == "full" else f"{summary[m]['sign_agreement']} of {n}")])
    rows.append(["**largest score gap to full (points)**"] + [x for m in modes for x in
                                                              ("", "" if m == "full" else gap(m))])
    rows.append(["**training seconds, all seeds**"] + [x for m in modes for x in
                                                       (f"{scores[m]['train_seconds']:,.0f}", "")])
    return markdown_table(headers, rows)


def convergence_table(d: dict[str, Any]) -> str:
    """Single-task validation scores of evidence v2 at each (learning rate, epochs) that a
    ``convergence_check*.json`` measured, seed 0 (every run has it), so the columns compare like for like."""
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(RESULTS_DIR.glob("convergence_check*.json"))
            if not p.stem.endswith("_quick")]
    cells: dict[tuple[float, float], dict[str, float]] = {}
    for run in runs:
        if 0 not in run["seeds"]:
            continue
        i = run["seeds"].index(0)
        for task, row in run["rows"].items():
            for budget, per in row["per_seed"].items():
                cells.setdefault((float(run["learning_rate"]), float(budget)), {})[task] = per["validation"][i]
    columns = sorted(cells)
    tasks = list(d["tasks"])
    metric = {t: d["rows"][t]["metric"] for t in tasks}
    rows = [[t, metric[t]] + [_f(cells[c].get(t), ".3f") if t in cells[c] else "-" for c in columns] for t in tasks]
    return markdown_table(["task", "metric"] + [f"lr {lr:g}, {ep:g} epochs" for lr, ep in columns], rows)


def partial_fidelity_table(d: dict[str, Any]) -> str:
    """``partial_fidelity.json``: per task the single-task test score and the all-in-one gain of every mode, then per
    partial mode the largest gap to ``full``, the gain-sign agreement and the verdict."""
    modes = list(d["scores"])
    everyone = "+".join(sorted(d["tasks"]))
    headers = ["task", "metric"] + [h for m in modes for h in (f"{m}: single", f"{m}: all-in-one gain")]
    rows = []
    for t in d["tasks"]:
        row = [t, d["metrics"][t]]
        for m in modes:
            alone, together = d["scores"][m][t][t], d["scores"][m][everyone][t]
            row += [f"{alone:.3f}", f"{together - alone:+.3f}"]
        rows.append(row)
    verdicts = d["comparison"]
    rows.append(["**largest gap to full (points)**", ""] + [x for m in modes for x in
                ("", "" if m == "full" else f"{100 * verdicts[m]['max_abs_gap']:.1f}")])
    aside = sorted((d.get("full_rate_check") or {}).get("reference", {}).get(f"{d['learning_rate_full']:g}", {}))
    if aside:  # the tasks checked at other rates: those full did not learn alone at its rate
        def gap_without(m: str) -> str:
            gaps = [abs(v) for k, v in verdicts[m]["gaps"].items() if not any(k.startswith(f"{t} ") for t in aside)]
            return f"{100 * max(gaps):.1f}" if gaps else "-"
        rows.append([f"**largest gap, {', '.join(aside)} aside**", ""] + [x for m in modes for x in
                    ("", "" if m == "full" else gap_without(m))])
    rows.append(["**gain signs = full's**", ""] + [x for m in modes for x in
                ("", "" if m == "full" else f"{verdicts[m]['sign_agreement']:.2f} of {verdicts[m]['signs_compared']}")])
    rows.append(["**faithful**", ""] + [x for m in modes for x in
                ("", "" if m == "full" else ("yes" if verdicts[m]["faithful"] else "no"))])
    rows.append(["**training seconds**", ""] + [x for m in modes for x in (f"{d['train_seconds'][m]:,.0f}", "")])
    conv = d.get("full_convergence", {})
    note = ""
    if conv.get("rise"):
        note = (f"\n\n`full` single-task validation, {conv['epochs'][0]:g} against {conv['epochs'][1]:g} epochs (seed "
                f"{d['seeds'][0]}): " + ", ".join(f"{t} {r:+.3f}" for t, r in conv["rise"].items()) + ".")
    rates = (d.get("full_rate_check") or {}).get("learning_rates") or {}
    if rates:
        ref = d["full_rate_check"]["reference"]
        note += "\n\n`full` single-task test scores at other learning rates (seed " + f"{d['seeds'][0]}): " + "; ".join(
            f"lr {lr}: " + ", ".join(f"{t} {r['test']:.3f}" for t, r in per.items()) for lr, per in rates.items())
        note += " (at " + "; ".join(f"lr {lr}: " + ", ".join(f"{t} {v:.3f}" for t, v in per.items())
                                    for lr, per in ref.items()) + ")."
    k = d.get("smallest_faithful_k")
    return (f"Seeds {d['seeds']}, {d['max_train']} training rows per task, {d['epochs']:g} epochs; partial at lr "
            f"{d['learning_rate_partial']:g}, full at {d['learning_rate_full']:g}; tolerance "
            f"{100 * d['tolerance']:g} point(s). Smallest faithful k: **{k if k is not None else 'none'}**.\n\n"
            + markdown_table(headers, rows) + note)


SECTIONS = {
    "oracle": ("evidence_oracle", oracle_table),
    "suite": ("evidence_suite", suite_table),
    "claims": ("evidence_suite", claims_table),
    "modes": ("evidence_modes", modes_table),
    "tabular": ("tabular_grouping", tabular_table),
    "v2-progress": ("evidence_v2_progress", v2_progress_table),
    "v2": ("evidence_v2", v2_table),
    "v2-suite": ("evidence_v2_suite", v2_suite_table),
    "partial-scores": ("partial_mode", partial_scores_table),
    "convergence": ("convergence_check", convergence_table),
    "partial-fidelity": ("partial_fidelity", partial_fidelity_table),
    "partial-fidelity-lr3e-4": ("partial_fidelity_lr3e-4", partial_fidelity_table),
}


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- evidence-{name}:start -->", f"<!-- evidence-{name}:end -->"
    if start not in text or end not in text:
        return text + f"\n{start}\n{body}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--doc", type=Path, default=None, help="default docs/benchmarks.md; --quick prints unless given")
    args = parser.parse_args(argv)
    doc = args.doc or (None if args.quick else DOC)
    text = doc.read_text(encoding="utf-8") if doc is not None and doc.exists() else "# Benchmarks: evidence on real data\n"
    for section, (stem, fn) in SECTIONS.items():
        path = RESULTS_DIR / f"{stem}{'_quick' if args.quick else ''}.json"
        if not path.exists():
            print(f"{section}: {path.name} absent, table left as it is")
            continue
        text = replace_section(text, section, fn(json.loads(path.read_text(encoding="utf-8"))))
        print(f"{section}: table from {path.name}")
    if doc is None:
        print(text)
    else:
        atomic_write_text(doc, text)


if __name__ == "__main__":
    main()
