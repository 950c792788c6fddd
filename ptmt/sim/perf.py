"""Throughput of the workload given where its accesses land: a closed-loop queueing fixed point.

Each access costs compute time ``c`` plus its memory latency divided by the memory-level parallelism;
the latency of each tier rises with its bandwidth utilisation, which rises with throughput. The
achieved access rate is the X with X = (1 - overhead) / t(X), found by bisection (t grows with X).
"""

from __future__ import annotations

from dataclasses import dataclass

from ptmt.sim import constants as C
from ptmt.sim.machine import MachineSpec

BISECT_STEPS = 30


@dataclass(frozen=True)
class Demand:
    """One step's inputs to the throughput model."""

    fast_share: float  #: fraction of accesses served by the fast tier
    intensity: float  #: accesses/s at full speed, all accesses in idle fast memory
    mlp: float
    read_ratio: float
    latency_factor: float  #: 1 for random access, < 1 when prefetchers hide latency (streams)
    overhead: float  #: fraction of the workload's CPU time lost to tiering (faults, scans, migration)
    migration_bytes_s: tuple[float, float, float, float]  #: fast read, fast write, slow read, slow write


@dataclass(frozen=True)
class Throughput:
    accesses_s: float
    fast_latency_ns: float
    slow_latency_ns: float
    fast_util: float
    slow_util: float


def compute_time_s(m: MachineSpec, d: Demand) -> float:
    """Non-memory time per access, from the full-speed intensity (never negative)."""
    return max(0.0, 1.0 / d.intensity - d.latency_factor * m.fast.latency_ns * 1e-9 / d.mlp)


def solve(m: MachineSpec, d: Demand) -> Throughput:
    c = compute_time_s(m, d)
    hf, hs = d.fast_share, 1.0 - d.fast_share
    rd = C.CACHE_LINE  # a miss reads one line; a dirty line is written back later
    wr = C.CACHE_LINE * (1.0 - d.read_ratio)
    fr, fw, sr, sw = d.migration_bytes_s
    keep = max(0.05, 1.0 - d.overhead)

    def state(x: float) -> tuple[float, float, float, float, float]:
        uf = m.fast.busy_fraction(x * hf * rd + fr, x * hf * wr + fw)
        us = m.slow.busy_fraction(x * hs * rd + sr, x * hs * wr + sw)
        lf, ls = m.fast.loaded_latency_ns(uf), m.slow.loaded_latency_ns(us)
        t = c + d.latency_factor * (hf * lf + hs * ls) * 1e-9 / d.mlp
        return keep / t, lf, ls, uf, us

    lo, hi = 0.0, state(0.0)[0]
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if state(mid)[0] > mid:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    _, lf, ls, uf, us = state(x)
    return Throughput(x, lf, ls, min(uf, 1.0), min(us, 1.0))
