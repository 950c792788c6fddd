"""The one place that touches kernel knob and counter files.

Everything that reads ``/proc`` or ``/sys`` goes through :class:`KernelFS`, rooted at ``/`` on a real
host and at a directory for tests and for the simulated machine. It turns OS errors into typed,
actionable errors and refuses to write anywhere but the kernel's knob locations, so a catalog cannot
be used to write arbitrary files.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath
from typing import Protocol

from ptmt.errors import (
    DebugfsNotMounted,
    KernelRejected,
    KnobError,
    KnobMissing,
    NeedsRoot,
    PathNotAllowed,
)

#: Kernel paths PTMT may write (DESIGN §3): sysctls, kernel sysfs/debugfs, per-node and tier sysfs.
WRITABLE_PREFIXES: tuple[str, ...] = (
    "/proc/sys",
    "/sys/kernel",
    "/sys/devices/system/node",
    "/sys/devices/virtual/memory_tiering",
)
#: Kernel paths PTMT may read (counters, topology, mounts).
READABLE_PREFIXES: tuple[str, ...] = ("/proc", "/sys")

DEBUGFS = "/sys/kernel/debug"


class FileIO(Protocol):
    """Raw file access under the root; swapped for a fault-injecting one in tests."""

    def read_text(self, path: Path) -> str: ...

    def write_text(self, path: Path, data: str) -> None: ...


class OsFileIO:
    """Plain OS access. Writes are one ``write(2)`` of the whole value, as sysfs expects."""

    def read_text(self, path: Path) -> str:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")

    def write_text(self, path: Path, data: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)


def _within(path: PurePosixPath, prefixes: tuple[str, ...]) -> bool:
    return any(path == PurePosixPath(p) or PurePosixPath(p) in path.parents for p in prefixes)


class KernelFS:
    """Kernel files under ``root``. Paths given to it are kernel paths (``/proc/sys/...``)."""

    def __init__(self, root: str | os.PathLike[str] = "/", io: FileIO | None = None) -> None:
        self.root = Path(root).resolve()
        self.io: FileIO = io or OsFileIO()

    # -- path handling -------------------------------------------------------------------------
    def host_path(self, kpath: str, *, write: bool = False) -> Path:
        """Map a kernel path to the file under the root, refusing anything outside the allowed
        locations, including through symlinks (resolved, then checked again)."""
        prefixes = WRITABLE_PREFIXES if write else READABLE_PREFIXES
        what = "write" if write else "read"
        pure = PurePosixPath(kpath)
        if not pure.is_absolute() or ".." in pure.parts:
            raise PathNotAllowed(kpath, "must be an absolute kernel path without '..'")
        if not _within(pure, prefixes):
            raise PathNotAllowed(
                kpath, f"PTMT does not {what} outside {', '.join(prefixes)}"
            )
        host = self.root / pure.relative_to("/")
        real = Path(os.path.realpath(host))
        try:
            rel = real.relative_to(self.root)
        except ValueError:
            raise PathNotAllowed(kpath, f"resolves to {real}, outside the root {self.root}") from None
        if not _within(PurePosixPath("/") / rel, prefixes):
            raise PathNotAllowed(
                kpath, f"is a link to /{rel}, outside the locations PTMT may {what}"
            )
        return host

    def exists(self, kpath: str) -> bool:
        try:
            return self.host_path(kpath).exists()
        except PathNotAllowed:
            return False

    def is_dir(self, kpath: str) -> bool:
        try:
            return self.host_path(kpath).is_dir()
        except PathNotAllowed:
            return False

    def listdir(self, kpath: str) -> list[str]:
        """Sorted entries of a kernel directory; empty if it does not exist."""
        p = self.host_path(kpath)
        try:
            return sorted(os.listdir(p))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def debugfs_mounted(self) -> bool:
        """debugfs counts as mounted when /proc/mounts says so or its directory has entries."""
        try:
            mounts = self.io.read_text(self.host_path("/proc/mounts"))
            if any(line.split()[1:2] == [DEBUGFS] for line in mounts.splitlines()):
                return True
        except OSError:
            pass
        return bool(self.listdir(DEBUGFS))

    # -- reads and writes ----------------------------------------------------------------------
    def read(self, kpath: str) -> str:
        """The file's content without the trailing newline."""
        host = self.host_path(kpath)
        try:
            return self.io.read_text(host).strip()
        except OSError as e:
            raise self._translate(kpath, e, None) from e

    def write(self, kpath: str, value: str) -> None:
        host = self.host_path(kpath, write=True)
        if not host.exists():
            raise self._missing(kpath)
        try:
            self.io.write_text(host, value if value.endswith("\n") else value + "\n")
        except OSError as e:
            raise self._translate(kpath, e, value) from e

    # -- error translation ---------------------------------------------------------------------
    def _missing(self, kpath: str) -> KnobMissing:
        if kpath.startswith(DEBUGFS + "/") and not self.debugfs_mounted():
            return DebugfsNotMounted(
                kpath, "debugfs not mounted: mount -t debugfs none /sys/kernel/debug"
            )
        return KnobMissing(kpath, "not supported by this kernel (file does not exist)")

    def _translate(self, kpath: str, e: OSError, value: str | None) -> KnobError:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return self._missing(kpath)
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return NeedsRoot(kpath, f"permission denied ({errno.errorcode[e.errno]}): needs root")
        if value is not None and e.errno in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
            return KernelRejected(
                kpath,
                f"kernel rejected value {value.strip()!r} ({errno.errorcode[e.errno]}: {os.strerror(e.errno)})",
            )
        return KnobError(kpath, f"{os.strerror(e.errno or 0)} ({errno.errorcode.get(e.errno or 0, e.errno)})")
