"""The ledger: the source of truth for batches, items and results.

``Ledger`` is the one class callers use. Client-side operations (submit, retry, cancel, reads) run
their own transactions; worker-side per-item writes (claim, complete, fail, retry later, hand back)
go through the group committer and are guarded by the attempt number, so a stale attempt never
overwrites a newer one. The methods live by concept: batch creation in ``submit``
(``SubmitMixin``), the worker's writes and worker records in ``work`` (``WorkMixin``), batch
summaries and notification claims in ``summaries`` (``SummariesMixin``), the cleanup's sweeps in
``maintenance`` (``MaintenanceMixin``); reads, retry and cancel here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, func, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncEngine

from workbench.core import codec
from workbench.core.errors import BatchNotFoundError, InvalidInputError
from workbench.core.status import ACTIVE_STATUSES, Counts
from workbench.ledger.bulk import BulkInserter
from workbench.ledger.committer import GroupCommitter
from workbench.ledger.engine import is_sqlite, make_engine, migrate, translate_errors
from workbench.ledger.maintenance import MaintenanceMixin
from workbench.ledger.models import BatchRow, ItemRow, ResultRow
from workbench.ledger.sql import chunks, row_dict, table_of, utcnow
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


class Ledger(SubmitMixin, WorkMixin, SummariesMixin, MaintenanceMixin):
    """Owns the engines and the group committer of one process."""

    def __init__(self, url: str, *, commit_linger_s: float = 0.0):
        self.url = url
        self.dialect = "sqlite" if is_sqlite(url) else "postgresql"
        self.engine: AsyncEngine = make_engine(url, immediate=True)
        # WAL readers never block writers; give reads a deferred BEGIN so they take no write lock
        self.read_engine: AsyncEngine = (
            make_engine(url, immediate=False) if self.dialect == "sqlite" else self.engine
        )
        self.committer = GroupCommitter(self.engine, linger_s=commit_linger_s)
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
        await self.committer.close()
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
        with translate_errors("counting items"):
            async with self.read_engine.connect() as conn:
                rows = await conn.execute(
                    select(ItemRow.status, func.count())
                    .where(ItemRow.batch_id == batch_id)
                    .group_by(ItemRow.status)
                )
                return Counts({status: n for status, n in rows})

    async def list_batches(self) -> list[dict[str, Any]]:
        with translate_errors("listing batches"):
            async with self.read_engine.connect() as conn:
                batches = [
                    row_dict(r)
                    for r in await conn.execute(
                        select(table_of(BatchRow)).order_by(BatchRow.created_at)
                    )
                ]
                per: dict[str, dict[str, int]] = {}
                for bid, status, n in await conn.execute(
                    select(ItemRow.batch_id, ItemRow.status, func.count()).group_by(
                        ItemRow.batch_id, ItemRow.status
                    )
                ):
                    per.setdefault(bid, {})[status] = n
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
            b["counts"] = Counts(per.get(b["id"], {}))
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
        """One item's row, with its result's ``data`` (None until done), or None if unknown."""
        i, r = table_of(ItemRow), table_of(ResultRow)
        q = select(i, r.c.data).select_from(i.outerjoin(r, r.c.item_id == i.c.id)).where(
            i.c.id == item_id
        )
        with translate_errors("reading an item"):
            async with self.read_engine.connect() as conn:
                row = (await conn.execute(q)).first()
        return row_dict(row) if row is not None else None

    async def result_rows(self, batch_id: str) -> list[dict[str, Any]]:
        i, r = table_of(ItemRow), table_of(ResultRow)
        q = (
            select(
                i.c.id.label("item_id"),
                i.c.position,
                i.c.url,
                i.c.normalized_url,
                i.c.attempts,
                i.c.duration_s,
                i.c.finished_at,
                r.c.data,
                r.c.pipeline,
                r.c.pipeline_version,
                r.c.params_hash,
                r.c.workbench_version,
                r.c.final_url,
                r.c.http_status,
                r.c.content_sha256,
                r.c.fetched_at,
                r.c.cached,
                r.c.from_stored_page,
                # raw JSON, decoded below in one parse (per-row decoding was a third of the time)
                type_coerce(r.c.timings, Text).label("timings"),
            )
            .join(r, r.c.item_id == i.c.id)
            .where(i.c.batch_id == batch_id, i.c.status == "done")
            .order_by(i.c.id)
        )
        with translate_errors("reading results"):
            async with self.read_engine.connect() as conn:
                result = await conn.execute(q)
                keys = list(result.keys())  # zip, not row._mapping: 100k rows, a second saved
                rows = [dict(zip(keys, row, strict=True)) for row in result]
        raw = [n for n, row in enumerate(rows) if isinstance(row["timings"], str)]
        decoded = codec.loads_many([rows[n]["timings"] for n in raw])
        for n, timings in zip(raw, decoded, strict=True):
            rows[n]["timings"] = timings
        return rows

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
            async with self.engine.begin() as conn:
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
        await self.get_batch(batch_id)
        t = table_of(ItemRow)
        now = utcnow()
        with translate_errors("cancelling items"):
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    update(t)
                    .where(t.c.batch_id == batch_id, t.c.status.in_(ACTIVE_STATUSES))
                    .values(status="cancelled", finished_at=now, next_try_at=None)
                    .returning(t.c.id, t.c.attempts)
                )
                return [(r.id, r.attempts) for r in res]


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
