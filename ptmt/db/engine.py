"""Database URLs and engines.

Resolution order: an explicit URL (``--db``), then ``$PTMT_DB``, then the SQLite file
``${XDG_DATA_HOME:-~/.local/share}/ptmt/ptmt.db``. A value without ``://`` is a SQLite file
path. ``postgresql://`` without a driver means psycopg 3 (``postgresql+psycopg://``).
Passwords are masked wherever a URL is shown (``mask``, ``scrub``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError

from ptmt.db.errors import DatabaseError

ENV_VAR = "PTMT_DB"


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "ptmt" / "ptmt.db"


def resolve_url(url: str | URL | None = None) -> URL:
    """The URL to use (see module docstring)."""
    if url is None or (isinstance(url, str) and not url.strip()):
        url = os.environ.get(ENV_VAR, "").strip() or None
    if url is None:
        return URL.create("sqlite+pysqlite", database=str(default_path()))
    if isinstance(url, URL):
        parsed = url
    elif "://" not in url:
        parsed = URL.create("sqlite+pysqlite", database=str(Path(url).expanduser()))
    else:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            # the text may hold a password: never echo it
            raise DatabaseError("invalid database URL (not shown, it may contain a password); "
                                "expected e.g. sqlite:///path/ptmt.db or "
                                "postgresql://user@host/dbname") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def mask(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***``."""
    try:
        u = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return "<invalid URL>"
    return u.render_as_string(hide_password=True)


def scrub(text: str, url: URL | None) -> str:
    """*text* with the URL's password (raw and URL-encoded) replaced by ``***``."""
    if url is None or not url.password:
        return text
    from urllib.parse import quote, quote_plus

    pw = str(url.password)
    for form in {pw, quote(pw, safe=""), quote_plus(pw)}:
        if form:
            text = text.replace(form, "***")
    return text


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL, None for an in-memory database."""
    db = url.database
    if not is_sqlite(url) or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def create(url: URL, *, echo: bool = False, **kwargs: Any) -> Engine:
    """An engine for *url*, with SQLite set up for several writers (WAL, foreign keys, waits)."""
    if is_sqlite(url):
        path = sqlite_file(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create the directory of {mask(url)}: "
                                    f"{exc.strerror or exc}") from None
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 60)
    else:
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, echo=echo, **kwargs)
    if is_sqlite(url):
        wal = sqlite_file(url) is not None

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if wal:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine
