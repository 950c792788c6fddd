"""Hosts: where knob files live, how time passes, where counters come from.

A host is either the real Linux machine (``/proc`` and ``/sys`` under a root, wall-clock time) or the
simulated tiered-memory machine (``ptmt.sim``), which materialises the same files under a directory and
advances simulated time only when asked. Everything above the host (backends, telemetry, tuner) is the
same code on both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from ptmt.kernelfs import KernelFS

Platform = Literal["linux", "sim"]
TIERS_DIR = "/sys/devices/virtual/memory_tiering"


@runtime_checkable
class UpmTransport(Protocol):
    """Carries one UPM control request line and returns the daemon's reply line."""

    def request(self, line: str) -> str: ...


class Host(Protocol):
    """What every host offers to the layers above it."""

    platform: Platform
    fs: KernelFS

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of (real or simulated) time pass."""

    def now(self) -> float:
        """Seconds since an arbitrary origin, monotonic."""

    def upm_transport(self, address: str, port: int) -> UpmTransport:
        """The channel to the UPM daemon (TCP on Linux, in-process on the simulated machine)."""


class LinuxHost:
    """The real machine: kernel files under ``root`` (``/`` unless testing), wall-clock time."""

    platform: Platform = "linux"

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.fs = KernelFS(root)

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)

    def now(self) -> float:
        return time.monotonic()

    def upm_transport(self, address: str, port: int) -> UpmTransport:
        from ptmt.backends.upm_protocol import TcpTransport

        return TcpTransport(address, port)


def memory_tier_count(fs: KernelFS) -> int:
    """Number of memory tiers that hold at least one node (0 when the kernel has no tiering sysfs)."""
    count = 0
    for name in fs.listdir(TIERS_DIR):
        if name.startswith("memory_tier"):
            try:
                if fs.read(f"{TIERS_DIR}/{name}/nodelist"):
                    count += 1
            except Exception:  # noqa: BLE001 - an unreadable tier simply does not count
                continue
    return count


def default_platform(root: str | os.PathLike[str] = "/") -> Platform:
    """``linux`` on a machine with at least two populated memory tiers, else ``sim``."""
    return "linux" if memory_tier_count(KernelFS(root)) >= 2 else "sim"


def default_state_dir(platform: Platform) -> Path:
    """Where the rollback journal lives: system-wide for the real kernel, per user for the simulator."""
    if env := os.environ.get("PTMT_STATE_DIR"):
        return Path(env)
    if platform == "linux":
        return Path("/var/lib/ptmt")
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "ptmt" / "sim"


def pid_alive(pid: int) -> bool:
    """Whether process *pid* exists (one we may not signal exists too): a dead owner's lease is stale."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
