"""UPM, user-space page migration, and its in-process control endpoint.

The daemon samples the workload's loads with PEBS at one sample per ``read_sample_period`` accesses;
every ``page_migration_interval`` seconds it promotes slow pages sampled at least
``hot_page_threshold`` times in that interval (hottest first) with move_pages(2), demoting the
least-sampled fast pages to keep a headroom for them. Costs: a PEBS assist per sample on the workload's
threads, and move_pages time of which the workload pays a share (TLB shootdowns, pages locked while they
move). move_pages is a plain migration to the kernel: it shows in pgmigrate_success only, never in
pgpromote_*/pgdemote_*/numa_pages_migrated, exactly as on Linux.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ptmt.backends.upm_protocol import ProtocolError, Reply, Request
from ptmt.sim.memory import FAST, SLOW, Memory
from ptmt.sim.reclaim import migrate_frames_per_s

#: Free fast memory the daemon keeps, as a fraction of the node. *assumption* (UPM's own default unknown)
UPM_HEADROOM = 0.02
#: A fast page is demoted to make room only if the incoming page is this much hotter. *assumption*
UPM_SWAP_MARGIN = 1.5
LIMITS = {"hot_page_threshold": (1, 1000), "page_migration_interval": (1, 3600),
          "read_sample_period": (1, 10_000_000)}


def poisson_sf(h: int, mu: np.ndarray) -> np.ndarray:
    """P(N >= h) for N ~ Poisson(mu): whether a page collects ``h`` samples in an interval, without
    drawing every page's count (the daemon only compares counts with ``h``)."""
    term = np.exp(-mu)
    cdf = term.copy()
    for k in range(1, h):
        term = term * mu / k
        cdf += term
    return 1.0 - cdf


@dataclass
class UpmState:
    enabled: bool = False
    pid: int = 0
    hot_page_threshold: int = 2
    page_migration_interval: int = 1
    read_sample_period: int = 1000
    next_migration: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class UpmDaemon:
    """The policy; ``samples`` accumulates the expected PEBS samples per frame until the next interval."""

    def __init__(self, state: UpmState, frames: int) -> None:
        self.s = state
        self.expected = np.zeros(frames)

    def sample(self, lam: np.ndarray, accesses: float, dt: float) -> float:
        """Accumulate one step of sampling; returns samples taken (for their cost)."""
        if not self.s.enabled:
            return 0.0
        self.expected += lam * (dt / self.s.read_sample_period)
        return accesses / self.s.read_sample_period

    def migrate(self, mem: Memory, now: float, rng: np.random.Generator, wm_high: int) -> tuple[int, int]:
        """At an interval boundary: returns (promoted, demoted) frames."""
        if not self.s.enabled or now < self.s.next_migration:
            return 0, 0
        interval = self.s.page_migration_interval
        self.s.next_migration = now + interval
        n = mem.n_alloc
        node = mem.node[:n]
        slow = np.flatnonzero(node == SLOW)
        mu = self.expected[slow]
        sel = rng.random(len(slow)) < poisson_sf(self.s.hot_page_threshold, mu)
        hot, hot_counts = slow[sel], mu[sel]
        budget = int(migrate_frames_per_s(mem.m.frame_bytes) * interval)
        order = np.argsort(-hot_counts, kind="stable")[:budget]
        hot, hot_mu = hot[order], hot_counts[order]
        headroom = wm_high + int(UPM_HEADROOM * mem.capacity[FAST])
        need = min(max(0, len(hot) + headroom - mem.free_fast), budget, mem.free_slow)
        demoted = 0
        if need:
            # victims: the least-sampled fast pages; each must be colder than the page it makes room
            # for (by a margin, against ping-pong), or below the hot threshold for the headroom
            fast = np.flatnonzero(node == FAST)
            key = self.expected[fast] * (0.5 + rng.random(len(fast)))
            k = min(need, len(fast))
            pick = np.argpartition(key, k - 1)[:k] if k < len(fast) else np.arange(len(fast))
            pick = pick[np.argsort(key[pick], kind="stable")]
            victims, vkey = fast[pick], key[pick]
            rival = np.zeros(len(victims))
            rival[: min(len(hot), len(victims))] = hot_mu[: len(victims)]
            ok = (vkey < self.s.hot_page_threshold) | (rival > UPM_SWAP_MARGIN * vkey)
            victims = victims[ok]
            mem.move(victims, SLOW)
            demoted = len(victims)
        self.expected[:] = 0.0
        room = max(0, mem.free_fast - wm_high)
        take, failed = hot[:room], hot[room:]
        mem.move(take, FAST)
        c, ppf = mem.counters, mem.ppf
        c.add("pgmigrate_success", (demoted + len(take)) * ppf)
        c.add("pgmigrate_fail", len(failed) * ppf)
        if ppf > 1:
            c.vm["thp_migration_success"] += demoted + len(take)
            c.vm["thp_migration_fail"] += len(failed)
        return len(take), demoted

    # -- control protocol ------------------------------------------------------------------------
    def handle(self, line: str, workload_pid: int, now: float) -> str:
        """One request line of ptmt.backends.upm_protocol in, one reply line out."""
        try:
            req = Request.decode(line)
        except ProtocolError as e:
            return Reply(False, error=str(e)).encode()
        if req.pid != workload_pid:
            return Reply(False, error=f"no such process {req.pid}").encode()
        for name, value in req.params.items():
            lo, hi = LIMITS[name]
            if not lo <= value <= hi:
                return Reply(False, error=f"{name} {value} outside {lo}..{hi}").encode()
        if req.verb == "status":
            return Reply(True, self._status()).encode()
        if req.verb == "disable":
            self.s.enabled = False
            return Reply(True).encode()
        for name, value in req.params.items():
            setattr(self.s, name, int(value))
        if req.verb == "enable":
            if not self.s.enabled:
                self.s.next_migration = now + self.s.page_migration_interval
            self.s.enabled, self.s.pid = True, req.pid
        return Reply(True).encode()

    def _status(self) -> dict[str, str]:
        s = self.s
        return {"enabled": str(int(s.enabled)), "h": str(s.hot_page_threshold),
                "m": str(s.page_migration_interval), "d": str(s.read_sample_period)}
