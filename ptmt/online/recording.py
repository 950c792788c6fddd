"""Recorders of online tuning runs: into the performance database, or into lists.

:class:`DbRecorder` is what ``ptmt tune --db URL`` uses: every interval and every event of the
run goes into ``tuning_intervals`` / ``tuning_events`` (``docs/database.md``), written in small
batches from the tuning loop. The database is never a reason to stop tuning: when it cannot be
reached (server down, connection lost, file locked), rows wait in memory — up to
``max_buffered``, beyond which the oldest are dropped and counted — one warning says so, writes
are retried every ``retry_s`` seconds, and one message says how many rows were written late once
it is back. Writes are idempotent by (run, seq) and (run, ordinal), so a batch whose
acknowledgement was lost is simply sent again, and the run itself is created by its client-made
token, even late.

:class:`ListRecorder` keeps everything in lists (tests, ``--json``).
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import URL
from sqlalchemy.exc import SQLAlchemyError

from ptmt.db.engine import mask, resolve_url, scrub
from ptmt.db.errors import DatabaseError
from ptmt.db.models import Backend, Host, RunStatus, TuningMode, utcnow
from ptmt.db.storage import DatabaseUnavailable, Storage

log = logging.getLogger("ptmt.tune")

#: Errors that mean "cannot write now": retried later, never raised into the tuning loop.
_WRITE_ERRORS = (DatabaseError, SQLAlchemyError, OSError)


class ListRecorder:
    """Keeps a run's intervals and events in memory, in the shape the database stores them."""

    def __init__(self) -> None:
        self.intervals: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.status: str | None = None
        self.final_config: dict[str, Any] | None = None
        self.summary: dict[str, Any] | None = None

    def start(self) -> None:
        self.status = RunStatus.RUNNING.value

    def interval(self, row: Mapping[str, Any]) -> None:
        self.intervals.append(dict(row))

    def event(self, event: Mapping[str, Any]) -> None:
        self.events.append({**event, "ordinal": len(self.events)})

    def close(self, status: RunStatus | str = RunStatus.FINISHED,
              final_config: Mapping[str, Any] | None = None,
              summary: Mapping[str, Any] | None = None) -> bool:
        self.status = RunStatus(status).value
        self.final_config = None if final_config is None else dict(final_config)
        self.summary = None if summary is None else dict(summary)
        return True


class DbRecorder:
    """Records one tuning run into the performance database (see the module docstring).

    *db* is an open :class:`Storage` (left open at the end) or a URL (``None``: ``$PTMT_DB`` or
    the default file), opened at :meth:`start` with connection and lock waits bounded by
    *timeout_s* and closed by :meth:`close`. *host* is a registered host (row or id) or the
    keyword arguments of :meth:`Storage.register_host`; *backend* a registered backend or its
    name, with *catalog_hash* (and optionally the *catalog* snapshot). The remaining run metadata
    are those of :meth:`Storage.start_tuning_run`; *start_config* defaults to the configuration
    of the first interval.

    Rows are written when *batch_size* are waiting or the oldest has waited *flush_s* seconds.
    Not thread-safe: call it from the tuning loop only.
    """

    def __init__(self, db: Storage | str | URL | None, *, backend: str | Backend | int,
                 host: Mapping[str, Any] | Host | int, platform: str, objective_name: str,
                 objective_unit: str | None = None, catalog_hash: str | None = None,
                 catalog: Mapping[str, Any] | None = None, mode: TuningMode | str = TuningMode.TUNE,
                 workload: str | None = None, settings: Mapping[str, Any] | None = None,
                 start_config: Mapping[str, Any] | None = None, seed: int | None = None,
                 label: str | None = None, token: str | None = None, batch_size: int = 20,
                 flush_s: float = 5.0, retry_s: float = 15.0, max_buffered: int = 100_000,
                 timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(backend, str) and not catalog_hash:
            raise ValueError("a backend given by name needs its catalog_hash")
        if batch_size < 1 or max_buffered < 1:
            raise ValueError("batch_size and max_buffered must be at least 1")
        self._db: Storage | None = db if isinstance(db, Storage) else None
        self._owns_db = self._db is None
        self._url = None if isinstance(db, Storage) else db
        self._backend, self._catalog_hash, self._catalog = backend, catalog_hash, catalog
        self._host = host
        self._run_args: dict[str, Any] = {
            "platform": platform, "objective_name": objective_name,
            "objective_unit": objective_unit, "mode": TuningMode(mode).value,
            "workload": workload, "settings": dict(settings or {}), "seed": seed, "label": label}
        self._start_config = None if start_config is None else dict(start_config)
        self._start_config_sent = start_config is not None
        self.token = token or uuid.uuid4().hex
        self.batch_size, self.flush_s, self.retry_s = batch_size, flush_s, retry_s
        self.max_buffered, self.timeout_s, self._clock = max_buffered, timeout_s, clock
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._oldest_at = 0.0
        self._ordinal = 0
        self._seen_interval = False
        self.run_id: int | None = None
        self.started_at: datetime | None = None
        self.written = {"intervals": 0, "events": 0}
        self.dropped = {"intervals": 0, "events": 0}
        self._down = False
        self._retry_at = 0.0
        self._late = {"intervals": 0, "events": 0}
        self._dropped_in_outage = 0
        self._closed = False

    # ------------------------------------------------------------------ state

    @property
    def pending(self) -> int:
        """Rows received but not written yet."""
        return len(self._pending)

    @property
    def unavailable(self) -> bool:
        """Whether the database is currently considered unreachable."""
        return self._down

    @property
    def url(self) -> str:
        """The database URL, password masked."""
        if self._db is not None:
            return self._db.url
        try:
            return mask(resolve_url(self._url))
        except DatabaseError:
            return "<invalid database URL>"

    # ------------------------------------------------------------------ the Recorder protocol

    def start(self, *, require_db: bool = True) -> None:
        """Create the run. With *require_db* an unreachable database raises here, before any knob
        is touched (a mistyped ``--db``); without, tuning starts anyway and the run is created
        when the database comes back. A database with the wrong schema always raises."""
        if self.started_at is not None:
            return
        self.started_at = utcnow()
        try:
            self._ensure_run()
        except DatabaseUnavailable as exc:
            if require_db:
                self.started_at = None
                self._release()
                raise
            self._went_down(exc)
        except BaseException:
            self.started_at = None
            self._release()
            raise

    def interval(self, row: Mapping[str, Any]) -> None:
        self._check_open()
        if not self._seen_interval:
            self._seen_interval = True
            if self._start_config is None:
                self._start_config = dict(row["config"])
        self._push("intervals", dict(row))
        self._maybe_flush()

    def event(self, event: Mapping[str, Any]) -> None:
        self._check_open()
        self._push("events", {**event, "ordinal": self._ordinal})
        self._ordinal += 1
        self._maybe_flush()

    def flush(self, wait_s: float = 0.0) -> bool:
        """Write everything waiting now, retrying for up to *wait_s* seconds while the database is
        unreachable; True when nothing is left unwritten."""
        self._check_started()
        deadline = time.monotonic() + wait_s
        while not self._write():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(max(self.retry_s, 0.05), left))
        return True

    def close(self, status: RunStatus | str = RunStatus.FINISHED,
              final_config: Mapping[str, Any] | None = None,
              summary: Mapping[str, Any] | None = None, *, wait_s: float = 0.0) -> bool:
        """Write what is waiting and mark the run finished, failed or interrupted; True when the
        whole run is in the database. Never raises for the database: what could not be written
        is counted in one warning (retrying for up to *wait_s* seconds first)."""
        st = RunStatus(status).value
        if st == RunStatus.RUNNING.value:
            raise ValueError("close needs a final status (finished, failed, interrupted)")
        self._check_started()
        if self._closed:
            return not self._pending
        self._closed = True
        finished_at = utcnow()
        try:
            ok = self.flush(wait_s)
            if ok:
                try:
                    assert self._db is not None and self.run_id is not None
                    self._db.finish_tuning_run(self.run_id, st, final_config, summary,
                                               finished_at=finished_at)
                except _WRITE_ERRORS as exc:
                    ok = False
                    log.warning("could not mark tuning run %s %s in the database (%s)",
                                self.token, st, self._reason(exc))
            else:
                kinds = {k: sum(1 for kind, _ in self._pending if kind == k)
                         for k in ("intervals", "events")}
                log.warning("the database %s is still unreachable: %d rows of tuning run %s were "
                            "not recorded (%d intervals, %d events)", self.url, len(self._pending),
                            self.token, kinds["intervals"], kinds["events"])
            return ok
        finally:
            self._release()

    def __enter__(self) -> DbRecorder:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._closed or self.started_at is None:
            return
        if exc_type is None:
            self.close(RunStatus.FINISHED)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close(RunStatus.INTERRUPTED)
        else:
            self.close(RunStatus.FAILED)

    # ------------------------------------------------------------------ internals

    def _release(self) -> None:
        """Close the database if this recorder opened it."""
        if self._owns_db and self._db is not None:
            self._db.close()
            self._db = None

    def _check_started(self) -> None:
        if self.started_at is None:
            raise RuntimeError("DbRecorder.start() was not called")

    def _check_open(self) -> None:
        self._check_started()
        if self._closed:
            raise RuntimeError(f"the recorder of tuning run {self.token} is closed")

    def _push(self, kind: str, payload: dict[str, Any]) -> None:
        if not self._pending:
            self._oldest_at = self._clock()
        self._pending.append((kind, payload))
        while len(self._pending) > self.max_buffered:  # keep the newest: they matter most now
            old_kind, _ = self._pending.popleft()
            self.dropped[old_kind] += 1
            self._dropped_in_outage += 1

    def _maybe_flush(self) -> None:
        now = self._clock()
        if self._down:
            if now >= self._retry_at:
                self._write()
        elif len(self._pending) >= self.batch_size or now - self._oldest_at >= self.flush_s:
            self._write()

    def _ensure_run(self) -> None:
        """Open the database and create the run, as far as not done yet (retried after errors)."""
        if self._db is None:
            self._db = Storage.open(self._url, timeout_s=self.timeout_s)
        db = self._db
        if self.run_id is None:
            host = self._host
            if isinstance(host, Mapping):
                host = db.register_host(**host)
            backend = self._backend
            if isinstance(backend, str):
                assert self._catalog_hash is not None
                backend = db.register_backend(backend, self._catalog_hash, self._catalog)
            run = db.start_tuning_run(backend, host, token=self.token, started_at=self.started_at,
                                      start_config=self._start_config, **self._run_args)
            self.run_id = run.id
            self._start_config_sent = self._start_config is not None
        if not self._start_config_sent and self._start_config is not None:
            db.set_tuning_start_config(self.run_id, self._start_config)
            self._start_config_sent = True

    def _write(self) -> bool:
        """Send everything waiting, in batches; False (and outage bookkeeping) on failure."""
        try:
            self._ensure_run()
            assert self._db is not None and self.run_id is not None
            chunk_size = max(self.batch_size, 500) if self._down else self.batch_size
            while self._pending:
                chunk = list(itertools.islice(self._pending, chunk_size))
                rows = [p for k, p in chunk if k == "intervals"]
                events = [p for k, p in chunk if k == "events"]
                if rows:
                    self._db.add_tuning_intervals(self.run_id, rows)
                if events:
                    self._db.add_tuning_events(self.run_id, events)
                for _ in chunk:
                    self._pending.popleft()
                for kind, count in (("intervals", len(rows)), ("events", len(events))):
                    self.written[kind] += count
                    if self._down:
                        self._late[kind] += count
        except _WRITE_ERRORS as exc:
            self._went_down(exc)
            return False
        if self._down:
            self._came_back()
        return True

    def _went_down(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + self.retry_s
        if self._down:
            return
        self._down = True
        self._late = {"intervals": 0, "events": 0}
        self._dropped_in_outage = 0
        log.warning("cannot record to the database (%s); tuning goes on, keeping up to %d rows "
                    "in memory until it is back", self._reason(exc), self.max_buffered)

    def _came_back(self) -> None:
        self._down = False
        late = self._late["intervals"] + self._late["events"]
        message = (f"the database {self.url} is back: wrote {late} rows late "
                   f"({self._late['intervals']} intervals, {self._late['events']} events)")
        if self._dropped_in_outage:
            log.warning("%s; dropped the %d oldest rows beyond the %d-row buffer", message,
                        self._dropped_in_outage, self.max_buffered)
        else:
            log.info("%s", message)

    def _reason(self, exc: BaseException) -> str:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, DatabaseError):
            return first  # already one password-free line naming the masked URL
        url = getattr(getattr(self._db, "engine", None), "url", None)
        return f"{self.url}: {scrub(first, url)}"


def open_recorder(db: Storage | str | URL | None, catalog: Any, host: Any, *, platform: str, mode: str,
                  objective_name: str = "sim", objective_unit: str | None = "ops/s",
                  workload: str | None = None, settings: Mapping[str, Any] | None = None,
                  seed: int | None = None, label: str | None = None) -> DbRecorder:
    """A started :class:`DbRecorder` for one run of *catalog*'s backend on *host* (a host object,
    described with :func:`ptmt.sysinfo.host_identity`), raising if the database cannot be reached."""
    from ptmt.sysinfo import host_identity

    rec = DbRecorder(db, backend=catalog.name, catalog_hash=catalog.hash, catalog=catalog.data,
                     host=host_identity(host), platform=platform, objective_name=objective_name,
                     objective_unit=objective_unit, mode=mode, workload=workload, settings=settings,
                     seed=seed, label=label)
    rec.start()
    return rec


def record_static_run(rec: DbRecorder | ListRecorder, series: list[float], interval: float,
                      config: Mapping[str, Any]) -> bool:
    """Record a run that held *config* throughout (a default run): one interval per value of
    *series* (interval *n* ends at ``n * interval`` seconds), then close it as finished with its
    mean objective. True when the whole run is in the database."""
    for n, v in enumerate(series):
        rec.interval({"seq": n + 1, "t_s": (n + 1) * interval, "objective": v, "baseline": None,
                      "config": dict(config), "phase": 0, "fingerprint": None, "counters": None})
    mean = sum(series) / len(series) if series else None
    return bool(rec.close("finished", dict(config), {"mean_objective": mean}))
