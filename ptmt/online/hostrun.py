"""``ptmt tune --platform linux``: the online tuner on a real host, in wall-clock time.

The real kernel's knob files (through the host's KernelFS, so tests point it at a fake tree), the
user's objective, the knobs this kernel actually has. Nothing is touched before everything is
checked: a journal left by a crashed ptmt, an objective that cannot be read, a knob list with
nothing usable all stop the run with the reason. The journal holds every original value before
the first write, and the originals come back when the run ends, however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ptmt.backends.registry import backend_for
from ptmt.catalog import Catalog, load_catalog
from ptmt.errors import PtmtError
from ptmt.host import Host, default_state_dir
from ptmt.journal import Journal
from ptmt.online.knobspace import KnobSpace
from ptmt.online.objective import ObjectiveSource, default_objective
from ptmt.online.tuner import Recorder, Tuner, TuneResult, TuneSettings
from ptmt.platforms import open_host
from ptmt.sysinfo import tiers

log = logging.getLogger("ptmt.tune")


class SilentObjective:
    """Wraps an objective and warns once when it has given no reading for *patience* intervals."""

    def __init__(self, inner: ObjectiveSource, patience: int = 6) -> None:
        self.inner, self.patience, self.missing, self.warned = inner, patience, 0, False
        self.unit = inner.unit
        self.name = getattr(inner, "name", "objective")

    def measure(self, host: Any, sample: Any) -> float | None:
        value = self.inner.measure(host, sample)
        self.missing = 0 if value is not None else self.missing + 1
        if self.missing >= self.patience and not self.warned:
            self.warned = True
            log.warning("objective %s gave no reading for %d intervals: the tuner cannot judge any change "
                        "until it does (see docs/objectives.md)", self.inner.describe(), self.missing)
        return value

    def describe(self) -> str:
        return self.inner.describe()


def fast_nodes(host: Host) -> tuple[int, ...]:
    """The nodes of the fastest memory tier (node 0 when the kernel shows no tiers)."""
    found = tiers(host.fs)
    return tuple(found[0]["nodes"]) if found else (0,)


def prepare_host(backend: str, *, root: str | Path = "/", state_dir: Path | None = None,
                 catalog: Catalog | None = None, knobs: Sequence[str] | None = None,
                 objective: ObjectiveSource | None = None,
                 catalog_dirs: Sequence[str] = ()) -> tuple[Host, Journal, KnobSpace, ObjectiveSource]:
    """Open and check everything a run needs; raises PtmtError before any knob is written."""
    from ptmt.offline.profile import probe_knobs

    catalog = catalog or load_catalog(backend)
    host = open_host("linux", root)
    state = state_dir or default_state_dir("linux")
    journal = Journal(state)
    pending = journal.entries()
    if pending:
        raise PtmtError(f"the journal in {state} holds {len(pending)} knob change(s) of an earlier ptmt command: "
                        "run `ptmt restore` first, so that tuning starts from (and returns to) the machine's "
                        "own values")
    present, skipped = probe_knobs(catalog, host, tuple(catalog_dirs))
    for name, why in skipped.items():
        log.info("not tuning %s: %s", name, why)
    asked = KnobSpace(catalog, knobs).names if knobs is not None else list(catalog.knobs)  # names unknown ones
    wanted = [k for k in asked if k in present]
    if not wanted:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "none asked for"
        raise PtmtError(f"backend {catalog.name}: no tunable knob is usable here ({reasons})")
    space = KnobSpace(catalog, wanted)
    source = objective or default_objective(host)
    source.check(host)
    return host, journal, space, source


def tune_host(backend: str, *, root: str | Path = "/", state_dir: Path | None = None,
              duration: float | None = None, interval: float = 10.0, agent: Any | None = None,
              query_model: Any | None = None, settings: TuneSettings | None = None,
              knobs: Sequence[str] | None = None, catalog: Catalog | None = None,
              recorder: Recorder | None = None, objective: ObjectiveSource | None = None,
              stop: Callable[[], bool] = lambda: False,
              prepared: tuple[Host, Journal, KnobSpace, ObjectiveSource] | None = None) -> TuneResult:
    """Tune the real host until *duration* seconds have passed (None: until *stop()* says so)."""
    catalog = catalog or load_catalog(backend)
    host, journal, space, source = prepared or prepare_host(backend, root=root, state_dir=state_dir,
                                                            catalog=catalog, knobs=knobs, objective=objective)
    settings = settings or TuneSettings()
    settings.interval, settings.duration = interval, duration
    tuner = Tuner(host, backend_for(catalog, host), journal, objective=SilentObjective(source), space=space,
                  agent=agent, query_model=query_model, settings=settings, recorder=recorder,
                  fast_nodes=fast_nodes(host))
    return tuner.run(stop=stop)
