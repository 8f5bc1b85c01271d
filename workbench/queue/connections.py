"""A Redis connection pool that checks a connection it hands out without a zero-timeout read.

redis-py 5 (the newest ARQ allows: ``redis<6``) checks every pooled connection before each
command with ``can_read_destructive``: a read under ``asyncio.timeout(0)``, which schedules the
timeout, lets it fire on the next round of the event loop, cancels the read and catches the
``TimeoutError``. On a worker that is two extra rounds of the loop, a task cancellation and an
exception per Redis command: ~4.4 per article page (benchmarks/NOTES.md, session 12). redis-py
8 replaced it with a check that reads nothing (redis/redis-py#4063); ``QuickCheckPool`` is that
check on the redis-py we have.

What it still catches: a reply left unread on the connection (already in the parser's or the
stream's buffer; redis-py 5's own check misses one waiting in the stream with its pure-Python
parser) and a connection the server closed (EOF seen); either is dropped and opened again. What
a zero-timeout read could catch besides, bytes that reach the socket in the very round the
command is sent, only happen when a command's reply was abandoned, and redis-py already drops
the connection then (``read_response`` disconnects on any exception, cancellation included).

``refuses_writes`` tells the replies of a Redis that is up but takes no writes for now.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

#: replies of a Redis that is up but takes no writes for now (alone, or quoted by redis-py in
#: "Command # 1 (ZREM ...) of pipeline caused error: ('MISCONF ...')")
_WRITE_REFUSAL = re.compile(r"(?:^|caused error: \(')(?:MISCONF|OOM|READONLY) ")


def refuses_writes(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write for a while: ``MISCONF`` (it cannot persist: a
    full disk), ``OOM`` (maxmemory) or ``READONLY`` (a replica after a failover)."""
    return isinstance(exc, ResponseError) and _WRITE_REFUSAL.search(str(exc)) is not None


def has_pending_input(connection: AbstractConnection) -> bool | None:
    """Whether ``connection`` holds unread bytes or has seen EOF, without reading the socket;
    None when its insides are not the ones known here (another parser, a future redis-py)."""
    parser: Any = getattr(connection, "_parser", None)
    stream: Any = getattr(parser, "_stream", None)
    if not isinstance(stream, asyncio.StreamReader) or not hasattr(stream, "_buffer"):
        return None
    reader = getattr(parser, "_reader", None)  # hiredis's reader
    if reader is not None:
        has_data = getattr(reader, "has_data", None)
        if has_data is None:
            return None
        if has_data():
            return True
    elif getattr(parser, "_buffer", None):  # the pure-Python parser's
        return True
    # asyncio.StreamReader has no public look at its buffer that leaves it be (redis-py 8 reads
    # this private attribute too)
    return stream.at_eof() or bool(stream._buffer)


class QuickCheckPool(ConnectionPool):
    """``ConnectionPool`` whose hand-out check reads nothing."""

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        await connection.connect()
        pending = has_pending_input(connection) if connection.is_connected else None
        if pending is None:
            await super().ensure_connection(connection)
        elif pending:
            # A reply left unread, or EOF: start over on a new socket. (redis-py 5's own check
            # would miss a whole reply waiting in the stream with its pure-Python parser.)
            await connection.disconnect()
            await connection.connect()
            if has_pending_input(connection) is not False:
                raise RedisConnectionError("Connection not ready")


def quicken(redis: Any) -> None:
    """Make ``redis``'s own pool check connections as ``QuickCheckPool`` does; pools of other
    kinds (Sentinel's, a subclass) are left as they are."""
    pool = getattr(redis, "connection_pool", None)
    if type(pool) is ConnectionPool:
        pool.__class__ = QuickCheckPool
