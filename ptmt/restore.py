"""Putting journaled originals back: ``ptmt restore`` and the boot-time restore service."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ptmt.backends.registry import backend_for, open_backend
from ptmt.catalog import load_catalog_file
from ptmt.errors import ConfigError, PtmtError, ValidationError
from ptmt.host import Host
from ptmt.journal import Entry, Journal

log = logging.getLogger(__name__)
HostOpener = Callable[[str, str], Host]


@dataclass
class RestoreReport:
    restored: list[Entry] = field(default_factory=list)
    failed: list[tuple[Entry, str]] = field(default_factory=list)


def restore(journal: Journal, open_host: HostOpener, backend: str | None = None) -> RestoreReport:
    """Write back every original (newest first), dropping each entry once it is back.

    Idempotent: entries that fail stay in the journal for the next attempt, and a second run after a
    complete restore finds nothing to do.
    """
    report = RestoreReport()
    hosts: dict[tuple[str, str], Host] = {}
    with journal.locked():
        entries = [e for e in journal.entries() if backend is None or e.backend == backend]
        for entry in reversed(entries):
            try:
                host = hosts.get((entry.platform, entry.root))
                if host is None:
                    host = hosts[(entry.platform, entry.root)] = open_host(entry.platform, entry.root)
                _restore_one(entry, host)
            except PtmtError as e:
                log.error("restore of %s (%s) failed: %s", entry.knob, entry.target, e)
                report.failed.append((entry, str(e)))
                continue
            log.info("restored %s %s = %s", entry.backend, entry.knob, entry.original)
            report.restored.append(entry)
        journal.remove({e.key for e in report.restored})
    return report


def _restore_one(entry: Entry, host: Host) -> None:
    try:
        if entry.catalog and Path(entry.catalog).is_file():
            backend = backend_for(load_catalog_file(entry.catalog), host, entry.options)
        else:
            backend = open_backend(entry.backend, host, options=entry.options)
        backend.restore_entry(entry)
    except (ConfigError, ValidationError):
        # The catalog that wrote this entry is gone; a kernel file can still be put back directly.
        if not entry.target.startswith("/"):
            raise
        host.fs.write(entry.target, entry.original)
