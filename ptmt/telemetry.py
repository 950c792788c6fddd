"""Per-interval telemetry: deltas of the kernel's counters under the kernel's own names.

Reads ``/proc/vmstat`` and per-node ``meminfo``/``numastat`` through the host's KernelFS, so the same
code samples the real kernel, the simulated machine and fake trees. Hardware counters (instructions,
cycles) come from ``perf_event_open`` on Linux and from the model on the simulated machine; where a
machine has none (many VMs), samples simply lack them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform as _platform
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from ptmt.host import Host
from ptmt.sysinfo import NODE_DIR, meminfo_kb

#: The counters tiering decisions are judged by (DESIGN §3), in 4 KiB base pages.
TIERING_COUNTERS: tuple[str, ...] = (
    "numa_pte_updates", "numa_hint_faults", "numa_hint_faults_local", "numa_pages_migrated",
    "pgmigrate_success", "pgmigrate_fail", "pgpromote_success", "pgpromote_candidate",
    "pgdemote_kswapd", "pgdemote_direct",
)
_NUMASTAT = ("numa_hit", "numa_miss", "numa_foreign", "local_node", "other_node")


def parse_counters(text: str) -> dict[str, int]:
    """``name value`` lines (vmstat, numastat) -> dict; lines of any other shape are skipped."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read_vmstat(host: Host) -> dict[str, int]:
    return parse_counters(host.fs.read("/proc/vmstat"))


def read_nodes(host: Host) -> dict[int, dict[str, int]]:
    """Per node: MemTotal/MemFree (kB) and the numastat counters."""
    nodes: dict[int, dict[str, int]] = {}
    for name in host.fs.listdir(NODE_DIR):
        m = re.fullmatch(r"node(\d+)", name)
        if not m:
            continue
        values: dict[str, int] = {}
        with contextlib.suppress(Exception):
            values.update({k: v for k, v in meminfo_kb(host.fs.read(f"{NODE_DIR}/{name}/meminfo")).items()
                           if k in ("MemTotal", "MemFree")})
        with contextlib.suppress(Exception):
            values.update({k: v for k, v in parse_counters(host.fs.read(f"{NODE_DIR}/{name}/numastat")).items()
                           if k in _NUMASTAT})
        nodes[int(m.group(1))] = values
    return nodes


class SystemPerf:
    """System-wide instructions and cycles via perf_event_open(2), one counter per CPU.

    ``open()`` returns None where the machine has no hardware events or the user may not count them.
    """

    _NR = {"x86_64": 298, "aarch64": 241, "riscv64": 241}

    def __init__(self, fds: dict[str, list[int]]) -> None:
        self.fds = fds

    @classmethod
    def open(cls) -> SystemPerf | None:
        nr = cls._NR.get(_platform.machine())
        if nr is None:
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        fds: dict[str, list[int]] = {"instructions": [], "cycles": []}
        for name, config in (("cycles", 0), ("instructions", 1)):
            for cpu in range(os.cpu_count() or 1):
                attr = bytearray(112)
                struct.pack_into("IIQ", attr, 0, 0, len(attr), config)  # PERF_TYPE_HARDWARE
                struct.pack_into("Q", attr, 40, 1 << 6)  # exclude_hv; counting starts enabled
                buf = (ctypes.c_char * len(attr)).from_buffer(attr)
                fd = libc.syscall(nr, buf, -1, cpu, -1, 0)
                if fd < 0:
                    cls(fds).close()
                    return None
                fds[name].append(fd)
        return cls(fds)

    def read(self) -> dict[str, int]:
        return {name: sum(struct.unpack("Q", os.read(fd, 8))[0] for fd in fds) for name, fds in self.fds.items()}

    def close(self) -> None:
        for fds in self.fds.values():
            for fd in fds:
                os.close(fd)
        self.fds = {}


@dataclass
class Sample:
    """One interval: counter deltas, rates, free memory per node, perf deltas, objective."""

    t: float
    interval_s: float
    counters: dict[str, int]
    nodes: dict[int, dict[str, int]]
    perf: dict[str, float] = field(default_factory=dict)
    objective: float | None = None

    def rate(self, name: str) -> float:
        return self.counters.get(name, 0) / self.interval_s if self.interval_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "interval_s": self.interval_s, "counters": self.counters,
                "nodes": {str(k): v for k, v in self.nodes.items()}, "perf": self.perf, "objective": self.objective}


class Telemetry:
    """Snapshots a host's counters and returns deltas since the previous snapshot."""

    def __init__(self, host: Host, counters: tuple[str, ...] | None = None, use_perf: bool = True) -> None:
        self.host = host
        self.counters = counters
        self._perf = SystemPerf.open() if use_perf and host.platform == "linux" and str(host.fs.root) == "/" else None
        self._last: tuple[float, dict[str, int], dict[str, float]] | None = None

    def _perf_now(self) -> dict[str, float]:
        if self._perf is not None:
            return {k: float(v) for k, v in self._perf.read().items()}
        counters = getattr(self.host, "perf_counters", None)
        return {k: float(v) for k, v in counters().items()} if callable(counters) else {}

    def _snapshot(self) -> tuple[float, dict[str, int], dict[str, float]]:
        vmstat = read_vmstat(self.host)
        if self.counters is not None:
            vmstat = {k: vmstat.get(k, 0) for k in self.counters}
        return self.host.now(), vmstat, self._perf_now()

    def start(self) -> None:
        self._last = self._snapshot()

    def sample(self) -> Sample:
        """Deltas since ``start()`` or the previous ``sample()``."""
        if self._last is None:
            self.start()
        assert self._last is not None
        t0, before, perf0 = self._last
        t1, after, perf1 = self._last = self._snapshot()
        deltas = {k: after[k] - before.get(k, 0) for k in after}
        perf = {k: perf1[k] - perf0.get(k, 0.0) for k in perf1}
        objective = getattr(self.host, "objective", None)
        return Sample(t=t1, interval_s=t1 - t0, counters=deltas, nodes=read_nodes(self.host), perf=perf,
                      objective=objective() if callable(objective) else None)

    def close(self) -> None:
        if self._perf is not None:
            self._perf.close()
