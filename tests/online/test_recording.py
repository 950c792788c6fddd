"""Recorders of the online tuner: a whole simulated tuning run into lists and into the database,
batching, the bounded outage buffer, and closing. (Every storage backend: tests/db/test_db_tuning.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ptmt.backends.registry import backend_for
from ptmt.catalog import load_catalog
from ptmt.db import open_storage
from ptmt.journal import Journal
from ptmt.online.guard import GuardSettings
from ptmt.online.knobspace import KnobSpace
from ptmt.online.recording import DbRecorder, ListRecorder
from ptmt.online.simrun import HostObjective
from ptmt.online.tuner import Recorder, TuneResult, Tuner, TuneSettings
from ptmt.sim.host import SimHost

HOST = {"hostname": "simhost", "kernel": "6.12.0-sim", "platform": "sim"}
CONFIG = {"scan_size_mb": 256}


def _tune(tmp_path: Path, recorder: Recorder) -> TuneResult:
    host = SimHost(tmp_path / "m", workload="gups", seed=1, fast_gb=4, slow_gb=8, footprint_gb=6,
                   persist=False)
    cat = load_catalog("autonuma")
    settings = TuneSettings(interval=10, duration=300, guard=GuardSettings(exploration_budget=6))
    tuner = Tuner(host, backend_for(cat, host), Journal(tmp_path / "state"),
                  objective=HostObjective(), space=KnobSpace(cat), settings=settings,
                  recorder=recorder)
    return tuner.run()


def _recorder(url: str, **kw: Any) -> DbRecorder:
    cat = load_catalog("autonuma")
    args: dict[str, Any] = dict(backend="autonuma", catalog_hash=cat.hash, host=HOST,
                                platform="sim", objective_name="sim", objective_unit="ops/s",
                                workload="gups", seed=1, timeout_s=0.2, retry_s=0.0)
    return DbRecorder(url, **{**args, **kw})


def _row(seq: int) -> dict[str, Any]:
    return {"seq": seq, "t_s": 10.0 * seq, "objective": 1.0, "baseline": None,
            "config": CONFIG, "phase": 0, "fingerprint": None, "counters": {"c": seq}}


@contextmanager
def _locked(db: Path) -> Iterator[None]:
    """The SQLite file's write lock held by another connection: writers fail after their wait."""
    locker = sqlite3.connect(str(db), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def _db_messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """The recorder's own lines (the tuner logs its decisions to the same logger)."""
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == "ptmt.tune" and "database" in r.getMessage()]


def test_list_recorder_keeps_what_the_tuner_reports(tmp_path: Path) -> None:
    rec = ListRecorder()
    rec.start()
    result = _tune(tmp_path, rec)
    assert rec.intervals == result.intervals and len(rec.intervals) == 30
    assert [e["ordinal"] for e in rec.events] == list(range(len(result.events)))
    assert [{k: v for k, v in e.items() if k != "ordinal"} for e in rec.events] == \
        [e.as_dict() for e in result.events]
    assert rec.close("finished", result.final_config, {"changes": result.changes})
    assert (rec.status, rec.final_config) == ("finished", result.final_config)


def test_db_recorder_stores_a_whole_tuning_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ptmt.db'}"
    rec = _recorder(url, settings={"interval": 10, "duration": 300}, label="ci")
    rec.start()
    result = _tune(tmp_path, rec)
    summary = {"mean_objective": result.mean_objective, "changes": result.changes,
               "reverts": result.reverts}
    assert rec.close("finished", result.final_config, summary)
    assert rec.written == {"intervals": 30, "events": len(result.events)}
    with open_storage(url) as s:
        run = s.tuning_runs_frame("autonuma").iloc[0]
        assert (run.token, run.status, run.intervals, run.events, run.label) == \
            (rec.token, "finished", 30, len(result.events), "ci")
        assert run.start_config == result.start_config  # learnt from the first interval
        assert run.final_config == result.final_config
        assert run.mean_objective == pytest.approx(result.mean_objective)
        assert run.summary["changes"] == result.changes
        iv = s.tuning_intervals_frame(rec.run_id, counters=True)
        assert iv["seq"].tolist() == [r["seq"] for r in result.intervals]
        assert iv["objective"].tolist() == pytest.approx([r["objective"] for r in result.intervals])
        for name in result.start_config:  # one knob column per knob, per interval's config
            assert iv[f"knob.{name}"].tolist() == [r["config"][name] for r in result.intervals]
        assert iv["counter.numa_hint_faults"].notna().all()
        ev = s.tuning_events_frame(rec.run_id)
        assert ev[["seq", "kind", "knob", "old", "new"]].astype(object).where(
            ev[["seq", "kind", "knob", "old", "new"]].notna(), None).values.tolist() == \
            [[e.seq, e.kind, e.knob, e.old, e.new] for e in result.events]


def test_rows_are_written_in_batches_or_when_they_waited_long_enough(tmp_path: Path) -> None:
    now = [0.0]
    rec = _recorder(str(tmp_path / "ptmt.db"), batch_size=3, flush_s=30.0, clock=lambda: now[0])
    rec.start()
    rec.interval(_row(1))
    rec.interval(_row(2))
    assert rec.pending == 2
    rec.interval(_row(3))
    assert rec.pending == 0 and rec.written["intervals"] == 3
    rec.interval(_row(4))
    now[0] = 29.0
    rec.event({"n": 0, "seq": 4, "t_s": 40.0, "kind": "phase", "reason": "phase 1"})
    assert rec.pending == 2
    now[0] = 31.0  # the oldest row has waited 31 s
    rec.interval(_row(5))
    assert rec.pending == 0
    assert rec.close()


def test_outage_retries_are_spaced_and_the_buffer_is_bounded(
        tmp_path: Path, tune_log: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    path = tmp_path / "ptmt.db"
    rec = _recorder(str(path), batch_size=1, retry_s=60.0, max_buffered=5, clock=lambda: now[0])
    rec.start()
    rec.interval(_row(1))
    assert rec.written["intervals"] == 1
    assert rec._db is not None
    calls = []
    real = rec._db.add_tuning_intervals
    rec._db.add_tuning_intervals = lambda *a, **k: (calls.append(1), real(*a, **k))[1]  # type: ignore[method-assign]
    with _locked(path):
        for seq in range(2, 14):  # 12 rows, 10 s apart: two attempts (at 20 s and at 80 s)
            now[0] = 10.0 * seq
            rec.interval(_row(seq))
        assert len(calls) == 2 and rec.pending == 5
        assert rec.dropped == {"intervals": 7, "events": 0}
    now[0] = 200.0
    rec.interval(_row(14))
    assert rec.pending == 0
    (w1, start), (w2, back) = _db_messages(tune_log)
    assert w1 == "WARNING" and "database is locked" in start and "up to 5 rows" in start
    assert w2 == "WARNING" and back.endswith(
        "is back: wrote 5 rows late (5 intervals, 0 events); dropped the 8 oldest rows beyond "
        "the 5-row buffer")
    assert rec.close()
    with open_storage(str(path)) as s:  # the newest rows are kept, the oldest went
        assert s.tuning_intervals_frame(rec.run_id)["seq"].tolist() == [1, 10, 11, 12, 13, 14]


def test_closing_while_the_database_is_down_says_what_was_lost(
        tmp_path: Path, tune_log: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ptmt.db"
    rec = _recorder(str(path), batch_size=10)
    rec.start()
    rec.interval(_row(1))
    rec.event({"n": 0, "seq": 1, "t_s": 10.0, "kind": "error", "reason": "objective: gone"})
    with _locked(path):
        assert not rec.close("failed")
    assert [lvl for lvl, _ in _db_messages(tune_log)] == ["WARNING", "WARNING"]
    assert _db_messages(tune_log)[-1][1] == (
        f"the database {rec.url} is still unreachable: 2 rows of tuning run {rec.token} were not "
        "recorded (1 intervals, 1 events)")
    with open_storage(str(path)) as s:
        assert s.get_tuning_run(rec.token).status == "running"  # what `ptmt report` will show
    with pytest.raises(RuntimeError, match="closed"):
        rec.interval(_row(2))


def test_context_manager_records_how_the_run_ended(tmp_path: Path) -> None:
    url = str(tmp_path / "ptmt.db")
    with pytest.raises(RuntimeError), _recorder(url) as rec:
        rec.interval(_row(1))
        raise RuntimeError("the workload died")
    with pytest.raises(KeyboardInterrupt), _recorder(url) as rec2:
        raise KeyboardInterrupt
    with _recorder(url) as rec3:
        pass
    with open_storage(url) as s:
        assert [s.get_tuning_run(r.token).status for r in (rec, rec2, rec3)] == \
            ["failed", "interrupted", "finished"]
        assert s.tuning_intervals_frame(rec.token)["seq"].tolist() == [1]
    with pytest.raises(RuntimeError, match="start"):
        _recorder(url).interval(_row(1))
    with pytest.raises(ValueError, match="catalog_hash"):
        DbRecorder(url, backend="tpp", host=HOST, platform="sim", objective_name="sim")
