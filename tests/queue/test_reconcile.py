"""Reconcile on both backends: the items of a worker that stopped heart-beating go back to the
queue under a new attempt (ahead of the backlog) while they have tries left, and fail as
``worker_lost`` once they have none; a live worker's items are left alone; jobs missing from
Redis are enqueued again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from workbench import Workbench, pipeline
from workbench.queue import jobs as queue
from workbench.queue.reconcile import reconcile


def _job(wb: Workbench, item_id: int, attempt: int) -> str:
    return queue.job_id(wb.settings.queue_name, item_id, attempt)


async def _rows(wb: Workbench, batch_id: str) -> dict[int, Any]:
    return {r["id"]: r for r in await wb.ledger.item_rows(batch_id)}


async def test_lost_items_requeued_with_tries_left_failed_without(
    wb: Workbench, redis: Any, run_worker: Any
) -> None:
    batch = await wb.submit([f"http://example.org/r/{i}" for i in range(5)], pipeline="noop")
    ids = sorted(await _rows(wb, batch.id))
    ledger = wb.ledger
    for worker_id in ("dead", "alive"):
        await ledger.register_worker(worker_id, hostname="h", pid=1, concurrency=1, pipelines=[])
    # the dead worker held four items, two of them on their last try; the live one holds one
    for i in ids[:4]:
        assert await ledger.claim(i, 1, "dead")
    assert await ledger.claim(ids[4], 1, "alive")
    async with ledger.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE workers SET heartbeat_at = '2000-01-01 00:00:00' WHERE id = 'dead'"))
        await conn.execute(text("UPDATE items SET started_at = '2000-01-01 00:00:00'"))
        await conn.execute(text(f"UPDATE items SET tries = 2 WHERE id IN ({ids[2]}, {ids[3]})"))

    report = await reconcile(ledger, redis, wb.settings.model_copy(update={"max_tries": 2}))
    assert (report.lost_requeued, report.lost_failed) == (2, 2)
    rows = await _rows(wb, batch.id)
    for i in ids[:2]:  # tries left: queued again under the next attempt, with a job of its own
        assert (rows[i]["status"], rows[i]["attempts"], rows[i]["worker_id"]) == ("queued", 2, None)
        assert rows[i]["error_type"] == "worker_lost"  # kept for display until it runs
        assert await redis.zscore(wb.settings.queue_name, _job(wb, i, 2)) == 0  # in front
    for i in ids[2:4]:  # no tries left: failed, retryable by hand
        assert (rows[i]["status"], rows[i]["error_type"], rows[i]["retryable"]) == (
            "failed", "worker_lost", True)
        assert await redis.zscore(wb.settings.queue_name, _job(wb, i, 2)) is None
    assert rows[ids[4]]["status"] == "running"  # its worker is alive

    # a second pass finds nothing more to do
    assert not (await reconcile(ledger, redis, wb.settings.model_copy(
        update={"max_tries": 2}))).changed
    assert await ledger.hand_back(ids[4], 1)  # queued again under attempt 1, its job waiting

    await run_worker(max_tries=2)
    rows = await _rows(wb, batch.id)
    assert [rows[i]["status"] for i in ids] == ["done", "done", "failed", "failed", "done"]
    assert [rows[i]["attempts"] for i in ids] == [2, 2, 1, 1, 1]
    results = await batch.results()
    assert len(results) == 3 and results["item_id"].is_unique


async def test_missing_jobs_enqueued_again_with_their_delay(wb: Workbench, redis: Any) -> None:
    batch = await wb.submit([f"http://example.org/m/{i}" for i in range(3)], pipeline="noop")
    ids = sorted(await _rows(wb, batch.id))
    ledger = wb.ledger
    await ledger.register_worker("w", hostname="h", pid=1, concurrency=1, pipelines=[])
    assert await ledger.claim(ids[0], 1, "w")
    assert await ledger.retry_later(ids[0], 1, {"error_type": "blip"}, 300) == 2
    for i, a in ((ids[0], 2), (ids[1], 1), (ids[2], 1)):  # as after a FLUSHALL
        await redis.zrem(wb.settings.queue_name, _job(wb, i, a))

    report = await reconcile(ledger, redis, wb.settings)
    assert report.missing_requeued == 3 and report.lost_requeued == 0
    now_ms = await _redis_ms(redis)
    delayed = await redis.zscore(wb.settings.queue_name, _job(wb, ids[0], 2))
    assert 250_000 < delayed - now_ms <= 300_000  # the retry keeps its backoff
    for i in ids[1:]:
        assert await redis.zscore(wb.settings.queue_name, _job(wb, i, 1)) <= now_ms + 1000


async def test_missing_jobs_found_chunk_by_chunk_across_batches(
    wb: Workbench, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queued items are read a chunk at a time, batch by batch, and checked in Redis by a
    script: exactly the jobs gone are enqueued again, whatever chunk they fall in."""
    from workbench.ledger.store import Ledger

    batches = [await wb.submit([f"http://example.org/c{b}/{i}" for i in range(7)],
                               pipeline="noop") for b in range(2)]
    ledger = wb.ledger
    ids = [sorted(await _rows(wb, b.id)) for b in batches]
    assert await ledger.claim(ids[0][0], 1, "w")  # running: not queued, not checked
    chunks = [c async for c in ledger.queued_jobs(chunk_rows=3)]
    # 6 queued in the first batch, 7 in the second (in either order), each in item order
    assert sorted(len(c) for c in chunks) == [1, 3, 3, 3, 3]
    read = [i for c in chunks for i, _, _ in c]
    assert sorted(read) == ids[0][1:] + ids[1]
    assert {tuple(read[:6]), tuple(read[7:])} & {tuple(ids[0][1:])}
    gone = [ids[0][3], ids[0][6], ids[1][0], ids[1][5]]
    for i in gone:
        await redis.zrem(wb.settings.queue_name, _job(wb, i, 1))
    queued = [(i, 1) for c in chunks for i, _, _ in c]
    found = await queue.missing(redis, wb.settings.queue_name, queued)
    assert found == [job for job in queued if job[0] in gone]  # in the order asked

    real = Ledger.queued_jobs
    monkeypatch.setattr(Ledger, "queued_jobs", lambda self: real(self, chunk_rows=3))
    report = await reconcile(ledger, redis, wb.settings, full=True)
    assert report.missing_requeued == 4
    assert await queue.missing(redis, wb.settings.queue_name, queued) == []


async def _redis_ms(redis: Any) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


@pipeline("reconcile-pause", version="1")
async def _pause(url: str, ctx: Any) -> dict[str, Any]:
    """Runs longer than the worker's heartbeat timeout (3 s in tests)."""
    await asyncio.sleep(4.0)
    return {"attempt": ctx.attempt}


async def test_a_worker_never_takes_its_own_running_items_for_lost(
    wb: Workbench, run_worker: Any
) -> None:
    """Its reconcile heart-beats first: a worker alive enough to reconcile never re-queues its
    own running items, whatever kept its heartbeat from landing (here: a heartbeat due every 60 s
    against a 3 s timeout; in CI, a loop stopped 17 s while a CPU pool started: 22 items re-run,
    a page fetched twice)."""
    batch = await wb.submit([f"http://example.org/p/{i}" for i in range(6)],
                            pipeline="reconcile-pause")
    await run_worker(burst=True, heartbeat_s=60.0)
    status = await batch.status()
    assert (status["status"] == "done").all()
    assert status["attempts"].max() == 1, status[["url", "attempts", "error_type"]]


async def test_marks_of_a_worker_that_died_before_claiming_are_freed(
    wb: Workbench, redis: Any
) -> None:
    """A worker killed between marking jobs in progress and claiming their items leaves items
    ``queued`` that no worker would start until the marks expire (job_timeout + 70 s; a loaded
    run's kill -9 test saw 4 items still queued after 180 s). Reconcile deletes the marks of a
    worker the ledger knows is dead, and only those."""
    from workbench.queue.arq_adapter import IN_PROGRESS_KEY_PREFIX

    batch = await wb.submit([f"http://example.org/d/{i}" for i in range(4)], pipeline="noop")
    ids = sorted(await _rows(wb, batch.id))
    ledger = wb.ledger
    for worker_id in ("host:1:dead", "host:2:live"):
        await ledger.register_worker(worker_id, hostname="h", pid=1, concurrency=1, pipelines=[])
    async with ledger.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE workers SET heartbeat_at = '2000-01-01 00:00:00' WHERE id = 'host:1:dead'"))
    marks = {ids[0]: "host:1:dead|7", ids[1]: "host:2:live|3", ids[2]: "1",  # ARQ's own
             ids[3]: "host:9:unknown|1"}  # a worker the ledger never saw: left alone
    for item, mark in marks.items():
        await redis.psetex(IN_PROGRESS_KEY_PREFIX + _job(wb, item, 1), 300_000, mark)
    try:
        report = await reconcile(ledger, redis, wb.settings)
        assert report.unmarked == 1
        left = {i: await redis.get(IN_PROGRESS_KEY_PREFIX + _job(wb, i, 1)) for i in ids}
        assert left[ids[0]] is None
        assert [left[i] for i in ids[1:]] == [b"host:2:live|3", b"1", b"host:9:unknown|1"]
        # the freed job runs at once; the marks of unknown owners keep holding theirs (the
        # "live" worker's heartbeat lapses meanwhile: its mark may go too)
        await wb.start_worker(concurrency=2)
        try:
            for _ in range(600):
                rows = await _rows(wb, batch.id)
                if rows[ids[0]]["status"] == "done":
                    break
                await asyncio.sleep(0.05)
            assert [rows[i]["status"] for i in (ids[0], ids[2], ids[3])] == [
                "done", "queued", "queued"]
        finally:
            await wb.stop_workers()
    finally:
        await redis.delete(*(IN_PROGRESS_KEY_PREFIX + _job(wb, i, 1) for i in ids))


async def test_a_live_worker_writes_its_ledger_id_into_its_marks(
    wb: Workbench, redis: Any
) -> None:
    from workbench.queue.arq_adapter import IN_PROGRESS_KEY_PREFIX
    from workbench.queue.marks import owner_of

    batch = await wb.submit(["http://example.org/own/1"], pipeline="reconcile-pause")
    (item,) = await _rows(wb, batch.id)
    runtime = await wb.start_worker(concurrency=1)
    try:
        key = IN_PROGRESS_KEY_PREFIX + _job(wb, item, 1)
        for _ in range(200):
            mark = await redis.get(key)
            if mark:
                break
            await asyncio.sleep(0.05)
        assert mark is not None and owner_of(mark.decode()) == runtime.worker_id
    finally:
        await wb.stop_workers()
