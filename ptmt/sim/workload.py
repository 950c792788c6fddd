"""Workload specs (YAML) and the access distribution they induce over memory frames.

A workload is a stationary random access process per phase: each frame has a probability of receiving
the next memory access (LLC miss). Hot frames are scattered over the address space by a seeded
permutation, so first-touch allocation (address order) leaves part of the hot set on the slow node, as
happens to real programs whose hot data is allocated late or interleaved with cold data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ptmt.errors import ConfigError
from ptmt.sim.specs import load_validated

#: Share of the ranks of a zipf workload that counts as its "hot set" when a phase shifts it.
ZIPF_HOT_FRACTION = 0.2
BEHAVIOUR_KEYS = ("pattern", "skew", "hot_fraction", "hot_access_share", "read_ratio", "intensity", "mlp",
                  "idle_fraction")


@dataclass(frozen=True)
class Behaviour:
    """What one phase does; phases override any of these."""

    pattern: str
    intensity: float  #: accesses/s at full speed with every access served by idle fast memory
    skew: float = 0.99
    hot_fraction: float = ZIPF_HOT_FRACTION
    hot_access_share: float = 0.9
    read_ratio: float = 0.8
    mlp: float = 16.0
    idle_fraction: float = 0.0  #: allocated but untouched share of the footprint (the coldest ranks)


@dataclass(frozen=True)
class Phase:
    duration_s: float
    behaviour: Behaviour
    shift: float = 0.0
    growth_gb_per_s: float = 0.0


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    footprint_gb: float
    base: Behaviour
    phases: tuple[Phase, ...] = ()
    threads: int = 8
    accesses_per_op: float = 1.0
    instructions_per_access: float = 40.0
    repeat_phases: bool = True
    layout: str = "scattered"  #: where first touch puts the hot ranks: scattered | hot_last | hot_first
    description: str = ""
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def phase_at(self, t: float) -> tuple[int, Phase]:
        """Index and phase in force at simulated time ``t`` (the last phase lasts when not repeating)."""
        if not self.phases:
            return 0, Phase(float("inf"), self.base)
        total = sum(p.duration_s for p in self.phases)
        cycle = int(t // total) if self.repeat_phases else 0
        rest = t - cycle * total if self.repeat_phases else t
        for i, p in enumerate(self.phases):
            if rest < p.duration_s:
                return cycle * len(self.phases) + i, p
            rest -= p.duration_s
        return (cycle + 1) * len(self.phases) - 1, self.phases[-1]

    def max_footprint_gb(self, duration_s: float) -> float:
        """Footprint at the end of a run of ``duration_s`` (growth included)."""
        gb, t = self.footprint_gb, 0.0
        while t < duration_s:
            _, p = self.phase_at(t)
            step = min(duration_s - t, 1.0)
            gb += p.growth_gb_per_s * step
            t += step
        return gb

    def as_dict(self) -> dict[str, Any]:
        return self.raw or {"name": self.name, "footprint_gb": self.footprint_gb, **asdict(self.base)}


def _behaviour(data: dict[str, Any], base: Behaviour | None) -> Behaviour:
    given = {k: data[k] for k in BEHAVIOUR_KEYS if k in data}
    if base is None:
        return Behaviour(**given)
    return replace(base, **given)


def workload_from_dict(data: dict[str, Any], source: str | Path = "<workload>") -> WorkloadSpec:
    """Build a spec from already schema-checked data, with the cross-field checks the schema cannot do."""
    base = _behaviour(data, None)
    errors = []
    if base.pattern == "zipf" and "skew" not in data:
        errors.append("At 'skew': required for pattern zipf")
    if base.pattern == "hotset" and not {"hot_fraction", "hot_access_share"} <= set(data):
        errors.append("At 'hot_fraction': pattern hotset needs hot_fraction and hot_access_share")
    if errors:
        raise ConfigError("\n".join(f"{source}: {e}" for e in errors))
    phases = []
    top_growth = float(data.get("growth_gb_per_s", 0.0))
    for raw in data.get("phases", []):
        phases.append(Phase(float(raw["duration_s"]), _behaviour(raw, base), float(raw.get("shift", 0.0)),
                            float(raw.get("growth_gb_per_s", top_growth))))
    if not phases and top_growth:
        phases.append(Phase(float("inf"), base, 0.0, top_growth))
    known = {f.name for f in fields(WorkloadSpec)}
    extra = {k: data[k] for k in ("threads", "accesses_per_op", "instructions_per_access",
                                  "repeat_phases", "layout", "description", "source") if k in data and k in known}
    return WorkloadSpec(name=data["name"], footprint_gb=float(data["footprint_gb"]), base=base,
                        phases=tuple(phases), raw=dict(data), **extra)


def load_workload(name_or_path: str | Path) -> WorkloadSpec:
    """A built-in workload by name, or a user's YAML file; errors name the file and the key."""
    data, path = load_validated("workloads", "workload", name_or_path)
    return workload_from_dict(data, path)


# -- access distributions ---------------------------------------------------------------------------


class AccessModel:
    """Per-frame access probabilities for the current phase, over the frames allocated so far.

    ``rank_to_frame`` scatters popularity ranks over addresses; a phase ``shift`` swaps that fraction of
    the hot ranks with random colder ranks, so the hot set moves while its size stays."""

    def __init__(self, max_frames: int, rng: np.random.Generator, layout: str = "scattered") -> None:
        self.max_frames = max_frames
        self.rng = rng
        if layout == "hot_last":  # cold data touched first fills the fast node; the hot set lands on slow
            self.rank_to_frame = np.arange(max_frames)[::-1].copy()
        elif layout == "hot_first":
            self.rank_to_frame = np.arange(max_frames)
        else:
            self.rank_to_frame = rng.permutation(max_frames)

    def shift(self, fraction: float, hot_ranks: int) -> None:
        if fraction <= 0 or hot_ranks <= 0 or hot_ranks >= self.max_frames:
            return
        k = int(round(fraction * hot_ranks))
        if k == 0:
            return
        src = self.rng.choice(hot_ranks, size=k, replace=False)
        dst = self.rng.choice(np.arange(hot_ranks, self.max_frames), size=k, replace=False)
        r = self.rank_to_frame
        r[src], r[dst] = r[dst].copy(), r[src].copy()

    @staticmethod
    def hot_ranks(b: Behaviour, n: int) -> int:
        if b.pattern in ("uniform", "sequential"):
            return 0
        return max(1, int(round(b.hot_fraction * n)))

    def probabilities(self, b: Behaviour, allocated: int) -> np.ndarray:
        """Probability per frame (length max_frames, zero beyond ``allocated``), summing to 1.

        Ranks are over the allocated frames only: rank r maps to the r-th allocated frame in
        ``rank_to_frame`` order, so growth adds frames to every popularity level."""
        n = max(1, allocated)
        by_rank = self._by_rank(b, n)
        frames = self.rank_to_frame[self.rank_to_frame < n] if n < self.max_frames else self.rank_to_frame
        p = np.zeros(self.max_frames)
        p[frames] = by_rank
        return p

    @staticmethod
    def _by_rank(b: Behaviour, n_all: int) -> np.ndarray:
        n = max(1, int(round(n_all * (1.0 - b.idle_fraction))))
        w = AccessModel._touched(b, n)
        if n < n_all:
            w = np.concatenate([w, np.zeros(n_all - n)])
        return w

    @staticmethod
    def _touched(b: Behaviour, n: int) -> np.ndarray:
        ranks = np.arange(1, n + 1, dtype=float)
        if b.pattern in ("uniform", "sequential"):
            w = np.ones(n)
        elif b.pattern == "zipf":
            w = ranks ** -b.skew
        elif b.pattern == "hotset":
            h = AccessModel.hot_ranks(b, n)
            w = np.empty(n)
            w[:h] = b.hot_access_share / h
            w[h:] = (1 - b.hot_access_share) / max(1, n - h) if n > h else 0.0
        elif b.pattern == "graph":
            # vertex data: power-law popular (degree distribution); edge arrays: streamed uniformly
            h = AccessModel.hot_ranks(b, n)
            w = np.empty(n)
            vert = ranks[:h] ** -b.skew
            w[:h] = b.hot_access_share * vert / vert.sum()
            w[h:] = (1 - b.hot_access_share) / max(1, n - h) if n > h else 0.0
        else:  # pragma: no cover - the schema rejects other patterns
            raise ConfigError(f"unknown pattern {b.pattern!r}")
        return w / w.sum()


def prefetch_factor(b: Behaviour) -> float:
    """Latency seen per access relative to a random access: hardware prefetchers hide most of the
    latency of sequential streams, so they are bandwidth-bound rather than latency-bound."""
    return 0.25 if b.pattern == "sequential" else 1.0
