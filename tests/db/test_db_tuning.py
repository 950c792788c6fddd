"""Online tuning runs in the database, on SQLite and on a real PostgreSQL server: storage and
DataFrames, idempotent resends, constraints, the recorder across a real outage, migration 0002."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import inspect, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from ptmt.db import DatabaseError, DatabaseOutdated, Storage, open_storage
from ptmt.db import engine as db_engine
from ptmt.db import migrate
from ptmt.db.models import Configuration, RunStatus, TuningMode, TuningRun
from ptmt.db.storage import (
    TUNING_EVENT_COLUMNS,
    TUNING_INTERVAL_COLUMNS,
    HOST_COLUMNS,
    TUNING_RUN_COLUMNS,
    DatabaseUnavailable,
)
from ptmt.online.recording import DbRecorder

START = {"scan_size_mb": 256, "hot_threshold_ms": 1000, "demotion_enabled": False}
MOVED = {**START, "scan_size_mb": 512}
HOST = {"hostname": "simhost", "kernel": "6.12.0-sim", "platform": "sim"}
CATALOG_HASH = "c" * 64
TUNING_TABLES = {"tuning_runs", "tuning_intervals", "tuning_events"}


def _run(store: Storage, **kw: Any) -> TuningRun:
    host = store.register_host(**HOST)
    backend = store.register_backend(kw.pop("backend", "tpp"), CATALOG_HASH)
    args: dict[str, Any] = dict(platform="sim", objective_name="sim", objective_unit="ops/s",
                                workload="gups", settings={"interval": 10.0, "duration": 60},
                                start_config=START, seed=1, label="demo")
    return store.start_tuning_run(backend, host, **{**args, **kw})


def _row(seq: int, config: dict[str, Any] = START, objective: float | None = None) -> dict[str, Any]:
    """An interval row the way the tuner makes it."""
    return {"seq": seq, "t_s": 10.0 * seq,
            "objective": 100.0 + seq if objective is None else objective,
            "baseline": 100.0 if seq > 2 else None, "config": dict(config), "phase": seq // 4,
            "fingerprint": {"promote_rate": np.float64(0.5 * seq), "hint_faults": float("nan")},
            "counters": {"pgpromote_success": seq * 3, "node0.numa_hit": np.int64(7)}}


def _event(ordinal: int, seq: int, **kw: Any) -> dict[str, Any]:
    ev = {"n": ordinal, "seq": seq, "t_s": 10.0 * seq, "kind": "explore",
          "reason": "coordinate search, trying", "knob": "scan_size_mb", "old": "256",
          "new": "512", "details": {"gain": np.float64(0.02)}, "ordinal": ordinal}
    return {**ev, **kw}


def test_tuning_run_round_trip_into_dataframes(store: Storage) -> None:
    run = _run(store)
    assert run.id and len(run.token) == 32 and run.status == "running"
    assert run.backend.name == "tpp" and run.host.hostname == "simhost"
    rows = [_row(1), _row(2), _row(3, MOVED), _row(4, MOVED, objective=float("nan")), _row(5)]
    assert store.add_tuning_intervals(run, rows) == 5
    events = [_event(0, 2),
              _event(1, 4, kind="revert", reason="back to the best", old="512", new="256"),
              _event(2, 4, kind="phase", reason="workload phase 1", knob=None, old=None,
                     new=None, details={})]
    assert store.add_tuning_events(run, events) == 3
    # identical configurations are stored once, by the existing get-or-create
    assert store.configuration(START).id == run.start_configuration_id
    with store._read() as c:
        assert c.execute(select(Configuration.id)).all().__len__() == 2

    runs = store.tuning_runs_frame()
    assert list(runs.columns) == TUNING_RUN_COLUMNS
    r = runs.iloc[0]
    assert (r.run_id, r.token, r.backend, r.host, r.workload, r["mode"], r.status) == \
        (run.id, run.token, "tpp", "simhost", "gups", "tune", "running")
    assert (r.intervals, r.events, r.seed, r.label) == (5, 3, 1, "demo")
    assert r.mean_objective == pytest.approx((101 + 102 + 103 + 105) / 4)  # NaN is NULL, skipped
    assert r.start_config == START and pd.isna(r.final_config) and pd.isna(r.duration_s)
    assert r.started_at.tzinfo is not None and r.settings == {"interval": 10, "duration": 60}

    assert store.finish_tuning_run(run, "finished", final_config=MOVED,
                                   summary={"mean_objective": 102.75, "changes": 1})
    r = store.tuning_runs_frame("tpp").iloc[0]
    assert r.status == "finished" and r.final_config == MOVED and r.duration_s >= 0
    assert r.summary == {"mean_objective": 102.75, "changes": 1}

    iv = store.tuning_intervals_frame(run)
    knob_cols = ["knob.demotion_enabled", "knob.hot_threshold_ms", "knob.scan_size_mb"]
    assert list(iv.columns) == TUNING_INTERVAL_COLUMNS + knob_cols
    assert iv["seq"].tolist() == [1, 2, 3, 4, 5]
    assert iv["knob.scan_size_mb"].tolist() == [256, 256, 512, 512, 256]
    assert iv["knob.demotion_enabled"].tolist() == [False] * 5
    assert iv["objective"].isna().tolist() == [False, False, False, True, False]
    assert iv["baseline"].isna().tolist() == [True, True, False, False, False]
    assert iv["phase"].tolist() == [0, 0, 0, 1, 1]
    assert iv["config_hash"].nunique() == 2
    full = store.tuning_intervals_frame(run.token, fingerprint=True, counters=True)
    assert full["fp.promote_rate"].tolist() == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert full["fp.hint_faults"].isna().all()  # NaN features are stored as null
    assert full["counter.pgpromote_success"].tolist() == [3, 6, 9, 12, 15]
    assert full["counter.node0.numa_hit"].tolist() == [7] * 5

    ev = store.tuning_events_frame(run)
    assert list(ev.columns) == TUNING_EVENT_COLUMNS
    assert ev["ordinal"].tolist() == [0, 1, 2]
    assert ev["kind"].tolist() == ["explore", "revert", "phase"]
    assert ev["knob"].tolist()[:2] == ["scan_size_mb", "scan_size_mb"] and pd.isna(ev["knob"][2])
    assert ev["details"][0] == {"gain": 0.02} and ev["details"][2] is None
    assert store.get_tuning_run(run.token).final_configuration_id == store.configuration(MOVED).id


def test_resending_is_idempotent(store: Storage) -> None:
    run = _run(store, token="t" * 32)
    again = _run(store, token="t" * 32)  # a start whose acknowledgement was lost
    assert again.id == run.id
    assert store.add_tuning_intervals(run, [_row(s) for s in range(1, 6)]) == 5
    # after a reconnect the client resends 3..5 with 6..8; 3 is sent twice in one batch
    resend = [_row(s, objective=0.0) for s in (3, 3, 4, 5)] + [_row(s) for s in (6, 7, 8)]
    assert store.add_tuning_intervals(run.id, resend) == 3
    assert store.add_tuning_intervals(run.token, resend) == 0
    iv = store.tuning_intervals_frame(run)
    assert iv["seq"].tolist() == list(range(1, 9))
    assert iv.loc[iv.seq == 3, "objective"].item() == 103.0  # the first write wins
    assert store.add_tuning_events(run, [_event(0, 1), _event(1, 2)]) == 2
    assert store.add_tuning_events(run, [_event(1, 2), _event(1, 2), _event(2, 3)]) == 1
    assert store.tuning_events_frame(run)["ordinal"].tolist() == [0, 1, 2]
    assert store.add_tuning_intervals(run, []) == 0 and store.add_tuning_events(run, []) == 0
    assert store.finish_tuning_run(run, RunStatus.INTERRUPTED, summary={"why": "SIGTERM"})
    assert not store.finish_tuning_run(run, RunStatus.INTERRUPTED)  # the resend changes nothing
    assert store.get_tuning_run(run).summary == {"why": "SIGTERM"}
    assert len(store.tuning_runs_frame()) == 1


def test_bad_mode_and_status_are_refused(store: Storage) -> None:
    with pytest.raises(ValueError, match="mode must be one of tune, default, dry-run"):
        _run(store, mode="autopilot")
    run = _run(store, mode=TuningMode.DRY_RUN)
    assert run.mode == "dry-run"
    with pytest.raises(ValueError, match="status must be one of running, finished"):
        store.finish_tuning_run(run, "done")
    with pytest.raises(ValueError, match="final status"):
        store.finish_tuning_run(run, "running")
    with pytest.raises(ValueError, match="ordinal"):
        store.add_tuning_events(run, [{k: v for k, v in _event(0, 1).items() if k != "ordinal"}])
    with pytest.raises(DatabaseError, match="no tuning run with token nope"):
        store.add_tuning_intervals("nope", [_row(1)])
    # the database itself refuses what the API would not send
    for values in ({"mode": "autopilot"}, {"status": "done"}):
        with pytest.raises(IntegrityError), store.engine.begin() as c:
            c.execute(update(TuningRun).where(TuningRun.id == run.id).values(**values))
    with pytest.raises(IntegrityError), store.engine.begin() as c:
        c.execute(insert(TuningRun).values(
            token=run.token, backend_id=run.backend_id, host_id=run.host_id, platform="sim",
            mode="tune", objective_name="sim", settings={}, status="running",
            started_at=run.started_at, ptmt_version="0"))
    assert store.get_tuning_run(run).status == "running"


def test_runs_frame_filters(store: Storage) -> None:
    a = _run(store)
    b = _run(store, backend="autonuma", mode="default", label="baseline", workload=None)
    store.finish_tuning_run(b, "failed")
    assert store.tuning_runs_frame("tpp")["run_id"].tolist() == [a.id]
    assert store.tuning_runs_frame(mode="default")["run_id"].tolist() == [b.id]
    assert store.tuning_runs_frame(status=["failed", "finished"])["run_id"].tolist() == [b.id]
    assert store.tuning_runs_frame(label="baseline", hostname="simhost")["run_id"].tolist() == [b.id]
    assert store.tuning_runs_frame(workload="gups")["run_id"].tolist() == [a.id]
    assert store.tuning_runs_frame("nope").empty
    assert store.tuning_intervals_frame([a, b]).empty and store.tuning_events_frame(a).empty
    store.add_tuning_intervals(a, [_row(1)])
    store.add_tuning_intervals(b, [_row(1, MOVED), _row(2, MOVED)])
    both = store.tuning_intervals_frame([a.id, b.token])
    assert both[["run_id", "seq"]].values.tolist() == [[a.id, 1], [b.id, 1], [b.id, 2]]


# ---------------------------------------------------------------------- the recorder, for real


@contextmanager
def _outage(db_url: str, request: pytest.FixtureRequest) -> Iterator[None]:
    """Make the database unavailable for real while the block runs.

    SQLite: another connection holds the write lock (writers get "database is locked" once their
    lock wait is over). PostgreSQL: the database stops accepting connections and every open
    connection to it is terminated by the server.
    """
    url = db_engine.resolve_url(db_url)
    if db_engine.is_sqlite(url):
        locker = sqlite3.connect(str(db_engine.sqlite_file(url)), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    server = request.getfixturevalue("pg_server")
    with server._admin() as admin:
        admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (url.database,))
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')


def _recorder(db: Any, **kw: Any) -> DbRecorder:
    args: dict[str, Any] = dict(backend="tpp", catalog_hash=CATALOG_HASH, host=HOST,
                                platform="sim", objective_name="sim", objective_unit="ops/s",
                                workload="gups", settings={"interval": 10.0}, batch_size=2,
                                retry_s=0.0, timeout_s=0.3)
    return DbRecorder(db, **{**args, **kw})


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "ptmt.tune"]


def test_recorder_keeps_tuning_through_a_real_outage(db_url: str, request: pytest.FixtureRequest,
                                                     tune_log: pytest.LogCaptureFixture) -> None:
    rec = _recorder(db_url)
    rec.start()
    for seq in (1, 2):
        rec.interval(_row(seq))
    rec.interval(_row(3, MOVED))
    rec.event({k: v for k, v in _event(0, 3).items() if k != "ordinal"})
    rec.interval(_row(4, MOVED))  # waits for a batch of two
    assert rec.written == {"intervals": 3, "events": 1} and rec.pending == 1
    with _outage(db_url, request):
        for seq in range(5, 11):
            rec.interval(_row(seq, MOVED))
            if seq in (6, 9):
                rec.event(_event(0, seq, kind="keep", knob=None, old=None, new=None))
        assert rec.unavailable and rec.pending == 9
    assert _messages(tune_log)[0][0] == "WARNING" and len(_messages(tune_log)) == 1
    rec.interval(_row(11, MOVED))
    assert not rec.unavailable and rec.pending == 0
    assert rec.close("finished", MOVED, {"changes": 1})

    (lvl1, warning), (lvl2, back) = _messages(tune_log)
    assert lvl1 == "WARNING" and re.fullmatch(
        r"cannot record to the database \(database error on \S+: .+\); tuning goes on, keeping "
        r"up to 100000 rows in memory until it is back", warning), warning
    assert ("database is locked" in warning) if "sqlite" in db_url else \
        ("not currently accepting connections" in warning or "terminat" in warning)
    masked = db_engine.mask(db_engine.resolve_url(db_url))
    assert (lvl2, back) == ("INFO", f"the database {masked} is back: wrote 10 rows late "
                                    "(8 intervals, 2 events)")
    if db_engine.resolve_url(db_url).password:
        assert str(db_engine.resolve_url(db_url).password) not in warning + back

    with open_storage(db_url) as s:  # nothing lost, nothing doubled
        iv = s.tuning_intervals_frame(rec.token)
        assert iv["seq"].tolist() == list(range(1, 12))
        assert iv["knob.scan_size_mb"].tolist() == [256, 256] + [512] * 9
        ev = s.tuning_events_frame(rec.run_id)
        assert ev[["ordinal", "seq", "kind"]].values.tolist() == [
            [0, 3, "explore"], [1, 6, "keep"], [2, 9, "keep"]]
        r = s.tuning_runs_frame().iloc[0]
        assert (r.status, r.intervals, r.events) == ("finished", 11, 3)
        assert r.start_config == START and r.final_config == MOVED


def test_recorder_can_start_while_the_database_is_down(
        db_url: str, request: pytest.FixtureRequest, tune_log: pytest.LogCaptureFixture) -> None:
    with open_storage(db_url):
        pass  # the schema exists; the server (or the file) then goes away
    with _outage(db_url, request):
        strict = _recorder(db_url)
        with pytest.raises(DatabaseUnavailable):
            strict.start()
        assert not _messages(tune_log)
        rec = _recorder(db_url)
        rec.start(require_db=False)
        started = rec.started_at
        for seq in (1, 2, 3):
            rec.interval(_row(seq))
        assert rec.run_id is None and rec.pending == 3
    assert [lvl for lvl, _ in _messages(tune_log)] == ["WARNING"]
    assert rec.flush()
    assert _messages(tune_log)[-1][1].endswith("is back: wrote 3 rows late (3 intervals, 0 events)")
    assert rec.close("interrupted")
    with open_storage(db_url) as s:
        run = s.get_tuning_run(rec.token)
        assert run.started_at == started and run.status == "interrupted"
        assert s.get_configuration(run.start_configuration_id).knobs == START  # from interval 1
        assert s.tuning_intervals_frame(run)["seq"].tolist() == [1, 2, 3]


def test_recorder_refuses_an_outdated_database(db_url: str) -> None:
    eng = db_engine.create(db_engine.resolve_url(db_url))
    try:
        migrate.upgrade(eng, "0001")
    finally:
        eng.dispose()
    with pytest.raises(DatabaseOutdated, match="ptmt db upgrade"):
        _recorder(db_url).start(require_db=False)  # not an outage: retrying would not help


# ---------------------------------------------------------------------- migration 0002


def test_migration_0001_to_0002_and_back(db_url: str) -> None:
    eng = db_engine.create(db_engine.resolve_url(db_url))
    try:
        assert migrate.upgrade(eng, "0001") == (None, "0001")
        with eng.begin() as c:
            c.execute(text("INSERT INTO configurations (hash, knobs, created_at) "
                           "VALUES ('h1', '{\"a\": 1}', CURRENT_TIMESTAMP)"))
            assert not TUNING_TABLES & set(inspect(c).get_table_names())
        assert migrate.upgrade(eng) == ("0001", "0002")
        with eng.connect() as c:
            assert TUNING_TABLES <= set(inspect(c).get_table_names())
            assert migrate.compare(c) == []
            uniques = {u["name"] for u in inspect(c).get_unique_constraints("tuning_intervals")}
            assert "uq_tuning_intervals_run_id_seq" in uniques
        with open_storage(db_url) as s:
            run = _run(s)
            s.add_tuning_intervals(run, [_row(1)])
            assert s.configuration({"a": 1}).hash != "h1"  # the old row is untouched
        migrate.downgrade(eng, "0001")
        with eng.connect() as c:
            assert migrate.current_revision(c) == "0001"
            assert not TUNING_TABLES & set(inspect(c).get_table_names())
            assert c.execute(text("SELECT hash FROM configurations WHERE hash = 'h1'")).scalar()
        with pytest.raises(DatabaseOutdated, match="0001"):
            open_storage(db_url)
        assert migrate.upgrade(eng) == ("0001", "0002")
        with open_storage(db_url) as s:
            assert s.tuning_runs_frame().empty
    finally:
        eng.dispose()


def test_offline_sql_of_0002() -> None:
    pg = migrate.upgrade_sql("postgresql+psycopg://u@h/db", start="0001")
    assert "CREATE TABLE tuning_runs" in pg and "CREATE TABLE trials" not in pg
    assert "ck_tuning_runs_mode CHECK (mode IN ('tune', 'default', 'dry-run'))" in pg
    assert "UNIQUE (run_id, ordinal)" in pg and "JSONB" in pg


def test_runs_frame_names_the_host_and_hosts_frame_describes_it(store: Storage) -> None:
    """What `ptmt report` needs for provenance, on each database backend."""
    a = _run(store)
    other = store.register_host("node7", "6.8.0", platform="linux", arch="x86_64",
                                topology={"nodes": [{"id": 0, "mem_total_kb": 1024}]}, tiers={"0": [0], "1": [1]})
    b = store.start_tuning_run(store.register_backend("tpp", CATALOG_HASH), other, platform="linux",
                               objective_name="ipc")
    runs = store.tuning_runs_frame().set_index("run_id")
    assert runs.loc[a.id, "kernel"] == HOST["kernel"] and runs.loc[b.id, "kernel"] == "6.8.0"
    assert runs.loc[b.id, "host_id"] == other.id != runs.loc[a.id, "host_id"]
    hosts = store.hosts_frame().set_index("host_id")
    assert list(store.hosts_frame().columns) == HOST_COLUMNS
    h = hosts.loc[other.id]
    assert (h["hostname"], h["arch"], h["platform"]) == ("node7", "x86_64", "linux")
    assert h["topology"] == {"nodes": [{"id": 0, "mem_total_kb": 1024}]} and h["tiers"] == {"0": [0], "1": [1]}
