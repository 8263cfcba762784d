"""Shared pieces of the evidence studies (``evidence_*.py``): the study settings, PVI groupings under every
test, groups built to be maximally dissimilar in PVI, and the figures of docs/benchmarks.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_taskgroup.grouping import Grouping
from hf_taskgroup.grouping.methods.baselines import set_partitions
from hf_taskgroup.pipeline import PipelineConfig

FIGURES_DIR = Path(__file__).resolve().parents[1] / "docs" / "figures"
PVI_TESTS = ("welch", "mannwhitney", "ks", "tost")
TOST_MARGIN_BITS = 0.1  # two tasks are "equivalent" when their mean PVI differ by less than 0.1 bits

# Evidence v2's training settings (docs/benchmarks.md section 7), shared by evidence_v2.py and evidence_v2_suite.py:
# partial mode's k, training rows per task, epochs, learning rate and batch (the PVI models use the same epochs
# and learning rate). 8 epochs at 1e-3 (150 optimizer steps per task at 300 rows) is where single-task validation
# scores stop rising (benchmarks/convergence_check.py); the first runs used 4 epochs at 3e-4, which left 4 of the
# 6 single-task models undertrained.
V2_TRAINABLE_LAYERS = 1
#: The regression-label setting of the committed studies (``PipelineConfig.regression_labels``): they ran before
#: regression heads were standardized (the library's default since), on raw labels. Pinned here so that their
#: caches resume and their figures reproduce; ``study_config(..., regression_labels="standardize")`` reruns one
#: with the fix (other keys, so nothing cached under raw labels is reused).
STUDY_REGRESSION_LABELS = "raw"
V2_MAX_TRAIN = 300
V2_EPOCHS = 8.0
V2_LEARNING_RATE = 1e-3
V2_BATCH_SIZE = 16


def v2_fields(mode: str, *, trainable_layers: int, learning_rate: float, batch_size: int, epochs: float
              ) -> dict[str, Any]:
    """The :func:`study_config` fields of evidence v2: the fine-tuning mode, k, batch and learning rate, and
    PVI models trained with the same epochs and learning rate as the grouped models."""
    return {"finetune": mode, "batch_size": batch_size, "learning_rate": learning_rate,
            "trainable_layers": trainable_layers, "pvi_num_train_epochs": epochs, "pvi_learning_rate": learning_rate}


def training_key(settings: Mapping[str, Any], seed: int, group: Sequence[str], data: Mapping[str, str]) -> str:
    """The key of one training in evidence v2's ledger: its settings (with the seed), the seed, the sorted group
    and each member's data fingerprint (used by ``evidence_v2.py`` and ``grad_estimate_validation.py``)."""
    from hf_taskgroup.artifacts import stable_hash

    return stable_hash({"settings": dict(settings), "seed": seed, "group": sorted(group),
                        "data": {t: data[t] for t in sorted(group)}})


def open_study(stem: str, quick: bool, tasks: Sequence[str], max_train: int, output_dir: Path | None
               ) -> tuple[Any, str, Path] | None:
    """The study's suite, result name (``<stem>[_quick]``) and output folder, with the shared on-disk
    feature cache switched on; None (after printing ``SKIPPED``) when ``../shared/data`` is absent."""
    from common import RESULTS_DIR, SharedDataUnavailable, load_shared_nlp_suite

    name = f"{stem}_quick" if quick else stem
    try:
        suite = load_shared_nlp_suite(tasks, max_train=max_train, seed=0)
    except SharedDataUnavailable as err:
        print(f"SKIPPED: {err}")
        return None
    use_feature_cache(RESULTS_DIR / "evidence" / "feature_cache")
    return suite, name, output_dir or RESULTS_DIR / "evidence" / name


def add_executor_arguments(parser: Any) -> None:
    """``--executor`` and ``--ray_address``: the run's :class:`PipelineConfig` executor fields, with their help and
    choices (docs/ray.md); apply them with ``dataclasses.replace(config, executor=..., ray_address=...)``."""
    for name in ("executor", "ray_address"):
        f = next(f for f in dataclasses.fields(PipelineConfig) if f.name == name)
        parser.add_argument(f"--{name}", default=f.default, choices=f.metadata.get("choices"), help=f.metadata["help"])


def use_feature_cache(folder: Path) -> None:
    """Keep pooled frozen-encoder features on disk under ``folder`` (shared by the studies; unless
    ``$HF_TASKGROUP_FEATURE_CACHE`` already names a folder), so re-runs skip the encoder."""
    from hf_taskgroup.training.features import default_feature_cache

    cache = default_feature_cache()
    if cache.cache_dir is None:
        cache.cache_dir = Path(folder)


def study_config(output_dir: Path, methods: Sequence[str], seeds: Sequence[int], epochs: float, *,
                 num_groups: int | None, num_tasks: int, finetune: str = "frozen", batch_size: int = 32,
                 learning_rate: float | None = None, pvi_null: str = "trained",
                 search_extra: int | None = None, evaluator_objective: str = "loss", every_k_steps: int = 50,
                 **fields: Any) -> PipelineConfig:
    """The pipeline settings shared by the studies (frozen MiniLM + 256-unit trunk unless ``finetune``);
    ``fields`` are further :class:`PipelineConfig` fields (e.g. ``trainable_layers``)."""
    pairs = num_tasks * (num_tasks - 1) // 2
    options: dict[str, dict[str, Any]] = {
        # lookahead collection every 50 steps of the one MTL training (every 10 is the library default)
        "transfer_gain": {"every_k_steps": every_k_steps, "time_limit": 60.0},
        "tag": {"every_k_steps": every_k_steps, "time_limit": 60.0},
        "clustering": {"affinity_kind": "tag", "every_k_steps": every_k_steps},
        # keep the whole projection matrix in memory: in partial/full mode it is larger than the 512 MB default
        # (1.9 GB for MiniLM's top layer + trunk at d = 256), which is otherwise regenerated for every buffer
        "grad_estimate": {"projection_cache_mb": 4096.0},
    }
    if search_extra is not None:  # affinity_search: STL + pairs + search_extra trainings
        options["affinity_search"] = {"budget": num_tasks + pairs + search_extra}
    options = {m: o for m, o in options.items() if m in methods}  # the config refuses options of methods it does not run
    fields.setdefault("regression_labels", STUDY_REGRESSION_LABELS)
    return PipelineConfig(
        output_dir=str(output_dir), methods=list(methods), seeds=list(seeds), finetune=finetune,
        num_train_epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, num_groups=num_groups,
        method_options=options, pvi_null=pvi_null, eval_split="test", pvi_split="validation",
        evaluator_objective=evaluator_objective, **fields,
    )


def run_grouping_stages(pipe: Any) -> tuple[dict[str, Any], dict[str, Grouping]]:
    """The pipeline's PVI and grouping stages (resumable), plus the PVI grouping under every other test."""
    pvi = pipe._timed("pvi", pipe.stage_pvi)
    groupings = pipe._timed("group", pipe.stage_group, pvi)
    groupings.update(pvi_test_groupings(pipe, pvi, [t for t in PVI_TESTS if t != "welch"], groupings["pvi"].cost))
    return pvi, groupings


def metric_objective_groupings(pipe: Any, methods: Sequence[str], **config: Any) -> dict[str, Grouping]:
    """``methods`` (evaluator-based) rerun with ``evaluator_objective="metric"`` on ``pipe``'s evaluator cache.

    A second pipeline under ``<pipe output>_metric`` whose evaluator folder links to ``pipe``'s, so the
    groups it asks for are the same trainings; ``config`` are :func:`study_config`'s other arguments.
    """
    out = Path(pipe.config.output_dir)
    metric_out = out.with_name(f"{out.name}_metric")
    shared = metric_out / "cache" / "evaluator"
    if not shared.exists():
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.symlink_to((out / "cache" / "evaluator").resolve(), target_is_directory=True)
    cfg = pipe.config
    metric_config = study_config(metric_out, methods, cfg.seeds, cfg.num_train_epochs, num_groups=cfg.num_groups,
                                 evaluator_objective="metric", **config)
    metric_pipe = type(pipe)(metric_config, suite=pipe.suite, tokenizer=pipe._tok())
    return metric_pipe.stage_group({})


def pvi_test_groupings(pipe: Any, pvi: Mapping[str, Any], tests: Sequence[str], cost: Any = None
                       ) -> dict[str, Grouping]:
    """The pipeline's PVI grouping (collapsed tasks kept single) under other tests: ``{"pvi_<test>": ...}``."""
    from hf_taskgroup.grouping import group_tasks

    inputs = pipe._method_inputs("pvi", pvi)  # the PVI values and collapsed tasks, as the pipeline's pvi method gets them
    base = pipe._method_params("pvi")  # incl. keep_collapsed_single and the seed
    out = {}
    for test in tests:
        params: dict[str, Any] = {**base, "test": test}
        if test == "tost":
            params["equivalence_margin"] = TOST_MARGIN_BITS
        grouping = group_tasks("pvi", pipe.tasks, **inputs, **params)
        if cost is not None:  # the grouping itself is free: what it costs is the shared PVI stage
            grouping.cost = dataclasses.replace(cost)
        out[f"pvi_{test}"] = grouping
    return out


def grouping_record(name: str, grouping: Grouping) -> dict[str, Any]:
    """The JSON row of one method's grouping: groups, cost and the parameters it ran with."""
    cost = grouping.cost.to_dict()
    return {"method": name, "groups": [list(g) for g in grouping.groups], "num_groups": len(grouping.groups),
            "overlap": bool(grouping.overlap), "trainings": cost["trainings"], "seconds": cost["seconds"],
            "params": {k: v for k, v in grouping.params.items() if isinstance(v, (int, float, str, bool, type(None)))}}


def all_partitions(tasks: Sequence[str]) -> list[list[list[str]]]:
    """Every set partition of ``tasks`` (Bell(n): 203 for 6 tasks)."""
    return [[list(b) for b in p] for p in set_partitions(list(tasks))]


def dissimilar_groups(means: Mapping[str, float], sizes: Sequence[int], *, restarts: int = 20, seed: int = 0
                      ) -> list[list[str]]:
    """Groups of the given ``sizes`` whose members' mean PVI are as *different* as possible.

    Maximises the total within-group sum of squared deviations of the task means (the opposite of the
    PVI grouping, which keeps tasks with equal PVI together) by pairwise swaps from random starts; exact
    for the small suites here in practice (the objective has few distinct values)."""
    tasks = sorted(means)
    if sum(sizes) != len(tasks):
        raise ValueError(f"group sizes {list(sizes)} do not add up to {len(tasks)} tasks")
    x = np.array([means[t] for t in tasks], dtype=float)
    rng = np.random.default_rng(seed)
    labels0 = np.repeat(np.arange(len(sizes)), sizes)

    def spread(labels: np.ndarray) -> float:
        return float(sum(((x[labels == g] - x[labels == g].mean()) ** 2).sum() for g in range(len(sizes))))

    best_labels, best_value = labels0, -1.0
    for _ in range(restarts):
        labels = rng.permutation(labels0)
        value = spread(labels)
        improved = True
        while improved:
            improved = False
            for i in range(len(tasks)):
                for j in range(i + 1, len(tasks)):
                    if labels[i] == labels[j]:
                        continue
                    labels[i], labels[j] = labels[j], labels[i]
                    new = spread(labels)
                    if new > value + 1e-12:
                        value, improved = new, True
                    else:
                        labels[i], labels[j] = labels[j], labels[i]
        if value > best_value:
            best_value, best_labels = value, labels.copy()
    return [[tasks[i] for i in np.flatnonzero(best_labels == g)] for g in range(len(sizes))]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_oracle_figures(payload: Mapping[str, Any], name: str) -> list[Path]:
    """Histogram of all partition scores with each method marked; bar chart of the fraction of oracle gain."""
    from hf_taskgroup.report.plots import save_figure

    plt = _plt()
    refs = payload["references"]
    rows = sorted(payload["methods"], key=lambda r: -r["score"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.hist(payload["all_partition_scores"], bins=40, color="#bbbbbb", label=f"all {payload['num_partitions']} partitions")
    ax.axvline(refs["single_task"], color="black", linestyle="--", label="single-task")
    ax.axvline(refs["oracle (test)"], color="green", linestyle="--", label="oracle")
    cmap = plt.get_cmap("tab20")
    for i, r in enumerate(rows):
        ax.axvline(r["score"], color=cmap(i % 20), linewidth=1.5, label=f"{r['method']} (rank {r['rank']})")
    ax.set_xlabel("mean primary test metric over tasks (seed mean)")
    ax.set_ylabel("partitions")
    ax.set_title(f"{len(payload['tasks'])} tasks: every partition vs each method's choice")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    paths = [save_figure(fig, FIGURES_DIR / f"{name}_partitions.png")]
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    names = [r["method"] for r in rows]
    fracs = [r["fraction_of_oracle_gain"] or 0.0 for r in rows]
    ax.barh(names[::-1], fracs[::-1], color=["#4c72b0" if f >= 0 else "#c44e52" for f in fracs[::-1]])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.axvline(1, color="green", linestyle="--", linewidth=0.8)
    ax.set_xlabel("fraction of the oracle's gain over single-task training")
    paths.append(save_figure(fig, FIGURES_DIR / f"{name}_fraction.png"))
    plt.close(fig)
    return paths


def save_gain_figure(evaluations: Mapping[str, Any], tasks: Sequence[str], path_name: str, title: str) -> Path:
    """Heatmap: per-task test gain over single-task training (seed mean) for each method."""
    from hf_taskgroup.report.plots import save_figure

    plt = _plt()
    methods = list(evaluations)
    gains = np.array([[evaluations[m]["rows"][t]["gain"] for t in tasks] for m in methods])
    lim = float(np.nanmax(np.abs(gains))) or 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(tasks), 0.9 + 0.4 * len(methods)))
    im = ax.imshow(gains, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    for i in range(len(methods)):
        for j in range(len(tasks)):
            ax.text(j, i, f"{gains[i, j]:+.3f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="test gain vs single-task")
    ax.set_title(title, fontsize=9)
    path = save_figure(fig, FIGURES_DIR / f"{path_name}.png")
    plt.close(fig)
    return path


VERDICT_COLORS = {"gains": "#55a868", "no difference": "#8c8c8c", "split out": "#dd8452", "not learned": "#c44e52"}


def save_recommendation_figure(recommendation: Mapping[str, Any], name: str, title: str) -> Path:
    """Left: per task, the recommendation's test gain over single-task with its interval (seeds paired), coloured by
    the validation verdict. Right: each candidate's mean validation gain after its split-out rounds (what chose),
    and hatched, the candidates screened out after the first seed with that seed's gain.
    Reads :func:`recommendation_record`'s ``per_task_test`` and ``candidates``."""
    from hf_taskgroup.report.plots import save_figure

    plt = _plt()
    per = recommendation["per_task_test"]
    tasks = list(per)

    def values(key: str) -> np.ndarray:
        return np.array([np.nan if per[t][key] is None else per[t][key] for t in tasks], dtype=float)

    gains, low, high = values("test_difference"), values("test_low"), values("test_high")
    colors = [VERDICT_COLORS.get(per[t]["verdict"], "#4c72b0") for t in tasks]
    cands = sorted(recommendation["candidates"].items(), key=lambda kv: -(kv[1]["mean_validation_gain"] or 0.0))
    ncand = len(cands) + len(recommendation.get("screened_out") or {})
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(3.0 + 0.6 * len(tasks) + 0.4 * ncand, 4.8),
                                 gridspec_kw={"width_ratios": [max(len(tasks), 1), max(ncand, 1)]})
    x = np.arange(len(tasks))
    ax.bar(x, np.nan_to_num(gains), color=colors)
    ax.errorbar(x, np.nan_to_num(gains), yerr=[np.nan_to_num(gains - low), np.nan_to_num(high - gains)], fmt="none",
                ecolor="black", capsize=3, linewidth=1)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.scatter(x, np.zeros(len(tasks)), marker="s", s=30, color=colors, zorder=3)  # the verdict of a task left alone too
    span = float(np.nanmax(np.abs(np.concatenate([low, high, gains])))) if np.isfinite(gains).any() else 0.0
    ax.set_ylim(-max(span * 1.15, 0.02), max(span * 1.15, 0.02))  # an all-zero result still gets a readable axis
    ax.set_xticks(x, tasks, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("test gain over single-task (interval)")
    for verdict, color in VERDICT_COLORS.items():
        if any(per[t]["verdict"] == verdict for t in tasks):
            ax.bar([0], [0], color=color, label=f"validation: {verdict}")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    screened = sorted((recommendation.get("screened_out") or {}).items(), key=lambda kv: -kv[1])
    names = [n if len(n) <= 28 else n[:26] + "..." for n, _ in cands] + [f"{n} (screened)" for n, _ in screened]
    vals = [c["mean_validation_gain"] or 0.0 for _, c in cands] + [v for _, v in screened]
    bars = bx.bar(np.arange(len(vals)), vals, color=["#4c72b0" if v >= 0 else "#c44e52" for v in vals])
    for bar in bars[len(cands):]:  # screened out after the first seed: that seed's gain only
        bar.set_alpha(0.45)
        bar.set_hatch("//")
    bx.axhline(0, color="black", linewidth=0.8)
    bx.set_xticks(np.arange(len(vals)), names, rotation=60, ha="right", fontsize=7)
    bx.set_ylabel("mean validation gain (all seeds; screened: first seed)")
    bx.set_title("candidates", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, FIGURES_DIR / f"{name}.png")
    plt.close(fig)
    return path


def recommendation_record(rec: Any, candidates: Mapping[str, Grouping], wall: float) -> dict[str, Any]:
    """Per-task test gains with intervals, tasks gained / harmed beyond noise, flags, parameters and cost."""
    per_task = {t: {k: getattr(r, k) for k in ("metric", "group", "verdict", "single", "grouped", "difference", "low",
                                                "high", "test_single", "test_grouped", "test_difference", "test_low",
                                                "test_high")}
                for t, r in rec.rows.items()}
    harmed = [t for t, r in per_task.items() if r["test_high"] is not None and r["test_high"] < 0]
    gained = [t for t, r in per_task.items() if r["test_low"] is not None and r["test_low"] > 0]
    own = [g for m, g in candidates.items() if not m.startswith("pvi_")]  # the PVI variants share the PVI stage
    methods_seconds = sum(float(g.cost.seconds) for g in own)
    methods_trainings = sum(int(g.cost.trainings) for g in own)
    return {"groups": rec.grouping.groups, "candidate": rec.candidate, "per_task_test": per_task,
            "tasks_gained_beyond_noise": gained, "tasks_harmed_beyond_noise": harmed,
            "flags": {t: f for t, f in rec.flags.items() if f},
            "parameters": rec.parameters, "single_task_parameters": rec.single_task_parameters,
            "parameters_saved": rec.single_task_parameters - rec.parameters,
            "trainings": rec.cost["trainings"], "train_seconds": rec.cost["seconds"], "wall_seconds": wall,
            "candidate_methods_trainings": methods_trainings, "candidate_methods_seconds": methods_seconds,
            "candidates": {n: {"initial_groups": c.initial_groups, "groups": c.groups, "split_out": c.split_out,
                               "mean_validation_gain": c.mean_gain, "parameters": c.parameters,
                               "rounds": c.rounds}
                           for n, c in rec.candidates.items()},
            "screened_out": rec.screened_out,
            "seeds": rec.seeds, "confidence": rec.confidence, "bootstrap_samples": rec.bootstrap_samples}


def fidelity_series(payloads: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[str, dict[str, tuple[float, float]]]]:
    """The tasks and, per mode label, each task's ``(single-task score, all-in-one gain)`` from one or more
    ``partial_fidelity*.json`` payloads (same tasks). ``full`` is taken once; a partial mode is labelled with its
    learning rate (``partial k=2, lr 0.0003``)."""
    tasks = list(payloads[0]["tasks"])
    everyone = "+".join(sorted(tasks))
    series: dict[str, dict[str, tuple[float, float]]] = {}
    for d in payloads:
        if sorted(d["tasks"]) != sorted(tasks):
            raise ValueError(f"fidelity results cover different tasks: {d['tasks']} and {tasks}")
        for mode, table in d["scores"].items():
            label = mode if mode == "full" else f"{mode}, lr {d['learning_rate_partial']:g}"
            if label in series:
                continue
            series[label] = {t: (table[t][t], table[everyone][t] - table[t][t]) for t in tasks}
    return tasks, series


def save_fidelity_figure(payloads: Sequence[Mapping[str, Any]], name: str) -> Path:
    """Two panels per task: the single-task test score and the all-in-one gain of ``full`` and each partial mode
    (:func:`fidelity_series`)."""
    from hf_taskgroup.report.plots import save_figure

    plt = _plt()
    tasks, series = fidelity_series(payloads)
    labels = list(series)
    width = 0.8 / len(labels)
    x = np.arange(len(tasks))
    fig, axes = plt.subplots(2, 1, figsize=(1.6 * len(tasks) + 2, 7), sharex=True)
    cmap = plt.get_cmap("tab10")
    for i, label in enumerate(labels):
        color = "black" if label == "full" else cmap(i % 10)
        for panel, ax in enumerate(axes):
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, [series[label][t][panel] for t in tasks], width,
                   color=color, label=label)
    axes[0].set_ylabel("single-task test score")
    top = max(v[0] for per in series.values() for v in per.values())
    axes[0].set_ylim(top=top + 0.3)  # room for the legend above the bars
    axes[1].set_ylabel("all-in-one minus single-task")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[1].set_xticks(x, tasks, rotation=20)
    axes[0].legend(fontsize=7, ncol=3)
    axes[0].set_title(f"partial against full (seeds {payloads[0]['seeds']}, {payloads[0]['max_train']} rows, "
                      f"{payloads[0]['epochs']:g} epochs)")
    path = save_figure(fig, FIGURES_DIR / f"{name}.png")
    plt.close(fig)
    return path
