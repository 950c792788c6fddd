"""Initial schema: hosts, backends, workloads, configurations, studies, trials, samples.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

#: JSON documents: JSONB on PostgreSQL, JSON elsewhere (as in ptmt.db.models).
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('backends',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('catalog_hash', sa.String(length=64), nullable=False),
    sa.Column('catalog', JSON_DOC, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backends')),
    sa.UniqueConstraint('name', 'catalog_hash', name=op.f('uq_backends_name_catalog_hash'))
    )
    op.create_index(op.f('ix_backends_name'), 'backends', ['name'], unique=False)

    op.create_table('configurations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('knobs', JSON_DOC, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_configurations')),
    sa.UniqueConstraint('hash', name=op.f('uq_configurations_hash'))
    )
    op.create_table('hosts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('kernel', sa.String(length=255), nullable=False),
    sa.Column('arch', sa.String(length=64), nullable=True),
    sa.Column('topology', JSON_DOC, nullable=False),
    sa.Column('tiers', JSON_DOC, nullable=False),
    sa.Column('perf_available', sa.Boolean(), nullable=True),
    sa.Column('info', JSON_DOC, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hosts')),
    sa.UniqueConstraint('hash', name=op.f('uq_hosts_hash'))
    )
    op.create_index(op.f('ix_hosts_hostname'), 'hosts', ['hostname'], unique=False)

    op.create_table('workloads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('spec', JSON_DOC, nullable=False),
    sa.Column('command', sa.Text(), nullable=True),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workloads')),
    sa.UniqueConstraint('name', 'hash', name=op.f('uq_workloads_name_hash'))
    )
    op.create_index(op.f('ix_workloads_hash'), 'workloads', ['hash'], unique=False)
    op.create_index(op.f('ix_workloads_name'), 'workloads', ['name'], unique=False)

    op.create_table('studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('backend_id', sa.Integer(), nullable=False),
    sa.Column('workload_id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=True),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('budget', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('repetitions', sa.Integer(), nullable=False),
    sa.Column('objective_direction', sa.String(length=8), nullable=True),
    sa.Column('settings', JSON_DOC, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['backend_id'], ['backends.id'], name=op.f('fk_studies_backend_id_backends')),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_studies_host_id_hosts')),
    sa.ForeignKeyConstraint(['workload_id'], ['workloads.id'], name=op.f('fk_studies_workload_id_workloads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_studies')),
    sa.UniqueConstraint('key', name=op.f('uq_studies_key'))
    )
    op.create_index(op.f('ix_studies_backend_id'), 'studies', ['backend_id'], unique=False)
    op.create_index(op.f('ix_studies_host_id'), 'studies', ['host_id'], unique=False)
    op.create_index(op.f('ix_studies_workload_id'), 'studies', ['workload_id'], unique=False)

    op.create_table('trials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('configuration_id', sa.Integer(), nullable=False),
    sa.Column('repetition', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=True),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('objective', sa.Float(), nullable=True),
    sa.Column('objective_unit', sa.String(length=32), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'running', 'done', 'failed', 'interrupted')", name=op.f('ck_trials_status')),
    sa.ForeignKeyConstraint(['configuration_id'], ['configurations.id'], name=op.f('fk_trials_configuration_id_configurations')),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], name=op.f('fk_trials_host_id_hosts')),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_trials_study_id_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trials')),
    sa.UniqueConstraint('study_id', 'ordinal', name=op.f('uq_trials_study_id_ordinal'))
    )
    op.create_index(op.f('ix_trials_configuration_id'), 'trials', ['configuration_id'], unique=False)
    op.create_index('ix_trials_study_id_status', 'trials', ['study_id', 'status'], unique=False)

    op.create_table('samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('trial_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('t_s', sa.Float(), nullable=False),
    sa.Column('dt_s', sa.Float(), nullable=False),
    sa.Column('objective', sa.Float(), nullable=True),
    sa.Column('counters', JSON_DOC, nullable=False),
    sa.ForeignKeyConstraint(['trial_id'], ['trials.id'], name=op.f('fk_samples_trial_id_trials'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('trial_id', 'seq', name=op.f('uq_samples_trial_id_seq'))
    )


def downgrade() -> None:
    op.drop_table('samples')
    op.drop_index('ix_trials_study_id_status', table_name='trials')
    op.drop_index(op.f('ix_trials_configuration_id'), table_name='trials')

    op.drop_table('trials')
    op.drop_index(op.f('ix_studies_workload_id'), table_name='studies')
    op.drop_index(op.f('ix_studies_host_id'), table_name='studies')
    op.drop_index(op.f('ix_studies_backend_id'), table_name='studies')

    op.drop_table('studies')
    op.drop_index(op.f('ix_workloads_name'), table_name='workloads')
    op.drop_index(op.f('ix_workloads_hash'), table_name='workloads')

    op.drop_table('workloads')
    op.drop_index(op.f('ix_hosts_hostname'), table_name='hosts')

    op.drop_table('hosts')
    op.drop_table('configurations')
    op.drop_index(op.f('ix_backends_name'), table_name='backends')

    op.drop_table('backends')
