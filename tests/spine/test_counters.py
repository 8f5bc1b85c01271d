"""Per-batch status counters (``ledger.counters``): ``counts()`` equals a count of the items
after every kind of write, on both backends; it never reads the items table; bulk statements
keep it exact; PostgreSQL workers do not wait on each other's counter rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text

from workbench import Workbench
from workbench.core.status import Counts
from workbench.ledger import counters


async def _counted(wb: Workbench, batch_id: str) -> Counts:
    """The batch's items per status, counted over the items table."""
    async with wb.ledger.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT status, count(*) FROM items WHERE batch_id = :b GROUP BY status"),
            {"b": batch_id})
        return Counts({s: n for s, n in rows})


async def _agrees(wb: Workbench, batch_id: str) -> Counts:
    counts = await wb.ledger.counts(batch_id)
    assert counts == await _counted(wb, batch_id)
    return counts


def _c(**counts: int) -> Counts:
    return Counts(counts)


def _result(batch_id: str) -> dict[str, Any]:
    return dict(
        batch_id=batch_id, normalized_url="http://example.org/", pipeline="noop",
        pipeline_version="1", params_hash="x", workbench_version="0", data="{}",
        cached=False, from_stored_page=False, timings={},
    )


async def test_counts_follow_every_writer(wb: Workbench) -> None:
    urls = [f"http://example.org/c/{i}" for i in range(12)]
    first = await wb.submit(urls[:4])
    ledger = wb.ledger
    info = await ledger.batch_info(first.id)
    for r in await ledger.item_rows(first.id):  # analysed: a second submit copies the results
        assert await ledger.claim(r["id"], r["attempts"], "w")
        assert await ledger.complete(r["id"], r["attempts"], dict(
            _result(first.id), normalized_url=r["normalized_url"], pipeline=info.pipeline,
            pipeline_version=info.pipeline_version, params_hash=info.params_hash))
    assert (await _agrees(wb, first.id))["done"] == 4

    batch = await wb.submit(urls)
    assert await _agrees(wb, batch.id) == _c(done=4, queued=8)  # the copies are done
    jobs = [(r["id"], r["attempts"]) for r in await ledger.item_rows(batch.id)
            if r["status"] == "queued"]
    claims = await asyncio.gather(*(ledger.claim(i, a, "w1") for i, a in jobs))  # group commit
    assert all(claims)
    assert (await _agrees(wb, batch.id))["running"] == 8
    assert await ledger.claim(*jobs[0], "w2") is None  # refused: nothing moves
    (i0, a0), (i1, a1), (i2, a2), (i3, a3), (i4, _), *rest = jobs
    assert await ledger.complete(i0, a0, _result(batch.id))
    assert not await ledger.complete(i0, a0, _result(batch.id))  # a second result: refused
    assert await ledger.fail(i1, a1, {"error_type": "boom", "error_message": "x"})
    assert await ledger.retry_later(i2, a2, {"error_type": "blip"}, 0) == a2 + 1
    assert await ledger.hand_back(i3, a3)
    assert await _agrees(wb, batch.id) == _c(done=5, failed=1, queued=2, running=4)

    # a lost worker's items: queued again under a new attempt, or failed out of tries
    await ledger.register_worker("dead", hostname="h", pid=1, concurrency=1, pipelines=[])
    async with ledger.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE workers SET heartbeat_at = '2000-01-01 00:00:00' WHERE id = 'dead'"))
        await conn.execute(text(
            "UPDATE items SET worker_id = 'dead', started_at = '2000-01-01 00:00:00' "
            f"WHERE id IN ({i4}, {rest[0][0]})"))
        await conn.execute(text(f"UPDATE items SET tries = 5 WHERE id = {i4}"))
    requeued, failed = await ledger.requeue_lost(heartbeat_timeout_s=30, max_tries=2)
    assert len(requeued) == 1 and failed == 1
    assert await _agrees(wb, batch.id) == _c(done=5, failed=2, queued=3, running=2)

    assert len(await ledger.retry(batch.id)) == 2  # every failure
    assert await _agrees(wb, batch.id) == _c(done=5, queued=5, running=2)
    assert await batch.cancel() == 7
    assert await _agrees(wb, batch.id) == _c(done=5, cancelled=7)
    assert len(await ledger.retry(batch.id, [i0, i1])) == 1  # i0 is done: not retried
    assert await _agrees(wb, batch.id) == _c(done=5, cancelled=6, queued=1)
    # the other batches' counts never moved, and every reader agrees
    assert await _agrees(wb, first.id) == _c(done=4)
    listed = {b["id"]: b["counts"] for b in await ledger.list_batches()}
    assert listed == {first.id: _c(done=4), batch.id: _c(done=5, cancelled=6, queued=1)}
    activity = await ledger.batch_activity(batch.id)
    assert activity.counts == await ledger.counts(batch.id)
    assert await ledger.active_count(batch.id) == 1
    assert await ledger.counts("no-such-batch") == Counts()


async def test_bulk_cancel_and_retry_recount(wb: Workbench) -> None:
    """Past ``BULK_ROWS`` SQLite pauses its trigger and recounts: the same counts."""
    n = counters.BULK_ROWS + 50
    batch = await wb.submit([f"http://example.org/b/{i}" for i in range(n)])
    ledger = wb.ledger
    jobs = [(r["id"], r["attempts"]) for r in await ledger.item_rows(batch.id, limit=30)]
    assert all(await asyncio.gather(*(ledger.claim(i, a, "w") for i, a in jobs)))
    for i, a in jobs[:10]:
        assert await ledger.fail(i, a, {"error_type": "boom"})
    assert await _agrees(wb, batch.id) == _c(queued=n - 30, running=20, failed=10)
    assert await batch.cancel() == n - 10
    assert await _agrees(wb, batch.id) == _c(failed=10, cancelled=n - 10)
    ids = [r["id"] for r in await ledger.item_rows(batch.id)]
    assert len(await ledger.retry(batch.id, ids)) == n  # failed and cancelled, by id
    assert await _agrees(wb, batch.id) == _c(queued=n)
    async with ledger.engine.connect() as conn:  # the pause never outlives its transaction
        assert (await conn.execute(text("SELECT count(*) FROM count_pause"))).scalar() == 0
    # the trigger works again after a bulk statement
    claim = await ledger.claim(ids[0], 2, "w")
    assert claim is not None
    assert (await _agrees(wb, batch.id))["running"] == 1


async def test_counts_never_read_the_items(wb: Workbench) -> None:
    batch = await wb.submit([f"http://example.org/n/{i}" for i in range(5)])
    await wb.ledger.counts(batch.id)  # connected and migrated
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = wb.ledger.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert (await batch.counts())["queued"] == 5
    finally:
        event.remove(engine, "before_cursor_execute", record)
    reads = [s for s in seen if "batch_counts" in s]
    assert reads and not any("items" in s for s in seen), seen


async def test_postgresql_writers_never_wait_on_a_counter_row(
    make_wb: Callable[..., Workbench], backend: str
) -> None:
    """Two transactions changing statuses of the same batch at once: the second commits while
    the first is still open (each adds to its own connection's row)."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    wb = make_wb()
    batch = await wb.submit(["http://example.org/p/1", "http://example.org/p/2"])
    a, b = (r["id"] for r in await wb.ledger.item_rows(batch.id))
    engine = wb.ledger.engine
    async with engine.connect() as first:
        await first.begin()
        await first.execute(text(f"UPDATE items SET status = 'running' WHERE id = {a}"))
        async with engine.begin() as second:
            await second.execute(text("SET LOCAL lock_timeout = '2s'"))
            await second.execute(text(f"UPDATE items SET status = 'done' WHERE id = {b}"))
        await first.commit()
    assert await _agrees(wb, batch.id) == _c(running=1, done=1)


async def test_cleanup_folds_settled_batches_counters(
    make_wb: Callable[..., Workbench], backend: str
) -> None:
    """PostgreSQL: the rows each connection added to a settled batch's counters are folded
    into one per status, the counts unchanged; an active batch's rows are left alone."""
    from workbench.cleanup import run_cleanup

    wb = make_wb()
    settled = await wb.submit([f"http://example.org/f/{i}" for i in range(4)])
    active = await wb.submit([f"http://example.org/g/{i}" for i in range(4)])
    engine = wb.ledger.engine
    for batch in (settled, active):
        ids = [r["id"] for r in await wb.ledger.item_rows(batch.id)]
        for i, status in zip(ids, ("running", "done", "failed"), strict=False):
            async with engine.connect() as a, engine.connect() as b:  # two backends: two rows
                async with a.begin():
                    await a.execute(text(f"UPDATE items SET status = 'running' WHERE id = {i}"))
                if status != "running":
                    async with b.begin():
                        await b.execute(text(
                            f"UPDATE items SET status = '{status}' WHERE id = {i}"))
    async with engine.begin() as conn:  # the settled batch's last item
        await conn.execute(text(
            f"UPDATE items SET status = 'cancelled' WHERE batch_id = '{settled.id}' "
            "AND status IN ('queued', 'running')"))

    async def rows(batch_id: str) -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text(
                "SELECT count(*) FROM batch_counts WHERE batch_id = :b"), {"b": batch_id})
            ).scalar_one())

    before = {b.id: (await _agrees(wb, b.id), await rows(b.id)) for b in (settled, active)}
    report = await run_cleanup(wb.settings)
    assert report.ok, report.errors
    assert await _agrees(wb, settled.id) == before[settled.id][0]
    assert await _agrees(wb, active.id) == before[active.id][0]
    assert await rows(active.id) == before[active.id][1]  # still active: not touched
    if backend == "postgresql":
        assert report.counter_rows_folded > 0
        assert await rows(settled.id) == 3 < before[settled.id][1]  # done, failed, cancelled
        assert any("counters" in line for line in report.lines())
        assert await wb.ledger.fold_counters() == 0  # nothing left to fold
    else:
        assert report.counter_rows_folded == 0


async def test_listing_and_summary_times_equal_the_items(wb: Workbench) -> None:
    """``list_batches``' and the email summary's first start and last end, per batch."""
    batches = [await wb.submit([f"http://example.org/t{b}/{i}" for i in range(6)])
               for b in range(2)]
    ledger = wb.ledger
    for batch in batches:
        for r in (await ledger.item_rows(batch.id))[:3]:
            assert await ledger.claim(r["id"], r["attempts"], "w")
        r = (await ledger.item_rows(batch.id))[0]
        assert await ledger.fail(r["id"], r["attempts"], {"error_type": "boom"})
    listed = {b["id"]: b for b in await ledger.list_batches()}
    async with ledger.engine.connect() as conn:
        for batch in batches:
            first, last = (await conn.execute(text(
                "SELECT min(started_at), max(finished_at) FROM items WHERE batch_id = :b"),
                {"b": batch.id})).one()
            got = listed[batch.id]
            assert first is not None and last is not None
            assert got["first_started_at"].replace(tzinfo=None) == _naive(first)
            assert got["last_finished_at"].replace(tzinfo=None) == _naive(last)
            activity = await ledger.batch_activity(batch.id)
            assert (activity.first_started_at, activity.last_finished_at) == (
                got["first_started_at"], got["last_finished_at"])


def _naive(value: Any) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value) if isinstance(value, str) else value
