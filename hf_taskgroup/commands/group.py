"""``hf-taskgroup group``: run one grouping method and write its :class:`Grouping` JSON (and PNG plots).

Inputs are built from what the method needs (see ``--list_methods``):

- ``pvi``: per-example PVI read from ``--pvi_dir`` (``<pvi_dir>/<task>/{dataset,summary.json}`` as written by
  ``hf-taskgroup pvi``), the ``pvi`` column of ``--pvi_split`` (validation; grouping never reads test).
  Tasks whose PVI model collapsed stay single-task (``--no_pvi_keep_collapsed_single`` groups them too).
- ``transfer_gain`` / ``tag`` / ``clustering``: an affinity matrix from ``--affinity`` (.json: a collected
  affinity, a grouping JSON with ``scores.affinity``, or ``{"tasks": [...], "matrix": [[...]]}``; .npy: a
  square matrix over ``--tasks``). Without ``--affinity``, ``transfer_gain`` and ``tag`` collect it during one
  multi-task training of ``--suite`` (cached as JSON in ``--cache_dir``, or next to ``--output``).
- ``exhaustive`` / ``affinity_search`` / ``surrogate``: a cached evaluator training groups of ``--suite``
  (results cached in ``--cache_dir``); its trainings go through ``--executor`` (``ray``: the candidate groups
  train side by side as Ray tasks, docs/ray.md; the other methods dispatch no trainings through it).
- ``task_embedding``: fine-tunes each task of ``--suite`` (embeddings cached in ``--cache_dir``).
- ``grad_estimate``: trains one base model on ``--suite`` and estimates every subset from its gradients
  (cached in ``--cache_dir``).

Method options: ``--num_groups``, ``--max_group_size``, ``--test``, ``--margin``, ``--correction``,
``--alpha``, ``--budget`` and any other keyword with ``--option KEY=VALUE`` (JSON values); an option the
method does not take is an error naming the options it does take.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_taskgroup.config import ConfigError, GroupCommandConfig

logger = logging.getLogger(__name__)

CONFIG = GroupCommandConfig
HELP = "group tasks with one method (pvi, transfer_gain, tag, task_embedding, affinity_search, ...)"
DESCRIPTION = __doc__.split("\n\n", 1)[1]
COLLECTED = ("transfer_gain", "tag")


def configure(parser: Any) -> None:
    """Flags renamed in 0.2, accepted for one release."""
    parser.add_alias("--epochs", "num_train_epochs")


# ------------------------------------------------------------------------------------------- inputs
def load_pvi_values(pvi_dir: str | Path, tasks: Sequence[str] | None = None,
                    splits: Sequence[str] = ("validation",)) -> dict[str, Any]:
    """``{task: 1-D array of per-example PVI}`` from ``<pvi_dir>/<task>/{dataset,summary.json}`` (missing scores dropped).

    Grouping reads the validation split only (never test)."""
    import datasets
    import numpy as np

    if "test" in splits:
        raise ConfigError("grouping must never read test-split PVI (use --pvi_split validation)")
    root = Path(pvi_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"PVI folder {root} does not exist")
    if tasks is None:
        tasks = sorted(d.name for d in root.iterdir() if (d / "summary.json").is_file())
        if not tasks:
            raise FileNotFoundError(f"no PVI artifacts (<task>/summary.json) under {root}")
    out = {}
    for task in tasks:
        path = root / task / "dataset"
        if not (root / task / "summary.json").is_file() or not path.is_dir():
            raise FileNotFoundError(f"task {task!r}: no finished PVI artifacts in {root / task} (summary.json + dataset/)")
        data = datasets.load_from_disk(str(path))
        data = data if isinstance(data, datasets.DatasetDict) else datasets.DatasetDict({"validation": data})
        values = []
        for split in splits:
            if split not in data:
                continue
            if "pvi" not in data[split].column_names:
                raise ConfigError(f"task {task!r}, split {split!r}: {path} has no 'pvi' column")
            values += [v for v in data[split]["pvi"] if v is not None]
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            raise ConfigError(f"task {task!r}: no PVI values in splits {list(splits)} of {path} (splits: {sorted(data)})")
        out[task] = arr
    return out


def load_affinity(path: str | Path, tasks: Sequence[str] | None = None) -> tuple[list[str], Any]:
    """``(tasks, matrix)`` from a .npy matrix (needs ``tasks``) or a JSON file; reordered to ``tasks`` if given."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"affinity file {path} does not exist")
    if path.suffix == ".npy":
        matrix, names = np.load(path, allow_pickle=False), None
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            matrix, names = data, None
        else:
            matrix = data.get("matrix", data.get("affinity", (data.get("scores") or {}).get("affinity")))
            names = data.get("tasks")
            if matrix is None:
                raise ConfigError(f"{path}: no 'matrix', 'affinity' or 'scores.affinity' entry")
        matrix = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    if names is None:
        if tasks is None:
            raise ConfigError(f"{path} does not name its tasks: pass --tasks in the matrix's order")
        names = list(tasks)
    if matrix.shape != (len(names), len(names)):
        raise ConfigError(f"{path}: matrix of shape {matrix.shape} for {len(names)} tasks {names}")
    if tasks is None:
        return list(names), matrix
    missing = [t for t in tasks if t not in names]
    if missing:
        raise ConfigError(f"{path} has no row for task(s) {missing}; it covers {names}")
    idx = [list(names).index(t) for t in tasks]
    return list(tasks), matrix[np.ix_(idx, idx)]


def load_collapsed(pvi_dir: str | Path, tasks: Sequence[str], split: str) -> list[str]:
    """Tasks whose PVI model collapsed on ``split`` (from ``<pvi_dir>/<task>/summary.json``)."""
    out = []
    for task in tasks:
        summary = json.loads((Path(pvi_dir) / task / "summary.json").read_text(encoding="utf-8"))
        if (summary.get("collapsed") or {}).get(split):
            out.append(task)
    return out


# ------------------------------------------------------------------------------------------- command
def run(config: GroupCommandConfig, ctx: Any = None) -> int:
    from hf_taskgroup.grouping.registry import available_methods

    if config.list_methods:
        for name, info in available_methods().items():
            needs = ", ".join(info["needs"]) or "-"
            print(f"{name:<16} needs: {needs:<22} {info['description']}")
            print(f"{'':<16} options: {', '.join(info['options']) or '-'}")
        return 0
    config.check_single_process()
    grouping, pvi = _group(config)
    grouping.to_json(config.output)
    print(f"{grouping.method}: {len(grouping.groups)} group(s) of {len(grouping.tasks)} tasks")
    for i, group in enumerate(grouping.groups, 1):
        print(f"  group {i}: {', '.join(group)}")
    print(f"grouping written to {config.output}")
    if config.plots_dir:
        for path in write_plots(grouping, config.plots_dir, pvi=pvi):
            print(f"plot written to {path}")
    return 0


def _group(config: GroupCommandConfig) -> tuple[Any, dict | None]:
    """The method's inputs from the command's sources (``--pvi_dir``, ``--affinity``, ``--suite``), built by the
    one input resolver the pipeline uses too, then the method. The evaluator's trainings go through the
    command's executor (``--executor``), as in the main job."""
    executor = config.make_executor()  # Ray (if chosen) starts at the first dispatched training
    try:
        return _group_with(config, executor)
    finally:
        executor.close()


def _group_with(config: GroupCommandConfig, executor: Any) -> tuple[Any, dict | None]:
    from hf_taskgroup.grouping.inputs import InputSources
    from hf_taskgroup.grouping.registry import group_tasks, method_inputs

    method = config.method
    declared = method_inputs(method)
    options = config.method_options_given()
    options["seed"] = config.seed
    suite = _suite(config) if config.suite else None
    tasks = list(config.tasks) if config.tasks else (suite.task_names if suite is not None else None)
    loaded: dict[str, Any] = {}
    if "pvi" in declared:
        if not config.pvi_dir:
            raise ConfigError(f"method {method!r} needs --pvi_dir (PVI artifacts from `hf-taskgroup pvi`)")
        loaded["pvi"] = load_pvi_values(config.pvi_dir, tasks, (config.pvi_split,))
        tasks = tasks or sorted(loaded["pvi"])
        options.setdefault("keep_collapsed_single", config.pvi_keep_collapsed_single)
    if "affinity" in declared:
        if config.affinity:
            tasks, loaded["affinity"] = load_affinity(config.affinity, tasks)
        elif not (method in COLLECTED and suite is not None):
            raise ConfigError(f"method {method!r} needs --affinity" + (" or --suite (to collect it)" if method in COLLECTED else ""))
    if ("evaluator" in declared or "suite" in declared) and suite is None and "affinity" not in declared:
        raise ConfigError(f"method {method!r} trains models: it needs --suite")
    if not tasks:
        raise ConfigError(f"no tasks: give --tasks, --suite{' or --pvi_dir' if 'pvi' not in declared else ''}")
    config.check_tasks(tasks)
    if suite is not None and ("evaluator" in declared or "suite" in declared or "affinity" not in loaded):
        config.check_model()  # the model exists and --max_length fits it, before any training
    collections: list[Any] = []

    def affinity(kind: str) -> Any:
        if "affinity" in loaded:
            return loaded["affinity"]
        collections.append(_collect(config, suite, tasks, kind))
        return collections[-1].matrix

    evaluators: list[Any] = []

    def evaluator() -> Any:
        from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator

        evaluators.append(make_suite_evaluator(suite, config.train_settings(config.seed), _cache(config, "groups"),
                                               seed=config.seed, objective=config.evaluator_objective,
                                               executor=executor))
        return evaluators[-1]

    sources = InputSources(
        tasks=list(tasks), affinity=affinity, evaluator=evaluator if suite is not None else None, suite=suite,
        pvi=(lambda: (loaded["pvi"], load_collapsed(config.pvi_dir, tasks, config.pvi_split))) if "pvi" in loaded else None,
        settings=config.train_settings(config.seed) if suite is not None else None,
        cache_dir=_cache(config, method),
    )
    grouping = group_tasks(method, tasks, sources=sources, **options)
    if config.executor != "serial" and not evaluators:
        logger.info("--executor %s: method %r trains no candidate groups, so nothing was dispatched through it",
                    config.executor, method)
    for collection in collections:
        grouping.cost.trainings += 1
        grouping.cost.seconds += collection.seconds
        grouping.provenance["affinity_collection"] = {
            "kind": collection.kind, "steps_collected": collection.steps_collected, "seconds": collection.seconds,
            "passes": collection.forward_backward_passes, **{k: v for k, v in collection.params.items() if k != "identity"},
        }
    grouping.provenance.setdefault("command", "hf-taskgroup group")
    grouping.provenance.setdefault("config", config.to_dict())
    return grouping, loaded.get("pvi")


def _suite(config: GroupCommandConfig) -> Any:
    from hf_taskgroup.data.tasks import TaskSuite

    suite = TaskSuite.from_yaml(config.suite)
    # the whole suite is kept (the evaluator's cache key covers it, so runs on other --tasks share trainings)
    suite.subset(config.tasks or suite.task_names).validate()
    return suite


def _cache(config: GroupCommandConfig, name: str) -> Path | None:
    return Path(config.cache_dir) / name if config.cache_dir else None


def _collect(config: GroupCommandConfig, suite: Any, tasks: Sequence[str], kind: str) -> Any:
    from hf_taskgroup.grouping.evaluators.affinity_collection import collect_affinity

    out = (Path(config.cache_dir) / f"affinity_{kind}.json" if config.cache_dir
           else Path(config.output).with_suffix(f".{kind}.affinity.json"))
    print(f"collecting {kind} affinities during one multi-task training (every {config.every_k_steps} steps) -> {out}")
    return collect_affinity(suite, tasks, config.train_settings(config.seed), kind=kind,
                            every_k_steps=config.every_k_steps, probe_batch_size=config.probe_batch_size,
                            task_subsample=config.task_subsample, seed=config.seed, output_path=out)


def write_plots(grouping: Any, plots_dir: str | Path, *, pvi: Mapping[str, Any] | None = None) -> list[Path]:
    """PNG plots of a grouping: PVI distributions and p-values (pvi), the affinity heatmap with groups outlined."""
    from hf_taskgroup.report import plots

    root = Path(plots_dir)
    name = grouping.method
    written = []
    if pvi is not None:
        written.append(plots.plot_pvi_distributions({t: pvi[t] for t in grouping.tasks}, grouping.groups,
                                                    root / f"{name}_pvi_distributions.png"))
    if "p_values" in grouping.scores:
        written.append(plots.plot_pvalue_heatmap(grouping.tasks, grouping.scores["p_values"], root / f"{name}_p_values.png",
                                                 alpha=float(grouping.params.get("alpha", 0.05))))
    if "affinity" in grouping.scores:
        written.append(plots.plot_affinity_heatmap(grouping.tasks, grouping.scores["affinity"], grouping.groups,
                                                   root / f"{name}_affinity.png", title=f"{name} affinity"))
    return written
