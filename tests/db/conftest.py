"""Fixtures of the database tests: a SQLite file and a throw-away PostgreSQL server.

The PostgreSQL server comes from, in order: ``$PTMT_TEST_POSTGRES_URL`` (an existing server whose
user may create databases), the server binaries of this machine (``initdb``/``pg_ctl`` on PATH or
under Debian's ``/usr/lib/postgresql/<version>/bin``), or — when running as root with apt — the
Debian ``postgresql`` package installed on the spot. The cluster lives in a temporary directory,
listens on 127.0.0.1 at a free port with password authentication, and is removed at the end.
Without any of these the PostgreSQL variants are skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, make_url


@dataclass
class PgServer:
    admin_url: URL  # superuser, database "postgres"
    password: str

    def _admin(self) -> Any:
        import psycopg

        u = self.admin_url
        return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                               dbname=u.database, autocommit=True, connect_timeout=10)

    def create_database(self) -> URL:
        name = "ptmt_t_" + uuid.uuid4().hex[:12]
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url.set(database=name)

    def drop_database(self, url: URL) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _pg_bindir() -> Path | None:
    candidates = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(os.path.realpath(found)).parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates += [Path(p) for p in reversed(versions)]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file() and (d / "postgres").is_file():
            return d
    return None


def _install_postgresql() -> str | None:
    """Install Debian's postgresql package; None on success, else why not."""
    if os.geteuid() != 0:
        return "not root, cannot install the postgresql package"
    if not shutil.which("apt-get"):
        return "no apt-get to install the postgresql package"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            return f"{' '.join(cmd)} failed: {' | '.join(tail)}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cluster(bindir: Path) -> tuple[PgServer, Path, dict[str, Any]]:
    run_as: dict[str, Any] = {}
    # as root, the server user must reach the directory: keep it directly under /tmp
    tmp_root = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
    base = Path(tempfile.mkdtemp(prefix="ptmt-pg-", dir=tmp_root))
    if os.geteuid() == 0:  # initdb refuses root: run the server as an unprivileged user
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = pwd.getpwnam("nobody")
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        os.chown(base, pw.pw_uid, pw.pw_gid)
    password = "pw@" + secrets.token_hex(8) + "%:/"
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if run_as:
        os.chown(pwfile, run_as["user"], run_as["group"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
           "HOME": str(base)}
    data = base / "data"
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "ptmt", f"--pwfile={pwfile}",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                    "--locale=C", "-N"],
                   check=True, capture_output=True, env=env, cwd=base, timeout=120, **run_as)
    last_error = ""
    for _ in range(3):
        port = _free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -F "
                f"-c full_page_writes=off -c synchronous_commit=off -c max_connections=60")
        res = subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"),
                              "-w", "-t", "60", "-o", opts, "start"],
                             capture_output=True, text=True, env=env, cwd=base, timeout=120,
                             **run_as)
        if res.returncode == 0:
            url = URL.create("postgresql+psycopg", username="ptmt", password=password,
                             host="127.0.0.1", port=port, database="postgres")
            return PgServer(url, password), base, {"env": env, "run_as": run_as, "data": data}
        last_error = res.stderr + (base / "log").read_text(errors="replace")[-2000:]
        time.sleep(0.5)
    raise RuntimeError(f"pg_ctl start failed: {last_error}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("PTMT_TEST_POSTGRES_URL")
    if external:
        url = make_url(external)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        yield PgServer(url, str(url.password or ""))
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need the psycopg driver (pip install 'psycopg[binary]')")
    bindir = _pg_bindir()
    if bindir is None:
        why = _install_postgresql()
        bindir = _pg_bindir()
        if bindir is None:
            pytest.skip(f"no PostgreSQL server binaries: {why or 'not found after install'}")
    server, base, ctx = _start_cluster(bindir)
    try:
        yield server
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(ctx["data"]), "-m", "immediate",
                        "-w", "stop"], capture_output=True, env=ctx["env"], cwd=base,
                       timeout=60, **ctx["run_as"])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ptmt.db'}"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        server.drop_database(url)


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    from ptmt.db import open_storage

    s = open_storage(db_url)
    try:
        yield s
    finally:
        s.close()
