"""Colloid (Vuppalapati & Agarwal, SOSP'24): balance the tiers' loaded access latencies.

Every 500 ms quantum Colloid compares the measured loaded latency of the default (fast) tier with the
alternate (slow) tier. While the fast tier is clearly faster it lets TPP promote, at most δ of the
access load per quantum; when the fast tier is slower by more than ε (bandwidth contention) it stops
promotion and demotes hot pages carrying up to δ of the access load per quantum, so both tiers'
bandwidth is used; inside the ε band it holds still. δ = 5% and ε = 1% are compile-time constants on
the real kernel; the simulator exposes them as /sys/kernel/mm/colloid/{delta,epsilon}_percent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptmt.sim import constants as C
from ptmt.sim.knobs import KnobValues
from ptmt.sim.memory import FAST, Memory
from ptmt.sim.reclaim import demote, hottest, migrate_frames_per_s


@dataclass
class Colloid:
    mode: str = "promote"  #: promote | hold | shed

    def decide(self, knobs: KnobValues, fast_ns: float, slow_ns: float) -> str:
        eps = knobs.colloid_epsilon_percent / 100
        if fast_ns > slow_ns * (1 + eps):
            self.mode = "shed"
        elif fast_ns < slow_ns * (1 - eps):
            self.mode = "promote"
        else:
            self.mode = "hold"
        return self.mode

    @staticmethod
    def step_share(knobs: KnobValues, dt: float) -> float:
        """Access load Colloid may move in ``dt`` (δ per quantum)."""
        return knobs.colloid_delta_percent / 100 * max(1.0, dt / C.COLLOID_QUANTUM_S)

    def cap_promotions(self, knobs: KnobValues, idx: np.ndarray, p: np.ndarray, dt: float) -> np.ndarray:
        """Keep the promotions whose cumulative access share stays within the step's δ budget."""
        if self.mode != "promote":
            return idx[:0]
        if not len(idx):
            return idx
        cum = np.cumsum(p[idx])
        return idx[: max(1, int(np.searchsorted(cum, self.step_share(knobs, dt), side="right")))]

    def shed(self, mem: Memory, knobs: KnobValues, lam: np.ndarray, p: np.ndarray, dt: float,
             rng: np.random.Generator) -> int:
        """Demote hot fast frames carrying up to δ of the accesses per quantum; returns frames moved."""
        if self.mode != "shed":
            return 0
        budget = int(migrate_frames_per_s(mem.m.frame_bytes) * dt)
        cand = hottest(mem, lam, FAST, min(budget, mem.free_slow), rng)
        if not len(cand):
            return 0
        cand = cand[np.argsort(-lam[cand])]
        cum = np.cumsum(p[cand])
        k = max(1, int(np.searchsorted(cum, self.step_share(knobs, dt), side="right")))
        demote(mem, cand[:k])
        return min(k, len(cand))
