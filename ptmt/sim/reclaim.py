"""kswapd on the fast node: demotion of cold pages to the slow node, and the watermarks it keeps.

Linux (mm/vmscan.c) demotes instead of reclaiming only when /sys/kernel/mm/numa/demotion_enabled is
true; the simulated workloads are anonymous memory without swap, so with demotion off nothing can be
reclaimed and the fast node stays full. kswapd wakes below the low watermark (or when a promotion found
no room, in tiering mode) and works until free memory is above its target: the high watermark, the
promotion watermark in tiering mode, and on TPP kernels the demotion watermark high +
demote_scale_factor/10000 of the node, which it also keeps proactively (TPP, ASPLOS'23).

Coldness is LRU age as the kernel sees it. With per-frame access rate λ the time since the last access
is exponential with mean 1/λ. The two-list LRU only knows whether a page was referenced since reclaim
last looked at it, which happens once per trip through the inactive list: a page whose sampled age is
below that trip time ``τ`` looks referenced, and referenced pages are demoted in no particular order.
τ = size of the inactive list (mm/vmscan.c: inactive_ratio = int_sqrt(10 * GB)) / demotion rate, so
under heavy demotion the LRU cannot tell hot from lukewarm pages (why a THP-backed hot set ping-pongs),
and under light demotion it ranks them well.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ptmt.sim import constants as C
from ptmt.sim.knobs import KnobValues
from ptmt.sim.machine import Watermarks
from ptmt.sim.memory import FAST, SLOW, Memory


def migrate_frames_per_s(frame_bytes: int) -> float:
    """How many frames one kernel context migrates per second (DESIGN §4 throughputs)."""
    bps = C.MIGRATE_BPS_2M if frame_bytes >= 2 * C.MIB else C.MIGRATE_BPS_4K
    return bps / frame_bytes


def migrate_cost_s(frame_bytes: int, kernel: bool) -> float:
    """CPU time of migrating one frame (move_pages figures; in-kernel migration is cheaper)."""
    user = C.USER_MIGRATE_2M_S if frame_bytes >= 2 * C.MIB else C.USER_MIGRATE_4K_S
    return user * (C.KERNEL_MIGRATE_FACTOR if kernel else 1.0)


def demote_watermark(mem: Memory, knobs: KnobValues, wm: Watermarks) -> int:
    """Free frames TPP's kswapd keeps on the fast node (0 on kernels without the TPP patch)."""
    if knobs.demote_scale_factor is None:
        return 0
    return wm.high + int(mem.capacity[FAST] * knobs.demote_scale_factor / 10000)


def kswapd_target(mem: Memory, knobs: KnobValues, wm: Watermarks) -> int:
    target = wm.promo if knobs.tiering else wm.high
    return max(target, demote_watermark(mem, knobs, wm))


#: Bounds of the LRU's resolution τ (seconds).
LRU_TAU_MIN_S, LRU_TAU_MAX_S = 0.05, 120.0


def inactive_frames(mem: Memory) -> float:
    """Size of the fast node's inactive anon list (mm/vmscan.c inactive_is_low())."""
    used = mem.used[FAST]
    gb = used * mem.m.frame_bytes // C.GIB
    ratio = int(np.sqrt(10 * gb)) if gb else 1
    return used / (1 + ratio)


def _pick(idx: np.ndarray, lam: np.ndarray, k: int, rng: np.random.Generator,
          score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The ``k`` frames of ``idx`` with the highest ``score`` of their sampled time since last access."""
    if k <= 0 or not len(idx):
        return idx[:0]
    if k >= len(idx):
        return idx
    with np.errstate(divide="ignore"):
        age = rng.standard_exponential(len(idx)) / lam[idx]
    return idx[np.argpartition(-score(age), k - 1)[:k]]


def coldest(mem: Memory, lam: np.ndarray, k: int, rng: np.random.Generator,
            exclude: np.ndarray | None = None, tau: float = LRU_TAU_MAX_S) -> np.ndarray:
    """``k`` fast frames kswapd would demote: unreferenced ones (sampled age above the LRU's
    resolution ``tau``) oldest first, then referenced ones in random order."""
    idx = np.flatnonzero(mem.node == FAST)
    if exclude is not None and len(exclude):
        idx = np.setdiff1d(idx, exclude, assume_unique=True)
    return _pick(idx, lam, k, rng, lambda age: np.where(age > tau, age, tau * rng.random(len(age))))


def hottest(mem: Memory, lam: np.ndarray, node: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` frames of ``node`` with the shortest sampled time since their last access."""
    return _pick(np.flatnonzero(mem.node == node), lam, k, rng, lambda age: -age)


def demote(mem: Memory, idx: np.ndarray, direct: bool = False) -> None:
    """Move frames to the slow node and count them as the kernel does."""
    k = min(len(idx), mem.free_slow)
    idx = idx[:k]
    mem.move(idx, SLOW)
    pages = k * mem.ppf
    c = mem.counters
    c.add("pgdemote_direct" if direct else "pgdemote_kswapd", pages, FAST)
    c.add("pgmigrate_success", pages)
    if mem.ppf > 1:
        c.vm["thp_migration_success"] += k


class Kswapd:
    """Fast-node reclaim by demotion, limited by what one kernel thread can migrate per step."""

    def __init__(self) -> None:
        self.woken_for_promotion = False
        self.rate = 0.0  #: recent demotion rate, frames/s (EWMA)

    def tau(self, mem: Memory) -> float:
        """Time a page spends on the inactive list before reclaim looks at it (the LRU's resolution)."""
        if self.rate <= 0:
            return LRU_TAU_MAX_S
        return float(min(LRU_TAU_MAX_S, max(LRU_TAU_MIN_S, inactive_frames(mem) / self.rate)))

    def observe(self, demoted: int, dt: float) -> None:
        """Fold one step's demotions (kswapd's and anyone else's) into the rate, ~10 s memory."""
        a = min(1.0, dt / 10.0)
        self.rate = (1 - a) * self.rate + a * demoted / dt

    def run(self, mem: Memory, knobs: KnobValues, wm: Watermarks, lam: np.ndarray, dt: float,
            rng: np.random.Generator, exclude: np.ndarray | None = None, wanted: int = 0) -> int:
        """Demote until free >= target; returns frames demoted (their migration costs are the caller's).

        ``wanted`` is the promotions refused for lack of room this step: within a step kswapd and the
        faulting tasks alternate many times (each refusal wakes kswapd, each kswapd run makes room for
        the next faults), so kswapd makes room for them as well, up to its migration throughput."""
        woken = self.woken_for_promotion
        self.woken_for_promotion = False
        if not knobs.demotion_enabled:
            return 0
        target = kswapd_target(mem, knobs, wm)
        free = mem.free_fast
        wake = free < wm.low or woken or free < demote_watermark(mem, knobs, wm)
        if not wake or (free >= target and not wanted):
            return 0
        budget = int(migrate_frames_per_s(mem.m.frame_bytes) * dt)
        k = min(max(0, target - free) + wanted, budget, mem.free_slow)
        victims = coldest(mem, lam, k, rng, exclude, self.tau(mem))
        demote(mem, victims)
        return len(victims)
