"""An item job is its queue entry alone: submit writes no ``arq:job:<id>`` key, the worker
builds the payload ARQ's ``run_job`` reads from the job's id (byte for byte what ARQ would have
stored), a job enqueued with a key by an earlier version still runs from its key, and a cancel
drops the entries. Both backends."""

from __future__ import annotations

import json
from typing import Any

from arq.constants import job_key_prefix
from arq.jobs import JobStatus, serialize_job

from workbench import Workbench
from workbench.core.codec import job_dumps
from workbench.queue import jobs as queue
from workbench.queue.arq_adapter import arq_job


async def _job_keys(redis: Any, wb: Workbench) -> list[bytes]:
    """This queue's item job keys (the Redis may be shared with other tests' queues)."""
    tag = queue.queue_tag(wb.settings.queue_name)
    return [k async for k in redis.scan_iter(match=f"{job_key_prefix}*:{tag}")]


async def test_enqueue_writes_queue_entries_only(wb: Workbench, redis: Any,
                                                 run_worker: Any) -> None:
    name = wb.settings.queue_name
    batch = await wb.submit([f"http://example.org/e/{i}" for i in range(6)], pipeline="noop")
    ids = sorted(int(i) for i in (await batch.status())["item_id"])
    assert await _job_keys(redis, wb) == []
    assert await redis.zcard(name) == 6
    # ARQ's own view of one: queued (its entry), no stored payload
    job = arq_job(redis, queue.job_id(name, ids[0], 1), name)
    assert await job.status() == JobStatus.queued and await job.info() is None
    # enqueued again (a reconcile, a racing submitter): nothing added, scores unchanged
    before = await redis.zrange(name, 0, -1, withscores=True)
    assert await queue.enqueue(redis, name, [(i, 1) for i in ids]) == 0
    assert await redis.zrange(name, 0, -1, withscores=True) == before
    await run_worker(burst=True)
    assert (await batch.counts())["done"] == 6
    assert await redis.zcard(name) == 0 and await _job_keys(redis, wb) == []


async def test_the_implied_payload_is_arqs_own() -> None:
    payload = queue.implied_payload("some-queue")
    jid = queue.job_id("some-queue", 123_456, 3)
    raw = payload(jid, 1_700_000_000_123)
    assert raw == serialize_job(queue.JOB_FUNCTION, (123_456, 3), {}, None, 1_700_000_000_123,
                                serializer=job_dumps)
    assert json.loads(raw)["a"] == [123_456, 3]
    assert payload("123456:3", 5) is not None  # untagged, as ids were once written
    # another queue's item job, a cron job: not ours to imply
    assert payload(queue.job_id("other-queue", 1, 1), 5) is None
    assert payload("cron:cleanup:1700000000000", 5) is None


async def test_a_job_with_a_key_of_its_own_runs_from_it(wb: Workbench, redis: Any,
                                                       run_worker: Any) -> None:
    """Jobs written by an earlier version (key + entry) run from their key; a key whose entry
    is gone is missing for reconcile (it would never run) and is enqueued again."""
    name = wb.settings.queue_name
    batch = await wb.submit([f"http://example.org/k/{i}" for i in range(3)], pipeline="noop")
    ids = sorted(int(i) for i in (await batch.status())["item_id"])
    for i in ids:  # as an earlier version enqueued them
        jid = queue.job_id(name, i, 1)
        await redis.set(job_key_prefix + jid, serialize_job(
            queue.JOB_FUNCTION, (i, 1), {}, None, 1000, serializer=job_dumps), px=600_000)
    await redis.zrem(name, queue.job_id(name, ids[2], 1))
    assert await queue.missing(redis, name, [(i, 1) for i in ids]) == [(ids[2], 1)]
    assert await queue.enqueue(redis, name, [(ids[2], 1)]) == 1
    await run_worker(burst=True)
    assert (await batch.counts())["done"] == 3
    assert await _job_keys(redis, wb) == []  # ARQ's finish deleted the keys it ran from


async def test_cancel_drops_the_entries(wb: Workbench, redis: Any) -> None:
    name = wb.settings.queue_name
    keep = await wb.submit([f"http://example.org/keep/{i}" for i in range(4)], pipeline="noop")
    gone = await wb.submit([f"http://example.org/gone/{i}" for i in range(5)], pipeline="noop")
    assert await gone.cancel() == 5
    left = {m.decode() for m in await redis.zrange(name, 0, -1)}
    kept = {queue.job_id(name, int(i), 1) for i in (await keep.status())["item_id"]}
    assert left == kept
