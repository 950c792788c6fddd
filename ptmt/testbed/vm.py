"""Boot the testbed guest, run one command inside, return its status and output.

The guest is Debian's kernel in QEMU with two NUMA nodes: node0 holds the CPUs and the fast memory,
node1 is CPU-less slow memory. With ACPI HMAT on (the default) the kernel reads node1's latency and
bandwidth from the firmware tables and puts it in a lower memory tier, so demotion and tiering-mode
NUMA balancing work as on a machine with CXL or Optane memory. The guest sees the host's root
read-only (9p) with a tmpfs overlay, so the host's Python, this project and its virtualenv run inside
at the same paths. A run has a hard timeout; the emulator is killed when it expires.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ptmt.testbed.provision import Setup, TestbedUnavailable, cache_dir, ensure_setup

_SIZE = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class Topology:
    """Guest memory topology. Sizes in MiB; latencies in ns; bandwidths as QEMU sizes per second."""

    fast_mb: int = 1024
    slow_mb: int = 1024
    cpus: int = 2
    fast_latency_ns: int = 100
    slow_latency_ns: int = 400
    fast_bandwidth: str = "20G"
    slow_bandwidth: str = "4G"
    distance: int = 28
    hmat: bool = True

    def __post_init__(self) -> None:
        if self.fast_mb < 256 or self.slow_mb < 64:
            raise ValueError("fast_mb must be >= 256 and slow_mb >= 64")
        if self.cpus < 1:
            raise ValueError("cpus must be >= 1")
        if not 10 < self.distance <= 254:
            raise ValueError("distance must be in 11..254")
        for bw in (self.fast_bandwidth, self.slow_bandwidth):
            if not _SIZE.match(bw):
                raise ValueError(f"bandwidth {bw!r}: expected a number with an optional K/M/G/T suffix")

    def qemu_args(self) -> list[str]:
        args = [
            "-m", f"{self.fast_mb + self.slow_mb}M",
            "-smp", str(self.cpus),
            "-object", f"memory-backend-ram,id=m0,size={self.fast_mb}M",
            "-object", f"memory-backend-ram,id=m1,size={self.slow_mb}M",
        ]
        init = ",initiator=0" if self.hmat else ""
        args += [
            "-numa", f"node,nodeid=0,cpus=0-{self.cpus - 1},memdev=m0{init}",
            "-numa", f"node,nodeid=1,memdev=m1{init}",
            "-numa", f"dist,src=0,dst=1,val={self.distance}",
        ]
        if self.hmat:
            for target, lat, bw in (
                (0, self.fast_latency_ns, self.fast_bandwidth),
                (1, self.slow_latency_ns, self.slow_bandwidth),
            ):
                lb = f"hmat-lb,initiator=0,target={target},hierarchy=memory"
                args += ["-numa", f"{lb},data-type=access-latency,latency={lat}"]
                args += ["-numa", f"{lb},data-type=access-bandwidth,bandwidth={bw}"]
        return args


@dataclass
class RunResult:
    """What one guest run produced. ``returncode`` is the command's exit status; None when the guest
    never reported one (timeout, crash) — ``error`` then says why."""

    returncode: int | None
    stdout: str
    stderr: str
    console: str
    outdir: Path
    accel: str
    boot_seconds: float | None
    total_seconds: float
    timed_out: bool = False
    error: str | None = None
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self, name: str = "result.json") -> object:
        """A JSON file the command wrote into ``$TIERVM_OUT``."""
        return json.loads((self.outdir / name).read_text())

    def describe(self) -> str:
        """A few lines for a failure message."""
        head = f"guest rc={self.returncode} accel={self.accel} in {self.total_seconds:.0f}s"
        if self.error:
            head += f" ({self.error})"
        tail = lambda s, n=3000: s[-n:] if s else ""  # noqa: E731
        return (
            f"{head}\n--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}"
            f"\n--- console (end) ---\n{tail(self.console, 1500)}"
        )


# ---------------------------------------------------------------------------------------------
# acceleration
# ---------------------------------------------------------------------------------------------
def _accel_memo() -> Path:
    return cache_dir() / "accel.json"


def choose_accel(qemu: str = "qemu-system-x86_64") -> tuple[str, str]:
    """("kvm"|"tcg", reason). ``$PTMT_TIERVM_ACCEL`` forces one. KVM is used only when /dev/kvm is
    usable, no paravirtual nested hypervisor (kvm_pvm, which cannot run a stock kernel) is loaded,
    a quick probe starts, and no earlier boot with KVM on this host failed."""
    forced = os.environ.get("PTMT_TIERVM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, "forced by PTMT_TIERVM_ACCEL"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm missing or not accessible"
    if os.path.isdir("/sys/module/kvm_pvm"):
        return "tcg", "/dev/kvm belongs to kvm_pvm (nested paravirtual), which cannot boot a stock kernel"
    try:
        memo = json.loads(_accel_memo().read_text())
        if memo.get("kvm") is False:
            return "tcg", f"an earlier boot with KVM failed: {memo.get('reason', '')}"
    except (OSError, ValueError):
        pass
    try:
        r = subprocess.run(
            [qemu, "-accel", "kvm", "-machine", "q35", "-nodefaults", "-display", "none", "-S",
             "-monitor", "stdio"],
            input="quit\n", capture_output=True, text=True, timeout=10,
        )
        if r.returncode != 0:
            return "tcg", f"KVM probe failed: {r.stderr.strip()[:200]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return "tcg", f"KVM probe failed: {e}"
    return "kvm", "KVM probe passed"


def _remember_kvm_failure(reason: str) -> None:
    try:
        _accel_memo().write_text(json.dumps({"kvm": False, "reason": reason}) + "\n")
    except OSError:
        pass


def died_before_userspace(result: RunResult) -> bool:
    """True when the guest kernel panicked or oopsed before the command could start.

    Multi-threaded software emulation now and then loses a race with the kernel patching its own
    text during boot (seen once in CI: a fatal exception in ``sched_clock_cpu`` 2 s into boot). Such a
    boot says nothing about the command, so :meth:`TierVM.run` boots again; a crash after userspace
    started is the command's result and is returned as it is."""
    if result.boot_seconds is not None or result.timed_out:
        return False
    return any(mark in result.console for mark in ("Kernel panic", "Oops:", "BUG:", "general protection fault"))


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class TierVM:
    """Runs commands in fresh guests of one topology, one boot per :meth:`run`."""

    def __init__(
        self,
        topology: Topology | None = None,
        *,
        setup: Setup | None = None,
        kernel_args: Sequence[str] = (),
        qemu_args: Sequence[str] = (),
        boot_timeout: float = 120,
        boot_retries: int = 2,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.topology = topology or Topology()
        self.setup = setup or ensure_setup(log=log or (lambda _: None))
        self.kernel_args = list(kernel_args)
        self.qemu_args = list(qemu_args)
        self.boot_timeout = boot_timeout
        self.boot_retries = boot_retries
        self.log = log or (lambda _: None)

    def _command_file(self, outdir: Path, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
        exports = {"HOME": "/root", "TERM": "dumb", "LANG": "C.UTF-8", "PATH": GUEST_PATH,
                   "TIERVM_OUT": str(outdir), **env}
        lines = ["# written by ptmt.testbed: runs inside the guest"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
        lines.append(f"cd {shlex.quote(cwd)} 2>/dev/null || cd /")
        lines.append(f"{shlex.join(argv)} >{shlex.quote(str(outdir / 'stdout'))} "
                     f"2>{shlex.quote(str(outdir / 'stderr'))} </dev/null")
        return "\n".join(lines) + "\n"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 600,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        outdir: str | os.PathLike[str] | None = None,
        on_console: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Boot, run ``argv`` (a command on the host's file system, as seen from the guest), power off.

        ``timeout`` bounds the whole run, boot included. Output files go to ``outdir`` (a new temp
        folder by default), which the command sees writable at the same path as ``$TIERVM_OUT``.
        """
        if not argv:
            raise ValueError("empty command")
        accel, why = choose_accel(self.setup.qemu)
        self.log(f"accel={accel}: {why}")
        with self._one_guest_at_a_time(timeout):
            result = self._boot(accel, argv, timeout, cwd, env, outdir, on_console)
            if accel == "kvm" and result.boot_seconds is None and not result.timed_out:
                _remember_kvm_failure(result.error or "no boot")
                self.log(f"boot with KVM failed ({result.error}); retrying with software emulation")
                result = self._boot("tcg", argv, timeout, cwd, env, None, on_console)
            for _ in range(self.boot_retries):
                if not died_before_userspace(result):
                    break
                self.log(f"the guest kernel died before userspace ({result.error}); booting it again")
                result = self._boot(result.accel, argv, timeout, cwd, env, outdir, on_console)
        return result

    @contextmanager
    def _one_guest_at_a_time(self, timeout: float) -> Iterator[None]:
        """Guests of every process sharing this cache take turns (``$PTMT_TIERVM_PARALLEL=1`` lets them
        run side by side): under emulation two guests on a small machine slow each other past their
        timeouts. Waits at most ``timeout`` for the turn."""
        if os.environ.get("PTMT_TIERVM_PARALLEL") == "1":
            yield
            return
        path = cache_dir() / "vm.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TestbedUnavailable(
                            f"another testbed guest kept {path} for {timeout:.0f}s") from None
                    if not getattr(self, "_told_wait", False):
                        self.log("waiting for another testbed guest to finish")
                        self._told_wait = True
                    time.sleep(1)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _boot(self, accel, argv, timeout, cwd, env, outdir, on_console) -> RunResult:  # noqa: ANN001
        if outdir is None:
            out = Path(tempfile.mkdtemp(prefix="ptmt-tiervm-"))
        else:
            out = Path(outdir).resolve()
            out.mkdir(parents=True, exist_ok=True)
        if any(c.isspace() for c in str(out)):
            raise ValueError(f"output folder must not contain white space: {out}")
        for stale in ("stdout", "stderr", "rc"):
            (out / stale).unlink(missing_ok=True)
        (out / "cmd.sh").write_text(self._command_file(out, argv, cwd or os.getcwd(), env or {}))
        acc = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
        append = ["console=ttyS0", "quiet", "panic=-1", f"tiervm_out={out}", *self.kernel_args]
        cmd = [
            self.setup.qemu, "-machine", "q35" + (",hmat=on" if self.topology.hmat else ""), *acc,
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
            *self.topology.qemu_args(),
            "-kernel", str(self.setup.kernel.image), "-initrd", str(self.setup.initramfs),
            "-append", " ".join(append),
            "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            "-fsdev", f"local,id=out,path={out},security_model=none",
            "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
            *self.qemu_args,
        ]
        (out / "qemu.args").write_text(shlex.join(cmd) + "\n")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        console: list[str] = []
        booted: list[float] = []

        def reader() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").replace("\r", "")
                console.append(line)
                if line.startswith("TIERVM_BOOTED") and not booted:
                    booted.append(time.monotonic() - t0)
                if on_console:
                    on_console(line)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        timed_out, error = False, None
        deadline = t0 + timeout
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline:
                timed_out, error = True, f"hard timeout after {timeout:.0f}s"
                break
            if not booted and now - t0 > self.boot_timeout:
                error = f"guest did not reach userspace within {self.boot_timeout:.0f}s"
                break
            if accel == "kvm" and not booted and any("KVM internal error" in c for c in console[-20:]):
                error = "KVM internal error"
                break
            time.sleep(0.2)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        th.join(timeout=5)
        total = time.monotonic() - t0
        text = "".join(console)
        (out / "console.log").write_text(text)
        rc: int | None = None
        m = re.findall(r"^TIERVM_EXIT=(\d+)", text, re.M)
        if m:
            rc = int(m[-1])
        elif (out / "rc").exists():
            rc = int((out / "rc").read_text().strip() or -1)
        if rc is None and error is None:
            error = f"guest ended without an exit status (qemu rc={proc.returncode})"
        read = lambda n: (out / n).read_text(errors="replace") if (out / n).exists() else ""  # noqa: E731
        return RunResult(
            returncode=rc, stdout=read("stdout"), stderr=read("stderr"), console=text, outdir=out,
            accel=accel, boot_seconds=booted[0] if booted else None, total_seconds=total,
            timed_out=timed_out, error=error, command=list(argv),
        )


def run(argv: Sequence[str], topology: Topology | None = None, **kw) -> RunResult:  # noqa: ANN003
    """One-shot convenience: ``run(["cat", "/proc/vmstat"]).stdout``."""
    runner_kw = {k: kw.pop(k) for k in ("kernel_args", "qemu_args", "boot_timeout", "boot_retries", "log")
                 if k in kw}
    return TierVM(topology, **runner_kw).run(argv, **kw)


__all__ = ["RunResult", "TierVM", "Topology", "TestbedUnavailable", "choose_accel", "died_before_userspace", "run"]
