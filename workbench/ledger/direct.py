"""The group commit's hot writes on SQLite: one whole transaction per call, on the event loop.

Through SQLAlchemy's async adapter every statement is three or four trips to aiosqlite's thread
(cursor, execute, fetch, close) and a transaction adds BEGIN, COMMIT and the pool's reset: a
commit of one claim cost ~25 hand-offs of the event loop, most of the worker's own CPU per
article page (py-spy, ``benchmarks/NOTES.md``). ``SqliteDirect`` owns one plain ``sqlite3``
connection and runs a commit's batched writes as one function: BEGIN IMMEDIATE, the prepared
statements (``sqlite3``'s statement cache: nothing is built per item), COMMIT. It is a second
writer connection of the process, like another worker process's: SQLite's lock orders them. A
``SqliteDirect`` made with ``reader=True`` runs single reads instead (the page store's look-up
before each fetch), each its own implicit transaction, on a connection of its own.

Where it runs: on the event loop while SQLite's lock is free, in a thread of its own when it is
not. A commit of a few items takes SQLite ~0.1-0.5 ms, and handing it to a thread cost as much
again in wake-ups and the GIL going back and forth: on the loop, the worker's own CPU per article
page fell by ~13 % (benchmarks/NOTES.md, session 17). But the loop must never wait for the lock:
its holder may be this very process (the ledger's SQLAlchemy connections run their transactions
on this loop), which would then never let go. So on the loop the connection has no busy timeout
(SQLite answers "database is locked" at once) and such a call is run again in the thread, which
waits the busy timeout as before; so is every call while one is in the thread (the connection
is used by one of them at a time), and the first one, which opens the connection.

The writer's connection does not checkpoint the WAL itself (``wal_autocheckpoint=0``): the
commit that crossed 1,000 pages would copy them into the database and sync it, on the loop. It
asks ``checkpoint`` (the ledger's ``WalCheckpointer``, a thread) at most every
``CHECKPOINT_EVERY_S`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from workbench.core.errors import LedgerError
from workbench.ledger.wal import ensure_wal

T = TypeVar("T")

#: the writer asks for a WAL checkpoint at most this often (seconds) while it commits: the WAL
#: grows by at most this long's writes between two (SQLite's own rule: every 1,000 pages)
CHECKPOINT_EVERY_S = 0.25


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL that ``SqliteDirect`` can open itself; None for other
    databases, in-memory ones and URLs with options (those keep SQLAlchemy's path)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query:
        return None
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def is_direct_lock_error(exc: BaseException) -> bool:
    """A lock error of the plain driver: the whole transaction may be tried again."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        s in str(exc).lower() for s in ("database is locked", "database is busy")
    )


class SqliteDirect:
    """One ``sqlite3`` connection, used on the event loop or, to wait for the lock, in a thread."""

    def __init__(
        self, path: str, *, busy_timeout_ms: int, reader: bool = False,
        checkpoint: Callable[[], None] | None = None,
    ):
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._reader = reader
        self._checkpoint = checkpoint
        self._checkpoint_at = 0.0
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=f"workbench-sqlite-{'reader' if reader else 'writer'}"
        )
        #: the call sent to the thread last: until it is done, the connection is the thread's
        #: (its caller may be gone, cancelled: the thread runs it all the same)
        self._in_thread: Future[Any] | None = None
        #: calls run on the loop, and those that found the lock taken and waited in the thread
        self.on_loop = 0
        self.waited = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=self._busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            ensure_wal(conn, timeout_ms=self._busy_timeout_ms)
            conn.execute("PRAGMA busy_timeout=0")  # on the loop: "locked" at once, never a wait
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if self._reader:
                conn.execute("PRAGMA query_only=ON")
            elif self._checkpoint is not None:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn = conn
        return self._conn

    def _run(self, fn: Callable[[sqlite3.Connection, Any], T], arg: Any) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn, arg)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        return out

    def _read(self, fn: Callable[[sqlite3.Connection, Any], T], arg: Any) -> T:
        return fn(self._connection(), arg)

    def _waiting(self, run: Callable[..., T], fn: Any, arg: Any) -> T:
        """``run`` in the thread, with the busy timeout: SQLite waits there for the lock."""
        conn = self._connection()
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        try:
            return run(fn, arg)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA busy_timeout=0")

    async def transaction(self, fn: Callable[[sqlite3.Connection, Any], T], arg: Any) -> T:
        """``fn(connection, arg)`` inside one transaction (on the loop, or in the thread to wait for
        the lock); its result once committed. Driver errors come back as ``LedgerError`` (the
        driver's as cause)."""
        assert not self._reader
        return await self._call(self._run, fn, arg, "writing item updates")

    async def read(self, fn: Callable[[sqlite3.Connection, Any], T], arg: Any, doing: str) -> T:
        """``fn(connection, arg)`` on the reader's connection (its statements only read)."""
        assert self._reader
        return await self._call(self._read, fn, arg, doing)

    async def _call(self, run: Callable[..., T], fn: Any, arg: Any, doing: str) -> T:
        try:
            if self._conn is not None and (self._in_thread is None or self._in_thread.done()):
                try:
                    out = run(fn, arg)
                except sqlite3.OperationalError as exc:
                    if not is_direct_lock_error(exc):
                        raise
                    self.waited += 1  # taken: wait for it in the thread
                else:
                    self.on_loop += 1
                    self._committed()
                    return out
            # one thread, in order: once the last call sent there is done, all are
            self._in_thread = self._executor.submit(self._waiting, run, fn, arg)
            out = await asyncio.wrap_future(self._in_thread)
        except sqlite3.Error as exc:
            detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise LedgerError(f"ledger error while {doing}: {detail}") from exc
        self._committed()
        return out

    def _committed(self) -> None:
        """After a write: the WAL checkpoint, if none was asked for in ``CHECKPOINT_EVERY_S``."""
        if self._checkpoint is not None:
            now = time.monotonic()
            if now - self._checkpoint_at >= CHECKPOINT_EVERY_S:
                self._checkpoint_at = now
                self._checkpoint()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)
