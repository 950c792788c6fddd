"""Workload fingerprints: normalised telemetry of a few recent intervals, as one feature vector.

The offline model is fitted on fingerprints computed from the database's samples and the online
tuner queries it with fingerprints computed from live :class:`ptmt.telemetry.Sample` objects; both
go through :func:`fingerprint_frame`, so the two can never drift apart.

Features (schema version :data:`FINGERPRINT_VERSION`, names in :data:`FEATURE_NAMES`):

========================  ======================================================================
``hint_faults``           log1p(numa_hint_faults per second per GiB of machine memory)
``hint_local_share``      numa_hint_faults_local / numa_hint_faults (NaN without hint faults)
``pte_updates``           log1p(numa_pte_updates /s/GiB)
``promote``               log1p(pgpromote_success /s/GiB)
``promote_candidates``    log1p(pgpromote_candidate /s/GiB)
``demote``                log1p((pgdemote_kswapd + pgdemote_direct) /s/GiB)
``demote_direct_share``   pgdemote_direct / all demotions (NaN without demotions)
``migrate``               log1p(pgmigrate_success /s/GiB; numa_pages_migrated if absent)
``migrate_fail``          log1p(pgmigrate_fail /s/GiB)
``fast_free``             MemFree / MemTotal of the fast-tier node(s), mean over the intervals
``fast_access_share``     loads served by the fast tier / all loads (perf, where measurable)
``ipc``                   instructions / cycles (perf, where measurable)
========================  ======================================================================

Counters are 4 KiB pages. A feature the machine cannot measure (a counter the kernel lacks, no
perf, no per-node meminfo) is NaN, never an error: the model imputes it. A counter that exists and
did not move is 0.

Accepted inputs: ``Sample`` objects, their ``as_dict()`` form, or rows of
``Storage.samples_frame`` whose counter columns use the kernel's names, per-node memory as
``node<N>.MemFree`` / ``node<N>.MemTotal`` (kB; a ``_kB`` suffix is accepted; the model fitter
fills MemTotal from the host's recorded topology when samples lack it), and perf deltas as ``instructions``, ``cycles``,
``loads_fast``, ``loads_slow`` (optionally prefixed ``perf.`` and/or ``mem_``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Bump whenever a feature's definition, order or normalisation changes: models fitted with
#: another version are refused.
FINGERPRINT_VERSION = 1

#: Feature names, in vector order.
FEATURE_NAMES: tuple[str, ...] = (
    "hint_faults", "hint_local_share", "pte_updates", "promote", "promote_candidates", "demote",
    "demote_direct_share", "migrate", "migrate_fail", "fast_free", "fast_access_share", "ipc",
)

#: Features that need perf (hardware) counters; absent on many VMs.
PERF_FEATURES: tuple[str, ...] = ("fast_access_share", "ipc")

_RATE_COUNTERS = {
    "hint_faults": ("numa_hint_faults",),
    "pte_updates": ("numa_pte_updates",),
    "promote": ("pgpromote_success",),
    "promote_candidates": ("pgpromote_candidate",),
    "demote": ("pgdemote_kswapd", "pgdemote_direct"),
    "migrate_fail": ("pgmigrate_fail",),
}
_COUNTERS = ("numa_hint_faults", "numa_hint_faults_local", "numa_pte_updates", "pgpromote_success",
             "pgpromote_candidate", "pgdemote_kswapd", "pgdemote_direct", "pgmigrate_success",
             "numa_pages_migrated", "pgmigrate_fail")
_PERF = ("instructions", "cycles", "loads_fast", "loads_slow")
_NODE_RE = re.compile(r"^node(\d+)[._](MemFree|MemTotal)(?:_kb)?$", re.IGNORECASE)
_KIB_PER_GIB = float(2**20)


def schema() -> dict[str, Any]:
    """The feature schema stored with every model."""
    return {"version": FINGERPRINT_VERSION, "features": list(FEATURE_NAMES)}


def _canonical(frame: pd.DataFrame, fast_nodes: Sequence[int],
               mem_total_kb: float | None) -> pd.DataFrame:
    """Per-interval canonical columns from a samples frame (any of the accepted spellings)."""
    n = len(frame)
    nan = np.full(n, np.nan)
    out: dict[str, Any] = {}
    dt = frame["dt_s"] if "dt_s" in frame else frame.get("interval_s")
    out["dt"] = pd.to_numeric(dt, errors="coerce").to_numpy(float) if dt is not None else nan
    for c in _COUNTERS:
        out[c] = pd.to_numeric(frame[c], errors="coerce").to_numpy(float) if c in frame else nan
    for p in _PERF:
        spellings = (p, f"perf.{p}", f"mem_{p}", f"perf.mem_{p}")
        col = next((c for c in spellings if c in frame), None)
        out[p] = pd.to_numeric(frame[col], errors="coerce").to_numpy(float) if col else nan
    totals: dict[int, np.ndarray] = {}
    frees: dict[int, np.ndarray] = {}
    for col in frame.columns:
        m = _NODE_RE.match(str(col))
        if m:
            target = totals if m.group(2).lower() == "memtotal" else frees
            target[int(m.group(1))] = pd.to_numeric(frame[col], errors="coerce").to_numpy(float)
    if mem_total_kb is not None:
        out["mem_total_kb"] = np.full(n, float(mem_total_kb))
    elif totals:
        out["mem_total_kb"] = np.sum(list(totals.values()), axis=0)
    else:
        out["mem_total_kb"] = nan
    fast = [i for i in fast_nodes if i in totals and i in frees]
    if fast:
        ft = np.sum([totals[i] for i in fast], axis=0)
        ff = np.sum([frees[i] for i in fast], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["fast_free"] = np.where(ft > 0, ff / ft, np.nan)
    else:
        out["fast_free"] = nan
    return pd.DataFrame(out, index=frame.index)


def _features(agg: Mapping[str, Any]) -> np.ndarray:
    """Features (rows x FEATURE_NAMES) from per-group sums (counters, perf, dt), mean memory and mean
    fast_free, given as equal-length arrays by column name. NumPy only: the online tuner computes one
    fingerprint per interval and the fitter millions, through this one function."""
    col = {k: np.asarray(v, float) for k, v in agg.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        gib = col["mem_total_kb"] / _KIB_PER_GIB
        dt = np.where(col["dt"] > 0, col["dt"], np.nan)
        denom = dt * gib

        def total(*names: str) -> np.ndarray:
            stack = np.vstack([col[n] for n in names])
            return np.where(np.isfinite(stack).any(axis=0), np.nansum(stack, axis=0), np.nan)

        def rate(values: np.ndarray) -> np.ndarray:
            r = values / denom
            return np.log1p(np.where(np.isnan(r), np.nan, np.maximum(r, 0.0)))

        def share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
            r = part / np.where(whole > 0, whole, np.nan)
            return np.where(np.isnan(r), np.nan, np.clip(r, 0.0, 1.0))

        feats = {
            "hint_faults": rate(col["numa_hint_faults"]),
            "hint_local_share": share(col["numa_hint_faults_local"], col["numa_hint_faults"]),
        }
        for name, counters in _RATE_COUNTERS.items():
            if name != "hint_faults":
                feats[name] = rate(total(*counters))
        feats["demote_direct_share"] = share(col["pgdemote_direct"], total("pgdemote_kswapd", "pgdemote_direct"))
        migrated = np.where(np.isnan(col["pgmigrate_success"]), col["numa_pages_migrated"], col["pgmigrate_success"])
        feats["migrate"] = rate(migrated)
        ff = col["fast_free"]
        feats["fast_free"] = np.where(np.isnan(ff), np.nan, np.clip(ff, 0.0, 1.0))
        feats["fast_access_share"] = share(col["loads_fast"], col["loads_fast"] + col["loads_slow"])
        feats["ipc"] = col["instructions"] / np.where(col["cycles"] > 0, col["cycles"], np.nan)
    return np.column_stack([feats[n] for n in FEATURE_NAMES])


def fingerprint_frame(samples: pd.DataFrame, by: str | Sequence[str] | None = "trial_id", *,
                      fast_nodes: Sequence[int] = (0,), mem_total_kb: float | None = None,
                      skip_first: int = 0) -> pd.DataFrame:
    """Fingerprints of groups of intervals (default: one per trial) of a ``samples_frame``.

    Counters are summed over the group's intervals and divided by its total time, so a group of
    many short intervals and one long interval give the same fingerprint. *skip_first* drops the
    first intervals of each group (warm-up); *fast_nodes* are the fast-tier NUMA nodes;
    *mem_total_kb* overrides the machine size when the samples lack per-node MemTotal.
    Returns one row per group, columns :data:`FEATURE_NAMES`.
    """
    if by is None:
        samples = samples.assign(_group=0)
        by = "_group"
    keys = [by] if isinstance(by, str) else list(by)
    if skip_first > 0 and "seq" in samples:
        samples = samples[samples["seq"] >= samples.groupby(keys)["seq"].transform("min") + skip_first]
    canon = _canonical(samples, fast_nodes, mem_total_kb)
    for k in keys:
        canon[k] = samples[k].to_numpy()
    grouped = canon.groupby(keys, sort=True)
    sums = grouped[["dt", *_COUNTERS, *_PERF]].sum(min_count=1)
    means = grouped[["mem_total_kb", "fast_free"]].mean()
    agg = pd.concat([sums, means], axis=1)
    return pd.DataFrame(_features({c: agg[c].to_numpy(float) for c in agg.columns}), index=agg.index,
                        columns=list(FEATURE_NAMES)).astype(float)


def _sample_row(s: Any) -> dict[str, Any]:
    if not isinstance(s, Mapping):
        s = s.as_dict() if hasattr(s, "as_dict") else vars(s)
    if "counters" not in s:  # already a flat samples_frame-style row
        return dict(s)
    row: dict[str, Any] = {"dt_s": s.get("interval_s", s.get("dt_s"))}
    row.update(s.get("counters") or {})
    for node, values in (s.get("nodes") or {}).items():
        for key, value in (values or {}).items():
            row[f"node{node}.{key}"] = value
    for key, value in (s.get("perf") or {}).items():
        row[key] = value
    return row


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _aggregate_rows(rows: list[dict[str, Any]], fast_nodes: Sequence[int],
                    mem_total_kb: float | None) -> dict[str, np.ndarray]:
    """What ``fingerprint_frame`` computes for one group, straight from rows (no pandas)."""
    cols = set().union(*rows)
    agg: dict[str, np.ndarray] = {}

    def summed(values: list[float]) -> float:
        finite = [v for v in values if not np.isnan(v)]
        return float(sum(finite)) if finite else np.nan

    dt_key = "dt_s" if "dt_s" in cols else ("interval_s" if "interval_s" in cols else None)
    agg["dt"] = np.array([summed([_num(r.get(dt_key)) for r in rows]) if dt_key else np.nan])
    for c in _COUNTERS:
        agg[c] = np.array([summed([_num(r.get(c)) for r in rows]) if c in cols else np.nan])
    for p in _PERF:
        key = next((k for k in (p, f"perf.{p}", f"mem_{p}", f"perf.mem_{p}") if k in cols), None)
        agg[p] = np.array([summed([_num(r.get(key)) for r in rows]) if key else np.nan])
    totals: dict[int, list[float]] = {}
    frees: dict[int, list[float]] = {}
    for c in cols:
        m = _NODE_RE.match(str(c))
        if m:
            target = totals if m.group(2).lower() == "memtotal" else frees
            target[int(m.group(1))] = [_num(r.get(c)) for r in rows]

    def mean(values: list[float]) -> float:
        finite = [v for v in values if not np.isnan(v)]
        return float(sum(finite) / len(finite)) if finite else np.nan

    if mem_total_kb is not None:
        agg["mem_total_kb"] = np.array([float(mem_total_kb)])
    elif totals:
        agg["mem_total_kb"] = np.array([mean([sum(v) for v in zip(*totals.values(), strict=True)])])
    else:
        agg["mem_total_kb"] = np.array([np.nan])
    fast = [i for i in fast_nodes if i in totals and i in frees]
    if fast:
        per_row = []
        for j in range(len(rows)):
            ft = sum(totals[i][j] for i in fast)
            ff = sum(frees[i][j] for i in fast)
            per_row.append(ff / ft if ft > 0 else np.nan)
        agg["fast_free"] = np.array([mean(per_row)])
    else:
        agg["fast_free"] = np.array([np.nan])
    return agg


def fingerprint(samples: Iterable[Any], *, fast_nodes: Sequence[int] = (0,),
                mem_total_kb: float | None = None) -> np.ndarray:
    """The fingerprint of recent intervals: ``Sample`` objects, their dicts, or flat sample rows.

    Returns a float vector in :data:`FEATURE_NAMES` order (NaN for what was not measurable). Same
    numbers as :func:`fingerprint_frame` of those rows as one group (a test holds the two equal),
    in a fraction of a millisecond: the online tuner calls it every interval.
    """
    rows = [_sample_row(s) for s in samples]
    if not rows:
        raise ValueError("a fingerprint needs at least one interval")
    return _features(_aggregate_rows(rows, fast_nodes, mem_total_kb))[0]


def as_dict(vector: Sequence[float]) -> dict[str, float | None]:
    """A fingerprint vector as ``{feature: value}`` (None for NaN), e.g. for JSON."""
    return {n: (None if not np.isfinite(v) else float(v)) for n, v in zip(FEATURE_NAMES, vector, strict=True)}
