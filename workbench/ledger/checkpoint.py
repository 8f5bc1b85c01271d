"""Bulk writes whose caller does not wait for SQLite's WAL checkpoint.

In WAL mode a commit appends pages to the ``-wal`` file; copying them back into the database file
(a checkpoint) is done by whichever connection commits past ``wal_autocheckpoint`` pages, before
its COMMIT returns. After a submit, a retry or a cancel of many items that copy is most of the
caller's wait: a resubmission of 10,000 analysed URLs writes ~36 MB of WAL, and the checkpoint
was 120 of its 290 ms of SQLite time (benchmarks/NOTES.md, session 15).

``bulk_transaction`` runs such a write with the connection's automatic checkpoint off, puts it
back once the transaction ended, and lets a ``WalCheckpointer`` run the same PASSIVE checkpoint
on a connection and thread of its own while the caller goes on. Nothing is given up: a
checkpoint only moves committed pages, readers and writers are not blocked by it, and any other
connection's own automatic checkpoint (a worker's group commit) still runs as before. On
PostgreSQL ``bulk_transaction`` is a plain transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workbench.core.logs import get_logger

log = get_logger("workbench.ledger")

#: SQLite's default ``wal_autocheckpoint``, which a bulk write's connection goes back to.
AUTOCHECKPOINT_PAGES = 1000


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on the ledger file in a thread, one at a time; a
    request made while one runs makes it run once more after (the pages committed meanwhile)."""

    def __init__(self, path: str, *, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._task: asyncio.Task[None] | None = None
        self._again = False
        #: checkpoints run (for tests and logs)
        self.runs = 0

    def soon(self) -> None:
        """Checkpoint now, off the caller's path (on the running loop)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait(self) -> None:
        """Until the checkpoint under way (if any, on this loop) ended."""
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return  # another loop's task: its thread finishes on its own
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                busy, frames, moved = await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error as exc:  # the next write's checkpoint moves the pages instead
                log.warning("wal_checkpoint_failed", error=str(exc))
            else:
                self.runs += 1
                log.debug("wal_checkpoint", busy=busy, frames=frames, checkpointed=moved)
            if not self._again:
                return

    def _checkpoint(self) -> tuple[int, int, int]:
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_ms / 1000,
                               isolation_level=None)
        try:
            busy, frames, moved = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(busy), int(frames), int(moved)
        finally:
            conn.close()


#: Below this many rows written a bulk write commits as any other (its few pages wait for the
#: next automatic checkpoint): a thread and a sync of the file per small submit would cost more.
DEFER_ROWS = 1000


@contextlib.asynccontextmanager
async def bulk_transaction(
    engine: AsyncEngine, checkpointer: WalCheckpointer | None, *, rows: int | None = None
) -> AsyncIterator[AsyncConnection]:
    """A transaction on ``engine`` (like ``engine.begin()``) whose COMMIT does not checkpoint;
    ``checkpointer`` does it after, in the background. ``rows``: how many rows it writes, when
    known. Without a checkpointer (PostgreSQL, an in-memory SQLite ledger) or under
    ``DEFER_ROWS`` rows: ``engine.begin()``."""
    if checkpointer is None or (rows is not None and rows < DEFER_ROWS):
        async with engine.begin() as conn:
            yield conn
        return
    # Not onto a checkpoint still under way: the WAL then cannot start over, and this write
    # grows it past the frames not yet copied (a cancel of 1M items right after their submit
    # took 4.1 s instead of 3.0; benchmarks/NOTES.md, session 15).
    await checkpointer.wait()
    async with engine.connect() as conn:
        # the driver's own connection: a statement through SQLAlchemy outside a transaction
        # would begin one (BEGIN IMMEDIATE: the write lock) just to set a pragma
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await _pragma(driver, "wal_autocheckpoint=0")
        try:
            async with conn.begin():
                yield conn
        finally:
            try:
                await _pragma(driver, f"wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            except Exception as exc:  # a connection left without its checkpoint is not reused
                log.warning("wal_autocheckpoint_not_restored", error=str(exc))
                with contextlib.suppress(Exception):
                    await conn.invalidate()
    checkpointer.soon()


async def _pragma(driver: object, setting: str) -> None:
    cursor = await driver.execute(f"PRAGMA {setting}")  # type: ignore[attr-defined]
    await cursor.close()
