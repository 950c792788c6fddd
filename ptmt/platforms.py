"""Choosing and opening the host a command runs on: the real kernel or the simulated machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ptmt.errors import PtmtError
from ptmt.host import Host, LinuxHost, Platform, default_platform, default_state_dir

PLATFORMS: tuple[Platform, ...] = ("linux", "sim")


def resolve_platform(platform: str | None, root: str | os.PathLike[str] | None = None) -> Platform:
    """The requested platform, or ``linux`` where the machine has two memory tiers and ``sim`` otherwise."""
    if platform is None:
        return default_platform(root or "/")
    if platform not in PLATFORMS:
        raise PtmtError(f"--platform must be one of {', '.join(PLATFORMS)} (got {platform!r})")
    return platform  # type: ignore[return-value]


def sim_root(state_dir: Path | None = None) -> Path:
    """Where the simulated machine keeps its kernel files between commands."""
    return (state_dir or default_state_dir("sim")) / "machine"


def open_host(platform: Platform, root: str | os.PathLike[str] | None = None,
              state_dir: Path | None = None, **sim_options: Any) -> Host:
    if platform == "linux":
        return LinuxHost(root or "/")
    from ptmt.sim.host import SimHost  # the simulator is heavy (numpy model): load on demand

    return SimHost(Path(root) if root else sim_root(state_dir), **{k: v for k, v in sim_options.items() if v is not None})
