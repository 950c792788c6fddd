"""How long a change takes to show: one configuration against the unchanged one, from one state.

An online tuner judges a change by the readings just after it (``settle_intervals`` not judged,
then ``evaluate_intervals`` averaged). That is only fair when the change's effect is there by then.
On a tiered-memory machine it often is not: a new promotion rate limit or scan rate moves the hot
set into the fast tier over minutes, at the pace the policy migrates pages.

The simulated machine can answer what a real one cannot: what the same instant would have
become under either configuration. :func:`measure_response` runs the workload under the
starting configuration for ``switch_at`` intervals, forks the machine (``SimHost.fork``: same
placement, same clock, same measurement noise) and runs one fork with the new configuration and
the other unchanged. Their ratio per interval is the change's effect, free of the workload's drift
and of the noise, as it builds up.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptmt.backends.registry import backend_for
from ptmt.catalog import Catalog, Value, load_catalog
from ptmt.journal import Journal
from ptmt.online.simrun import SimSetup

#: the rolling window over which "the effect has arrived" is judged (intervals)
ARRIVAL_WINDOW = 5


@dataclass(frozen=True)
class Response:
    """The objective of the changed fork and of the unchanged one, per interval after the switch."""

    changed: tuple[float, ...]
    unchanged: tuple[float, ...]

    def gain(self, start: int = 0, stop: int | None = None) -> float:
        """The changed fork's mean over the unchanged one's, intervals ``start`` to ``stop`` (0 = the
        first interval after the switch), as a fraction."""
        a, r = self.changed[start:stop], self.unchanged[start:stop]
        if not a or not sum(r):
            return 0.0
        return (sum(a) / len(a)) / (sum(r) / len(r)) - 1.0

    @property
    def steady(self) -> float:
        """The effect once it has built up: the gain over the second half of the intervals."""
        return self.gain(len(self.changed) // 2)

    def judged(self, settle: int, evaluate: int) -> float:
        """What a trial of ``settle`` + ``evaluate`` intervals would see of it, with no drift or noise."""
        return self.gain(settle, settle + evaluate)

    def windows(self, size: int = ARRIVAL_WINDOW) -> list[float]:
        """The gain over consecutive windows of *size* intervals."""
        return [self.gain(k, k + size) for k in range(0, len(self.changed) - size + 1, size)]

    def arrival(self, share: float = 0.9, size: int = ARRIVAL_WINDOW) -> int | None:
        """The first interval after the switch from which the gain over the next *size* intervals
        reaches *share* of the steady gain (1 = the first interval); None when there is no steady
        gain to reach or it is never reached."""
        target = self.steady * share
        if self.steady <= 0:
            return None
        for k in range(len(self.changed) - size + 1):
            if self.gain(k, k + size) >= target:
                return k + 1
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"changed": list(self.changed), "unchanged": list(self.unchanged), "steady": self.steady,
                "windows": self.windows(), "arrival": self.arrival()}


def measure_response(backend: str, setup: SimSetup, config: Mapping[str, Value], *, switch_at: int = 6,
                     intervals: int = 60, interval: float = 10.0, start: Mapping[str, Value] | None = None,
                     catalog: Catalog | None = None) -> Response:
    """Run *setup* under *start* (the backend's defaults when None) for *switch_at* intervals, then
    *config* (knobs it leaves out keep their values) in one fork and nothing new in the other, for
    *intervals* intervals each."""
    if switch_at < 0 or intervals < 1:
        raise ValueError(f"switch_at must be >= 0 and intervals >= 1 (got {switch_at}, {intervals})")
    catalog = catalog or load_catalog(backend)
    tmp = Path(tempfile.mkdtemp(prefix="ptmt-response-"))
    try:
        host = setup.host(tmp / "machine", backend)
        be = backend_for(catalog, host)
        be.apply(be.plan(dict(start or {}), activate=True), Journal(tmp / "state"))
        for _ in range(switch_at):
            host.advance(interval)
        runs: list[tuple[float, ...]] = []
        for name, change in (("changed", config), ("unchanged", None)):
            fork = host.fork(tmp / name)
            if change is not None:
                fb = backend_for(catalog, fork)
                fb.apply(fb.plan(dict(change)), Journal(tmp / f"{name}-state"))
            series = []
            for _ in range(intervals):
                fork.advance(interval)
                series.append(fork.objective())
            runs.append(tuple(series))
        return Response(*runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

