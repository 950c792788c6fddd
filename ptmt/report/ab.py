"""``ptmt report --run-ab``: interleaved default and tuned runs on the simulated machine, recorded.

Pair *i* runs the defaults, then the tuner, on the same simulated machine with seed ``seed + i``:
one seed within a pair (same placement randomness and measurement noise, so the ratio isolates the
tuner), a different seed per pair (so the pairs sample that randomness). Both runs are recorded as
``ptmt tune --db`` records them (modes ``default`` and ``tune``) and carry the pair's id in
``settings["ab_pair"]``, which :func:`ptmt.report.data.pair_runs` uses.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptmt.errors import PtmtError


@dataclass(frozen=True)
class PairResult:
    seed: int
    default_token: str
    tuned_token: str
    default_objective: float
    tuned_objective: float


def run_ab(backend: str, workload: str, *, repeat: int, db: str | None, duration: float = 600.0,
           interval: float = 10.0, seed: int = 0, catalog: Any = None, agent: Any = None,
           query_model: Any = None, machine: str | None = None, label: str | None = None,
           progress: Callable[[int, PairResult], None] | None = None) -> list[PairResult]:
    """Run *repeat* interleaved pairs (default, tuned) and record them into *db*."""
    from ptmt.catalog import load_catalog
    from ptmt.online.knobspace import KnobSpace
    from ptmt.online.recording import open_recorder, record_static_run
    from ptmt.online.simrun import SimSetup, run_static, tune_sim
    from ptmt.online.tuner import TuneSettings
    from ptmt.sim.specs import resolve

    if repeat < 1:
        raise PtmtError(f"--repeat must be at least 1 (got {repeat})")
    if duration <= 0 or interval <= 0 or interval > duration:
        raise PtmtError(f"--duration and --interval must be positive, interval ≤ duration "
                        f"(got {duration}, {interval})")
    resolve("workloads", workload)  # an unknown workload fails here, naming the built-in ones
    catalog = catalog or load_catalog(backend)
    defaults = KnobSpace(catalog).defaults()
    results = []
    for i in range(repeat):
        setup = SimSetup(workload=workload, machine=machine, seed=seed + i)
        settings = TuneSettings(interval=interval, duration=duration)
        recorded = {**settings.as_dict(), "ab_pair": uuid.uuid4().hex, "ab_index": i, "ab_repeat": repeat}
        tmp = Path(tempfile.mkdtemp(prefix="ptmt-ab-"))
        try:
            probe = setup.host(tmp / "machine", backend)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        def recorder(mode: str) -> Any:
            return open_recorder(db, catalog, probe, platform="sim", mode=mode, workload=workload,
                                 settings=recorded, seed=setup.seed, label=label)

        rec = recorder("default")
        try:
            series = run_static(backend, setup, duration, interval, catalog=catalog)
        except BaseException:
            rec.close("failed")
            raise
        record_static_run(rec, series, interval, defaults)
        trec = recorder("tune")
        try:
            report = tune_sim(backend, setup, duration=duration, interval=interval, agent=agent,
                              query_model=query_model, catalog=catalog, recorder=trec, settings=settings,
                              measure_default=False)
        except BaseException:
            trec.close("failed")
            raise
        summary = {k: v for k, v in report.as_dict().items() if k not in ("events", "intervals")}
        summary.pop("default_objective", None)
        summary.pop("improvement", None)
        trec.close("finished", report.result.final_config, summary)
        result = PairResult(seed=setup.seed, default_token=rec.token, tuned_token=trec.token,
                            default_objective=sum(series) / len(series), tuned_objective=report.tuned_objective)
        results.append(result)
        if progress is not None:
            progress(i, result)
    return results
