"""What this machine supports: kernel, NUMA nodes, memory tiers, debugfs, perf, DAMON, backends.

Everything is read through the host's KernelFS, so the same code describes the real machine, a fake
tree in tests and the simulated machine.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform as _platform
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from ptmt.backends.registry import backend_for
from ptmt.catalog import load_all
from ptmt.errors import KnobError, PtmtError
from ptmt.host import TIERS_DIR, Host
from ptmt.kernelfs import KernelFS

NODE_DIR = "/sys/devices/system/node"
DAMON_ADMIN = "/sys/kernel/mm/damon/admin"


def _read(fs: KernelFS, path: str) -> str | None:
    try:
        return fs.read(path)
    except KnobError:
        return None


def parse_list(text: str | None) -> list[int]:
    """Kernel cpu/node list syntax (``0-3,8``) -> ``[0, 1, 2, 3, 8]``."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def meminfo_kb(text: str | None) -> dict[str, int]:
    """Per-node meminfo (``Node 0 MemTotal:  1024 kB``) -> ``{"MemTotal": 1024, ...}``."""
    values = {}
    for line in (text or "").splitlines():
        m = re.match(r"(?:Node \d+ )?(\w+(?:\(\w+\))?):\s+(\d+)", line)
        if m:
            values[m.group(1)] = int(m.group(2))
    return values


def tiers(fs: KernelFS) -> list[dict[str, Any]]:
    """Memory tiers in order, fastest (lowest abstract distance id) first."""
    found = []
    for name in fs.listdir(TIERS_DIR):
        m = re.fullmatch(r"memory_tier(\d+)", name)
        if m:
            nodes = parse_list(_read(fs, f"{TIERS_DIR}/{name}/nodelist"))
            if nodes:
                found.append({"id": int(m.group(1)), "nodes": nodes})
    return sorted(found, key=lambda t: t["id"])


def nodes(fs: KernelFS, tier_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tier_of = {n: t["id"] for t in tier_list for n in t["nodes"]}
    out = []
    for name in fs.listdir(NODE_DIR):
        m = re.fullmatch(r"node(\d+)", name)
        if not m:
            continue
        nid = int(m.group(1))
        cpus = parse_list(_read(fs, f"{NODE_DIR}/{name}/cpulist"))
        mem = meminfo_kb(_read(fs, f"{NODE_DIR}/{name}/meminfo"))
        out.append({"id": nid, "cpus": cpus, "cpu_less": not cpus, "mem_total_kb": mem.get("MemTotal"),
                    "mem_free_kb": mem.get("MemFree"), "tier": tier_of.get(nid)})
    return sorted(out, key=lambda n: n["id"])


def demotion_targets(tier_list: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Each node demotes to the nodes of the next lower tier (the kernel's preferred targets)."""
    return {n: tier_list[i + 1]["nodes"] for i, t in enumerate(tier_list[:-1]) for n in t["nodes"]}


def perf_hardware_events() -> tuple[bool, str]:
    """Open (and close) a hardware instructions counter for this process with perf_event_open(2)."""
    numbers = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319, "s390x": 331}
    nr = numbers.get(_platform.machine())
    if nr is None:
        return False, f"perf_event_open syscall number unknown on {_platform.machine()}"
    # struct perf_event_attr (PERF_ATTR_SIZE_VER5 = 112 bytes): type, size, config, ..., flags.
    attr = bytearray(112)
    struct.pack_into("IIQ", attr, 0, 0, len(attr), 1)  # PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS
    struct.pack_into("Q", attr, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
    libc = ctypes.CDLL(None, use_errno=True)
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    fd = libc.syscall(nr, buf, 0, -1, -1, 0)
    if fd >= 0:
        os.close(fd)
        return True, "hardware events usable (instructions, cycles)"
    err = ctypes.get_errno()
    if err in (errno.EACCES, errno.EPERM):
        return False, "perf_event_paranoid forbids hardware events for this user"
    return False, f"hardware events not supported ({errno.errorcode.get(err, err)}); telemetry uses kernel counters only"


def perf_status(host: Host) -> dict[str, Any]:
    if host.platform == "sim":
        return {"hardware_events": True, "detail": "simulated perf counters"}
    if str(host.fs.root) != "/":
        return {"hardware_events": None, "detail": "not checked under --root"}
    usable, detail = perf_hardware_events()
    return {"hardware_events": usable, "detail": detail}


def backend_status(host: Host, catalog_dirs: Iterable[str] = (),
                   options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    out = {}
    for name, catalog in sorted(load_all(catalog_dirs).items()):
        backend = backend_for(catalog, host, (options or {}).get(name))
        states = backend.probe()
        usable, reasons = backend.usability(states)
        out[name] = {"title": catalog.title, "usable": usable, "reasons": reasons, "notes": backend.notes(),
                     "catalog": str(catalog.source), "catalog_hash": catalog.hash,
                     "knobs": [s.as_dict() for s in states]}
    return out


def system_status(host: Host, catalog_dirs: Iterable[str] = (),
                  options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    fs = host.fs
    tier_list = tiers(fs)
    return {
        "platform": host.platform,
        "root": str(fs.root),
        "kernel": _read(fs, "/proc/sys/kernel/osrelease"),
        "nodes": nodes(fs, tier_list),
        "tiers": tier_list,
        "demotion_targets": {str(k): v for k, v in demotion_targets(tier_list).items()},
        "debugfs_mounted": fs.debugfs_mounted(),
        "perf": perf_status(host),
        "damon": fs.is_dir(DAMON_ADMIN),
        "backends": backend_status(host, catalog_dirs, options),
    }


def host_identity(host: Any) -> dict[str, Any]:
    """The keyword arguments of ``Storage.register_host`` for *host*: how the database tells machines apart.

    A simulated machine is named after its preset and carries its topology; a real one is named by its
    hostname and described by what its kernel shows (nodes, memory tiers, perf).
    """
    import socket

    if getattr(host, "platform", None) == "sim":
        machine = host.machine.as_dict()
        return {"hostname": f"sim:{machine.get('name', 'machine')}", "kernel": f"sim-{host.kernel}",
                "platform": "sim", "topology": machine, "tiers": {"0": [0], "1": [1]}, "perf_available": True}
    tier_list = tiers(host.fs)
    try:
        kernel = host.fs.read("/proc/sys/kernel/osrelease").strip()
    except PtmtError:
        kernel = os.uname().release
    return {"hostname": socket.gethostname(), "kernel": kernel, "platform": "linux",
            "topology": {"nodes": nodes(host.fs, tier_list)},
            "tiers": {str(t["id"]): t["nodes"] for t in tier_list},
            "perf_available": perf_status(host).get("hardware_events")}
