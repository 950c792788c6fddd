"""Persistent rollback journal: the value every knob had before PTMT first changed it.

The journal is what lets PTMT promise that no server is left in an unknown state. Before the first
write of an apply, the original value of every knob about to change is recorded here, the file is
written atomically (temporary file, fsync, rename, fsync of the directory) and only then does the
first kernel write happen. ``ptmt restore`` - or the boot-time restore service, after a crash or
SIGKILL - puts every recorded original back and clears the journal.

An entry keeps the *first* original it saw: applying twice and restoring once returns the value the
machine had before PTMT, not an intermediate one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ptmt.errors import JournalError

JOURNAL_FILE = "journal.json"
FORMAT_VERSION = 1


@dataclass
class Entry:
    """One knob PTMT changed: where it lives and what it held before."""

    backend: str
    knob: str
    platform: str
    root: str
    target: str  # a kernel path, or "upm://ADDRESS:PORT/PID/FIELD" for daemon-held values
    original: str
    written: str | None = None
    recorded_at: float = field(default_factory=time.time)
    options: dict[str, Any] = field(default_factory=dict)
    catalog: str = ""  # the catalog file that described the knob, for restore with user catalogs

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.platform, self.root, self.target)


class Journal:
    """The journal file in a state directory, guarded by an advisory lock for concurrent ptmt runs."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / JOURNAL_FILE

    # -- locking and file I/O -------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal's lock (one writer at a time across processes)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / "journal.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise JournalError(f"cannot use state directory {self.dir}: {e.strerror} (use --state-dir)") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def entries(self) -> list[Entry]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, json.JSONDecodeError) as e:
            raise JournalError(f"{self.path}: unreadable journal ({e}); originals may need manual restore") from e
        if raw.get("version") != FORMAT_VERSION:
            raise JournalError(f"{self.path}: journal format {raw.get('version')!r} is not {FORMAT_VERSION}")
        return [Entry(**e) for e in raw["entries"]]

    def _save(self, entries: list[Entry]) -> None:
        """Atomic and durable: after this returns, a crash cannot lose or corrupt the entries."""
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._fsync_dir()
            return
        payload = json.dumps({"version": FORMAT_VERSION, "entries": [asdict(e) for e in entries]}, indent=1)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".journal.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            raise JournalError(f"cannot write journal {self.path}: {e.strerror}") from e
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- operations (call under ``locked()``) ---------------------------------------------------
    def record(self, new: list[Entry]) -> list[Entry]:
        """Add originals for knobs not journaled yet; returns the entries actually added."""
        current = self.entries()
        known = {e.key for e in current}
        added = [e for e in new if e.key not in known]
        if added:
            self._save(current + added)
        return added

    def mark_written(self, key: tuple[str, str, str], value: str) -> None:
        entries = self.entries()
        for e in entries:
            if e.key == key:
                e.written = value
        self._save(entries)

    def remove(self, keys: set[tuple[str, str, str]]) -> None:
        entries = self.entries()
        kept = [e for e in entries if e.key not in keys]
        if len(kept) != len(entries):
            self._save(kept)
