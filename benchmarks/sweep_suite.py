"""Full sweep benchmark: 256 configurations x the built-in workload suite on the simulated machine.

    python benchmarks/sweep_suite.py [--backend tpp] [--configs 256] [--workers 2] [--duration 10] [--interval 5]
                                     [--db sqlite:///sweep.db] [--workloads gups,stream]

Every workload's study is planned first; then K worker processes claim trials study after study (the same
claim path as ``ptmt profile --workers``), so both cores stay busy across workload boundaries. Prints the
wall time, trials per second and the best gain per workload. Target: <= 2 minutes with two cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ptmt.db import open_storage
from ptmt.offline.profile import summarise
from ptmt.offline.suite_db import build_suite_database, plan_suite
from ptmt.sim.specs import builtin_names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="tpp")
    ap.add_argument("--configs", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10.0, help="simulated seconds per trial")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--workloads", default=None, help="comma-separated (default: every built-in workload)")
    args = ap.parse_args()
    workloads = args.workloads.split(",") if args.workloads else builtin_names("workloads")
    tmp = tempfile.mkdtemp(prefix="ptmt-sweep-")
    url = args.db or f"sqlite:///{Path(tmp) / 'sweep.db'}"

    t0 = time.perf_counter()
    preps = plan_suite(args.backend, url, workloads, budget=args.configs, duration=args.duration,
                       interval=args.interval)
    t_plan = time.perf_counter() - t0
    build_suite_database(args.backend, url, workloads, budget=args.configs, duration=args.duration,
                         interval=args.interval, workers=args.workers)  # reuses the planned studies
    wall = time.perf_counter() - t0
    with open_storage(url) as db:
        rows = [(w, summarise(db, p)) for w, p in zip(workloads, preps, strict=True)]
    trials = sum(s.counts["done"] + s.counts["failed"] for _, s in rows)
    print(f"backend {args.backend}: {len(workloads)} workloads x {args.configs} configurations, "
          f"{args.duration:g} simulated s per trial, {args.workers} worker processes")
    print(f"{'workload':<20}{'done':>6}{'failed':>8}{'default':>12}{'best':>12}{'gain':>8}")
    for w, s in rows:
        gain = f"{s.gain:+.1%}" if s.gain is not None else "-"
        print(f"{w:<20}{s.counts['done']:>6}{s.counts['failed']:>8}{s.default or 0:>12.4g}{s.best or 0:>12.4g}{gain:>8}")
    print(f"planning {t_plan:.1f} s; total {wall:.1f} s for {trials} trials "
          f"({trials / wall:.1f} trials/s; target: <= 120 s)")


if __name__ == "__main__":
    main()
