"""The study runner behind ``ptmt profile``: plan a sweep into the database, then claim and run its trials.

A study is identified by everything that shapes its results (backend and catalog version, workload,
machine, strategy, budget, seed, repetitions, duration, interval, mode), so rerunning the same command
finds the same study and continues it: finished trials are never repeated, interrupted ones and those of
a process that died run again. Trials are always *claimed* from the database, one at a time, whether by
one process, by ``--workers K`` local processes (simulated machine) or by ``--worker`` processes on many
machines sharing PostgreSQL (row locks with SKIP LOCKED), so the three modes are one code path.
An adaptive study (``--strategy tpe``) grows in rounds: whichever process finds nothing left to claim
and nothing running plans the next round from the measured trials, the same round in any process.

Stopping is cooperative: SIGINT/SIGTERM set a flag that sessions check between intervals, which keeps
every database write whole; the running trial is marked interrupted and its knobs restored.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ptmt.backends.registry import open_backend
from ptmt.catalog import Catalog, load_catalog
from ptmt.db import open_storage
from ptmt.db.errors import StudyPlanMismatch
from ptmt.db.storage import Storage, worker_id
from ptmt.errors import PtmtError
from ptmt.host import Host, default_state_dir, pid_alive
from ptmt.journal import Journal
from ptmt.offline.sampling import ADAPTIVE, STRATEGIES, TPE_ROUND, Sampler, plan_configurations
from ptmt.offline.shared import SHARED, shared_configurations
from ptmt.offline.trial import (
    Hooks,
    HostInRunSession,
    HostTrialSession,
    Interrupted,
    Outcome,
    Session,
    SimInRunSession,
    SimTrialSession,
)
from ptmt.offline.workloads import HostWorkload, load_host_workload
from ptmt.platforms import open_host, resolve_platform
from ptmt.sysinfo import host_identity

log = logging.getLogger(__name__)

#: Seconds without a heartbeat after which a fleet worker's running trial is given to another.
STALE_AFTER_S = float(os.environ.get("PTMT_STALE_AFTER_S", "120"))
DEFAULT_BUDGET = 32


@dataclass
class ProfileOptions:
    """What ``ptmt profile`` was asked to do (the CLI's options, typed)."""

    backend: str
    workload: str
    platform: str | None = None
    strategy: str = "sobol"
    budget: int | None = None
    repeat: int = 1
    duration: float | None = None
    interval: float | None = None
    db: str | None = None
    workers: int = 1
    seed: int = 0
    in_run: bool = False
    worker: bool = False
    root: Path | None = None
    state_dir: Path | None = None
    sim: dict[str, Any] = field(default_factory=dict)  # machine, fast_gb, slow_gb, footprint_gb
    catalog_dirs: tuple[str, ...] = ()
    stale_after_s: float = STALE_AFTER_S
    show_progress: bool = True


@dataclass
class StudySummary:
    study_id: int
    db: str
    counts: dict[str, int]
    unit: str
    direction: str
    best: float | None = None
    best_knobs: dict[str, Any] | None = None
    default: float | None = None
    ran: int = 0
    knobs: list[str] = field(default_factory=list)
    skipped_knobs: dict[str, str] = field(default_factory=dict)

    @property
    def gain(self) -> float | None:
        """Relative improvement of the best configuration over the defaults (positive is better)."""
        if self.best is None or not self.default:
            return None
        g = (self.best - self.default) / abs(self.default)
        return g if self.direction == "max" else -g


# ---- stopping ----------------------------------------------------------------------------------------


class StopFlag:
    """Set by SIGINT/SIGTERM; a second signal raises KeyboardInterrupt at once (escape hatch)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


class StudyInterrupted(PtmtError):
    """The study stopped on a signal; the database and the knobs are consistent."""

    def __init__(self, signum: int, summary: StudySummary) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}: knobs restored, study "
                         f"{summary.study_id} left resumable (rerun the same command to continue)")
        self.signum = signum
        self.summary = summary


# ---- setting the study up ------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything a process needs to run trials of one study (picklable for worker processes)."""

    opts: ProfileOptions
    platform: str
    study_id: int
    host_row: int
    unit: str
    direction: str
    knobs: list[str]
    skipped: dict[str, str]
    duration: float | None
    interval: float
    #: trials an adaptive study (``--strategy tpe``) grows to, round by round; 0: planned at once
    adaptive_total: int = 0


def probe_knobs(catalog: Catalog, host: Host, catalog_dirs: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Tunables this host has; the others with the reason (a kernel without the TPP patch...)."""
    backend = open_backend(catalog.name, host, catalog_dirs)
    present, skipped = [], {}
    for name, knob in catalog.knobs.items():
        if knob.field is not None:  # daemon knobs need the workload's pid: assume present
            present.append(name)
            continue
        state = backend.probe_knob(knob)
        if state.present and state.writable:
            present.append(name)
        else:
            skipped[name] = state.problem or "not writable (needs root)"
    return present, skipped


def _sim_identity(opts: ProfileOptions, workdir: Path) -> tuple[Host, dict[str, Any], dict[str, Any]]:
    from ptmt.sim.host import SimHost
    from ptmt.sim.knobs import kernel_for_backend

    host = SimHost(workdir, workload=opts.workload, seed=opts.seed, kernel=kernel_for_backend(opts.backend),
                   persist=False, **{k: v for k, v in opts.sim.items() if v is not None})
    return host, host_identity(host), host.workload.as_dict()


def prepare(opts: ProfileOptions, db: Storage) -> Prepared:
    """Register host, backend and workload, find or create the study, plan its trials."""
    import tempfile

    platform = resolve_platform(opts.platform, opts.root)
    if opts.strategy not in (*STRATEGIES, SHARED):
        raise PtmtError(f"--strategy must be one of {', '.join((*STRATEGIES, SHARED))} (got {opts.strategy!r})")
    if opts.repeat < 1:
        raise PtmtError(f"--repeat must be at least 1 (got {opts.repeat})")
    if opts.workers < 1:
        raise PtmtError(f"--workers must be at least 1 (got {opts.workers})")
    if opts.workers > 1 and platform != "sim":
        raise PtmtError("--workers runs several trials at once, which only the simulated machine can: "
                        "on real hosts start one `ptmt profile --worker` per machine instead")
    catalog = load_catalog(opts.backend, opts.catalog_dirs)
    interval = opts.interval or (1.0 if platform == "sim" else 5.0)
    if interval <= 0:
        raise PtmtError(f"--interval must be positive (got {interval})")
    duration = opts.duration if opts.duration is not None else (10.0 if platform == "sim" else None)
    if duration is not None and duration <= 0:
        raise PtmtError(f"--duration must be positive (got {duration})")
    # a one-knob-at-a-time screen is complete by default (at most a few dozen points)
    budget = opts.budget if opts.budget is not None else (None if opts.strategy == "oat" else DEFAULT_BUDGET)

    if platform == "sim":
        with tempfile.TemporaryDirectory(prefix="ptmt-probe-") as tmp:
            host, ident, spec = _sim_identity(opts, Path(tmp))
            knobs, skipped = probe_knobs(catalog, host, opts.catalog_dirs)
        workload_row = db.register_workload(spec.get("name", opts.workload), spec, kind="sim")
        unit, direction = SimTrialSession.unit, SimTrialSession.direction
        settings: dict[str, Any] = {"platform": "sim", "interval": interval, "in_run": opts.in_run,
                                    "knobs": knobs}
        if not opts.in_run:
            settings["duration"] = duration
        host_row = db.register_host(**ident)
        study_host: Any = host_row
    else:
        wl = load_host_workload(opts.workload)
        host = open_host("linux", opts.root)
        knobs, skipped = probe_knobs(catalog, host, opts.catalog_dirs)
        workload_row = db.register_workload(wl.name, wl.data, kind="command", command=wl.command_line)
        unit, direction = wl.objective.unit, wl.objective.direction
        settings = {"platform": "linux", "interval": interval, "in_run": opts.in_run, "knobs": knobs,
                    "duration": duration}
        host_row = db.register_host(**host_identity(host))
        study_host = None  # a fleet of like machines shares one study; each trial records its host
    if not knobs:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise PtmtError(f"backend {catalog.name}: no tunable knob is usable here ({reasons})")
    backend_row = db.register_backend(catalog.name, catalog.hash, catalog.data)
    study_args = dict(strategy=opts.strategy, budget=int(budget or 0), seed=opts.seed,
                      repetitions=opts.repeat, settings=settings, objective_direction=direction)
    if opts.worker:
        study, created = db.study(backend_row, workload_row, study_host, **study_args)  # type: ignore[arg-type]
        if created or not db.trials(study):
            db.delete_study(study)
            raise PtmtError("no such study to join: start it with the same `ptmt profile` command without "
                            "--worker (same backend, workload, strategy, budget, seed, repeat, duration, "
                            "interval, --db), then start workers")
    else:
        if opts.strategy == SHARED:  # before the study is recorded: nothing is written when it cannot be planned
            configs = shared_configurations(db, catalog, workload_row.name, int(budget or 0), knobs)
        else:
            configs = plan_configurations(catalog, opts.strategy, budget, opts.seed, knobs)
        study, _ = db.study(backend_row, workload_row, study_host, **study_args)  # type: ignore[arg-type]
        if opts.strategy != SHARED or not db.trials(study):  # a shared plan is made once; resuming keeps it
            db.plan_trials(study, [(c, rep) for rep in range(opts.repeat) for c in configs])
    adaptive_total = int(budget or 0) * opts.repeat if opts.strategy in ADAPTIVE else 0
    return Prepared(opts, platform, study.id, host_row.id, unit or "", direction, knobs, skipped,
                    duration, interval, adaptive_total)


# ---- running trials ----------------------------------------------------------------------------------


def _session(p: Prepared, hooks: Hooks) -> Session:
    o = p.opts
    if p.platform == "sim":
        if o.in_run:
            return SimInRunSession(o.backend, o.workload, interval=p.interval, seed=o.seed, sim_options=o.sim,
                                   catalog_dirs=o.catalog_dirs, hooks=hooks)
        return SimTrialSession(o.backend, o.workload, duration=p.duration or 10.0, interval=p.interval,
                               seed=o.seed, sim_options=o.sim, catalog_dirs=o.catalog_dirs, hooks=hooks)
    host = open_host("linux", o.root)
    state = o.state_dir or default_state_dir("linux")
    journal = Journal(state)
    pending = journal.entries()
    if pending:
        raise PtmtError(f"the journal in {state} holds {len(pending)} knob change(s) of an earlier ptmt command: "
                        "run `ptmt restore` first, so that profiling restores the machine's own values")
    backend = open_backend(o.backend, host, o.catalog_dirs)
    wl: HostWorkload = load_host_workload(o.workload)
    cls = HostInRunSession if o.in_run else HostTrialSession
    return cls(host, backend, journal, wl, interval=p.interval, duration=p.duration, hooks=hooks)


class Heartbeat:
    """Tells the database this worker is alive, at most every quarter of the staleness limit."""

    def __init__(self, db: Storage, every_s: float) -> None:
        self.db, self.every_s = db, every_s
        self.trial: int | None = None
        self._last = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if self.trial is not None and now - self._last >= self.every_s:
            self.db.heartbeat(self.trial)
            self._last = now


def recover(db: Storage, study_id: int) -> int:
    """Make the study's unfinished trials runnable again: interrupted ones, and running ones whose
    worker was a process of this machine that no longer exists (a crash, SIGKILL)."""
    me = socket.gethostname()
    for t in db.trials(study_id, status="running"):
        name, _, pid = (t.worker or "").rpartition(":")
        if name == me and pid.isdigit() and not pid_alive(int(pid)):
            db.interrupt_trial(t.id, f"worker {t.worker} is gone")
    return db.requeue(study_id)


def work(p: Prepared, db: Storage, stop: StopFlag, on_trial: Callable[[Outcome], None] | None = None) -> int:
    """Claim and run trials until none is left (or a stop signal); returns how many ran."""
    me = worker_id()
    beat = Heartbeat(db, max(p.opts.stale_after_s / 4, 0.05))
    hooks = Hooks(should_stop=lambda: bool(stop), tick=beat)
    session: Session | None = None
    ran = 0
    try:
        while not stop:
            if p.opts.worker:
                db.requeue(p.study_id, statuses=(), stale_after_s=p.opts.stale_after_s)
            trial = db.claim_trial(p.study_id, worker=me, host=p.host_row)
            if trial is None:
                # a fleet worker waits to take over from others that may die; an adaptive study
                # waits for its round's last trials, whose results shape the next round
                if (p.opts.worker or p.adaptive_total) and db.progress(p.study_id)["running"]:
                    time.sleep(min(1.0, p.opts.stale_after_s / 4) if p.opts.worker else 0.05)
                    continue
                if p.adaptive_total and plan_next_round(p, db):
                    continue
                break
            beat.trial, beat._last = trial.id, time.monotonic()
            knobs = db.get_configuration(trial.configuration_id).knobs
            if session is None:
                try:
                    session = _session(p, hooks)
                except BaseException as e:  # cannot measure at all here: give the trial back
                    db.interrupt_trial(trial.id, f"not started: {e}")
                    db.requeue(p.study_id)
                    raise
            try:
                outcome = session.run(knobs, trial.repetition)
            except (Interrupted, KeyboardInterrupt):
                db.interrupt_trial(trial.id, "interrupted by signal")
                raise
            except PtmtError as e:
                outcome = Outcome(None, p.unit, [], error=str(e))
            except BaseException as e:
                db.fail_trial(trial.id, f"internal error: {type(e).__name__}: {e}")
                raise
            if outcome.samples and db.heartbeat(trial.id):
                db.add_samples(trial.id, outcome.samples)
            if outcome.error is not None:
                db.fail_trial(trial.id, outcome.error)
                log.warning("trial #%d failed: %s", trial.ordinal, outcome.error.splitlines()[0])
            elif not db.finish_trial(trial.id, objective=outcome.objective, unit=outcome.unit or p.unit):
                log.warning("trial #%d was given to another worker meanwhile (heartbeat too late)", trial.ordinal)
            beat.trial = None
            ran += 1
            if on_trial is not None:
                on_trial(outcome)
    except Interrupted:
        pass
    finally:
        if session is not None:
            session.close()
    return ran


def plan_next_round(p: Prepared, db: Storage) -> bool:
    """An adaptive study whose planned trials have all settled: plan its next round from what they
    measured (:meth:`~ptmt.offline.sampling.Sampler.suggest`). False when the study is complete or
    the space is exhausted. The round depends only on the history and the seed, so processes that
    plan it at once plan the same trials (the plan is idempotent)."""
    planned = sorted(db.trials(p.study_id), key=lambda t: t.ordinal)
    if len(planned) >= p.adaptive_total:
        return False
    configs = {t.configuration_id: dict(db.get_configuration(t.configuration_id).knobs) for t in planned}
    history = [(configs[t.configuration_id], t.objective if t.status == "done" else None) for t in planned]
    catalog = load_catalog(p.opts.backend, p.opts.catalog_dirs)
    reps = p.opts.repeat
    want = min(TPE_ROUND, (p.adaptive_total - len(planned)) // reps)
    new = Sampler(catalog, p.knobs).suggest(history, want, p.opts.seed, p.direction) if want > 0 else []
    if not new:
        return False
    plan = [(configs[t.configuration_id], t.repetition) for t in planned]
    plan += [(c, r) for r in range(reps) for c in new]  # as prepare() orders them
    try:
        db.plan_trials(p.study_id, plan)
    except StudyPlanMismatch:
        log.info("study %d: another process planned this round first", p.study_id)
    return True


def _worker_process(p: Prepared, conn: Any) -> None:
    """Entry point of a ``--workers`` child process: its own database connection and signal flag."""
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop.handler)
    signal.signal(signal.SIGINT, stop.handler)
    logging.basicConfig(level=logging.WARNING, format="ptmt: %(levelname)s: %(message)s", force=True)
    ran = 0
    try:
        with open_storage(p.opts.db, create=False) as db:
            ran = work(p, db, stop)
    finally:
        conn.send(ran)
        conn.close()


# ---- progress and summary ------------------------------------------------------------------------------


def summarise(db: Storage, p: Prepared, ran: int = 0) -> StudySummary:
    frame = db.trials_frame(p.study_id)
    counts = db.progress(p.study_id)
    s = StudySummary(p.study_id, db.url, counts, p.unit, p.direction, ran=ran, knobs=p.knobs,
                     skipped_knobs=p.skipped)
    done = frame[(frame["status"] == "done") & frame["objective"].notna()]
    if len(done):
        means = done.groupby("configuration_id")["objective"].mean()
        best_cid = means.idxmax() if p.direction == "max" else means.idxmin()
        s.best = float(means[best_cid])
        s.best_knobs = dict(db.get_configuration(int(best_cid)).knobs)
        first = frame.loc[frame["ordinal"] == 0, "configuration_id"]
        if len(first) and int(first.iloc[0]) in means.index:
            s.default = float(means[int(first.iloc[0])])
    return s


class StudyProgress:
    """A rich progress bar over the study's trials with ETA and the best objective so far."""

    def __init__(self, total: int, done: int, p: Prepared, console: Console, enabled: bool) -> None:
        self.p = p
        self.best: float | None = None
        self.progress = Progress(TextColumn("[bold]profile[/]"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[best]}"), console=console, disable=not enabled,
                                 transient=False)
        self.task = self.progress.add_task("trials", total=total, completed=done, best="")

    def note(self, objective: float | None) -> None:
        if objective is not None and (self.best is None or (objective > self.best if self.p.direction == "max"
                                                            else objective < self.best)):
            self.best = objective
        self.progress.update(self.task, advance=1, best=self._best_text())

    def set(self, completed: int, best: float | None) -> None:
        self.best = best
        self.progress.update(self.task, completed=completed, best=self._best_text())

    def _best_text(self) -> str:
        return "" if self.best is None else f"best {_fmt(self.best)} {self.p.unit}".rstrip()

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return str(x)
    mag = abs(x)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if mag >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.4g}"


def _settled(counts: dict[str, int]) -> int:
    return counts["done"] + counts["failed"]


def _best(db: Storage, p: Prepared) -> float | None:
    frame = db.trials_frame(p.study_id, status="done")
    vals = frame["objective"].dropna()
    if not len(vals):
        return None
    return float(vals.max() if p.direction == "max" else vals.min())


# ---- the whole command -----------------------------------------------------------------------------------


def run_profile(opts: ProfileOptions, stop: StopFlag | None = None, console: Console | None = None) -> StudySummary:
    """Plan (or join) the study and run its trials here; see the module docstring."""
    stop = stop if stop is not None else StopFlag()
    console = console or Console(stderr=True)
    with open_storage(opts.db) as db:
        p = prepare(opts, db)
        if not opts.worker:
            recover(db, p.study_id)
        counts = db.progress(p.study_id)
        total = max(sum(counts.values()), p.adaptive_total)
        ran = 0
        with StudyProgress(total, _settled(counts), p, console, opts.show_progress) as bar:
            bar.set(_settled(counts), _best(db, p))
            if opts.workers > 1:
                ran = _run_workers(p, db, stop, bar)
            else:
                ran = work(p, db, stop, on_trial=lambda o: bar.note(o.objective))
                if opts.worker:
                    bar.set(_settled(db.progress(p.study_id)), _best(db, p))
        summary = summarise(db, p, ran)
    if stop.signal is not None:
        raise StudyInterrupted(stop.signal, summary)
    return summary


def _run_workers(p: Prepared, db: Storage, stop: StopFlag, bar: StudyProgress) -> int:
    """K local processes claiming trials; the parent shows progress and passes signals on."""
    ctx = mp.get_context("spawn")
    procs, pipes = [], []
    for _ in range(p.opts.workers):
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_process, args=(p, child_end), daemon=False)
        proc.start()
        child_end.close()
        procs.append(proc)
        pipes.append(parent_end)
    forwarded = False
    try:
        while any(pr.is_alive() for pr in procs):
            if stop and not forwarded:
                for pr in procs:
                    if pr.is_alive() and pr.pid:
                        os.kill(pr.pid, signal.SIGTERM)
                forwarded = True
            time.sleep(0.25)
            bar.set(_settled(db.progress(p.study_id)), _best(db, p))
    finally:
        for pr in procs:
            pr.join()
    ran = 0
    for end in pipes:
        with contextlib.suppress(EOFError, OSError):
            if end.poll():
                ran += int(end.recv())
    bar.set(_settled(db.progress(p.study_id)), _best(db, p))
    failed = [pr.exitcode for pr in procs if pr.exitcode not in (0, None)]
    if failed and not stop:
        raise PtmtError(f"{len(failed)} worker process(es) failed (exit {failed}); rerun the command to resume")
    return ran
