"""The stored pages a batch analysed, read in chunks for a WARC export (``batch.export_warc``).

A done item's result names the page it analysed by ``(normalized_url, content_sha256)``; the
snapshot with that URL and hash (the newest, when the page was fetched more than once with the
same bytes) gives the status, headers and fetch time, and its blob the body. Results without a
hash (a pipeline that fetched nothing) and pages whose snapshot was cleaned up are skipped and
counted. Chunks are read by keyset pagination on the item id, one short read transaction each,
so memory follows the chunk, not the batch.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from workbench.core.page import Page
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import ItemRow, PageBlobRow, ResultRow, SnapshotRow
from workbench.ledger.pages import decompress_page
from workbench.ledger.sql import table_of
from workbench.ledger.store import Ledger


@dataclass
class ArchiveStats:
    """What a read of a batch's pages found (pass one in to have it filled)."""

    pages: int = 0
    no_page: int = 0  # done items whose result names no stored page
    missing: list[int] = field(default_factory=list)  # item ids whose page was cleaned up


async def result_pages(
    ledger: Ledger, batch_id: str, *, chunk_rows: int = 500, stats: ArchiveStats | None = None
) -> AsyncGenerator[list[Page], None]:
    """The pages the batch's done items analysed, in item order, ``chunk_rows`` items a chunk."""
    stats = stats if stats is not None else ArchiveStats()
    i, r = table_of(ItemRow), table_of(ResultRow)
    s, b = table_of(SnapshotRow), table_of(PageBlobRow)
    after = 0
    while True:
        with translate_errors("reading the stored pages of a batch"):
            async with ledger.read_engine.connect() as conn:
                rows = (await conn.execute(
                    select(i.c.id, r.c.normalized_url, r.c.content_sha256)
                    .select_from(i.join(r, r.c.item_id == i.c.id))
                    .where(i.c.batch_id == batch_id, i.c.status == "done", i.c.id > after)
                    .order_by(i.c.id).limit(chunk_rows)
                )).all()
                if not rows:
                    return
                after = rows[-1].id
                shas = sorted({row.content_sha256 for row in rows if row.content_sha256})
                snaps: dict[tuple[str, str], Any] = {}
                blobs: dict[str, bytes] = {}
                if shas:
                    for found in await conn.execute(
                        select(s).where(s.c.sha256.in_(shas)).order_by(s.c.fetched_at, s.c.id)
                    ):
                        snaps[(found.normalized_url, found.sha256)] = found  # the newest wins
                    for stored in await conn.execute(
                        select(b.c.sha256, b.c.body).where(b.c.sha256.in_(shas))
                    ):
                        blobs[stored.sha256] = stored.body
        pages: list[Page] = []
        bodies: dict[str, bytes] = {}
        for row in rows:
            if not row.content_sha256:
                stats.no_page += 1
                continue
            snap = snaps.get((row.normalized_url, row.content_sha256))
            blob = blobs.get(row.content_sha256)
            if snap is None or blob is None:
                stats.missing.append(row.id)
                continue
            if row.content_sha256 not in bodies:
                bodies[row.content_sha256] = decompress_page(blob)
            pages.append(Page(
                url=snap.url,
                final_url=snap.final_url,
                status=snap.http_status,
                headers=dict(snap.headers or {}),
                content_type=snap.content_type,
                body=bodies[row.content_sha256],
                encoding=snap.encoding,
                fetched_at=snap.fetched_at,
                from_store=True,
            ))
        stats.pages += len(pages)
        if pages:
            yield pages
        if len(rows) < chunk_rows:
            return
