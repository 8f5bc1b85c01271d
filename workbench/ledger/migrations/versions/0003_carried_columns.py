"""carried columns: the input row's other columns with each item, their names with the batch

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:30:00

``items.carried`` holds the other columns of the input row an item came from (a DataFrame's or a
CSV's, or a WARC record's provenance) as a JSON object; ``batches.carried`` their names, stored
names and input dtypes (``workbench.inputs.tables.CarriedColumn``). Both are null for batches of
plain URLs, so nothing is rewritten.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('carried', sa.JSON(), nullable=True))
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('carried', sa.Text(), nullable=True))


def downgrade() -> None:
    # a plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch "move and copy" of items
    # would drop the table, and with it every result (ON DELETE CASCADE)
    op.drop_column('items', 'carried')
    op.drop_column('batches', 'carried')
