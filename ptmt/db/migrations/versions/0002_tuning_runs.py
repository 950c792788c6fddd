"""Online tuning runs: tuning_runs, tuning_intervals, tuning_events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

#: JSON documents: JSONB on PostgreSQL, JSON elsewhere (as in ptmt.db.models).
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
#: 64-bit keys for tables that grow without bound (as in ptmt.db.models).
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('tuning_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('backend_id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('workload', sa.String(length=255), nullable=True),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('objective_name', sa.String(length=64), nullable=False),
    sa.Column('objective_unit', sa.String(length=32), nullable=True),
    sa.Column('settings', JSON_DOC, nullable=False),
    sa.Column('start_configuration_id', sa.Integer(), nullable=True),
    sa.Column('final_configuration_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('summary', JSON_DOC, nullable=True),
    sa.Column('ptmt_version', sa.String(length=32), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('label', sa.String(length=255), nullable=True),
    sa.CheckConstraint("mode IN ('tune', 'default', 'dry-run')", name=op.f('ck_tuning_runs_mode')),
    sa.CheckConstraint("status IN ('running', 'finished', 'failed', 'interrupted')", name=op.f('ck_tuning_runs_status')),
    sa.ForeignKeyConstraint(['backend_id'], ['backends.id'], name=op.f('fk_tuning_runs_backend_id_backends')),
    sa.ForeignKeyConstraint(['final_configuration_id'], ['configurations.id'], name=op.f('fk_tuning_runs_final_configuration_id_configurations')),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_tuning_runs_host_id_hosts')),
    sa.ForeignKeyConstraint(['start_configuration_id'], ['configurations.id'], name=op.f('fk_tuning_runs_start_configuration_id_configurations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tuning_runs')),
    sa.UniqueConstraint('token', name=op.f('uq_tuning_runs_token'))
    )
    op.create_index(op.f('ix_tuning_runs_backend_id'), 'tuning_runs', ['backend_id'], unique=False)
    op.create_index(op.f('ix_tuning_runs_host_id'), 'tuning_runs', ['host_id'], unique=False)
    op.create_index(op.f('ix_tuning_runs_workload'), 'tuning_runs', ['workload'], unique=False)

    op.create_table('tuning_intervals',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('t_s', sa.Float(), nullable=False),
    sa.Column('objective', sa.Float(), nullable=True),
    sa.Column('baseline', sa.Float(), nullable=True),
    sa.Column('configuration_id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.Integer(), nullable=False),
    sa.Column('fingerprint', JSON_DOC, nullable=True),
    sa.Column('counters', JSON_DOC, nullable=True),
    sa.ForeignKeyConstraint(['configuration_id'], ['configurations.id'], name=op.f('fk_tuning_intervals_configuration_id_configurations')),
    sa.ForeignKeyConstraint(['run_id'], ['tuning_runs.id'], name=op.f('fk_tuning_intervals_run_id_tuning_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tuning_intervals')),
    sa.UniqueConstraint('run_id', 'seq', name=op.f('uq_tuning_intervals_run_id_seq'))
    )
    op.create_index(op.f('ix_tuning_intervals_configuration_id'), 'tuning_intervals', ['configuration_id'], unique=False)

    op.create_table('tuning_events',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('t_s', sa.Float(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('knob', sa.String(length=255), nullable=True),
    sa.Column('old', sa.Text(), nullable=True),
    sa.Column('new', sa.Text(), nullable=True),
    sa.Column('details', JSON_DOC, nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['tuning_runs.id'], name=op.f('fk_tuning_events_run_id_tuning_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tuning_events')),
    sa.UniqueConstraint('run_id', 'ordinal', name=op.f('uq_tuning_events_run_id_ordinal'))
    )


def downgrade() -> None:
    op.drop_table('tuning_events')
    op.drop_index(op.f('ix_tuning_intervals_configuration_id'), table_name='tuning_intervals')

    op.drop_table('tuning_intervals')
    op.drop_index(op.f('ix_tuning_runs_workload'), table_name='tuning_runs')
    op.drop_index(op.f('ix_tuning_runs_host_id'), table_name='tuning_runs')
    op.drop_index(op.f('ix_tuning_runs_backend_id'), table_name='tuning_runs')

    op.drop_table('tuning_runs')
