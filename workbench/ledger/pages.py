"""Stored raw pages: compressed, content-addressed blobs plus one snapshot row per fetch.

A rerun reads the newest snapshot of each URL instead of the network. Cleanup deletes snapshots
older than the retention period and then every blob no snapshot still points at.

Bodies are compressed with zstd (``core.pagecodec``: the codec, its measurements, and how old
zlib blobs stay readable). At under 1 ms a page it runs on the event loop: a thread hand-off
would cost a good part of that. Bodies over ``INLINE_MAX_BYTES`` (a few ms of zstd) are still
compressed in a thread, so a huge page does not stall the loop. A caller that already has the
body compressed (the ``article`` pipeline's extraction process does it) passes it as ``stored``.

Loads on a SQLite file go to the direct reader (``ledger.direct``: on the event loop, or in its
thread when SQLite's lock must be waited for) together: the loads asked for while the event loop
runs one round of ready callbacks (the items a group commit just claimed all look up their page
at once) share one call, each a fraction of a millisecond of the worker's CPU on a small VM
(benchmarks/NOTES.md, sessions 11 and 17).

Saves are a batched op of the group commit (``GroupCommitter.run_batched``): the pages fetched
since the last commit are written with one executemany per table through prepared INSERTs
(``ledger.bulk``), not two statements built per page; on a SQLite file, by the direct writer
with the commit's claims and completions (``ledger.direct``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from workbench.core.page import Page
from workbench.core.pagecodec import StoredBody, compress_page, decompress_page
from workbench.ledger.bulk import BulkInserter
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import PageBlobRow, SnapshotRow
from workbench.ledger.sql import table_of, utcnow
from workbench.ledger.store import Ledger

#: bodies up to this size are (de)compressed on the event loop (~4 ms of zstd at 1 MiB)
INLINE_MAX_BYTES = 1 << 20

_SNAPSHOT_COLUMNS = ("normalized_url", "url", "final_url", "http_status", "content_type",
                     "encoding", "headers", "sha256", "fetched_at")

_LOAD_SQL = (
    "SELECT s.url, s.final_url, s.http_status, s.content_type, s.headers, s.encoding,"
    " s.fetched_at, b.body FROM snapshots AS s JOIN page_blobs AS b ON b.sha256 = s.sha256"
    " WHERE s.normalized_url = ? ORDER BY s.fetched_at DESC, s.id DESC LIMIT 1"
)


__all__ = ["INLINE_MAX_BYTES", "PageStore", "compress_page", "decompress_page"]

#: a load waiting for its round's read: (normalized URL, its future)
_Load = tuple[str, "asyncio.Future[tuple[Any, ...] | None]"]


class PageStore:
    def __init__(self, ledger: Ledger):
        self._ledger = ledger
        self._bulk = BulkInserter()
        # loads waiting for this loop round's one read: (the loop, [(url, future), ...])
        self._loads: tuple[asyncio.AbstractEventLoop, list[_Load]] | None = None
        self._reads: set[asyncio.Task[None]] = set()  # the reads under way, held till done

    async def save(
        self, page: Page, normalized_url: str, stored: StoredBody | None = None
    ) -> None:
        """Store ``page`` as the newest snapshot of ``normalized_url``, once committed.
        ``stored``: its body already hashed and compressed (``core.pagecodec.stored_body``)."""
        if stored is None:
            blob = (compress_page(page.body) if len(page.body) <= INLINE_MAX_BYTES
                    else await asyncio.to_thread(compress_page, page.body))
            stored = StoredBody(page.sha256, blob)
        await self._ledger.committer.run_batched(
            self._save_many, (page, normalized_url, stored), self._save_direct
        )

    @staticmethod
    def _rows(saves: Sequence[tuple[Page, str, StoredBody]]) -> tuple[list[Any], list[Any]]:
        """(blob rows, each stored sha256 once; snapshot rows) of a commit's saves."""
        blobs: dict[str, tuple[Any, ...]] = {}
        snapshots: list[tuple[Any, ...]] = []
        for page, normalized_url, (sha, body) in saves:
            blobs.setdefault(sha, (sha, body, len(page.body)))
            snapshots.append((normalized_url, page.url, page.final_url, page.status,
                              page.content_type, page.encoding, page.headers, sha,
                              page.fetched_at))
        return list(blobs.values()), snapshots

    def _save_direct(
        self, conn: sqlite3.Connection, saves: Sequence[tuple[Page, str, StoredBody]]
    ) -> list[None]:
        """``_save_many`` on the direct writer's connection (``ledger.direct``)."""
        blobs, snapshots = self._rows(saves)
        dialect, stored = self._ledger.engine.dialect, {"stored_at": utcnow()}
        plan = self._bulk.plan(dialect, table_of(PageBlobRow), ("sha256", "body", "size"),
                               stored, skip_existing=("sha256",))
        conn.executemany(plan.sql, plan.params(blobs, stored))
        plan = self._bulk.plan(dialect, table_of(SnapshotRow), _SNAPSHOT_COLUMNS, {})
        conn.executemany(plan.sql, plan.params(snapshots, {}))
        return [None] * len(saves)

    async def _save_many(
        self, conn: AsyncConnection, saves: Sequence[tuple[Page, str, StoredBody]]
    ) -> list[None]:
        """The group commit's batched op: every blob not stored yet, then every snapshot."""
        blobs, snapshots = self._rows(saves)
        await self._bulk.insert(conn, table_of(PageBlobRow), ("sha256", "body", "size"),
                                blobs, {"stored_at": utcnow()}, skip_existing=("sha256",))
        await self._bulk.insert(conn, table_of(SnapshotRow), _SNAPSHOT_COLUMNS, snapshots, {})
        return [None] * len(saves)

    async def load(self, normalized_url: str) -> Page | None:
        """The newest stored page for a URL, or None."""
        if self._ledger.direct_reader is not None:  # not a pooled connection's ~10 hops
            got = await self._load_together(normalized_url)
            return None if got is None else await self._page(*got)
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
        return await self._page(
            row.body, row.url, row.final_url, row.http_status, row.headers, row.content_type,
            row.encoding, row.fetched_at,
        )

    async def _load_together(self, normalized_url: str) -> tuple[Any, ...] | None:
        """``_load_direct`` of this URL, in the one read of every load asked for in this round
        of the event loop."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[Any, ...] | None] = loop.create_future()
        if self._loads is None or self._loads[0] is not loop:
            self._loads = (loop, [])
            loop.call_soon(self._read_loads)  # after the callbacks already ready this round
        self._loads[1].append((normalized_url, waiter))
        return await waiter

    def _read_loads(self) -> None:
        assert self._loads is not None
        loop, loads = self._loads
        self._loads = None
        task = loop.create_task(self._read_and_hand_out(loads))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read_and_hand_out(self, loads: list[_Load]) -> None:
        reader = self._ledger.direct_reader
        assert reader is not None
        urls = [url for url, _ in loads]
        try:
            rows = await reader.read(self._load_direct, urls, "loading a stored page")
        except asyncio.CancelledError:
            for _, waiter in loads:
                waiter.cancel()
            raise
        except Exception as exc:  # every waiter gets the read's error
            for _, waiter in loads:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for (_, waiter), row in zip(loads, rows, strict=True):
            if not waiter.done():  # its caller may have been cancelled meanwhile
                waiter.set_result(row)

    def _load_direct(
        self, conn: sqlite3.Connection, normalized_urls: Sequence[str]
    ) -> list[tuple[Any, ...] | None]:
        """``load``'s query for each URL on the direct reader's connection: (blob, the page's
        fields) or None, the values converted as SQLAlchemy converts them."""
        t, dialect = table_of(SnapshotRow), self._ledger.engine.dialect
        headers = t.c.headers.type.dialect_impl(dialect).result_processor(dialect, None)
        fetched = t.c.fetched_at.type.dialect_impl(dialect).result_processor(dialect, None)
        assert headers is not None and fetched is not None
        out: list[tuple[Any, ...] | None] = []
        for normalized_url in normalized_urls:
            row = conn.execute(_LOAD_SQL, (normalized_url,)).fetchone()
            if row is None:
                out.append(None)
                continue
            url, final_url, status, content_type, headers_json, encoding, fetched_at, blob = row
            out.append((blob, url, final_url, status, headers(headers_json), content_type,
                        encoding, fetched(fetched_at)))
        return out

    @staticmethod
    async def _page(
        blob: bytes, url: str, final_url: str, status: int, headers: Any, content_type: str,
        encoding: str, fetched_at: datetime,
    ) -> Page:
        if len(blob) <= INLINE_MAX_BYTES // 4:
            body = decompress_page(blob)
        else:
            body = await asyncio.to_thread(decompress_page, blob)
        return Page(
            url=url,
            final_url=final_url,
            status=status,
            headers=dict(headers or {}),
            content_type=content_type,
            body=body,
            encoding=encoding,
            fetched_at=fetched_at,
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
