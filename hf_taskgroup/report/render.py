"""The pipeline's report: ``report.md`` + ``report.json`` + PNG plots, readable without code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.report.evaluation import MethodEvaluation, summary_table
from hf_taskgroup.utils import atomic_write_json, atomic_write_text


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if x is not None and np.isfinite(x) else "-"


def _pm(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if seeds > 1 else f"{mean:.3f}"


def plot_gains(evaluations: Mapping[str, MethodEvaluation], path: str | Path) -> Path:
    """Grouped bars: per-task gain over single-task training, one colour per method."""
    from matplotlib.figure import Figure

    from hf_taskgroup.report.plots import save_figure

    methods = list(evaluations)
    tasks = list(next(iter(evaluations.values())).rows) if evaluations else []
    width = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(max(5.0, 1.2 * len(tasks) + 2), 3.6))
    ax = fig.subplots()
    x = np.arange(len(tasks))
    for i, m in enumerate(methods):
        gains = [evaluations[m].rows[t].gain for t in tasks]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, gains, width, label=m)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(tasks, rotation=30, ha="right")
    ax.set_ylabel("gain over single-task (primary metric)")
    ax.set_title("Per-task gain of the grouped models")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_params_vs_score(evaluations: Mapping[str, MethodEvaluation], path: str | Path) -> Path:
    """Total parameters of the model set vs mean primary score, one point per method (+ single-task)."""
    from matplotlib.figure import Figure

    from hf_taskgroup.report.plots import save_figure

    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    stl_done = False
    for m, ev in evaluations.items():
        ax.scatter(ev.grouped_parameters / 1e6, ev.mean_score, s=40)
        ax.annotate(m, (ev.grouped_parameters / 1e6, ev.mean_score), fontsize=8, xytext=(4, 3), textcoords="offset points")
        if not stl_done:
            stl_mean = float(np.mean([r.stl_mean for r in ev.rows.values()]))
            ax.scatter(ev.stl_parameters / 1e6, stl_mean, marker="x", color="black")
            ax.annotate("single-task", (ev.stl_parameters / 1e6, stl_mean), fontsize=8, xytext=(4, -10),
                        textcoords="offset points")
            stl_done = True
    ax.set_xlabel("parameters of the model set (millions)")
    ax.set_ylabel("mean primary score")
    ax.set_title("Size vs score")
    return save_figure(fig, path)


def write_report(
    output_dir: str | Path,
    evaluations: Mapping[str, MethodEvaluation],
    *,
    config: Mapping[str, Any],
    pvi_summaries: Mapping[str, Mapping[str, Any]] | None = None,
    pvi_values: Mapping[str, np.ndarray] | None = None,
    primary_method: str | None = None,
    published: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    split: str = "test",
    reused: Sequence[str] | None = None,
    recommendation: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and ``plots/*.png`` into ``output_dir``; return their paths.

    ``reused`` lists the artifacts (paths relative to ``output_dir``) taken from an earlier run with the same
    inputs instead of being computed again. ``recommendation`` (a
    :meth:`~hf_taskgroup.grouping.recommend.Recommendation.to_dict`) makes the report lead with it: what to
    train, per task single-task vs recommended with the interval and the verdict."""
    out = Path(output_dir)
    plots_dir = out / "plots"
    paths: dict[str, Path] = {}
    if evaluations:
        paths["gains"] = plot_gains(evaluations, plots_dir / "gains.png")
        paths["params_vs_score"] = plot_params_vs_score(evaluations, plots_dir / "params_vs_score.png")
    if pvi_values and primary_method in evaluations:
        from hf_taskgroup.report.plots import plot_pvi_distributions

        paths["pvi"] = Path(plot_pvi_distributions(pvi_values, evaluations[primary_method].groups, plots_dir / "pvi_distributions.png"))

    summary = summary_table(evaluations)
    report = {
        "config": dict(config),
        "split": split,
        "recommendation": _json_safe(recommendation) if recommendation else None,
        "summary": summary,
        "methods": {m: ev.to_dict() for m, ev in evaluations.items()},
        "pvi": {t: {k: s.get(k) for k in ("v_information", "accuracy", "collapsed", "num_examples")}
                for t, s in (pvi_summaries or {}).items()},
        "published": dict(published or {}),
        "timings_seconds": dict(timings or {}),
        "reused": list(reused or []),
        "plots": {k: str(p.relative_to(out)) for k, p in paths.items()},
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report, evaluations, primary_method))
    paths["report.md"] = out / "report.md"
    paths["report.json"] = out / "report.json"
    return paths


def _reused_line(reused: Sequence[str] | None) -> str:
    """One line saying which artifacts came from an earlier run with the same inputs (none: all computed)."""
    if not reused:
        return "Everything was computed in this run (nothing reused from an earlier run)."
    kinds: dict[str, int] = {}
    for path in reused:
        parts = path.split("/")
        if parts[0] == "cache" and len(parts) > 2:  # the caches under cache/<name>/
            kind = {"evaluator": "search trainings", "features": "encoded feature files"}.get(
                parts[1], f"{parts[1]} cache entries")
        else:
            kind = {"pvi": "PVI tasks", "groupings": "groupings", "runs": "trainings",
                    "affinity": "affinity collections"}.get(parts[0], parts[0])
        kinds[kind] = kinds.get(kind, 0) + 1
    counts = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return (f"Reused from an earlier run with the same inputs (data, tokenizer, model, settings): {counts} "
            "(listed under `reused` in report.json).")


def render_markdown(report: Mapping[str, Any], evaluations: Mapping[str, MethodEvaluation], primary: str | None) -> str:
    cfg = report["config"]
    lines = [
        "# hf-taskgroup report",
        "",
        f"Suite **{cfg.get('suite_name', '?')}** ({len(cfg.get('tasks', []))} tasks), encoder `{cfg.get('model_label', '?')}`, "
        f"fine-tuning `{cfg.get('finetune')}`, seeds {cfg.get('seeds')}. Scores are on the **{report['split']}** split; "
        "gain = grouped multi-task score minus single-task score on each task's primary metric "
        "(sign flipped where lower is better). Negative transfer = a negative gain.",
        "",
    ]
    if report.get("recommendation"):
        lines += render_recommendation(report["recommendation"])
    lines += [_reused_line(report.get("reused")), ""]
    if report.get("pvi"):
        lines += ["## PVI per task", "", "| task | V-information (bits, validation) | V-information (test) | accuracy of g_x (test) | collapsed |",
                  "|---|---|---|---|---|"]
        for t, s in report["pvi"].items():
            vi = s.get("v_information") or {}
            acc = s.get("accuracy") or {}
            col = s.get("collapsed") or {}
            lines.append(f"| {t} | {_fmt(vi.get('validation'))} | {_fmt(vi.get('test'))} | {_fmt(acc.get('test'))} | "
                         f"{'yes' if any(col.values()) else 'no'} |")
        lines.append("")
    lines += ["## Methods side by side", "",
              "| method | groups | mean gain | tasks gained | negative transfer | mean score | parameters (M) | trainings | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in report["summary"]:
        lines.append(
            f"| {row['method']}{' (published)' if row['method'] == primary else ''} | {row['groups']} | {row['mean_gain']:+.3f} | "
            f"{row['tasks_gained']} | {row['tasks_negative']} | {row['mean_score']:.3f} | {row['parameters'] / 1e6:.1f} | "
            f"{row['trainings']} | {row['seconds']:.1f} |"
        )
    lines.append("")
    for method, ev in evaluations.items():
        lines += [f"## {method}", "", "Groups: " + "; ".join("{" + ", ".join(g) + "}" for g in ev.groups), "",
                  "| task | metric | group | single-task | grouped | gain |", "|---|---|---|---|---|---|"]
        for t, r in ev.rows.items():
            flag = " ⚠ negative transfer" if r.negative_transfer else ""
            lines.append(f"| {t} | {r.metric} | {', '.join(r.group)} | {_pm(r.stl_mean, r.stl_std, r.seeds)} | "
                         f"{_pm(r.mtl_mean, r.mtl_std, r.seeds)} | {r.gain:+.3f}{flag} |")
        lines.append("")
    if report.get("plots"):
        lines += ["## Plots", ""]
        titles = {"gains": "Per-task gain by method", "params_vs_score": "Parameters vs mean score",
                  "pvi": "PVI distributions, coloured by group"}
        for key, rel in report["plots"].items():
            lines += [f"**{titles.get(key, key)}**", "", f"![{key}]({rel})", ""]
    if report.get("published"):
        lines += ["## Published models", ""]
        for name, where in report["published"].items():
            lines.append(f"- {name}: {where}")
        lines.append("")
    if report.get("timings_seconds"):
        lines += ["## Time per stage (seconds)", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in report["timings_seconds"].items()]
        lines.append("")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=float))


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"[{low:+.3f}, {high:+.3f}]"


def render_recommendation(rec: Mapping[str, Any]) -> list[str]:
    """The report's leading section: what to train, and per task single-task vs recommended with interval and verdict."""
    rows = rec["rows"]
    groups = rec["groups"]
    pct = int(round(100 * rec["confidence"]))
    saved = rec["single_task_parameters"] - rec["parameters"]
    lines = [
        "## Recommendation: what to train", "",
        f"Train **{len(groups)} model{'s' if len(groups) != 1 else ''}**: "
        + "; ".join("{" + ", ".join(g) + "}" for g in groups)
        + f" (from candidate `{rec['candidate']}`). Every candidate group was trained with seeds {rec['seeds']}; "
        f"a task worse than single-task beyond its {pct}% interval on **{rec['split']}** (bootstrap over examples, "
        "paired by seed) was split out and the rest retrained. Chosen on validation only; "
        f"{rec.get('report_split') or 'test'} is reported, never used to choose.", "",
        f"| task | metric | group | single-task ({rec['split']}) | recommended ({rec['split']}) | difference | "
        f"{pct}% interval | verdict | {rec.get('report_split') or 'test'}: difference [interval] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t, r in rows.items():
        test = "-" if r.get("test_difference") is None else f"{r['test_difference']:+.3f} {_interval(r.get('test_low'), r.get('test_high'))}"
        lines.append(f"| {t} | {r['metric']} | {', '.join(r['group'])} | {r['single']:.3f} | {r['grouped']:.3f} | "
                     f"{r['difference']:+.3f} | {_interval(r['low'], r['high'])} | **{r['verdict']}** | {test} |")
    lines += ["", f"Parameters: {rec['parameters'] / 1e6:.1f} M against {rec['single_task_parameters'] / 1e6:.1f} M for "
              f"single-task models ({saved / 1e6:+.1f} M saved). Mean {rec['split']} gain {rec['mean_gain']:+.3f}. "
              f"Cost: {rec['cost']['trainings']} trainings ({rec['cost']['seconds']:.0f} s of training, cached runs "
              "shared with the methods counted).", ""]
    flagged = {t: f for t, f in (rec.get("flags") or {}).items() if f}
    if flagged:
        lines += ["**Sanity flags** (these tasks are never grouped):", ""]
        lines += [f"- ⚠ {t}: {'; '.join(f)}" for t, f in flagged.items()]
        lines.append("")
    lines += ["Candidates (after splitting out harmed tasks):", "",
              f"| candidate | groups | split out | mean {rec['split']} gain | parameters (M) |", "|---|---|---|---|---|"]
    for name, c in rec["candidates"].items():
        mark = " (recommended)" if name == rec["candidate"] else ""
        lines.append(f"| {name}{mark} | " + "; ".join("{" + ", ".join(g) + "}" for g in c["groups"])
                     + f" | {', '.join(c['split_out']) or '-'} | {c['mean_gain']:+.3f} | {c['parameters'] / 1e6:.1f} |")
    lines.append("")
    screened = rec.get("screened_out") or {}
    if screened:
        lines += [f"Screened out after the first seed (`--recommend_screen`; mean {rec['split']} gain on that seed): "
                  + ", ".join(f"{name} ({gain:+.3f})" for name, gain in screened.items()) + ".", ""]
    return lines


def format_recommendation(rec: Any) -> str:
    """Plain-text recommendation for the terminal (a ``Recommendation`` or its dict)."""
    d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
    rows = d["rows"]
    width = max(12, *(len(t) for t in rows))
    pct = int(round(100 * d["confidence"]))
    lines = ["recommended: " + "  ".join("{" + ", ".join(g) + "}" for g in d["groups"])
             + f"   (candidate {d['candidate']}, seeds {d['seeds']}, chosen on {d['split']})",
             f"{'task':<{width}}  {'metric':<9} {'single':>7} {'recomm.':>7} {'diff':>7}  {f'{pct}% interval':<17} "
             f"{'verdict':<14} {d.get('report_split') or 'test'} diff"]
    for t, r in rows.items():
        test = "-" if r.get("test_difference") is None else f"{r['test_difference']:+.3f}"
        lines.append(f"{t:<{width}}  {r['metric']:<9} {r['single']:>7.3f} {r['grouped']:>7.3f} {r['difference']:>+7.3f}  "
                     f"{_interval(r['low'], r['high']):<17} {r['verdict']:<14} {test}")
    saved = d["single_task_parameters"] - d["parameters"]
    lines.append(f"parameters {d['parameters'] / 1e6:.1f} M vs {d['single_task_parameters'] / 1e6:.1f} M single-task "
                 f"({saved / 1e6:+.1f} M saved); cost {d['cost']['trainings']} trainings")
    for t, f in (d.get("flags") or {}).items():
        if f:
            lines.append(f"flag {t}: {'; '.join(f)}")
    return "\n".join(lines)


def format_console_summary(evaluations: Mapping[str, MethodEvaluation], tasks: Sequence[str],
                           recommendation: Any = None) -> str:
    """A compact plain-text table for the terminal (led by the recommendation when given)."""
    if recommendation is not None:  # its own table (its seeds); the methods' table keeps the run's seeds
        others = {m: ev for m, ev in evaluations.items() if m != "recommended"}
        return format_recommendation(recommendation) + "\n\n" + format_console_summary(others, tasks)
    methods = list(evaluations)
    width = max(12, *(len(t) for t in tasks))
    head = f"{'task':<{width}}  {'metric':<9} {'single':>8}" + "".join(f"  {m[:16]:>16}" for m in methods)
    lines = [head]
    for t in tasks:
        first = next(iter(evaluations.values())).rows[t]
        row = f"{t:<{width}}  {first.metric:<9} {first.stl_mean:>8.3f}"
        for m in methods:
            r = evaluations[m].rows[t]
            row += f"  {r.mtl_mean:.3f} ({r.gain:+.3f})".rjust(18)
        lines.append(row)
    return "\n".join(lines)
