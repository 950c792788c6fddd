"""The schema of the performance database (SQLAlchemy 2.x, typed declarative mapping).

Every change to these classes needs a new Alembic revision in ``ptmt/db/migrations/versions``;
``tests/db/test_db_migrations.py`` fails when the models and the migrations drift apart.

Tables (arrows are foreign keys)::

    hosts ◄──────────────┐◄───────────────┐
    backends ◄── studies ┤                │
    workloads ◄──┘   ▲   │                │
                     └── trials ──────────┘ (host that ran it)
    configurations ◄─────┘  ▲
                            └── samples (one row per interval, counters as JSON)

    backends ◄────────── tuning_runs ◄── tuning_intervals (one row per interval) ──► configurations
    hosts ◄──────────────┘ │ ▲
    configurations ◄───────┘ └── tuning_events (one row per decision)
      (start and final)
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Constraint names are deterministic so later migrations (and SQLite batch mode) can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON documents: JSONB on PostgreSQL (compact, indexable), the generic JSON type elsewhere.
JSONDoc = JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")

#: 64-bit keys for tables that grow without bound; SQLite needs INTEGER for its rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores no zone: UTC is implied)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class TrialStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


#: Statuses a trial never leaves on its own (a resumed study skips them).
FINAL_STATUSES = (TrialStatus.DONE, TrialStatus.FAILED)

def _sql_values(kind: type[enum.StrEnum]) -> str:
    """The enum's values as a SQL list, for CHECK constraints."""
    return ", ".join(f"'{m.value}'" for m in kind)


_STATUS_SQL = _sql_values(TrialStatus)


class TuningMode(enum.StrEnum):
    """What an online run did: tuned, held the defaults (the comparison run), or only proposed."""

    TUNE = "tune"
    DEFAULT = "default"
    DRY_RUN = "dry-run"


class RunStatus(enum.StrEnum):
    """Where an online tuning run is; ``running`` is the only status a run leaves."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


_MODE_SQL = _sql_values(TuningMode)
_RUN_STATUS_SQL = _sql_values(RunStatus)

HASH_LEN = 64


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONDoc,
        Any: JSONDoc,
    }


class Host(Base):
    """One machine as it was measured: a new kernel or topology is a new row (same hostname)."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    hostname: Mapped[str] = mapped_column(String(255), index=True)
    platform: Mapped[str] = mapped_column(String(16))  # "linux" or "sim"
    kernel: Mapped[str] = mapped_column(String(255))
    arch: Mapped[str | None] = mapped_column(String(64))
    topology: Mapped[dict[str, Any]]  # nodes, CPUs, memory per node, distances
    tiers: Mapped[dict[str, Any]]  # memory tier -> node list
    perf_available: Mapped[bool | None] = mapped_column(Boolean)
    info: Mapped[dict[str, Any]]  # anything else (CPU model, VM, distro); not part of the hash
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Backend(Base):
    """A tiering backend with the hash of the knob catalog it was measured with."""

    __tablename__ = "backends"
    __table_args__ = (UniqueConstraint("name", "catalog_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    catalog_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    catalog: Mapped[dict[str, Any] | None]  # snapshot of the catalog, for later analysis
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Workload(Base):
    """A simulator workload spec or a real command (with its setup, objective, timeout)."""

    __tablename__ = "workloads"
    __table_args__ = (UniqueConstraint("name", "hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "sim" or "command"
    spec: Mapped[dict[str, Any]]
    command: Mapped[str | None] = mapped_column(Text)  # for display; the spec is authoritative
    hash: Mapped[str] = mapped_column(String(HASH_LEN), index=True)  # of kind, spec and command
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Configuration(Base):
    """Knob values, stored once per distinct content."""

    __tablename__ = "configurations"

    id: Mapped[int] = mapped_column(primary_key=True)
    hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    knobs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Study(Base):
    """One sweep: a backend, a workload, a host, a sampling strategy, a budget and a seed.

    ``key`` hashes everything that identifies the sweep, so rerunning the same ``ptmt profile``
    command finds the study again and resumes it.
    """

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    backend_id: Mapped[int] = mapped_column(ForeignKey("backends.id"), index=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"), index=True)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    strategy: Mapped[str] = mapped_column(String(32))
    budget: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    repetitions: Mapped[int] = mapped_column(Integer, default=1)
    objective_direction: Mapped[str | None] = mapped_column(String(8))  # "max" or "min"
    settings: Mapped[dict[str, Any]]  # duration, interval, platform, mode, ...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    backend: Mapped[Backend] = relationship(lazy="joined")
    workload: Mapped[Workload] = relationship(lazy="joined")
    host: Mapped[Host | None] = relationship(lazy="joined")


class Trial(Base):
    """One measurement of one configuration (one repetition) within a study.

    ``ordinal`` is the trial's place in the study's plan: planning is idempotent by ordinal, and
    workers claim pending trials in ordinal order.
    """

    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "ordinal"),
        Index("ix_trials_study_id_status", "study_id", "status"),
        CheckConstraint(f"status IN ({_STATUS_SQL})", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"), index=True)
    repetition: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=TrialStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"))  # host that ran it
    worker: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    objective: Mapped[float | None] = mapped_column(Float)
    objective_unit: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    configuration: Mapped[Configuration] = relationship(lazy="joined")


class Sample(Base):
    """One telemetry interval of a trial: counter deltas (kernel names) as one JSON object.

    One row per interval rather than one per counter: counter sets differ between kernels and
    machines (a JSON object takes any of them without a migration), every interval is written
    with one INSERT, a row is ~1 KB instead of ~40 rows of index overhead, and the consumers
    (sensitivity analysis, the query model) read whole intervals into DataFrames anyway.
    """

    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("trial_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # interval number within the trial, from 0
    t_s: Mapped[float] = mapped_column(Float)  # interval end, seconds since trial start
    dt_s: Mapped[float] = mapped_column(Float)  # interval length in seconds
    objective: Mapped[float | None] = mapped_column(Float)
    counters: Mapped[dict[str, Any]]


class TuningRun(Base):
    """One online tuning session (``ptmt tune``): what was tuned where, how it started and ended.

    ``token`` is made by the client before the first write, so a recorder that lost its connection
    can create the run late, or resend it, without making a second one.
    """

    __tablename__ = "tuning_runs"
    __table_args__ = (
        CheckConstraint(f"mode IN ({_MODE_SQL})", name="mode"),
        CheckConstraint(f"status IN ({_RUN_STATUS_SQL})", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    backend_id: Mapped[int] = mapped_column(ForeignKey("backends.id"), index=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    workload: Mapped[str | None] = mapped_column(String(255), index=True)  # as the operator names it
    platform: Mapped[str] = mapped_column(String(16))  # "linux" or "sim"
    mode: Mapped[str] = mapped_column(String(16))
    objective_name: Mapped[str] = mapped_column(String(64))
    objective_unit: Mapped[str | None] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]]  # interval, duration, guard, phase, model/agent use, ...
    start_configuration_id: Mapped[int | None] = mapped_column(ForeignKey("configurations.id"))
    final_configuration_id: Mapped[int | None] = mapped_column(ForeignKey("configurations.id"))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    summary: Mapped[dict[str, Any] | None]  # mean objective, changes, reverts, comparison, ...
    ptmt_version: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    label: Mapped[str | None] = mapped_column(String(255))

    backend: Mapped[Backend] = relationship(lazy="joined")
    host: Mapped[Host] = relationship(lazy="joined")


class TuningInterval(Base):
    """One interval of a tuning run: the objective and the configuration it was measured under.

    The configuration is a foreign key rather than a copy: a run spends most intervals in a few
    configurations, which are stored once (the same rows the offline profiler uses).
    """

    __tablename__ = "tuning_intervals"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("tuning_runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # interval number within the run
    t_s: Mapped[float] = mapped_column(Float)  # interval end, seconds since the run started
    objective: Mapped[float | None] = mapped_column(Float)
    baseline: Mapped[float | None] = mapped_column(Float)  # the phase's warm-up level
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"), index=True)
    phase: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[dict[str, Any] | None]  # workload features, as the query model sees them
    counters: Mapped[dict[str, Any] | None]  # counter deltas under the kernel's names


class TuningEvent(Base):
    """One decision of a tuning run (a knob change, a verdict, a phase change, an error).

    ``ordinal`` is the event's place in the run; ``n`` numbers changes, and one change that moves
    several knobs is several events with the same ``n``.
    """

    __tablename__ = "tuning_events"
    __table_args__ = (UniqueConstraint("run_id", "ordinal"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("tuning_runs.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)  # the interval it happened after
    t_s: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))  # model, explore, keep, reject, revert, phase, error
    reason: Mapped[str] = mapped_column(Text)
    knob: Mapped[str | None] = mapped_column(String(255))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None]
