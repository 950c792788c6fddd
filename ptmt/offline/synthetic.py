"""Synthetic performance databases with a known ground truth (tests, benchmarks, demos).

Workloads come in *groups* with distinct telemetry (hint-fault rate, fast-tier free memory, fast-tier
access share, IPC) and opposite tastes:

- group ``hot``: wants a large ``scan_size_mb`` and a high promotion rate limit;
- group ``thrash``: wants a small scan size and a low rate limit (eager promotion ping-pongs);
- group ``mid``: best in the middle of both.

``scan_size_mb`` moves the objective by about ±25 %, ``numa_balancing_promote_rate_limit_MBps``
by about ±8 %, ``watermark_scale_factor`` by about 3 %, and ``scan_delay_ms`` not at all.
Everything is written through the storage API, except that ``bulk=True`` inserts trials'
results and samples with executemany statements (millions of rows in seconds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GROUPS = ("hot", "thrash", "mid")
FAST_GIB, SLOW_GIB = 16, 64
VARIED = ("scan_size_mb", "numa_balancing_promote_rate_limit_MBps", "watermark_scale_factor",
          "scan_delay_ms")

_GROUP_TRAITS = {  # hint faults /s/GiB, local share, fast free, fast access share, ipc, demote ratio
    "hot": (900.0, 0.55, 0.02, 0.82, 1.4, 0.9),
    "thrash": (150.0, 0.15, 0.30, 0.35, 0.45, 0.3),
    "mid": (3000.0, 0.35, 0.12, 0.60, 0.9, 0.6),
}


@dataclass(frozen=True)
class SynthWorkload:
    name: str
    group: str
    base: float  # objective scale (ops/s)
    traits: tuple[float, ...]


def workloads(per_group: int = 2, seed: int = 0, groups: Sequence[str] = GROUPS) -> list[SynthWorkload]:
    rng = np.random.default_rng(seed)
    out = []
    for g in groups:
        for i in range(per_group):
            jitter = rng.normal(0, 0.06, size=6)
            t = tuple(float(v * (1 + j)) for v, j in zip(_GROUP_TRAITS[g], jitter, strict=True))
            out.append(SynthWorkload(f"{g}-{i}", g, float(rng.uniform(50, 500)), t))
    return out


def _x(value: float, lo: float, hi: float) -> float:
    return (math.log2(value) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))


def _taste(group: str, x: float) -> float:
    if group == "hot":
        return x
    if group == "thrash":
        return 1 - x
    return 1 - 2 * abs(x - 0.5)


def true_perf(w: SynthWorkload, knobs: dict[str, Any]) -> float:
    """The noise-free objective of workload *w* under *knobs* (higher is better)."""
    s = _taste(w.group, _x(knobs["scan_size_mb"], 64, 1024))
    r = _taste(w.group, _x(knobs["numa_balancing_promote_rate_limit_MBps"], 256, 65536))
    m = _x(knobs["watermark_scale_factor"], 10, 1000)
    return w.base * (0.8 + 0.5 * s) * (0.92 + 0.16 * r) * (1 + 0.03 * m)


def best_config(w: SynthWorkload, configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(configs, key=lambda c: true_perf(w, c))


def interval(w: SynthWorkload, knobs: dict[str, Any], rng: np.random.Generator, *,
             dt: float = 1.0, perf_counters: bool = True) -> dict[str, Any]:
    """One interval's counters (kernel names, per-node memory, perf) and objective."""
    hint_gib, local, free, fshare, ipc, dem = w.traits
    total_gib = FAST_GIB + SLOW_GIB
    noise = rng.lognormal(0, 0.08)
    hint = hint_gib * math.sqrt(knobs["scan_size_mb"] / 256) * total_gib * dt * noise
    promote = min(hint * (1 - local) * 0.5,
                  knobs["numa_balancing_promote_rate_limit_MBps"] * 256 * dt)
    demote = promote * dem
    perf = true_perf(w, knobs) * rng.lognormal(0, 0.03)
    counters: dict[str, Any] = {
        "numa_hint_faults": int(hint), "numa_hint_faults_local": int(hint * local),
        "numa_pte_updates": int(hint * 4), "pgpromote_success": int(promote),
        "pgpromote_candidate": int(promote * 1.3), "pgdemote_kswapd": int(demote * 0.95),
        "pgdemote_direct": int(demote * 0.05), "pgmigrate_success": int(promote + demote),
        "pgmigrate_fail": int(promote * 0.01), "numa_pages_migrated": int(promote),
        "node0.MemTotal": FAST_GIB * 2**20, "node1.MemTotal": SLOW_GIB * 2**20,
        "node0.MemFree": int(FAST_GIB * 2**20 * min(1.0, max(0.0, free + rng.normal(0, 0.01)))),
        "node1.MemFree": SLOW_GIB * 2**19,
    }
    if perf_counters:
        cycles = 8 * 2.0e9 * dt
        instructions = cycles * ipc * (perf / w.base) * rng.lognormal(0, 0.02)
        loads = instructions / 3
        counters.update({"instructions": int(instructions), "cycles": int(cycles),
                         "loads_fast": int(loads * fshare), "loads_slow": int(loads * (1 - fshare))})
    return {"counters": counters, "objective": perf}


def configurations(n: int, seed: int = 0, varied: Sequence[str] = VARIED,
                   include_default: bool = True) -> list[dict[str, Any]]:
    """*n* random configurations of the autonuma catalog's candidates (only *varied* knobs move)."""
    from ptmt.catalog import load_catalog

    cat = load_catalog("autonuma")
    rng = np.random.default_rng(seed)
    out = [cat.defaults()] if include_default else []
    while len(out) < n:
        c = cat.defaults()
        for k in varied:
            cands = cat.knobs[k].candidates
            c[k] = cands[int(rng.integers(len(cands)))]
        out.append(c)
    return out


def fill(db: Any, *, per_group: int = 2, groups: Sequence[str] = GROUPS, n_configs: int = 40,
         repetitions: int = 1, intervals: int = 5, seed: int = 0, bulk: bool = False,
         perf_counters: bool = True, varied: Sequence[str] = VARIED,
         backend: str = "autonuma", only: Sequence[str] | None = None) -> list[SynthWorkload]:
    """Record one study per synthetic workload into *db*; returns the workloads.

    *only*: record just these workload names (the others are still generated, so names and traits
    do not depend on the selection).
    """
    from sqlalchemy import bindparam, insert, update

    from ptmt.catalog import load_catalog
    from ptmt.db.canonical import normalize
    from ptmt.db.models import Sample, Trial

    cat = load_catalog(backend)
    ws = workloads(per_group, seed, groups)
    configs = configurations(n_configs, seed, varied)
    host = db.register_host("synthetic", "6.12.0-synthetic", platform="sim",
                            tiers={"0": [0], "1": [1]}, perf_available=perf_counters)
    be = db.register_backend(backend, cat.hash)
    rng = np.random.default_rng(seed + 1)
    for w in ws:
        if only is not None and w.name not in only:
            continue
        wl = db.register_workload(w.name, {"synthetic": w.group, "traits": list(w.traits)})
        study, _ = db.study(be, wl, host, strategy="random", budget=len(configs), seed=seed,
                            repetitions=repetitions, settings={"intervals": intervals},
                            objective_direction="max")
        plan = [(c, r) for c in configs for r in range(repetitions)]
        ids = db.plan_trials(study, plan)
        if not bulk:
            for (knobs, _), _tid in zip(plan, ids, strict=True):
                trial = db.claim_trial(study, worker="synthetic", host=host)
                rows = [dict(interval(w, knobs, rng, perf_counters=perf_counters), seq=i,
                             t_s=float(i + 1), dt_s=1.0) for i in range(intervals)]
                db.add_samples(trial, rows)
                db.finish_trial(trial, objective=float(np.mean([r["objective"] for r in rows])),
                                unit="ops/s")
            continue
        trial_rows, sample_rows = [], []
        for (knobs, _), tid in zip(plan, ids, strict=True):
            objs = []
            for i in range(intervals):
                smp = interval(w, knobs, rng, perf_counters=perf_counters)
                objs.append(smp["objective"])
                sample_rows.append({"trial_id": tid, "seq": i, "t_s": float(i + 1), "dt_s": 1.0,
                                    "objective": float(smp["objective"]),
                                    "counters": normalize(smp["counters"])})
            trial_rows.append({"tid": tid, "obj": float(np.mean(objs))})
        with db.engine.begin() as conn:
            conn.execute(update(Trial).where(Trial.id == bindparam("tid"))
                         .values(status="done", objective=bindparam("obj"),
                                 objective_unit="ops/s", host_id=host.id, attempts=1)
                         .execution_options(synchronize_session=False), trial_rows)
            for start in range(0, len(sample_rows), 50_000):
                conn.execute(insert(Sample), sample_rows[start:start + 50_000])
    return ws
