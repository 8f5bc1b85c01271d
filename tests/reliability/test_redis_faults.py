"""Redis is only the transport: killed and restarted mid-batch (AOF), or emptied, the ledger still
has every item and reconcile puts the queue back. On both backends: SQLite + the embedded server,
and PostgreSQL + Redis 7 (a second redis-server of the test's own for the kill; the machine's
shared server, on a database index of the test's own, for the flush)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from .conftest import report, tally, wait_for, wait_settled

N = 1_000
ARGS = ("--processes", "1", "--concurrency", "8")
ENV = {"WORKBENCH_TEST_SLEEP_S": "0.03"}


async def _done(batch) -> int:
    return (await batch.counts())["done"]


@pytest.mark.slow
async def test_redis_killed_and_restarted(make_cluster, backend: str) -> None:
    cluster = await make_cluster.on(backend, own_redis=True)
    wb = cluster.client()
    batch = await wb.submit([f"http://example.org/r/{i}" for i in range(N)], pipeline="rel-sleep")
    server = cluster.redis_server
    assert server is not None and server.pid
    binary = server.server_binary()
    worker = cluster.start_worker(*ARGS, **ENV)
    await wait_for(lambda: _at_least(batch, N * 0.25), 120, "25 % done")
    before = await _done(batch)
    os.kill(server.pid, signal.SIGKILL)  # no SHUTDOWN: the AOF keeps what was fsynced
    killed_at = time.monotonic()
    await wait_for(lambda: server.pid is None, 10, "redis-server to die")
    await asyncio.sleep(1.0)  # the worker runs a second without its transport
    await asyncio.to_thread(server.ensure_running)  # reloads the AOF
    await wait_for(lambda: _at_least(batch, before + 50), 60, "progress after the restart")
    recovery = round(time.monotonic() - killed_at, 1)
    counts = await wait_settled(wb, batch.id, 180)
    assert worker.alive(), "the worker must ride out a Redis restart\n" + worker.log()[-3000:]
    assert worker.terminate() == 0
    t = await tally(wb, batch.id, N)
    report("Redis kill -9 + restart (AOF) mid-batch", backend=cluster.label, lost=t.lost,
           duplicates=t.duplicates, recovery_s=recovery,
           server=f"{binary.product} {binary.version}", counts=counts)
    assert t.lost == 0 and t.duplicates == 0 and counts["failed"] == 0 and t.results == N
    assert recovery < 60


@pytest.mark.slow
async def test_redis_flushed_mid_batch(make_cluster, backend: str) -> None:
    cluster = await make_cluster.on(backend)
    wb = cluster.client()
    batch = await wb.submit([f"http://example.org/f/{i}" for i in range(N)], pipeline="rel-sleep")
    r = redis.Redis.from_url(cluster.redis_url)
    worker = cluster.start_worker(*ARGS, **ENV)
    await wait_for(lambda: _at_least(batch, N * 0.25), 120, "25 % done")
    if cluster.redis_server is not None:
        r.flushall()  # a server of the test's own: every job, in-progress key and the queue
        how = "FLUSHALL"
    else:
        r.flushdb()  # the shared server: only the database index this test owns
        how = "FLUSHDB"
    flushed_at = time.monotonic()
    queue = cluster.settings["queue_name"]
    await wait_for(lambda: r.zcard(queue) > 0, 60, "reconcile to restore the queue")
    restored = round(time.monotonic() - flushed_at, 1)
    counts = await wait_settled(wb, batch.id, 180)
    recovery = round(time.monotonic() - flushed_at, 1)
    assert worker.alive() and worker.terminate() == 0
    t = await tally(wb, batch.id, N)
    report(f"Redis {how} mid-batch", backend=cluster.label, lost=t.lost,
           duplicates=t.duplicates, queue_restored_s=restored, batch_done_s=recovery,
           counts=counts)
    assert t.lost == 0 and t.duplicates == 0 and counts["failed"] == 0 and t.results == N
    assert restored < 60


async def _at_least(batch, n: float) -> bool:
    return await _done(batch) >= n
