"""running by worker: a partial index of the running items instead of (status, worker_id)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:50:00

``ix_items_status_worker`` held an entry for every item, mostly of a few keys (``queued``,
NULL): every submit inserted one per item, and a cancel of a million queued items moved a million
of them (~40 % of its UPDATE on SQLite). Its only readers were reconcile's look-ups of running
items by worker and of queued items (now read per batch by ``ix_items_batch_status_id``, and
counted from ``batch_counts``). ``ix_items_running_worker`` holds the running items alone.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'ix_items_running_worker', 'items', ['worker_id'], unique=False,
        sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"),
    )
    op.drop_index('ix_items_status_worker', table_name='items')


def downgrade() -> None:
    op.create_index('ix_items_status_worker', 'items', ['status', 'worker_id'], unique=False)
    op.drop_index('ix_items_running_worker', table_name='items')
