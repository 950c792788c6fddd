"""Online tuning with leave-one-workload-out advice, every backend x every built-in workload.

    python benchmarks/tune_loo.py [--backends autonuma,tpp] [--workloads gups,btree] [--budget 16]
                                  [--trial-duration 180] [--duration 1800] [--screen] [--agent shipped|none|FILE] [--db-dir DIR]

For each backend: sweep the suite once (``ptmt.offline.suite_db``; reused when --db-dir already
holds it), then for each workload W fit the query model without W's trials and tune W for
--duration simulated seconds against the same-seed defaults. "Sweep headroom" is the best gain of
W's own sweep, which the advising model never saw: it says whether there was anything to find.
Prints one row per (backend, workload) and the wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from ptmt.offline.suite_db import build_suite_database, leave_one_out, suite_table
from ptmt.online.agent import load_agent, shipped_agent_path
from ptmt.online.simrun import SimSetup, tune_sim
from ptmt.sim.specs import builtin_names


def sweep_headroom(table: pd.DataFrame, workload: str) -> float | None:
    """Best objective of *workload*'s own sweep over its default configuration's (the first planned)."""
    rows = table[(table["workload"] == workload) & (table["status"] == "done")]
    default = rows[rows["ordinal"] == 0]["objective"]
    if rows.empty or default.empty or not default.mean():
        return None
    return float(rows["objective"].max() / default.mean() - 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="autonuma,tpp,colloid,upm")
    ap.add_argument("--workloads", default=None, help="comma-separated (default: every built-in workload)")
    ap.add_argument("--budget", type=int, default=16, help="Sobol configurations per workload in the sweep")
    ap.add_argument("--trial-duration", type=float, default=180.0, help="simulated seconds per sweep trial")
    ap.add_argument("--duration", type=float, default=1800.0, help="simulated seconds of each tuning run")
    ap.add_argument("--screen", action="store_true",
                    help="also a one-knob-at-a-time study of every workload in the suite sweep")
    ap.add_argument("--agent", default="shipped",
                    help="shipped (the backend's shipped agent, if any), none (coordinate search) or an agent file")
    ap.add_argument("--db-dir", type=Path, default=None, help="keep (and reuse) the suite databases here")
    args = ap.parse_args()
    if args.agent not in ("shipped", "none") and not Path(args.agent).is_file():
        ap.error(f"--agent {args.agent}: no such agent file (or use shipped / none)")
    workloads = args.workloads.split(",") if args.workloads else builtin_names("workloads")
    db_dir = args.db_dir or Path(tempfile.mkdtemp(prefix="ptmt-loo-"))
    db_dir.mkdir(parents=True, exist_ok=True)
    print(f"{'backend':<10}{'workload':<21}{'sweep headroom':>15}{'tuned vs default':>18}{'changes':>9}"
          f"{'reverts':>9}  agent")
    t_all = time.perf_counter()
    for backend in args.backends.split(","):
        name = f"{backend}-{args.budget}{'s' if args.screen else ''}-{int(args.trial_duration)}.db"
        url = f"sqlite:///{db_dir / name}"
        t0 = time.perf_counter()
        build_suite_database(backend, url, budget=args.budget, duration=args.trial_duration, screen=args.screen)
        table = suite_table(url, backend)
        sweep_s = time.perf_counter() - t0
        path = shipped_agent_path(backend) if args.agent == "shipped" else Path(args.agent)
        agent = load_agent(path) if args.agent != "none" and path.is_file() else None
        for w in workloads:
            report = tune_sim(backend, SimSetup(workload=w), duration=args.duration, interval=10,
                              query_model=leave_one_out(table, backend, w), agent=agent)
            head = sweep_headroom(table, w)
            print(f"{backend:<10}{w:<21}{'-' if head is None else f'{head:+.1%}':>15}{report.improvement:>+18.1%}"
                  f"{report.result.changes:>9}{report.result.reverts:>9}  {path.name if agent else 'none'}",
                  flush=True)
        print(f"{backend}: suite sweep {sweep_s:.0f} s ({len(table)} trials)")
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
