"""Evaluation suite: PTMT vs baselines and the static oracle, every backend x workload, same budget.

    python benchmarks/evaluate.py [--backends autonuma,upm] [--workloads gups,btree] [--methods ...]
        [--seeds 0,1] [--duration 1800] [--interval 10] [--oracle-knobs 3] [--workers 2]
        [--strategy tpe|sobol] [--budget 48] [--trial-duration 180] [--sweep-seed 0]
        [--cache-dir DIR] [--markdown docs/results.md] [--json results.json[.gz]] [--oracle-from earlier.json,...]
    python benchmarks/evaluate.py --from-json eval-tpp.json,eval-upm.json [--markdown FILE]

Per backend the suite is swept once (``ptmt.offline.suite_db``, cached in --cache-dir; by default 48
configurations per workload planned by ``--strategy tpe``, which docs/results-history.md measured better for the
tuner than Sobol points of the same number); PTMT's query
model for workload W is fitted without W's trials (leave-one-workload-out). Every method runs on
the same seed for the same simulated time and is compared with that seed's default run. See
``ptmt.evaluation.suite`` for the oracle grid and the metrics, docs/results.md for a measured table.
The output ends with the per-backend averages and the targets judged on them
(``ptmt.evaluation.summary``); ``--from-json`` renders them again from earlier runs' JSON files
(one per backend run side by side, or other seeds), without running anything.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptmt.evaluation import suite as ev
from ptmt.evaluation.summary import (EvaluationFileError, MergeError, aggregate, read_runs, render_files,
                                     summary_markdown, table_markdown, write_evaluation)
from ptmt.offline.shared import SHARED
from ptmt.offline.suite_db import SHARE, cached_suite_database, leave_one_out, suite_table
from ptmt.online.agent import load_agent, shipped_agent_path
from ptmt.online.guard import GuardSettings
from ptmt.online.simrun import SimSetup, run_static
from ptmt.sim.specs import builtin_names

_CTX: dict[str, Any] = {}


def _job(job: tuple[str, str, int]) -> dict[str, Any]:
    backend, workload, seed = job
    a = _CTX["args"]
    table = _CTX["tables"][backend]
    grid = _CTX["grids"][backend] if _CTX["prior"] is None else _CTX["prior"][job]
    setup = SimSetup(workload=workload, seed=seed)
    default = run_static(backend, setup, a.duration, a.interval)
    out: dict[str, Any] = {"backend": backend, "workload": workload, "seed": seed, "sweep_seed": a.sweep_seed,
                           "methods": {}}
    series: dict[str, list[float]] = {"default": default}
    path = shipped_agent_path(backend)
    agent = load_agent(path) if path.is_file() else None
    out["agent"] = "shipped" if agent else "coordinate search"
    qm = leave_one_out(table, backend, workload)
    finals: dict[str, dict[str, Any]] = {}
    claimed: dict[str, float | None] = {}
    for m in a.methods:
        if m == "default" or m in ev.ORACLES:
            continue
        series[m], finals[m], claimed[m] = ev.run_method(m, backend, setup, duration=a.duration,
                                                         interval=a.interval, query_model=qm, agent=agent)
    out["final_configs"] = finals
    if set(ev.ORACLES) & set(a.methods):
        runs = ev.sweep_oracle(backend, setup, grid, duration=a.duration, interval=a.interval,
                               cache=a.cache_dir)
        beyond = ev.finals_beyond(grid, finals)
        if beyond:  # the methods' own endings, run statically from the start as well (cached apart)
            ran = ev.sweep_oracle(backend, setup, list(beyond.values()), duration=a.duration,
                                  interval=a.interval, cache=a.cache_dir)
            runs = [*runs, *({**r, "from": m} for m, r in zip(beyond, ran, strict=True))]
        best = ev.best_static(runs)
        if "oracle" in a.methods:
            series["oracle"] = best["series"]
        out["oracle_config"] = best["config"]
        out["oracle_from"] = best.get("from", "grid")
        out["oracle_grid_size"] = len(runs)
        segs = ev.phase_segments(workload, len(default), a.interval)
        if len(segs) > 1 and "phase_oracle" in a.methods:
            series["phase_oracle"] = ev.per_phase_oracle(runs, segs)
        out["static_best_of_grid"] = max(ev.improvement(r["series"], default) for r in runs)
        if "late_oracle" in a.methods:
            late = ev.best_static(ev.late_oracle(backend, setup, runs, start_interval=GuardSettings().warmup_intervals,
                                                 duration=a.duration, interval=a.interval, cache=a.cache_dir))
            series["late_oracle"] = late["series"]
            out["late_oracle_config"] = late["config"]
            out["late_noise_threshold"] = ev.noise_threshold(default, late["series"])
    for m, s in series.items():
        out["methods"][m] = {"improvement": ev.improvement(s, default), "mean": float(np.mean(s)),
                             "intervals_to_90": ev.intervals_to_90(s, default),
                             "series": [float(v) for v in s]}  # per interval: where a method gains or pays
        if claimed.get(m) is not None:
            out["methods"][m]["kept_gain"] = claimed[m]  # what its own verdicts claimed
    out["default_mean"] = float(np.mean(default))
    if "oracle" in series:
        out["noise_threshold"] = ev.noise_threshold(default, series["oracle"])
    return out


def render_saved(paths: list[Path], out: Path | None, replace: Sequence[str] = ()) -> None:
    """The table, averages and targets of earlier runs' JSON files, aggregated together (files of
    other seeds add seeds: the means are over every seed, the headroom fractions over the seeds
    that ran the oracle; files of the same runs add methods, and replace those named in
    *replace*: ``ptmt.evaluation.summary.merge_runs``)."""
    try:
        table = render_files(paths, replace)
    except (EvaluationFileError, MergeError) as exc:
        sys.exit(str(exc))
    print(table)
    if out:
        out.write_text(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="autonuma,tpp,colloid,upm")
    ap.add_argument("--workloads", default=None)
    ap.add_argument("--methods", default=",".join(ev.METHODS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--duration", type=float, default=1800.0)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--budget", type=int, default=48, help="configurations per workload, suite sweep")
    ap.add_argument("--trial-duration", type=float, default=180.0)
    ap.add_argument("--sweep-seed", type=int, default=0,
                    help="seed of the suite sweep behind PTMT's database (its sampler and its runs); another seed "
                         "builds another database, to tell a change's effect from the sweep's luck")
    ap.add_argument("--strategy", default="tpe", choices=("sobol", "tpe"),
                    help="how the suite sweep picks each workload's configurations (tpe: a Sobol start, "
                         "then rounds that gather where the workload gains)")
    ap.add_argument("--share", type=int, default=SHARE,
                    help="then a shared study per workload of this many configurations: the other workloads' best "
                         "ones (ptmt profile --strategy shared; 0 = none)")
    ap.add_argument("--screen", action="store_true",
                    help="also a one-knob-at-a-time study of every workload in the suite sweep")
    ap.add_argument("--oracle-knobs", type=int, default=3, help="full factorial over this many top knobs")
    ap.add_argument("--oracle-from", default=None,
                    help="earlier runs' --json files (comma-separated): the oracle sweeps the configurations "
                         "they found best (their oracles' and every method's ending) instead of the grid; "
                         "for another --duration")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cache-dir", type=Path, default=Path(".ptmt-eval-cache"))
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--from-json", default=None,
                    help="comma-separated JSON files of earlier runs: render their rows together, run nothing")
    ap.add_argument("--replace", default="",
                    help="with --from-json: methods a later file may re-measure for runs an earlier file "
                         "holds (comma-separated)")
    a = ap.parse_args()
    a.methods = a.methods.split(",")
    if a.from_json:
        render_saved([Path(p) for p in a.from_json.split(",")], a.markdown,
                     [m for m in a.replace.split(",") if m])
        return
    bad = set(a.methods) - set(ev.METHODS)
    if bad:
        sys.exit(f"unknown methods: {', '.join(sorted(bad))} (have {', '.join(ev.METHODS)})")
    a.cache_dir.mkdir(parents=True, exist_ok=True)
    workloads = a.workloads.split(",") if a.workloads else builtin_names("workloads")
    backends = a.backends.split(",")
    t0 = time.perf_counter()
    tables, grids = {}, {}
    jobs = [(b, w, int(s)) for b in backends for w in workloads for s in a.seeds.split(",")]
    prior = None
    if a.oracle_from:
        earlier: list[Any] = []
        for p in a.oracle_from.split(","):
            try:
                earlier += read_runs(Path(p))
            except EvaluationFileError as exc:
                sys.exit(str(exc))
        prior = ev.prior_candidates(earlier)
        missing = [j for j in jobs if j not in prior]
        if missing:
            sys.exit(f"{a.oracle_from}: hold no oracle for " + ", ".join(f"{b} {w} seed {s}" for b, w, s in missing[:5])
                     + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                     + " (run those with the grid, or leave out --oracle-from)")
    for b in backends:
        url = cached_suite_database(a.cache_dir, b, budget=a.budget, duration=a.trial_duration, screen=a.screen,
                                    strategy=a.strategy, share=a.share, seed=a.sweep_seed, workers=max(1, a.workers))
        tables[b] = suite_table(url, b)
        if prior is None:
            # from the workloads' own sweeps: the shared studies measure no new configuration, and the
            # grid (and its cached runs) stays the same with or without them
            own = tables[b][tables[b]["strategy"] != SHARED]
            grids[b] = ev.oracle_grid(b, ev.ranked_knobs(own, b), a.oracle_knobs, ev.sweep_best_configs(own))
        oracle = (f"oracle grid {len(grids[b])} configurations" if prior is None else
                  f"oracle from {a.oracle_from}: {sum(len(prior[j]) for j in jobs if j[0] == b)} configurations")
        print(f"{b}: suite {len(tables[b])} trials, {oracle}", flush=True)
    _CTX.update(args=a, tables=tables, grids=grids, prior=prior)
    if a.workers > 1:
        with mp.get_context("fork").Pool(a.workers) as pool:
            results = list(pool.imap_unordered(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    rows = aggregate(results, a.methods)
    wall = time.perf_counter() - t0
    table = table_markdown(rows, a.methods) + "\n" + summary_markdown(rows, a.methods)
    print(table)
    print(f"wall time {wall:.0f} s")
    if a.json:
        write_evaluation(a.json, {"args": {k: str(v) for k, v in vars(a).items()}, "wall_s": wall,
                                  "rows": rows, "runs": results})
    if a.markdown:
        a.markdown.write_text(table + f"\nwall time {wall:.0f} s\n")


if __name__ == "__main__":
    main()
