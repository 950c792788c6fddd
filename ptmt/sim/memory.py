"""Frames of the simulated address space: which node holds each, and the per-frame kernel state the
policies use (NUMA-hint protection and its timestamps, TPP's active bit, the two-stage filter bit).

Frame index = virtual address order, which is also first-touch order. Counters are kept here in the
kernel's units (4 KiB base pages) so every policy records events the same way.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ptmt.sim.machine import MachineSpec

FAST, SLOW, NONE = 0, 1, -1


class Counters:
    """/proc/vmstat-style event counters, global and per node, in base pages."""

    def __init__(self) -> None:
        self.vm: defaultdict[str, int] = defaultdict(int)
        self.node: list[defaultdict[str, int]] = [defaultdict(int), defaultdict(int)]

    def add(self, name: str, pages: int, node: int | None = None) -> None:
        if pages:
            self.vm[name] += int(pages)
            if node is not None:
                self.node[node][name] += int(pages)

    def as_dict(self) -> dict[str, object]:
        return {"vm": dict(self.vm), "node": [dict(n) for n in self.node]}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Counters:
        c = cls()
        c.vm.update(d.get("vm", {}))  # type: ignore[arg-type]
        for i, n in enumerate(d.get("node", [{}, {}])):  # type: ignore[arg-type]
            c.node[i].update(n)
        return c


class Memory:
    def __init__(self, machine: MachineSpec, max_frames: int) -> None:
        self.m = machine
        self.ppf = machine.pages_per_frame
        self.capacity = (machine.fast_frames, machine.slow_frames)
        n = max_frames
        self.node = np.full(n, NONE, dtype=np.int8)
        self.fast_f = np.zeros(n)  # 1.0 where the frame is on the fast node (for dot products)
        self.prot = np.zeros(n, dtype=bool)  # PTE made PROT_NONE by the NUMA scanner
        self.prot_time = np.zeros(n)  # when (the kernel stores the scan time in the page in tiering mode)
        self.fault_at = np.full(n, np.inf)  # time of the first access after protection
        self.active = np.zeros(n, dtype=bool)  # on the active LRU (TPP promotes only those)
        self.faulted_once = np.zeros(n, dtype=bool)  # two-stage filter of classic NUMA balancing
        self.n_alloc = 0
        self.used = [0, 0]
        self.moved: list[np.ndarray] = []  #: frames migrated during the current step (for their stall cost)
        self.counters = Counters()

    @property
    def free_fast(self) -> int:
        return self.capacity[FAST] - self.used[FAST]

    @property
    def free_slow(self) -> int:
        return self.capacity[SLOW] - self.used[SLOW]

    def place(self, idx: np.ndarray, to: int) -> None:
        """Allocate (first touch) frames on a node, counting numastat like the page allocator."""
        if not len(idx):
            return
        self.node[idx] = to
        self.fast_f[idx] = 1.0 if to == FAST else 0.0
        self.used[to] += len(idx)
        pages = len(idx) * self.ppf
        c = self.counters
        if to == FAST:
            c.add("numa_hit", pages, FAST)
            c.add("numa_local", pages, FAST)
        else:  # fell back from the preferred (local) node
            c.add("numa_miss", pages, SLOW)
            c.add("numa_foreign", pages, FAST)
            c.add("numa_other", pages, SLOW)

    def move(self, idx: np.ndarray, to: int) -> None:
        """Migrate frames to node ``to`` (callers count the migration events)."""
        if not len(idx):
            return
        frm = 1 - to
        self.moved.append(np.asarray(idx))
        self.node[idx] = to
        self.fast_f[idx] = 1.0 if to == FAST else 0.0
        self.used[frm] -= len(idx)
        self.used[to] += len(idx)
        self.prot[idx] = False
        self.fault_at[idx] = np.inf
        self.faulted_once[idx] = False
        if to == SLOW:
            self.active[idx] = False  # demoted pages land on the inactive list
        pages = len(idx) * self.ppf
        self.counters.add("numa_hit", pages, to)
        self.counters.add("numa_local" if to == FAST else "numa_other", pages, to)

    def state(self) -> dict[str, np.ndarray]:
        return {"node": self.node, "prot": self.prot, "prot_time": self.prot_time, "fault_at": self.fault_at,
                "active": self.active, "faulted_once": self.faulted_once}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for k, v in arrays.items():
            getattr(self, k)[: len(v)] = v
        self.fast_f[:] = self.node == FAST
        self.used = [int((self.node == FAST).sum()), int((self.node == SLOW).sum())]
        self.n_alloc = int((self.node != NONE).sum())
