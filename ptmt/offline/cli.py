"""``ptmt profile``: options in, the study runner called, a summary out."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ptmt.cli_common import (
    BackendOpt,
    CatalogDirOpt,
    PlatformOpt,
    RootOpt,
    StateOpt,
    VerboseOpt,
    catalog_dirs,
    err,
    out,
    reports_errors,
)
from ptmt.offline.profile import ProfileOptions, StopFlag, StudyInterrupted, StudySummary, _fmt, run_profile
from ptmt.sim.options import FastGbOpt, FootprintOpt, MachineOpt, SlowGbOpt, workload_arg

WorkloadOpt = Annotated[str, typer.Option(
    "--workload", "-w", help="Simulated machine: a built-in workload name or spec file. Real host: a workload YAML "
                             "(command, objective, ...; see docs/profiling.md).")]
StrategyOpt = Annotated[str, typer.Option("--strategy", help="How configurations are chosen: grid, random, sobol, lhs, oat (one knob at a time), tpe (a Sobol start, then rounds fitted on what was measured) or shared (the best configurations the database's other workloads found).")]
BudgetOpt = Annotated[int | None, typer.Option("--budget", min=1, help="Configurations to measure, the defaults included (default 32; grid: the finest grid that fits; oat: every point).")]
RepeatOpt = Annotated[int, typer.Option("--repeat", min=1, help="Measurements of each configuration.")]
DurationOpt = Annotated[float | None, typer.Option("--duration", help="Seconds per trial (simulated time; default 10). Real host: stop the command after this long (default: let it finish).")]
IntervalOpt = Annotated[float | None, typer.Option("--interval", help="Seconds between telemetry samples; in --in-run mode, per configuration. Default 1 (sim), 5 (real host).")]
DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the performance database (default: $PTMT_DB or a SQLite file in the user's data directory).")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Trials run at once, in separate processes (simulated machine only).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of the sampler and of the simulated machine (trial repetition r uses seed + r).")]
InRunOpt = Annotated[bool, typer.Option("--in-run", help="One long run of the workload with a new configuration every interval (the original PTMT's profiling).")]
WorkerOpt = Annotated[bool, typer.Option("--worker", help="Join an existing study in a shared database (fleet): claim its pending trials, take over those of dead workers.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")]


@reports_errors
def profile(
    backend: BackendOpt,
    workload: WorkloadOpt,
    platform: PlatformOpt = None,
    strategy: StrategyOpt = "sobol",
    budget: BudgetOpt = None,
    repeat: RepeatOpt = 1,
    duration: DurationOpt = None,
    interval: IntervalOpt = None,
    db: DbOpt = None,
    workers: WorkersOpt = 1,
    seed: SeedOpt = 0,
    in_run: InRunOpt = False,
    worker: WorkerOpt = False,
    machine: MachineOpt = None,
    fast_gb: FastGbOpt = None,
    slow_gb: SlowGbOpt = None,
    footprint_gb: FootprintOpt = None,
    root: RootOpt = None,
    state_dir: StateOpt = None,
    catalog_dir: CatalogDirOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Sweep a backend's knob space under a workload into the performance database (resumable)."""
    opts = ProfileOptions(
        backend=backend, workload=workload_arg(workload), platform=platform, strategy=strategy, budget=budget,
        repeat=repeat, duration=duration, interval=interval, db=db, workers=workers, seed=seed, in_run=in_run,
        worker=worker, root=root, state_dir=state_dir,
        sim={"machine": machine, "fast_gb": fast_gb, "slow_gb": slow_gb, "footprint_gb": footprint_gb},
        catalog_dirs=tuple(catalog_dirs(catalog_dir)), show_progress=progress and not json_out)
    stop = StopFlag()
    try:
        with stop.installed():
            summary = run_profile(opts, stop, err)
    except StudyInterrupted as e:
        _print(e.summary, json_out)
        err.print(f"ptmt: {e}", markup=False)
        raise typer.Exit(128 + e.signum) from None
    _print(summary, json_out)


def _print(s: StudySummary, as_json: bool) -> None:
    if as_json:
        out.print(json.dumps({"study": s.study_id, "db": s.db, "trials": s.counts, "ran": s.ran,
                              "unit": s.unit, "direction": s.direction, "best": s.best,
                              "best_knobs": s.best_knobs, "default": s.default, "gain": s.gain,
                              "knobs": s.knobs, "skipped_knobs": s.skipped_knobs}, indent=1, default=str))
        return
    counts = ", ".join(f"{n} {k}" for k, n in s.counts.items() if n)
    out.print(f"study {s.study_id} in {s.db}: {counts or 'no trials'} ({s.ran} run now)", markup=False)
    for name, why in s.skipped_knobs.items():
        out.print(f"  knob {name} not swept: {why}", markup=False)
    if s.best is None:
        return
    table = Table(title=None, box=None, pad_edge=False)
    table.add_column("knob")
    table.add_column("best", justify="right")
    for name, value in (s.best_knobs or {}).items():
        table.add_row(name, str(value))
    out.print(table)
    line = f"best {_fmt(s.best)} {s.unit}"
    if s.default is not None:
        line += f", defaults {_fmt(s.default)} {s.unit}"
    if s.gain is not None:
        line += f" ({s.gain:+.1%})"
    out.print(line, markup=False)
