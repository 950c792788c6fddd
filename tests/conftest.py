"""Shared fixtures: fake kernel trees with injectable faults (in the spirit of tuned's tests)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from ptmt.kernelfs import KernelFS, OsFileIO

DEBUG = "sys/kernel/debug/sched/numa_balancing"

#: A 6.12-like two-node tiered machine: node0 DRAM with CPUs, node1 CPU-less in a lower tier.
FAKE_KERNEL: dict[str, str] = {
    "proc/sys/kernel/osrelease": "6.12.0-fake\n",
    "proc/mounts": "sysfs /sys sysfs rw 0 0\nproc /proc proc rw 0 0\ndebugfs /sys/kernel/debug debugfs rw 0 0\n",
    "proc/sys/kernel/numa_balancing": "1\n",
    "proc/sys/kernel/numa_balancing_promote_rate_limit_MBps": "65536\n",
    "proc/sys/vm/watermark_scale_factor": "10\n",
    "proc/sys/vm/zone_reclaim_mode": "0\n",
    "sys/kernel/mm/numa/demotion_enabled": "false\n",
    f"{DEBUG}/hot_threshold_ms": "1000\n",
    f"{DEBUG}/scan_delay_ms": "1000\n",
    f"{DEBUG}/scan_period_min_ms": "1000\n",
    f"{DEBUG}/scan_period_max_ms": "60000\n",
    f"{DEBUG}/scan_size_mb": "256\n",
    "sys/devices/system/node/node0/cpulist": "0-1\n",
    "sys/devices/system/node/node0/meminfo": "Node 0 MemTotal:        1048576 kB\nNode 0 MemFree:          524288 kB\n",
    "sys/devices/system/node/node1/cpulist": "\n",
    "sys/devices/system/node/node1/meminfo": "Node 1 MemTotal:        2097152 kB\nNode 1 MemFree:         2000000 kB\n",
    "sys/devices/virtual/memory_tiering/memory_tier4/nodelist": "0\n",
    "sys/devices/virtual/memory_tiering/memory_tier22/nodelist": "1\n",
}


def make_tree(root: Path, files: dict[str, str] = FAKE_KERNEL) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return root


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "root")


class FaultyIO(OsFileIO):
    """OS file access with injected errors: ``faults[kernel_path] = errno`` (reads and/or writes),
    and ``reject[kernel_path] = {values}`` refused with EINVAL as a kernel's minmax handler would."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.read_faults: dict[str, int] = {}
        self.write_faults: dict[str, int] = {}
        self.reject: dict[str, set[str]] = {}
        self.clamp: dict[str, dict[str, str]] = {}  # path -> {value written: value the kernel keeps}
        self.writes: list[tuple[str, str]] = []

    def _k(self, path: Path) -> str:
        return "/" + str(path.relative_to(self.root))

    def read_text(self, path: Path) -> str:
        if (code := self.read_faults.get(self._k(path))) is not None:
            raise OSError(code, os.strerror(code))
        return super().read_text(path)

    def write_text(self, path: Path, data: str) -> None:
        k = self._k(path)
        if (code := self.write_faults.get(k)) is not None:
            raise OSError(code, os.strerror(code))
        if data.strip() in self.reject.get(k, set()):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.writes.append((k, data.strip()))
        super().write_text(path, self.clamp.get(k, {}).get(data.strip(), data))


@pytest.fixture
def faulty(fake_root: Path) -> FaultyIO:
    return FaultyIO(fake_root)


@pytest.fixture
def fs(fake_root: Path, faulty: FaultyIO) -> KernelFS:
    return KernelFS(fake_root, io=faulty)


@pytest.fixture
def tune_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """The ptmt.tune log (``ptmt tune`` may have turned its propagation off in this process)."""
    monkeypatch.setattr(logging.getLogger("ptmt.tune"), "propagate", True)
    caplog.set_level(logging.INFO, logger="ptmt.tune")
    return caplog
