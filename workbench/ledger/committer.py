"""Group commit: per-item writes from concurrent jobs share one transaction.

Each write is a small async function of a connection. Callers await their own outcome; the
committer runs whatever has piled up since the last commit in one transaction, so a commit costs
one fsync however many jobs are writing. At low load a write commits at once (no fixed delay);
at high load writes naturally batch while the previous commit is in flight.

The hot per-item writes (claim, complete) are *batched ops*: every argument queued for the same
handler before a commit is written by one handler call, one statement for many items, since a
statement per item costs ~1 ms of Python and driver overhead and capped a worker's throughput.
On a SQLite file, a batched op that also has a *direct* handler (a plain function of a
``sqlite3`` connection) is written by ``ledger.direct.SqliteDirect``: the commit's direct ops run
as one function, on the event loop while SQLite's lock is free (in the writer's thread when it must
be waited for), instead of three thread hops per statement.
A commit whose ops are not all direct runs the others first, in a transaction of their own
(as before, plain ops ran before the batched ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workbench.core.errors import LedgerError
from workbench.core.logs import get_logger
from workbench.ledger.direct import SqliteDirect, is_direct_lock_error
from workbench.ledger.engine import is_lock_error, translate_errors

T = TypeVar("T")
Op = Callable[[AsyncConnection], Awaitable[Any]]
#: ``handler(conn, args) -> results``, one result per argument, in order
BatchHandler = Callable[[AsyncConnection, Sequence[Any]], Awaitable[Sequence[Any]]]
#: the same op on a plain ``sqlite3`` connection, run by ``SqliteDirect``
DirectHandler = Callable[[sqlite3.Connection, Sequence[Any]], Sequence[Any]]
log = get_logger("workbench.ledger")

_LOCK_RETRIES = 8


@dataclass(frozen=True)
class _Batched:
    handler: BatchHandler
    arg: Any
    direct: DirectHandler | None = None


class GroupCommitter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        linger_s: float = 0.0,
        linger_ops: int = 8,
        max_ops: int = 500,
        direct: SqliteDirect | None = None,
    ):
        self._engine = engine
        self._direct = direct
        self._linger_s = linger_s
        self._linger_ops = linger_ops
        self._max_ops = max_ops
        self._pending: list[tuple[Op | _Batched, asyncio.Future[Any]]] = []
        self._wakeup: asyncio.Event | None = None
        self._enough: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        self.ops = 0

    async def run(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``op`` inside the next shared transaction; return its result once committed."""
        return await self._enqueue(op)

    async def run_batched(
        self, handler: BatchHandler, arg: Any, direct: DirectHandler | None = None
    ) -> Any:
        """Queue ``arg`` for ``handler``; all args queued for one handler before the next commit
        go to a single ``handler(conn, args)`` call (or ``direct(sqlite3_conn, args)`` when this
        committer writes SQLite directly). Returns this arg's result once committed."""
        return await self._enqueue(_Batched(handler, arg, direct))

    def _is_direct(self, op: Op | _Batched) -> bool:
        return self._direct is not None and isinstance(op, _Batched) and op.direct is not None

    async def _enqueue(self, op: Op | _Batched) -> Any:
        if self._closed:
            raise LedgerError("the ledger writer is closed")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup, self._enough = asyncio.Event(), asyncio.Event()
            self._task = loop.create_task(self._loop(), name="workbench-group-commit")
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((op, fut))
        assert self._wakeup is not None and self._enough is not None
        self._wakeup.set()
        if len(self._pending) >= self._linger_ops:
            self._enough.set()
        # A cancelled caller cancels only its own future: its write stays queued and lands with
        # the others (``_settle`` passes over a done future). No ``asyncio.shield``: it cost an
        # extra future and a round of callbacks per write, ~3 writes per article page.
        return await fut

    async def _loop(self) -> None:
        assert self._wakeup is not None and self._enough is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._linger_s and not self._closed and len(self._pending) < self._linger_ops:
                # wait for more writers to join, but not once enough have (as MySQL's
                # binlog_group_commit_sync_no_delay_count): under load, a fixed wait in every
                # commit made every item wait it twice (claim, complete)
                self._enough.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_s):
                        await self._enough.wait()
            while self._pending:
                ops, self._pending = self._pending[: self._max_ops], self._pending[self._max_ops :]
                await self._execute(ops)
            self._wakeup.clear()  # set by writes that this round already committed

    async def _execute(self, ops: list[tuple[Op | _Batched, asyncio.Future[Any]]]) -> None:
        if self._direct is not None:
            direct = [pair for pair in ops if self._is_direct(pair[0])]
            if direct and len(direct) < len(ops):
                await self._execute_group([pair for pair in ops if not self._is_direct(pair[0])])
                ops = direct
        await self._execute_group(ops)

    async def _execute_group(self, ops: list[tuple[Op | _Batched, asyncio.Future[Any]]]) -> None:
        try:
            results = await self._transaction([op for op, _ in ops])
        except Exception as exc:
            if len(ops) == 1:
                self._settle(ops[0][1], exc=exc)
                return
            log.warning("group commit failed; retrying writes one by one", error=str(exc)[:200])
            for op, fut in ops:
                try:
                    (result,) = await self._transaction([op])
                except Exception as one_exc:
                    self._settle(fut, exc=one_exc)
                else:
                    self._settle(fut, result=result)
            return
        for (_, fut), result in zip(ops, results, strict=True):
            self._settle(fut, result=result)

    async def _transaction(self, ops: list[Op | _Batched]) -> list[Any]:
        delay = 0.02
        for attempt in range(_LOCK_RETRIES):
            try:
                if self._direct is not None and all(self._is_direct(op) for op in ops):
                    results = await self._direct.transaction(self._apply_direct, ops)
                else:
                    with translate_errors("writing item updates"):
                        async with self._engine.begin() as conn:
                            results = await self._apply(conn, ops)
                self.commits += 1
                self.ops += len(ops)
                return results
            except LedgerError as exc:
                cause = exc.__cause__ or exc
                if attempt == _LOCK_RETRIES - 1 or not (
                    is_lock_error(cause) or is_direct_lock_error(cause)
                ):
                    raise
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    @staticmethod
    async def _apply(conn: AsyncConnection, ops: list[Op | _Batched]) -> list[Any]:
        results: list[Any] = [None] * len(ops)
        batches: dict[BatchHandler, list[int]] = {}
        for i, op in enumerate(ops):
            if isinstance(op, _Batched):
                batches.setdefault(op.handler, []).append(i)
            else:
                results[i] = await op(conn)
        for handler, positions in batches.items():
            out = await handler(conn, [ops[i].arg for i in positions])  # type: ignore[union-attr]
            for i, result in zip(positions, out, strict=True):
                results[i] = result
        return results

    @staticmethod
    def _apply_direct(conn: sqlite3.Connection, ops: list[Op | _Batched]) -> list[Any]:
        """``_apply`` in the writer's thread: every op is a ``_Batched`` with a direct handler."""
        results: list[Any] = [None] * len(ops)
        batches: dict[DirectHandler, list[int]] = {}
        for i, op in enumerate(ops):
            assert isinstance(op, _Batched) and op.direct is not None
            batches.setdefault(op.direct, []).append(i)
        for handler, positions in batches.items():
            out = handler(conn, [ops[i].arg for i in positions])  # type: ignore[union-attr]
            for i, result in zip(positions, out, strict=True):
                results[i] = result
        return results

    @staticmethod
    def _settle(
        fut: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None
    ) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    async def close(self) -> None:
        """Flush what is pending, then stop."""
        self._closed = True
        if self._task is None:
            return
        while self._pending:
            ops, self._pending = self._pending[: self._max_ops], self._pending[self._max_ops :]
            await self._execute(ops)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def close_direct(self) -> None:
        """Close the direct writer's connection (after ``close``)."""
        if self._direct is not None:
            await self._direct.close()
