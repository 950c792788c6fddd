"""A performance database of the whole built-in workload suite, and leave-one-workload-out models from it.

The online tuner's claims (tests/online, benchmarks/evaluate) must show generalisation, not memory:
the query model that advises on workload W is fitted on every other workload's trials. Sweeping
the suite once and fitting one model per held-out workload from the same per-trial table costs one
sweep, not twelve.

    url = build_suite_database("tpp", "sqlite:///suite.db", budget=16, duration=180)
    table = suite_table(url, "tpp")
    model = leave_one_out(table, "tpp", "gups")     # trained without any gups trial
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ptmt.catalog import Catalog, load_catalog
from ptmt.db import open_storage
from ptmt.offline.model import ModelError, QueryModel, fit_table, load_table
from ptmt.offline.profile import Prepared, ProfileOptions, StopFlag, prepare, work
from ptmt.offline.shared import SHARED, found_by


#: the shared study per workload the evaluation adds to its suite sweep: the defaults and each other
#: built-in workload's best configuration (docs/results-history.md, "A shared study per workload")
SHARE = 13

#: enough for every one-knob-at-a-time point of the built-in catalogs (upm 12 ... colloid 34)
SCREEN_BUDGET = 64


def suite_database_name(backend: str, budget: int, duration: float, screen: bool = False,
                        strategy: str = "sobol", share: int = 0, seed: int = 0) -> str:
    """The file name a suite database is cached under: what built it (``tpp-16-180-<sim>.db``,
    ``tpp-16s-180-<sim>.db``, ``tpp-tpe48-180-<sim>.db``, ``tpp-tpe48+shared24-180-<sim>.db``, and
    ``tpp-tpe48-180-seed1-<sim>.db`` for another sweep seed), ``<sim>`` the simulator's digest, so
    that a database an earlier simulator filled is never reused."""
    from ptmt.sim.digest import simulator_digest

    kind = "" if strategy == "sobol" else strategy
    shared = f"+{SHARED}{share}" if share else ""
    seeded = f"-seed{seed}" if seed else ""
    return f"{backend}-{kind}{budget}{'s' if screen else ''}{shared}-{int(duration)}{seeded}-{simulator_digest()}.db"


def _run(preps: list[Prepared], url: str, workers: int, backend: str) -> None:
    """Run every planned trial of *preps*, in *workers* processes."""
    if workers <= 1:
        _worker(preps, 0, url)
        return
    # fork: callers need no __main__ guard, and the workers open their own database connections
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(preps, k * len(preps) // workers, url)) for k in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise ModelError(f"suite sweep of {backend}: {len(failed)} worker process(es) failed (exit {failed})")


def _worker(preps: list[Prepared], offset: int, url: str) -> None:
    stop = StopFlag()
    with open_storage(url, create=False) as db:
        for i in range(len(preps)):  # start on different studies, then help with the rest
            work(preps[(i + offset) % len(preps)], db, stop)


def plan_suite(backend: str, url: str, workloads: Sequence[str], *, budget: int, duration: float,
               interval: float = 10.0, seed: int = 0, sim: dict[str, Any] | None = None,
               strategy: str = "sobol") -> list[Prepared]:
    """One study per workload on the simulated machine (already planned studies are reused)."""
    with open_storage(url) as db:
        return [prepare(ProfileOptions(backend=backend, workload=w, platform="sim", strategy=strategy,
                                       budget=budget, duration=duration, interval=interval, db=url, seed=seed,
                                       sim=dict(sim or {}), show_progress=False), db) for w in workloads]


def build_suite_database(backend: str, url: str, workloads: Sequence[str] | None = None, *, budget: int = 16,
                         duration: float = 180.0, interval: float = 10.0, workers: int = 2, seed: int = 0,
                         sim: dict[str, Any] | None = None, screen: bool = False,
                         strategy: str = "sobol", share: int = 0) -> str:
    """Sweep *workloads* (default: the built-in suite) into the database at *url*; returns *url*.

    *budget* configurations per workload, drawn by *strategy* (``sobol``; ``tpe``: a Sobol start,
    then rounds that gather where each workload gains); with *screen*, also a one-knob-at-a-time
    study of every workload (``--strategy oat``: each knob alone at each of its values). With
    *share*, then a ``shared`` study of *share* configurations per workload: the other workloads'
    best ones (``ptmt.offline.shared``).

    Worker processes claim trials study after study, as ``ptmt profile --workers`` does, so both
    cores stay busy across workload boundaries. Interrupted or partial sweeps resume.
    """
    from ptmt.sim.specs import builtin_names

    names = list(workloads) if workloads is not None else builtin_names("workloads")
    preps = plan_suite(backend, url, names, budget=budget, duration=duration, interval=interval, seed=seed, sim=sim,
                       strategy=strategy)
    if screen:
        preps += plan_suite(backend, url, names, budget=SCREEN_BUDGET, duration=duration, interval=interval,
                            seed=seed, sim=sim, strategy="oat")
    _run(preps, url, workers, backend)
    if share:  # planned from the finished sweep: each workload's best configurations, measured on the others
        _run(plan_suite(backend, url, names, budget=share, duration=duration, interval=interval, seed=seed, sim=sim,
                        strategy=SHARED), url, workers, backend)
    return url


def cached_suite_database(cache_dir: Path, backend: str, *, budget: int, duration: float, screen: bool = False,
                          strategy: str = "sobol", share: int = 0, seed: int = 0, workers: int = 2) -> str:
    """The suite database of these settings in *cache_dir*, under the name they give it
    (:func:`suite_database_name`), built or completed first; returns its URL."""
    name = suite_database_name(backend, budget, duration, screen, strategy, share, seed)
    return build_suite_database(backend, f"sqlite:///{cache_dir / name}", budget=budget, duration=duration,
                                workers=workers, seed=seed, screen=screen, strategy=strategy, share=share)


def suite_table(url: str, backend: str, catalog: Catalog | None = None) -> pd.DataFrame:
    """The per-trial table (fingerprints, perf, knobs) of *backend*'s trials in the database at *url*."""
    catalog = catalog or load_catalog(backend)
    with open_storage(url, create=False) as db:
        return load_table(db, backend, catalog.hash)


def leave_one_out(table: pd.DataFrame, backend: str, workload: str, catalog: Catalog | None = None,
                  seed: int = 0) -> QueryModel:
    """The query model of *backend* fitted on every workload of *table* except *workload*."""
    catalog = catalog or load_catalog(backend)
    rest = table[table["workload"] != workload]
    if "strategy" in rest.columns and (rest["strategy"] == SHARED).any():
        # a configuration only the left-out workload's own sweep found says what suits that workload
        finders = found_by(table)
        leaked = rest["config_hash"].map(lambda h: not (finders.get(h, set()) - {workload}))
        rest = rest[~((rest["strategy"] == SHARED) & leaked)]
    if rest.empty:
        raise ModelError(f"leaving out {workload} leaves no trial of {backend} to fit on")
    if rest["workload"].nunique() == table["workload"].nunique():
        raise ModelError(f"workload {workload!r} is not in the table (has: "
                         f"{', '.join(sorted(table['workload'].unique()))})")
    return fit_table(rest.reset_index(drop=True), backend=backend, catalog_hash=catalog.hash,
                     knob_names=list(catalog.knobs), defaults=catalog.defaults(), seed=seed,
                     extra_meta={"left_out": workload})
