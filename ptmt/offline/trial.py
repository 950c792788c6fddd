"""Measuring one configuration: apply it through the journaled backend, run the workload, sample
telemetry every interval, read the objective, put the knobs back.

Two kinds of session share one interface (``run(knobs, repetition) -> Outcome``, then ``close()``):

* per-trial sessions measure each configuration in a run of its own. On the simulated machine every
  trial gets a fresh machine in a temporary directory (seeded by the study's seed plus the repetition,
  so every configuration of one repetition meets the same machine and noise: differences are the knobs');
  on a real host the workload command runs once per trial.
* in-run sessions (the original PTMT's way, cheap on real machines) keep one run of the workload going
  and give every trial one interval of it under a new configuration.

A session never leaves knobs changed: the journal records every original before the first write and
``close()`` (or the end of a per-trial run, even a failed or interrupted one) restores them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ptmt.backends.base import Backend
from ptmt.backends.registry import backend_for
from ptmt.catalog import Value, load_catalog
from ptmt.errors import PtmtError
from ptmt.host import Host
from ptmt.journal import Journal
from ptmt.offline.workloads import CommandFailed, HostWorkload, Running, final_objective, run_hook
from ptmt.restore import restore
from ptmt.telemetry import Sample, Telemetry

log = logging.getLogger(__name__)
#: How often a waiting session looks at its stop flag (seconds of wall-clock time).
POLL_S = 0.1


class Interrupted(PtmtError):
    """The study was asked to stop (Ctrl-C, SIGTERM) while a trial ran."""


@dataclass
class Outcome:
    """What a trial measured; ``error`` set means it failed (objective then None)."""

    objective: float | None
    unit: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class Session(Protocol):
    unit: str
    direction: str

    def run(self, knobs: Mapping[str, Value], repetition: int) -> Outcome: ...

    def close(self) -> None: ...


@dataclass
class Hooks:
    """How a session talks to the study runner while it runs."""

    should_stop: Callable[[], bool] = lambda: False
    tick: Callable[[], None] = lambda: None  # once per interval (heartbeats)

    def check(self) -> None:
        if self.should_stop():
            raise Interrupted("stopped by signal")


def sample_record(seq: int, t_s: float, sample: Sample, objective: float | None) -> dict[str, Any]:
    """A telemetry sample as a database row: kernel counter deltas plus perf deltas and free memory."""
    counters: dict[str, Any] = dict(sample.counters)
    counters.update({f"perf.{k}": v for k, v in sample.perf.items()})
    for node, values in sample.nodes.items():
        if "MemFree" in values:
            counters[f"node{node}.MemFree_kB"] = values["MemFree"]
    return {"seq": seq, "t_s": t_s, "dt_s": sample.interval_s, "counters": counters, "objective": objective}


def ipc(sample: Sample) -> float | None:
    cycles = sample.perf.get("cycles", 0.0)
    return sample.perf["instructions"] / cycles if cycles and "instructions" in sample.perf else None


def _restore_all(journal: Journal, host: Host, backend: Backend | None = None) -> None:
    """Put back every journaled original. With the session's *backend* at hand its entries are restored
    through it (no catalog reloads: trials on the simulated machine take milliseconds); anything else goes
    through ``ptmt.restore``."""
    failed: list[str] = []
    if backend is not None:
        with journal.locked():
            done = set()
            for entry in reversed(journal.entries()):
                if entry.backend != backend.name:
                    continue
                try:
                    backend.restore_entry(entry)
                    done.add(entry.key)
                except PtmtError as e:
                    failed.append(f"{entry.knob} ({e})")
            journal.remove(done)
    report = restore(journal, lambda _platform, _root: host)
    failed += [f"{e.knob} ({why})" for e, why in report.failed]
    if failed:
        raise PtmtError(f"could not restore {', '.join(failed)}; originals kept in {journal.path} (run ptmt restore)")


# ---- the simulated machine -------------------------------------------------------------------------


def scratch_dir() -> str | None:
    """Where a trial's throw-away machine lives: shared memory when there is some (a simulated trial
    creates, fsyncs and deletes hundreds of small files), else the usual temporary directory."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None



class SimTrialSession:
    """Each trial on a fresh simulated machine in a temporary directory."""

    unit = "ops/s"
    direction = "max"

    def __init__(self, backend: str, workload: str, *, duration: float, interval: float, seed: int = 0,
                 sim_options: Mapping[str, Any] | None = None, catalog_dirs: tuple[str, ...] = (),
                 hooks: Hooks | None = None) -> None:
        self.backend_name, self.workload = backend, workload
        self.duration, self.interval, self.seed = duration, interval, seed
        self.sim_options = {k: v for k, v in (sim_options or {}).items() if v is not None and k != "seed"}
        self.catalog_dirs = catalog_dirs
        self.catalog = load_catalog(backend, catalog_dirs)
        self.hooks = hooks or Hooks()

    def _host(self, root: Path, seed: int) -> Any:
        from ptmt.sim.host import SimHost
        from ptmt.sim.knobs import kernel_for_backend

        return SimHost(root, workload=self.workload, seed=seed, kernel=kernel_for_backend(self.backend_name),
                       persist=False, **self.sim_options)

    def run(self, knobs: Mapping[str, Value], repetition: int) -> Outcome:
        tmp = Path(tempfile.mkdtemp(prefix="ptmt-trial-", dir=scratch_dir()))
        try:
            host = self._host(tmp / "machine", self.seed + repetition)
            backend = backend_for(self.catalog, host)
            journal = Journal(tmp / "state")
            try:
                backend.apply(backend.plan(dict(knobs), activate=True), journal)
                return self._measure(host)
            finally:
                _restore_all(journal, host, backend)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _measure(self, host: Any) -> Outcome:
        telemetry = Telemetry(host)
        telemetry.start()
        samples, weighted, elapsed, seq = [], 0.0, 0.0, 0
        while elapsed < self.duration - 1e-9:
            self.hooks.check()
            step = min(self.interval, self.duration - elapsed)
            host.advance(step)
            elapsed += step
            s = telemetry.sample()
            samples.append(sample_record(seq, elapsed, s, s.objective))
            weighted += (s.objective or 0.0) * step
            seq += 1
            self.hooks.tick()
        return Outcome(weighted / elapsed if elapsed else None, self.unit, samples)

    def close(self) -> None:
        pass


class SimInRunSession:
    """One simulated run; each trial is the next interval under its configuration."""

    unit = "ops/s"
    direction = "max"

    def __init__(self, backend: str, workload: str, *, interval: float, seed: int = 0,
                 sim_options: Mapping[str, Any] | None = None, catalog_dirs: tuple[str, ...] = (),
                 hooks: Hooks | None = None) -> None:
        self.interval = interval
        self.hooks = hooks or Hooks()
        self._tmp = Path(tempfile.mkdtemp(prefix="ptmt-inrun-", dir=scratch_dir()))
        trial = SimTrialSession(backend, workload, duration=interval, interval=interval, seed=seed,
                                sim_options=sim_options, catalog_dirs=catalog_dirs)
        self.host = trial._host(self._tmp / "machine", seed)
        self.backend = backend_for(trial.catalog, self.host)
        self.journal = Journal(self._tmp / "state")
        self.backend.apply(self.backend.plan({}, activate=True), self.journal)
        self.telemetry = Telemetry(self.host)
        self.telemetry.start()
        self._started = self.host.now()
        self._seq = 0

    def run(self, knobs: Mapping[str, Value], repetition: int) -> Outcome:
        self.hooks.check()
        self.backend.apply(self.backend.plan(dict(knobs)), self.journal)
        self.telemetry.sample()  # drop what happened before this configuration
        self.host.advance(self.interval)
        s = self.telemetry.sample()
        rec = sample_record(self._seq, self.host.now() - self._started, s, s.objective)
        self._seq += 1
        self.hooks.tick()
        return Outcome(s.objective, self.unit, [rec])

    def close(self) -> None:
        try:
            _restore_all(self.journal, self.host, self.backend)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


# ---- a real host -----------------------------------------------------------------------------------


class _HostBase:
    def __init__(self, host: Host, backend: Backend, journal: Journal, workload: HostWorkload, *,
                 interval: float, duration: float | None = None, hooks: Hooks | None = None) -> None:
        self.host, self.backend, self.journal, self.workload = host, backend, journal, workload
        self.interval, self.duration = interval, duration
        self.hooks = hooks or Hooks()
        self.unit = workload.objective.unit
        self.direction = workload.objective.direction

    def _wait(self, run: Running, seconds: float) -> int | None:
        """Wait up to *seconds* for the command, watching the stop flag; its exit code or None."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.hooks.should_stop():
                raise Interrupted("stopped by signal")
            code = run.wait(min(POLL_S, left))
            if code is not None:
                return code
        return run.poll()

    def _interval_objective(self, run: Running, sample: Sample) -> tuple[float | None, str]:
        """What this interval scored, with its unit: the last value the command printed in it, else
        IPC from perf (the original PTMT's objective), else nothing."""
        obj = self.workload.objective
        if obj.regex is not None and obj.file is None:
            value = obj.value(run.new_stdout())
            if value is not None:
                return value, self.unit
        return ipc(sample), "IPC"

    def _needs_pid(self) -> bool:
        return self.backend.catalog.driver == "upm"


class HostTrialSession(_HostBase):
    """The workload command once per trial: setup, apply, run and sample, read the objective,
    cleanup, restore."""

    def run(self, knobs: Mapping[str, Value], repetition: int) -> Outcome:
        wl = self.workload
        run: Running | None = None
        telemetry: Telemetry | None = None
        samples: list[dict[str, Any]] = []
        try:
            run_hook(wl, "setup")
            if not self._needs_pid():
                self.backend.apply(self.backend.plan(dict(knobs), activate=True), self.journal)
            telemetry = Telemetry(self.host)
            telemetry.start()
            run = Running(wl, wl.command)
            if self._needs_pid():
                self.backend.options["pid"] = run.pid
                self.backend.apply(self.backend.plan(dict(knobs), activate=True), self.journal)
            seq, code = 0, None
            while code is None:
                step = self.interval
                if wl.timeout_s is not None:
                    step = min(step, wl.timeout_s - run.runtime_s)
                    if step <= 0:
                        run.stop()
                        raise CommandFailed(f"timed out after {wl.timeout_s:g} s\n{run.stderr_tail()}".rstrip())
                if self.duration is not None:
                    step = min(step, max(self.duration - run.runtime_s, 0.0))
                code = self._wait(run, step)
                s = telemetry.sample()
                samples.append(sample_record(seq, run.runtime_s, s, self._interval_objective(run, s)[0]))
                seq += 1
                self.hooks.tick()
                if code is None and self.duration is not None and run.runtime_s >= self.duration:
                    run.stop()  # --duration ends a long-running workload; what it printed counts
                    code = 0
            if code != 0:
                raise CommandFailed(f"exited with status {code}\n{run.stderr_tail()}".rstrip())
            return Outcome(final_objective(wl, run), self.unit, samples)
        except CommandFailed as e:
            return Outcome(None, self.unit, samples, error=str(e))
        finally:
            try:
                if telemetry is not None:
                    telemetry.close()
                if run is not None:
                    run.stop()
                    run.close()
                try:
                    run_hook(wl, "cleanup")
                except CommandFailed as e:
                    log.warning("%s: %s", wl.name, e)
            finally:
                _restore_all(self.journal, self.host, self.backend)

    def close(self) -> None:
        pass


class HostInRunSession(_HostBase):
    """One long run of the workload command; each trial is one interval under its configuration.
    A command that ends cleanly is started again; one that fails fails the trial it was in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_: Running | None = None
        self.telemetry = Telemetry(self.host)
        self._t0 = time.monotonic()
        self._seq = 0
        self._activated = False
        run_hook(self.workload, "setup")

    def _ensure_running(self) -> Running:
        if self.run_ is None or self.run_.poll() is not None:
            if self.run_ is not None:
                self.run_.close()
            self.run_ = Running(self.workload, self.workload.command)
            if self._needs_pid():
                self.backend.options["pid"] = self.run_.pid
                self._activated = False
        return self.run_

    def run(self, knobs: Mapping[str, Value], repetition: int) -> Outcome:
        for _attempt in range(2):
            run = self._ensure_running()
            self.backend.apply(self.backend.plan(dict(knobs), activate=not self._activated), self.journal)
            self._activated = True
            self.telemetry.start()
            run.new_stdout()  # what came before this configuration is not its score
            code = self._wait(run, self.interval)
            s = self.telemetry.sample()
            if code is None:
                objective, unit = self._interval_objective(run, s)
                rec = sample_record(self._seq, time.monotonic() - self._t0, s, objective)
                self._seq += 1
                self.hooks.tick()
                return Outcome(objective, unit, [rec])
            if code != 0:
                return Outcome(None, self.unit, [], error=f"exited with status {code}\n{run.stderr_tail()}".rstrip())
        return Outcome(None, self.unit, [], error="the command ends within one interval: use a shorter --interval")

    def close(self) -> None:
        try:
            if self.run_ is not None:
                self.run_.stop()
                self.run_.close()
            try:
                run_hook(self.workload, "cleanup")
            except CommandFailed as e:
                log.warning("%s: %s", self.workload.name, e)
        finally:
            self.telemetry.close()
            _restore_all(self.journal, self.host, self.backend)
