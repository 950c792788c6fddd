"""`ptmt db upgrade|current|info`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ptmt.db import head_revision, open_storage
from ptmt.db.cli import db_app
from ptmt.db.engine import resolve_url

runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(db_app, list(args), env=env)


def _secret(db_url: str) -> str | None:
    pw = resolve_url(db_url).password
    return str(pw) if pw else None


def test_upgrade_current_info(db_url: str) -> None:
    secret = _secret(db_url)
    res = _run("current", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert "empty" in res.output and "ptmt db upgrade" in res.output

    res = _run("info", "--db", db_url)
    assert res.exit_code == 1 and "run `ptmt db upgrade`" in res.output

    res = _run("upgrade", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert f"upgraded (empty) -> {head_revision()}" in res.output
    res = _run("upgrade", "--db", db_url)
    assert res.exit_code == 0 and "already at revision" in res.output

    with open_storage(db_url) as s:
        s.configuration({"a": 1})
    res = _run("info", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert "configurations" in res.output and "1" in res.output
    res = _run("info", "--db", db_url, "--json")
    assert json.loads(res.output)["rows"]["configurations"] == 1

    res = _run("current", "--db", db_url, "--json")
    data = json.loads(res.output)
    assert data["up_to_date"] and data["revision"] == head_revision()
    for out in (res.output, _run("current", "--db", db_url).output):
        assert secret is None or secret not in out


def test_env_var_selects_database(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    res = _run("upgrade", env={"PTMT_DB": url})
    assert res.exit_code == 0 and "env.db" in res.output
    assert (tmp_path / "env.db").exists()


def test_upgrade_sql_prints_instead_of_running(db_url: str) -> None:
    res = _run("upgrade", "--sql", "--db", db_url)
    assert res.exit_code == 0, res.output
    assert "CREATE TABLE trials" in res.output
    res = _run("current", "--db", db_url, "--json")
    assert json.loads(res.output)["revision"] is None  # nothing was applied
    _run("upgrade", "--db", db_url)
    res = _run("upgrade", "--sql", "--db", db_url)
    assert res.exit_code == 0 and "CREATE TABLE trials" not in res.output


def test_foreign_database_is_not_touched(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (id INTEGER)")
    res = _run("upgrade", "--db", str(path))
    assert res.exit_code == 1 and "not a PTMT database" in res.output
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"mine"}


def test_bad_password_is_reported_without_it(pg_server) -> None:
    bad = pg_server.admin_url.set(password="Zz9-" + pg_server.password)
    text = bad.render_as_string(hide_password=False)
    for cmd in ("upgrade", "current", "info"):
        res = _run(cmd, "--db", text)
        assert res.exit_code == 1, (cmd, res.output)
        assert "cannot open" in res.output or "password" in res.output
        assert bad.password not in res.output and pg_server.password not in res.output
