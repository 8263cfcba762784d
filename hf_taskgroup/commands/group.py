"""``hf-taskgroup group``: run one grouping method and write its :class:`Grouping` JSON (and PNG plots).

Inputs are built from what the method needs (see ``--list_methods``):

- ``pvi``: per-example PVI read from ``--pvi_dir`` (``<pvi_dir>/<task>/{dataset,summary.json}`` as written by
  ``hf-taskgroup pvi``), the ``pvi`` column of ``--pvi_splits`` (default validation and test).
- ``transfer_gain`` / ``tag`` / ``clustering``: an affinity matrix from ``--affinity`` (.json: a collected
  affinity, a grouping JSON with ``scores.affinity``, or ``{"tasks": [...], "matrix": [[...]]}``; .npy: a
  square matrix over ``--tasks``). Without ``--affinity``, ``transfer_gain`` and ``tag`` collect it during one
  multi-task training of ``--suite`` (cached as JSON in ``--cache_dir``, or next to ``--output``).
- ``exhaustive`` / ``affinity_search`` / ``surrogate``: a cached evaluator training groups of ``--suite``
  (results cached in ``--cache_dir``).
- ``task_embedding``: fine-tunes each task of ``--suite`` (embeddings cached in ``--cache_dir``).

Method options: ``--num_groups``, ``--max_group_size``, ``--test``, ``--margin``, ``--correction``,
``--alpha``, ``--budget`` and any other keyword with ``--option KEY=VALUE`` (JSON values); an option the
method does not take is an error naming the options it does take.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: CLI flag -> keyword of the grouping method.
OPTION_FLAGS = {"num_groups": "num_groups", "max_group_size": "max_group_size", "test": "test",
                "margin": "equivalence_margin", "correction": "correction", "alpha": "alpha", "budget": "budget"}
COLLECTED = ("transfer_gain", "tag")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "group",
        help="group tasks with one method (pvi, transfer_gain, tag, task_embedding, affinity_search, ...)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", default=None, help="grouping method (see --list_methods)")
    p.add_argument("--list_methods", action="store_true", help="list the methods, their inputs, and exit")
    p.add_argument("--output", default=None, help="where to write the grouping JSON")
    p.add_argument("--tasks", type=_csv, default=None, help="comma-separated tasks (default: all of the input)")
    p.add_argument("--suite", default=None, help="task suite YAML (training-based methods)")
    p.add_argument("--pvi_dir", default=None, help="PVI artifacts folder (method pvi)")
    p.add_argument("--pvi_splits", type=_csv, default=["validation", "test"], help="splits whose PVI is used")
    p.add_argument("--affinity", default=None, help="affinity matrix file (.json or .npy)")
    p.add_argument("--plots_dir", default=None, help="write PNG plots here")
    p.add_argument("--cache_dir", default=None, help="cache of trainings / collections / embeddings (resumable)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("method options")
    g.add_argument("--num_groups", type=int, default=None)
    g.add_argument("--max_group_size", type=int, default=None)
    g.add_argument("--test", default=None, choices=["welch", "mannwhitney", "ks", "tost"])
    g.add_argument("--margin", type=float, default=None, help="TOST equivalence margin in bits")
    g.add_argument("--correction", default=None, choices=["holm", "bh", "bonferroni", "none"])
    g.add_argument("--alpha", type=float, default=None)
    g.add_argument("--budget", type=float, default=None, help="training budget (searches) or group-cost budget (transfer_gain)")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="any other method keyword (JSON value)")
    t = p.add_argument_group("training (suite-based methods)")
    t.add_argument("--model", default=None, help="encoder: Hub id or folder (default: all-MiniLM-L6-v2)")
    t.add_argument("--finetune", default="frozen", choices=["frozen", "lora", "full", "partial"])
    t.add_argument("--epochs", type=float, default=3.0)
    t.add_argument("--learning_rate", type=float, default=None)
    t.add_argument("--batch_size", type=int, default=32)
    t.add_argument("--pooling", default="mean", choices=["mean", "cls"])
    t.add_argument("--trunk_hidden_sizes", type=lambda s: [int(x) for x in _csv(s)], default=None,
                   help="shared trunk, e.g. 256 (default: 256 for transfer_gain/tag in frozen mode, else none)")
    t.add_argument("--max_length", type=int, default=128)
    c = p.add_argument_group("affinity collection (transfer_gain, tag without --affinity)")
    c.add_argument("--every_k_steps", type=int, default=10)
    c.add_argument("--probe_batch_size", type=int, default=None)
    c.add_argument("--task_subsample", type=int, default=None)
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------- inputs
def load_pvi_values(pvi_dir: str | Path, tasks: Sequence[str] | None = None,
                    splits: Sequence[str] = ("validation", "test")) -> dict[str, Any]:
    """``{task: 1-D array of per-example PVI}`` from ``<pvi_dir>/<task>/{dataset,summary.json}`` (missing scores dropped)."""
    import datasets
    import numpy as np

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
                raise ValueError(f"task {task!r}, split {split!r}: {path} has no 'pvi' column")
            values += [v for v in data[split]["pvi"] if v is not None]
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            raise ValueError(f"task {task!r}: no PVI values in splits {list(splits)} of {path} (splits: {sorted(data)})")
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
                raise ValueError(f"{path}: no 'matrix', 'affinity' or 'scores.affinity' entry")
        matrix = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    if names is None:
        if tasks is None:
            raise ValueError(f"{path} does not name its tasks: pass --tasks in the matrix's order")
        names = list(tasks)
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"{path}: matrix of shape {matrix.shape} for {len(names)} tasks {names}")
    if tasks is None:
        return list(names), matrix
    missing = [t for t in tasks if t not in names]
    if missing:
        raise ValueError(f"{path} has no row for task(s) {missing}; it covers {names}")
    idx = [list(names).index(t) for t in tasks]
    return list(tasks), matrix[np.ix_(idx, idx)]


def method_options(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check that ``method`` takes every option in ``given`` (flag name -> value); return its keywords."""
    from hf_taskgroup.grouping.registry import get_method

    params = inspect.signature(get_method(method)).parameters
    accepted = sorted(k for k in params if k != "tasks")
    out = {}
    for flag, value in given.items():
        key = OPTION_FLAGS.get(flag, flag)
        if key not in params:
            raise ValueError(f"method {method!r} does not take --{flag}" + (f" ({key})" if key != flag else "")
                             + f"; its options: {', '.join(accepted)}")
        out[key] = value
    return out


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"--option expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


# ------------------------------------------------------------------------------------------- command
def run(args: argparse.Namespace) -> int:
    import hf_taskgroup.grouping  # noqa: F401  (registers the methods)
    import hf_taskgroup.grouping.methods.task_embedding  # noqa: F401
    from hf_taskgroup.grouping.registry import available_methods

    methods = available_methods()
    if args.list_methods:
        for name, info in methods.items():
            needs = ", ".join(info["needs"]) or "-"
            print(f"{name:<16} needs: {needs:<22} {info['description']}")
        return 0
    try:
        if args.method is None or args.method not in methods:
            raise ValueError(f"unknown grouping method {args.method!r}; available: {', '.join(methods)}")
        if not args.output:
            raise ValueError("--output is required (where to write the grouping JSON)")
        grouping, pvi = _group(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"hf-taskgroup group: error: {err}", file=sys.stderr)
        return 2
    grouping.to_json(args.output)
    print(f"{grouping.method}: {len(grouping.groups)} group(s) of {len(grouping.tasks)} tasks")
    for i, group in enumerate(grouping.groups, 1):
        print(f"  group {i}: {', '.join(group)}")
    print(f"grouping written to {args.output}")
    if args.plots_dir:
        for path in write_plots(grouping, args.plots_dir, pvi=pvi):
            print(f"plot written to {path}")
    return 0


def _settings(args: argparse.Namespace) -> Any:
    from hf_taskgroup.training.train import TrainSettings

    trunk = args.trunk_hidden_sizes
    if trunk is None:
        trunk = [256] if args.method in COLLECTED and args.finetune == "frozen" and not args.affinity else []
    return TrainSettings(model_name_or_path=args.model, finetune=args.finetune, pooling=args.pooling,
                         trunk_hidden_sizes=trunk, max_length=args.max_length, num_train_epochs=args.epochs,
                         learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size, seed=args.seed)


def _group(args: argparse.Namespace) -> tuple[Any, dict | None]:
    from hf_taskgroup.grouping.registry import available_methods, get_method, group_tasks

    method = args.method
    needs = {n for need in available_methods()[method]["needs"] for n in need.split("|")}
    given = {flag: getattr(args, flag) for flag in OPTION_FLAGS if getattr(args, flag) is not None}
    if given.get("budget") is not None and float(given["budget"]).is_integer():
        given["budget"] = int(given["budget"])
    given.update(dict(_parse_option(o) for o in args.option))
    kwargs = method_options(method, given)
    kwargs["seed"] = args.seed
    params = inspect.signature(get_method(method)).parameters
    suite = _suite(args) if args.suite else None
    tasks = args.tasks or (suite.task_names if suite is not None else None)
    pvi = None
    collection = None
    if "pvi" in params:
        if not args.pvi_dir:
            raise ValueError(f"method {method!r} needs --pvi_dir (PVI artifacts from `hf-taskgroup pvi`)")
        pvi = load_pvi_values(args.pvi_dir, tasks, args.pvi_splits)
        tasks = tasks or sorted(pvi)
        kwargs["pvi"] = pvi
    if "affinity" in params and "affinity" in needs:
        if args.affinity:
            tasks, kwargs["affinity"] = load_affinity(args.affinity, tasks)
        elif method in COLLECTED and suite is not None:
            collection = _collect(args, suite, tasks, method)
            kwargs["affinity"] = collection.matrix
        else:
            raise ValueError(f"method {method!r} needs --affinity" + (" or --suite (to collect it)" if method in COLLECTED else ""))
    if "evaluator" in params and "evaluator" in needs:
        if suite is None:
            raise ValueError(f"method {method!r} trains groups: it needs --suite")
        from hf_taskgroup.grouping.evaluators.text import make_suite_evaluator

        kwargs["evaluator"] = make_suite_evaluator(suite, _settings(args), _cache(args, "groups"), seed=args.seed)
    if "suite" in params and "embeddings" in params:
        if suite is None:
            raise ValueError(f"method {method!r} fine-tunes each task: it needs --suite")
        kwargs.update(suite=suite, settings=_settings(args), cache_dir=_cache(args, "task_embedding"))
    if not tasks:
        raise ValueError(f"no tasks: give --tasks, --suite{' or --pvi_dir' if pvi is None else ''}")
    grouping = group_tasks(method, tasks, **kwargs)
    if collection is not None:
        grouping.cost.trainings += 1
        grouping.cost.seconds += collection.seconds
        grouping.provenance["affinity_collection"] = {
            "kind": collection.kind, "steps_collected": collection.steps_collected, "seconds": collection.seconds,
            "passes": collection.forward_backward_passes, **{k: v for k, v in collection.params.items() if k != "identity"},
        }
    grouping.provenance.setdefault("command", "hf-taskgroup group")
    grouping.provenance.setdefault("cli_args", {k: v for k, v in vars(args).items()
                                                if k not in ("func", "command") and v is not None and v != []})
    return grouping, pvi


def _suite(args: argparse.Namespace) -> Any:
    from hf_taskgroup.data.tasks import TaskSuite

    suite = TaskSuite.from_yaml(args.suite)
    # the whole suite is kept (the evaluator's cache key covers it, so runs on other --tasks share trainings)
    suite.subset(args.tasks or suite.task_names).validate()
    return suite


def _cache(args: argparse.Namespace, name: str) -> Path | None:
    return Path(args.cache_dir) / name if args.cache_dir else None


def _collect(args: argparse.Namespace, suite: Any, tasks: Sequence[str], kind: str) -> Any:
    from hf_taskgroup.grouping.evaluators.affinity_collection import collect_affinity

    out = Path(args.cache_dir) / f"affinity_{kind}.json" if args.cache_dir else Path(args.output).with_suffix(f".{kind}.affinity.json")
    print(f"collecting {kind} affinities during one multi-task training (every {args.every_k_steps} steps) -> {out}")
    return collect_affinity(suite, tasks, _settings(args), kind=kind, every_k_steps=args.every_k_steps,
                            probe_batch_size=args.probe_batch_size, task_subsample=args.task_subsample,
                            seed=args.seed, output_path=out)


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
