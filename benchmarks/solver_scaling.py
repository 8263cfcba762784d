"""How the exact transfer-gain solvers scale with the number of tasks N (HiGHS via scipy.optimize.milp).

For each N a random affinity matrix is drawn (seeded): blocks of 4 tasks with within-block gain 1,
cross-block gain -0.5, Gaussian noise (sd 0.5), diagonal 0. The grouping asks for ceil(N / 4) groups (the planted count).
N <= 12 is solved with both formulations (enumerated set partitioning over 2^N - 1 candidates, and the
compact linearised model); larger N with the compact model only, under a time limit per solve. The table
reports HiGHS' status, the objective found, HiGHS' bound on the optimum and the relative gap, seconds, the
model size, where the grouping came from (HiGHS' incumbent, or the compact solver's local-search fallback
when HiGHS stops at the time limit), the planted grouping's objective and whether it was recovered.

    python benchmarks/solver_scaling.py --quick          # N <= 16
    python benchmarks/solver_scaling.py --time-limit 60  # N up to 64

Writes benchmarks/results/solver_scaling.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, format_table, write_results  # noqa: E402

from hf_taskgroup.grouping.solvers.partition import (  # noqa: E402
    GroupingSolverError,
    solve_compact,
    solve_set_partition,
    transfer_gain_value,
)

SIZES = (8, 10, 12, 16, 24, 32, 48, 64)
ENUMERATE_UP_TO = 12


def random_affinity(n: int, seed: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) // 4
    S = np.where(labels[:, None] == labels[None, :], 1.0, -0.5) + rng.normal(0.0, 0.5, (n, n))
    np.fill_diagonal(S, 0.0)
    planted = [tuple(int(i) for i in np.flatnonzero(labels == b)) for b in np.unique(labels)]
    return S, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N <= 16 only")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per solve (HiGHS time_limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-local-search", action="store_true",
                        help="compact model without the local-search fallback (HiGHS' own incumbent only)")
    args = parser.parse_args()
    sizes = [n for n in SIZES if not args.quick or n <= 16]

    rows, records = [], []
    for n in sizes:
        S, planted = random_affinity(n, args.seed + n)
        k = len(planted)
        planted_value = sum(transfer_gain_value(S, g) for g in planted)
        formulations = ["enumerated", "compact"] if n <= ENUMERATE_UP_TO else ["compact"]
        for formulation in formulations:
            start = time.perf_counter()
            try:
                if formulation == "enumerated":
                    res = solve_set_partition(n, lambda g, S=S: transfer_gain_value(S, g), num_groups=k,
                                              time_limit=args.time_limit)
                else:
                    res = solve_compact(S, k, time_limit=args.time_limit, local_search=not args.no_local_search)
            except GroupingSolverError as err:
                seconds = time.perf_counter() - start
                records.append({"n": n, "num_groups": k, "formulation": formulation, "status": "no_solution",
                                "highs_message": str(err), "seconds": seconds})
                rows.append([n, k, formulation, "no_solution", "-", "-", "-", f"{seconds:.2f}", "-", "-", "-",
                             f"{planted_value:.3f}", "-"])
                print(f"N={n:<3} {formulation:<10} no_solution {seconds:7.2f}s", flush=True)
                continue
            seconds = time.perf_counter() - start
            status = "optimal" if res.optimal else ("time_limit" if res.status_code == 1 else res.status)
            gap = res.gap if res.gap is not None else None
            record = {
                "n": n, "num_groups": k, "formulation": formulation, "status": status,
                "highs_message": res.status, "objective": res.objective, "bound": res.bound, "gap": gap,
                "seconds": seconds, "num_variables": res.num_variables, "num_constraints": res.num_constraints,
                "num_candidates": res.num_candidates, "planted_objective": planted_value,
                "planted_recovered": sorted(res.groups) == sorted(planted), "incumbent": res.incumbent,
            }
            records.append(record)
            rows.append([n, k, formulation, status, f"{res.objective:.3f}",
                         "-" if res.bound is None else f"{res.bound:.3f}",
                         "-" if gap is None else f"{100 * gap:.2f}%", f"{seconds:.2f}",
                         res.num_variables, res.num_constraints, res.incumbent, f"{planted_value:.3f}",
                         "yes" if record["planted_recovered"] else "no"])
            print(f"N={n:<3} {formulation:<10} {status:<10} {seconds:7.2f}s", flush=True)

    headers = ["N", "groups", "formulation", "status", "objective", "bound", "gap", "seconds",
               "variables", "constraints", "incumbent", "planted_obj", "recovered"]
    print()
    print(format_table(headers, rows))
    env = environment()
    env["scipy"] = scipy.__version__
    path = write_results("solver_scaling", {
        "benchmark": "solver_scaling",
        "quick": args.quick,
        "local_search": not args.no_local_search,
        "time_limit_s": args.time_limit,
        "seed": args.seed,
        "affinity": "blocks of 4 (within 1.0, across -0.5) + N(0, 0.5) noise, diagonal 0; num_groups = ceil(N / 4)",
        "environment": env,
        "results": records,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
