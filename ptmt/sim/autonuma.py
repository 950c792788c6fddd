"""NUMA balancing as Linux 6.x does it (kernel/sched/fair.c, mm/memory.c, mm/migrate.c), per frame.

* Scanning (task_numa_work): starts scan_delay_ms after the task starts; one window per scan period,
  covering scan_size_mb of pages whose PTE it changes (or 8x that of address space); in tiering-only
  mode (2) fast-node pages are skipped. The per-window period lies in [task_scan_min, task_scan_max],
  i.e. scan_period_{min,max}_ms divided by the number of windows in the RSS, floored so that no more
  than 2.56 GB/s is scanned.
* Period adaptation (update_task_scan_period), once per full pass: with no counted faults the period
  doubles. In tiering mode faults on the slow node return early from task_numa_fault() and are not
  counted, so in mode 2 the period backs off to the maximum and promotion slows down (TESTBED.md,
  "Pitfalls seen"); otherwise a mostly-local pass slows scanning and a mostly-remote pass speeds it up.
* Hint faults: the first access after protection faults; a window's faults queue behind each other on
  the workload's threads (``hint_fault_us`` of the machine), which matters where faults are slow. In tiering mode a slow-node page is a
  promotion candidate when its hint-fault latency (fault time - scan time) is below the node's hot
  threshold, which the kernel moves by hot_threshold_ms/8 every scan_period_max_ms toward the rate
  limit (numa_promotion_adjust_threshold); candidates beyond the rate limit in a 1 s window are dropped
  (numa_promotion_rate_limit); with ample free fast memory every faulting page is promoted
  (pgdat_free_space_enough). Promotion needs free memory above the high watermark plus the page, else
  it fails and wakes kswapd (migrate_balanced_pgdat). Mode 1 (classic) migrates on the second fault
  (two-stage filter) and never wakes kswapd. TPP kernels promote only pages already on the active LRU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ptmt.sim import constants as C
from ptmt.sim.knobs import KnobValues
from ptmt.sim.machine import Watermarks
from ptmt.sim.memory import FAST, SLOW, Memory


@dataclass
class FaultResult:
    """What one step of hint faults asks of the rest of the step."""

    promote: np.ndarray  #: slow frames approved for promotion, in fault order
    promoted: int = 0
    faults: int = 0


@dataclass
class NumaBalancing:
    next_scan: float = -1.0  #: time of the next scan window (-1: not started)
    cursor: int = 0
    period_ms: float = 0.0  #: per-window scan period (p->numa_scan_period)
    seq_local: int = 0  #: counted faults during the current pass
    seq_remote: int = 0
    passes: int = 0
    nbp_threshold_ms: float = 0.0  #: per-node adjusted hot threshold (0: use hot_threshold_ms)
    nbp_th_start: float = 0.0
    nbp_th_nr_cand: int = 0
    nbp_rl_start: float = -10.0
    nbp_rl_nr_cand: int = 0
    started_at: float = 0.0
    #: thread-seconds per hint fault divided by the workload's threads: faults queue behind each other
    fault_service_s: float = 0.0
    history: list[float] = field(default_factory=list)  #: period after each pass (diagnostics)

    # -- scan periods (task_scan_min / task_scan_max) -------------------------------------------------
    @staticmethod
    def windows(mem: Memory, knobs: KnobValues) -> int:
        rss_pages = mem.n_alloc * mem.ppf
        scan_pages = knobs.scan_size_mb * C.BASE_PAGES_PER_MB
        return max(1, -(-rss_pages // scan_pages))

    def scan_min_ms(self, mem: Memory, knobs: KnobValues) -> float:
        win = max(1, C.MAX_SCAN_WINDOW_MB // knobs.scan_size_mb) if knobs.scan_size_mb < C.MAX_SCAN_WINDOW_MB else 1
        floor = 1000 / win
        return max(floor, knobs.scan_period_min_ms / self.windows(mem, knobs))

    def scan_max_ms(self, mem: Memory, knobs: KnobValues) -> float:
        return max(self.scan_min_ms(mem, knobs), knobs.scan_period_max_ms / self.windows(mem, knobs))

    # -- one step --------------------------------------------------------------------------------
    def scan(self, mem: Memory, knobs: KnobValues, lam: np.ndarray, t0: float, t1: float,
             rng: np.random.Generator) -> int:
        """Run the scan windows due in [t0, t1); returns frames whose PTE was changed."""
        if self.next_scan < 0:
            self.next_scan = self.started_at + knobs.scan_delay_ms / 1000
        smin, smax = self.scan_min_ms(mem, knobs), self.scan_max_ms(mem, knobs)
        if self.period_ms <= 0:
            self.period_ms = smin  # task_scan_start()
        self.period_ms = min(max(self.period_ms, smin), smax)
        n = mem.n_alloc
        if n == 0:
            return 0
        budget = max(1, knobs.scan_size_mb * C.MIB // mem.m.frame_bytes)
        virt = min(n, budget * C.SCAN_VIRT_FACTOR)
        updated = 0
        while self.next_scan < t1:
            ts = max(self.next_scan, t0)
            updated += self._window(mem, knobs, lam, ts, budget, virt, rng)
            self.next_scan = ts + self.period_ms / 1000
        return updated

    def _window(self, mem: Memory, knobs: KnobValues, lam: np.ndarray, ts: float, budget: int, virt: int,
                rng: np.random.Generator) -> int:
        # task_numa_work() walks chunks of `budget` pages of address space; a chunk in which any PTE
        # changed uses up the budget, chunks without changes only use the 8x virtual allowance.
        n = mem.n_alloc
        start = self.cursor if self.cursor < n else 0
        stop = min(n, start + virt)
        sl = slice(start, stop)
        elig = ~mem.prot[sl]
        if not knobs.normal:  # tiering only: top-tier pages are skipped (change_pte_range)
            elig &= mem.node[sl] == SLOW
        hits = np.flatnonzero(elig)
        if len(hits):
            first_chunk = int(hits[0]) // budget
            stop = min(stop, start + (first_chunk + 1) * budget)
            elig = elig[: stop - start]
        idx = start + np.flatnonzero(elig)
        if len(idx):
            mem.prot[idx] = True
            mem.prot_time[idx] = ts
            with np.errstate(divide="ignore"):
                mem.fault_at[idx] = self._queued(ts + rng.standard_exponential(len(idx)) / lam[idx])
        self.cursor = stop
        if stop >= n:  # the pass wrapped: mm->numa_scan_seq++ and task_numa_placement()
            self.cursor = 0
            self._end_pass(mem, knobs)
        c = mem.counters
        c.add("numa_pte_updates", len(idx) * mem.ppf)
        if mem.ppf > 1:
            c.vm["numa_huge_pte_updates"] += len(idx)
        return len(idx)

    def _queued(self, arrive: np.ndarray) -> np.ndarray:
        """When each freshly unmapped frame actually faults: its next access, or later if the
        workload's threads are still busy taking the window's earlier faults (a FIFO queue with
        service time ``fault_service_s``). The hint-fault latency the kernel judges hotness by
        includes that wait: on a machine with slow faults (the emulated testbed, ~30 us each) a
        window of thousands of pages takes hundreds of ms to fault back, so a 1 ms hot threshold
        finds almost nothing hot there, as the real kernel does."""
        svc = self.fault_service_s
        if svc <= 0 or len(arrive) < 2:
            return arrive
        order = np.argsort(arrive, kind="stable")
        a = arrive[order]
        k = np.arange(len(a)) * svc
        start = np.maximum.accumulate(np.where(np.isfinite(a), a - k, -np.inf)) + k
        out = np.empty_like(arrive)
        out[order] = np.where(np.isfinite(a), np.maximum(a, start), a)
        return out

    def _end_pass(self, mem: Memory, knobs: KnobValues) -> None:
        """update_task_scan_period(); faults of multi-threaded tasks are treated as shared."""
        local, remote = self.seq_local, self.seq_remote
        smin, smax = self.scan_min_ms(mem, knobs), self.scan_max_ms(mem, knobs)
        if local + remote == 0:
            self.period_ms = min(smax, self.period_ms * 2)
        else:
            slot = -(-self.period_ms // C.NUMA_PERIOD_SLOTS)
            lr = local * C.NUMA_PERIOD_SLOTS // (local + remote)
            if lr >= C.NUMA_PERIOD_THRESHOLD:
                diff = max(1, lr - C.NUMA_PERIOD_THRESHOLD) * slot
            else:
                diff = -(C.NUMA_PERIOD_THRESHOLD - lr) * slot
            self.period_ms = min(max(self.period_ms + diff, smin), smax)
        self.seq_local = self.seq_remote = 0
        self.passes += 1
        self.history = (self.history + [self.period_ms])[-64:]

    # -- hint faults -------------------------------------------------------------------------------
    def faults(self, mem: Memory, knobs: KnobValues, wm: Watermarks, t1: float, tpp: bool,
               allow_promotion: bool) -> FaultResult:
        """Take the hint faults due by ``t1``; return the slow frames approved for promotion."""
        n = mem.n_alloc
        idx = np.flatnonzero(mem.fault_at[:n] <= t1)
        if not len(idx):
            return FaultResult(idx)
        when = mem.fault_at[idx]
        order = np.argsort(when, kind="stable")
        idx, when = idx[order], when[order]
        latency_ms = (when - mem.prot_time[idx]) * 1000
        mem.prot[idx] = False
        mem.fault_at[idx] = np.inf
        on_fast = mem.node[idx] == FAST
        c, ppf = mem.counters, mem.ppf
        c.add("numa_hint_faults", len(idx) * ppf)
        c.add("numa_hint_faults_local", int(on_fast.sum()) * ppf)
        self.seq_local += int(on_fast.sum())
        slow = ~on_fast
        if knobs.tiering:
            approve = self._tiering(mem, knobs, wm, idx[slow], when[slow], latency_ms[slow], tpp)
        else:
            self.seq_remote += int(slow.sum())  # classic mode: remote faults count
            s_idx = idx[slow]
            second = mem.faulted_once[s_idx]
            mem.faulted_once[s_idx] = True
            approve = s_idx[second]
        if not allow_promotion:
            approve = approve[:0]
        return FaultResult(approve, faults=len(idx))

    def _tiering(self, mem: Memory, knobs: KnobValues, wm: Watermarks, idx: np.ndarray, when: np.ndarray,
                 latency_ms: np.ndarray, tpp: bool) -> np.ndarray:
        if not len(idx):
            return idx
        enough = max(C.FREE_ENOUGH_MIN_BYTES // mem.m.frame_bytes, mem.capacity[FAST] >> C.FREE_ENOUGH_NODE_SHIFT)
        if mem.free_fast > wm.high + enough:
            self.nbp_threshold_ms = 0.0  # "workload changed, reset hot threshold"
            return idx
        rate_pages = knobs.promote_rate_limit_mbps * C.BASE_PAGES_PER_MB
        self._adjust_threshold(mem, knobs, rate_pages, float(when[0]))
        th = self.nbp_threshold_ms or knobs.hot_threshold_ms
        hot = latency_ms < th
        idx, when = idx[hot], when[hot]
        if not len(idx):
            return idx
        ok = self._rate_limit(mem, rate_pages, when)
        idx = idx[ok]
        if tpp:  # TPP: promote only pages found on the active LRU; others are activated
            act = mem.active[idx]
            mem.active[idx] = True
            idx = idx[act]
        return idx

    def _adjust_threshold(self, mem: Memory, knobs: KnobValues, rate_pages: int, now: float) -> None:
        period_s = knobs.scan_period_max_ms / 1000
        if now - self.nbp_th_start <= period_s:
            return
        self.nbp_th_start = now
        ref_th = knobs.hot_threshold_ms
        ref_cand = rate_pages * period_s
        nr_cand = mem.counters.vm["pgpromote_candidate"]
        diff = nr_cand - self.nbp_th_nr_cand
        unit = ref_th * 2 / C.NUMA_MIGRATION_ADJUST_STEPS
        th = self.nbp_threshold_ms or ref_th
        if diff > ref_cand * 11 / 10:
            th = max(th - unit, unit)
        elif diff < ref_cand * 9 / 10:
            th = min(th + unit, ref_th * 2)
        self.nbp_th_nr_cand = nr_cand
        self.nbp_threshold_ms = th

    def _rate_limit(self, mem: Memory, rate_pages: int, when: np.ndarray) -> np.ndarray:
        """Candidates over the per-second budget are refused; every candidate is counted."""
        ppf, k = mem.ppf, len(when)
        base = mem.counters.vm["pgpromote_candidate"]
        ok = np.zeros(k, dtype=bool)
        i = 0
        while i < k:
            if when[i] - self.nbp_rl_start > C.RATE_LIMIT_WINDOW_S:
                self.nbp_rl_start = float(when[i])
                self.nbp_rl_nr_cand = base + (i + 1) * ppf
            j = max(i + 1, int(np.searchsorted(when, self.nbp_rl_start + C.RATE_LIMIT_WINDOW_S, side="right")))
            nr = base + (np.arange(i, j) + 1) * ppf
            ok[i:j] = nr - self.nbp_rl_nr_cand < rate_pages
            i = j
        mem.counters.add("pgpromote_candidate", k * ppf, FAST)
        return ok

    def promote(self, mem: Memory, idx: np.ndarray, wm: Watermarks, tiering: bool) -> tuple[int, int]:
        """migrate_misplaced_folio() for approved frames in order while the fast node stays above its
        high watermark; returns (promoted, refused for lack of room)."""
        room = max(0, mem.free_fast - wm.high)
        take = idx[:room]
        mem.move(take, FAST)
        mem.active[take] = True
        pages = len(take) * mem.ppf
        c = mem.counters
        c.add("numa_pages_migrated", pages)
        c.add("pgmigrate_success", pages)
        if mem.ppf > 1:
            c.vm["thp_migration_success"] += len(take)
        if tiering:
            c.add("pgpromote_success", pages, FAST)
        return len(take), len(idx) - len(take)

    def state(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
