"""``ledger.direct.SqliteDirect``: a SQLite file's hot writes and look-ups run on the event loop
while the lock is free, and wait for it in their thread (never on the loop) when it is not."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from workbench.core.errors import LedgerError
from workbench.ledger import direct as direct_mod
from workbench.ledger.direct import SqliteDirect
from workbench.ledger.engine import make_engine


class _LoopWatch:
    """The longest the event loop went without running a 10 ms ticker, while it is on."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.longest = max(self.longest, loop.time() - before)

    async def __aenter__(self) -> _LoopWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def _db(tmp_path: Path) -> str:
    path = tmp_path / "direct.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    return str(path)


def _insert(conn: sqlite3.Connection, values: list[str]) -> int:
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in values])
    return len(values)


def _count(conn: sqlite3.Connection, _: object) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


async def test_a_free_lock_commits_on_the_loop(tmp_path: Path) -> None:
    writer = SqliteDirect(_db(tmp_path), busy_timeout_ms=5000)
    try:
        assert await writer.transaction(_insert, ["a"]) == 1  # the first opens, in the thread
        assert (writer.on_loop, writer.waited) == (0, 0)
        for i in range(5):
            assert await writer.transaction(_insert, [f"b{i}", f"c{i}"]) == 2
        assert (writer.on_loop, writer.waited) == (5, 0)
    finally:
        await writer.close()
    with sqlite3.connect(tmp_path / "direct.db") as conn:
        assert _count(conn, None) == 11


async def test_a_lock_held_on_this_loop_is_waited_for_in_the_thread(tmp_path: Path) -> None:
    """The lock's holder is this process's own SQLAlchemy connection, whose COMMIT needs this
    loop: waiting for the lock on the loop would never end (SQLite's busy timeout on the loop
    stalled a worker for the whole timeout). The write waits in the thread while the loop goes
    on, and lands once the holder commits."""
    path = _db(tmp_path)
    writer = SqliteDirect(path, busy_timeout_ms=20_000)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")  # BEGIN IMMEDIATE: the write lock
    try:
        await writer.transaction(_insert, ["first"])  # opened: the next one may run on the loop
        async with engine.connect() as conn, _LoopWatch() as watch:
            await conn.begin()
            await conn.execute(text("INSERT INTO t (v) VALUES ('holder')"))
            write = asyncio.create_task(writer.transaction(_insert, ["waited"]))
            await asyncio.sleep(0.2)
            assert not write.done()
            await conn.commit()
            async with asyncio.timeout(10):
                assert await write == 1
        assert watch.longest < 1.0, watch.longest  # the loop went on while the write waited
        assert (writer.on_loop, writer.waited) == (0, 1)
        # the lock is free again: back on the loop
        assert await writer.transaction(_insert, ["again"]) == 1
        assert writer.on_loop == 1
    finally:
        await writer.close()
        await engine.dispose()
    with sqlite3.connect(path) as conn:
        assert [v for (v,) in conn.execute("SELECT v FROM t ORDER BY id")] == [
            "first", "holder", "waited", "again"]


async def test_calls_behind_one_in_the_thread_follow_it_there(tmp_path: Path) -> None:
    """The connection is used by one call at a time: while one waits in the thread for the lock,
    the next ones queue behind it rather than use the connection on the loop."""
    path = _db(tmp_path)
    writer = SqliteDirect(path, busy_timeout_ms=20_000)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await writer.transaction(_insert, ["first"])
        holder.execute("BEGIN IMMEDIATE")
        async with _LoopWatch() as watch:
            first = asyncio.create_task(writer.transaction(_insert, ["x"]))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(writer.transaction(_insert, ["y"]))
            await asyncio.sleep(0.05)
            assert not first.done() and not second.done()
            holder.execute("COMMIT")
            async with asyncio.timeout(10):
                assert await asyncio.gather(first, second) == [1, 1]
        assert watch.longest < 1.0, watch.longest
        assert (writer.on_loop, writer.waited) == (0, 1)
    finally:
        holder.close()
        await writer.close()


async def test_a_look_up_runs_on_the_loop_beside_a_writer(tmp_path: Path) -> None:
    """WAL readers are not blocked by a writer: the page store's look-up stays on the loop."""
    path = _db(tmp_path)
    reader = SqliteDirect(path, busy_timeout_ms=5000, reader=True)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        assert await reader.read(_count, None, "counting") == 0
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO t (v) VALUES ('uncommitted')")
        assert await reader.read(_count, None, "counting") == 0
        holder.execute("COMMIT")
        assert await reader.read(_count, None, "counting") == 1
        assert (reader.on_loop, reader.waited) == (2, 0)
        with pytest.raises(LedgerError, match="while counting"):  # query_only
            await reader.read(_insert, ["no"], "counting")
    finally:
        holder.close()
        await reader.close()


async def test_an_error_on_the_loop_is_a_ledger_error_and_leaves_no_transaction(
    tmp_path: Path,
) -> None:
    def bad(conn: sqlite3.Connection, _: object) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('rolled back')")
        conn.execute("INSERT INTO missing VALUES (1)")

    path = _db(tmp_path)
    writer = SqliteDirect(path, busy_timeout_ms=5000)
    try:
        await writer.transaction(_insert, ["first"])
        with pytest.raises(LedgerError, match="writing item updates: no such table: missing"):
            await writer.transaction(bad, None)
        assert await writer.transaction(_insert, ["after"]) == 1  # usable: no BEGIN left open
    finally:
        await writer.close()
    with sqlite3.connect(path) as conn:
        assert [v for (v,) in conn.execute("SELECT v FROM t ORDER BY id")] == ["first", "after"]


async def test_the_writer_leaves_its_checkpoints_to_the_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own checkpoint would copy the WAL into the file and sync it inside a COMMIT on the
    loop; the writer turns it off and asks its callback, at most every CHECKPOINT_EVERY_S."""
    asked: list[float] = []
    writer = SqliteDirect(_db(tmp_path), busy_timeout_ms=5000,
                          checkpoint=lambda: asked.append(asyncio.get_running_loop().time()))
    try:
        for i in range(5):  # within CHECKPOINT_EVERY_S of each other: asked once
            await writer.transaction(_insert, [str(i)])
        assert len(asked) == 1
        mode = await writer.transaction(
            lambda conn, _: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0], None)
        assert mode == 0
        monkeypatch.setattr(direct_mod, "CHECKPOINT_EVERY_S", 0.0)
        for i in range(3):
            await writer.transaction(_insert, [str(i)])
        assert len(asked) == 4
    finally:
        await writer.close()


async def test_a_ledgers_hot_writes_run_on_the_loop_and_are_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wired into the ledger: the group commit's direct writes run on the loop, and the ledger's
    ``WalCheckpointer`` (a thread) moves their pages into the file."""
    monkeypatch.setattr(direct_mod, "CHECKPOINT_EVERY_S", 0.0)
    from workbench.ledger.store import Ledger

    db = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite+aiosqlite:///{db}")
    await ledger.start()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")

    async def by_sqlalchemy(conn: object, args: list[str]) -> list[int]:
        raise AssertionError("a SQLite file's direct op takes the direct path")

    def insert_many(conn: sqlite3.Connection, args: list[str]) -> list[int]:
        return [_insert(conn, [v]) for v in args]

    try:
        for i in range(4):
            got = await asyncio.gather(*(ledger.committer.run_batched(
                by_sqlalchemy, f"{i}-{j}", insert_many) for j in range(10)))
            assert got == [1] * 10
        direct = ledger.committer._direct
        assert direct is not None and direct.on_loop >= 3 and direct.waited == 0
        assert ledger.checkpointer is not None
        await ledger.checkpointer.wait()
        assert ledger.checkpointer.runs >= 1
    finally:
        await ledger.close()
    with sqlite3.connect(db) as conn:
        assert _count(conn, None) == 40


async def test_a_cancelled_call_keeps_the_connection_until_its_thread_is_done(
    tmp_path: Path,
) -> None:
    """Cancelling a caller does not stop its statements in the thread: until they end, the next
    call must not use the connection on the loop (it would BEGIN inside their transaction)."""
    import time

    def slow(conn: sqlite3.Connection, values: list[str]) -> int:
        time.sleep(0.3)
        return _insert(conn, values)

    path = _db(tmp_path)
    writer = SqliteDirect(path, busy_timeout_ms=5000)
    try:
        first = asyncio.create_task(writer.transaction(slow, ["slow"]))  # opens: in the thread
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await writer.transaction(_insert, ["next"]) == 1  # behind it, in the thread
        assert await writer.transaction(_insert, ["then"]) == 1  # the thread is done: the loop
        assert writer.on_loop == 1
    finally:
        await writer.close()
    with sqlite3.connect(path) as conn:
        assert [v for (v,) in conn.execute("SELECT v FROM t ORDER BY id")] == [
            "slow", "next", "then"]
