"""The hybrid tuning loop: observe, decide, apply, guard — every interval, while the workload runs.

1. **Warm-up.** The first intervals run the starting configuration (the backend's defaults on the
   simulated machine; the kernel's live values on a real host) to measure the baseline objective
   and the workload's fingerprint.
2. **Ask the database.** The offline query model (``ptmt.offline.model``) maps the fingerprint to
   the best configuration known for similar workloads. When it is confident (and the workload is
   not an outlier) that configuration is applied as one change and judged like any other; when it
   does not pay, the database's next best configuration for the same fingerprint is tried
   (``advice_tries``); when the workload is an outlier the agent gets a larger exploration budget.
3. **Fine-tune.** Every interval the agent (``ptmt.online.agent``) ranks the moves "one knob one
   rung up or down, or stay" from the observation; the guard (``ptmt.online.guard``) lets a move
   through only within its budget and off its tabu list, judges it after it settles, keeps it when
   it pays and restores the best known configuration when it does not.
4. **Follow phases.** The phase detector (``ptmt.online.phase``) watches for workload changes under
   an unchanged configuration, and after every return to a configuration it measured before (a
   revert) compares it with that measurement; a new phase gets a fresh warm-up, re-queries the
   database and refills the budget.

Every change is logged as ``knob old -> new: why`` and recorded (``Recorder``) with the interval
it happened in. The knobs' original values are journaled before the first write and restored when
the loop ends (``keep=False``), whatever ended it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ptmt.backends.base import Backend
from ptmt.catalog import Value
from ptmt.errors import KernelRejected, PtmtError, ValidationError
from ptmt.journal import Journal
from ptmt.offline.fingerprint import as_dict as fp_dict
from ptmt.offline.fingerprint import fingerprint
from ptmt.offline.model import NothingLeft
from ptmt.online import observation
from ptmt.online.guard import Guard, GuardSettings, Trend, config_key, warmup_trend
from ptmt.online.knobspace import KnobSpace, Move
from ptmt.online.phase import PhaseDetector, PhaseSettings
from ptmt.telemetry import Sample, Telemetry

log = logging.getLogger("ptmt.tune")

#: what a trial of the database's advice is called (in the log, and to recognise it when kept)
ADVICE = "model advice"
#: the trial that measures the phase's starting configuration again (see Tuner._check_start)
START_CHECK = "the phase's starting configuration"
#: readings of the running configuration a trial's moving reference is fitted on, at most (15
#: minutes at the default interval; a line over longer says little of the next few intervals)
HELD_READINGS = 90


class Objective(Protocol):
    unit: str

    def measure(self, host: Any, sample: Sample) -> float | None: ...

    def describe(self) -> str: ...


class Recorder(Protocol):
    """Where intervals and events go (the database, a test list, nowhere)."""

    def interval(self, row: Mapping[str, Any]) -> None: ...

    def event(self, event: Mapping[str, Any]) -> None: ...


class NullRecorder:
    def interval(self, row: Mapping[str, Any]) -> None:
        pass

    def event(self, event: Mapping[str, Any]) -> None:
        pass


@dataclass
class TuneSettings:
    interval: float = 10.0
    duration: float | None = None  # seconds; None = until stopped
    guard: GuardSettings = field(default_factory=GuardSettings)
    phase: PhaseSettings = field(default_factory=PhaseSettings)
    use_model: bool = True
    use_agent: bool = True
    #: without an agent, start each phase by trying every knob's far ends (see Tuner._try_far_end)
    coarse_search: bool = True
    #: the most recent intervals, events and decision times kept in memory (None: the whole run). A
    #: service runs for weeks: it keeps a window and the recorder (the database) keeps everything;
    #: the run's counts and mean are tallied as it goes (RunTally), so they cover the whole run.
    history: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"interval": self.interval, "duration": self.duration, "guard": self.guard.as_dict(),
                "phase": asdict(self.phase), "use_model": self.use_model, "use_agent": self.use_agent,
                "coarse_search": self.coarse_search, "history": self.history}


@dataclass
class Event:
    n: int
    seq: int
    t_s: float
    kind: str  # model | explore | measure | keep | reject | revert | phase | error | admin | vanished
    reason: str
    knob: str | None = None
    old: str | None = None
    new: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if self.knob is not None:
            return f"{self.knob} {self.old} -> {self.new}: {self.reason}"
        return self.reason


@dataclass
class RunTally:
    """A run's counts, kept up as it goes: with a bounded history (TuneSettings.history) the
    intervals and events in memory are only the latest, and these still cover the whole run."""

    intervals: int = 0
    events: int = 0
    readings: int = 0
    objective_sum: float = 0.0
    changes: int = 0
    reverts: int = 0
    errors: int = 0
    #: the kept gains of the phase the run is in, compounded (TuneResult.kept_gain)
    kept_factor: float = 1.0
    _revert_n: int | None = None

    def interval(self, objective: float | None) -> None:
        self.intervals += 1
        if objective is not None:
            self.readings += 1
            self.objective_sum += objective

    def event(self, e: Event) -> None:
        self.events += 1
        if e.kind in ("model", "explore", "revert") and e.knob is not None:
            self.changes += 1
        if e.kind == "revert" and e.n != self._revert_n:  # one revert moves several knobs under one number
            self.reverts += 1
            self._revert_n = e.n
        if e.kind == "error":
            self.errors += 1
        if e.kind == "phase":
            self.kept_factor = 1.0
        elif e.kind == "keep":
            self.kept_factor *= 1.0 + float(e.details.get("gain", 0.0))

    @classmethod
    def of(cls, intervals: Sequence[Mapping[str, Any]], events: Sequence[Event]) -> RunTally:
        tally = cls()
        for r in intervals:
            tally.interval(r["objective"])
        for e in events:
            tally.event(e)
        return tally


@dataclass
class TuneResult:
    """A finished run: its intervals and events (the latest only, with a bounded history) and its
    tally (the whole run; counted from the two lists when not given)."""

    intervals: list[dict[str, Any]]
    events: list[Event]
    start_config: dict[str, Value]
    final_config: dict[str, Value]
    objective_unit: str
    decision_ms: list[float]
    tally: RunTally | None = None

    def __post_init__(self) -> None:
        if self.tally is None:
            self.tally = RunTally.of(self.intervals, self.events)

    @property
    def _t(self) -> RunTally:
        assert self.tally is not None
        return self.tally

    @property
    def interval_count(self) -> int:
        """Intervals in the whole run (``intervals`` holds the latest with a bounded history)."""
        return self._t.intervals

    @property
    def event_count(self) -> int:
        """Events in the whole run (``events`` holds the latest with a bounded history)."""
        return self._t.events

    @property
    def mean_objective(self) -> float | None:
        return self._t.objective_sum / self._t.readings if self._t.readings else None

    @property
    def changes(self) -> int:
        return self._t.changes

    @property
    def reverts(self) -> int:
        return self._t.reverts

    @property
    def kept_gain(self) -> float:
        """What the tuner's own verdicts claim for the phase it ended in: its kept gains compounded.
        Each was measured against the level just before its change, which a reverted trial's
        lingering damage or the workload's own drift can lower, so the sum of the claims may
        exceed the run's gain over the defaults (docs/results-history.md, "What the verdicts claim")."""
        return self._t.kept_factor - 1.0


class Tuner:
    """One tuning session of one backend on one host (see the module docstring)."""

    def __init__(self, host: Any, backend: Backend, journal: Journal, *, objective: Objective,
                 space: KnobSpace, agent: Any | None = None, query_model: Any | None = None,
                 settings: TuneSettings | None = None, recorder: Recorder | None = None,
                 fast_nodes: Sequence[int] = (0,), activate: bool = True) -> None:
        self.host, self.backend, self.journal = host, backend, journal
        self.objective, self.space, self.agent, self.query_model = objective, space, agent, query_model
        self.s = settings or TuneSettings()
        self.recorder = recorder or NullRecorder()
        self.fast_nodes = tuple(fast_nodes)
        self.activate = activate
        self.guard = Guard(self.s.guard)
        self.phase = PhaseDetector(self.s.phase)
        #: the latest intervals, events and decision times (all of them unless settings.history)
        self.events: deque[Event] = deque(maxlen=self.s.history)
        self.intervals: deque[dict[str, Any]] = deque(maxlen=self.s.history)
        self.decision_ms: deque[float] = deque(maxlen=self.s.history)
        self.tally = RunTally()
        self._n = 0
        self.seq = 0
        self.phase_no = 0
        self.since_change = 10
        self.previous: float | None = None
        self.baseline: float | None = None
        self._warm: list[float] = []
        self._warm_left = self.s.guard.warmup_intervals
        self._fallback_cursor = 0
        self._far_tried: set[tuple[str, int]] = set()
        #: the agent's confident moves tried this phase, with the configuration each started from
        self._agent_tried: set[tuple[str, str]] = set()
        #: the database's advice was measured and kept this phase: exploit it (confirmed_budget)
        self._advice_confirmed = False
        #: the database's advice was kept this phase (confirmed or not): no coarse pass after it
        #: unless guard.coarse_after_advice
        self._advice_kept = False
        #: kept advice below confirm_gain, watched before the phase explores on: the level its trial
        #: was judged against and the readings since (None: nothing watched)
        self._watch: tuple[float, list[float]] | None = None
        #: the configurations advised this phase, and why to ask the database again next interval
        #: ("failed": for its next best, "kept": to refine it; within advice_tries)
        self._advice_tried: list[dict[str, Value]] = []
        self._ask_again: str | None = None
        #: this phase's judged trials as (configuration, level relative to the phase's baseline), and
        #: the best known configuration's level on that scale
        self._evidence: list[tuple[dict[str, Value], float]] = []
        self._level = 1.0
        self._phase_fp: np.ndarray | None = None
        #: the configuration the phase's baseline was measured under, and whether it was checked again
        self._phase_start: dict[str, Value] = {}
        self._start_checked = False
        #: the interval the last trial was decided in
        self._judged_at = 0
        #: readings under the configuration running now, since it was applied (past its settling;
        #: the last HELD_READINGS: a daemon holds one configuration for days)
        self._held: deque[float] = deque(maxlen=HELD_READINGS)
        #: knobs no longer managed this run (an administrator set them, or they vanished), with their value
        self.released: dict[str, Value] = {}
        #: why each released knob was let go (its event's line: kept when the event leaves the history)
        self.released_why: dict[str, str] = {}
        #: called before the originals are restored (the service's last check for an administrator's writes)
        self.before_restore: list[Callable[[], None]] = []

    # -- setting knobs ------------------------------------------------------------------------------
    def _current(self) -> dict[str, Value]:
        live = self.backend.read_config()
        return self.space.snap(live) if all(n in live for n in self.space.names) else \
            self.space.snap({**self.space.defaults(), **live})

    def _set(self, config: Mapping[str, Value]) -> bool:
        """Write *config* (released knobs left out); False when the kernel refused a value: the backend
        has rolled the step back, the value is marked bad and the configuration stays as it was."""
        wanted = {k: v for k, v in config.items() if k not in self.released}
        try:
            try:
                plan = self.backend.plan(wanted)
            except ValidationError:
                if not self._release_vanished(wanted):
                    raise
                wanted = {k: v for k, v in config.items() if k not in self.released}
                plan = self.backend.plan(wanted)
            self.backend.apply(plan, self.journal)
        except KernelRejected as exc:
            self._rejected(wanted, exc)
            return False
        self.config = {**config, **self.released}
        self.since_change = 0
        self._held.clear()
        self.phase.config_changed(config_key(self.config))
        return True

    def _rejected(self, wanted: Mapping[str, Value], exc: KernelRejected) -> None:
        """The kernel refused a value: never offer it again this run, and drop the trial it began."""
        moved = [n for n in self.space.names if n in wanted and wanted[n] != self.config.get(n)]
        bad = [n for n in moved if self.backend.target(self.backend.catalog.knobs[n]) == exc.path] or moved
        for name in bad:
            self.space.forbid(name, wanted[name])
        proposed = config_key({**self.config, **wanted})
        if self.guard.trial is not None and config_key(self.guard.trial.config) == proposed:
            self.guard.trial = None  # nothing to judge: the change never happened
        self.guard.tabu.add(proposed)
        self._event("error", f"kernel refused {', '.join(f'{n}={wanted[n]}' for n in bad)}; rolled back, "
                    f"not trying it again this run: {exc.detail}")

    def _release_vanished(self, wanted: Mapping[str, Value]) -> bool:
        """Release the knobs of *wanted* whose files are gone; True if there were any."""
        gone = [n for n in wanted if n in self.space.names
                and not self.backend.probe_knob(self.backend.catalog.knobs[n]).present]
        for name in gone:
            self.release(name, None, "vanished", f"{name} disappeared (debugfs unmounted or module unloaded?): "
                         "no longer tuning it")
        return bool(gone)

    def release(self, name: str, value: Value | None, kind: str, reason: str) -> None:
        """Stop managing *name* for the rest of the run (an administrator set it to *value*, or the knob
        vanished: *value* None); the tuner never writes it again and keeps tuning the others."""
        if name in self.released or name not in self.space.names:
            return
        old = self.config.get(name)
        kept = old if value is None else value
        self.released[name] = kept  # type: ignore[assignment]
        self.space.pin(name, kept)  # type: ignore[arg-type]
        self.config[name] = kept  # type: ignore[assignment]
        if name in self.guard.best:
            self.guard.best[name] = kept  # type: ignore[assignment]
        reason += self._forget_original(self.backend.catalog.knobs[name])
        ev = self._event(kind, reason, name, old, "(gone)" if value is None else value)
        self.released_why[name] = ev.line()

    def release_activation(self, name: str, expected: Value, live: Value, reason: str) -> None:
        """An administrator changed one of the backend's activation settings (``numa_balancing``, say)
        after ptmt switched the backend on: leave it as they set it and drop its original from the
        journal, so that the exit does not restore over it. Tuning goes on with the tunable knobs,
        which are still ptmt's and still restored on exit."""
        reason += self._forget_original(self.backend.catalog.activation[name])
        self._event("admin", reason, name, expected, live)

    def _forget_original(self, knob: Any) -> str:
        """Drop *knob*'s original from the journal (nothing restores it on exit); says so for the log."""
        key = self.backend.entry_for(knob, "").key
        with self.journal.locked():
            entry = next((e for e in self.journal.entries() if e.key == key), None)
            self.journal.remove({key})
        if entry is None:
            return ""
        return f"; its original value {entry.original} is dropped from the journal and not restored on exit"

    def _event(self, kind: str, reason: str, knob: str | None = None, old: Any = None, new: Any = None,
               **details: Any) -> Event:
        ev = Event(self._n, self.seq, self._t(), kind, reason, knob, None if old is None else str(old),
                   None if new is None else str(new), details)
        self.events.append(ev)
        self.tally.event(ev)
        self.recorder.event(ev.as_dict())
        (log.warning if kind == "error" else log.info)("%s", ev.line())
        return ev

    def _change(self, new: Mapping[str, Value], kind: str, reason: str, **details: Any) -> None:
        """Apply *new* and log one event per knob that moves (one event number for all of them)."""
        new = {**new, **self.released}
        diff = [k for k in self.space.names if self.config.get(k) != new.get(k)]
        if not diff:
            return
        old = dict(self.config)
        if not self._set(new):
            return
        for k in diff:
            self._event(kind, reason, k, old.get(k), new.get(k), **details)
        self._n += 1

    def _t(self) -> float:
        return float(self.host.now()) - self._t0 if hasattr(self, "_t0") else 0.0

    # -- the loop ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.activate:
            self.backend.apply(self.backend.plan({}, activate=True), self.journal)
        self.config = self._current()
        self.start_config = dict(self.config)
        self.guard.new_phase(self.config)
        self.telemetry = Telemetry(self.host)
        self.telemetry.start()
        self._t0 = float(self.host.now())
        log.info("tuning %s with objective %s, %d knobs (%s), interval %g s", self.backend.name,
                 self.objective.describe(), len(self.space.names), ", ".join(self.space.names), self.s.interval)

    def run(self, stop: Callable[[], bool] = lambda: False, keep: bool = False) -> TuneResult:
        """Tune until *duration* has passed or *stop()* says so; restore the originals unless *keep*."""
        self.start()
        try:
            while not stop():
                if self.s.duration is not None and self._t() >= self.s.duration - 1e-9:
                    break
                step = self.s.interval if self.s.duration is None else min(self.s.interval, self.s.duration - self._t())
                self.host.advance(step)
                self.step()
        finally:
            final = dict(self.config)
            if not keep:
                self.restore()
        return TuneResult(list(self.intervals), list(self.events), self.start_config, final,
                          getattr(self.objective, "unit", ""), list(self.decision_ms), self.tally)

    def restore(self) -> None:
        from ptmt.offline.trial import _restore_all

        for hook in self.before_restore:
            hook()
        _restore_all(self.journal, self.host, self.backend)

    def step(self) -> None:
        """One interval has passed: measure, record, decide."""
        sample = self.telemetry.sample()
        try:
            value = self.objective.measure(self.host, sample)
        except PtmtError as exc:
            self._event("error", f"objective: {exc}")
            raise
        fp = fingerprint([sample], fast_nodes=self.fast_nodes)
        self.seq += 1
        self.since_change += 1
        row = {"seq": self.seq, "t_s": self._t(), "objective": value, "baseline": self.baseline,
               "config": dict(self.config), "phase": self.phase_no, "fingerprint": fp_dict(fp),
               "counters": dict(sample.counters)}
        self.intervals.append(row)
        self.tally.interval(value)
        self.recorder.interval(row)
        t0 = time.perf_counter()
        self._decide(sample, value, fp)
        self.decision_ms.append((time.perf_counter() - t0) * 1e3)
        self.previous = value

    # -- deciding -----------------------------------------------------------------------------------
    def _decide(self, sample: Sample, value: float | None, fp: np.ndarray) -> None:
        g = self.guard
        if self._warm_left > 0:
            if value is not None:
                self._warm.append(value)
            self._warm_left -= 1
            if self._warm_left == 0:
                self._begin_phase(fp)
            return
        if g.trial is not None:
            trial = g.trial
            verdict = g.judge(self.seq, value)
            if verdict is not None and verdict[0] == "extend":
                why = (f" is within the noise (needs {g.last_needed:+.1%})" if verdict[1] > 0 else
                       f", a loss within {self.s.guard.extend_floor:.0%}: its effect may still be building (pages "
                       f"migrate over minutes)")
                self._event("measure", f"{trial.what}: {verdict[1]:+.1%} over {len(trial.readings)} intervals"
                            f"{why}; measuring {self.s.guard.extend_inconclusive} more")
            elif verdict is not None:
                self._judged_at = self.seq
                what, gain = verdict
                if not g.last_aborted:  # one reading in the migrations' wake says little of the steady state
                    self._evidence.append((dict(trial.config), self._level * (1.0 + gain)))
                self._ask_again = None
                if what == "keep":
                    self._level *= 1.0 + gain
                    self._held = deque(trial.readings, maxlen=HELD_READINGS)  # the kept configuration's so far
                    if trial.what == ADVICE:
                        self._ask_again, self._advice_kept = "kept", True
                    why = f"kept {trial.what}: {gain:+.1%} over {len(trial.readings)} intervals"
                    if trial.what == ADVICE and not self._advice_confirmed:
                        if gain >= self.s.guard.confirm_gain:
                            why += f"; {self._confirm_advice()}"
                        elif self.s.guard.confirm_watch > 0 and trial.readings:
                            level = sum(trial.readings) / len(trial.readings)
                            self._watch = (level / (1.0 + gain), [])
                            why += (f"; below {self.s.guard.confirm_gain:+.0%} the advice is not confirmed yet: "
                                    f"held and watched {self.s.guard.confirm_watch} intervals more")
                        else:
                            why += (f"; below {self.s.guard.confirm_gain:+.0%} the advice is not confirmed: "
                                    f"the phase explores on{self._around()}, exploration budget {g.budget}")
                    self._event("keep", why, gain=gain)
                else:
                    if g.last_aborted:
                        settling = " while it settled" if g.last_abort_settling else ""
                        why = (f"the change measured {gain:+.1%} in one interval{settling} (aborted below "
                               f"-{g.last_abort_floor:.0%})")
                    else:
                        why = f"the change measured {gain:+.1%} (needs {g.last_needed:+.1%})"
                    self._change(g.best, "revert", f"back to the best known configuration: {why}", gain=gain)
                    if trial.what == ADVICE:
                        self._ask_again = "failed"
            return
        if self.phase.update(fp, value):
            self.phase_no += 1
            self._event("phase", f"workload phase {self.phase_no}: {self.phase.last_reason}; measuring the "
                        f"new baseline for {self.s.guard.warmup_intervals} intervals")
            # a new phase starts with a transient (a moved hot set is promoted over minutes): its
            # baseline is a fresh warm-up under the best known configuration, not one reading
            self._warm, self._warm_left = [], self.s.guard.warmup_intervals
            self._held.clear()
            return
        if g.watch(self.config, value):
            self._change(g.best, "revert", f"objective stayed more than {self.s.guard.revert_fraction:.0%} below "
                         f"the best known level for {self.s.guard.revert_after} intervals")
            return
        if value is not None and config_key(self.config) == config_key(g.best):
            g.observe_best(value)
            if self.since_change > self.s.guard.settle_intervals:
                self._held.append(value)
        if self.phase.pending:
            return  # back at a configuration measured before: first see whether the workload moved
        self._explore(sample, value, fp)

    def _begin_phase(self, fp: np.ndarray) -> None:
        """Baseline of the new phase, then the database's advice."""
        self._far_tried = set()
        self._agent_tried = set()
        self._advice_confirmed, self._advice_kept, self._watch = False, False, None
        self._advice_tried, self._ask_again, self._phase_fp = [], None, fp
        self._evidence, self._level = [], 1.0
        self._phase_start, self._start_checked = dict(self.config), False
        warm = self._warm[self.s.guard.warmup_discard:] or self._warm
        self.baseline = sum(warm) / len(warm) if warm else self.previous
        advice = self._query(fp)
        outlier = advice is not None and bool(advice.outlier)
        self.guard.new_phase(self.config, outlier=outlier)
        self.phase.new_phase(config_key(self.config), fp, self.baseline)
        if self.baseline is not None:
            self.guard.best_level = self.baseline
        # the baseline stands for the middle of the readings it averages; a level still moving there
        # is the reference of the advice applied now (guard.trend_t)
        gs = self.s.guard
        trend = warmup_trend(self._warm, t_min=gs.trend_t, at=self.seq - (len(warm) - 1) / 2,
                             until=self.seq + gs.trend_horizon) if self.baseline and gs.trend_horizon else None
        if advice is not None:
            self._advise(advice, trend=trend)

    def _query(self, fp: np.ndarray, exclude: Sequence[Mapping[str, Value]] = (), **measured: Any) -> Any | None:
        if self.query_model is None or not self.s.use_model:
            return None
        try:
            return self.query_model.query(fp, exclude=exclude, **measured)
        except NothingLeft:
            return None
        except PtmtError as exc:
            self._event("error", f"offline model query failed: {exc}")
            return None

    def _advise(self, advice: Any, again: bool = False, refine: bool = False, trend: Trend | None = None) -> bool:
        """Try *advice* as one change when it clears the bar; True if it was applied. *refine*: the
        advice follows kept advice and must promise ``refine_gain`` over the configuration kept.
        For an outlier the neighbours' advice gives way to the database's generalist, and is refined
        only when the measured response weighted the database's workloads. *trend*: the
        warm-up's moving level, which the trial is judged against (the phase's first advice)."""
        if advice.outlier and not refine:
            advice = self._generalist(advice)
            if advice is None:
                return False
        cfg = self._coerce(advice.configuration)
        why = self._reason(advice)
        if again:
            why = f"the previous advice did not pay; next best: {why}"
        if refine:
            over = getattr(advice, "gain_over_current", None)
            if over is None or over < self.s.guard.refine_gain:
                if over is not None:
                    self._event("model", f"kept advice not refined: the best other configuration of the "
                                f"database is expected {over:+.1%} over it (needs {self.s.guard.refine_gain:+.0%})")
                return False
            if advice.outlier and not getattr(advice, "evidence_used", 0):
                self._event("model", f"{self._outlier(advice)}: not applying its advice, exploration budget "
                            f"{self.guard.budget}", **advice.as_dict())
                return False
            why = f"refining kept advice: {over:+.1%} over it expected; {why}"
            if advice.outlier:
                why += "; the workload is an outlier by its fingerprint, matched by its response"
        # an outlier's fingerprint is close to no cluster, so its confidence is 0; refined, the promise
        # stands on the database workloads that answered the kept advice as this one did
        gs = self.s.guard
        confident = advice.confidence >= gs.model_confidence or (refine and advice.outlier)
        weighted = advice.confidence * advice.expected_gain
        if not confident and not advice.outlier and gs.model_weighted_gain > 0 and weighted >= gs.model_weighted_gain:
            confident = True
            why += (f"; below the confidence bar ({gs.model_confidence}), but {advice.expected_gain:+.0%} at "
                    f"confidence {advice.confidence:.2f} weighs {weighted:+.1%}, worth one judged trial")
        if not confident or advice.expected_gain < gs.model_min_gain:
            self._event("model", f"advice not applied: {why} is below the bar (confidence {gs.model_confidence} "
                        f"or confidence x gain {gs.model_weighted_gain:+.0%}; gain {gs.model_min_gain:+.0%})")
            # a loose match says as little as none; a close one that expects nothing is an answer
            if confident or not gs.generalist_unsure or again or refine or advice.outlier:
                return False
            advice = self._generalist(advice, unsure=True)
            if advice is None:
                return False
            cfg, why = self._coerce(advice.configuration), self._reason(advice)
        if cfg == self.config:
            self._event("model", f"already at the advised configuration: {why}")
            return False
        if cfg in self._advice_tried:
            return False  # another raw configuration that snaps to one already tried on this ladder
        # advice that failed earlier in the run is not applied again while the level it failed against
        # holds: the revert's recovery can look like a new phase, which draws the same advice
        failed, how = self.guard.aborted_here(cfg), "aborted"
        if failed is None:
            failed, how = self.guard.rejected_here(cfg), "rejected"
        if failed is not None:
            self._event("model", f"advice not applied: {why}; the same configuration measured {failed.gain:+.1%} "
                        f"at interval {failed.seq} of this run and was {how}, against a baseline within "
                        f"{self.s.guard.abort_fraction:.0%} of this phase's")
            return False
        self._advice_tried.append(cfg)
        self.guard.start_trial(cfg, self.seq, ADVICE, trend=trend)
        self._change(cfg, "model", why, expected_gain=advice.expected_gain, confidence=advice.confidence,
                     cluster=advice.cluster)
        if trend is not None and self.baseline:
            self._event("measure", f"the warm-up's level moves {trend.slope / self.baseline:+.1%} per interval "
                        f"({abs(trend.t):.1f} standard errors): the advice is judged against that line, "
                        f"projected up to {self.s.guard.trend_horizon} intervals ahead")
        return True

    @staticmethod
    def _reason(advice: Any) -> str:
        """What the database said, for the change's log line."""
        if getattr(advice, "method", None) == "generalist":
            best = ", ".join(f"{w} {r - 1:+.0%}" for w, r in advice.workloads.items())
            return (f"best across the database's workloads: median {advice.expected_gain:+.1%} over the defaults, "
                    f"at least as good on {advice.confidence:.0%} of them (best on {best})")
        top = ", ".join(f"{w} {p:.0%}" for w, p in list(advice.workloads.items())[:2])
        why = (f"model suggests {advice.expected_gain:+.0%} for cluster {advice.cluster} "
               f"(confidence {advice.confidence:.2f}; like {top})")
        if getattr(advice, "evidence_used", 0):
            n = advice.evidence_used
            why = why[:-1] + f"; weighted by the response to {n} measured configuration{'s' if n > 1 else ''})"
        return why

    @staticmethod
    def _outlier(advice: Any) -> str:
        return f"workload is an outlier for the database (distance {advice.distance:.1f} > {advice.threshold:.1f})"

    def _generalist(self, advice: Any, unsure: bool = False) -> Any | None:
        """For an outlier (*advice* from its neighbours, not applied), or advice below the bar
        (*unsure*): the database's best configuration across its workloads
        (``QueryModel.generalist``) when it clears ``generalist_share`` and ``model_min_gain``, else
        None; both outcomes are logged."""
        share = self.s.guard.generalist_share
        find = getattr(self.query_model, "generalist", None)
        general = find(exclude=self._advice_tried) if share > 0 and find is not None else None
        if general is not None and (general.confidence < share or general.expected_gain < self.s.guard.model_min_gain):
            self._event("model", f"not tried: the configuration {self._reason(general)} is below the bar (share "
                        f"{share:.0%}, gain {self.s.guard.model_min_gain:+.0%})")
            general = None
        if unsure:
            if general is not None:
                self._event("model", "a loose match says little of this workload: trying the database's best "
                            "configuration across workloads")
            return general
        if general is None:
            self._event("model", f"{self._outlier(advice)}: not applying its advice, exploration budget "
                        f"{self.guard.budget}", **advice.as_dict())
        else:
            self._event("model", f"{self._outlier(advice)}: its nearest workloads say nothing; trying the "
                        f"database's best configuration across workloads", **advice.as_dict())
        return general

    def _coerce(self, config: Mapping[str, Any]) -> dict[str, Value]:
        typed = {}
        for name in self.space.names:
            if name in config and config[name] is not None:
                try:
                    typed[name] = self.space.ladder(name).knob.coerce(config[name])
                except PtmtError:
                    continue
        return self.space.snap({**self.config, **typed})

    def _try_far_end(self) -> bool:
        """Coarse pass of coordinate search, once per phase: each knob straight to the far ends of its
        ladder. Knob effects are often not monotone (TPP's gups loses 5% one rung below the default
        promotion rate limit and gains 4% four rungs below), and one-rung steps judged against noise
        never cross such a valley."""
        g = self.guard
        for ladder in self.space.ladders:
            i = ladder.index(self.config.get(ladder.name, ladder.knob.default))
            for end in (0, len(ladder.values) - 1):
                key = (ladder.name, end)
                if abs(end - i) < 2 or key in self._far_tried:
                    continue
                self._far_tried.add(key)
                outlook = getattr(self.query_model, "value_outlook", None)
                seen = outlook(ladder.name, ladder.values[end]) if outlook is not None and self.s.use_model else None
                if seen is not None and seen < 1.0 - self.s.guard.abort_fraction:
                    log.info("not trying %s=%s: every configuration of the database holding it lost %.0f%% "
                             "or more on most workloads", ladder.name, ladder.values[end], (1 - seen) * 100)
                    continue
                new = {**self.config, ladder.name: ladder.values[end]}
                if not self.space.legal(new) or not g.allowed(ladder.name, new):
                    continue
                self._explore_trial(new, f"{ladder.name} to the far end", ladder.name,
                                    "coordinate search, far end of the ladder, trying")
                return True
        return False

    def _agent_first(self, ranked: Sequence[tuple[int, float]]) -> bool:
        """The agent's top move, when it is confident of it (``agent_first``), goes before the coarse
        pass's next far end, once per phase for each configuration it starts from: kept, the agent
        may go on from there; reverted, the coarse pass goes on."""
        floor = self.s.guard.agent_first
        top = next(((a, p) for a, p in ranked if a != 0), None)
        if floor <= 0 or top is None or top[1] < floor:
            return False
        allowed = self._allowed_move(top[0])
        if allowed is None:
            return False
        move, new = allowed
        key = (str(move), config_key(self.config))
        if key in self._agent_tried:
            return False
        self._agent_tried.add(key)
        self._explore_trial(new, str(move), move.knob, f"agent (p={top[1]:.2f}), confident: before the coarse pass")
        return True

    def _allowed_move(self, action: int) -> tuple[Move, dict[str, Value]] | None:
        """*action*'s move and the configuration it leads to, when the ladder and the guard allow it."""
        move = self.space.move(action)
        new = self.space.apply_move(self.config, move)
        if new is None or move.knob is None or not self.guard.allowed(move.knob, new):
            return None
        return move, new

    def _level_moving(self) -> Trend | None:
        """The line the best known configuration's readings since it was applied move along, when
        they do (``trend_t``), else None."""
        gs, n = self.s.guard, len(self._held)
        if not gs.trend_trials or not gs.trend_horizon:
            return None
        return warmup_trend(list(self._held), t_min=gs.trend_t, at=self.seq - (n - 1) / 2,
                            until=self.seq + gs.trend_horizon)

    def _explore_trial(self, new: dict[str, Value], what: str, knob: str | None, why: str) -> None:
        """Spend one move of the exploration budget on trying *new*, judged as the trial *what*."""
        self.guard.budget -= 1
        trend, n = self._level_moving(), len(self._held)
        level = sum(self._held) / n if trend is not None else None  # the line's level at the readings' middle
        self.guard.start_trial(new, self.seq, what, knob, reference=level, trend=trend, noise=self._held)
        self._change(new, "explore", f"{why}; exploration budget {self.guard.budget} left")
        if trend is not None and level:
            self._event("measure", f"the best known configuration's level still moves {trend.slope / level:+.1%} "
                        f"per interval ({abs(trend.t):.1f} standard errors over its {n} readings): {what} is "
                        f"judged against that line, projected up to {self.s.guard.trend_horizon} intervals ahead")

    def _check_start(self) -> None:
        """Once the budget is spent, measure the phase's starting configuration again, as a trial
        against the best known one. Each kept change was judged against the level just before it;
        a chain of small gains, each within reach of lingering damage from the trial before, can
        end below where the phase started (autonuma gapbs-pr, seed 2: two keeps of +2.4% and +1.8%
        and the run lost 4%). Skipped when the best known level is ``confirm_gain`` or more above
        the phase's baseline, or the phase's advice was confirmed (it measured that much): there
        the check would only cost (autonuma gups -0.9 points; gups-growth's level falls under any
        configuration, so its level never clears the bar, and tpp seed 2 spent 13 intervals at the
        defaults after confirmed advice before aborting the check at -5.3%: +7.2% with it, +13.4%
        without)."""
        g = self.guard
        if self._start_checked or not self._phase_start or not self.s.guard.check_start:
            return
        if config_key(self._phase_start) == config_key(g.best) or g.aborted_here(self._phase_start) is not None:
            self._start_checked = True
            return
        if self._advice_confirmed or (self.baseline and g.best_level and
                                      g.best_level >= self.baseline * (1.0 + self.s.guard.confirm_gain)):
            self._start_checked = True  # confirmed advice, or well above where the phase started: not in doubt
            return
        # the reference is the best configuration's own recent level: it must have run unchanged,
        # settled, for as many intervals as a trial is judged on
        n = self.s.guard.evaluate_intervals
        if self.since_change < self.s.guard.settle_intervals + n or self.seq - self._judged_at < n:
            return
        last = itertools.islice(self.intervals, max(0, len(self.intervals) - n), None)
        recent = [r["objective"] for r in last if r["objective"] is not None]
        if not recent:
            return
        self._start_checked = True
        g.start_trial(self._phase_start, self.seq, START_CHECK, reference=sum(recent) / len(recent))
        self._change(self._phase_start, "explore", "exploration budget spent: measuring the phase's starting "
                     "configuration again against the best known one")

    def _around(self) -> str:
        """How the phase explores on after unconfirmed kept advice, for the log."""
        return "" if self.s.guard.coarse_after_advice else " around it (no coarse pass)"

    def _watching(self, value: float | None) -> bool:
        """Hold kept, unconfirmed advice (``_watch``) for ``confirm_watch`` intervals; then confirm it
        when its level over them is ``confirm_gain`` above the level its trial was judged against
        (autonuma xsbench: +3.1% over the trial's 4 intervals, +8.7% held for the run). True while
        watching."""
        assert self._watch is not None
        reference, readings = self._watch
        if value is not None:
            readings.append(value)
        if len(readings) < self.s.guard.confirm_watch:
            return True
        self._watch = None
        gain = sum(readings) / len(readings) / reference - 1.0 if reference else 0.0
        held = (f"kept advice held {len(readings)} intervals more: {gain:+.1%} over the level its trial was "
                f"judged against")
        if gain >= self.s.guard.confirm_gain:
            self._event("measure", f"{held}; {self._confirm_advice()}", gain=gain)
        else:
            self._event("measure", f"{held}, below {self.s.guard.confirm_gain:+.0%}: the phase explores "
                        f"on{self._around()}, exploration budget {self.guard.budget}", gain=gain)
        return False

    def _confirm_advice(self) -> str:
        """Kept advice measured ``confirm_gain``: exploit it (``confirmed_budget`` moves, no coarse
        pass) for the rest of the phase; returns the log's words for it."""
        self._advice_confirmed = True
        self.guard.budget = min(self.guard.budget, self.s.guard.confirmed_budget)
        return f"the advice is confirmed: no coarse pass this phase, exploration budget {self.guard.budget}"

    def _explore(self, sample: Sample, value: float | None, fp: np.ndarray) -> None:
        g = self.guard
        if self._ask_again:  # advice is not exploration: it spends no budget
            after, self._ask_again = self._ask_again, None
            if len(self._advice_tried) < self.s.guard.advice_tries:
                measured = ({"evidence": list(self._evidence), "reference": dict(self._phase_start),
                             "current": dict(g.best)}
                            if self._evidence and self.s.guard.refine_gain > 0 else {})
                advice = self._query(self._phase_fp, exclude=self._advice_tried, **measured)
                if advice is not None and self._advise(advice, again=after == "failed", refine=after == "kept"):
                    self._watch = None  # refined: the new advice is judged on its own
                    return
        if self._watch is not None and self._watching(value):
            return
        if g.budget <= 0:
            self._check_start()
            return
        candidates: list[tuple[int, float]] = []
        legal = self.space.legal_moves(self.config)
        ranked = None
        if self.agent is not None and self.s.use_agent:
            obs = observation.observe(sample, positions=self.space.positions(self.config), objective=value,
                                      previous=self.previous, baseline=self.baseline,
                                      since_change=self.since_change, fast_nodes=self.fast_nodes, fp=fp)
            ranked = self.agent.ranked(obs, legal)
        coarse = not self._advice_kept or self.s.guard.coarse_after_advice
        if self.s.coarse_search and coarse and not self._advice_confirmed:
            if ranked is not None and self._agent_first(ranked):
                return
            if self._try_far_end():
                return
        if ranked is not None:
            p_stay = next((p for a, p in ranked if a == 0), 0.0)
            if p_stay >= self.s.guard.stay_confidence:
                return
            candidates = [(a, p) for a, p in ranked if a != 0]
            source = "agent"
        else:
            n = self.space.n_actions - 1  # coordinate search: every knob down/up in turn
            order = [1 + (self._fallback_cursor + i) % n for i in range(n)]
            candidates = [(a, float("nan")) for a in order if legal[a]]
            source = "coordinate search"
        for action, p in candidates:
            allowed = self._allowed_move(action)
            if allowed is None:
                continue
            if source == "coordinate search":
                self._fallback_cursor = action % (self.space.n_actions - 1)
            move, new = allowed
            prob = "" if math.isnan(p) else f" (p={p:.2f})"
            self._explore_trial(new, str(move), move.knob, f"{source}{prob}, trying")
            return
