"""The queue's Redis pool checks a connection it hands out without a zero-timeout read, and still
notices one that holds an unread reply or that the server closed. Real Redis (the embedded
server, and the machine's Redis when ``WORKBENCH_TEST_REDIS_URL`` is set), both reply parsers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis._parsers import _AsyncRESP2Parser as PythonParser
from redis.asyncio.connection import ConnectionPool

from tests.conftest import REDIS_URL
from workbench.queue.arq_adapter import open_pool
from workbench.queue.connections import QuickCheckPool, has_pending_input, quicken

URLS = ["embedded"] + (["machine"] if REDIS_URL else [])


@pytest_asyncio.fixture(params=URLS)
async def pool(request: pytest.FixtureRequest, embedded_redis: str) -> AsyncIterator[Any]:
    url = embedded_redis if request.param == "embedded" else REDIS_URL
    redis = await open_pool(url, f"wbtest:{uuid.uuid4().hex[:8]}")
    redis.test_url = url
    yield redis
    await redis.aclose()


def _counting_destructive_checks(redis: Any) -> list[int]:
    """Count the zero-timeout reads (``can_read_destructive``) of the pool's connections."""
    calls = [0]
    for conn in redis.connection_pool._available_connections:
        original = conn.can_read_destructive

        async def counted(original: Any = original) -> bool:
            calls[0] += 1
            return bool(await original())

        conn.can_read_destructive = counted
    return calls


async def test_open_pool_checks_quickly(pool: Any) -> None:
    assert type(pool.connection_pool) is QuickCheckPool
    await pool.ping()
    calls = _counting_destructive_checks(pool)
    for i in range(20):
        await pool.set("wbtest:quick", i)
        assert int(await pool.get("wbtest:quick")) == i
    assert calls == [0]  # an idle connection is handed out without reading it
    await pool.delete("wbtest:quick")


async def test_a_connection_holding_an_unread_reply_is_not_reused_as_is(pool: Any) -> None:
    conn = await pool.connection_pool.get_connection()
    await conn.send_command("ECHO", "left-over")
    for _ in range(100):  # until the reply is in the stream's buffer
        if has_pending_input(conn):
            break
        await asyncio.sleep(0.01)
    assert has_pending_input(conn)
    await pool.connection_pool.release(conn)
    # the pool takes the full check: the left-over reply is dropped with the connection
    assert await pool.echo("fresh") == b"fresh"
    assert await pool.echo("again") == b"again"


async def test_a_connection_the_server_closed_is_replaced(pool: Any) -> None:
    await pool.ping()
    client_id = await pool.client_id()
    admin = await open_pool(pool.test_url, "wbtest:admin")
    try:
        assert await admin.client_kill_filter(_id=client_id) == 1
    finally:
        await admin.aclose()
    await asyncio.sleep(0.05)  # the EOF reaches the connection's stream
    assert await pool.ping() is True
    assert await pool.client_id() != client_id


async def test_the_pure_python_parser_too(embedded_redis: str) -> None:
    """Also where redis-py 5's own check fails: a whole reply waiting in the stream."""
    redis = await open_pool(embedded_redis, "wbtest:py")
    try:
        redis.connection_pool.connection_kwargs["parser_class"] = PythonParser
        await redis.connection_pool.disconnect()
        redis.connection_pool._available_connections.clear()
        await redis.ping()
        calls = _counting_destructive_checks(redis)
        for _ in range(5):
            assert await redis.echo("x") == b"x"
        assert calls == [0]
        conn = await redis.connection_pool.get_connection()
        assert isinstance(conn._parser, PythonParser)
        await conn.send_command("ECHO", "left-over")
        await asyncio.sleep(0.05)
        assert has_pending_input(conn)
        await redis.connection_pool.release(conn)
        assert await redis.echo("fresh") == b"fresh"
    finally:
        await redis.aclose()


async def test_quicken_leaves_other_pools_alone() -> None:
    class OwnPool(ConnectionPool):
        pass

    class Holder:
        connection_pool: Any = OwnPool()

    quicken(Holder)
    assert type(Holder.connection_pool) is OwnPool
