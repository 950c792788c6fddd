"""``ptmt tune`` on the simulated machine: a fresh machine per run, and the default run to compare with.

The tuned run and the default run use the same workload, machine and seed, so they meet the same
placement randomness and the same measurement noise: the difference is the tuner's. Both start
from the backend switched on with every knob at its default; the tuned run's objective is the mean
over the whole run, warm-up and exploration included (what the user would have got).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptmt.backends.registry import backend_for
from ptmt.catalog import Catalog, Value, load_catalog
from ptmt.journal import Journal
from ptmt.online.knobspace import KnobSpace
from ptmt.online.tuner import Recorder, TuneResult, Tuner, TuneSettings
from ptmt.telemetry import Sample


@dataclass(frozen=True)
class SimSetup:
    """The simulated world of one tuning run (the ``ptmt sim`` machine options)."""

    workload: str = "silo-ycsb"
    machine: str | None = None
    fast_gb: float | None = None
    slow_gb: float | None = None
    footprint_gb: float | None = None
    seed: int = 0
    noise: float | None = None

    def host(self, root: Path, backend: str) -> Any:
        from ptmt.sim.host import SimHost
        from ptmt.sim.knobs import kernel_for_backend

        return SimHost(root, machine=self.machine, fast_gb=self.fast_gb, slow_gb=self.slow_gb,
                       workload=self.workload, seed=self.seed, kernel=kernel_for_backend(backend),
                       footprint_gb=self.footprint_gb, noise=self.noise, persist=False)


class HostObjective:
    """The simulated machine's own measurement: the workload's ops/s over the interval."""

    name = "sim"
    unit = "ops/s"
    direction = "max"

    def measure(self, host: Any, sample: Sample) -> float | None:
        return sample.objective

    def describe(self) -> str:
        return "sim (the simulated workload's ops/s, higher is better)"


@dataclass
class SimTuneReport:
    backend: str
    workload: str
    duration_s: float
    interval_s: float
    default_objective: float
    tuned_objective: float
    result: TuneResult
    default_series: list[float] = field(default_factory=list)

    @property
    def improvement(self) -> float:
        return self.tuned_objective / self.default_objective - 1.0 if self.default_objective else 0.0

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"backend": self.backend, "workload": self.workload, "duration_s": self.duration_s,
                "interval_s": self.interval_s, "objective_unit": r.objective_unit,
                "default_objective": self.default_objective, "tuned_objective": self.tuned_objective,
                "improvement": self.improvement, "start_config": _plain(r.start_config),
                "final_config": _plain(r.final_config), "changes": r.changes, "reverts": r.reverts,
                "kept_gain": r.kept_gain, "events": [e.as_dict() for e in r.events],
                "intervals": [{"seq": i["seq"], "t_s": i["t_s"], "objective": i["objective"],
                               "default_objective": self.default_series[n] if n < len(self.default_series) else None,
                               "phase": i["phase"], "config": _plain(i["config"])}
                              for n, i in enumerate(r.intervals)]}


def _plain(config: Mapping[str, Value]) -> dict[str, Any]:
    return {k: v for k, v in config.items()}


def run_static(backend: str, setup: SimSetup, duration: float, interval: float,
               settings: Mapping[str, Value] | None = None, catalog: Catalog | None = None,
               start_interval: int = 0) -> list[float]:
    """Per-interval objective of *setup* under a fixed configuration (the defaults when None),
    applied after *start_interval* intervals under the defaults (0: from the start)."""
    catalog = catalog or load_catalog(backend)
    tmp = Path(tempfile.mkdtemp(prefix="ptmt-static-"))
    try:
        host = setup.host(tmp / "machine", backend)
        b = backend_for(catalog, host)
        journal = Journal(tmp / "state")
        b.apply(b.plan(dict(settings or {}) if start_interval <= 0 else {}, activate=True), journal)
        series, t = [], 0.0
        while t < duration - 1e-9:
            if start_interval > 0 and len(series) == start_interval:
                b.apply(b.plan(dict(settings or {}), activate=True), journal)
            dt = min(interval, duration - t)
            host.advance(dt)
            t += dt
            series.append(host.objective())
        return series
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tune_sim(backend: str, setup: SimSetup, *, duration: float = 1800.0, interval: float = 10.0,
             agent: Any | None = None, query_model: Any | None = None, settings: TuneSettings | None = None,
             knobs: Sequence[str] | None = None, catalog: Catalog | None = None,
             recorder: Recorder | None = None, objective: Any | None = None,
             measure_default: bool = True) -> SimTuneReport:
    """Tune *setup* for *duration* simulated seconds, then run the defaults for comparison."""
    catalog = catalog or load_catalog(backend)
    space = KnobSpace(catalog, knobs)
    settings = settings or TuneSettings()
    settings.interval, settings.duration = interval, duration
    tmp = Path(tempfile.mkdtemp(prefix="ptmt-tune-"))
    try:
        host = setup.host(tmp / "machine", backend)
        tuner = Tuner(host, backend_for(catalog, host), Journal(tmp / "state"), objective=objective or HostObjective(),
                      space=space, agent=agent, query_model=query_model, settings=settings, recorder=recorder)
        result = tuner.run()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    vals = [r["objective"] for r in result.intervals if r["objective"] is not None]
    tuned = sum(vals) / len(vals) if vals else 0.0
    default_series = run_static(backend, setup, duration, interval, catalog=catalog) if measure_default else []
    default = sum(default_series) / len(default_series) if default_series else 0.0
    return SimTuneReport(backend, setup.workload, duration, interval, default, tuned, result, default_series)
