"""One simulated machine running one workload: advances in steps, applying every policy the knobs
switch on, and charging their costs to the workload's throughput.

Step order (each step reads the knobs afresh): workload phase and growth; NUMA scanning and hint faults
(AutoNUMA / TPP / Colloid); promotion; kswapd demotion; a second promotion round into the space kswapd
freed; Colloid's hot-page shedding; UPM; then the throughput fixed point (ptmt.sim.perf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptmt.errors import ConfigError
from ptmt.sim import constants as C
from ptmt.sim.autonuma import NumaBalancing
from ptmt.sim.colloid import Colloid
from ptmt.sim.knobs import KnobValues
from ptmt.sim.machine import MachineSpec, Watermarks, watermarks
from ptmt.sim.memory import FAST, SLOW, Memory
from ptmt.sim.perf import Demand, solve
from ptmt.sim.reclaim import Kswapd, coldest, demote, migrate_cost_s
from ptmt.sim.upm import UpmDaemon, UpmState
from ptmt.sim.workload import AccessModel, WorkloadSpec, prefetch_factor

#: Largest share of the workload's CPU time tiering overheads may take in the model.
MAX_OVERHEAD = 0.9


@dataclass(frozen=True)
class StepStats:
    t: float
    dt: float
    ops_s: float
    accesses_s: float
    fast_share: float
    fast_latency_ns: float
    slow_latency_ns: float
    fast_util: float
    slow_util: float
    overhead: float
    promoted: int
    demoted: int


class Engine:
    def __init__(self, machine: MachineSpec, workload: WorkloadSpec, seed: int = 0) -> None:
        self.m, self.w = machine, workload
        self.rng = np.random.default_rng(seed)
        total = machine.fast_frames + machine.slow_frames
        n0 = machine.frames(workload.footprint_gb)
        grows = any(p.growth_gb_per_s > 0 for p in workload.phases)
        max_frames = total if grows else n0
        wm = watermarks(machine.fast.capacity_gb * C.GIB, machine.frame_bytes, 3000,
                        (machine.fast.capacity_gb + machine.slow.capacity_gb) * C.GIB)
        if n0 < 1 or n0 > total - 2 * wm.min:
            raise ConfigError(
                f"workload {workload.name}: footprint {workload.footprint_gb} GiB does not fit the machine "
                f"({machine.fast.capacity_gb} + {machine.slow.capacity_gb} GiB); use --fast-gb/--slow-gb "
                "or a smaller footprint")
        self.mem = Memory(machine, max_frames)
        self.access = AccessModel(max_frames, self.rng, workload.layout)
        # one hint fault per frame (a 4 KiB page, or a THP as one folio), taken on the workload's threads
        self.numa = NumaBalancing(fault_service_s=machine.hint_fault_us * 1e-6 / min(workload.threads, machine.cpus))
        self.kswapd = Kswapd()
        self.colloid = Colloid()
        self.upm = UpmDaemon(UpmState(), max_frames)
        self.t = 0.0
        self.phase_index = 0
        self.behaviour = workload.phase_at(0.0)[1].behaviour
        self.accesses_s = workload.base.intensity * 0.5  # first guess, refined every step
        self.fast_ns, self.slow_ns = machine.fast.latency_ns, machine.slow.latency_ns
        self.perf = {"instructions": 0.0, "cycles": 0.0, "loads_fast": 0.0, "loads_slow": 0.0, "ops": 0.0}
        self._wm_cache: tuple[int, Watermarks] | None = None
        self._allocate(n0, KnobValues())
        self.p = self.access.probabilities(self.behaviour, self.mem.n_alloc)

    # -- helpers ------------------------------------------------------------------------------------
    def watermarks(self, knobs: KnobValues) -> Watermarks:
        wsf = knobs.watermark_scale_factor
        if not self._wm_cache or self._wm_cache[0] != wsf:
            m = self.m
            self._wm_cache = (wsf, watermarks(m.fast.capacity_gb * C.GIB, m.frame_bytes, wsf,
                                              (m.fast.capacity_gb + m.slow.capacity_gb) * C.GIB))
        return self._wm_cache[1]

    def _allocate(self, k: int, knobs: KnobValues) -> None:
        """First touch of ``k`` new frames: the fast node until it reaches its low watermark, then
        the slow node (or, with zone_reclaim_mode and demotion, demote directly to stay local)."""
        mem = self.mem
        start = mem.n_alloc
        k = min(k, len(mem.node) - start)
        if k <= 0:
            return
        wm = self.watermarks(knobs)
        local = min(k, max(0, mem.free_fast - wm.low))
        if local < k and knobs.zone_reclaim_mode and knobs.demotion_enabled:
            lam = self.accesses_s * self.p if hasattr(self, "p") else np.ones(len(mem.node))
            need = min(k - local, mem.free_slow)
            demote(mem, coldest(mem, lam, need, self.rng, tau=self.kswapd.tau(mem)), direct=True)
            local = min(k, max(0, mem.free_fast - wm.low))
        mem.place(np.arange(start, start + local), FAST)
        rest = min(k - local, mem.free_slow)
        mem.place(np.arange(start + local, start + local + rest), SLOW)
        mem.n_alloc = start + local + rest

    def _phase(self, t: float, dt: float, knobs: KnobValues) -> None:
        index, phase = self.w.phase_at(t)
        changed = False
        if index != self.phase_index:
            self.phase_index = index
            self.behaviour = phase.behaviour
            self.access.shift(phase.shift, AccessModel.hot_ranks(phase.behaviour, self.mem.n_alloc))
            changed = True
        if phase.growth_gb_per_s > 0:
            self._growth_carry = getattr(self, "_growth_carry", 0.0) + phase.growth_gb_per_s * dt * C.GIB
            k = int(self._growth_carry // self.m.frame_bytes)
            if k:
                self._growth_carry -= k * self.m.frame_bytes
                before = self.mem.n_alloc
                self._allocate(k, knobs)
                changed |= self.mem.n_alloc != before
        if changed:
            self.p = self.access.probabilities(self.behaviour, self.mem.n_alloc)
            mem = self.mem
            prot = np.flatnonzero(mem.prot)
            if len(prot):  # accesses after the change follow the new distribution
                lam = self.accesses_s * self.p[prot]
                with np.errstate(divide="ignore"):
                    mem.fault_at[prot] = np.maximum(mem.prot_time[prot], t) + \
                        self.rng.standard_exponential(len(prot)) / lam

    # -- the step -----------------------------------------------------------------------------------
    def step(self, dt: float, knobs: KnobValues) -> StepStats:
        t0, t1 = self.t, self.t + dt
        self._phase(t0, dt, knobs)
        mem, m, rng = self.mem, self.m, self.rng
        share_before = float((self.p * mem.fast_f).sum())
        mem.moved = []
        lam = self.accesses_s * self.p
        wm = self.watermarks(knobs)
        fb = m.frame_bytes
        kcost = migrate_cost_s(fb, kernel=True)
        cost = 0.0
        promoted = demoted = 0
        mig = [0.0, 0.0, 0.0, 0.0]  # fast read, fast write, slow read, slow write (bytes)
        tpp = knobs.demote_scale_factor is not None
        if knobs.colloid:
            self.colloid.decide(knobs, self.fast_ns, self.slow_ns)
        just_promoted = approve = np.empty(0, dtype=np.int64)
        if knobs.normal or knobs.tiering:
            updated = self.numa.scan(mem, knobs, lam, t0, t1, rng)
            cost += updated * (C.SCAN_COST_PER_PMD_S if mem.ppf > 1 else C.SCAN_COST_PER_PTE_S * mem.ppf)
            allow = not knobs.colloid or self.colloid.mode == "promote"
            fr = self.numa.faults(mem, knobs, wm, t1, tpp, allow)
            cost += fr.faults * m.hint_fault_us * 1e-6
            approve = fr.promote
            if knobs.colloid:
                approve = self.colloid.cap_promotions(knobs, approve, self.p, dt)
            n_ok, refused = self.numa.promote(mem, approve, wm, knobs.tiering)
            just_promoted = approve[:n_ok]
            promoted += n_ok
            if refused and knobs.tiering:
                self.kswapd.woken_for_promotion = True
        elif mem.prot.any():
            mem.prot[:] = False
            mem.fault_at[:] = np.inf
        wanted = len(approve) - len(just_promoted) if knobs.tiering else 0
        d = self.kswapd.run(mem, knobs, wm, lam, dt, rng, exclude=just_promoted, wanted=wanted)
        demoted += d
        cost += d * kcost * C.KSWAPD_APP_SHARE
        if d and knobs.tiering and len(just_promoted) < len(approve):
            rest = approve[len(just_promoted):]
            n2, _ = self.numa.promote(mem, rest, wm, True)
            promoted += n2
        cost += promoted * kcost
        if knobs.colloid:
            s = self.colloid.shed(mem, knobs, lam, self.p, dt, rng)
            demoted += s
            cost += s * kcost * C.KSWAPD_APP_SHARE
        samples = self.upm.sample(lam, self.accesses_s * dt, dt)
        cost += samples * C.PEBS_SAMPLE_COST_S
        up, down = self.upm.migrate(mem, t1, rng, wm.high)
        cost += (up + down) * migrate_cost_s(fb, kernel=False) * C.UPM_APP_SHARE
        promoted += up
        demoted += down
        self.kswapd.observe(demoted, dt)
        cost += self._migration_stall(lam, kcost)
        mig[1] += promoted * fb
        mig[2] += promoted * fb
        mig[0] += demoted * fb
        mig[3] += demoted * fb
        return self._finish(t0, dt, cost, mig, promoted, demoted, share_before)

    def _migration_stall(self, lam: np.ndarray, copy_s: float) -> float:
        """Thread-seconds the workload waits on pages while they are being migrated."""
        if not self.mem.moved:
            return 0.0
        idx = np.concatenate(self.mem.moved)
        waiting = np.minimum(self.w.threads - 1, lam[idx] * copy_s)
        return float(C.MIGRATION_STALL_SHARE * copy_s * waiting.sum())

    def _finish(self, t0: float, dt: float, cost: float, mig: list[float], promoted: int,
                demoted: int, share_before: float) -> StepStats:
        b, w, m = self.behaviour, self.w, self.m
        # migrations happen during the step: charge it the mean of the placements before and after
        # (elementwise product and sum, not np.dot: BLAS threads spin when the machine is loaded)
        fast_share = 0.5 * (share_before + float((self.p * self.mem.fast_f).sum()))
        overhead = min(MAX_OVERHEAD, cost / (w.threads * dt))
        tp = solve(m, Demand(fast_share, b.intensity, b.mlp, b.read_ratio, prefetch_factor(b), overhead,
                             (mig[0] / dt, mig[1] / dt, mig[2] / dt, mig[3] / dt)))
        self.accesses_s = tp.accesses_s
        self.fast_ns, self.slow_ns = tp.fast_latency_ns, tp.slow_latency_ns
        acc = tp.accesses_s * dt
        threads = min(w.threads, m.cpus)
        pf = self.perf
        pf["instructions"] += acc * w.instructions_per_access
        pf["cycles"] += threads * dt * m.cpu_ghz * 1e9
        pf["loads_fast"] += acc * fast_share
        pf["loads_slow"] += acc * (1 - fast_share)
        pf["ops"] += acc / w.accesses_per_op
        self.t = t0 + dt
        return StepStats(self.t, dt, tp.accesses_s / w.accesses_per_op, tp.accesses_s, fast_share,
                         tp.fast_latency_ns, tp.slow_latency_ns, tp.fast_util, tp.slow_util, overhead,
                         promoted, demoted)

    # -- persistence ---------------------------------------------------------------------------------
    def scalars(self) -> dict[str, object]:
        return {"t": self.t, "phase_index": self.phase_index, "accesses_s": self.accesses_s,
                "fast_ns": self.fast_ns, "slow_ns": self.slow_ns, "perf": self.perf,
                "numa": self.numa.state(), "colloid": self.colloid.mode,
                "growth_carry": getattr(self, "_growth_carry", 0.0),
                "counters": self.mem.counters.as_dict(), "upm": self.upm.s.as_dict()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.mem.state(), "rank_to_frame": self.access.rank_to_frame, "upm_expected": self.upm.expected}

    def restore(self, scalars: dict[str, object], arrays: dict[str, np.ndarray]) -> None:
        from ptmt.sim.memory import Counters

        self.mem.load_state({k: arrays[k] for k in self.mem.state() if k in arrays})
        if "rank_to_frame" in arrays and len(arrays["rank_to_frame"]) == self.access.max_frames:
            self.access.rank_to_frame = arrays["rank_to_frame"]
        if "upm_expected" in arrays and len(arrays["upm_expected"]) == len(self.upm.expected):
            self.upm.expected = arrays["upm_expected"]
        self.t = float(scalars["t"])  # type: ignore[arg-type]
        self.phase_index = int(scalars["phase_index"])  # type: ignore[arg-type]
        self.behaviour = self.w.phase_at(self.t)[1].behaviour
        self.accesses_s = float(scalars["accesses_s"])  # type: ignore[arg-type]
        self.fast_ns, self.slow_ns = float(scalars["fast_ns"]), float(scalars["slow_ns"])  # type: ignore[arg-type]
        self.perf.update(scalars["perf"])  # type: ignore[arg-type]
        numa = dict(scalars["numa"])  # type: ignore[arg-type]
        for k, v in numa.items():
            setattr(self.numa, k, v)
        self.colloid.mode = str(scalars["colloid"])
        self._growth_carry = float(scalars.get("growth_carry", 0.0))  # type: ignore[arg-type]
        self.mem.counters = Counters.from_dict(scalars["counters"])  # type: ignore[arg-type]
        self.upm.s = UpmState(**scalars["upm"])  # type: ignore[arg-type]
        self.p = self.access.probabilities(self.behaviour, self.mem.n_alloc)
        if not math.isfinite(self.accesses_s) or self.accesses_s <= 0:
            self.accesses_s = self.w.base.intensity * 0.5
