"""The worker's side of the ledger: per-item writes and the worker records.

Claim, complete, fail, retry later and hand back go through the group committer (claims and
completions batched into one statement per commit) and are guarded by the attempt number, so a
stale attempt never overwrites a newer one. Workers register, heart-beat and stop here, and
reconcile finds the items of lost workers and the queued jobs. ``Ledger`` inherits
``WorkMixin``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workbench.ledger import counters
from workbench.ledger.bulk import BulkInserter
from workbench.ledger.committer import GroupCommitter
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import ItemRow, ResultBulkRow, ResultRow, UTCDateTime, WorkerRow
from workbench.ledger.shapes import StoredResult, delete_parts, store_result, write_parts
from workbench.ledger.sql import TUPLE_CHUNK, chunks, row_dict, table_of, utcnow


def storable_error(error: dict[str, Any]) -> dict[str, Any]:
    """An item's error with each NUL character of its text replaced by U+FFFD: PostgreSQL's
    text cannot hold NUL (the write would fail, and the item with it), and a NUL would end a
    value of SQLite's chunk reads early (``chunks.row_line``). An exception's message can
    quote a hostile page's bytes."""
    return {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v
            for k, v in error.items()}


@dataclass(frozen=True)
class ClaimedItem:
    item_id: int
    batch_id: str
    url: str
    normalized_url: str
    attempt: int
    tries: int


def work_statements(dialect: str) -> tuple[Any, Any]:
    """The claim and complete UPDATEs, built once per ``Ledger`` and run with bound parameters
    (``ids_``, ``keys_``, ``now_``, and ``worker_`` for claims)."""
    t = table_of(ItemRow)
    now = bindparam("now_", type_=UTCDateTime())
    # The rows are found by primary key (id IN ...); the attempt guard and the expected status
    # are a row value, not a "status = ?" term: on SQLite, with 150k items queued, that term made
    # the planner walk a (status, worker_id) index (since replaced by a partial one) over every
    # queued row (0.6 ms per item updated, 50x the primary-key path), and a row-value IN alone
    # scans the table.
    keys = and_(
        t.c.id.in_(bindparam("ids_", expanding=True)),
        tuple_(t.c.id, t.c.attempts, t.c.status).in_(bindparam("keys_", expanding=True)),
    )
    claim = (
        update(t)
        .where(keys)
        .values(status="running", started_at=now, worker_id=bindparam("worker_"),
                tries=t.c.tries + 1, next_try_at=None)
        .returning(t.c.id, t.c.attempts, t.c.batch_id, t.c.url, t.c.normalized_url, t.c.tries)
    )
    complete = (
        update(t)
        .where(keys)
        .values(status="done", finished_at=now,
                duration_s=func.coalesce(_seconds_since(dialect, t.c.started_at, now), 0.0),
                error_type=None, error_message=None, traceback=None, retryable=None)
        .returning(t.c.id, t.c.attempts)
    )
    return claim, complete


# The same writes on a plain sqlite3 connection (``ledger.direct``): one row found by primary key
# per item (``id = ?`` always seeks by rowid), run through sqlite3's statement cache.
_CLAIM_SQL = (
    "UPDATE items SET status = 'running', tries = tries + 1, started_at = ?, next_try_at = NULL,"
    " worker_id = ? WHERE id = ? AND attempts = ? AND status = 'queued'"
    " RETURNING id, attempts, batch_id, url, normalized_url, tries"
)
_COMPLETE_SQL = (
    "UPDATE items SET status = 'done', finished_at = ?,"
    " duration_s = coalesce((julianday(?) - julianday(started_at)) * 86400.0, 0.0),"
    " error_type = NULL, error_message = NULL, traceback = NULL, retryable = NULL"
    " WHERE id = ? AND attempts = ? AND status = 'running'"
)
_SHAPE_SQL = "INSERT INTO result_shapes (id, fields) VALUES (?, ?) ON CONFLICT DO NOTHING"


class WorkMixin:
    """Worker-side writes and worker records, for ``Ledger``: uses its engines, group committer,
    bulk inserter and the statements of ``work_statements``."""

    dialect: str
    engine: AsyncEngine
    read_engine: AsyncEngine
    committer: GroupCommitter
    _bulk: BulkInserter
    _claim_stmt: Any
    _complete_stmt: Any

    # ------------------------------------------------------------------ per-item writes (grouped)
    async def claim(self, item_id: int, attempt: int, worker_id: str) -> ClaimedItem | None:
        """queued -> running for exactly this attempt; None if stale, cancelled or done."""
        return await self.committer.run_batched(
            self._claim_many, (item_id, attempt, worker_id), self._claim_direct
        )

    def _sqlite_now(self) -> Any:
        """Now as SQLAlchemy binds a ``UTCDateTime`` on SQLite (the text every row holds)."""
        return _now_binder(self.engine.dialect)(utcnow())

    def _claim_direct(
        self, conn: sqlite3.Connection, claims: Sequence[tuple[int, int, str]]
    ) -> list[ClaimedItem | None]:
        """``_claim_many`` on the direct writer's connection: one prepared UPDATE per claim."""
        now = self._sqlite_now()
        out: list[ClaimedItem | None] = []
        for item_id, attempt, worker_id in claims:
            # fetchall: a statement left unfinished would keep COMMIT from running
            got = conn.execute(_CLAIM_SQL, (now, worker_id, item_id, attempt)).fetchall()
            out.append(ClaimedItem(got[0][0], got[0][2], got[0][3], got[0][4], got[0][1],
                                   got[0][5]) if got else None)
        return out

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
            for chunk in chunks(keys, TUPLE_CHUNK):
                rows = await conn.execute(
                    self._claim_stmt,
                    {"ids_": [i for i, _ in chunk], "keys_": [(i, a, "queued") for i, a in chunk],
                     "now_": now, "worker_": worker_id},
                )
                for r in rows:
                    got[(r.id, r.attempts)] = ClaimedItem(
                        r.id, r.batch_id, r.url, r.normalized_url, r.attempts, r.tries
                    )
        # pop: should one job be claimed twice in a commit, only the first caller runs it
        return [got.pop((item_id, attempt), None) for item_id, attempt, _ in claims]

    def _guard(self, item_id: int, attempt: int) -> Any:
        t = table_of(ItemRow)
        return and_(t.c.id == item_id, t.c.attempts == attempt, t.c.status == "running")

    async def complete(self, item_id: int, attempt: int, result: dict[str, Any]) -> bool:
        """running -> done with its result, in one transaction; False if the attempt is stale."""
        return await self.committer.run_batched(
            self._complete_many, (item_id, attempt, result), self._complete_direct
        )

    def _complete_direct(
        self, conn: sqlite3.Connection, items: Sequence[tuple[int, int, dict[str, Any]]]
    ) -> list[bool]:
        """``_complete_many`` on the direct writer's connection: one prepared UPDATE per item,
        then one executemany per table (results, their bulky parts, new shapes)."""
        now = self._sqlite_now()
        out: list[bool] = []
        accepted: list[tuple[int, dict[str, Any]]] = []
        for item_id, attempt, result in items:
            ok = conn.execute(_COMPLETE_SQL, (now, now, item_id, attempt)).rowcount == 1
            out.append(ok)
            if ok:
                accepted.append((item_id, result))
        rows, bulk_rows, shapes = _stored_rows(accepted)
        if rows:
            ids = [(row[0],) for row in rows]
            conn.executemany("DELETE FROM results WHERE item_id = ?", ids)
            conn.executemany("DELETE FROM result_bulk WHERE item_id = ?", ids)
            dialect, created = self.engine.dialect, {"created_at": utcnow()}
            plan = self._bulk.plan(dialect, table_of(ResultRow),
                                   ("item_id", *_RESULT_FIELDS, "shape"), created)
            conn.executemany(plan.sql, plan.params(rows, created))
            if bulk_rows:
                plan = self._bulk.plan(dialect, table_of(ResultBulkRow), ("item_id", "data"), {})
                conn.executemany(plan.sql, plan.params(bulk_rows, {}))
            conn.executemany(_SHAPE_SQL, sorted(shapes.items()))
        return out

    async def _complete_many(
        self, conn: AsyncConnection, items: Sequence[tuple[int, int, dict[str, Any]]]
    ) -> list[bool]:
        """One UPDATE ... RETURNING, then DELETEs and multi-row INSERTs of the results and their
        bulky parts (``ledger.shapes``), for every completion in this commit; the attempt guard
        decides per item."""
        r = table_of(ResultRow)
        now = utcnow()
        done: set[tuple[int, int]] = set()
        for chunk in chunks([(i, a) for i, a, _ in items], TUPLE_CHUNK):
            res = await conn.execute(
                self._complete_stmt,
                {"ids_": [i for i, _ in chunk], "keys_": [(i, a, "running") for i, a in chunk],
                 "now_": now},
            )
            done.update((row.id, row.attempts) for row in res)
        out: list[bool] = []
        accepted: list[tuple[int, dict[str, Any]]] = []
        for item_id, attempt, result in items:
            ok = (item_id, attempt) in done
            done.discard((item_id, attempt))  # one result per item, even if asked twice
            out.append(ok)
            if ok:
                accepted.append((item_id, result))
        rows, bulk_rows, shapes = _stored_rows(accepted)
        if rows:
            await delete_parts(conn, r, [row[0] for row in rows])
            await self._bulk.insert(conn, r, ("item_id", *_RESULT_FIELDS, "shape"), rows,
                                    {"created_at": now})
            await write_parts(conn, self._bulk, bulk_rows, shapes)
        return out

    async def fail(self, item_id: int, attempt: int, error: dict[str, Any]) -> bool:
        t = table_of(ItemRow)
        error = storable_error(error)

        async def op(conn: AsyncConnection) -> bool:
            now = utcnow()
            res = await conn.execute(
                update(t)
                .where(self._guard(item_id, attempt))
                .values(
                    status="failed",
                    finished_at=now,
                    duration_s=func.coalesce(
                        _seconds_since(self.dialect, t.c.started_at, literal(now, UTCDateTime())),
                        0.0,
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
        t = table_of(ItemRow)
        error = storable_error(error)

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
        t = table_of(ItemRow)

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
                await conn.execute(
                    update(WorkerRow).where(WorkerRow.id == worker_id).values(**values)
                )

    async def stop_worker(self, worker_id: str) -> None:
        with translate_errors("recording a worker stop"):
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(WorkerRow).where(WorkerRow.id == worker_id).values(stopped_at=utcnow())
                )

    async def workers(self) -> list[dict[str, Any]]:
        with translate_errors("listing workers"):
            async with self.read_engine.connect() as conn:
                return [
                    row_dict(r)
                    for r in await conn.execute(
                        select(table_of(WorkerRow)).order_by(WorkerRow.started_at)
                    )
                ]

    async def dead_workers(self, worker_ids: Sequence[str], heartbeat_timeout_s: float) -> set[str]:
        """Those of ``worker_ids`` the ledger knows to be gone: stopped, or whose heartbeat
        lapsed (``requeue_lost``'s rule). An id it does not know is not in the answer."""
        ids = sorted(set(worker_ids))
        if not ids:
            return set()
        cutoff = utcnow() - timedelta(seconds=heartbeat_timeout_s)
        w = table_of(WorkerRow)
        q = select(w.c.id).where(
            w.c.id.in_(ids), w.c.stopped_at.is_not(None) | (w.c.heartbeat_at < cutoff))
        with translate_errors("listing dead workers"):
            async with self.read_engine.connect() as conn:
                return {r.id for r in await conn.execute(q)}

    async def requeue_lost(
        self, heartbeat_timeout_s: float, max_tries: int
    ) -> tuple[list[tuple[int, int]], int]:
        """Items running on a worker whose heartbeat lapsed (or that stopped without handing them
        back) go back to the queue with a new attempt, or fail once out of tries.
        Returns ((item_id, attempt) to enqueue, number failed)."""
        cutoff = utcnow() - timedelta(seconds=heartbeat_timeout_s)
        w, t = table_of(WorkerRow), table_of(ItemRow)
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

    async def queued_jobs(
        self, chunk_rows: int = 20_000
    ) -> AsyncGenerator[list[tuple[int, int, datetime | None]], None]:
        """``(item id, attempt, next try)`` of every queued item, ``chunk_rows`` at a time (a
        full reconcile of a million queued items held them all at once): batch by batch (those
        whose counters hold queued items), in item order through ``ix_items_batch_status_id``,
        each chunk one short read."""
        t = table_of(ItemRow)
        with translate_errors("listing queued items"):
            async with self.read_engine.connect() as conn:
                batch_ids = await counters.batches_with(conn, "queued")
        for batch_id in batch_ids:
            after = 0
            while True:
                with translate_errors("listing queued items"):
                    async with self.read_engine.connect() as conn:
                        rows = [
                            (r.id, r.attempts, r.next_try_at)
                            for r in await conn.execute(
                                select(t.c.id, t.c.attempts, t.c.next_try_at)
                                .where(t.c.batch_id == batch_id, t.c.status == "queued",
                                       t.c.id > after)
                                .order_by(t.c.id)
                                .limit(chunk_rows)
                            )
                        ]
                if not rows:
                    break
                yield rows
                if len(rows) < chunk_rows:
                    break
                after = rows[-1][0]

    async def count_queued(self) -> int:
        """Queued items of every batch, from the batches' counters."""
        with translate_errors("counting queued items"):
            async with self.read_engine.connect() as conn:
                return await counters.total(conn, "queued")


_RESULT_FIELDS = (
    "batch_id", "normalized_url", "pipeline", "pipeline_version", "params_hash",
    "workbench_version", "data", "final_url", "http_status", "content_sha256", "fetched_at",
    "cached", "from_stored_page", "timings",
)
_GIVEN = frozenset(_RESULT_FIELDS)
_RESULT_DEFAULTS: dict[str, Any] = {"cached": False, "from_stored_page": False, "timings": {}}
_DATA = _RESULT_FIELDS.index("data")


def _stored_rows(
    accepted: Sequence[tuple[int, dict[str, Any]]],
) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]], dict[str, str]]:
    """The results table's rows, their bulky parts and the shapes they use, for the completions
    the attempt guard accepted (both write paths store the same rows)."""
    rows: list[tuple[Any, ...]] = []
    bulk_rows: list[tuple[int, str]] = []
    shapes: dict[str, str] = {}
    for item_id, result in accepted:
        values, stored = _result_values(result)
        rows.append((item_id, *values))
        if stored.bulk is not None:
            bulk_rows.append((item_id, stored.bulk))
        shapes[stored.shape_id] = stored.shape
    return rows, bulk_rows, shapes


def _result_values(result: dict[str, Any]) -> tuple[tuple[Any, ...], StoredResult]:
    """The results row's values (``_RESULT_FIELDS``, then ``shape``) and the stored parts."""
    unknown = result.keys() - _GIVEN
    if unknown:
        raise ValueError(f"unknown result field(s): {', '.join(sorted(unknown))}")
    values = [result.get(f, _RESULT_DEFAULTS.get(f)) for f in _RESULT_FIELDS]
    stored = store_result(str(values[_DATA]))
    values[_DATA] = stored.data
    return (*values, stored.shape_id), stored


@functools.lru_cache(maxsize=4)
def _now_binder(dialect: Any) -> Callable[[datetime], Any]:
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return process or (lambda value: value)


def _seconds_since(dialect: str, start: Any, now: Any) -> Any:
    """SQL for the seconds from column ``start`` to the bound UTC datetime ``now``."""
    if dialect == "sqlite":  # the bound value is SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff"
        return (func.julianday(now) - func.julianday(start)) * 86400.0
    return func.extract("epoch", now - start)
