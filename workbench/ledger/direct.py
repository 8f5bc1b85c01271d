"""The group commit's hot writes on SQLite: one whole transaction per thread hop.

Through SQLAlchemy's async adapter every statement is three or four trips to aiosqlite's thread
(cursor, execute, fetch, close) and a transaction adds BEGIN, COMMIT and the pool's reset: a
commit of one claim cost ~25 hand-offs of the event loop, most of the worker's own CPU per
article page (py-spy, ``benchmarks/NOTES.md``). ``SqliteDirect`` owns one plain ``sqlite3``
connection in a thread of its own and runs a commit's batched writes there as one function:
BEGIN IMMEDIATE, the prepared statements (``sqlite3``'s statement cache: nothing is built per
item), COMMIT — one hand-off per commit. It is a second writer connection of the process, like
another worker process's: SQLite's lock and busy timeout order them. A ``SqliteDirect`` made with
``reader=True`` runs single reads instead (the page store's look-up before each fetch), each its
own implicit transaction, on a connection and thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from workbench.core.errors import LedgerError
from workbench.ledger.wal import ensure_wal

T = TypeVar("T")


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
    """One ``sqlite3`` connection and the one thread that uses it."""

    def __init__(self, path: str, *, busy_timeout_ms: int, reader: bool = False):
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._reader = reader
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=f"workbench-sqlite-{'reader' if reader else 'writer'}"
        )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=self._busy_timeout_ms / 1000,
                                   isolation_level=None, check_same_thread=False)
            ensure_wal(conn, timeout_ms=self._busy_timeout_ms)
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if self._reader:
                conn.execute("PRAGMA query_only=ON")
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

    async def transaction(self, fn: Callable[[sqlite3.Connection, Any], T], arg: Any) -> T:
        """``fn(connection, arg)`` inside one transaction in the writer's thread; its result
        once committed. Driver errors come back as ``LedgerError`` (the driver's as cause)."""
        assert not self._reader
        return await self._call(self._run, fn, arg, "writing item updates")

    async def read(self, fn: Callable[[sqlite3.Connection, Any], T], arg: Any, doing: str) -> T:
        """``fn(connection, arg)`` in the reader's thread (a reader's statements only read)."""
        assert self._reader
        return await self._call(self._read, fn, arg, doing)

    async def _call(self, run: Callable[..., T], fn: Any, arg: Any, doing: str) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, run, fn, arg)
        except sqlite3.Error as exc:
            detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise LedgerError(f"ledger error while {doing}: {detail}") from exc

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)
