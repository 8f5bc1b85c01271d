"""The ledger: the source of truth for batches, items and results.

``Ledger`` is the one class callers use. Client-side operations (submit, retry, cancel, reads) run
their own transactions; worker-side per-item writes (claim, complete, fail, retry later, hand back)
go through the group committer and are guarded by the attempt number, so a stale attempt never
overwrites a newer one. The methods live by concept: batch creation in ``submit``
(``SubmitMixin``), the worker's writes and worker records in ``work`` (``WorkMixin``), batch
summaries and notification claims in ``summaries`` (``SummariesMixin``), the cleanup's sweeps in
``maintenance`` (``MaintenanceMixin``), chunked and projected reads of results and items in
``reads`` (``ReadsMixin``); counts, small reads, retry and cancel here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, func, literal_column, null, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncEngine

from workbench.core.errors import BatchNotFoundError, InvalidInputError, LedgerError
from workbench.core.status import ACTIVE_STATUSES, Counts
from workbench.ledger import counters
from workbench.ledger.bulk import BulkInserter
from workbench.ledger.checkpoint import WalCheckpointer, bulk_transaction
from workbench.ledger.committer import GroupCommitter
from workbench.ledger.direct import SqliteDirect, sqlite_file
from workbench.ledger.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    is_sqlite,
    make_engine,
    migrate,
    translate_errors,
)
from workbench.ledger.maintenance import MaintenanceMixin
from workbench.ledger.models import BatchRow, ItemRow, ResultBulkRow, ResultRow
from workbench.ledger.reads import ReadsMixin, ResultField, ResultSchema
from workbench.ledger.shapes import joined_data
from workbench.ledger.sql import chunks, driver_rows, row_dict, table_of, utcnow
from workbench.ledger.submit import NewBatch, SubmitMixin, SubmitOutcome, new_batch_id
from workbench.ledger.summaries import BatchActivity, ErrorGroup, SummariesMixin
from workbench.ledger.work import ClaimedItem, WorkMixin, work_statements

__all__ = [
    "BatchActivity",
    "BatchInfo",
    "ClaimedItem",
    "ErrorGroup",
    "Ledger",
    "NewBatch",
    "ResultField",
    "ResultSchema",
    "SubmitOutcome",
    "new_batch_id",
    "utcnow",
]


@dataclass(frozen=True)
class BatchInfo:
    id: str
    pipeline: str
    pipeline_version: str
    params: dict[str, Any]
    params_hash: str
    use_stored_pages: bool
    notify: str | None


class Ledger(SubmitMixin, WorkMixin, SummariesMixin, MaintenanceMixin, ReadsMixin):
    """Owns the engines and the group committer of one process."""

    def __init__(self, url: str, *, commit_linger_s: float = 0.0):
        self.url = url
        self.dialect = "sqlite" if is_sqlite(url) else "postgresql"
        self.engine: AsyncEngine = make_engine(url, immediate=True)
        # WAL readers never block writers; give reads a deferred BEGIN so they take no write lock
        self.read_engine: AsyncEngine = (
            make_engine(url, immediate=False) if self.dialect == "sqlite" else self.engine
        )
        # a SQLite file: bulk writes (submit, retry, cancel) and the group commit's direct writer
        # leave their checkpoint to it
        path = sqlite_file(url)
        self.checkpointer = WalCheckpointer(
            path, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS
        ) if path else None
        # a SQLite file: the group commit's hot writes, and the page store's look-ups, each on a
        # plain sqlite3 connection of its own (``ledger.direct``)
        self.committer = GroupCommitter(
            self.engine, linger_s=commit_linger_s,
            direct=SqliteDirect(
                path, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS, checkpoint=self.checkpointer.soon
            ) if path and self.checkpointer else None,
        )
        self.direct_reader = SqliteDirect(
            path, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS, reader=True
        ) if path else None
        self._started = False
        self._bulk = BulkInserter()
        # The per-item hot path (claim, complete) runs prepared statements: building and
        # cache-keying a new statement per commit showed up in profiles.
        self._claim_stmt, self._complete_stmt = work_statements(self.dialect)

    async def start(self) -> Ledger:
        if not self._started:
            await migrate(self.engine)
            self._started = True
        return self

    async def close(self) -> None:
        if self.checkpointer is not None:
            await self.checkpointer.wait()
        await self.committer.close()
        await self.committer.close_direct()
        if self.direct_reader is not None:
            await self.direct_reader.close()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
    # ------------------------------------------------------------------ reads
    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        if not isinstance(batch_id, str) or not batch_id:
            raise InvalidInputError(f"batch id must be a non-empty string, got {batch_id!r}")
        with translate_errors("reading a batch"):
            async with self.read_engine.connect() as conn:
                row = (
                    await conn.execute(select(table_of(BatchRow)).where(BatchRow.id == batch_id))
                ).first()
        if row is None:
            raise BatchNotFoundError(f"no batch with id {batch_id!r}")
        return row_dict(row)

    async def batch_info(self, batch_id: str) -> BatchInfo:
        row = await self.get_batch(batch_id)
        return BatchInfo(
            id=row["id"],
            pipeline=row["pipeline"],
            pipeline_version=row["pipeline_version"],
            params=row["params"] or {},
            params_hash=row["params_hash"],
            use_stored_pages=bool(row["use_stored_pages"]),
            notify=row["notify"],
        )

    async def counts(self, batch_id: str) -> Counts:
        """Items per status, from the batch's counters (``ledger.counters``): a few rows read
        whatever the batch's size. An unknown batch has none."""
        with translate_errors("counting items"):
            async with self.read_engine.connect() as conn:
                return await counters.read(conn, batch_id)

    async def list_batches(self) -> list[dict[str, Any]]:
        with translate_errors("listing batches"):
            async with self.read_engine.connect() as conn:
                batches = [
                    row_dict(r)
                    for r in await conn.execute(
                        select(table_of(BatchRow)).order_by(BatchRow.created_at)
                    )
                ]
                per = await counters.read_all(conn)
                times = {
                    bid: (start, end)
                    for bid, start, end in await conn.execute(
                        select(
                            ItemRow.batch_id,
                            func.min(ItemRow.started_at),
                            func.max(ItemRow.finished_at),
                        ).group_by(ItemRow.batch_id)
                    )
                }
        for b in batches:
            b["counts"] = per.get(b["id"]) or Counts()
            b["first_started_at"], b["last_finished_at"] = times.get(b["id"], (None, None))
        return batches

    async def item_rows(
        self,
        batch_id: str,
        *,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        t = table_of(ItemRow)
        q = select(t).where(t.c.batch_id == batch_id).order_by(t.c.id)
        if statuses:
            q = q.where(t.c.status.in_(list(statuses)))
        if limit is not None:
            q = q.limit(limit)
        if offset:
            q = q.offset(offset)
        with translate_errors("reading items"):
            async with self.read_engine.connect() as conn:
                return [row_dict(r) for r in await conn.execute(q)]

    async def item(self, item_id: int) -> dict[str, Any] | None:
        """One item's row, with its result's ``data`` (the pipeline's dict as JSON, bulky
        values in place; None until done), or None if unknown."""
        i, r, b = table_of(ItemRow), table_of(ResultRow), table_of(ResultBulkRow)
        q = (
            select(i, r.c.data, b.c.data.label("bulk"))
            .select_from(i.outerjoin(r, r.c.item_id == i.c.id)
                         .outerjoin(b, b.c.item_id == i.c.id))
            .where(i.c.id == item_id)
        )
        with translate_errors("reading an item"):
            async with self.read_engine.connect() as conn:
                row = (await conn.execute(q)).first()
        if row is None:
            return None
        out = row_dict(row)
        bulk = out.pop("bulk")
        if out["data"] is not None:
            out["data"] = joined_data(out["data"], bulk)
        return out

    # ------------------------------------------------------------------ retry / cancel
    async def retry(
        self, batch_id: str, item_ids: Sequence[int] | None = None
    ) -> list[tuple[int, int]]:
        """failed (or the given failed/cancelled items) -> queued with a new attempt number."""
        await self.get_batch(batch_id)
        t = table_of(ItemRow)
        conds = [t.c.batch_id == batch_id]
        ids: list[int] = []
        if item_ids is None:
            conds.append(t.c.status == "failed")
        else:
            ids = _check_ids(item_ids)
            with translate_errors("reading items to retry"):
                async with self.read_engine.connect() as conn:
                    known = {
                        row.id: row.status
                        for chunk in chunks(ids)
                        for row in await conn.execute(
                            select(t.c.id, t.c.status).where(
                                t.c.batch_id == batch_id, t.c.id.in_(chunk)
                            )
                        )
                    }
            missing = [i for i in ids if i not in known]
            if missing:
                raise InvalidInputError(
                    f"item id(s) not in batch {batch_id}: {', '.join(map(str, missing[:20]))}"
                )
            conds.append(t.c.status.in_(("failed", "cancelled")))
        now = utcnow()
        values = dict(
            status="queued",
            attempts=t.c.attempts + 1,
            tries=0,
            started_at=None,
            finished_at=None,
            next_try_at=None,
            duration_s=None,
            worker_id=None,
            error_type=None,
            error_message=None,
            traceback=None,
            retryable=None,
            submitted_at=now,
        )
        out: list[tuple[int, int]] = []
        with translate_errors("retrying items"):
            rows = None if item_ids is None else len(ids)
            async with bulk_transaction(self.engine, self.checkpointer, rows=rows) as conn, \
                    counters.bulk(conn, batch_id, rows=rows):
                await conn.execute(update(BatchRow).where(BatchRow.id == batch_id).values(
                    settled_at=None, notified_at=None))
                if item_ids is None:
                    res = await conn.execute(
                        update(t).where(*conds).values(**values).returning(t.c.id, t.c.attempts)
                    )
                    out.extend((r.id, r.attempts) for r in res)
                else:
                    for chunk in chunks(ids):
                        res = await conn.execute(
                            update(t)
                            .where(*conds, t.c.id.in_(chunk))
                            .values(**values)
                            .returning(t.c.id, t.c.attempts)
                        )
                        out.extend((r.id, r.attempts) for r in res)
        return out

    async def cancel(self, batch_id: str) -> list[tuple[int, int]]:
        """queued|running -> cancelled. Returns (item_id, attempt) whose jobs can be dropped."""
        return cast(list[tuple[int, int]], await self._cancel(batch_id, returning=True))

    async def cancel_count(self, batch_id: str) -> int:
        """``cancel`` returning only how many items it cancelled: no row comes back (a 1M-item
        cancel's RETURNING was ~0.8 s of SQLite's work and ~260 MB of tuples)."""
        return cast(int, await self._cancel(batch_id, returning=False))

    async def _cancel(self, batch_id: str, *, returning: bool) -> list[tuple[int, int]] | int:
        await self.get_batch(batch_id)
        t = table_of(ItemRow)
        now = utcnow()
        stmt = (
            update(t)
            .where(t.c.batch_id == batch_id, t.c.status.in_(ACTIVE_STATUSES))
            .values(status="cancelled", finished_at=now, next_try_at=None)
        )
        with translate_errors("cancelling items"):
            async with bulk_transaction(self.engine, self.checkpointer) as conn, \
                    counters.bulk(conn, batch_id):
                if not returning:
                    return int((await conn.execute(stmt)).rowcount)
                # a million cancelled rows come back as plain tuples (SQLAlchemy's rows were
                # ~2.5 s of a 1M-item cancel here)
                try:
                    rows = await driver_rows(conn, stmt.returning(t.c.id, t.c.attempts))
                except Exception as exc:  # the driver's own errors
                    raise LedgerError(f"ledger error while cancelling items: {exc}") from exc
        return [(i, a) for i, a in rows]

    async def id_span(self, batch_id: str) -> tuple[int | None, int | None]:
        """The first and last item id of a batch (its ids are consecutive: ``_reserve_ids``)."""
        return await self._id_span(batch_id)

    async def failures_since(
        self, batch_id: str, mark: datetime | None
    ) -> tuple[datetime, list[tuple[Any, ...]], int]:
        """For the notebook monitor: ``(item_id, url, error_type, error_message)`` of the batch's
        failed items that finished at or after ``mark`` less ``FAILURES_OVERLAP`` (every one
        when ``mark`` is None), in item order, the mark of this read, and the batch's number of
        failed items in the same snapshot as the rows (plain tuples on the driver). A row
        committed more than the overlap after its ``finished_at`` is missed: the caller's
        failures then number fewer than that total, and it reads them all."""
        now = utcnow()
        with translate_errors("reading failures"):
            async with self.read_engine.connect() as conn:
                try:
                    rows = await driver_rows(conn, failures_query(batch_id, mark))
                except Exception as exc:  # the driver's own errors
                    raise LedgerError(f"ledger error while reading failures: {exc}") from exc
        # the first row holds the total (kind 0), the failures follow (kind 1)
        total = int(rows[0][5]) if rows and rows[0][0] == 0 else 0
        return now, [r[1:5] for r in rows if r[0] == 1], total


#: how far before the last read's mark ``failures_since`` reads again: a failure's row is
#: committed after its ``finished_at`` (the group commit's round, a worker's clock ahead of
#: the client's); one committed later still is caught by the total (and a full read)
FAILURES_OVERLAP = timedelta(seconds=20)


def failures_query(batch_id: str, mark: datetime | None) -> Any:
    """``Ledger.failures_since``'s statement: the batch's failed total and the failures, in one
    statement so that both come from one snapshot (SQLite and PostgreSQL alike)."""
    t = table_of(ItemRow)
    # the status as a literal: a planner proves the partial index's condition
    # (ix_items_failed_finished) from the query's text, not from a bound value
    failed = and_(t.c.batch_id == batch_id, t.c.status == literal_column("'failed'"))
    total: Any = select(literal_column("0").label("kind"), null().label("item_id"), null(), null(),
                   null(), func.count().label("total")).where(failed)
    rows = select(literal_column("1"), t.c.id, t.c.url, t.c.error_type, t.c.error_message,
                  null()).where(failed)
    if mark is not None:
        rows = rows.where(t.c.finished_at >= mark - FAILURES_OVERLAP)
    return union_all(total, rows).order_by(literal_column("kind"), literal_column("item_id"))


def _check_ids(item_ids: Sequence[int]) -> list[int]:
    ids = []
    for i in item_ids:
        if isinstance(i, bool) or not isinstance(i, int):
            try:
                i = int(i)  # numpy ints from a DataFrame column
            except (TypeError, ValueError):
                raise InvalidInputError(f"item ids must be integers, got {i!r}") from None
        ids.append(i)
    return ids
