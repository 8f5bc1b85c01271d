"""results stored in parts: small fields, bulky values apart, shapes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 10:00:00

Every existing result is rewritten by ``workbench.ledger.shapes.store_result``: its bulky values
move to ``result_bulk``, its shape is registered in ``result_shapes``. Items get an index on
(batch_id, status, id) for keyset pagination; results one on (batch_id, shape, item_id) in place
of the one on batch_id. The downgrade joins the parts again.
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_CHUNK = 2000


def upgrade() -> None:
    from workbench.ledger.shapes import store_result

    op.create_table('result_shapes',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('fields', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('result_bulk',
    sa.Column('item_id', _BigId, nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id')
    )
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shape', sa.String(length=16), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_batch_id')
        batch_op.create_index('ix_results_batch_shape', ['batch_id', 'shape', 'item_id'],
                              unique=False)
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_batch_status')
        batch_op.create_index('ix_items_batch_status_id', ['batch_id', 'status', 'id'],
                              unique=False)

    conn = op.get_bind()
    results = sa.table('results', sa.column('item_id', _BigId), sa.column('data', sa.Text),
                       sa.column('shape', sa.String))
    bulk = sa.table('result_bulk', sa.column('item_id', _BigId), sa.column('data', sa.Text))
    shapes = sa.table('result_shapes', sa.column('id', sa.String), sa.column('fields', sa.Text))
    known: set[str] = set()
    after = -1
    while True:  # keyset over item_id: memory bounded by the chunk, whatever the ledger's size
        rows = conn.execute(
            sa.select(results.c.item_id, results.c.data)
            .where(results.c.item_id > after).order_by(results.c.item_id).limit(_CHUNK)
        ).all()
        if not rows:
            break
        after = rows[-1].item_id
        updates, bulks, new_shapes = [], [], {}
        for item_id, data in rows:
            stored = store_result(data)
            updates.append({'k': item_id, 'd': stored.data, 's': stored.shape_id})
            if stored.bulk is not None:
                bulks.append({'item_id': item_id, 'data': stored.bulk})
            if stored.shape_id not in known:
                new_shapes[stored.shape_id] = stored.shape
        conn.execute(
            results.update().where(results.c.item_id == sa.bindparam('k'))
            .values(data=sa.bindparam('d'), shape=sa.bindparam('s')),
            updates,
        )
        if bulks:
            conn.execute(bulk.insert(), bulks)
        if new_shapes:
            conn.execute(shapes.insert(), [{'id': k, 'fields': v} for k, v in new_shapes.items()])
            known.update(new_shapes)


def downgrade() -> None:
    conn = op.get_bind()
    results = sa.table('results', sa.column('item_id', _BigId), sa.column('data', sa.Text))
    bulk = sa.table('result_bulk', sa.column('item_id', _BigId), sa.column('data', sa.Text))
    after = -1
    while True:
        rows = conn.execute(
            sa.select(bulk.c.item_id, results.c.data, bulk.c.data.label('bulk'))
            .join(results, results.c.item_id == bulk.c.item_id)
            .where(bulk.c.item_id > after).order_by(bulk.c.item_id).limit(_CHUNK)
        ).all()
        if not rows:
            break
        after = rows[-1].item_id
        updates = []
        for item_id, data, extra in rows:
            obj = json.loads(data)
            obj.update(json.loads(extra))
            updates.append({'k': item_id, 'd': json.dumps(obj, separators=(',', ':'))})
        conn.execute(
            results.update().where(results.c.item_id == sa.bindparam('k'))
            .values(data=sa.bindparam('d')),
            updates,
        )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_batch_status_id')
        batch_op.create_index('ix_items_batch_status', ['batch_id', 'status'], unique=False)
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index('ix_results_batch_shape')
        batch_op.create_index(batch_op.f('ix_results_batch_id'), ['batch_id'], unique=False)
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_column('shape')
    op.drop_table('result_bulk')
    op.drop_table('result_shapes')
