"""What the agent sees each interval: one fixed-length vector, versioned like the fingerprint.

Layout (schema version :data:`OBS_VERSION`; names from :func:`feature_names`):

1. The interval's workload fingerprint (:mod:`ptmt.offline.fingerprint`: hint-fault, PTE-update,
   promotion, demotion, migration and migration-failure rates per GiB, fast-tier free share,
   fast-tier access share and IPC where perf measures them). Rates are already log-scaled and
   per GiB, so machines of different sizes look alike.
2. One availability flag per fingerprint feature (1 measured, 0 not): a machine without perf or
   a kernel without a counter gives zeros *and says so*, instead of a value the agent would
   misread.
3. ``slow_free``: MemFree / MemTotal of the slower nodes.
4. ``obj_vs_baseline`` = log(objective / default objective estimate) and ``obj_trend`` =
   log(objective / previous objective): scale-free, so one agent serves ops/s, IPC or any
   application metric.
5. ``since_change``: intervals since the last knob change / 10, capped at 1 (migrations take time
   to show their effect).
6. One position per tuned knob, 0..1 along its ladder (:mod:`ptmt.online.knobspace`).

Every entry is finite and clipped to [-10, 10].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ptmt.offline.fingerprint import FEATURE_NAMES, fingerprint
from ptmt.telemetry import Sample

#: Bump when an entry's definition or order changes: agents trained on another version are refused.
OBS_VERSION = 1
CLIP = 10.0


def feature_names(knobs: Sequence[str]) -> list[str]:
    return [*FEATURE_NAMES, *(f"has_{n}" for n in FEATURE_NAMES), "slow_free", "obj_vs_baseline",
            "obj_trend", "since_change", *(f"knob_{k}" for k in knobs)]


def schema(knobs: Sequence[str]) -> dict[str, Any]:
    return {"version": OBS_VERSION, "features": feature_names(knobs)}


def _log_ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not (a > 0 and b > 0) or not (math.isfinite(a) and math.isfinite(b)):
        return 0.0
    return math.log(a / b)


def slow_free_share(sample: Sample, fast_nodes: Sequence[int]) -> float:
    free = total = 0.0
    for node, values in sample.nodes.items():
        if node in fast_nodes:
            continue
        free += float(values.get("MemFree", 0))
        total += float(values.get("MemTotal", 0))
    return free / total if total > 0 else 0.0


def observe(sample: Sample, *, positions: Sequence[float], objective: float | None,
            previous: float | None, baseline: float | None, since_change: int,
            fast_nodes: Sequence[int] = (0,), fp: np.ndarray | None = None) -> np.ndarray:
    """The observation vector of one interval (see the module docstring)."""
    if fp is None:
        fp = fingerprint([sample], fast_nodes=fast_nodes)
    have = np.isfinite(fp)
    parts = [np.where(have, fp, 0.0), have.astype(float),
             [slow_free_share(sample, fast_nodes), _log_ratio(objective, baseline),
              _log_ratio(objective, previous), min(since_change, 10) / 10.0],
             np.asarray(positions, float)]
    return np.clip(np.concatenate([np.asarray(p, float) for p in parts]), -CLIP, CLIP).astype(np.float32)
