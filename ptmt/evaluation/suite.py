"""Methods, the static oracle and the metrics of the evaluation suite.

- ``oracle_grid``: every combination of the ladders of the *k* most sensitive knobs (ranked by
  ``ptmt.offline.analyze.sensitivity`` on the suite sweep), the other knobs at their defaults, plus
  each workload's best configuration of the suite sweep; ``finals_beyond`` adds the configuration
  each online method of the same run ended with. The static oracle is the best of these, each run
  from the start for the whole budget on the same seed: an upper bound for that grid only, but
  never below a static setting one of the methods found (a tuner that ends on a configuration
  outside the grid would otherwise "beat the oracle" with a setting the oracle never tried).
- ``per_phase_oracle``: for phase-changing workloads, the best grid configuration of each phase
  segment, taken from the same static runs (switching costs are not paid: an optimistic estimate).
- ``late_oracle``: the static oracle's best configurations of that sweep applied only once the
  tuner's warm-up is over, under the defaults before (what an online method that starts under the
  defaults and measures a baseline first could reach without paying for trials). Part of the
  static oracle's gain comes from a hot set placed from the first second; this one shows how much
  of the headroom is reachable at all once the workload runs.
- ``headroom_fraction``: improvement / oracle improvement, only where the oracle beats the noise.
- ``intervals_to_90``: the first interval from which the 5-interval rolling gain over the same-seed
  defaults reaches 90% of the final gain (the mean gain of the last fifth of the run).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import yaml

from ptmt.catalog import Value, load_catalog
from ptmt.online.guard import config_key
from ptmt.online.knobspace import KnobSpace
from ptmt.online.simrun import SimSetup, run_static, tune_sim
from ptmt.sim.digest import simulator_digest
from ptmt.sim.specs import resolve

METHODS = ("default", "hybrid", "rl_only", "db_only", "random", "tpe", "oracle", "phase_oracle", "late_oracle")
#: the methods read from the static sweep rather than run as tuners (bounds, not baselines)
ORACLES = ("oracle", "phase_oracle", "late_oracle")
#: the methods that query the suite database: their results depend on its sweep seed (the sweep's
#: luck), so an evaluation may average them over databases of several sweep seeds
DB_METHODS = ("hybrid", "db_only")
#: the configurations of the static sweep, best first, that the late oracle applies after the warm-up
LATE_ORACLE_TOP = 5
#: an oracle gain below this is treated as no headroom (with the per-interval noise test below)
MIN_HEADROOM = 0.01


def ranked_knobs(table: pd.DataFrame, backend: str) -> list[str]:
    """Knob names, most sensitive first, from the suite sweep's trials."""
    from ptmt.offline.analyze import sensitivity

    cat = load_catalog(backend)
    sens = sensitivity(table, backend, defaults=cat.defaults(), n_estimators=50, repeats=3)
    return [k.knob for k in sens.knobs]


def sweep_best_configs(table: pd.DataFrame) -> list[dict[str, Value]]:
    """Each workload's best-measured configuration of the suite sweep."""
    cols = [c for c in table.columns if c.startswith("knob.")]
    done = table[table["status"] == "done"]
    out = []
    for _w, rows in done.groupby("workload"):
        best = rows.loc[rows["perf"].idxmax()]
        out.append({c[5:]: _py(best[c]) for c in cols if not pd.isna(best[c])})
    return out


def _py(v: Any) -> Value:
    return v.item() if isinstance(v, np.generic) else v


def oracle_grid(backend: str, top_knobs: Sequence[str], k: int,
                extra: Sequence[Mapping[str, Value]] = ()) -> list[dict[str, Value]]:
    """Full factorial over the ladders of ``top_knobs[:k]`` (others default), plus *extra*; legal only."""
    space = KnobSpace(load_catalog(backend))
    names = [n for n in top_knobs if n in space.names][:k]
    base = space.defaults()
    grid: list[dict[str, Value]] = []
    seen: set[str] = set()
    candidates = [{**base, **dict(zip(names, vals, strict=True))}
                  for vals in product(*(space.ladder(n).values for n in names))]
    for cfg in [*candidates, *({**base, **dict(e)} for e in extra)]:
        key = config_key(cfg)
        if key not in seen and space.legal(cfg):
            seen.add(key)
            grid.append(cfg)
    return grid


def finals_beyond(grid: Sequence[Mapping[str, Value]], finals: Mapping[str, Mapping[str, Value]]
                  ) -> dict[str, dict[str, Value]]:
    """The configurations the methods ended with (*finals*: method -> configuration) that *grid* does
    not hold, each once, under the name of the first method that ended on it."""
    seen = {config_key(c) for c in grid}
    out: dict[str, dict[str, Value]] = {}
    for method, cfg in finals.items():
        key = config_key(cfg)
        if key not in seen:
            seen.add(key)
            out[method] = dict(cfg)
    return out


def prior_candidates(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, int], list[dict[str, Value]]]:
    """Per (backend, workload, seed) of earlier evaluations' runs (their ``--json`` files' ``runs``,
    one list): the configurations they found best, each once: the static oracle's, the late
    oracle's and every method's ending. An evaluation of another duration sweeps these instead of
    the whole grid: the grid's best and what the online methods found, at a fraction of the cost (a
    weaker bound than the grid when the best static configuration changes with the duration; the
    new run's own endings are added to it as always)."""
    out: dict[tuple[str, str, int], list[dict[str, Value]]] = {}
    seen: dict[tuple[str, str, int], set[str]] = {}
    for run in runs:
        key = (str(run["backend"]), str(run["workload"]), int(run["seed"]))
        found = [run.get("oracle_config"), run.get("late_oracle_config"), *(run.get("final_configs") or {}).values()]
        for cfg in found:
            if cfg and config_key(cfg) not in seen.setdefault(key, set()):
                seen[key].add(config_key(cfg))
                out.setdefault(key, []).append(dict(cfg))
    return out


def phase_segments(workload: str, n_intervals: int, interval: float) -> list[tuple[int, int]]:
    """Interval index ranges [start, end) of the workload's phase segments (one when it has none)."""
    spec = yaml.safe_load(Path(resolve("workloads", workload)).read_text())
    phases = spec.get("phases") or []
    if not phases:
        return [(0, n_intervals)]
    repeat = spec.get("repeat_phases", True)
    bounds, t, i = [0], 0.0, 0
    horizon = n_intervals * interval
    while True:
        t += float(phases[i % len(phases)]["duration_s"])
        if t >= horizon - 1e-9:
            break
        bounds.append(int(round(t / interval)))
        i += 1
        if not repeat and i >= len(phases):
            break
    bounds.append(n_intervals)
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def sweep_oracle(backend: str, setup: SimSetup, grid: Sequence[Mapping[str, Value]], *, duration: float,
                 interval: float, cache: Path | None = None) -> list[dict[str, Any]]:
    """Static runs of every grid configuration: ``[{"config", "series"}]`` (cached as JSON, keyed by
    the simulator's digest as well: a new simulator runs them again)."""
    key = hashlib.sha256(json.dumps([backend, setup.workload, setup.seed, duration, interval, simulator_digest(),
                                     list(map(dict, grid))], sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache / f"oracle-{backend}-{setup.workload}-s{setup.seed}-{key}.json" if cache else None
    if path and path.is_file():
        return json.loads(path.read_text())
    out = [{"config": dict(cfg), "series": run_static(backend, setup, duration, interval, dict(cfg))} for cfg in grid]
    if path:
        path.write_text(json.dumps(out, default=str))
    return out


def late_oracle(backend: str, setup: SimSetup, runs: Sequence[Mapping[str, Any]], *, start_interval: int,
                duration: float, interval: float, top: int = LATE_ORACLE_TOP,
                cache: Path | None = None) -> list[dict[str, Any]]:
    """The *top* best configurations of the static sweep *runs*, each run with the defaults for the
    first *start_interval* intervals and then applied: ``[{"config", "series"}]``, best from the
    start first (cached like :func:`sweep_oracle`). The late oracle is the best of them."""
    ranked = sorted(runs, key=lambda r: -float(np.mean(r["series"])))[:top]
    grid = [dict(r["config"]) for r in ranked]
    key = hashlib.sha256(json.dumps([backend, setup.workload, setup.seed, duration, interval, start_interval,
                                     simulator_digest(), grid], sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache / f"late-oracle-{backend}-{setup.workload}-s{setup.seed}-{key}.json" if cache else None
    if path and path.is_file():
        return json.loads(path.read_text())
    out = [{"config": cfg, "series": run_static(backend, setup, duration, interval, cfg,
                                                start_interval=start_interval)} for cfg in grid]
    if path:
        path.write_text(json.dumps(out, default=str))
    return out


def best_static(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: float(np.mean(r["series"])))


def per_phase_oracle(runs: Sequence[Mapping[str, Any]], segments: Sequence[tuple[int, int]]) -> list[float]:
    """Per interval: in each segment, the series of the grid configuration best over that segment."""
    out: list[float] = []
    for a, b in segments:
        best = max(runs, key=lambda r: float(np.mean(r["series"][a:b])))
        out.extend(best["series"][a:b])
    return out


def noise_threshold(default: Sequence[float], other: Sequence[float]) -> float:
    """Twice the standard error of the mean per-interval ratio other/default, at least MIN_HEADROOM."""
    r = np.asarray(other, float) / np.asarray(default, float)
    se = float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else 0.0
    return max(MIN_HEADROOM, 2 * se)


def headroom_fraction(improvement: float, oracle_improvement: float, threshold: float) -> float | None:
    """Share of the oracle's gain a method captured; None when the oracle has no headroom."""
    if oracle_improvement is None or oracle_improvement <= threshold:
        return None
    return improvement / oracle_improvement


def intervals_to_90(series: Sequence[float], default: Sequence[float], window: int = 5) -> int | None:
    """First interval (1-based) whose rolling gain reaches 90% of the final gain; None without gain."""
    g = np.asarray(series, float) / np.asarray(default, float) - 1.0
    n = len(g)
    if n < window:
        return None
    final = float(g[-max(1, n // 5):].mean())
    if final <= 0:
        return None
    roll = np.convolve(g, np.ones(window) / window, mode="valid")
    hit = np.nonzero(roll >= 0.9 * final)[0]
    return int(hit[0]) + window if len(hit) else None


def improvement(series: Sequence[float], default: Sequence[float]) -> float:
    return float(np.mean(series) / np.mean(default) - 1.0)


class MethodRun(NamedTuple):
    """One method's run: its objective per interval, the configuration it ended with, and, for the
    tuner's methods, what its verdicts claimed (``TuneResult.kept_gain``; None for the searches)."""

    series: list[float]
    final_config: dict[str, Value]
    kept_gain: float | None = None


def run_method(method: str, backend: str, setup: SimSetup, *, duration: float, interval: float,
               query_model: Any = None, agent: Any = None) -> MethodRun:
    """One method's run on the simulated machine."""
    from ptmt.online.guard import GuardSettings
    from ptmt.online.tuner import TuneSettings

    if method in ("random", "tpe"):
        from ptmt.evaluation.search import run_search

        found = run_search(backend, setup, method, duration=duration, interval=interval, seed=setup.seed)
        return MethodRun(found.series, dict(found.best))
    if method == "hybrid":
        settings, qm, ag = TuneSettings(), query_model, agent
    elif method == "rl_only":
        settings, qm, ag = TuneSettings(use_model=False), None, agent
    elif method == "db_only":
        settings = TuneSettings(use_agent=False, coarse_search=False,
                                guard=GuardSettings(exploration_budget=0, outlier_budget=0))
        qm, ag = query_model, None
    else:
        raise ValueError(f"unknown method {method!r}")
    rep = tune_sim(backend, setup, duration=duration, interval=interval, agent=ag, query_model=qm,
                   settings=settings, measure_default=False)
    return MethodRun([float(r["objective"]) for r in rep.result.intervals], dict(rep.result.final_config),
                     rep.result.kept_gain)
