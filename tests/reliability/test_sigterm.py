"""SIGTERM to a worker mid-batch: items still running after the grace period are handed back to
the queue (same attempt, the try not counted), none is lost, and they complete after a restart."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from .conftest import report, tally, wait_for, wait_settled

N = 60


@pytest.mark.slow
async def test_sigterm_hands_running_items_back(make_cluster) -> None:
    cluster = make_cluster()
    wb = cluster.client()
    batch = await wb.submit([f"http://example.org/t/{i}" for i in range(N)], pipeline="rel-sleep")
    # Items take 60 s in this worker: SIGTERM finds 8 running; the grace period is 1 s.
    worker = cluster.start_worker("--processes", "1", "--concurrency", "8",
                                  WORKBENCH_TEST_SLEEP_S="60")

    async def running() -> int:
        return (await batch.counts())["running"]

    await wait_for(lambda: _eq(running(), 8), 60, "8 items running")
    async with wb.ledger.read_engine.connect() as conn:
        held = dict((await conn.execute(text(
            "SELECT id, attempts FROM items WHERE batch_id = :b AND status = 'running'"),
            {"b": batch.id})).all())
    t0 = time.monotonic()
    assert worker.terminate(timeout=30) == 0
    stopped_s = round(time.monotonic() - t0, 1)
    counts = await batch.counts()
    assert counts["running"] == 0 and counts["queued"] == N and counts["failed"] == 0, counts
    st = await batch.status()
    back = st[st["item_id"].isin(list(held))]
    assert (back["status"] == "queued").all()
    assert (back["tries"] == 0).all()  # a shutdown is not the item's fault
    assert dict(zip(back["item_id"], back["attempts"], strict=True)) == held  # same attempt

    t1 = time.monotonic()
    restarted = cluster.start_worker("--processes", "1", "--concurrency", "8",
                                     WORKBENCH_TEST_SLEEP_S="0.01")
    counts = await wait_settled(wb, batch.id, 60)
    recovery = round(time.monotonic() - t1, 1)
    assert restarted.terminate() == 0
    t = await tally(wb, batch.id, N)
    report("SIGTERM mid-batch, then restart", lost=t.lost, duplicates=t.duplicates,
           recovery_s=recovery, handed_back=len(held), worker_stopped_in_s=stopped_s,
           counts=counts)
    assert t.lost == 0 and t.duplicates == 0 and counts["done"] == N
    st = await batch.status()
    assert (st[st["item_id"].isin(list(held))]["attempts"] == 1).all()  # ran once, as attempt 1


async def _eq(coro, value: int) -> bool:
    return (await coro) == value
