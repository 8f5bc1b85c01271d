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

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workbench.ledger import counters
from workbench.ledger.bulk import BulkInserter
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import BatchRow, ItemRow, ResultBulkRow, ResultRow
from workbench.ledger.shapes import write_parts
from workbench.ledger.sql import CHUNK, table_of, utcnow


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
#: batch_id, cached); normalized_url first (``_cached_results`` keys by it)
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
                            carried=spec.carried,
                        )
                    ],
                )
                first_id = await self._reserve_ids(conn, len(entries))
                queued = array("q")
                copies = 0
                common = dict(batch_id=batch_id, attempts=1, tries=0, submitted_at=now)
                names = _ITEM_ROW if carried is None else _ITEM_ROW_CARRIED
                # chunk by chunk, so that the rows of only one chunk are built at a time (a 1M
                # submit held 1M row tuples and 1M job tuples at once: ~180 MB)
                for start in range(0, len(entries), _ENTRY_CHUNK):
                    queued_rows: list[tuple[Any, ...]] = []
                    cached_rows: list[tuple[Any, ...]] = []
                    results = []
                    bulk_rows: list[tuple[int, str]] = []
                    for offset in range(start, min(start + _ENTRY_CHUNK, len(entries))):
                        pos, url, norm = entries[offset]
                        item_id = first_id + offset
                        hit = cached.get(norm)
                        row: tuple[Any, ...] = (item_id, pos, url, norm)
                        if carried is not None:
                            row = (*row, carried[offset])
                        if hit:
                            cached_rows.append(row)
                            if hit[-1] is not None:  # its bulky parts
                                bulk_rows.append((item_id, hit[-1]))
                            results.append((item_id, *hit[:-1]))
                        else:
                            queued_rows.append(row)
                            queued.append(item_id)
                    await self._bulk.insert(conn, table_of(ItemRow), names, queued_rows,
                                            dict(common, status="queued", cached=False))
                    await self._bulk.insert(conn, table_of(ItemRow), names, cached_rows,
                                            dict(common, status="done", cached=True,
                                                 finished_at=now, duration_s=0.0))
                    await self._bulk.insert(conn, table_of(ResultRow), ("item_id", *_COPIED),
                                            results, dict(batch_id=batch_id, cached=True))
                    # the copies name shapes already registered
                    await write_parts(conn, self._bulk, bulk_rows, {})
                    copies += len(results)
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

    async def _cached_results(
        self, spec: NewBatch, norms: list[str]
    ) -> dict[str, tuple[Any, ...]]:
        """For each of ``norms`` analysed before with this pipeline, version and params, the
        newest result's values of ``_COPIED`` and, last, its bulky parts (or None): plain
        tuples, copied through the bulk inserter (a dict per row and SQLAlchemy's executemany
        were most of a 10,000-URL resubmission)."""
        if not norms:
            return {}
        found: dict[str, tuple[Any, ...]] = {}
        bulk = table_of(ResultBulkRow)
        results = table_of(ResultRow)
        cols = [*(results.c[name] for name in _COPIED), bulk.c.data.label("bulk")]
        async with self.read_engine.connect() as conn:
            key = (
                ResultRow.pipeline == spec.pipeline,
                ResultRow.pipeline_version == spec.pipeline_version,
                ResultRow.params_hash == spec.params_hash,
            )
            # nothing analysed yet with this pipeline, version and params: skip the lookups
            if (await conn.execute(select(ResultRow.item_id).where(*key).limit(1))).first() is None:
                return {}
            for i in range(0, len(norms), CHUNK):
                chunk = norms[i : i + CHUNK]
                rows = await conn.execute(
                    select(*cols)
                    .select_from(results.outerjoin(bulk, bulk.c.item_id == ResultRow.item_id))
                    .where(*key, ResultRow.normalized_url.in_(chunk))
                    .order_by(ResultRow.created_at, ResultRow.item_id)
                )
                for row in rows:
                    found[row[0]] = tuple(row)  # newest wins (row[0]: normalized_url)
        return found
