"""Errors of the performance database. Messages never contain a password."""

from __future__ import annotations

from ptmt.errors import PtmtError


class DatabaseError(PtmtError):
    """The database cannot be opened, read or written (the URL in the message is masked)."""


class DatabaseOutdated(DatabaseError):
    """The database schema is older than this version of PTMT: run ``ptmt db upgrade``."""


class DatabaseTooNew(DatabaseError):
    """The database was migrated by a newer PTMT than this one."""


class NotAPtmtDatabase(DatabaseError):
    """The database has tables but no PTMT migration record."""


class StudyPlanMismatch(DatabaseError):
    """Resuming a study with a plan that differs from the one recorded."""
