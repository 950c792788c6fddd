"""Storage API, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from ptmt.db import (
    DatabaseError,
    Storage,
    StudyPlanMismatch,
    Trial,
    TrialStatus,
    open_storage,
)


def _setup(store: Storage, *, seed: int = 1, budget: int = 4):
    host = store.register_host("node7", "6.8.0-45", tiers={"0": [0], "1": [1]},
                               topology={"nodes": [0, 1]}, perf_available=False)
    backend = store.register_backend("tpp", "c" * 64, catalog={"knobs": {"demote_scale": {}}})
    workload = store.register_workload("gups", {"kind": "gups", "size_gb": 8})
    study, created = store.study(backend, workload, host, strategy="random", budget=budget,
                                 seed=seed, settings={"interval": 1.0, "duration": 10})
    return host, backend, workload, study, created


def test_open_migrates_new_database_and_reopens(db_url: str) -> None:
    with open_storage(db_url) as s1:
        assert s1.progress(1) == {st.value: 0 for st in TrialStatus}
    with open_storage(db_url, create=False) as s2:  # already at head: no migration needed
        assert s2.studies_frame().empty


def test_url_is_masked(store: Storage, db_url: str) -> None:
    assert "***" in store.url or store.dialect == "sqlite"
    if store.engine.url.password:
        assert str(store.engine.url.password) not in store.url
        assert str(store.engine.url.password) not in repr(store)
        assert str(store.engine.url.password) not in repr(store.engine)


def test_register_is_get_or_create(store: Storage) -> None:
    h1 = store.register_host("n1", "6.8", tiers={"0": [0]}, info={"cpu": "x"})
    h2 = store.register_host("n1", "6.8", tiers={"0": [0]}, info={"cpu": "other"})
    h3 = store.register_host("n1", "6.9", tiers={"0": [0]})
    assert h1.id == h2.id != h3.id
    assert h2.info == {"cpu": "x"}  # info is kept from the first registration
    assert h1.created_at.tzinfo is not None

    b1 = store.register_backend("tpp", "a" * 64)
    assert store.register_backend("tpp", "a" * 64).id == b1.id
    assert store.register_backend("tpp", "b" * 64).id != b1.id
    assert store.register_backend("autonuma", "a" * 64).id != b1.id

    w1 = store.register_workload("ls", {"command": ["ls", "-l"]}, kind="command",
                                 command=["ls", "-l", "a b"])
    assert w1.command == "ls -l 'a b'"
    assert store.register_workload("ls", {"command": ["ls", "-l"]}, kind="command",
                                   command=["ls", "-l", "a b"]).id == w1.id
    w2 = store.register_workload("gups", {"size_gb": 8})
    assert w2.kind == "sim" and w2.id != w1.id
    assert store.register_workload("gups", {"size_gb": 16}).id != w2.id


def test_identical_configurations_are_stored_once(store: Storage) -> None:
    c1 = store.configuration({"a": 1, "b": 2.0, "c": True})
    c2 = store.configuration({"c": True, "b": 2, "a": np.int64(1)})
    c3 = store.configuration({"a": 1, "b": 2.5, "c": True})
    assert c1.id == c2.id != c3.id
    assert c1.knobs == {"a": 1, "b": 2, "c": True}
    assert store.get_configuration(c1.id).hash == c1.hash


def test_study_is_identified_by_its_parameters(store: Storage) -> None:
    host, backend, workload, study, created = _setup(store)
    assert created
    again, created_again = store.study(backend, workload, host, strategy="random", budget=4,
                                       seed=1, settings={"duration": 10, "interval": 1})
    assert again.id == study.id and not created_again
    other, created_other = store.study(backend.id, workload.id, host.id, strategy="random",
                                       budget=4, seed=2, settings={"interval": 1, "duration": 10})
    assert created_other and other.id != study.id
    fleet, _ = store.study(backend, workload, None, strategy="random", budget=4, seed=1)
    assert fleet.host_id is None and fleet.id not in (study.id, other.id)
    got = store.get_study(study.id)
    assert (got.backend.name, got.workload.name, got.host.hostname) == ("tpp", "gups", "node7")
    with pytest.raises(ValueError):
        store.study(backend, workload, host, strategy="grid", budget=1,
                    objective_direction="up")


def test_plan_is_idempotent_and_checked(store: Storage) -> None:
    *_, study, _ = _setup(store)
    plan = [({"x": 1}, 0), ({"x": 1}, 1), ({"x": 2}, 0)]
    ids = store.plan_trials(study, plan)
    assert len(set(ids)) == 3
    assert store.plan_trials(study, plan) == ids  # rerun: nothing new
    assert store.plan_trials(study, plan + [{"x": 3}])[:3] == ids  # extended budget
    trials = store.trials(study)
    assert [t.ordinal for t in trials] == [0, 1, 2, 3]
    assert trials[0].configuration_id == trials[1].configuration_id
    assert [t.repetition for t in trials] == [0, 1, 0, 0]
    with pytest.raises(StudyPlanMismatch, match="seed changed"):
        store.plan_trials(study, [({"x": 9}, 0)])


def test_two_processes_planning_the_same_round_at_once_agree(store: Storage, db_url: str) -> None:
    """An adaptive study's next round is planned by whichever worker finds nothing left to run; two
    may plan it in the same instant. The one whose insert comes second checks against the other's."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    *_, study, _ = _setup(store)
    store.plan_trials(study, [{"x": 1}])
    plan = [({"x": 1}, 0), ({"x": 2}, 0), ({"x": 3}, 0)]
    other = open_storage(db_url, create=False)
    raced: list[list[int]] = []
    started: list[bool] = []

    def the_other_inserts_first(state) -> None:
        if state.is_insert and not started:
            started.append(True)
            raced.append(other.plan_trials(study.id, plan))  # after our read, before our insert

    event.listen(Session, "do_orm_execute", the_other_inserts_first)
    try:
        ids = store.plan_trials(study, plan)
    finally:
        event.remove(Session, "do_orm_execute", the_other_inserts_first)
        other.close()
    assert raced and ids == raced[0] and len(store.trials(study)) == 3
    with pytest.raises(StudyPlanMismatch, match="seed changed"):  # a different round is still refused
        store.plan_trials(study, plan[:2] + [({"x": 9}, 0)])


def test_trial_lifecycle(store: Storage) -> None:
    host, *_, study, _ = _setup(store)
    store.plan_trials(study, [{"x": i} for i in range(4)])
    t0 = store.claim_trial(study, worker="w1", host=host)
    assert t0 is not None and t0.ordinal == 0 and t0.status == TrialStatus.RUNNING
    assert t0.attempts == 1 and t0.worker == "w1" and t0.host_id == host.id
    assert t0.started_at is not None and t0.started_at.tzinfo == UTC
    assert t0.configuration.knobs == {"x": 0}
    assert store.heartbeat(t0)
    assert store.finish_trial(t0, objective=np.float64(12.5), unit="Mops/s")
    assert not store.finish_trial(t0, objective=1.0)  # not running any more
    assert not store.heartbeat(t0)

    t1 = store.claim_trial(study)
    assert store.fail_trial(t1, "x" * 10000 + "the end")
    failed = store.get_trial(t1)
    assert failed.status == "failed" and failed.error.endswith("the end")
    assert len(failed.error) <= 8000

    t2 = store.claim_trial(study)
    assert store.interrupt_trial(t2, "SIGTERM")
    assert store.get_trial(t2).status == "interrupted"

    t3 = store.trials(study, status="pending")[0]
    assert store.start_trial(t3, worker="solo") and not store.start_trial(t3)
    assert store.claim_trial(study) is None
    assert store.progress(study) == {"pending": 0, "running": 1, "done": 1, "failed": 1,
                                     "interrupted": 1}
    done = store.get_trial(t0)
    assert done.objective == 12.5 and done.objective_unit == "Mops/s"
    assert done.ended_at >= done.started_at


def test_resume_redoes_only_unfinished_trials(db_url: str) -> None:
    with open_storage(db_url) as s:
        *_, study, _ = _setup(s)
        s.plan_trials(study, [{"x": i} for i in range(5)])
        a = s.claim_trial(study)
        s.add_samples(a, [{"seq": 0, "t_s": 1, "dt_s": 1, "counters": {"c": 1}}])
        s.finish_trial(a, objective=1.0)
        b = s.claim_trial(study)
        s.add_samples(b, [{"seq": 0, "t_s": 1, "dt_s": 1, "counters": {"c": 2}}])
        s.interrupt_trial(b)  # Ctrl-C
    with open_storage(db_url) as s:  # the same command again
        *_, study2, created = _setup(s)
        assert study2.id == study.id and not created
        s.plan_trials(study2, [{"x": i} for i in range(5)])
        assert s.requeue(study2) == 1
        assert s.samples_frame(b).empty  # partial telemetry of the interrupted run is gone
        seen = []
        while (t := s.claim_trial(study2)) is not None:
            seen.append(t.ordinal)
            s.finish_trial(t, objective=2.0)
        assert seen == [1, 2, 3, 4]
        assert s.get_trial(b).attempts == 2
        assert s.progress(study2)["done"] == 5
        assert len(s.samples_frame(a)) == 1


def test_requeue_stale_and_failed(store: Storage) -> None:
    *_, study, _ = _setup(store)
    store.plan_trials(study, [{"x": i} for i in range(3)])
    dead = store.claim_trial(study, worker="dead")
    alive = store.claim_trial(study, worker="alive")
    failed = store.claim_trial(study)
    store.fail_trial(failed, "boom")
    old = datetime.now(UTC) - timedelta(minutes=10)
    with store.engine.begin() as conn:
        conn.execute(update(Trial).where(Trial.id == dead.id).values(heartbeat_at=old))
    assert store.requeue(study, stale_after_s=60) == 1
    assert store.get_trial(dead).status == "pending"
    assert store.get_trial(alive).status == "running"
    assert store.requeue(study, statuses=["failed"]) == 1
    assert store.get_trial(failed).error is None
    with pytest.raises(ValueError):
        store.requeue(study, statuses=["running"])


def test_samples_round_trip(store: Storage) -> None:
    *_, study, _ = _setup(store)
    store.plan_trials(study, [{"x": 1}, {"x": 2}])
    t1, t2 = store.claim_trial(study), store.claim_trial(study)
    n = store.add_samples(t1, [
        {"seq": i, "t_s": i + 1.0, "dt_s": 1.0, "objective": 10.0 + i,
         "counters": {"pgpromote_success": np.int64(5 * i), "numa_hint_faults": 100 + i,
                      "node0.numa_hit": 1e12 + i}}
        for i in range(3)])
    assert n == 3
    store.add_samples(t2, [{"seq": 0, "t_s": 1.0, "dt_s": 1.0,
                            "counters": {"pgpromote_success": 7, "seq": 99, "ipc": 1.25}}])
    assert store.add_samples(t2, []) == 0
    one = store.samples_frame(t1)
    assert list(one.columns[:6]) == ["trial_id", "study_id", "seq", "t_s", "dt_s", "objective"]
    assert one["pgpromote_success"].tolist() == [0, 5, 10]
    assert one["objective"].tolist() == [10.0, 11.0, 12.0]
    assert one["node0.numa_hit"].iloc[2] == 1e12 + 2
    both = store.samples_frame(study=study)
    assert len(both) == 4 and both["trial_id"].tolist() == [t1.id] * 3 + [t2.id]
    assert pd.isna(both["ipc"].iloc[0]) and both["ipc"].iloc[3] == 1.25
    assert both["counter.seq"].iloc[3] == 99  # a counter named like a fixed column is renamed
    assert pd.isna(both["objective"].iloc[3])
    prefixed = store.samples_frame(t1, counter_prefix="vmstat.")
    assert "vmstat.pgpromote_success" in prefixed.columns
    with pytest.raises(DatabaseError):  # the same interval twice
        store.add_samples(t1, [{"seq": 0, "t_s": 1, "dt_s": 1, "counters": {}}])
    with pytest.raises(ValueError):
        store.samples_frame()


def test_trials_frame(store: Storage) -> None:
    host, backend, workload, study, _ = _setup(store)
    other_wl = store.register_workload("bfs", {"kind": "bfs"})
    study2, _ = store.study(backend, other_wl, host, strategy="grid", budget=2)
    store.plan_trials(study, [{"scan_size_mb": 256, "damon": {"quota": 5}},
                              {"scan_size_mb": 1024, "rate_limit": 65536}])
    store.plan_trials(study2, [{"scan_size_mb": 64}])
    t = store.claim_trial(study, worker="w", host=host)
    store.finish_trial(t, objective=3.5, unit="s")
    df = store.trials_frame(study)
    assert len(df) == 2
    assert df.columns[:19].tolist() == [
        "trial_id", "study_id", "ordinal", "repetition", "status", "attempts", "objective",
        "objective_unit", "error", "started_at", "ended_at", "duration_s", "worker", "host",
        "backend", "workload", "strategy", "configuration_id", "config_hash"]
    assert {"knob.scan_size_mb", "knob.rate_limit", "knob.damon.quota"} <= set(df.columns)
    assert df["knob.scan_size_mb"].tolist() == [256, 1024]
    assert pd.isna(df["knob.rate_limit"].iloc[0])
    assert df["status"].tolist() == ["done", "pending"]
    assert df["host"].iloc[0] == "node7" and df["duration_s"].iloc[0] >= 0
    assert str(df["started_at"].dt.tz) == "UTC"
    assert len(store.trials_frame(backend="tpp")) == 3
    assert len(store.trials_frame(backend="tpp", workload="bfs")) == 1
    assert len(store.trials_frame(status="done")) == 1
    assert len(store.trials_frame(status=["done", "pending"])) == 3
    assert len(store.trials_frame(hostname="node7")) == 1
    assert store.trials_frame(backend="nope").empty
    bare = store.trials_frame(study2, knob_prefix="")
    assert "scan_size_mb" in bare.columns
    sf = store.studies_frame()
    assert sf[["workload", "pending", "done"]].values.tolist() == [["gups", 1, 1], ["bfs", 1, 0]]


def test_delete_study_cascades(store: Storage) -> None:
    *_, study, _ = _setup(store)
    store.plan_trials(study, [{"x": 1}])
    t = store.claim_trial(study)
    store.add_samples(t, [{"seq": 0, "t_s": 1, "dt_s": 1, "counters": {"a": 1}}])
    store.delete_study(study)
    assert store.trials_frame().empty
    assert store.samples_frame(study=study).empty
    with pytest.raises(DatabaseError, match="no study"):
        store.get_study(study)


def test_concurrent_claims_never_duplicate(db_url: str) -> None:
    """Workers with their own connections drain one study: every trial exactly once."""
    with open_storage(db_url) as s:
        *_, study, _ = _setup(s)
        s.plan_trials(study, [{"x": i} for i in range(60)])
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with open_storage(db_url) as mine:
                got = claimed.setdefault(name, [])
                while (t := mine.claim_trial(study.id, worker=name)) is not None:
                    got.append(t.ordinal)
                    mine.finish_trial(t, objective=float(t.ordinal))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    everything = sorted(o for got in claimed.values() for o in got)
    assert everything == list(range(60))
    with open_storage(db_url) as s:
        assert s.progress(study)["done"] == 60
