"""What screening (``--recommend_screen N``) would have saved, and chosen, in a finished recommendation.

Screening trains every candidate's groups with the first seed only and gives the other seeds (and the
split-out rounds) to the N candidates with the best mean validation gain on that seed. This script replays a
recommendation that ran *without* screening, from its cached trainings (``runs/<group>/seed<k>.json`` of the
pipeline folder), with ``screen`` = 0 and each N of ``--screens``: which candidate each would have
recommended, and how many of the trainings (and training-seconds) it would have needed. No model is trained:
every training a screened run asks for is one the unscreened run did, and a missing one is an error.

    python benchmarks/recommend_screen.py            # evidence v2's recommendation (benchmarks/evidence_v2.py)
    python benchmarks/recommend_screen.py --quick    # its --quick run
    python benchmarks/recommend_screen.py --pipeline-dir PATH --screens 1 2 3

Writes benchmarks/results/recommend_screen[_quick].json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, SharedDataUnavailable, load_shared_nlp_suite, write_results  # noqa: E402
from evidence_common import V2_MAX_TRAIN  # noqa: E402

from hf_taskgroup.grouping.recommend import SINGLE_TASK, recommend_grouping  # noqa: E402
from hf_taskgroup.report.evaluation import group_name  # noqa: E402

PROBE_FLAG = "not learned by the PVI probe"


def candidates_of(recommendation: dict[str, Any]) -> dict[str, list[list[str]]]:
    """The recorded candidates (as normalised when they ran), single-task left to ``recommend_grouping``."""
    out = {}
    for name, cand in recommendation["candidates"].items():
        names = [n for n in name.split(" = ") if n != SINGLE_TASK]
        if names:
            out[" = ".join(names)] = cand["initial_groups"]
    return out


def replay(pipeline_dir: Path, suite: Any, screens: Sequence[int]) -> dict[str, Any]:
    """Replay ``pipeline_dir``'s ``recommendation.json`` from its cached runs with each ``screen`` (0 first)."""
    rec = json.loads((pipeline_dir / "recommendation.json").read_text(encoding="utf-8"))
    if rec.get("screened_out"):
        raise SystemExit(f"error: {pipeline_dir / 'recommendation.json'} was itself screened; replay needs an "
                         "unscreened recommendation (every candidate trained with every seed)")
    collapsed = [t for t, flags in (rec.get("flags") or {}).items() if any(PROBE_FLAG in f for f in flags)]
    candidates = candidates_of(rec)
    rows = []
    for screen in [0, *[s for s in screens if s != 0]]:
        asked: dict[tuple[str, int], float] = {}

        def train(tasks: list[str], seed: int, asked: dict[tuple[str, int], float] = asked) -> dict[str, Any]:
            path = pipeline_dir / "runs" / group_name(sorted(tasks)) / f"seed{seed}.json"
            if not path.exists():
                raise SystemExit(f"error: {path} is missing: the replay needs every training of the recorded "
                                 "recommendation (run it to the end first)")
            run = json.loads(path.read_text(encoding="utf-8"))
            asked[(group_name(sorted(tasks)), seed)] = float(run.get("train_seconds") or 0.0)
            return run

        out = recommend_grouping(suite, candidates, train, seeds=rec["seeds"], split=rec["split"],
                                 report_split=rec["report_split"], bootstrap_samples=rec["bootstrap_samples"],
                                 confidence=rec["confidence"], collapsed=collapsed, screen=screen)
        rows.append({"screen": screen, "candidate": out.candidate, "groups": out.grouping.groups,
                     "mean_validation_gain": out.mean_gain, "kept": sorted(out.candidates),
                     "screened_out": out.screened_out, "trainings": len(asked),
                     "train_seconds": sum(asked.values())})
    full = rows[0]
    for row in rows:
        row["same_groups_as_unscreened"] = row["groups"] == full["groups"]
        row["trainings_fraction"] = row["trainings"] / full["trainings"] if full["trainings"] else None
        row["seconds_fraction"] = row["train_seconds"] / full["train_seconds"] if full["train_seconds"] else None
    recorded = sorted(rec["grouping"]["groups"]) if "grouping" in rec else sorted(rec["groups"])
    try:
        shown = str(pipeline_dir.resolve().relative_to(RESULTS_DIR.resolve()))
    except ValueError:
        shown = str(pipeline_dir)
    return {"pipeline_dir": shown, "seeds": rec["seeds"], "candidates": len(full["kept"]),
            "recorded_groups": rec["groups"], "replay_matches_record": sorted(full["groups"]) == recorded,
            "rows": rows}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="evidence_v2.py --quick's recommendation")
    parser.add_argument("--pipeline-dir", type=Path, default=None,
                        help="a pipeline output folder with recommendation.json and runs/ (default: evidence v2's)")
    parser.add_argument("--screens", type=int, nargs="+", default=[1, 2, 3], help="the N values to replay")
    parser.add_argument("--max-train", type=int, default=None,
                        help=f"the study's training rows per task, for the same label lists (default {V2_MAX_TRAIN}; "
                             "quick 60, as the recorded smoke run)")
    args = parser.parse_args(argv)
    folder = args.pipeline_dir or (RESULTS_DIR / "evidence" / f"evidence_v2_partial{'_quick' if args.quick else ''}"
                                   / "pipeline")
    if not (folder / "recommendation.json").exists():
        raise SystemExit(f"error: {folder / 'recommendation.json'} not found: run benchmarks/evidence_v2.py"
                         f"{' --quick' if args.quick else ''} to the end of its recommendation stage first")
    rec = json.loads((folder / "recommendation.json").read_text(encoding="utf-8"))
    try:
        suite = load_shared_nlp_suite(list(rec["rows"]), max_train=args.max_train or (60 if args.quick else V2_MAX_TRAIN),
                                      seed=0)  # the study's suite: its tasks' types and label lists
    except SharedDataUnavailable as err:
        print(f"SKIPPED: {err}")
        return
    result = replay(folder, suite, args.screens)
    path = write_results("recommend_screen_quick" if args.quick else "recommend_screen", result)
    print(f"{result['candidates']} distinct candidate partitions (single-task included), seeds {result['seeds']}; replay without "
          f"screening matches the recorded recommendation: {result['replay_matches_record']}")
    for r in result["rows"]:
        print(f"screen {r['screen']}: {r['trainings']:>3} trainings ({r['trainings_fraction']:.2f}), "
              f"{r['train_seconds']:>7.0f} s ({r['seconds_fraction']:.2f}); same groups: "
              f"{r['same_groups_as_unscreened']}; {r['candidate']} {r['groups']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
