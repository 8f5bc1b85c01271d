"""A start call whose answer is lost with the connection, and that redis-py sends again.

redis-py retries a command after a connection error (``redis_settings``: reconnect and retry, for
Redis restarts). When the connection drops after Redis ran the start script but before its
answer arrived, the same call runs twice: the first run marked the jobs in progress, and the
second saw those marks as another worker's, started nothing, and the jobs stayed queued until
their marks expired (job_timeout + 10 s: the rare "1 item still queued" after a Redis kill in
tests/reliability/test_redis_faults.py). The marks now hold the call's token, so the resent call
starts them. Real Redis (the embedded server) behind a loopback proxy that swallows one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlparse

from arq.worker import func

from workbench.queue.arq_adapter import (
    IN_PROGRESS_KEY_PREFIX,
    JOB_KEY_PREFIX,
    RETRY_KEY_PREFIX,
    QueueWorker,
    open_pool,
    paced_key,
)
from workbench.queue.starts import START_LUA, started_jobs


class AnswerSwallowingProxy:
    """TCP on loopback to the embedded server's unix socket. Once armed, the first answer to an
    ``EVALSHA`` is dropped and that client connection closed: the script ran, its caller never
    heard."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.armed = False
        self.swallowed = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_unix_connection(self.socket_path)
        swallow = asyncio.Event()

        async def upstream() -> None:
            while data := await c_reader.read(65536):
                if self.armed and b"EVALSHA" in data:
                    self.armed = False
                    swallow.set()
                s_writer.write(data)
                await s_writer.drain()

        async def downstream() -> None:
            while data := await s_reader.read(65536):
                if swallow.is_set():  # the script ran; its caller loses the connection instead
                    self.swallowed += 1
                    break
                c_writer.write(data)
                await c_writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self.tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self.tasks.discard(task)
            for writer in (c_writer, s_writer):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


async def _noop(ctx: dict[str, Any]) -> None:
    return None


async def test_resent_start_call_starts_the_jobs_it_marked(embedded_redis: str) -> None:
    url = urlparse(embedded_redis)
    assert url.scheme == "unix", embedded_redis
    proxy = AnswerSwallowingProxy(url.path)
    port = await proxy.start()
    queue = "wbtest:start-resend"
    pool = await open_pool(f"redis://127.0.0.1:{port}/0", queue)
    worker = QueueWorker(functions=[func(_noop, name="noop")], redis_pool=pool,
                         queue_name=queue, handle_signals=False, keep_result=0, max_jobs=10)
    ids = [f"resend-{i}" for i in range(3)]
    try:
        await pool.delete(queue, *(IN_PROGRESS_KEY_PREFIX + j for j in ids))
        await pool.zadd(queue, {j: 1000 + i for i, j in enumerate(ids)})
        await worker.start_jobs([])  # the script is loaded: the next call is one EVALSHA
        proxy.armed = True
        await worker.start_jobs([j.encode() for j in ids])
        assert proxy.swallowed == 1, "the proxy never dropped the script's answer"
        # the resent call started all three (before: none, each marked "in progress elsewhere")
        assert sorted(worker.tasks) == ids
        assert worker.job_counter == 3
        # a mark another worker set is still respected
        await pool.zadd(queue, {"resend-other": 999})
        await pool.psetex(IN_PROGRESS_KEY_PREFIX + "resend-other", 60_000, b"1")
        await worker.start_jobs([b"resend-other"])
        assert "resend-other" not in worker.tasks
    finally:
        for task in worker.tasks.values():
            task.cancel()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        await pool.delete(queue, *(IN_PROGRESS_KEY_PREFIX + j for j in [*ids, "resend-other"]))
        await pool.aclose()
        await proxy.close()


async def test_a_resent_start_call_counts_each_try_once(embedded_redis: str) -> None:
    """The start script also counts each job's try (ARQ's INCR at run_job's start): run twice
    as the same call (redis-py's resend), it starts the same jobs with the same count, and a
    job tried before keeps its count plus one; another call starts nothing of them."""
    queue = "wbtest:start-tries"
    pool = await open_pool(embedded_redis, queue)
    ids = [f"tries-{i}" for i in range(3)]
    keys = [p + j for j in ids for p in (IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX, RETRY_KEY_PREFIX)]
    script = pool.register_script(START_LUA)

    async def call(token: str) -> list[tuple[str, int, bytes | None, int]]:
        reply = await script(keys=[queue, paced_key(queue)],
                             args=[10_000, 60_000, IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX,
                                   RETRY_KEY_PREFIX, 10, token, 0, *ids])
        return [(j, score, read.payload, read.tries)
                for j, score, read in started_jobs(reply, JOB_KEY_PREFIX, RETRY_KEY_PREFIX)]

    try:
        await pool.delete(queue, *keys)
        await pool.zadd(queue, {j: 1000 + i for i, j in enumerate(ids)})
        await pool.set(JOB_KEY_PREFIX + ids[0], b"payload-0")
        await pool.set(RETRY_KEY_PREFIX + ids[2], b"4")
        expected = [("tries-0", 1000, b"payload-0", 1), ("tries-1", 1001, None, 1),
                    ("tries-2", 1002, None, 5)]
        assert await call("w|1") == expected
        assert await call("w|1") == expected  # the same call again: nothing counted twice
        assert await call("w|2") == []  # another call: in progress elsewhere
        assert [await pool.get(RETRY_KEY_PREFIX + j) for j in ids] == [b"1", b"1", b"5"]
        assert min([await pool.ttl(RETRY_KEY_PREFIX + j) for j in ids]) > 88_000
    finally:
        await pool.delete(queue, *keys)
        await pool.aclose()


async def test_the_start_script_reads_the_queue_itself(embedded_redis: str) -> None:
    """Asked to read (the worker's polls), the script takes the first due jobs by score, as ARQ's
    read would, skipping those in progress (here or elsewhere) and those not due yet; ids it is
    also given come after, each started once."""
    queue = "wbtest:start-read"
    pool = await open_pool(embedded_redis, queue)
    ids = [f"read-{i}" for i in range(6)]
    keys = [p + j for j in ids for p in (IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX, RETRY_KEY_PREFIX)]
    script = pool.register_script(START_LUA)

    async def call(token: str, most: int, read: int, *given: str) -> list[str]:
        reply = await script(keys=[queue, paced_key(queue)],
                             args=[10_000, 60_000, IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX,
                                   RETRY_KEY_PREFIX, most, token, read, *given])
        return [j for j, _, _ in started_jobs(reply, JOB_KEY_PREFIX, RETRY_KEY_PREFIX)]

    try:
        await pool.delete(queue, *keys)
        # read-5 is due last; read-4 is not due (score past "now"); read-1 runs elsewhere
        await pool.zadd(queue, {"read-5": 5000, "read-0": 1000, "read-1": 1001, "read-2": 1002,
                                "read-3": 1003, "read-4": 20_000})
        await pool.set(IN_PROGRESS_KEY_PREFIX + "read-1", b"other|1")
        assert await call("w|1", 2, 10) == ["read-0", "read-2"]  # at most 2, in score order
        assert await call("w|2", 10, 10, "read-3", "read-0") == ["read-3", "read-5"]
        assert await call("w|3", 10, 2) == []  # the two first are in progress: read no further
        assert await call("w|4", 10, 0) == []  # nothing read, nothing given
        assert await pool.get(IN_PROGRESS_KEY_PREFIX + "read-4") is None
    finally:
        await pool.delete(queue, *keys)
        await pool.aclose()


async def test_a_poll_starts_what_the_script_read_and_clears_the_failure_count(
    embedded_redis: str,
) -> None:
    """The worker's poll is the start script alone (it reads the queue itself): jobs due start,
    and a poll that worked resets the count of Redis failures, so the next outage is logged and
    backed off from the start again."""
    queue = "wbtest:start-poll"
    pool = await open_pool(embedded_redis, queue)
    worker = QueueWorker(functions=[func(_noop, name="noop")], redis_pool=pool,
                         queue_name=queue, handle_signals=False, keep_result=0, max_jobs=2)
    ids = [f"poll-{i}" for i in range(3)]
    keys = [p + j for j in ids for p in (IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX, RETRY_KEY_PREFIX)]
    try:
        await pool.delete(queue, *keys)
        await pool.zadd(queue, {j: 1000 + i for i, j in enumerate(ids)})
        worker._redis_failures = 3  # as after an outage
        await worker._poll_once()
        assert worker._redis_failures == 0
        assert sorted(worker.tasks) == ids[:2]  # two slots: the first two due
        assert worker._read_again  # full: read again once a slot frees
    finally:
        for task in worker.tasks.values():
            task.cancel()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        await pool.delete(queue, *keys)
        await pool.aclose()
