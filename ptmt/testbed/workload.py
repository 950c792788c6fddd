"""In-guest tiering workload: a cold hog fills the fast node, a hot set starts on the slow node.

Run inside the testbed guest (or on any tiered machine, as root)::

    python -m ptmt.testbed.workload scenario --cold-mb 800 --hot-mb 250 --seconds 15 --json out.json

It sets the tiering knobs (NUMA balancing mode 2, demotion on, short scan periods by default), starts a
cold process that touches ``cold_mb`` and then sleeps, starts a hot process that keeps writing
``hot_mb``, moves the hot process's pages to the slow node with ``migrate_pages(2)`` (its memory policy
stays default, so the kernel is free to promote them back), fills the room that left on the fast node
with a second cold process (so promoting the hot set has to demote), samples ``/proc/vmstat`` while the hot
process runs, restores the knobs and reports the counter deltas. Several runs with different settings
can share one boot (``--runs FILE``): that is how the fidelity checks compare two settings.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

NB_DEBUGFS = "/sys/kernel/debug/sched/numa_balancing"
#: Knob names understood by ``--set`` (absolute paths are accepted as well).
KNOB_PATHS: dict[str, str] = {
    "numa_balancing": "/proc/sys/kernel/numa_balancing",
    "numa_balancing_promote_rate_limit_MBps": "/proc/sys/kernel/numa_balancing_promote_rate_limit_MBps",
    "demotion_enabled": "/sys/kernel/mm/numa/demotion_enabled",
    "watermark_scale_factor": "/proc/sys/vm/watermark_scale_factor",
    "zone_reclaim_mode": "/proc/sys/vm/zone_reclaim_mode",
    "demote_scale_factor": "/proc/sys/vm/demote_scale_factor",
    **{k: f"{NB_DEBUGFS}/{k}" for k in (
        "scan_delay_ms", "scan_period_min_ms", "scan_period_max_ms", "scan_size_mb", "hot_threshold_ms")},
}
#: What the scenario sets unless told otherwise (see docs/testbed.md for why each one).
DEFAULT_SETTINGS: dict[str, str] = {
    "numa_balancing": "2",
    "demotion_enabled": "1",
    "scan_delay_ms": "100",
    "scan_period_min_ms": "100",
    "scan_period_max_ms": "1000",
    "hot_threshold_ms": "5000",
    "watermark_scale_factor": "200",
}
COUNTERS = (
    "numa_pte_updates", "numa_hint_faults", "numa_hint_faults_local", "numa_pages_migrated",
    "pgmigrate_success", "pgmigrate_fail", "pgpromote_success", "pgpromote_candidate",
    "pgdemote_kswapd", "pgdemote_direct", "pgdemote_khugepaged",
)
PAGE = 4096
SYS_MIGRATE_PAGES = 256  # x86-64
SYS_SET_MEMPOLICY = 238  # x86-64
MPOL_DEFAULT, MPOL_BIND = 0, 2


def read_vmstat() -> dict[str, int]:
    """The minimal reader: every ``/proc/vmstat`` counter."""
    with open("/proc/vmstat") as f:
        return parse_vmstat(f.read())


def _cat(path: str) -> str:
    with open(path) as f:  # one read() of the whole file (a shell `read` gets only one byte of sysctls)
        return f.read().strip()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode() + b"\n")
    finally:
        os.close(fd)


def knob_path(name: str) -> str:
    if name.startswith("/"):
        return name
    if name not in KNOB_PATHS:
        raise SystemExit(f"unknown knob {name!r}: use one of {', '.join(KNOB_PATHS)} or a path")
    return KNOB_PATHS[name]


def node_free_mb() -> dict[str, int]:
    out = {}
    base = Path("/sys/devices/system/node")
    for n in sorted(base.glob("node[0-9]*")):
        for line in (n / "meminfo").read_text().splitlines():
            if "MemFree:" in line:
                out[n.name] = int(line.split()[-2]) // 1024
    return out


def tiers() -> dict[str, str]:
    base = Path("/sys/devices/virtual/memory_tiering")
    return {t.name: (t / "nodelist").read_text().strip() for t in sorted(base.glob("memory_tier*"))}


def pages_on_node(pid: int, node: int) -> int:
    """Pages of ``pid`` on ``node`` according to /proc/PID/numa_maps (0 if the process is gone)."""
    total, key = 0, f"N{node}="
    try:
        with open(f"/proc/{pid}/numa_maps") as f:
            for line in f:
                for field in line.split():
                    if field.startswith(key):
                        n = int(field[len(key):])
                        total += n * 512 if "kernelpagesize_kB=2048" in line else n
    except OSError:
        return 0
    return total


def numa_scan_seq(pid: int) -> int | None:
    """Full passes of the NUMA scanner over ``pid``'s address space so far (``mm->numa_scan_seq`` in
    /proc/PID/sched, a CONFIG_SCHED_DEBUG kernel); None when unavailable."""
    try:
        with open(f"/proc/{pid}/sched") as f:
            for line in f:
                if line.startswith("mm->numa_scan_seq"):
                    return int(line.split(":")[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def migrate_pages(pid: int, src: int, dst: int) -> int:
    """Move ``pid``'s pages from node ``src`` to ``dst``; returns pages that could not be moved."""
    libc = ctypes.CDLL(None, use_errno=True)
    old, new = ctypes.c_ulong(1 << src), ctypes.c_ulong(1 << dst)
    r = libc.syscall(SYS_MIGRATE_PAGES, pid, 64, ctypes.byref(old), ctypes.byref(new))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"migrate_pages: {os.strerror(e)}")
    return r


def set_mempolicy(mode: int, node: int | None = None) -> None:
    """This process's allocation policy (MPOL_DEFAULT, or MPOL_BIND to one node)."""
    libc = ctypes.CDLL(None, use_errno=True)
    mask = ctypes.c_ulong(1 << node) if node is not None else None
    r = libc.syscall(SYS_SET_MEMPOLICY, mode, ctypes.byref(mask) if mask is not None else None,
                     64 if mask is not None else 0)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"set_mempolicy: {os.strerror(e)}")


# ---------------------------------------------------------------------------------------------
# worker processes
# ---------------------------------------------------------------------------------------------
def touch(mode: str, mb: int, seconds: float, ready: str | None, go: str | None = None,
          thp: bool = True, node: int | None = None) -> None:
    """Allocate ``mb`` of anonymous memory, write every page, signal ready, then: hot waits for a byte
    on stdin (when ``go`` is "-") and keeps writing every page for ``seconds``; cold blocks on stdin
    (when ``go`` is "-") or sleeps for ``seconds``. Blocking, not polling, keeps the counters still
    while the scenario takes its quiet snapshots. ``thp=False`` asks for 4 KiB pages only
    (MADV_NOHUGEPAGE), so that counters count base pages whatever the guest's THP setting.
    ``node`` allocates the buffer there (MPOL_BIND during the first touch only, then the default
    policy again, so the kernel may still promote it); the interpreter's own memory stays local."""
    buf = mmap.mmap(-1, mb << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if not thp:
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    npages = (mb << 20) // PAGE
    if node is not None:
        set_mempolicy(MPOL_BIND, node)
    buf[::PAGE] = b"\x01" * npages
    if node is not None:
        set_mempolicy(MPOL_DEFAULT)
    if ready:
        Path(ready).touch()
    if go == "-":
        if mode == "cold":
            sys.stdin.buffer.read()  # until the scenario kills us or closes the pipe
            return
        sys.stdin.buffer.read(1)
    end, passes = time.monotonic() + seconds, 0
    stop: list[int] = []  # SIGUSR1: the scenario has seen enough; finish the pass and report
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    while time.monotonic() < end and not stop:
        if mode == "hot":
            buf[::PAGE] = bytes([passes & 0xFF]) * npages
            passes += 1
        else:
            time.sleep(0.5)
    print(json.dumps({"mode": mode, "mb": mb, "passes": passes}), flush=True)


def _forked() -> None:
    """A preexec_fn makes subprocess fork() rather than vfork(). A vfork child (CLONE_VM) is set up
    by the kernel as a new thread of its parent: its NUMA scan clock starts non-zero, so it never
    computes its scan period from scan_size_mb (task_scan_start) and keeps scan_delay_ms as its
    period. Workers should start as a shell would start a program."""


def _spawn(mode: str, mb: int, seconds: float, ready: Path, *opts: str) -> subprocess.Popen[bytes]:
    ready.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, "-m", "ptmt.testbed.workload", "touch", mode, str(mb),
                          str(seconds), str(ready), "-", *opts],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_forked)
    deadline = time.monotonic() + max(120.0, mb / 10)
    while not ready.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise RuntimeError(f"{mode} worker did not get ready (rc={p.poll()})")
        time.sleep(0.2)
    return p


# ---------------------------------------------------------------------------------------------
# the scenario
# ---------------------------------------------------------------------------------------------
def parse_vmstat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        out[k] = int(v)
    return out


class TelemetryCheck:
    """PTMT's own telemetry (``ptmt.telemetry.Telemetry``) checked against the kernel's /proc/vmstat.

    The telemetry reads through a file layer that keeps every /proc/vmstat text it was given; the
    check parses the first and last of those texts independently. The telemetry's per-interval
    deltas, summed, must equal that raw delta exactly (reading the file twice, once per reader, would
    differ by whatever the kernel did in between).
    """

    def __init__(self) -> None:
        from ptmt.host import LinuxHost
        from ptmt.kernelfs import OsFileIO
        from ptmt.telemetry import Telemetry

        texts = self.texts = []

        class Recording(OsFileIO):
            def read_text(self, path: Path) -> str:
                text = super().read_text(path)
                if str(path).endswith("/proc/vmstat"):
                    texts.append(text)
                return text

        host = LinuxHost()
        host.fs.io = Recording()
        self.tel = Telemetry(host)
        self.total: dict[str, int] = {}
        self.intervals = 0

    def start(self) -> None:
        self.tel.start()

    def sample(self) -> None:
        s = self.tel.sample()
        self.intervals += 1
        for k, v in s.counters.items():
            self.total[k] = self.total.get(k, 0) + v

    def raw_delta(self) -> dict[str, int]:
        first, last = parse_vmstat(self.texts[0]), parse_vmstat(self.texts[-1])
        return {k: last[k] - first.get(k, 0) for k in last}

    def close(self) -> None:
        self.tel.close()


def _settle(seconds: float = 1.0) -> None:
    time.sleep(seconds)


def scenario(cold_mb: int, hot_mb: int, seconds: float, settings: dict[str, str],
             interval: float = 1.0, name: str = "run", telemetry: bool = False,
             until_slow_mb: float | None = None, thp: bool = True, buffer_on_slow: bool = False) -> dict:
    """One run; with ``until_slow_mb`` the hot loop stops as soon as less than that much of the hot
    set is left on the slow node (``seconds`` is then the most it may take: a guest slowed by a busy
    host promotes more slowly, and a fixed time would judge the host rather than the kernel).
    ``cold_mb=0`` runs the hot set alone (no cold hog, no filler): enough where promotion is off
    and only the scanner is measured, and it saves the slow first touch of 800 MB.
    ``buffer_on_slow`` allocates only the hot buffer on the slow node, instead of moving the whole hot
    process there with migrate_pages: the scanner then finds nothing on the slow node but the buffer."""
    if not os.path.isdir(NB_DEBUGFS) and os.path.isdir("/sys/kernel/debug"):
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=False)
    applied, original = {}, {}
    for k, v in settings.items():
        p = knob_path(k)
        original[p] = _cat(p)
        _write(p, v)
        applied[k] = _cat(p)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    result: dict = {"name": name, "settings": applied, "cold_mb": cold_mb, "hot_mb": hot_mb,
                    "seconds": seconds, "thp": thp, "buffer_on_slow": buffer_on_slow, "tiers": tiers()}
    tel: TelemetryCheck | None = None
    if telemetry:
        try:
            tel = TelemetryCheck()
        except (ImportError, AttributeError) as e:
            result["telemetry"] = {"error": f"{type(e).__name__}: {e}"}
    cold = hot = filler = None
    try:
        if cold_mb:
            cold = _spawn("cold", cold_mb, seconds + 600, tmp / f"cold.{os.getpid()}.ready")
        result["free_after_cold_mb"] = node_free_mb()
        opts = ([] if thp else ["--no-thp"]) + (["--node", "1"] if buffer_on_slow else [])
        hot = _spawn("hot", hot_mb, seconds, tmp / f"hot.{os.getpid()}.ready", *opts)
        if not buffer_on_slow:
            t_mig = time.monotonic()
            result["migrate_not_moved"] = migrate_pages(hot.pid, 0, 1)
            result["migrate_seconds"] = round(time.monotonic() - t_mig, 2)
        # Moving the hot set away freed its room on the fast node, and kswapd may already have
        # demoted cold pages while the hot set was allocated: then its promotion fits without any
        # demotion. Fill the fast node again so the measured window must demote to promote.
        spare = node_free_mb().get("node0", 0) - hot_mb // 4
        result["filler_mb"] = spare if cold_mb and spare > hot_mb // 4 else 0
        if result["filler_mb"]:
            filler = _spawn("cold", spare, seconds + 600, tmp / f"filler.{os.getpid()}.ready")
        result["free_at_start_mb"] = node_free_mb()
        # Telemetry snapshots at quiet moments (hot set idle before, every worker gone after).
        if tel:
            _settle()
            tel.start()
        before = read_vmstat()
        assert hot.stdin is not None
        hot.stdin.write(b"g")
        hot.stdin.close()
        t0 = time.monotonic()
        result["hot_on_slow_mb_start"] = pages_on_node(hot.pid, 1) * PAGE >> 20
        result["scan_seq_start"] = numa_scan_seq(hot.pid)
        samples = []
        stopped_at = None
        while hot.poll() is None:
            time.sleep(interval)
            on_slow = pages_on_node(hot.pid, 1) * PAGE >> 20 if hot.poll() is None else None
            v = read_vmstat()
            if tel:
                tel.sample()
            samples.append({"t": round(time.monotonic() - t0, 2), "hot_on_slow_mb": on_slow,
                            "scan_seq": numa_scan_seq(hot.pid) if on_slow is not None else None,
                            **{c: v.get(c, 0) - before.get(c, 0) for c in COUNTERS}})
            if until_slow_mb is not None and stopped_at is None and on_slow is not None and on_slow < until_slow_mb:
                stopped_at = samples[-1]["t"]  # this reading is the run's last one with the loop alive
                hot.send_signal(signal.SIGUSR1)
        assert hot.stdout is not None
        out = hot.stdout.read()
        hot.wait()
        after = read_vmstat()
        if tel:
            for p in (cold, filler):
                if p is not None:
                    p.kill()
                    p.wait()
            _settle()
            tel.sample()
            tel.close()
            raw = tel.raw_delta()
            result["telemetry"] = {
                "intervals": tel.intervals,
                "vmstat_reads": len(tel.texts),
                "delta": {c: tel.total.get(c, 0) for c in COUNTERS if c in tel.total},
                "vmstat_delta": {c: raw.get(c, 0) for c in COUNTERS if c in tel.total},
            }
        result["hot_passes"] = json.loads(out.decode() or "{}").get("passes")
        result["elapsed"] = round(time.monotonic() - t0, 2)
        result["before"] = {c: before.get(c, 0) for c in COUNTERS}
        result["after"] = {c: after.get(c, 0) for c in COUNTERS}
        result["delta"] = {c: after.get(c, 0) - before.get(c, 0) for c in COUNTERS}
        result["samples"] = samples
        # last reading taken while the hot process was still running its loop
        # (a reading in the hot process's last second may catch it unmapping its memory on exit)
        last = stopped_at if stopped_at is not None else seconds - interval
        alive = [x["hot_on_slow_mb"] for x in samples
                 if x["hot_on_slow_mb"] is not None and x["t"] <= last]
        result["stopped_early_s"] = stopped_at
        result["hot_on_slow_mb_end"] = alive[-1] if alive else None
        seqs = [x["scan_seq"] for x in samples if x["scan_seq"] is not None and x["t"] <= last]
        result["scan_seq_end"] = seqs[-1] if seqs else None
        result["free_end_mb"] = node_free_mb()
    finally:
        for p in (hot, cold, filler):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        for p, v in original.items():
            try:
                _write(p, v)
            except OSError:
                pass
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ptmt.testbed.workload", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("touch", help="one worker process (used by the scenario)")
    t.add_argument("mode", choices=["hot", "cold"])
    t.add_argument("mb", type=int)
    t.add_argument("seconds", type=float)
    t.add_argument("ready", nargs="?")
    t.add_argument("go", nargs="?")
    t.add_argument("--no-thp", dest="thp", action="store_false", help="4 KiB pages only (MADV_NOHUGEPAGE)")
    t.add_argument("--node", type=int, default=None, help="allocate the buffer on this node")
    s = sub.add_parser("scenario", help="cold hog on the fast node, hot set on the slow node")
    s.add_argument("--cold-mb", type=int, default=800)
    s.add_argument("--hot-mb", type=int, default=250)
    s.add_argument("--seconds", type=float, default=15)
    s.add_argument("--interval", type=float, default=1.0)
    s.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="override a default setting (repeatable)")
    s.add_argument("--runs", help="JSON list of {name, settings} run one after the other in this boot; "
                                  "a run may also give its own cold_mb, hot_mb, seconds, thp and "
                                  "buffer_on_slow")
    s.add_argument("--json", help="write the result(s) here (default: stdout)")
    s.add_argument("--until-slow-mb", type=float, default=None,
                   help="stop the hot loop once less than this much of the hot set is on the slow node "
                        "(--seconds is then the longest it runs)")
    s.add_argument("--telemetry", action="store_true",
                   help="also read the counters through ptmt's telemetry and report both deltas")
    a = ap.parse_args(argv)
    if a.cmd == "touch":
        touch(a.mode, a.mb, a.seconds, a.ready, a.go, a.thp, a.node)
        return 0
    base = dict(DEFAULT_SETTINGS)
    for kv in a.set:
        k, _, v = kv.partition("=")
        base[k] = v
    if a.runs:
        runs = json.loads(Path(a.runs).read_text())
        res: object = [scenario(r.get("cold_mb", a.cold_mb), r.get("hot_mb", a.hot_mb), r.get("seconds", a.seconds),
                                {**base, **r.get("settings", {})}, a.interval, r.get("name", f"run{i}"),
                                a.telemetry, thp=r.get("thp", True), buffer_on_slow=r.get("buffer_on_slow", False))
                       for i, r in enumerate(runs)]
    else:
        res = scenario(a.cold_mb, a.hot_mb, a.seconds, base, a.interval, telemetry=a.telemetry,
                       until_slow_mb=a.until_slow_mb)
    text = json.dumps(res, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
