"""Stored raw pages: zlib-compressed, content-addressed blobs plus one snapshot row per fetch.

A rerun reads the newest snapshot of each URL instead of the network. Cleanup deletes snapshots
older than the retention period and then every blob no snapshot still points at.
"""

from __future__ import annotations

import asyncio
import zlib
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from workbench.core.page import Page
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import PageBlobRow, SnapshotRow
from workbench.ledger.sql import table_of, utcnow
from workbench.ledger.store import Ledger


class PageStore:
    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._insert = postgresql.insert if ledger.dialect == "postgresql" else sqlite.insert

    async def save(self, page: Page, normalized_url: str) -> None:
        # zlib releases the GIL: compressing a 200 KB page in a thread keeps the loop responsive
        body = await asyncio.to_thread(zlib.compress, page.body, 6)
        sha, now = page.sha256, utcnow()
        blob_insert = (
            self._insert(PageBlobRow)
            .values(sha256=sha, body=body, size=len(page.body), stored_at=now)
            .on_conflict_do_nothing(index_elements=["sha256"])
        )

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(blob_insert)
            await conn.execute(
                table_of(SnapshotRow).insert().values(
                    normalized_url=normalized_url,
                    url=page.url,
                    final_url=page.final_url,
                    http_status=page.status,
                    content_type=page.content_type,
                    encoding=page.encoding,
                    headers=page.headers,
                    sha256=sha,
                    fetched_at=page.fetched_at,
                )
            )

        await self._ledger.committer.run(op)

    async def load(self, normalized_url: str) -> Page | None:
        """The newest stored page for a URL, or None."""
        s, b = table_of(SnapshotRow), table_of(PageBlobRow)
        q = (
            select(s, b.c.body)
            .join(b, b.c.sha256 == s.c.sha256)
            .where(s.c.normalized_url == normalized_url)
            .order_by(s.c.fetched_at.desc(), s.c.id.desc())
            .limit(1)
        )
        with translate_errors("loading a stored page"):
            async with self._ledger.read_engine.connect() as conn:
                row = (await conn.execute(q)).first()
        if row is None:
            return None
        body = await asyncio.to_thread(zlib.decompress, row.body)
        return Page(
            url=row.url,
            final_url=row.final_url,
            status=row.http_status,
            headers=dict(row.headers or {}),
            content_type=row.content_type,
            body=body,
            encoding=row.encoding,
            fetched_at=row.fetched_at,
            from_store=True,
        )

    async def delete_older_than(self, cutoff: datetime) -> tuple[int, int]:
        """Delete snapshots fetched before ``cutoff`` and orphaned blobs: (snapshots, blobs)."""
        s, b = table_of(SnapshotRow), table_of(PageBlobRow)
        with translate_errors("deleting old pages"):
            async with self._ledger.engine.begin() as conn:
                snaps = await conn.execute(delete(s).where(s.c.fetched_at < cutoff))
                blobs = await conn.execute(
                    delete(b).where(~b.c.sha256.in_(select(s.c.sha256).distinct()))
                )
        return snaps.rowcount, blobs.rowcount
