"""``Batch.cancel`` drops the jobs while the ledger's UPDATE runs (``client.cancelling``), on both
backends: every job of the batch is gone afterwards, a job re-queued under a new attempt
meanwhile included; a failed UPDATE gets its dropped jobs back (retry delays kept); a job run
after the cancel finds its item cancelled; and a reconcile during a cancel does not enqueue the
dropped jobs again. A batch that is most of the queue has its jobs dropped by a walk through the
queue (no list of them read or held), with the same guarantees."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from workbench import Workbench
from workbench.client import cancelling
from workbench.core.errors import LedgerError
from workbench.queue import jobs as queue
from workbench.queue.arq_adapter import JOB_KEY_PREFIX
from workbench.queue.reconcile import reconcile

N = 30


async def _items(wb: Workbench, batch_id: str) -> dict[int, Any]:
    return {r["id"]: r for r in await wb.ledger.item_rows(batch_id)}


async def _jobs_in_redis(wb: Workbench, redis: Any, items: dict[int, Any]) -> list[int]:
    """The items whose current attempt has a queue entry or a job key (none is written: see
    test_enqueue_writes_queue_entries_only)."""
    name = wb.settings.queue_name
    out = []
    for i, row in items.items():
        jid = queue.job_id(name, i, row["attempts"])
        if await redis.exists(JOB_KEY_PREFIX + jid) or await redis.zscore(name, jid) is not None:
            out.append(i)
    return out


def _failing_after(dropped: asyncio.Event) -> Any:
    """A stand-in for the ledger's cancel UPDATE that fails once some jobs were dropped."""

    async def failing_cancel(batch_id: str) -> Any:
        await asyncio.wait_for(dropped.wait(), 10)
        raise LedgerError("ledger error while cancelling items: disk I/O error")

    return failing_cancel


async def test_jobs_dropped_while_the_update_runs(
    wb: Workbench, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UPDATE waits here until jobs were dropped (it would time out were the halves run one
    after the other); meanwhile one item is re-queued under a new attempt, as a retry or the
    worker's retry-later would: its new job, never seen by the read ahead, is dropped too."""
    monkeypatch.setattr(cancelling, "PIECE_ROWS", 7)  # several pieces
    batch = await wb.submit([f"http://example.org/x/{i}" for i in range(N)], pipeline="noop")
    items = await _items(wb, batch.id)
    assert len(await _jobs_in_redis(wb, redis, items)) == N
    ledger = wb.ledger
    real_cancel, real_drop = ledger.cancel, queue.drop
    dropped = asyncio.Event()
    last = min(items)  # its piece is read and dropped first, before the new attempt

    async def drop(*args: Any) -> None:
        await real_drop(*args)
        dropped.set()

    async def slow_cancel(batch_id: str) -> list[tuple[int, int]]:
        await asyncio.wait_for(dropped.wait(), 10)
        async with ledger.engine.begin() as conn:  # the last item: attempt 2, its job queued
            await conn.execute(text(f"UPDATE items SET attempts = 2 WHERE id = {last}"))
        await queue.enqueue(redis, wb.settings.queue_name, [(last, 2)])
        return await real_cancel(batch_id)

    monkeypatch.setattr(queue, "drop", drop)
    monkeypatch.setattr(ledger, "cancel", slow_cancel)
    assert await batch.cancel() == N
    items = await _items(wb, batch.id)
    assert {r["status"] for r in items.values()} == {"cancelled"}
    assert items[last]["attempts"] == 2
    assert await _jobs_in_redis(wb, redis, items) == []
    # a job run after the cancel finds its item cancelled and is skipped
    assert await ledger.claim(last, 2, "w") is None
    # nothing missing for reconcile, no cancel left under way
    assert await queue.cancels_state(redis, wb.settings.queue_name) == (1, 0)
    assert (await reconcile(ledger, redis, wb.settings, full=True)).missing_requeued == 0


async def test_failed_update_enqueues_the_dropped_jobs_again(
    wb: Workbench, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cancelling, "PIECE_ROWS", 7)
    batch = await wb.submit([f"http://example.org/f/{i}" for i in range(N)], pipeline="noop")
    items = await _items(wb, batch.id)
    first = min(items)
    name = wb.settings.queue_name
    # one item waits for a retry an hour from now: its job comes back just as late
    async with wb.ledger.engine.begin() as conn:
        await conn.execute(text("UPDATE items SET next_try_at = :t WHERE id = :i"), {
            "t": "2999-01-01 00:00:00" if wb.ledger.dialect == "sqlite" else None, "i": first})
        if wb.ledger.dialect != "sqlite":
            await conn.execute(text(
                "UPDATE items SET next_try_at = now() AT TIME ZONE 'UTC' + interval '1 hour' "
                f"WHERE id = {first}"))
    real_drop = queue.drop
    dropped: list[tuple[int, int]] = []
    some = asyncio.Event()

    async def drop(redis_: Any, queue_name: str, jobs: Any) -> None:
        await real_drop(redis_, queue_name, jobs)
        dropped.extend(jobs)
        some.set()

    monkeypatch.setattr(queue, "drop", drop)
    monkeypatch.setattr(wb.ledger, "cancel", _failing_after(some))
    with pytest.raises(LedgerError):
        await batch.cancel()
    assert dropped  # dropped before the failure
    items = await _items(wb, batch.id)
    assert {r["status"] for r in items.values()} == {"queued"}
    assert sorted(await _jobs_in_redis(wb, redis, items)) == sorted(items)
    score = await redis.zscore(name, queue.job_id(name, first, 1))
    others = await redis.zscore(name, queue.job_id(name, first + 1, 1))
    assert score > others + 50 * 60 * 1000  # its retry delay kept
    assert await queue.cancels_state(redis, name) == (1, 0)


async def test_reconcile_leaves_missing_jobs_while_a_cancel_is_under_way(
    wb: Workbench, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = await wb.submit([f"http://example.org/r/{i}" for i in range(5)], pipeline="noop")
    items = await _items(wb, batch.id)
    name = wb.settings.queue_name
    # dropped ahead of the ledger's update, which has not committed yet
    await queue.drop(redis, name, [(i, 1) for i in items])
    token = await queue.cancel_begin(redis, name)
    assert (await reconcile(wb.ledger, redis, wb.settings, full=True)).missing_requeued == 0
    assert await _jobs_in_redis(wb, redis, items) == []
    await queue.cancel_end(redis, name, token)

    # a cancel that began (and ended) while a pass was checking Redis: left alone as well
    real_missing = queue.missing

    async def missing_during_a_cancel(*args: Any) -> list[tuple[int, int]]:
        out = await real_missing(*args)
        await queue.cancel_end(redis, name, await queue.cancel_begin(redis, name))
        return out

    monkeypatch.setattr(queue, "missing", missing_during_a_cancel)
    assert (await reconcile(wb.ledger, redis, wb.settings, full=True)).missing_requeued == 0
    monkeypatch.setattr(queue, "missing", real_missing)

    # no cancel under way: the ledger is the truth, the jobs come back
    assert (await reconcile(wb.ledger, redis, wb.settings, full=True)).missing_requeued == 5
    assert len(await _jobs_in_redis(wb, redis, items)) == 5

    # a cancel whose process died is given up on after CANCEL_TTL_MS
    monkeypatch.setattr(queue, "CANCEL_TTL_MS", -1)
    await queue.cancel_begin(redis, name)
    assert (await queue.cancels_state(redis, name))[1] == 0


def _by_span(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches take the walk through the queue, several calls of it; the list path and the
    RETURNING variant of the UPDATE fail the test if used."""
    monkeypatch.setattr(cancelling, "SPAN_MIN", 1)
    monkeypatch.setattr(queue, "SPAN_RANKS", 4)

    async def no_list(*args: Any) -> None:
        raise AssertionError("the list path was taken")

    monkeypatch.setattr(queue, "drop", no_list)


async def test_a_batch_that_is_most_of_the_queue_is_dropped_by_a_walk(
    wb: Workbench, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only this batch's item jobs of this queue go, wherever they sit in the queue: not the
    other batch's, not another queue's job with an item id in the span, not a cron job. A job
    re-queued under a new attempt while the UPDATE runs goes too (the walk after the commit)."""
    _by_span(monkeypatch)
    name = wb.settings.queue_name
    keep = await wb.submit([f"http://example.org/keep/{i}" for i in range(3)], pipeline="noop")
    batch = await wb.submit([f"http://example.org/s/{i}" for i in range(11)], pipeline="noop")
    items = await _items(wb, batch.id)
    first = min(items)
    foreign = queue.job_id("another:queue", first + 1, 1)
    await redis.zadd(name, {foreign: 0, "cron:cleanup:1700000000000": 1})
    ledger = wb.ledger
    real_cancel = ledger.cancel_count
    monkeypatch.setattr(ledger, "cancel", lambda *a: pytest.fail("RETURNING used"))

    async def requeue_then_cancel(batch_id: str) -> int:
        async with ledger.engine.begin() as conn:  # the first item: attempt 2, its job queued
            await conn.execute(text(f"UPDATE items SET attempts = 2 WHERE id = {first}"))
        await queue.enqueue(redis, name, [(first, 2)], front=True)
        return await real_cancel(batch_id)

    monkeypatch.setattr(ledger, "cancel_count", requeue_then_cancel)
    assert await batch.cancel() == 11
    items = await _items(wb, batch.id)
    assert {r["status"] for r in items.values()} == {"cancelled"}
    assert await _jobs_in_redis(wb, redis, items) == []
    left = {m.decode() for m in await redis.zrange(name, 0, -1)}
    kept = {queue.job_id(name, int(i), 1) for i in (await keep.status())["item_id"]}
    assert left == kept | {foreign, "cron:cleanup:1700000000000"}
    assert await queue.cancels_state(redis, name) == (1, 0)
    assert (await keep.counts())["queued"] == 3


async def test_a_failed_update_after_a_walk_enqueues_the_jobs_again(
    wb: Workbench, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _by_span(monkeypatch)
    name = wb.settings.queue_name
    batch = await wb.submit([f"http://example.org/w/{i}" for i in range(9)], pipeline="noop")
    items = await _items(wb, batch.id)
    walked = asyncio.Event()
    real_walk = queue.drop_span

    async def walk(*args: Any) -> int:
        gone = await real_walk(*args)
        walked.set()
        return gone

    monkeypatch.setattr(queue, "drop_span", walk)
    monkeypatch.setattr(wb.ledger, "cancel_count", _failing_after(walked))
    with pytest.raises(LedgerError):
        await batch.cancel()
    items = await _items(wb, batch.id)
    assert {r["status"] for r in items.values()} == {"queued"}
    assert sorted(await _jobs_in_redis(wb, redis, items)) == sorted(items)
    assert await queue.cancels_state(redis, name) == (1, 0)


async def test_which_cancel_path(wb: Workbench, redis: Any,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk for a batch of at least SPAN_MIN active items that is at least half the queue;
    the list otherwise."""
    monkeypatch.setattr(cancelling, "SPAN_MIN", 5)
    name = wb.settings.queue_name
    small = await wb.submit([f"http://example.org/a/{i}" for i in range(4)], pipeline="noop")
    big = await wb.submit([f"http://example.org/b/{i}" for i in range(6)], pipeline="noop")
    most = cancelling._most_of_the_queue
    assert not await most(wb.ledger, redis, name, small.id)  # too few
    assert await most(wb.ledger, redis, name, big.id)  # 6 of 10
    await redis.zadd(name, {f"x{i}": 0 for i in range(3)})
    assert not await most(wb.ledger, redis, name, big.id)  # 6 of 13
