"""The storage API of the performance database.

    from ptmt.db import open_storage

    with open_storage() as db:                      # --db URL / $PTMT_DB / the default SQLite file
        host = db.register_host("node7", "6.8.0", platform="linux", tiers={"0": [0], "1": [1]})
        backend = db.register_backend("tpp", catalog_hash)
        workload = db.register_workload("gups", {"kind": "gups", "size_gb": 8})
        study, created = db.study(backend, workload, host, strategy="sobol", budget=64, seed=1)
        db.plan_trials(study, [({"scan_size_mb": 256}, 0), ({"scan_size_mb": 1024}, 0)])
        while (trial := db.claim_trial(study, worker="node7:1234", host=host)) is not None:
            db.add_samples(trial, [{"seq": 0, "t_s": 1.0, "dt_s": 1.0,
                                    "counters": {"pgpromote_success": 12}, "objective": 3.2}])
            db.finish_trial(trial, objective=3.2, unit="Mops/s")
        df = db.trials_frame(study)                 # one row per trial, knob.* columns

        run = db.start_tuning_run(backend, host, platform="linux", objective_name="ipc")
        db.add_tuning_intervals(run, tuner_rows)    # idempotent by (run, seq)
        db.add_tuning_events(run, events)           # idempotent by (run, ordinal)
        db.finish_tuning_run(run, "finished", final_config={...}, summary={...})
        runs, intervals = db.tuning_runs_frame("tpp"), db.tuning_intervals_frame(run)

Every method runs in its own short transaction and returns detached ORM rows (read-only
snapshots) or plain values; methods taking a row also take its integer id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import URL, Connection, Engine, Insert, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, aliased, sessionmaker

from ptmt.db import engine as _engine
from ptmt.db import migrate
from ptmt.db.canonical import config_hash, content_hash, normalize
from ptmt.db.errors import DatabaseError, StudyPlanMismatch
from ptmt.db.models import (
    Backend,
    Configuration,
    Host,
    RunStatus,
    Sample,
    Study,
    Trial,
    TrialStatus,
    TuningEvent,
    TuningInterval,
    TuningMode,
    TuningRun,
    Workload,
    utcnow,
)

R = TypeVar("R")

#: Columns of ``trials_frame`` before the knob columns.
TRIAL_COLUMNS = [
    "trial_id", "study_id", "ordinal", "repetition", "status", "attempts", "objective",
    "objective_unit", "error", "started_at", "ended_at", "duration_s", "worker", "host",
    "backend", "workload", "strategy", "configuration_id", "config_hash",
]
#: Columns of ``samples_frame`` before the counter columns.
SAMPLE_COLUMNS = ["trial_id", "study_id", "seq", "t_s", "dt_s", "objective"]
#: Columns of ``tuning_runs_frame``.
TUNING_RUN_COLUMNS = [
    "run_id", "token", "backend", "catalog_hash", "host", "host_id", "kernel", "platform", "workload",
    "mode", "status",
    "objective_name", "objective_unit", "started_at", "finished_at", "duration_s", "intervals",
    "events", "mean_objective", "ptmt_version", "seed", "label", "start_configuration_id",
    "final_configuration_id", "start_config", "final_config", "settings", "summary",
]
#: Columns of ``hosts_frame``.
HOST_COLUMNS = ["host_id", "hostname", "platform", "kernel", "arch", "topology", "tiers",
                "perf_available", "info", "hash", "created_at"]
#: Columns of ``tuning_intervals_frame`` before the knob (and optional fingerprint/counter) columns.
TUNING_INTERVAL_COLUMNS = ["run_id", "seq", "t_s", "objective", "baseline", "phase",
                           "configuration_id", "config_hash"]
#: Columns of ``tuning_events_frame``.
TUNING_EVENT_COLUMNS = ["run_id", "ordinal", "n", "seq", "t_s", "kind", "reason", "knob", "old",
                        "new", "details"]


class DatabaseUnavailable(DatabaseError):
    """The database could not be reached or written for now (connection refused or lost, file
    locked or unreadable): worth retrying later, unlike a schema or constraint error."""


def _id(obj: Any) -> int:
    """The integer id of a row or an id."""
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    value = getattr(obj, "id", None)
    if isinstance(value, int):
        return value
    raise TypeError(f"expected a row or an integer id, got {obj!r}")


def _opt_id(obj: Any) -> int | None:
    return None if obj is None else _id(obj)


def _status(value: TrialStatus | str) -> str:
    return TrialStatus(value).value


class Storage:
    """A PTMT database. Create with :func:`open_storage` (or ``Storage.open``)."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self._url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, url: str | URL | None = None, *, create: bool = True,
             echo: bool = False, timeout_s: float | None = None) -> Storage:
        """Open the database at *url* (``None``: ``$PTMT_DB`` or the default SQLite file).

        A brand-new database (no tables at all) is migrated to the newest schema when *create*
        is true. Any other database must already be at the newest revision: an older one raises
        :class:`~ptmt.db.errors.DatabaseOutdated` ("run `ptmt db upgrade`"), a newer one
        :class:`~ptmt.db.errors.DatabaseTooNew`. Nothing is ever migrated silently.

        *timeout_s* bounds how long one connection attempt (PostgreSQL) or one wait for a
        SQLite lock may take, for callers such as the online tuner that must not stall a minute.
        """
        resolved = _engine.resolve_url(url)
        kwargs: dict[str, Any] = {}
        if timeout_s is not None:
            if _engine.is_sqlite(resolved):
                kwargs["connect_args"] = {"timeout": float(timeout_s)}
            elif resolved.get_backend_name() == "postgresql":
                kwargs["connect_args"] = {"connect_timeout": max(1, math.ceil(timeout_s))}
        eng = _engine.create(resolved, echo=echo, **kwargs)
        where = _engine.mask(resolved)
        try:
            with _wrap(resolved, f"cannot open {where}"):
                state = cls._state(eng)
                if state.empty and create:
                    try:
                        migrate.upgrade(eng)
                    except DBAPIError:
                        # another process may have created it at the same moment
                        if not cls._state(eng).up_to_date:
                            raise
                    state = cls._state(eng)
                migrate.require_current(state, where)
        except BaseException:
            eng.dispose()
            raise
        return cls(eng, resolved)

    @staticmethod
    def _state(eng: Engine) -> migrate.SchemaState:
        with eng.connect() as conn:
            return migrate.schema_state(conn)

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return _engine.mask(self._url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Storage({self.url})"

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with _wrap(self._url, f"database error on {self.url}"), self._sessions() as s:
            yield s

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A Core connection for bulk reads (no ORM row processing)."""
        with _wrap(self._url, f"database error on {self.url}"), self.engine.connect() as c:
            yield c

    def _get_or_create(self, model: type[R], lookup: dict[str, Any],
                       values: dict[str, Any]) -> tuple[R, bool]:
        """The row matching *lookup*, inserted with *values* if missing (safe under races)."""
        for _ in range(5):
            with self._session() as s:
                row = s.scalars(select(model).filter_by(**lookup)).unique().one_or_none()
                if row is not None:
                    return row, False
                s.add(model(**lookup, **values))
                try:
                    s.commit()
                except IntegrityError:
                    s.rollback()
                    continue
            with self._session() as s:
                return s.scalars(select(model).filter_by(**lookup)).unique().one(), True
        raise DatabaseError(f"could not register a {model.__name__} row (concurrent conflicts)")

    # ------------------------------------------------------------------ registration

    def register_host(self, hostname: str, kernel: str, *, platform: str = "linux",
                      arch: str | None = None, topology: Mapping[str, Any] | None = None,
                      tiers: Mapping[str, Any] | None = None,
                      perf_available: bool | None = None,
                      info: Mapping[str, Any] | None = None) -> Host:
        """Get or create a host row. Hostname, platform, kernel, arch, topology, tiers and perf
        availability identify it (a kernel update makes a new row); *info* is kept from the
        first registration."""
        ident = {"hostname": hostname, "platform": platform, "kernel": kernel, "arch": arch,
                 "topology": normalize(dict(topology or {})), "tiers": normalize(dict(tiers or {})),
                 "perf_available": perf_available}
        row, _ = self._get_or_create(Host, {"hash": content_hash(ident)},
                                     {**ident, "info": normalize(dict(info or {}))})
        return row

    def register_backend(self, name: str, catalog_hash: str,
                         catalog: Mapping[str, Any] | None = None) -> Backend:
        """Get or create a backend row for this catalog version (*catalog*: optional snapshot)."""
        row, _ = self._get_or_create(
            Backend, {"name": name, "catalog_hash": catalog_hash},
            {"catalog": normalize(dict(catalog)) if catalog is not None else None})
        return row

    def register_workload(self, name: str, spec: Mapping[str, Any], *, kind: str = "sim",
                          command: str | Sequence[str] | None = None) -> Workload:
        """Get or create a workload: *kind* ``"sim"`` (a simulator spec) or ``"command"`` (the
        parsed workload YAML in *spec*, the command line in *command* for display)."""
        if command is not None and not isinstance(command, str):
            import shlex

            command = shlex.join(str(c) for c in command)
        spec_n = normalize(dict(spec))
        digest = content_hash({"kind": kind, "spec": spec_n, "command": command})
        row, _ = self._get_or_create(Workload, {"name": name, "hash": digest},
                                     {"kind": kind, "spec": spec_n, "command": command})
        return row

    def configuration(self, knobs: Mapping[str, Any]) -> Configuration:
        """Get or create the configuration with these knob values (stored once, by hash)."""
        knobs_n = normalize(dict(knobs))
        row, _ = self._get_or_create(Configuration, {"hash": config_hash(knobs_n)},
                                     {"knobs": knobs_n})
        return row

    def get_configuration(self, config: Configuration | int) -> Configuration:
        with self._session() as s:
            return _must(s.get(Configuration, _id(config)), "configuration", config)

    # ------------------------------------------------------------------ studies

    def study(self, backend: Backend | int, workload: Workload | int, host: Host | int | None,
              *, strategy: str, budget: int, seed: int | None = None, repetitions: int = 1,
              settings: Mapping[str, Any] | None = None,
              objective_direction: str | None = None) -> tuple[Study, bool]:
        """Get or create the study these parameters identify; ``(study, created)``.

        Rerunning the same profile command passes the same parameters and gets the same study
        back, so the caller resumes it. *settings* (duration, interval, platform, in-run mode, ...)
        is part of the identity.
        """
        if objective_direction not in (None, "max", "min"):
            raise ValueError("objective_direction must be 'max', 'min' or None")
        ident = {"backend_id": _id(backend), "workload_id": _id(workload),
                 "host_id": _opt_id(host), "strategy": strategy, "budget": int(budget),
                 "seed": None if seed is None else int(seed), "repetitions": int(repetitions),
                 "settings": normalize(dict(settings or {})),
                 "objective_direction": objective_direction}
        return self._get_or_create(Study, {"key": content_hash(ident)}, ident)

    def get_study(self, study: Study | int) -> Study:
        with self._session() as s:
            return _must(s.get(Study, _id(study)), "study", study)

    def delete_study(self, study: Study | int) -> None:
        """Delete a study with its trials and samples (configurations stay)."""
        sid = _id(study)
        with self._session() as s:
            trial_ids = select(Trial.id).where(Trial.study_id == sid)
            s.execute(delete(Sample).where(Sample.trial_id.in_(trial_ids)))
            s.execute(delete(Trial).where(Trial.study_id == sid))
            s.execute(delete(Study).where(Study.id == sid))
            s.commit()

    # ------------------------------------------------------------------ trials

    def plan_trials(self, study: Study | int,
                    plan: Iterable[Mapping[str, Any] | tuple[Mapping[str, Any], int]]
                    ) -> list[int]:
        """Record the study's plan: item *i* (knobs, or ``(knobs, repetition)``) becomes the
        pending trial with ordinal *i*. Idempotent: trials already planned are kept as they are
        (whatever their status); a different configuration at an existing ordinal raises
        :class:`~ptmt.db.errors.StudyPlanMismatch`. Two processes planning the same new ordinals
        at once (an adaptive study's next round) agree: the second insert fails on the unique
        ordinal and is checked against the first's instead. Returns the trial ids in plan order."""
        sid = _id(study)
        items: list[tuple[dict[str, Any], int]] = []
        for item in plan:
            knobs, rep = item if isinstance(item, tuple) else (item, 0)
            items.append((normalize(dict(knobs)), int(rep)))
        hashes = [config_hash(k) for k, _ in items]
        config_ids: dict[str, int] = {}
        for h, (knobs, _) in zip(hashes, items, strict=True):
            if h not in config_ids:
                config_ids[h] = self.configuration(knobs).id
        with self._session() as s:
            for attempt in range(2):
                existing = {o: (c, r, i) for o, c, r, i in s.execute(
                    select(Trial.ordinal, Trial.configuration_id, Trial.repetition, Trial.id)
                    .where(Trial.study_id == sid))}
                new_rows = []
                for ordinal, (h, (_, rep)) in enumerate(zip(hashes, items, strict=True)):
                    cid = config_ids[h]
                    if ordinal in existing:
                        if existing[ordinal][:2] != (cid, rep):
                            raise StudyPlanMismatch(
                                f"study {sid}: trial #{ordinal} was planned with configuration "
                                f"{existing[ordinal][0]} repetition {existing[ordinal][1]}, now "
                                f"{cid} repetition {rep}; the sampler or its seed changed")
                        continue
                    new_rows.append({"study_id": sid, "ordinal": ordinal, "configuration_id": cid,
                                     "repetition": rep, "status": TrialStatus.PENDING.value,
                                     "attempts": 0, "created_at": utcnow()})
                try:
                    if new_rows:
                        s.execute(insert(Trial), new_rows)
                    s.commit()
                    break
                except IntegrityError:
                    # another process planned the same ordinals at this very moment (an adaptive
                    # study's next round): check the plan against theirs instead
                    s.rollback()
                    if attempt:
                        raise
            ids = {o: i for o, i in s.execute(select(Trial.ordinal, Trial.id)
                                              .where(Trial.study_id == sid))}
        return [ids[o] for o in range(len(items))]

    def get_trial(self, trial: Trial | int) -> Trial:
        with self._session() as s:
            return _must(s.get(Trial, _id(trial)), "trial", trial)

    def trials(self, study: Study | int, status: TrialStatus | str | None = None) -> list[Trial]:
        """The study's trials in plan order, optionally only those with *status*."""
        q = select(Trial).where(Trial.study_id == _id(study)).order_by(Trial.ordinal)
        if status is not None:
            q = q.where(Trial.status == _status(status))
        with self._session() as s:
            return list(s.scalars(q).unique())

    def claim_trial(self, study: Study | int, *, worker: str | None = None,
                    host: Host | int | None = None) -> Trial | None:
        """Atomically take the first pending trial of the study and mark it running; None when
        nothing is pending. Safe with many processes on many machines: PostgreSQL and other
        servers use ``SELECT ... FOR UPDATE SKIP LOCKED``, SQLite one ``UPDATE ... RETURNING``."""
        sid = _id(study)
        now = utcnow()
        values = {"status": TrialStatus.RUNNING.value, "worker": worker, "host_id": _opt_id(host),
                  "started_at": now, "heartbeat_at": now, "ended_at": None,
                  "attempts": Trial.attempts + 1, "objective": None, "objective_unit": None,
                  "error": None}
        pending = (select(Trial.id)
                   .where(Trial.study_id == sid, Trial.status == TrialStatus.PENDING.value)
                   .order_by(Trial.ordinal).limit(1))
        for _ in range(1000):
            with self._session() as s:
                if self.dialect == "sqlite":
                    stmt = (update(Trial)
                            .where(Trial.id == pending.scalar_subquery(),
                                   Trial.status == TrialStatus.PENDING.value)
                            .values(**values).returning(Trial.id)
                            .execution_options(synchronize_session=False))
                    tid = s.execute(stmt).scalar_one_or_none()
                    s.commit()
                    if tid is None:
                        return None
                else:
                    tid = s.execute(pending.with_for_update(skip_locked=True)).scalar_one_or_none()
                    if tid is None:
                        s.rollback()
                        return None
                    res = s.execute(update(Trial)
                                    .where(Trial.id == tid,
                                           Trial.status == TrialStatus.PENDING.value)
                                    .values(**values)
                                    .execution_options(synchronize_session=False))
                    if res.rowcount != 1:  # taken between our SELECT and UPDATE: try the next
                        s.rollback()
                        continue
                    s.commit()
            return self.get_trial(tid)
        raise DatabaseError(f"study {sid}: could not claim a trial (too much contention)")

    def start_trial(self, trial: Trial | int, *, worker: str | None = None,
                    host: Host | int | None = None) -> bool:
        """Mark one specific pending trial running (single-process use); False if not pending."""
        now = utcnow()
        return self._transition(trial, (TrialStatus.PENDING,), TrialStatus.RUNNING,
                                worker=worker, host_id=_opt_id(host), started_at=now,
                                heartbeat_at=now, ended_at=None, attempts=Trial.attempts + 1)

    def heartbeat(self, trial: Trial | int) -> bool:
        """Note that the running trial's worker is alive; False if the trial is not running."""
        return self._transition(trial, (TrialStatus.RUNNING,), TrialStatus.RUNNING,
                                heartbeat_at=utcnow())

    def finish_trial(self, trial: Trial | int, *, objective: float | None,
                     unit: str | None = None) -> bool:
        """Running → done with the trial's objective value. False if it was not running (e.g.
        re-queued meanwhile as stale)."""
        return self._transition(trial, (TrialStatus.RUNNING,), TrialStatus.DONE,
                                objective=_float(objective), objective_unit=unit,
                                ended_at=utcnow(), heartbeat_at=utcnow())

    def fail_trial(self, trial: Trial | int, error: str, *, max_error_chars: int = 8000) -> bool:
        """Running → failed, with an error text (its tail is kept when longer than the limit)."""
        if len(error) > max_error_chars:
            error = "…" + error[-(max_error_chars - 1):]
        return self._transition(trial, (TrialStatus.RUNNING,), TrialStatus.FAILED,
                                error=error, ended_at=utcnow())

    def interrupt_trial(self, trial: Trial | int, reason: str | None = None) -> bool:
        """Running → interrupted (Ctrl-C, SIGTERM); ``requeue`` makes it pending again."""
        return self._transition(trial, (TrialStatus.RUNNING,), TrialStatus.INTERRUPTED,
                                error=reason, ended_at=utcnow())

    def _transition(self, trial: Trial | int, from_: Sequence[TrialStatus], to: TrialStatus,
                    **values: Any) -> bool:
        with self._session() as s:
            res = s.execute(update(Trial)
                            .where(Trial.id == _id(trial),
                                   Trial.status.in_([f.value for f in from_]))
                            .values(status=to.value, **values)
                            .execution_options(synchronize_session=False))
            s.commit()
            return res.rowcount == 1

    def requeue(self, study: Study | int, *,
                statuses: Iterable[TrialStatus | str] = (TrialStatus.INTERRUPTED,),
                stale_after_s: float | None = None) -> int:
        """Make trials pending again and drop their samples; returns how many.

        *statuses*: which settled trials to redo (interrupted by default; add ``"failed"`` to
        retry failures). *stale_after_s*: also running trials whose worker has not sent a
        heartbeat for that many seconds (a dead fleet worker).
        """
        sid = _id(study)
        states = [_status(x) for x in statuses]
        if TrialStatus.RUNNING.value in states:
            raise ValueError("re-queue running trials through stale_after_s, not statuses")
        cond = Trial.status.in_(states)
        if stale_after_s is not None:
            cutoff = utcnow() - timedelta(seconds=stale_after_s)
            stale = (Trial.status == TrialStatus.RUNNING.value) & (
                (Trial.heartbeat_at < cutoff) | Trial.heartbeat_at.is_(None))
            cond = cond | stale
        with self._session() as s:
            q = select(Trial.id).where(Trial.study_id == sid, cond)
            if self.dialect != "sqlite":
                q = q.with_for_update(skip_locked=True)
            ids = list(s.scalars(q))
            if ids:
                s.execute(delete(Sample).where(Sample.trial_id.in_(ids)))
                s.execute(update(Trial).where(Trial.id.in_(ids), cond)
                          .values(status=TrialStatus.PENDING.value, worker=None, host_id=None,
                                  started_at=None, ended_at=None, heartbeat_at=None,
                                  objective=None, objective_unit=None, error=None)
                          .execution_options(synchronize_session=False))
            s.commit()
        return len(ids)

    def progress(self, study: Study | int) -> dict[str, int]:
        """Trial counts by status (every status present, zeros included)."""
        counts = {s.value: 0 for s in TrialStatus}
        with self._session() as s:
            for status, n in s.execute(select(Trial.status, func.count())
                                       .where(Trial.study_id == _id(study))
                                       .group_by(Trial.status)):
                counts[status] = n
        return counts

    # ------------------------------------------------------------------ samples

    def add_samples(self, trial: Trial | int, samples: Iterable[Mapping[str, Any]]) -> int:
        """Store per-interval telemetry of a trial: mappings with ``seq`` (interval number),
        ``t_s`` (seconds since the trial started, at the interval's end), ``dt_s`` (interval
        length), ``counters`` (deltas under the kernel's counter names) and optionally
        ``objective``. Returns how many rows were written."""
        tid = _id(trial)
        rows = []
        for smp in samples:
            rows.append({"trial_id": tid, "seq": int(smp["seq"]), "t_s": float(smp["t_s"]),
                         "dt_s": float(smp["dt_s"]), "objective": _float(smp.get("objective")),
                         "counters": normalize(dict(smp.get("counters") or {}))})
        if rows:
            with self._session() as s:
                s.execute(insert(Sample), rows)
                s.commit()
        return len(rows)

    # ------------------------------------------------------------------ DataFrames

    def studies_frame(self) -> pd.DataFrame:
        """One row per study with its backend, workload, host and trial counts by status."""
        counts = (select(Trial.study_id, Trial.status, func.count().label("n"))
                  .group_by(Trial.study_id, Trial.status))
        with self._session() as s:
            studies = list(s.scalars(select(Study).order_by(Study.id)).unique())
            by_study: dict[int, dict[str, int]] = {}
            for sid, status, n in s.execute(counts):
                by_study.setdefault(sid, {})[status] = n
        records = []
        for st in studies:
            rec = {"study_id": st.id, "backend": st.backend.name,
                   "catalog_hash": st.backend.catalog_hash, "workload": st.workload.name,
                   "host": st.host.hostname if st.host else None, "strategy": st.strategy,
                   "budget": st.budget, "seed": st.seed, "repetitions": st.repetitions,
                   "objective_direction": st.objective_direction, "created_at": st.created_at}
            for status in TrialStatus:
                rec[status.value] = by_study.get(st.id, {}).get(status.value, 0)
            records.append(rec)
        cols = ["study_id", "backend", "catalog_hash", "workload", "host", "strategy", "budget",
                "seed", "repetitions", "objective_direction", "created_at",
                *[s.value for s in TrialStatus]]
        return pd.DataFrame.from_records(records, columns=cols)

    def trials_frame(self, study: Study | int | None = None, *, backend: str | None = None,
                     workload: str | None = None, hostname: str | None = None,
                     status: TrialStatus | str | Iterable[TrialStatus | str] | None = None,
                     knob_prefix: str = "knob.") -> pd.DataFrame:
        """Trials as a DataFrame, one row each, knob values flattened into columns named
        ``knob_prefix + knob`` (nested values: ``knob.a.b``). Filters: a study, or a backend /
        workload / host name across studies, and statuses. Columns: :data:`TRIAL_COLUMNS`,
        then the knobs (sorted)."""
        ran_on = aliased(Host)
        q = (select(Trial.id, Trial.study_id, Trial.ordinal, Trial.repetition, Trial.status,
                    Trial.attempts, Trial.objective, Trial.objective_unit, Trial.error,
                    Trial.started_at, Trial.ended_at, Trial.worker, ran_on.hostname,
                    Backend.name, Workload.name, Study.strategy, Trial.configuration_id,
                    Configuration.hash, Configuration.knobs)
             .join(Study, Trial.study_id == Study.id)
             .join(Backend, Study.backend_id == Backend.id)
             .join(Workload, Study.workload_id == Workload.id)
             .join(Configuration, Trial.configuration_id == Configuration.id)
             .outerjoin(ran_on, Trial.host_id == ran_on.id)
             .order_by(Trial.study_id, Trial.ordinal))
        if study is not None:
            q = q.where(Trial.study_id == _id(study))
        if backend is not None:
            q = q.where(Backend.name == backend)
        if workload is not None:
            q = q.where(Workload.name == workload)
        if hostname is not None:
            q = q.where(ran_on.hostname == hostname)
        if status is not None:
            wanted = [status] if isinstance(status, (str, TrialStatus)) else list(status)
            q = q.where(Trial.status.in_([_status(x) for x in wanted]))
        with self._read() as c:
            rows = c.execute(q).all()
        base_cols = [c for c in TRIAL_COLUMNS if c != "duration_s"]
        frame = pd.DataFrame.from_records([r[:-1] for r in rows], columns=base_cols)
        frame.insert(TRIAL_COLUMNS.index("duration_s"), "duration_s",
                     (pd.to_datetime(frame["ended_at"], utc=True)
                      - pd.to_datetime(frame["started_at"], utc=True)).dt.total_seconds()
                     if len(frame) else pd.Series(dtype=float))
        for col in ("started_at", "ended_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        if rows:
            knobs = pd.json_normalize([r[-1] for r in rows], sep=".")
            knobs = knobs.reindex(sorted(knobs.columns), axis=1)
            knobs.columns = [knob_prefix + c for c in knobs.columns]
            frame = pd.concat([frame, knobs.set_index(frame.index)], axis=1)
        return frame

    def samples_frame(self, trial: Trial | int | None = None, *,
                      study: Study | int | None = None,
                      counter_prefix: str = "") -> pd.DataFrame:
        """Samples of a trial or of a whole study, one row per interval: :data:`SAMPLE_COLUMNS`
        then one column per counter (``counter_prefix + name``; missing counters are NaN)."""
        if trial is None and study is None:
            raise ValueError("give a trial or a study")
        q = (select(Sample.trial_id, Trial.study_id, Sample.seq, Sample.t_s, Sample.dt_s,
                    Sample.objective, Sample.counters)
             .join(Trial, Sample.trial_id == Trial.id)
             .order_by(Sample.trial_id, Sample.seq))
        if trial is not None:
            q = q.where(Sample.trial_id == _id(trial))
        if study is not None:
            q = q.where(Trial.study_id == _id(study))
        with self._read() as c:
            rows = c.execute(q).all()
        frame = pd.DataFrame.from_records([r[:-1] for r in rows], columns=SAMPLE_COLUMNS)
        if rows:
            counters = pd.DataFrame.from_records([r[-1] for r in rows], index=frame.index)
            counters = counters.reindex(sorted(counters.columns), axis=1)
            counters.columns = [counter_prefix + str(c) for c in counters.columns]
            clash = set(counters.columns) & set(SAMPLE_COLUMNS)
            if clash:
                counters = counters.rename(columns={c: f"counter.{c}" for c in clash})
            frame = pd.concat([frame, counters], axis=1)
        return frame

    # ------------------------------------------------------------------ online tuning runs

    def _configuration_ids(self, by_hash: Mapping[str, dict[str, Any]]) -> dict[str, int]:
        """Ids of these configurations (hash -> canonical knobs), created when missing."""
        with self._read() as c:
            found = {h: i for h, i in c.execute(
                select(Configuration.hash, Configuration.id)
                .where(Configuration.hash.in_(list(by_hash))))}
        for h, knobs in by_hash.items():
            if h not in found:
                found[h] = self.configuration(knobs).id
        return found

    def _run_id(self, run: TuningRun | int | str) -> int:
        """The id of a run given as a row, an id or its token."""
        if not isinstance(run, str):
            return _id(run)
        with self._read() as c:
            rid = c.execute(select(TuningRun.id).where(TuningRun.token == run)).scalar()
        if rid is None:
            raise DatabaseError(f"no tuning run with token {run}")
        return int(rid)

    def _run_ids(self, runs: TuningRun | int | str | Iterable[TuningRun | int | str]) -> list[int]:
        if isinstance(runs, (TuningRun, int, str)):
            return [self._run_id(runs)]
        return [self._run_id(r) for r in runs]

    def _insert_new(self, model: type[Any], keys: list[str]) -> Insert:
        """An INSERT that skips rows whose *keys* are already stored (a resend after a lost
        acknowledgement), race-free where the dialect has ``ON CONFLICT DO NOTHING``."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(model).on_conflict_do_nothing(index_elements=keys)
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(model).on_conflict_do_nothing(index_elements=keys)
        return insert(model)

    def start_tuning_run(self, backend: Backend | int, host: Host | int, *, platform: str,
                         objective_name: str, objective_unit: str | None = None,
                         mode: TuningMode | str = TuningMode.TUNE,
                         workload: str | None = None, settings: Mapping[str, Any] | None = None,
                         start_config: Mapping[str, Any] | None = None,
                         seed: int | None = None, label: str | None = None,
                         ptmt_version: str | None = None, token: str | None = None,
                         started_at: datetime | None = None) -> TuningRun:
        """Record that an online tuning run started; returns its row (``.id``, ``.token``).

        Idempotent by *token* (a random one when None): a client that could not tell whether its
        first attempt arrived sends the same token again and gets the same run, so a recorder
        can also create the run late, after an outage, with the *started_at* it noted.
        """
        import uuid

        from ptmt import __version__

        values: dict[str, Any] = {
            "backend_id": _id(backend), "host_id": _id(host), "workload": workload,
            "platform": platform, "mode": _run_mode(mode), "objective_name": objective_name,
            "objective_unit": objective_unit, "settings": _lenient_json(dict(settings or {})),
            "start_configuration_id": (self.configuration(start_config).id
                                       if start_config is not None else None),
            "status": RunStatus.RUNNING.value, "started_at": started_at or utcnow(),
            "ptmt_version": ptmt_version or __version__,
            "seed": None if seed is None else int(seed), "label": label}
        row, _ = self._get_or_create(TuningRun, {"token": token or uuid.uuid4().hex}, values)
        return row

    def get_tuning_run(self, run: TuningRun | int | str) -> TuningRun:
        rid = self._run_id(run)
        with self._session() as s:
            return _must(s.get(TuningRun, rid), "tuning run", rid)

    def set_tuning_start_config(self, run: TuningRun | int | str,
                                config: Mapping[str, Any]) -> bool:
        """Record the run's starting configuration if it is not known yet (a recorder learns it
        from the first interval); False when one was already recorded."""
        cid = self.configuration(config).id
        with self._session() as s:
            res = s.execute(update(TuningRun)
                            .where(TuningRun.id == self._run_id(run),
                                   TuningRun.start_configuration_id.is_(None))
                            .values(start_configuration_id=cid)
                            .execution_options(synchronize_session=False))
            s.commit()
            return res.rowcount == 1

    def add_tuning_intervals(self, run: TuningRun | int | str,
                             rows: Iterable[Mapping[str, Any]]) -> int:
        """Store intervals of a run: the tuner's rows (``seq``, ``t_s``, ``objective``,
        ``baseline``, ``config``, ``phase``, ``fingerprint``, ``counters``). Rows whose ``seq``
        is already stored are skipped (first write wins), so resending after a reconnect is
        harmless. NaN objectives and JSON values are stored as NULL. Returns how many were new."""
        rid = self._run_id(run)
        by_seq: dict[int, tuple[str, dict[str, Any]]] = {}
        configs: dict[str, dict[str, Any]] = {}
        for row in rows:
            seq = int(row["seq"])
            if seq in by_seq:
                continue
            knobs = normalize(dict(row["config"]))
            digest = config_hash(knobs)
            configs[digest] = knobs
            fp, counters = row.get("fingerprint"), row.get("counters")
            by_seq[seq] = (digest, {
                "run_id": rid, "seq": seq, "t_s": float(row["t_s"]),
                "objective": _finite(row.get("objective")),
                "baseline": _finite(row.get("baseline")), "phase": int(row.get("phase") or 0),
                "fingerprint": None if fp is None else _lenient_json(dict(fp)),
                "counters": None if counters is None else _lenient_json(dict(counters))})
        if not by_seq:
            return 0
        ids = self._configuration_ids(configs)
        with self._session() as s:
            stored = set(s.scalars(select(TuningInterval.seq).where(
                TuningInterval.run_id == rid, TuningInterval.seq >= min(by_seq),
                TuningInterval.seq <= max(by_seq))))
            new = [{**values, "configuration_id": ids[digest]}
                   for seq, (digest, values) in sorted(by_seq.items()) if seq not in stored]
            if new:
                s.execute(self._insert_new(TuningInterval, ["run_id", "seq"]), new)
            s.commit()
        return len(new)

    def add_tuning_events(self, run: TuningRun | int | str,
                          events: Iterable[Mapping[str, Any]]) -> int:
        """Store events of a run: the tuner's events (``n``, ``seq``, ``t_s``, ``kind``,
        ``reason``, ``knob``, ``old``, ``new``, ``details``) each with an ``ordinal``, its place in
        the run's event sequence (the tuner's ``n`` is shared by the knobs of one change, so it
        cannot identify an event). Ordinals already stored are skipped. Returns how many were new.
        """
        rid = self._run_id(run)
        by_ordinal: dict[int, dict[str, Any]] = {}
        for ev in events:
            if "ordinal" not in ev:
                raise ValueError("tuning events need an 'ordinal' (their place in the run), "
                                 "so that a resend can be recognised")
            ordinal = int(ev["ordinal"])
            if ordinal in by_ordinal:
                continue
            details = ev.get("details")
            by_ordinal[ordinal] = {
                "run_id": rid, "ordinal": ordinal, "n": int(ev["n"]), "seq": int(ev["seq"]),
                "t_s": float(ev["t_s"]), "kind": str(ev["kind"]), "reason": str(ev["reason"]),
                "knob": ev.get("knob"),
                "old": None if ev.get("old") is None else str(ev["old"]),
                "new": None if ev.get("new") is None else str(ev["new"]),
                "details": _lenient_json(dict(details)) if details else None}
        if not by_ordinal:
            return 0
        with self._session() as s:
            stored = set(s.scalars(select(TuningEvent.ordinal).where(
                TuningEvent.run_id == rid, TuningEvent.ordinal >= min(by_ordinal),
                TuningEvent.ordinal <= max(by_ordinal))))
            new = [v for o, v in sorted(by_ordinal.items()) if o not in stored]
            if new:
                s.execute(self._insert_new(TuningEvent, ["run_id", "ordinal"]), new)
            s.commit()
        return len(new)

    def finish_tuning_run(self, run: TuningRun | int | str, status: RunStatus | str,
                          final_config: Mapping[str, Any] | None = None,
                          summary: Mapping[str, Any] | None = None, *,
                          finished_at: datetime | None = None) -> bool:
        """Running → finished, failed or interrupted, with the configuration the run ended in and
        a summary (mean objective, changes, comparison with the defaults, ...). False when the
        run was not running any more (a resend of the same call after a reconnect)."""
        st = _run_status(status)
        if st == RunStatus.RUNNING.value:
            raise ValueError("finish_tuning_run needs a final status (finished, failed, "
                             "interrupted)")
        rid = self._run_id(run)
        values: dict[str, Any] = {"status": st, "finished_at": finished_at or utcnow()}
        if final_config is not None:
            values["final_configuration_id"] = self.configuration(final_config).id
        if summary is not None:
            values["summary"] = _lenient_json(dict(summary))
        with self._session() as s:
            res = s.execute(update(TuningRun)
                            .where(TuningRun.id == rid,
                                   TuningRun.status == RunStatus.RUNNING.value)
                            .values(**values)
                            .execution_options(synchronize_session=False))
            s.commit()
            return res.rowcount == 1

    def tuning_runs_frame(self, backend: str | None = None, *, workload: str | None = None,
                          hostname: str | None = None,
                          status: RunStatus | str | Iterable[RunStatus | str] | None = None,
                          mode: TuningMode | str | None = None, label: str | None = None,
                          ) -> pd.DataFrame:
        """Tuning runs, one row each, oldest first, with their interval and event counts and mean
        objective (columns :data:`TUNING_RUN_COLUMNS`; ``start_config``, ``final_config``,
        ``settings`` and ``summary`` hold dicts). Filters by backend, workload and host name,
        status, mode and label."""
        per_run = (select(TuningInterval.run_id.label("run_id"), func.count().label("n"),
                          func.avg(TuningInterval.objective).label("mean"))
                   .group_by(TuningInterval.run_id).subquery())
        per_run_ev = (select(TuningEvent.run_id.label("run_id"), func.count().label("n"))
                      .group_by(TuningEvent.run_id).subquery())
        start_cfg, final_cfg = aliased(Configuration), aliased(Configuration)
        q = (select(TuningRun.id, TuningRun.token, Backend.name, Backend.catalog_hash,
                    Host.hostname, TuningRun.host_id, Host.kernel, TuningRun.platform,
                    TuningRun.workload, TuningRun.mode,
                    TuningRun.status, TuningRun.objective_name, TuningRun.objective_unit,
                    TuningRun.started_at, TuningRun.finished_at, per_run.c.n, per_run_ev.c.n,
                    per_run.c.mean, TuningRun.ptmt_version, TuningRun.seed, TuningRun.label,
                    TuningRun.start_configuration_id, TuningRun.final_configuration_id,
                    start_cfg.knobs, final_cfg.knobs, TuningRun.settings, TuningRun.summary)
             .join(Backend, TuningRun.backend_id == Backend.id)
             .join(Host, TuningRun.host_id == Host.id)
             .outerjoin(per_run, per_run.c.run_id == TuningRun.id)
             .outerjoin(per_run_ev, per_run_ev.c.run_id == TuningRun.id)
             .outerjoin(start_cfg, TuningRun.start_configuration_id == start_cfg.id)
             .outerjoin(final_cfg, TuningRun.final_configuration_id == final_cfg.id)
             .order_by(TuningRun.started_at, TuningRun.id))
        if backend is not None:
            q = q.where(Backend.name == backend)
        if workload is not None:
            q = q.where(TuningRun.workload == workload)
        if hostname is not None:
            q = q.where(Host.hostname == hostname)
        if status is not None:
            wanted = [status] if isinstance(status, (str, RunStatus)) else list(status)
            q = q.where(TuningRun.status.in_([_run_status(x) for x in wanted]))
        if mode is not None:
            q = q.where(TuningRun.mode == _run_mode(mode))
        if label is not None:
            q = q.where(TuningRun.label == label)
        with self._read() as c:
            rows = c.execute(q).all()
        cols = [c for c in TUNING_RUN_COLUMNS if c != "duration_s"]
        frame = pd.DataFrame.from_records([tuple(r) for r in rows], columns=cols)
        for col in ("started_at", "finished_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True)
        frame.insert(TUNING_RUN_COLUMNS.index("duration_s"), "duration_s",
                     (frame["finished_at"] - frame["started_at"]).dt.total_seconds())
        for col in ("intervals", "events"):
            frame[col] = frame[col].fillna(0).astype(int)
        frame["mean_objective"] = frame["mean_objective"].astype(float)
        for col in ("host_id", "seed", "start_configuration_id", "final_configuration_id"):
            frame[col] = frame[col].astype("Int64")
        return frame

    def hosts_frame(self) -> pd.DataFrame:
        """Every registered host, one row each (:data:`HOST_COLUMNS`; ``topology``, ``tiers`` and
        ``info`` hold dicts): what the ``host_id`` of a run or trial was."""
        q = (select(Host.id, Host.hostname, Host.platform, Host.kernel, Host.arch, Host.topology,
                    Host.tiers, Host.perf_available, Host.info, Host.hash, Host.created_at)
             .order_by(Host.id))
        with self._read() as c:
            rows = c.execute(q).all()
        frame = pd.DataFrame.from_records([tuple(r) for r in rows], columns=HOST_COLUMNS)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        return frame

    def tuning_intervals_frame(self, run: TuningRun | int | str | Iterable[TuningRun | int | str],
                               *, knob_prefix: str = "knob.", fingerprint: bool = False,
                               counters: bool = False) -> pd.DataFrame:
        """Intervals of one run (or several), in order: :data:`TUNING_INTERVAL_COLUMNS`, then one
        column per knob of the interval's configuration (``knob_prefix + name``, sorted), then
        when asked the fingerprint features (``fp.<feature>``) and counters (``counter.<name>``),
        NaN where an interval lacks one."""
        q = (select(TuningInterval.run_id, TuningInterval.seq, TuningInterval.t_s,
                    TuningInterval.objective, TuningInterval.baseline, TuningInterval.phase,
                    TuningInterval.configuration_id, Configuration.hash, Configuration.knobs,
                    TuningInterval.fingerprint, TuningInterval.counters)
             .join(Configuration, TuningInterval.configuration_id == Configuration.id)
             .where(TuningInterval.run_id.in_(self._run_ids(run)))
             .order_by(TuningInterval.run_id, TuningInterval.seq))
        with self._read() as c:
            rows = c.execute(q).all()
        frame = pd.DataFrame.from_records([tuple(r[:8]) for r in rows],
                                          columns=TUNING_INTERVAL_COLUMNS)
        for col in ("objective", "baseline"):
            frame[col] = frame[col].astype(float)
        if rows:
            parts = [frame, _flat([r[8] for r in rows], knob_prefix, frame.index)]
            if fingerprint:
                parts.append(_numeric(_flat([r[9] for r in rows], "fp.", frame.index)))
            if counters:
                parts.append(_numeric(_flat([r[10] for r in rows], "counter.", frame.index)))
            frame = pd.concat(parts, axis=1)
        return frame

    def tuning_events_frame(self, run: TuningRun | int | str | Iterable[TuningRun | int | str]
                            ) -> pd.DataFrame:
        """Events of one run (or several) in the order they happened
        (:data:`TUNING_EVENT_COLUMNS`; ``details`` holds dicts or None)."""
        q = (select(TuningEvent.run_id, TuningEvent.ordinal, TuningEvent.n, TuningEvent.seq,
                    TuningEvent.t_s, TuningEvent.kind, TuningEvent.reason, TuningEvent.knob,
                    TuningEvent.old, TuningEvent.new, TuningEvent.details)
             .where(TuningEvent.run_id.in_(self._run_ids(run)))
             .order_by(TuningEvent.run_id, TuningEvent.ordinal))
        with self._read() as c:
            rows = c.execute(q).all()
        return pd.DataFrame.from_records([tuple(r) for r in rows], columns=TUNING_EVENT_COLUMNS)


def worker_id() -> str:
    """A name for this process in ``trials.worker``: ``hostname:pid``."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def open_storage(url: str | URL | None = None, *, create: bool = True,
                 echo: bool = False, timeout_s: float | None = None) -> Storage:
    """Open a PTMT database; see :meth:`Storage.open`."""
    return Storage.open(url, create=create, echo=echo, timeout_s=timeout_s)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _must(row: R | None, what: str, key: Any) -> R:
    if row is None:
        raise DatabaseError(f"no {what} {_id(key)}")
    return row


@contextmanager
def _wrap(url: URL, prefix: str) -> Iterator[None]:
    """Turn driver errors into DatabaseError with one line of reason and no password."""
    try:
        yield
    except DBAPIError as exc:
        orig = exc.orig if exc.orig is not None else exc
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        transient = isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated
        cls = DatabaseUnavailable if transient else DatabaseError
        raise cls(_engine.scrub(f"{prefix}: {first}", url)) from None


def _finite(value: Any) -> float | None:
    """A float, or None for a missing or non-finite one (an interval without a measurement)."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _lenient_json(value: Any) -> Any:
    """Canonical JSON with NaN and infinities as null: telemetry may lack a value, knobs may not."""
    try:
        return normalize(value)
    except ValueError:
        return normalize(_nonfinite_to_none(value))


def _nonfinite_to_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _nonfinite_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nonfinite_to_none(v) for v in value]
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        value = value.item()
    elif callable(getattr(value, "tolist", None)):
        return _nonfinite_to_none(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _run_mode(value: TuningMode | str) -> str:
    try:
        return TuningMode(value).value
    except ValueError:
        raise ValueError(f"mode must be one of {', '.join(m.value for m in TuningMode)} "
                         f"(got {value!r})") from None


def _run_status(value: RunStatus | str) -> str:
    try:
        return RunStatus(value).value
    except ValueError:
        raise ValueError(f"status must be one of {', '.join(s.value for s in RunStatus)} "
                         f"(got {value!r})") from None


def _flat(records: list[Any], prefix: str, index: pd.Index) -> pd.DataFrame:
    """Nested mappings as sorted, prefixed columns (``prefix + a.b``); None counts as empty."""
    flat = pd.json_normalize([r or {} for r in records], sep=".")
    flat = flat.reindex(sorted(flat.columns), axis=1)
    flat.columns = [prefix + str(c) for c in flat.columns]
    return flat.set_index(index)


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Measurement columns as numbers, NaN where a value was missing (stored as null)."""
    for col in frame.columns:
        try:
            frame[col] = pd.to_numeric(frame[col])
        except (TypeError, ValueError):
            pass  # a non-numeric feature or counter stays as it is
    return frame

