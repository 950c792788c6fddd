"""``ptmt tune --platform linux`` as a long-running service (``ptmt-tune@BACKEND.service``).

Around the tuner (``ptmt.online.tuner``) this adds what running for months needs:

- **signals**: SIGTERM and SIGINT only set a flag; the loop notices it within a quarter of a
  second (never in the middle of a kernel or journal write), the tuner restores every original
  the journal holds, the database recorder is flushed and closed, and the process exits 0.
  SIGHUP re-reads and re-validates the configuration file; when the new one is invalid the
  service says why and keeps running on the old one.
- **systemd**: READY=1 once the checks have passed and tuning has started, STATUS= with the
  objective's last reading and the configuration, WATCHDOG=1 pings at half of WatchdogSec while
  sleeping between intervals (a hung loop stops pinging and systemd restarts it).
- **advice mode and admin back-off** (``ptmt.service.managed``), the **state file** read by
  ``ptmt tune --status`` (``ptmt.service.state``) and **Prometheus metrics**
  (``ptmt.service.metrics``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ptmt.backends.registry import backend_for
from ptmt.errors import ConfigError, PtmtError
from ptmt.host import default_state_dir
from ptmt.online.hostrun import SilentObjective, fast_nodes
from ptmt.online.tuner import Tuner, TuneResult, TuneSettings
from ptmt.service.config import ServiceConfig
from ptmt.service.managed import KnobWatch, ManagedBackend
from ptmt.service.metrics import Metrics
from ptmt.service.notify import Notifier
from ptmt.service.state import write_state

log = logging.getLogger("ptmt.tune")

#: longest sleep between two looks at the signal flags
TICK_S = 0.25
#: intervals, events and advice lines the service keeps in memory: an hour at the default 10 s
#: interval. It runs for weeks; the database (``database:``) records every interval and event, the
#: journal's log every change, and the counts in the state file cover the whole run (RunTally).
SERVICE_HISTORY = 360


class Stopped(KeyboardInterrupt):
    """Raised at a safe point (while sleeping) once SIGTERM/SIGINT has arrived; unwinds the tuner,
    whose ``finally`` restores every original value."""


@dataclass
class Flags:
    stop: str | None = None  # name of the signal that asked to stop
    reload: bool = False


class ServiceHost:
    """The real host, with a sleep that keeps the watchdog fed and stops promptly on a signal."""

    def __init__(self, host: Any, flags: Flags, notifier: Notifier) -> None:
        self._host, self.flags, self.notifier = host, flags, notifier
        self.platform, self.fs = host.platform, host.fs
        self._last_ping = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    def now(self) -> float:
        return self._host.now()

    def ping(self) -> None:
        period = self.notifier.watchdog_period
        if period is not None and time.monotonic() - self._last_ping >= period:
            self.notifier.watchdog()
            self._last_ping = time.monotonic()

    def advance(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            if self.flags.stop:
                raise Stopped(self.flags.stop)
            self.ping()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, TICK_S, self.notifier.watchdog_period or TICK_S))


@dataclass
class Service:
    """One run of the service; ``run()`` returns the tuner's result or raises ``Stopped``."""

    config: ServiceConfig
    catalog: Any
    prepared: tuple[Any, Any, Any, Any]
    agent: Any = None
    query_model: Any = None
    recorder: Any = None
    duration: float | None = None
    #: re-reads the configuration (file + command-line flags) on SIGHUP; raises ConfigError when invalid
    reload_config: Callable[[], ServiceConfig] | None = None
    notifier: Notifier = field(default_factory=Notifier)
    flags: Flags = field(default_factory=Flags)

    def __post_init__(self) -> None:
        host, self.journal, space, source = self.prepared
        self.host = ServiceHost(host, self.flags, self.notifier)
        self.source = source
        self.state_dir = Path(self.config.state_dir or default_state_dir("linux"))
        self.backend = ManagedBackend(backend_for(self.catalog, host), dry_run=self.config.dry_run,
                                      history=SERVICE_HISTORY)
        settings = TuneSettings(interval=self.config.interval, duration=self.duration, guard=self.config.guard,
                                phase=self.config.phase, history=SERVICE_HISTORY)
        self.tuner = Tuner(self.host, self.backend, self.journal, objective=SilentObjective(source), space=space,
                           agent=self.agent, query_model=self.query_model, settings=settings,
                           recorder=self.recorder, fast_nodes=fast_nodes(host))
        self.watch = KnobWatch(self.tuner, self.backend)
        self.tuner.before_restore.append(self._last_check)
        self.metrics = Metrics(self.catalog.name, self.config.metrics_port)
        self.status = "starting"
        self._ready = False
        self._seen_events = 0

    # -- signals ------------------------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.flags.stop is None:
            self.flags.stop = name  # the log line is written by the loop, not in the handler
        self.status = "stopping"

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.flags.reload = True

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> TuneResult:
        old = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                                    (signal.SIGHUP, self._on_hup))}
        self.metrics.serve()
        try:
            if self.config.dry_run:
                log.info("advice mode (dry run): every change is decided and logged, nothing is written")
            self.status = "running"
            result = self.tuner.run(stop=self._between_intervals)
            if self.flags.stop:  # noticed between intervals: the tuner has restored, report it as a stop
                raise Stopped(self.flags.stop)
            self.status = "finished"
            return result
        except Stopped:
            self.status = "interrupted"
            log.info("stopped by %s: every original knob value is restored", self.flags.stop)
            raise
        except BaseException:
            self.status = "failed"
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.notifier.stopping(f"{self.status}; original knob values restored")
            self._write_state(running=False)
            self.metrics.close()

    def _between_intervals(self) -> bool:
        """Called by the tuner before every interval: signals, reload, admin check, state, metrics."""
        if self.flags.stop:
            log.info("stopping on %s: restoring every original knob value", self.flags.stop)
            return True
        if self.flags.reload:
            self.flags.reload = False
            self.reload()
        if not self._ready:
            self.watch.start()
        self.watch.check()
        self._publish()
        if not self._ready:
            self._ready = True
            self.notifier.ready(self.status_line())
        else:
            self.notifier.status(self.status_line())
        self.host.ping()
        return False

    def _last_check(self) -> None:
        """An administrator's write since the last interval is not restored over either."""
        try:
            self.watch.check()
        except PtmtError as exc:
            log.warning("could not check the knobs for changes made outside ptmt before restoring: %s", exc)

    # -- reload -------------------------------------------------------------------------------------
    def reload(self) -> None:
        if self.reload_config is None:
            log.warning("SIGHUP: no configuration file to reload")
            return
        where = self.config.path or "the command line"
        try:
            new = self.reload_config()
            if new.leave_alone:
                from ptmt.service.config import check_against_catalog

                check_against_catalog(new, self.catalog)
        except (ConfigError, PtmtError) as exc:
            log.warning("configuration reload refused, still running on the previous configuration: %s",
                        " / ".join(str(exc).splitlines()))
            self.notifier.status(f"reload refused (see the log); {self.status_line()}")
            return
        changed = self.config.differences(new)
        if not changed:
            log.info("configuration %s reloaded: nothing changed", where)
            return
        applied, later = [], []
        for name in changed:
            if name == "interval":
                self.tuner.s.interval = new.interval
                applied.append(f"interval {self.config.interval:g} -> {new.interval:g} s")
            elif name == "guard":
                moved = [f.name for f in fields(new.guard) if getattr(new.guard, f.name) != getattr(self.tuner.s.guard, f.name)]
                for key in moved:
                    setattr(self.tuner.s.guard, key, getattr(new.guard, key))
                applied.append("guard (" + ", ".join(moved) + ")")
            elif name == "leave_alone":
                for knob in new.leave_alone:
                    if knob not in self.config.leave_alone:
                        self._leave_alone(knob)
                applied.append("leave_alone")
            else:
                later.append(name)
        # settings that need a restart keep their running values until then
        self.config = dataclasses.replace(new, **{n: getattr(self.config, n) for n in later})
        log.info("configuration %s reloaded: %s%s", where, "; ".join(applied) or "nothing applies live",
                 f"; {', '.join(later)} take(s) effect when the service restarts" if later else "")

    def _leave_alone(self, name: str) -> None:
        """A knob newly listed in leave_alone: put back its original, then stop managing it."""
        if name not in self.tuner.space.names or name in self.tuner.released:
            return
        knob = self.catalog.knobs[name]
        key = self.backend.entry_for(knob, "").key
        value = None
        with self.journal.locked():
            entry = next((e for e in self.journal.entries() if e.key == key), None)
            if entry is not None and not self.config.dry_run:
                self.backend.restore_entry(entry)
                self.journal.remove({key})
        try:
            value = self.backend.inner.read(knob)
        except PtmtError:
            value = None
        self.tuner.release(name, value, "leave_alone", f"{name} is now in leave_alone: "
                           + ("its original value is restored; " if entry is not None else "") + "no longer tuning it")

    # -- publishing ---------------------------------------------------------------------------------
    def status_line(self) -> str:
        t = self.tuner
        last = t.intervals[-1]["objective"] if t.intervals else None
        reading = "no reading yet" if last is None else f"{last:.4g} {self.source.unit}"
        managed = len([n for n in t.space.names if n not in t.released])
        mode = "advice only, " if self.config.dry_run else ""
        return (f"{mode}{self.catalog.name}: objective {self.source.describe()} {reading}; {managed} knob(s) managed, "
                f"{t.tally.changes} change(s), {t.tally.reverts} revert(s); {self.config.describe()}")

    def _publish(self) -> None:
        t = self.tuner
        new = t.tally.events - self._seen_events  # the history keeps the latest events only
        for ev in itertools.islice(t.events, max(0, len(t.events) - new), None):
            self.metrics.event(ev.kind, ev.n)
        self._seen_events = t.tally.events
        if t.intervals:
            last = t.intervals[-1]
            self.metrics.interval(last["objective"], last["baseline"], t.config, t.released)
        self._write_state(running=True)

    def _write_state(self, running: bool) -> None:
        t = self.tuner
        last = t.intervals[-1] if t.intervals else {}
        doc = {"pid": os.getpid(), "running": running, "status": self.status, "backend": self.catalog.name,
               "dry_run": self.config.dry_run, "objective": self.source.describe(),
               "objective_unit": self.source.unit, "objective_value": last.get("objective"),
               "baseline": last.get("baseline"), "config": self.config.as_dict(),
               "config_line": self.config.describe(), "intervals": t.tally.intervals, "changes": t.tally.changes,
               "reverts": t.tally.reverts, "errors": t.tally.errors,
               "knobs": {n: v for n, v in getattr(t, "config", {}).items() if n not in t.released},
               "released": {n: t.released_why.get(n, "let go") for n in t.released},
               "advice": list(self.backend.advice)[-50:],
               "last_events": [e.line() for e in itertools.islice(t.events, max(0, len(t.events) - 10), None)]}
        try:
            write_state(self.state_dir, self.catalog.name, doc)
        except OSError as exc:
            log.warning("cannot write the state file in %s: %s", self.state_dir, exc)
