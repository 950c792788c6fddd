"""The simulated machine: a fast node with CPUs and a CPU-less slow node, and their loaded latency.

Capacities, idle latencies and bandwidths come from presets (``configs/machines``) that cite their
sources; watermarks follow the kernel's formulas so that watermark_scale_factor moves the same
thresholds it moves on Linux.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from ptmt.errors import ConfigError
from ptmt.sim import constants as C
from ptmt.sim.specs import load_validated

DEFAULT_MACHINE = "dram-cxl-1to2"


@dataclass(frozen=True)
class TierSpec:
    """One memory node."""

    capacity_gb: float
    latency_ns: float  #: idle load-to-use latency of a random access
    read_gbps: float  #: peak read bandwidth, GB/s (1e9 bytes)
    write_gbps: float
    kind: str = "dram"
    loaded_latency_k: float = C.LOADED_LATENCY_K

    def loaded_latency_ns(self, utilisation: float) -> float:
        """Latency under load: rises steeply as the device's bandwidth fills (queueing)."""
        u = min(max(utilisation, 0.0), C.MAX_UTILISATION)
        return self.latency_ns * (1.0 + self.loaded_latency_k * u / (1.0 - u))

    def busy_fraction(self, read_bytes_s: float, write_bytes_s: float) -> float:
        """Share of the device's time spent moving this traffic (reads and writes at their own peaks)."""
        return read_bytes_s / (self.read_gbps * 1e9) + write_bytes_s / (self.write_gbps * 1e9)


@dataclass(frozen=True)
class MachineSpec:
    name: str
    fast: TierSpec
    slow: TierSpec
    frame_kb: int = 2048  #: simulation granularity: 2 MiB (THP) by default, 4 KiB for small footprints
    cpus: int = 16  #: CPUs on the fast node (the slow node has none)
    cpu_ghz: float = 2.4
    #: thread time of one NUMA hint fault (trap, task_numa_fault, PTE fix-up), per frame: a 4 KiB page,
    #: or a THP, which faults once as one folio. Threads take their faults one after another, so this
    #: also sets how fast a freshly scanned window faults back (NumaBalancing.fault_service_s)
    hint_fault_us: float = C.HINT_FAULT_COST_S * 1e6
    description: str = ""

    @property
    def frame_bytes(self) -> int:
        return self.frame_kb * C.KIB

    @property
    def pages_per_frame(self) -> int:
        """Base pages (4 KiB) per frame: the unit conversion for /proc/vmstat."""
        return self.frame_bytes // C.BASE_PAGE

    def frames(self, gb: float) -> int:
        return int(gb * C.GIB // self.frame_bytes)

    @property
    def fast_frames(self) -> int:
        return self.frames(self.fast.capacity_gb)

    @property
    def slow_frames(self) -> int:
        return self.frames(self.slow.capacity_gb)

    def with_capacity(self, fast_gb: float | None, slow_gb: float | None) -> MachineSpec:
        fast = replace(self.fast, capacity_gb=fast_gb) if fast_gb else self.fast
        slow = replace(self.slow, capacity_gb=slow_gb) if slow_gb else self.slow
        return replace(self, fast=fast, slow=slow)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineSpec:
        d = dict(data)
        d["fast"], d["slow"] = TierSpec(**d["fast"]), TierSpec(**d["slow"])
        return cls(**d)


def load_machine(name_or_path: str = DEFAULT_MACHINE, fast_gb: float | None = None,
                 slow_gb: float | None = None, frame_kb: int | None = None) -> MachineSpec:
    """A preset or a user's machine file, optionally with other capacities or frame size."""
    data, path = load_validated("machines", "machine", name_or_path)
    data = dict(data)
    data.pop("source", None)
    try:
        spec = MachineSpec.from_dict(data)
    except TypeError as e:  # the schema should have caught it; keep the message actionable anyway
        raise ConfigError(f"{path}: {e}") from e
    spec = spec.with_capacity(fast_gb, slow_gb)
    if frame_kb:
        spec = replace(spec, frame_kb=frame_kb)
    if spec.frame_kb not in (4, 2048):
        raise ConfigError(f"{path}: At 'frame_kb': must be 4 or 2048 (got {spec.frame_kb})")
    if spec.fast_frames < 8 or spec.slow_frames < 8:
        raise ConfigError(f"{path}: each node needs at least 8 frames of {spec.frame_kb} KiB")
    return spec


@dataclass(frozen=True)
class Watermarks:
    """Per-node free-page thresholds in frames (mm/page_alloc.c: __setup_per_zone_wmarks)."""

    min: int
    low: int
    high: int
    promo: int


def watermarks(node_bytes: float, frame_bytes: int, watermark_scale_factor: int,
               total_bytes: float) -> Watermarks:
    """min from min_free_kbytes (sqrt(16 * lowmem KiB), capped, shared by nodes in proportion to
    size); low/high/promo are min + 1/2/3 times max(min/4, managed * wsf / 10000)."""
    min_free_kb = min(int(math.sqrt(total_bytes / C.KIB * 16)), C.MIN_FREE_KBYTES_MAX)
    min_b = min_free_kb * C.KIB * node_bytes / total_bytes
    step = max(min_b / 4, node_bytes * watermark_scale_factor / 10000)
    to_frames = lambda b: int(math.ceil(b / frame_bytes))  # noqa: E731
    return Watermarks(to_frames(min_b), to_frames(min_b + step), to_frames(min_b + 2 * step),
                      to_frames(min_b + 3 * step))
