"""Set-up of the real-kernel testbed: host packages, an unpacked Debian kernel, a busybox initramfs.

Nothing is installed on the host but the emulator and a few tools from apt. The guest kernel is
Debian's package, downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into the cache
(never installed). The package name is resolved through the meta package on every set-up, so a new
kernel in the security suite is picked up by itself; when apt cannot answer, the newest cached kernel
is used. Everything here is idempotent and guarded by a lock on the cache directory.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ptmt.errors import PtmtError

#: apt packages the host needs. numactl is for users' commands inside the guest (the guest runs the
#: host's userland); the initramfs itself is built in Python (no cpio, xz or kmod needed).
HOST_PACKAGES: tuple[str, ...] = ("qemu-system-x86", "busybox-static", "numactl")
#: Debian's 6.12 kernel: it puts an HMAT-described slower node into a lower memory tier (6.1 does not).
KERNEL_META = "linux-image-6.12-amd64"
#: Guest modules the init needs to mount the host root (virtio 9p) with an overlay on top.
INITRAMFS_MODULES: tuple[str, ...] = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
BUSYBOX = "/bin/busybox"
INITRAMFS_FORMAT = 3  # bump when init or layout changes: cached images are rebuilt

Log = Callable[[str], None]


class TestbedUnavailable(PtmtError):
    """This host cannot run the testbed (not Linux/x86-64, no apt, not root, package unreachable)."""

    __test__ = False  # not a pytest test class


def _quiet(_: str) -> None:
    pass


def cache_dir() -> Path:
    """``$PTMT_TIERVM_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/ptmt/tiervm``."""
    env = os.environ.get("PTMT_TIERVM_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ptmt" / "tiervm"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# host packages
# ---------------------------------------------------------------------------------------------
def missing_packages(packages: tuple[str, ...] = HOST_PACKAGES) -> list[str]:
    if shutil.which("dpkg-query") is None:
        return list(packages)
    out = []
    for p in packages:
        r = _run(["dpkg-query", "-W", "-f=${Status}", p])
        if r.returncode != 0 or "install ok installed" not in r.stdout:
            out.append(p)
    return out


def ensure_host_packages(log: Log = _quiet) -> None:
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise TestbedUnavailable(f"needs {' '.join(missing)} and there is no apt-get to install them")
    if os.geteuid() != 0:
        raise TestbedUnavailable(
            f"needs {' '.join(missing)}: run as root, or install them: apt-get install {' '.join(missing)}"
        )
    log(f"installing {' '.join(missing)}")
    r = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])
    if r.returncode != 0:  # stale or absent package lists: refresh once and retry
        _run(["apt-get", "update", "-q"])
        r = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])
    if r.returncode != 0:
        raise TestbedUnavailable(
            f"apt-get install {' '.join(missing)} failed (is a Debian package mirror reachable?):\n"
            + r.stderr.strip()[-2000:]
        )


# ---------------------------------------------------------------------------------------------
# kernel
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package: ``root`` holds ``boot/vmlinuz-<version>`` and ``lib/modules``."""

    package: str
    root: Path

    @property
    def version(self) -> str:
        return self.image.name.removeprefix("vmlinuz-")

    @property
    def image(self) -> Path:
        images = sorted((self.root / "boot").glob("vmlinuz-*"))
        if not images:
            raise TestbedUnavailable(f"no boot/vmlinuz-* under {self.root}")
        return images[0]

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def _depends_target(meta: str) -> str | None:
    if shutil.which("apt-cache") is None:
        return None
    r = _run(["apt-cache", "depends", meta])
    for line in r.stdout.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\d\S*)", line)
        if m:
            return m.group(1)
    return None


def resolve_kernel_package(meta: str = KERNEL_META, log: Log = _quiet) -> str | None:
    """The versioned kernel package the meta package points to now, or None if apt cannot say."""
    pkg = _depends_target(meta)
    if pkg is None and shutil.which("apt-get") is not None and os.geteuid() == 0:
        log("refreshing apt package lists")
        _run(["apt-get", "update", "-q"])
        pkg = _depends_target(meta)
    return pkg


def _cached_kernels(base: Path) -> list[Kernel]:
    kernels = []
    for d in sorted((base / "kernels").glob("*")):
        if (d / ".complete").exists():
            kernels.append(Kernel(package=d.name, root=d))
    return sorted(kernels, key=lambda k: (k.root / ".complete").stat().st_mtime)


def ensure_kernel(meta: str = KERNEL_META, log: Log = _quiet) -> Kernel:
    base = cache_dir()
    with _locked(base):
        pkg = resolve_kernel_package(meta, log)
        if pkg is None:
            cached = _cached_kernels(base)
            if cached:
                log(f"apt cannot resolve {meta}; using cached {cached[-1].package}")
                return cached[-1]
            raise TestbedUnavailable(
                f"cannot resolve {meta} with apt-cache (no Debian package lists?) and no kernel is cached"
            )
        dest = base / "kernels" / pkg
        if (dest / ".complete").exists():
            return Kernel(package=pkg, root=dest)
        if shutil.which("dpkg-deb") is None:
            raise TestbedUnavailable("dpkg-deb is needed to unpack the kernel package")
        debs = base / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        log(f"downloading {pkg}")
        r = _run(["apt-get", "download", "-q", pkg], cwd=debs)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if r.returncode != 0 or not found:
            raise TestbedUnavailable(f"apt-get download {pkg} failed:\n{r.stderr.strip()[-2000:]}")
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log(f"unpacking {found[-1].name}")
        r = _run(["dpkg-deb", "-x", str(found[-1]), str(tmp)])
        if r.returncode != 0:
            raise TestbedUnavailable(f"dpkg-deb -x failed: {r.stderr.strip()}")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        (dest / ".complete").write_text(found[-1].name + "\n")
        for old in debs.glob("*.deb"):  # the unpacked tree is what is kept
            old.unlink()
        return Kernel(package=pkg, root=dest)


# ---------------------------------------------------------------------------------------------
# initramfs
# ---------------------------------------------------------------------------------------------
_KO = re.compile(r"\.ko(\.xz|\.gz|\.zst)?$")


def _module_index(kernel: Kernel) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for p in kernel.modules.rglob("*.ko*"):
        if _KO.search(p.name):
            index[_KO.sub("", p.name).replace("-", "_")] = p
    return index


def _builtin(kernel: Kernel) -> set[str]:
    f = kernel.modules / "modules.builtin"
    if not f.exists():
        return set()
    return {_KO.sub("", Path(line.strip()).name).replace("-", "_") for line in f.read_text().splitlines()}


def _decompress(p: Path) -> bytes:
    data = p.read_bytes()
    if p.name.endswith(".xz"):
        return lzma.decompress(data)
    if p.name.endswith(".gz"):
        return gzip.decompress(data)
    if p.name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise TestbedUnavailable(f"{p.name} is zstd-compressed: install zstd")
        return subprocess.run(["zstd", "-dc", str(p)], capture_output=True, check=True).stdout
    return data


def _modinfo_depends(ko: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_load_order(kernel: Kernel, names: tuple[str, ...] = INITRAMFS_MODULES) -> list[tuple[str, bytes]]:
    """The modules (uncompressed) to insmod in order, dependencies first; built-ins are skipped."""
    index, builtin = _module_index(kernel), _builtin(kernel)
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            if name in builtin:
                return
            raise TestbedUnavailable(f"kernel {kernel.version} has no module {name}")
        ko = _decompress(index[name])
        for dep in _modinfo_depends(ko):
            visit(dep)
        order.append((name, ko))

    for n in names:
        visit(n)
    return order


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's "newc" format from (path, mode, data) entries."""
    out = io.BytesIO()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        nb = name.encode() + b"\x00"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + nb)
        out.write(b"\x00" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\x00" * (-out.tell() % 4))

    for i, (name, mode, data) in enumerate(entries, start=1):
        add(name, mode, data, i)
    add("TRAILER!!!", 0, b"", 0)
    return out.getvalue()


DIR, FILE, EXE = 0o040755, 0o100644, 0o100755


def _init_script() -> bytes:
    return (Path(__file__).with_name("init.sh")).read_bytes()


def ensure_initramfs(kernel: Kernel, log: Log = _quiet) -> Path:
    """The cached initramfs for this kernel; rebuilt when the init script or format changes."""
    init = _init_script()
    tag = hashlib.sha256(init + bytes([INITRAMFS_FORMAT])).hexdigest()[:12]
    base = cache_dir()
    target = base / "initramfs" / f"initrd-{kernel.version}-{tag}.cpio.gz"
    if target.exists():
        return target
    with _locked(base):
        if target.exists():
            return target
        if not Path(BUSYBOX).exists():
            raise TestbedUnavailable(f"{BUSYBOX} missing: install busybox-static")
        log(f"building initramfs for {kernel.version}")
        entries: list[tuple[str, int, bytes]] = [
            (d, DIR, b"") for d in ("bin", "mods", "proc", "sys", "dev", "newroot", "lower", "rw")
        ]
        entries.append(("bin/busybox", EXE, Path(BUSYBOX).read_bytes()))
        entries.append(("init", EXE, init))
        for i, (name, ko) in enumerate(module_load_order(kernel)):
            entries.append((f"mods/{i:02d}_{name}.ko", FILE, ko))
        target.parent.mkdir(parents=True, exist_ok=True)
        for old in target.parent.glob(f"initrd-{kernel.version}-*.cpio.gz"):
            old.unlink()
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(_newc(entries), compresslevel=6))
        tmp.rename(target)
        return target


# ---------------------------------------------------------------------------------------------
# all of it
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    kernel: Kernel
    initramfs: Path
    qemu: str
    seconds: float

    def as_dict(self) -> dict[str, str | float]:
        return {
            "kernel_package": self.kernel.package,
            "kernel_version": self.kernel.version,
            "kernel_image": str(self.kernel.image),
            "initramfs": str(self.initramfs),
            "qemu": self.qemu,
            "cache": str(cache_dir()),
            "seconds": round(self.seconds, 1),
        }


def host_supported() -> str | None:
    """Why this host cannot run the testbed at all, or None."""
    u = os.uname()
    if u.sysname != "Linux":
        return f"the testbed needs a Linux host (this is {u.sysname})"
    if u.machine != "x86_64":
        return f"the testbed boots an x86-64 Debian kernel; this host is {u.machine}"
    return None


def ensure_setup(meta: str = KERNEL_META, log: Log = _quiet) -> Setup:
    """Install what is missing, unpack the kernel, build the initramfs. Idempotent and cached."""
    t0 = time.monotonic()
    why = host_supported()
    if why:
        raise TestbedUnavailable(why)
    ensure_host_packages(log)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise TestbedUnavailable("qemu-system-x86_64 not found after installing qemu-system-x86")
    kernel = ensure_kernel(meta, log)
    initrd = ensure_initramfs(kernel, log)
    setup = Setup(kernel=kernel, initramfs=initrd, qemu=qemu, seconds=time.monotonic() - t0)
    (cache_dir() / "setup.json").write_text(json.dumps(setup.as_dict(), indent=2) + "\n")
    return setup
