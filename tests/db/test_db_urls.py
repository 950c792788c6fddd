"""URL resolution, password hygiene and canonical hashing."""

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import URL

from ptmt.db import DatabaseError, config_hash, content_hash, open_storage
from ptmt.db.canonical import canonical_json, normalize
from ptmt.db.engine import default_path, mask, resolve_url, scrub


def test_default_is_sqlite_in_xdg_data_home(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PTMT_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "ptmt" / "ptmt.db"
    url = resolve_url(None)
    assert url.get_backend_name() == "sqlite" and url.database == str(default_path())
    with open_storage() as s:
        assert s.dialect == "sqlite"
    assert default_path().exists()


def test_default_without_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path() == tmp_path / ".local" / "share" / "ptmt" / "ptmt.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the spec says: absolute only
    assert default_path() == tmp_path / ".local" / "share" / "ptmt" / "ptmt.db"


def test_env_and_explicit_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTMT_DB", f"sqlite:///{tmp_path}/env.db")
    assert resolve_url(None).database == f"{tmp_path}/env.db"
    assert resolve_url("").database == f"{tmp_path}/env.db"
    assert resolve_url(f"sqlite:///{tmp_path}/x.db").database == f"{tmp_path}/x.db"
    assert resolve_url("~/a.db").database == str(Path.home() / "a.db")  # a bare path: SQLite
    assert resolve_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    given = URL.create("sqlite")
    assert resolve_url(given) is given


def test_mask_and_scrub() -> None:
    url = "postgresql+psycopg://alice:s%40cr%3At@db.example:5432/ptmt"
    masked = mask(url)
    assert "s@cr:t" not in masked and "s%40cr%3At" not in masked and "***" in masked
    parsed = resolve_url(url)
    assert parsed.password == "s@cr:t"
    text = "failed for s@cr:t and s%40cr%3At"
    assert scrub(text, parsed) == "failed for *** and ***"
    assert scrub("no url", None) == "no url"
    assert mask("not a url at all") == "<invalid URL>"


def test_invalid_url_is_not_echoed() -> None:
    with pytest.raises(DatabaseError) as info:
        resolve_url("postgresql://bob:hunter2@host:notaport/db")
    assert "hunter2" not in str(info.value)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_error_has_no_password(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("psycopg")
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://bob:hunter2@127.0.0.1:{_closed_port()}/ptmt?connect_timeout=3"
    with pytest.raises(DatabaseError) as info:
        open_storage(url)
    message = str(info.value)
    assert "hunter2" not in message and "cannot open" in message and "***" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "hunter2" not in caplog.text


def test_wrong_password_error_has_no_password(pg_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    bad = pg_server.admin_url.set(password="Wr0ng-" + pg_server.password)
    with pytest.raises(DatabaseError) as info:
        open_storage(bad)
    message = str(info.value)
    assert "password" in message.lower()  # the reason is reported ...
    assert bad.password not in message and pg_server.password not in message  # ... never the secret
    assert pg_server.password not in caplog.text and bad.password not in caplog.text


def test_echo_logging_masks_password(pg_server, caplog) -> None:
    caplog.set_level(logging.INFO)
    url = pg_server.create_database()
    try:
        with open_storage(url, echo=True) as s:
            s.configuration({"k": 1})
            assert pg_server.password not in repr(s.engine)
        assert pg_server.password not in caplog.text
    finally:
        pg_server.drop_database(url)


def test_canonical_forms() -> None:
    assert canonical_json({"b": 1, "a": [1.0, (2, 3)]}) == '{"a":[1,[2,3]],"b":1}'
    assert config_hash({"x": 1}) == config_hash({"x": 1.0}) == config_hash({"x": np.int32(1)})
    assert config_hash({"x": True}) != config_hash({"x": 1})
    assert config_hash({"x": 0.5}) == config_hash({"x": np.float64(0.5)})
    assert normalize({"v": np.array([1, 2])}) == {"v": [1, 2]}
    assert normalize(np.bool_(True)) is True
    assert len(content_hash({})) == 64
    with pytest.raises(ValueError):
        normalize(math.nan)
    with pytest.raises(TypeError):
        normalize({1: "non-string key"})
    with pytest.raises(TypeError):
        normalize(object())


def test_worker_id() -> None:
    import os

    from ptmt.db import worker_id

    assert worker_id().endswith(f":{os.getpid()}")
