"""One experiment on a fresh simulated machine: enable a backend, set knobs, run, summarise.

Used by ``ptmt sim run``, the tests and the calibration benchmark. Knobs go through the foundation's
backends (catalog validation, journal, read-back) exactly as on a real host; the machine lives in a
temporary directory that is removed afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptmt.errors import PtmtError
from ptmt.sim.host import SimHost
from ptmt.sim.knobs import kernel_for_backend

#: Backend name meaning "no tiering at all" (numa_balancing=0, demotion off: Linux defaults).
NO_TIERING = "none"


@dataclass
class Interval:
    t: float
    ops_s: float
    fast_share: float
    promoted_mb_s: float
    demoted_mb_s: float
    hint_faults_s: float
    free_fast_mb: float


@dataclass
class RunResult:
    backend: str
    workload: str
    machine: str
    duration_s: float
    throughput_ops_s: float
    fast_tier_access_ratio: float
    config: dict[str, str]
    counters: dict[str, int]
    perf: dict[str, int]
    intervals: list[Interval] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["intervals"] = [i.__dict__ for i in self.intervals]
        return d


def apply_backend(host: SimHost, backend: str, settings: Mapping[str, str], state_dir: Path) -> None:
    """Activate ``backend`` with ``settings`` through the foundation's backend layer."""
    from ptmt.backends.registry import open_backend
    from ptmt.journal import Journal

    if backend == NO_TIERING:
        if settings:
            raise PtmtError(f"--set needs a backend; backend {NO_TIERING!r} has no knobs")
        return
    b = open_backend(backend, host)
    b.apply(b.plan(dict(settings), activate=True), Journal(state_dir))


def _vm(host: SimHost) -> dict[str, int]:
    return host.counters()


def run(backend: str, workload: str, duration: float = 300.0, interval: float = 10.0,
        settings: Mapping[str, str] | None = None, machine: str | None = None, fast_gb: float | None = None,
        slow_gb: float | None = None, seed: int = 0, footprint_gb: float | None = None,
        noise: float | None = None, step: float | None = None) -> RunResult:
    """Run ``workload`` for ``duration`` simulated seconds under ``backend`` configured by ``settings``.

    ``step`` is the engine's time step (default 1 s). Hint faults are taken once per step, after all
    the scan windows due in it, so a page is unmapped at most once per step: a scan period shorter
    than the step cannot show in the counters. Use a step below the shortest scan period that matters."""
    with tempfile.TemporaryDirectory(prefix="ptmt-sim-") as tmp:
        root = Path(tmp) / "machine"
        host = SimHost(root, machine=machine, fast_gb=fast_gb, slow_gb=slow_gb, workload=workload, seed=seed,
                       kernel=kernel_for_backend(backend), footprint_gb=footprint_gb, noise=noise,
                       persist=False, interval=step)
        apply_backend(host, backend, settings or {}, Path(tmp) / "state")
        intervals: list[Interval] = []
        before = _vm(host)
        ops_total = 0.0
        t = 0.0
        page_mb = 4096 / 2**20
        while t < duration - 1e-9:
            dt = min(interval, duration - t)
            host.advance(dt)
            t += dt
            obj = host.objective()
            ops_total += obj * dt
            now = _vm(host)
            delta = {k: now.get(k, 0) - before.get(k, 0) for k in now}
            before = now
            intervals.append(Interval(
                t=host.now(), ops_s=obj, fast_share=host.fast_tier_access_ratio(),
                promoted_mb_s=delta.get("pgpromote_success", 0) * page_mb / dt,
                demoted_mb_s=(delta.get("pgdemote_kswapd", 0) + delta.get("pgdemote_direct", 0)) * page_mb / dt,
                hint_faults_s=delta.get("numa_hint_faults", 0) / dt,
                free_fast_mb=host.engine.mem.free_fast * host.machine.frame_bytes / 2**20))
        accesses = sum(i.fast_share for i in intervals)
        return RunResult(
            backend=backend, workload=host.workload.name, machine=host.machine.name, duration_s=duration,
            throughput_ops_s=ops_total / duration if duration else 0.0,
            fast_tier_access_ratio=accesses / len(intervals) if intervals else host.fast_tier_access_ratio(),
            config=host.config(), counters=_vm(host), perf=host.perf_counters(), intervals=intervals)
