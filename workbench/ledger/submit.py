"""Submitting a batch: the batch row, its items (ids reserved up front, rows inserted in bulk)
and, for URLs analysed before with the same pipeline, version and params, copies of the earlier
results (with their bulky parts, ``ledger.shapes``), all in one transaction.
``Ledger.create_batch`` is ``SubmitMixin.create_batch``.
"""

from __future__ import annotations

import secrets
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from sqlalchemy import BigInteger, String, bindparam, func, insert, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workbench.core.errors import LedgerError
from workbench.ledger import counters
from workbench.ledger.bulk import BulkInserter
from workbench.ledger.checkpoint import WalCheckpointer, bulk_transaction
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import BatchRow, ItemRow, ResultBulkRow, ResultRow
from workbench.ledger.sql import CHUNK, driver_run, table_of, utcnow


def new_batch_id(now: datetime | None = None) -> str:
    """Sortable and readable: ``b-20261129-205530-3f9a1c07``."""
    now = now or utcnow()
    return f"b-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


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
    #: the columns carried with each item: [[name, stored, dtype], ...] (``inputs.tables``)
    carried: list[list[str]] | None = None


class FirstAttempts(Sequence[tuple[int, int]]):
    """``(item_id, 1)`` for each id: the jobs of a new batch, 8 bytes each (a list of tuples
    took ~85 MB for a 1M-item batch)."""

    def __init__(self, ids: array[int]):
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, int]]: ...
    def __getitem__(self, index: int | slice) -> tuple[int, int] | list[tuple[int, int]]:
        if isinstance(index, slice):
            return [(i, 1) for i in self._ids[index]]
        return self._ids[index], 1


@dataclass(frozen=True)
class SubmitOutcome:
    batch_id: str
    queued: Sequence[tuple[int, int]]  # (item_id, attempt) to enqueue
    cached: int


_ENTRY_CHUNK = 20_000
#: the columns of a result its cached copy takes as they are (the copy's own: item_id,
#: batch_id, cached), copied inside the database (``_copy_results``)
_COPIED = ("normalized_url", "pipeline", "pipeline_version", "params_hash", "workbench_version",
           "data", "shape", "final_url", "http_status", "content_sha256", "fetched_at",
           "from_stored_page", "timings", "created_at")
_ITEM_ROW = ("id", "position", "url", "normalized_url")
_ITEM_ROW_CARRIED = (*_ITEM_ROW, "carried")


class SubmitMixin:
    """Batch creation, for ``Ledger``: uses its engines and bulk inserter."""

    dialect: str
    engine: AsyncEngine
    read_engine: AsyncEngine
    checkpointer: WalCheckpointer | None
    _bulk: BulkInserter

    async def create_batch(
        self,
        spec: NewBatch,
        entries: Sequence[tuple[int, str, str]],
        *,
        use_cache: bool = True,
        carried: Sequence[str | None] | None = None,
    ) -> SubmitOutcome:
        """Insert the batch and its items in one transaction.

        Items whose (normalized URL, pipeline, version, params) already have a result are created
        ``done`` with a copy of that result marked cached, unless ``use_cache`` is false.
        ``carried``: per entry, the JSON text of its input row's other columns (or None).
        """
        if carried is not None and len(carried) != len(entries):
            raise ValueError(f"{len(carried)} carried rows for {len(entries)} entries")
        now = utcnow()
        batch_id = new_batch_id(now)
        with translate_errors("creating a batch"):
            async with bulk_transaction(self.engine, self.checkpointer,
                                        rows=len(entries)) as conn:
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
                            carried=spec.carried,
                        )
                    ],
                )
                first_id = await self._reserve_ids(conn, len(entries))
                copying = use_cache and await self._any_result(conn, spec)
                queued = array("q")
                copies = 0
                common = dict(batch_id=batch_id, attempts=1, tries=0, submitted_at=now)
                names = _ITEM_ROW if carried is None else _ITEM_ROW_CARRIED
                # chunk by chunk, so that the rows of only one chunk are built at a time (a 1M
                # submit held 1M row tuples and 1M job tuples at once: ~180 MB)
                for start in range(0, len(entries), _ENTRY_CHUNK):
                    end = min(start + _ENTRY_CHUNK, len(entries))
                    cached = await self._cached_results(
                        conn, spec, [entries[i][2] for i in range(start, end)]
                    ) if copying else {}
                    queued_rows: list[tuple[Any, ...]] = []
                    cached_rows: list[tuple[Any, ...]] = []
                    copied: list[tuple[int, int]] = []  # (new item, the item copied)
                    for offset in range(start, end):
                        pos, url, norm = entries[offset]
                        item_id = first_id + offset
                        source = cached.get(norm)
                        row: tuple[Any, ...] = (item_id, pos, url, norm)
                        if carried is not None:
                            row = (*row, carried[offset])
                        if source is not None:
                            cached_rows.append(row)
                            copied.append((item_id, source))
                        else:
                            queued_rows.append(row)
                            queued.append(item_id)
                    await self._bulk.insert(conn, table_of(ItemRow), names, queued_rows,
                                            dict(common, status="queued", cached=False))
                    await self._bulk.insert(conn, table_of(ItemRow), names, cached_rows,
                                            dict(common, status="done", cached=True,
                                                 finished_at=now, duration_s=0.0))
                    await _copy_results(conn, batch_id, copied)
                    copies += len(copied)
                await counters.start(conn, batch_id, queued=len(queued), done=copies)
        return SubmitOutcome(batch_id, FirstAttempts(queued), copies)

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

    async def _any_result(self, conn: AsyncConnection, spec: NewBatch) -> bool:
        """Whether anything was analysed with this pipeline, version and params (if not, a
        submit looks nothing up)."""
        key = _cache_key(spec)
        return (await conn.execute(select(ResultRow.item_id).where(*key).limit(1))).first() \
            is not None

    async def _cached_results(
        self, conn: AsyncConnection, spec: NewBatch, norms: Sequence[str]
    ) -> dict[str, int]:
        """For each of ``norms`` (one chunk of a submit) analysed before with this pipeline,
        version and params: the item whose result is the newest. Read in the submit's
        transaction, a chunk at a time, so that a resubmission of a million URLs holds the hits
        of one chunk, not a million results."""
        found: dict[str, int] = {}
        key = (spec.pipeline, spec.pipeline_version, spec.params_hash)
        for i in range(0, len(norms), CHUNK):
            part = norms[i : i + CHUNK]
            sql = _lookup_sql(conn.dialect, len(part))
            try:
                rows = await driver_run(conn, sql, [*key, *part])
            except Exception as exc:  # the driver's own errors
                raise LedgerError(f"ledger error while looking up results: {exc}") from exc
            for norm, item_id in rows:
                found[norm] = item_id  # newest wins
        return found


def _cache_key(spec: NewBatch) -> tuple[Any, ...]:
    return (
        ResultRow.pipeline == spec.pipeline,
        ResultRow.pipeline_version == spec.pipeline_version,
        ResultRow.params_hash == spec.params_hash,
    )


def _copy_statements(dialect: Any) -> tuple[str, str]:
    """INSERT ... SELECT of a result (marked cached, under a new item and batch) and of its bulky
    parts, compiled once per dialect: the copy never leaves the database (decoding each result's
    JSON and timestamps to encode them again was most of a resubmission)."""
    compiled = _COPY_SQL.get(dialect.name)
    if compiled is None:
        results, bulk = table_of(ResultRow), table_of(ResultBulkRow)
        new_id = bindparam("new_id", type_=BigInteger)
        src_id = bindparam("src_id", type_=BigInteger)
        result = insert(results).from_select(
            ["item_id", "batch_id", "cached", *_COPIED],
            select(new_id, bindparam("batch_id", type_=String), true(),
                   *(results.c[name] for name in _COPIED)).where(results.c.item_id == src_id),
        )
        parts = insert(bulk).from_select(
            ["item_id", "data"], select(new_id, bulk.c.data).where(bulk.c.item_id == src_id))
        compiled = _COPY_SQL[dialect.name] = (
            _positional(result, dialect, ("new_id", "batch_id", "src_id")),
            _positional(parts, dialect, ("new_id", "src_id")),
        )
    return compiled


def _positional(stmt: Any, dialect: Any, order: tuple[str, ...]) -> str:
    """``stmt`` as the driver's SQL, its parameters passed by position in ``order``."""
    compiled = stmt.compile(dialect=dialect)
    if tuple(compiled.positiontup or ()) != order:
        raise AssertionError(f"parameters {compiled.positiontup} are not in the order {order}")
    return str(compiled)


_COPY_SQL: dict[str, tuple[str, str]] = {}
#: the cache look-up of ``CHUNK`` URLs, compiled once per dialect: built and compiled again for
#: every 500 URLs it was ~1.5 s of the client's CPU in a 1M-URL submit whenever the ledger held
#: any result of the pipeline (even with no URL in common)
_LOOKUP_SQL: dict[tuple[str, int], str] = {}  # (dialect, n)


def _lookup_sql(dialect: Any, n: int) -> str:
    """SELECT (normalized_url, item_id) of the results of one pipeline, version and params
    (the first three parameters) for ``n`` URLs (the rest), oldest first."""
    key = (dialect.name, n)
    sql = _LOOKUP_SQL.get(key)
    if sql is None:
        r = table_of(ResultRow)
        stmt = (
            select(r.c.normalized_url, r.c.item_id)
            .where(r.c.pipeline == bindparam("p", ""), r.c.pipeline_version == bindparam("v", ""),
                   r.c.params_hash == bindparam("h", ""),
                   r.c.normalized_url.in_(bindparam("u", value=[""] * n, expanding=True)))
            .order_by(r.c.created_at, r.c.item_id)
        )
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        order = list(compiled.positiontup or ())
        if order != ["p", "v", "h", *(f"u_{k}" for k in range(1, n + 1))]:
            raise RuntimeError(f"unexpected parameter order in the cache look-up: {order[:5]}")
        sql = str(compiled)
        if n == CHUNK:  # the last, shorter look-up of a submit is compiled each time
            _LOOKUP_SQL[key] = sql
    return sql


async def _copy_results(conn: AsyncConnection, batch_id: str,
                        copied: Sequence[tuple[int, int]]) -> None:
    """Copy the results (and bulky parts) of ``(new item, source item)`` pairs, in the caller's
    transaction. The copies name shapes already registered."""
    if not copied:
        return
    result_sql, parts_sql = _copy_statements(conn.dialect)
    await conn.exec_driver_sql(result_sql, [(new, batch_id, src) for new, src in copied])
    await conn.exec_driver_sql(parts_sql, list(copied))
