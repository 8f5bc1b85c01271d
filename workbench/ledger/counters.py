"""Per-batch status counters: ``batch.counts()`` read from a few rows, not counted over items.

Counting a million-item batch by its status index took 30-70 ms whenever two statuses held
half the batch each (the notebook monitor reads counts every tick). ``batch_counts`` holds, per
batch and status, the number of its items in that status, kept exact by the transactions that
change them:

- the items of a batch are inserted by ``create_batch`` alone (and never deleted alone): it
  writes the batch's first counts in the same transaction (``start``);
- every UPDATE that changes an item's status moves one count from the old status to the new
  one, by a trigger (migration 0005), whatever the statement: the group committer's claims and
  completions, reconcile, retry, cancel. A count is the sum of its rows: on PostgreSQL each
  connection adds its changes to its own row (``shard`` = its backend pid), in one statement-level
  trigger per UPDATE (the rows it changed, aggregated), so that concurrent workers never wait on
  (or deadlock over) one hot counter row; on SQLite (one writer at a time) a row trigger adds to
  shard 0;
- on SQLite a row trigger costs ~6 µs per changed row: for an UPDATE of a million rows (cancel,
  retry of every failure) the writer pauses the trigger inside its transaction (a row in
  ``count_pause``, never committed: no other connection sees it) and recounts the batch after
  the statement (``bulk``, ~0.1 s per million items).

On PostgreSQL the rows of a batch grow with the connections that changed it (a pool's
connections are recycled every half hour); the daily cleanup folds those of settled batches into
one row per status (``fold``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from workbench.core.status import Counts
from workbench.ledger.models import BatchCountRow
from workbench.ledger.sql import table_of


async def start(conn: AsyncConnection, batch_id: str, **counts: int) -> None:
    """The first counts of a new batch (in the transaction that inserts its items)."""
    rows = [dict(batch_id=batch_id, status=s, shard=0, n=n) for s, n in counts.items() if n]
    if rows:
        await conn.execute(table_of(BatchCountRow).insert(), rows)


async def read(conn: AsyncConnection, batch_id: str) -> Counts:
    """The batch's items per status (one snapshot)."""
    t = table_of(BatchCountRow)
    rows = await conn.execute(
        select(t.c.status, func.sum(t.c.n)).where(t.c.batch_id == batch_id).group_by(t.c.status)
    )
    return Counts({status: int(n) for status, n in rows})


async def read_all(conn: AsyncConnection) -> dict[str, Counts]:
    """Every batch's counts."""
    t = table_of(BatchCountRow)
    per: dict[str, dict[str, int]] = {}
    for batch_id, status, n in await conn.execute(
        select(t.c.batch_id, t.c.status, func.sum(t.c.n)).group_by(t.c.batch_id, t.c.status)
    ):
        per.setdefault(batch_id, {})[status] = int(n)
    return {batch_id: Counts(c) for batch_id, c in per.items()}


#: rows changed, at most, below which the SQLite trigger costs less than a recount
BULK_ROWS = 10_000


async def total(conn: AsyncConnection, status: str) -> int:
    """Items in ``status`` across every batch."""
    t = table_of(BatchCountRow)
    n = (await conn.execute(select(func.sum(t.c.n)).where(t.c.status == status))).scalar()
    return int(n or 0)


async def batches_with(conn: AsyncConnection, status: str) -> list[str]:
    """The batches that have items in ``status``."""
    t = table_of(BatchCountRow)
    rows = await conn.execute(
        select(t.c.batch_id).where(t.c.status == status)
        .group_by(t.c.batch_id).having(func.sum(t.c.n) > 0)
    )
    return [batch_id for (batch_id,) in rows]


@contextlib.asynccontextmanager
async def bulk(conn: AsyncConnection, batch_id: str, rows: int | None = None
               ) -> AsyncIterator[None]:
    """Around statements that change the status of many of one batch's items (``rows`` at
    most; None: any number), in the transaction of ``conn``: on SQLite the row trigger is paused
    and the batch recounted once after them; on PostgreSQL the statement trigger already costs
    one aggregate per statement."""
    if conn.dialect.name != "sqlite" or (rows is not None and rows < BULK_ROWS):
        yield
        return
    await conn.execute(text("INSERT INTO count_pause (paused) VALUES (1)"))
    yield
    await conn.execute(text("DELETE FROM count_pause"))
    t = table_of(BatchCountRow)
    await conn.execute(t.delete().where(t.c.batch_id == batch_id))
    await conn.execute(text(
        "INSERT INTO batch_counts (batch_id, status, shard, n) SELECT batch_id, status, 0, "
        "count(*) FROM items WHERE batch_id = :b GROUP BY batch_id, status"
    ), {"b": batch_id})


_FOLD_PG = """
WITH settled AS (
  SELECT batch_id FROM batch_counts GROUP BY batch_id
  HAVING sum(CASE WHEN status IN ('queued', 'running') THEN n ELSE 0 END) = 0
     AND count(*) FILTER (WHERE shard <> 0) > 0
), moved AS (
  DELETE FROM batch_counts c USING settled s
  WHERE c.batch_id = s.batch_id AND c.shard <> 0
  RETURNING c.batch_id, c.status, c.n
), folded AS (
  INSERT INTO batch_counts AS t (batch_id, status, shard, n)
  SELECT batch_id, status, 0, sum(n) FROM moved GROUP BY batch_id, status
  ON CONFLICT (batch_id, status, shard) DO UPDATE SET n = t.n + EXCLUDED.n
)
SELECT count(*) FROM moved
"""


async def fold(conn: AsyncConnection) -> int:
    """Fold the per-connection rows of every settled batch (nothing queued or running) into
    one row per status; returns how many rows were folded. A no-op on SQLite (one row per
    status already). A row a worker changes meanwhile is deleted as it committed it (the
    DELETE waits for it and re-reads), so no change is lost."""
    if conn.dialect.name != "postgresql":
        return 0
    folded = int((await conn.execute(text(_FOLD_PG))).scalar_one())
    # what is left of a status no item has any more (only submit and this write shard 0)
    await conn.execute(text("DELETE FROM batch_counts WHERE shard = 0 AND n = 0"))
    return folded
