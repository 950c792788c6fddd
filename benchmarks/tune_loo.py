"""Online tuning with leave-one-workload-out advice, every backend x every built-in workload.

    python benchmarks/tune_loo.py [--backends autonuma,tpp] [--workloads gups,btree] [--strategy tpe|sobol]
                                  [--budget 48] [--trial-duration 180] [--sweep-seed 0] [--duration 1800]
                                  [--screen] [--seed 0]
                                  [--agent shipped|none|FILE] [--db-dir DIR] [--clear 0.02]
                                  [--guard KEY=VALUE ...]

For each backend: sweep the suite once (``ptmt.offline.suite_db``; reused when --db-dir already
holds it for the same simulator: the file name carries its digest), then for each workload W fit the query model without W's trials and tune W for
--duration simulated seconds against the same-seed defaults. Two columns say whether there was
anything to find, both from W's own sweep, which the advising model never saw: "sweep" is its best
trial's gain (a --trial-duration run from a cold start), "held" is that best configuration set
from the start and held for the whole --duration run, against the same defaults. A sweep gain
that exists only while the tiers first fill shows in the first column and not in the second.
Prints one row per (backend, workload), then per backend: the pairs whose held gain exceeds
--clear and how many of them the tuner got at least half of, and the worst tuned result.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from ptmt.offline.suite_db import SHARE, cached_suite_database, leave_one_out, suite_table
from ptmt.online.agent import load_agent, shipped_agent_path
from ptmt.catalog import Value
from ptmt.evaluation.suite import sweep_best_configs
from ptmt.cli_common import parse_sets
from ptmt.errors import PtmtError
from ptmt.online.guard import GuardSettings
from ptmt.online.simrun import SimSetup, run_static, tune_sim
from ptmt.online.tuner import TuneSettings
from ptmt.sim.specs import builtin_names


def sweep_headroom(table: pd.DataFrame, workload: str) -> float | None:
    """Best objective of *workload*'s own sweep over its default configuration's (the first planned)."""
    rows = table[(table["workload"] == workload) & (table["status"] == "done")]
    default = rows[rows["ordinal"] == 0]["objective"]
    if rows.empty or default.empty or not default.mean():
        return None
    return float(rows["objective"].max() / default.mean() - 1.0)


def held_headroom(backend: str, setup: SimSetup, config: dict[str, Value], duration: float,
                  default_objective: float) -> float:
    """*config* from the start for the whole run, relative to the defaults' mean."""
    series = run_static(backend, setup, duration, 10, settings=config)
    return sum(series) / len(series) / default_objective - 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="autonuma,tpp,colloid,upm")
    ap.add_argument("--workloads", default=None, help="comma-separated (default: every built-in workload)")
    ap.add_argument("--budget", type=int, default=48, help="configurations per workload in the sweep")
    ap.add_argument("--trial-duration", type=float, default=180.0, help="simulated seconds per sweep trial")
    ap.add_argument("--sweep-seed", type=int, default=0,
                    help="seed of the suite sweep (its sampler and its runs): another seed builds another database")
    ap.add_argument("--duration", type=float, default=1800.0, help="simulated seconds of each tuning run")
    ap.add_argument("--strategy", default="tpe", choices=("sobol", "tpe"),
                    help="how the suite sweep picks each workload's configurations (tpe: a Sobol start, "
                         "then rounds that gather where the workload gains)")
    ap.add_argument("--share", type=int, default=SHARE,
                    help="then a shared study per workload of this many configurations: the other workloads' best "
                         "ones (ptmt profile --strategy shared; 0 = none)")
    ap.add_argument("--screen", action="store_true",
                    help="also a one-knob-at-a-time study of every workload in the suite sweep")
    ap.add_argument("--agent", default="shipped",
                    help="shipped (the backend's shipped agent, if any), none (coordinate search) or an agent file")
    ap.add_argument("--db-dir", type=Path, default=None, help="keep (and reuse) the suite databases here")
    ap.add_argument("--seed", type=int, default=0, help="the simulated machine's seed (tuned, default and held runs)")
    ap.add_argument("--guard", action="append", default=[], metavar="KEY=VALUE",
                    help="a guard setting for the tuning runs (repeatable; docs/tuning.md lists them)")
    ap.add_argument("--clear", type=float, default=0.02, help="a held gain above this is headroom (fraction)")
    args = ap.parse_args()
    if args.agent not in ("shipped", "none") and not Path(args.agent).is_file():
        ap.error(f"--agent {args.agent}: no such agent file (or use shipped / none)")
    try:  # values read as in the service's YAML file: true, 2, 0.05
        sets = parse_sets(args.guard, option="--guard", key="KEY")
        guard = GuardSettings.from_mapping({k: yaml.safe_load(v) for k, v in sets.items()})
    except PtmtError as exc:
        ap.error(str(exc))
    workloads = args.workloads.split(",") if args.workloads else builtin_names("workloads")
    db_dir = args.db_dir or Path(tempfile.mkdtemp(prefix="ptmt-loo-"))
    db_dir.mkdir(parents=True, exist_ok=True)
    print(f"{'backend':<10}{'workload':<21}{'sweep':>8}{'held':>8}{'tuned vs default':>18}{'changes':>9}"
          f"{'reverts':>9}  agent")
    t_all = time.perf_counter()
    for backend in args.backends.split(","):
        t0 = time.perf_counter()
        url = cached_suite_database(db_dir, backend, budget=args.budget, duration=args.trial_duration,
                                    screen=args.screen, strategy=args.strategy, share=args.share, seed=args.sweep_seed)
        table = suite_table(url, backend)
        sweep_s = time.perf_counter() - t0
        path = shipped_agent_path(backend) if args.agent == "shipped" else Path(args.agent)
        agent = load_agent(path) if args.agent != "none" and path.is_file() else None
        rows = []
        for w in workloads:
            setup = SimSetup(workload=w, seed=args.seed)
            report = tune_sim(backend, setup, duration=args.duration, interval=10,
                              query_model=leave_one_out(table, backend, w), agent=agent,
                              settings=TuneSettings(guard=copy.deepcopy(guard)))
            head, best = sweep_headroom(table, w), sweep_best_configs(table[table["workload"] == w])
            held = held_headroom(backend, setup, best[0], args.duration, report.default_objective) if best else None
            rows.append((held, report.improvement))
            print(f"{backend:<10}{w:<21}{'-' if head is None else f'{head:+.1%}':>8}"
                  f"{'-' if held is None else f'{held:+.1%}':>8}{report.improvement:>+18.1%}"
                  f"{report.result.changes:>9}{report.result.reverts:>9}  {path.name if agent else 'none'}",
                  flush=True)
        room = [(h, t) for h, t in rows if h is not None and h > args.clear]
        got = sum(1 for h, t in room if t >= h / 2)
        print(f"{backend}: mean tuned {sum(t for _, t in rows) / len(rows):+.2%}; held gain above "
              f"{args.clear:.0%} on {len(room)} workload(s), tuned at least half of it on {got}; worst tuned "
              f"{min(t for _, t in rows):+.1%}; suite sweep {sweep_s:.0f} s ({len(table)} trials)")
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
