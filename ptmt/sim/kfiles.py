"""The simulated kernel's files: topology, counters in the exact Linux formats, and a FileIO that
validates knob writes as the kernel would (EINVAL) and refuses writes to read-only files (EACCES).

Everything above the host reads these files through ptmt.kernelfs.KernelFS exactly as on Linux.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ptmt.sim import constants as C
from ptmt.sim.knobs import KnobFile, Rejected, by_path, knob_files
from ptmt.sim.memory import FAST, SLOW, Memory

OSRELEASE = "6.12.0-ptmt-sim"
NODE_DIR = "/sys/devices/system/node"
TIER_DIR = "/sys/devices/virtual/memory_tiering"
#: Memory tier ids as Linux numbers them: DRAM at adistance 4 (tier 4), a slower node lower.
TIERS = {4: "0", 22: "1"}

#: /proc/vmstat event names the simulator maintains, in the kernel's order (mm/vmstat.c).
VMSTAT_EVENTS = (
    "numa_hit", "numa_miss", "numa_foreign", "numa_interleave", "numa_local", "numa_other",
    "pgpromote_success", "pgpromote_candidate", "pgdemote_kswapd", "pgdemote_direct", "pgdemote_khugepaged",
    "numa_pte_updates", "numa_huge_pte_updates", "numa_hint_faults", "numa_hint_faults_local",
    "numa_pages_migrated", "pgmigrate_success", "pgmigrate_fail", "thp_migration_success", "thp_migration_fail",
)
NODE_EVENTS = ("pgpromote_success", "pgpromote_candidate", "pgdemote_kswapd", "pgdemote_direct",
               "pgdemote_khugepaged")


def kernel_release(kernel: str) -> str:
    return OSRELEASE if kernel == "upstream" else f"{OSRELEASE}-{kernel}"


def write_file(root: Path, kpath: str, text: str) -> None:
    """Write a file under the root atomically (readers in other processes never see half a file)."""
    p = root / kpath.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def materialise_static(root: Path, cpus: int, kernel: str, thp: bool) -> None:
    """Topology and identity files (written once per machine)."""
    files = {
        "/proc/sys/kernel/osrelease": kernel_release(kernel) + "\n",
        "/proc/mounts": ("sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
                         "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
                         "debugfs /sys/kernel/debug debugfs rw,nosuid,nodev,noexec,relatime 0 0\n"),
        f"{NODE_DIR}/online": "0-1\n",
        f"{NODE_DIR}/possible": "0-1\n",
        f"{NODE_DIR}/has_cpu": "0\n",
        f"{NODE_DIR}/has_memory": "0-1\n",
        f"{NODE_DIR}/has_normal_memory": "0-1\n",
        f"{NODE_DIR}/node0/cpulist": f"0-{cpus - 1}\n" if cpus > 1 else "0\n",
        f"{NODE_DIR}/node1/cpulist": "\n",
        f"{NODE_DIR}/node0/distance": "10 20\n",
        f"{NODE_DIR}/node1/distance": "20 10\n",
        "/sys/kernel/mm/transparent_hugepage/enabled":
            "[always] madvise never\n" if thp else "always madvise [never]\n",
    }
    for tier, nodes in TIERS.items():
        files[f"{TIER_DIR}/memory_tier{tier}/nodelist"] = nodes + "\n"
    for kpath, text in files.items():
        write_file(root, kpath, text)


def materialise_knobs(root: Path, kernel: str, keep: bool) -> None:
    """Create the kernel's knob files with defaults, keeping existing values when ``keep``; remove
    the files of patches this kernel does not have."""
    present = knob_files(kernel)
    for f in present.values():
        p = root / f.path.lstrip("/")
        if keep and p.exists():
            continue
        write_file(root, f.path, f.default + "\n")
    for other in ("upstream", "tpp", "colloid"):
        for f in knob_files(other).values():
            if f.name not in present:
                (root / f.path.lstrip("/")).unlink(missing_ok=True)


def _kb(frames: int, mem: Memory) -> int:
    return frames * mem.m.frame_bytes // C.KIB


def render_counters(mem: Memory, pid: int) -> dict[str, str]:
    """/proc/vmstat, per-node meminfo/numastat/vmstat and the workload's numa_maps."""
    c, ppf = mem.counters, mem.ppf
    free_pages = [mem.free_fast * ppf, mem.free_slow * ppf]
    used_pages = [mem.used[FAST] * ppf, mem.used[SLOW] * ppf]
    thp = [mem.used[FAST], mem.used[SLOW]] if ppf > 1 else [0, 0]
    out: dict[str, str] = {}
    lines = [f"nr_free_pages {sum(free_pages)}", f"nr_inactive_anon {sum(used_pages) // 2}",
             f"nr_active_anon {sum(used_pages) - sum(used_pages) // 2}", f"nr_anon_pages {sum(used_pages)}",
             f"nr_anon_transparent_hugepages {sum(thp)}"]
    lines += [f"{name} {c.vm.get(name, 0)}" for name in VMSTAT_EVENTS]
    out["/proc/vmstat"] = "\n".join(lines) + "\n"
    for n in (FAST, SLOW):
        total_kb = mem.capacity[n] * mem.m.frame_bytes // C.KIB
        free_kb = free_pages[n] * 4
        used_kb = used_pages[n] * 4
        act = used_kb // 2
        rows = [("MemTotal", total_kb), ("MemFree", free_kb), ("MemUsed", total_kb - free_kb),
                ("SwapCached", 0), ("Active", act), ("Inactive", used_kb - act), ("Active(anon)", act),
                ("Inactive(anon)", used_kb - act), ("Active(file)", 0), ("Inactive(file)", 0),
                ("Unevictable", 0), ("Mlocked", 0), ("Dirty", 0), ("Writeback", 0), ("FilePages", 0),
                ("Mapped", 0), ("AnonPages", used_kb), ("Shmem", 0), ("KernelStack", 0), ("PageTables", 0),
                ("AnonHugePages", thp[n] * 2048), ("HugePages_Total", 0), ("HugePages_Free", 0)]
        meminfo = "".join(
            f"Node {n} {name + ':':<16}{v:>8}\n" if name.startswith("HugePages") else
            f"Node {n} {name + ':':<16}{v:>8} kB\n" for name, v in rows)
        node = c.node[n]
        numastat = (f"numa_hit {node.get('numa_hit', 0)}\nnuma_miss {node.get('numa_miss', 0)}\n"
                    f"numa_foreign {node.get('numa_foreign', 0)}\ninterleave_hit 0\n"
                    f"local_node {node.get('numa_local', 0)}\nother_node {node.get('numa_other', 0)}\n")
        vm = [f"nr_free_pages {free_pages[n]}", f"nr_inactive_anon {used_pages[n] // 2}",
              f"nr_active_anon {used_pages[n] - used_pages[n] // 2}", f"nr_anon_pages {used_pages[n]}",
              f"nr_anon_transparent_hugepages {thp[n]}"]
        vm += [f"{name} {node.get(name, 0)}" for name in NODE_EVENTS]
        base = f"{NODE_DIR}/node{n}"
        out[f"{base}/meminfo"] = meminfo
        out[f"{base}/numastat"] = numastat
        out[f"{base}/vmstat"] = "\n".join(vm) + "\n"
    pages = mem.used[FAST] * ppf + mem.used[SLOW] * ppf
    out[f"/proc/{pid}/numa_maps"] = (
        f"7f0000000000 default anon={pages} dirty={pages} active={pages // 2} "
        f"N0={mem.used[FAST] * ppf} N1={mem.used[SLOW] * ppf} kernelpagesize_kB={mem.m.frame_kb if ppf > 1 else 4}\n")
    out[f"/proc/{pid}/comm"] = "ptmt-workload\n"
    return out


class SimFileIO:
    """FileIO of the simulated kernel: knob writes are parsed and normalised like the kernel's
    handlers do, bad values raise EINVAL, other files are read-only (EACCES)."""

    def __init__(self, root: Path, kernel: str) -> None:
        self.root = Path(root).resolve()
        self.kernel = kernel
        self._knobs: dict[str, KnobFile] = by_path(kernel)
        self.writes = 0  #: bumped on every accepted write, so the host notices changes cheaply

    def set_kernel(self, kernel: str) -> None:
        self.kernel = kernel
        self._knobs = by_path(kernel)

    def kpath(self, path: Path) -> str:
        return "/" + Path(os.path.realpath(path)).relative_to(self.root).as_posix()

    def read_text(self, path: Path) -> str:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")

    def write_text(self, path: Path, data: str) -> None:
        knob = self._knobs.get(self.kpath(path))
        if knob is None:
            raise OSError(errno.EACCES, "read-only file in the simulated kernel", str(path))
        try:
            text = knob.parse(data)
        except Rejected as e:
            raise OSError(errno.EINVAL, f"Invalid argument ({e})", str(path)) from None
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)
        self.writes += 1
