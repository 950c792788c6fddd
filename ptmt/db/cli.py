"""``ptmt db``: migrate and inspect the performance database."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ptmt.db import engine as _engine
from ptmt.db import migrate
from ptmt.db.errors import DatabaseError
from ptmt.errors import PtmtError

db_app = typer.Typer(
    name="db",
    help="The performance database: migrate it to this PTMT's schema, show where it is.",
    no_args_is_help=True,
)

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar=_engine.ENV_VAR, show_envvar=True,
                 help="SQLAlchemy URL or SQLite file path "
                      "[default: ${XDG_DATA_HOME:-~/.local/share}/ptmt/ptmt.db]"),
]


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"ptmt: {exc}", err=True)
    return typer.Exit(1)


def _connect_state(db: str | None) -> tuple[str, str, migrate.SchemaState]:
    from sqlalchemy.exc import DBAPIError

    url = _engine.resolve_url(db)
    where = _engine.mask(url)
    eng = _engine.create(url)
    try:
        with eng.connect() as conn:
            state = migrate.schema_state(conn)
            dialect = conn.dialect.name
    except DBAPIError as exc:
        first = (str(exc.orig or exc).strip().splitlines() or ["error"])[0]
        raise DatabaseError(_engine.scrub(f"cannot open {where}: {first}", url)) from None
    finally:
        eng.dispose()
    return where, dialect, state


@db_app.command()
def upgrade(
    db: DbOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    sql: Annotated[bool, typer.Option(
        "--sql", help="Print the SQL instead of running it (for a DBA to apply).")] = False,
) -> None:
    """Migrate the database to this PTMT's schema (creates it when new). Safe to rerun."""
    try:
        url = _engine.resolve_url(db)
        if sql:
            state = None
            try:
                state = _connect_state(db)[2]
            except DatabaseError:
                pass  # no connection needed to print SQL for a new database
            start = state.current if state is not None and state.current else None
            dialect_url = url.set(password=None).render_as_string(hide_password=True)
            typer.echo(migrate.upgrade_sql(dialect_url, revision, start=start), nl=False)
            return
        where, _, state = _connect_state(db)
        if state.current is None and not state.empty:
            migrate.require_current(state, where)  # raises NotAPtmtDatabase
        if not state.known:
            migrate.require_current(state, where)  # raises DatabaseTooNew
        eng = _engine.create(url)
        try:
            before, after = migrate.upgrade(eng, revision)
        finally:
            eng.dispose()
    except PtmtError as exc:
        raise _fail(exc) from None
    if before == after:
        typer.echo(f"{where}: already at revision {after}")
    else:
        typer.echo(f"{where}: upgraded {before or '(empty)'} -> {after}")


@db_app.command()
def current(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show which database is used, its schema revision and whether it needs an upgrade."""
    try:
        where, dialect, state = _connect_state(db)
    except PtmtError as exc:
        raise _fail(exc) from None
    info = {"url": where, "dialect": dialect, "revision": state.current, "head": state.head,
            "status": state.describe(), "up_to_date": state.up_to_date}
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"database: {where} ({dialect})")
    typer.echo(f"revision: {state.current or '-'} (head {state.head})")
    typer.echo(f"status:   {state.describe()}")
    if not state.up_to_date and state.known and not (state.current is None and not state.empty):
        typer.echo("run `ptmt db upgrade` to migrate it")


@db_app.command()
def info(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the database, its revision and how many rows each table holds."""
    from sqlalchemy import func, select

    from ptmt.db.models import Base
    from ptmt.db.storage import open_storage

    try:
        with open_storage(db, create=False) as store, store.engine.connect() as conn:
            counts = {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                      for name, table in Base.metadata.tables.items()}
            where, dialect = store.url, store.dialect
    except PtmtError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps({"url": where, "dialect": dialect,
                               "revision": migrate.head_revision(), "rows": counts}))
        return
    typer.echo(f"database: {where} ({dialect}), revision {migrate.head_revision()}")
    for name in ("hosts", "backends", "workloads", "configurations", "studies", "trials",
                 "samples"):
        typer.echo(f"  {name:<15}{counts.get(name, 0):>12,}")
