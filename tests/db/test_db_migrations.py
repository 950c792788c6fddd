"""Migrations: the models never drift from the revisions; opening refuses an old schema."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from ptmt.db import (
    DatabaseOutdated,
    DatabaseTooNew,
    NotAPtmtDatabase,
    head_revision,
    open_storage,
)
from ptmt.db import engine as db_engine
from ptmt.db import migrate
from ptmt.db.models import Base

VERSIONS = Path(migrate.MIGRATIONS_DIR) / "versions"


def _engine(url: str):
    return db_engine.create(db_engine.resolve_url(url))


def test_models_match_migrations(db_url: str) -> None:
    """Like `alembic check`: a freshly migrated database equals the models, on each backend."""
    eng = _engine(db_url)
    try:
        migrate.upgrade(eng)
        with eng.connect() as conn:
            assert migrate.compare(conn) == []
            tables = set(inspect(conn).get_table_names())
        assert tables == set(Base.metadata.tables) | {migrate.VERSION_TABLE}
    finally:
        eng.dispose()


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    eng = _engine(db_url)
    try:
        assert migrate.upgrade(eng) == (None, head_revision())
        assert migrate.upgrade(eng) == (head_revision(), head_revision())
        migrate.downgrade(eng, "base")
        with eng.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {migrate.VERSION_TABLE}
            assert migrate.current_revision(conn) is None
        migrate.upgrade(eng)
        with eng.connect() as conn:
            assert migrate.current_revision(conn) == head_revision()
    finally:
        eng.dispose()


def test_one_head_and_revisions_do_not_import_ptmt() -> None:
    assert len(migrate.script_directory().get_heads()) == 1
    for path in VERSIONS.glob("*.py"):
        source = path.read_text()
        assert "import ptmt" not in source and "from ptmt" not in source, path.name
    assert not list(Path(migrate.MIGRATIONS_DIR).parent.glob("alembic.ini"))


def test_upgrade_works_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_storage("relative.db") as s:
        assert s.url.endswith("relative.db")
    assert (tmp_path / "relative.db").exists()


def test_offline_sql() -> None:
    pg = migrate.upgrade_sql("postgresql+psycopg://u@h/db")
    assert "CREATE TABLE trials" in pg and "JSONB" in pg and "ptmt_alembic_version" in pg
    lite = migrate.upgrade_sql("sqlite://")
    assert "CREATE TABLE samples" in lite and "JSONB" not in lite


def test_refuses_foreign_database(db_url: str) -> None:
    eng = _engine(db_url)
    try:
        with eng.begin() as conn:
            conn.execute(text("CREATE TABLE someone_elses (id INTEGER)"))
    finally:
        eng.dispose()
    with pytest.raises(NotAPtmtDatabase, match="not a PTMT database"):
        open_storage(db_url)


def test_refuses_newer_database(db_url: str) -> None:
    eng = _engine(db_url)
    try:
        migrate.upgrade(eng)
        with eng.begin() as conn:
            conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'fffffff'"))
    finally:
        eng.dispose()
    with pytest.raises(DatabaseTooNew, match="newer PTMT"):
        open_storage(db_url)


def test_refuses_empty_database_without_create(db_url: str) -> None:
    with pytest.raises(DatabaseOutdated, match="ptmt db upgrade"):
        open_storage(db_url, create=False)


@pytest.fixture
def next_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the shipped migrations plus one more revision, as a future PTMT would ship."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    head = head_revision()
    (copy / "versions" / "9999_future.py").write_text(
        '"""A future schema change."""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = '9999'\ndown_revision = {head!r}\nbranch_labels = None\ndepends_on = None\n\n"
        "def upgrade():\n"
        "    op.create_table('future_thing', sa.Column('id', sa.Integer(), primary_key=True))\n\n"
        "def downgrade():\n    op.drop_table('future_thing')\n")
    return str(copy)


def test_old_database_must_be_upgraded_explicitly(
        db_url: str, next_revision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_storage(db_url):
        pass  # created at today's head
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", Path(next_revision))
    assert head_revision() == "9999"
    with pytest.raises(DatabaseOutdated, match=r"run `ptmt db upgrade`") as info:
        open_storage(db_url)
    assert "9999" in str(info.value)
    eng = _engine(db_url)
    try:
        before, after = migrate.upgrade(eng)
    finally:
        eng.dispose()
    assert (after, before) == ("9999", "0001") or before != after
    with open_storage(db_url) as s:
        assert s.progress(1)["pending"] == 0


def test_concurrent_first_open(db_url: str) -> None:
    """Several workers opening one brand-new database at once all succeed."""
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            with open_storage(db_url) as s:
                s.configuration({"a": 1})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
