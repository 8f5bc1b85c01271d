"""A worker killed with ``kill -9`` mid-batch, three times, restarted each time.

Every item must end ``done`` with exactly one result, written by its final attempt, and the items
the dead worker held must be re-run within 60 s (the heartbeat timeout is 3 s here).
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from .conftest import report, tally, wait_for, wait_settled

N = 2_000


async def _progress(wb, batch) -> int:
    c = await batch.counts()
    return c["done"] + c["failed"]


async def _held_by(wb, worker_pid: int) -> set[int]:
    async with wb.ledger.read_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT i.id FROM items i JOIN workers w ON w.id = i.worker_id "
                 "WHERE i.status = 'running' AND w.pid = :pid"), {"pid": worker_pid})
        return {r[0] for r in rows}


@pytest.mark.slow
async def test_kill_9_three_times_nothing_lost(make_cluster) -> None:
    cluster = make_cluster()
    wb = cluster.client()
    batch = await wb.submit([f"http://example.org/k/{i}" for i in range(N)], pipeline="rel-sleep")
    # ~8 in flight x 40 ms: the batch lasts long enough for three kills
    args = ("--processes", "1", "--concurrency", "8")
    env = {"WORKBENCH_TEST_SLEEP_S": "0.04"}
    worker = cluster.start_worker(*args, **env)
    recoveries: list[float] = []
    held_total = 0
    for fraction in (0.15, 0.40, 0.65):
        await wait_for(lambda f=fraction: _at(wb, batch, f), 120, f"{fraction:.0%} progress")
        # kill while it holds items (its jobs start and end in bursts: catch it mid-burst)
        dead = worker.pid
        await wait_for(lambda dead=dead: _held_by(wb, dead), 30, "items running")
        worker.kill9()
        killed_at = time.monotonic()
        held = await _held_by(wb, dead)  # what the dead worker really took down with it
        held_total += len(held)
        worker = cluster.start_worker(*args, **env)  # restarted at once

        async def rerun(held=held) -> bool:
            if not held:  # it finished its burst in the instant before the kill
                return True
            async with wb.ledger.read_engine.connect() as conn:
                done = (await conn.execute(
                    text("SELECT count(*) FROM items WHERE status = 'done' AND id IN "
                         f"({','.join(map(str, held))})"))).scalar_one()
            return done == len(held)

        await wait_for(rerun, 90, "the dead worker's items to be re-run")
        recoveries.append(round(time.monotonic() - killed_at, 1))
    counts = await wait_settled(wb, batch.id, 180)
    assert worker.terminate() == 0
    t = await tally(wb, batch.id, N)
    report("kill -9 x3 during a 2,000-item batch", lost=t.lost, duplicates=t.duplicates,
           recovery_s=recoveries, items_held_at_kills=held_total, counts=counts)
    assert t.lost == 0 and counts == {**counts, "done": N, "failed": 0}
    assert t.duplicates == 0 and t.results == N
    assert max(recoveries) < 60
    # re-run items carry a newer attempt: the dead worker's attempt can never write
    df = await batch.status()
    assert (df["attempts"] > 1).sum() >= held_total


async def _at(wb, batch, fraction: float) -> bool:
    return await _progress(wb, batch) >= fraction * N
