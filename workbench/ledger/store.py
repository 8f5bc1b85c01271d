"""The ledger: the source of truth for batches, items and results.

Client-side operations (submit, retry, cancel, reads) run their own transactions. Worker-side
per-item writes (claim, complete, fail, retry later, hand back) go through the group committer and
are guarded by the attempt number, so a stale attempt never overwrites a newer one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import Table, and_, bindparam, func, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import BatchNotFoundError, InvalidInputError
from .committer import GroupCommitter
from .engine import is_sqlite, make_engine, migrate, translate_errors
from .models import (
    ACTIVE_STATUSES,
    ITEM_STATUSES,
    BatchRow,
    ItemRow,
    ResultRow,
    UTCDateTime,
    WorkerRow,
)

T = TypeVar("T")

_CHUNK = 500  # rows per IN (...) lookup; well under SQLite's variable limit
_TUPLE_CHUNK = 400  # (id, attempt) pairs per IN (...): two variables each


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_batch_id(now: datetime | None = None) -> str:
    """Sortable and readable: ``b-20261129-205530-3f9a1c``."""
    now = now or utcnow()
    return f"b-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class NewBatch:
    pipeline: str
    pipeline_version: str
    params: dict[str, Any]
    params_hash: str
    name: str | None = None
    notify: str | None = None
    invalid: int = 0
    duplicates: int = 0
    use_stored_pages: bool = False
    source_batch_id: str | None = None


@dataclass(frozen=True)
class SubmitOutcome:
    batch_id: str
    queued: list[tuple[int, int]]  # (item_id, attempt) to enqueue
    cached: int


@dataclass(frozen=True)
class ClaimedItem:
    item_id: int
    batch_id: str
    url: str
    normalized_url: str
    attempt: int
    tries: int


@dataclass(frozen=True)
class BatchInfo:
    id: str
    pipeline: str
    pipeline_version: str
    params: dict[str, Any]
    params_hash: str
    use_stored_pages: bool
    notify: str | None


def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class Ledger:
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
        self._insert_plans: dict[tuple[Any, ...], _InsertPlan] = {}
        # The per-item hot path (claim, complete) runs prepared statements: building and
        # cache-keying a new statement per commit showed up in profiles.
        t = ItemRow.__table__
        now = bindparam("now_", type_=UTCDateTime())
        keys = tuple_(t.c.id, t.c.attempts).in_(bindparam("keys_", expanding=True))
        self._claim_stmt = (
            update(t)
            .where(keys, t.c.status == "queued")
            .values(status="running", started_at=now, worker_id=bindparam("worker_"),
                    tries=t.c.tries + 1, next_try_at=None)
            .returning(t.c.id, t.c.attempts, t.c.batch_id, t.c.url, t.c.normalized_url, t.c.tries)
        )
        self._complete_stmt = (
            update(t)
            .where(keys, t.c.status == "running")
            .values(status="done", finished_at=now,
                    duration_s=func.coalesce(_seconds_since(self.dialect, t.c.started_at, now), 0.0),
                    error_type=None, error_message=None, traceback=None, retryable=None)
            .returning(t.c.id, t.c.attempts)
        )

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

    # ------------------------------------------------------------------ submit
    async def create_batch(
        self,
        spec: NewBatch,
        entries: Sequence[tuple[int, str, str]],
        *,
        use_cache: bool = True,
    ) -> SubmitOutcome:
        """Insert the batch and its items in one transaction.

        Items whose (normalized URL, pipeline, version, params) already have a result are created
        ``done`` with a copy of that result marked cached, unless ``use_cache`` is false.
        """
        now = utcnow()
        batch_id = new_batch_id(now)
        with translate_errors("creating a batch"):
            cached = await self._cached_results(spec, [e[2] for e in entries]) if use_cache else {}
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(BatchRow),
                    [
                        dict(
                            id=batch_id,
                            name=spec.name,
                            pipeline=spec.pipeline,
                            pipeline_version=spec.pipeline_version,
                            params=spec.params,
                            params_hash=spec.params_hash,
                            created_at=now,
                            total=len(entries),
                            duplicates=spec.duplicates,
                            invalid=spec.invalid,
                            use_stored_pages=spec.use_stored_pages,
                            source_batch_id=spec.source_batch_id,
                            notify=spec.notify,
                        )
                    ],
                )
                first_id = await self._reserve_ids(conn, len(entries))
                queued_rows: list[tuple[int, int, str, str]] = []
                cached_rows: list[tuple[int, int, str, str]] = []
                queued: list[tuple[int, int]] = []
                results = []
                for offset, (pos, url, norm) in enumerate(entries):
                    item_id = first_id + offset
                    hit = cached.get(norm)
                    if hit:
                        cached_rows.append((item_id, pos, url, norm))
                        results.append(
                            {**hit, "item_id": item_id, "batch_id": batch_id, "cached": True}
                        )
                    else:
                        queued_rows.append((item_id, pos, url, norm))
                        queued.append((item_id, 1))
                common = dict(batch_id=batch_id, attempts=1, tries=0, submitted_at=now)
                await self._insert_rows(conn, ItemRow.__table__, _ITEM_ROW, queued_rows,
                                        dict(common, status="queued", cached=False))
                await self._insert_rows(conn, ItemRow.__table__, _ITEM_ROW, cached_rows,
                                        dict(common, status="done", cached=True,
                                             finished_at=now, duration_s=0.0))
                for i in range(0, len(results), 2000):
                    await conn.execute(insert(ResultRow), results[i : i + 2000])
        return SubmitOutcome(batch_id, queued, len(results))

    async def _reserve_ids(self, conn: AsyncConnection, n: int) -> int:
        """Reserve ``n`` consecutive item ids so 100k items insert with one executemany."""
        if self.dialect == "sqlite":
            # BEGIN IMMEDIATE holds the write lock: nobody else can take ids until we commit.
            top = (await conn.execute(select(func.max(ItemRow.id)))).scalar()
            return (top or 0) + 1
        if n == 0:
            return 1
        # Serialize reservers so the ids are consecutive, then move the sequence past them.
        await conn.execute(text("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE"))
        top = (await conn.execute(select(func.max(ItemRow.id)))).scalar() or 0
        seq_top = (
            await conn.execute(
                text("SELECT last_value FROM items_id_seq")  # never behind max(id)
            )
        ).scalar() or 0
        first = max(top, seq_top) + 1
        await conn.execute(text("SELECT setval('items_id_seq', :v)"), {"v": first + n - 1})
        return first

    async def _cached_results(self, spec: NewBatch, norms: list[str]) -> dict[str, dict[str, Any]]:
        if not norms:
            return {}
        found: dict[str, dict[str, Any]] = {}
        cols = [
            ResultRow.normalized_url,
            ResultRow.pipeline,
            ResultRow.pipeline_version,
            ResultRow.params_hash,
            ResultRow.workbench_version,
            ResultRow.data,
            ResultRow.final_url,
            ResultRow.http_status,
            ResultRow.content_sha256,
            ResultRow.fetched_at,
            ResultRow.from_stored_page,
            ResultRow.timings,
            ResultRow.created_at,
        ]
        async with self.read_engine.connect() as conn:
            key = (
                ResultRow.pipeline == spec.pipeline,
                ResultRow.pipeline_version == spec.pipeline_version,
                ResultRow.params_hash == spec.params_hash,
            )
            # nothing analysed yet with this pipeline, version and params: skip the lookups
            if (await conn.execute(select(ResultRow.item_id).where(*key).limit(1))).first() is None:
                return {}
            for i in range(0, len(norms), _CHUNK):
                chunk = norms[i : i + _CHUNK]
                rows = await conn.execute(
                    select(*cols)
                    .where(*key, ResultRow.normalized_url.in_(chunk))
                    .order_by(ResultRow.created_at)
                )
                for row in rows:
                    found[row.normalized_url] = _row_dict(row)  # newest wins
        return found

    # ------------------------------------------------------------------ reads
    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        if not isinstance(batch_id, str) or not batch_id:
            raise InvalidInputError(f"batch id must be a non-empty string, got {batch_id!r}")
        with translate_errors("reading a batch"):
            async with self.read_engine.connect() as conn:
                row = (
                    await conn.execute(select(BatchRow.__table__).where(BatchRow.id == batch_id))
                ).first()
        if row is None:
            raise BatchNotFoundError(f"no batch with id {batch_id!r}")
        return _row_dict(row)

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

    async def counts(self, batch_id: str) -> dict[str, int]:
        with translate_errors("counting items"):
            async with self.read_engine.connect() as conn:
                rows = await conn.execute(
                    select(ItemRow.status, func.count())
                    .where(ItemRow.batch_id == batch_id)
                    .group_by(ItemRow.status)
                )
                counts = {s: 0 for s in ITEM_STATUSES}
                counts.update({status: n for status, n in rows})
        return counts

    async def list_batches(self) -> list[dict[str, Any]]:
        with translate_errors("listing batches"):
            async with self.read_engine.connect() as conn:
                batches = [
                    _row_dict(r)
                    for r in await conn.execute(
                        select(BatchRow.__table__).order_by(BatchRow.created_at)
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
                            ItemRow.batch_id, func.min(ItemRow.started_at), func.max(ItemRow.finished_at)
                        ).group_by(ItemRow.batch_id)
                    )
                }
        for b in batches:
            counts = {s: per.get(b["id"], {}).get(s, 0) for s in ITEM_STATUSES}
            b["counts"] = counts
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
        t = ItemRow.__table__
        q = select(t).where(t.c.batch_id == batch_id).order_by(t.c.id)
        if statuses:
            q = q.where(t.c.status.in_(list(statuses)))
        if limit is not None:
            q = q.limit(limit)
        if offset:
            q = q.offset(offset)
        with translate_errors("reading items"):
            async with self.read_engine.connect() as conn:
                return [_row_dict(r) for r in await conn.execute(q)]

    async def result_rows(self, batch_id: str) -> list[dict[str, Any]]:
        i, r = ItemRow.__table__, ResultRow.__table__
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
                r.c.timings,
            )
            .join(r, r.c.item_id == i.c.id)
            .where(i.c.batch_id == batch_id, i.c.status == "done")
            .order_by(i.c.id)
        )
        with translate_errors("reading results"):
            async with self.read_engine.connect() as conn:
                return [_row_dict(row) for row in await conn.execute(q)]

    # ------------------------------------------------------------------ retry / cancel
    async def retry(
        self, batch_id: str, item_ids: Sequence[int] | None = None
    ) -> list[tuple[int, int]]:
        """failed (or the given failed/cancelled items) -> queued with a new attempt number."""
        await self.get_batch(batch_id)
        t = ItemRow.__table__
        conds = [t.c.batch_id == batch_id]
        if item_ids is None:
            conds.append(t.c.status == "failed")
        else:
            ids = _check_ids(item_ids)
            async with self.read_engine.connect() as conn:
                known = {
                    row.id: row.status
                    for chunk in _chunks(ids)
                    for row in await conn.execute(
                        select(t.c.id, t.c.status).where(t.c.batch_id == batch_id, t.c.id.in_(chunk))
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
                    for chunk in _chunks(_check_ids(item_ids)):
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
        t = ItemRow.__table__
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

    async def _insert_rows(
        self,
        conn: AsyncConnection,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        fixed: dict[str, Any],
    ) -> None:
        """INSERT ``rows`` (values of ``columns``) plus ``fixed`` values shared by every row."""
        if not rows:
            return
        key = (table.name, tuple(columns), tuple(fixed))
        plan = self._insert_plans.get(key)
        if plan is None:
            plan = self._insert_plans[key] = _InsertPlan.build(conn.dialect, table, columns, fixed)
        await plan.run(conn, rows, fixed)

    # ------------------------------------------------------------------ worker side (grouped)
    async def claim(self, item_id: int, attempt: int, worker_id: str) -> ClaimedItem | None:
        """queued -> running for exactly this attempt; None if stale, cancelled or done."""
        return await self.committer.run_batched(self._claim_many, (item_id, attempt, worker_id))

    async def _claim_many(
        self, conn: AsyncConnection, claims: Sequence[tuple[int, int, str]]
    ) -> list[ClaimedItem | None]:
        """One UPDATE ... RETURNING per worker for every claim in this commit."""
        now = utcnow()
        by_worker: dict[str, list[tuple[int, int]]] = {}
        for item_id, attempt, worker_id in claims:
            by_worker.setdefault(worker_id, []).append((item_id, attempt))
        got: dict[tuple[int, int], ClaimedItem] = {}
        for worker_id, keys in by_worker.items():
            for chunk in _chunks(keys, _TUPLE_CHUNK):
                rows = await conn.execute(
                    self._claim_stmt, {"keys_": chunk, "now_": now, "worker_": worker_id}
                )
                for r in rows:
                    got[(r.id, r.attempts)] = ClaimedItem(
                        r.id, r.batch_id, r.url, r.normalized_url, r.attempts, r.tries
                    )
        # pop: should one job be claimed twice in a commit, only the first caller runs it
        return [got.pop((item_id, attempt), None) for item_id, attempt, _ in claims]

    def _guard(self, item_id: int, attempt: int) -> Any:
        t = ItemRow.__table__
        return and_(t.c.id == item_id, t.c.attempts == attempt, t.c.status == "running")

    async def complete(self, item_id: int, attempt: int, result: dict[str, Any]) -> bool:
        """running -> done with its result, in one transaction; False if the attempt is stale."""
        return await self.committer.run_batched(self._complete_many, (item_id, attempt, result))

    async def _complete_many(
        self, conn: AsyncConnection, items: Sequence[tuple[int, int, dict[str, Any]]]
    ) -> list[bool]:
        """One UPDATE ... RETURNING, one DELETE and one multi-row INSERT for every completion in
        this commit; the attempt guard decides per item."""
        r = ResultRow.__table__
        now = utcnow()
        done: set[tuple[int, int]] = set()
        for chunk in _chunks([(i, a) for i, a, _ in items], _TUPLE_CHUNK):
            res = await conn.execute(self._complete_stmt, {"keys_": chunk, "now_": now})
            done.update((row.id, row.attempts) for row in res)
        out: list[bool] = []
        rows: list[tuple[Any, ...]] = []
        for item_id, attempt, result in items:
            ok = (item_id, attempt) in done
            done.discard((item_id, attempt))  # one result per item, even if asked twice
            out.append(ok)
            if ok:
                rows.append((item_id, *_result_values(result)))
        if rows:
            for chunk in _chunks([row[0] for row in rows]):
                await conn.execute(r.delete().where(r.c.item_id.in_(chunk)))
            await self._insert_rows(conn, r, ("item_id", *_RESULT_FIELDS), rows,
                                    {"created_at": now})
        return out

    async def fail(self, item_id: int, attempt: int, error: dict[str, Any]) -> bool:
        t = ItemRow.__table__

        async def op(conn: AsyncConnection) -> bool:
            now = utcnow()
            res = await conn.execute(
                update(t)
                .where(self._guard(item_id, attempt))
                .values(
                    status="failed",
                    finished_at=now,
                    duration_s=func.coalesce(
                        _seconds_between(self.dialect, t.c.started_at, now), 0.0
                    ),
                    **error,
                )
            )
            return res.rowcount == 1

        return await self.committer.run(op)

    async def retry_later(
        self, item_id: int, attempt: int, error: dict[str, Any], delay_s: float
    ) -> int | None:
        """running -> queued with attempt + 1 (the error is kept for display). Returns the new
        attempt, or None if this attempt is stale."""
        t = ItemRow.__table__

        async def op(conn: AsyncConnection) -> int | None:
            res = await conn.execute(
                update(t)
                .where(self._guard(item_id, attempt))
                .values(
                    status="queued",
                    attempts=attempt + 1,
                    started_at=None,
                    worker_id=None,
                    next_try_at=utcnow() + timedelta(seconds=delay_s),
                    **error,
                )
            )
            return attempt + 1 if res.rowcount == 1 else None

        return await self.committer.run(op)

    async def hand_back(self, item_id: int, attempt: int) -> bool:
        """running -> queued, same attempt (the job stays in the queue): used on shutdown.
        The try is not counted against the item."""
        t = ItemRow.__table__

        async def op(conn: AsyncConnection) -> bool:
            res = await conn.execute(
                update(t)
                .where(self._guard(item_id, attempt))
                .values(status="queued", started_at=None, worker_id=None, tries=t.c.tries - 1)
            )
            return res.rowcount == 1

        return await self.committer.run(op)

    # ------------------------------------------------------------------ workers and reconcile
    async def register_worker(self, worker_id: str, **info: Any) -> None:
        now = utcnow()
        with translate_errors("registering a worker"):
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(WorkerRow),
                    [dict(id=worker_id, started_at=now, heartbeat_at=now, **info)],
                )

    async def heartbeat(self, worker_id: str, *, items_done: int | None = None) -> None:
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if items_done is not None:
            values["items_done"] = items_done
        with translate_errors("recording a heartbeat"):
            async with self.engine.begin() as conn:
                await conn.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(**values))

    async def stop_worker(self, worker_id: str) -> None:
        with translate_errors("recording a worker stop"):
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(WorkerRow).where(WorkerRow.id == worker_id).values(stopped_at=utcnow())
                )

    async def workers(self) -> list[dict[str, Any]]:
        async with self.read_engine.connect() as conn:
            return [
                _row_dict(r)
                for r in await conn.execute(
                    select(WorkerRow.__table__).order_by(WorkerRow.started_at)
                )
            ]

    async def requeue_lost(
        self, heartbeat_timeout_s: float, max_tries: int
    ) -> tuple[list[tuple[int, int]], int]:
        """Items running on a worker whose heartbeat lapsed (or that stopped without handing them
        back) go back to the queue with a new attempt, or fail once out of tries.
        Returns ((item_id, attempt) to enqueue, number failed)."""
        cutoff = utcnow() - timedelta(seconds=heartbeat_timeout_s)
        w, t = WorkerRow.__table__, ItemRow.__table__
        live = select(w.c.id).where(w.c.heartbeat_at >= cutoff, w.c.stopped_at.is_(None))
        lost = and_(
            t.c.status == "running",
            (t.c.started_at < cutoff) | t.c.started_at.is_(None),
            t.c.worker_id.is_(None) | t.c.worker_id.not_in(live),
        )
        err = dict(
            error_type="worker_lost",
            error_message="the worker running this item stopped heart-beating",
            retryable=True,
        )
        with translate_errors("requeueing lost items"):
            async with self.engine.begin() as conn:
                failed = await conn.execute(
                    update(t)
                    .where(lost, t.c.tries >= max_tries)
                    .values(status="failed", finished_at=utcnow(), **err)
                )
                res = await conn.execute(
                    update(t)
                    .where(lost)
                    .values(
                        status="queued",
                        attempts=t.c.attempts + 1,
                        started_at=None,
                        worker_id=None,
                        **err,
                    )
                    .returning(t.c.id, t.c.attempts)
                )
                return [(r.id, r.attempts) for r in res], failed.rowcount

    async def queued_jobs(self) -> list[tuple[int, int, datetime | None]]:
        t = ItemRow.__table__
        async with self.read_engine.connect() as conn:
            return [
                (r.id, r.attempts, r.next_try_at)
                for r in await conn.execute(
                    select(t.c.id, t.c.attempts, t.c.next_try_at).where(t.c.status == "queued")
                )
            ]

    async def count_queued(self) -> int:
        async with self.read_engine.connect() as conn:
            return (
                await conn.execute(select(func.count()).where(ItemRow.status == "queued"))
            ).scalar_one()

    async def active_count(self, batch_id: str) -> int:
        async with self.read_engine.connect() as conn:
            return (
                await conn.execute(
                    select(func.count()).where(
                        ItemRow.batch_id == batch_id, ItemRow.status.in_(ACTIVE_STATUSES)
                    )
                )
            ).scalar_one()

    async def claim_notification(self, batch_id: str) -> bool:
        """True for exactly one caller once the batch has settled: that caller sends the email."""
        if await self.active_count(batch_id):
            return False
        now = utcnow()
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(BatchRow)
                .where(BatchRow.id == batch_id, BatchRow.notified_at.is_(None))
                .values(notified_at=now, settled_at=now)
            )
            return res.rowcount == 1


_ITEM_ROW = ("id", "position", "url", "normalized_url")


@dataclass(frozen=True)
class _InsertPlan:
    """An INSERT run through the driver's executemany, with values converted by their column
    types but without SQLAlchemy's per-row parameter processing (most of the time of a 100k-URL
    submit, and of writing results): values shared by every row are converted once."""

    sql: str
    arrange: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]  # per-row columns that need one
    fixed_converters: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def build(
        cls, dialect: Any, table: Table, columns: Sequence[str], fixed: dict[str, Any]
    ) -> _InsertPlan:
        given = [*columns, *fixed]
        compiled = insert(table).values({c: bindparam(c) for c in given}).compile(dialect=dialect)
        order = list(compiled.positiontup or ())
        if sorted(order) != sorted(given):  # a column default would slip in unconverted
            raise AssertionError(f"parameters {order} are not the columns given {given}")
        converters = []
        for i, name in enumerate(columns):
            process = table.c[name].type.bind_processor(dialect)
            if process is not None:
                converters.append((i, process))
        return cls(
            sql=str(compiled),
            arrange=itemgetter(*(given.index(name) for name in order)),
            converters=tuple(converters),
            fixed_converters=tuple(table.c[n].type.bind_processor(dialect) for n in fixed),
        )

    async def run(
        self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]], fixed: dict[str, Any],
        chunk: int = 5000,
    ) -> None:
        tail = tuple(
            process(value) if process else value
            for process, value in zip(self.fixed_converters, fixed.values(), strict=True)
        )
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            if self.converters:
                part = [self._convert(row) for row in part]
            await conn.exec_driver_sql(self.sql, [self.arrange(row + tail) for row in part])

    def _convert(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, process in self.converters:
            values[i] = process(values[i])
        return tuple(values)


_RESULT_FIELDS = (
    "batch_id", "normalized_url", "pipeline", "pipeline_version", "params_hash",
    "workbench_version", "data", "final_url", "http_status", "content_sha256", "fetched_at",
    "cached", "from_stored_page", "timings",
)
_RESULT_DEFAULTS: dict[str, Any] = {"cached": False, "from_stored_page": False, "timings": {}}


def _result_values(result: dict[str, Any]) -> tuple[Any, ...]:
    unknown = result.keys() - _RESULT_FIELDS
    if unknown:
        raise ValueError(f"unknown result field(s): {', '.join(sorted(unknown))}")
    return tuple(result.get(f, _RESULT_DEFAULTS.get(f)) for f in _RESULT_FIELDS)


def _seconds_since(dialect: str, start: Any, now: Any) -> Any:
    """SQL for the seconds from column ``start`` to the bound UTC datetime ``now``."""
    if dialect == "sqlite":  # the bound value is SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff"
        return (func.julianday(now) - func.julianday(start)) * 86400.0
    return func.extract("epoch", now - start)


def _seconds_between(dialect: str, start: Any, end: datetime) -> Any:
    naive_end = end.astimezone(UTC).replace(tzinfo=None)
    if dialect == "sqlite":
        return (func.julianday(naive_end.isoformat(sep=" ")) - func.julianday(start)) * 86400.0
    return func.extract("epoch", naive_end - start)


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


def _chunks(ids: Sequence[T], size: int = _CHUNK) -> list[Sequence[T]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]
