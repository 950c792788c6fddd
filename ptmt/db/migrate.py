"""Schema migrations (Alembic), configured in code: no alembic.ini, works from an installed wheel.

The revision scripts live in ``ptmt/db/migrations/versions``; the applied revision is recorded in
the table ``ptmt_alembic_version`` (so PTMT can share a PostgreSQL database with other
Alembic-managed applications).

For developers, from a source checkout::

    python -m ptmt.db.migrate revision "add a column"   # autogenerate against a scratch SQLite DB
    python -m ptmt.db.migrate check                      # fail if models and migrations differ
"""

from __future__ import annotations

import dataclasses
import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from ptmt.db.errors import DatabaseOutdated, DatabaseTooNew, NotAPtmtDatabase

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
VERSION_TABLE = "ptmt_alembic_version"
#: Key of the PostgreSQL advisory lock that serialises concurrent migrations (fleet workers).
_PG_LOCK_KEY = 0x70746D74  # "ptmt"


def alembic_config(connection: Connection | None = None, **attributes: Any) -> Config:
    cfg = Config(stdout=attributes.pop("stdout", sys.stdout))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("version_table", VERSION_TABLE)
    cfg.attributes["connection"] = connection
    cfg.attributes.update(attributes)
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(connection: Connection) -> str | None:
    ctx = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


@dataclasses.dataclass(frozen=True)
class SchemaState:
    current: str | None  # applied revision, None when there is none
    head: str  # newest revision this PTMT knows
    empty: bool  # no tables at all
    known: bool  # current is one of our revisions (or None)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.empty:
            return "empty (no tables)"
        if self.current is None:
            return "not a PTMT database (tables but no migration record)"
        if self.up_to_date:
            return f"up to date (revision {self.current})"
        if not self.known:
            return f"revision {self.current} is newer than this PTMT (head {self.head})"
        return f"outdated (revision {self.current}, head {self.head})"


def schema_state(connection: Connection) -> SchemaState:
    tables = inspect(connection).get_table_names()
    current = current_revision(connection) if VERSION_TABLE in tables else None
    known = current is None
    if current is not None:
        try:
            known = script_directory().get_revision(current) is not None
        except Exception:  # alembic raises on unknown ids
            known = False
    return SchemaState(current=current, head=head_revision(), empty=not tables, known=known)


def require_current(state: SchemaState, where: str) -> None:
    """Raise a clear error unless the schema is at head."""
    if state.up_to_date:
        return
    if state.current is None and not state.empty:
        raise NotAPtmtDatabase(f"{where} has tables but is not a PTMT database "
                               f"(no {VERSION_TABLE} table); use another database")
    if state.empty:
        raise DatabaseOutdated(f"{where} is empty (no PTMT schema): run `ptmt db upgrade` "
                               f"(with the same --db/PTMT_DB)")
    if not state.known:
        raise DatabaseTooNew(f"{where} was migrated by a newer PTMT (revision {state.current}); "
                             f"upgrade PTMT to use it")
    raise DatabaseOutdated(f"{where} has schema revision {state.current or 'none'}, this PTMT "
                           f"needs {state.head}: run `ptmt db upgrade` (with the same --db/PTMT_DB)")


#: Alembic keeps its migration context in module globals: one migration per process at a time.
_ALEMBIC_LOCK = threading.RLock()


@contextmanager
def migration_lock(connection: Connection) -> Iterator[None]:
    """Serialise migrations of one database across threads, processes and machines.

    PostgreSQL: a transaction-level advisory lock. SQLite: ``BEGIN IMMEDIATE`` takes the write
    lock up front and makes the DDL transactional (the driver would otherwise run it in
    autocommit mode, and a concurrent opener could see half a schema).
    """
    with _ALEMBIC_LOCK:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        elif connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to *revision* in one transaction; returns (before, after)."""
    with engine.begin() as conn, migration_lock(conn):
        before = current_revision(conn)
        command.upgrade(alembic_config(conn), revision)
        after = current_revision(conn)
    return before, after


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn, migration_lock(conn):
        command.downgrade(alembic_config(conn), revision)


def upgrade_sql(dialect_url: str, revision: str = "head", start: str | None = None) -> str:
    """The SQL that upgrading a database of *dialect_url*'s kind would run (offline mode)."""
    buf = io.StringIO()
    cfg = alembic_config(None, stdout=buf, offline_url=dialect_url, output_buffer=buf)
    cfg.output_buffer = buf
    with _ALEMBIC_LOCK:
        command.upgrade(cfg, f"{start}:{revision}" if start else revision, sql=True)
    return buf.getvalue()


def compare(connection: Connection) -> list[Any]:
    """Differences between the models and the schema of *connection* (empty when they match)."""
    from alembic.autogenerate import compare_metadata

    from ptmt.db.models import Base

    ctx = MigrationContext.configure(
        connection,
        opts={"version_table": VERSION_TABLE, "compare_type": True,
              "compare_server_default": True, "render_as_batch": True},
    )
    return compare_metadata(ctx, Base.metadata)


def _main(argv: list[str]) -> int:  # developer tool, see module docstring
    import tempfile

    from ptmt.db.engine import create, resolve_url

    if not argv or argv[0] not in ("revision", "check"):
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        engine = create(resolve_url(str(Path(tmp) / "scratch.db")))
        upgrade(engine)
        if argv[0] == "check":
            with engine.connect() as conn:
                diff = compare(conn)
            for d in diff:
                print(d)
            return 1 if diff else 0
        message = " ".join(argv[1:]) or "schema change"
        with engine.begin() as conn:
            cfg = alembic_config(conn)
            command.revision(cfg, message=message, autogenerate=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
