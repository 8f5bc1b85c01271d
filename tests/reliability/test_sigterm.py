"""SIGTERM to a worker mid-batch, on both backends: items that can finish within the grace period
finish ``done``; only those still running when it ends are handed back to the queue (same attempt,
the try not counted); none is lost, nothing waiting is touched, and the rest completes after a
restart.

The short items wait on a gate (a file) that the test opens only after the SIGTERM, so they are
certainly running when the signal arrives and certainly finish inside the grace period; the long
ones sleep a minute and cannot.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from .conftest import report, tally, wait_for, wait_settled

SHORT = 4
LONG = 4
WAITING = 20
GRACE_S = 4


@pytest.mark.slow
async def test_sigterm_finishes_short_items_and_hands_long_ones_back(
    make_cluster, backend: str, tmp_path: Path
) -> None:
    cluster = await make_cluster.on(backend)
    wb = cluster.client()
    gate = tmp_path / "gate"
    urls = [f"http://example.org/short/{i}" for i in range(SHORT)]
    urls += [f"http://example.org/long/{i}" for i in range(LONG)]
    batch = await wb.submit(urls, pipeline="rel-gate")
    worker = cluster.start_worker(
        "--processes", "1", "--concurrency", str(SHORT + LONG),
        WORKBENCH_SHUTDOWN_GRACE_S=str(GRACE_S), WORKBENCH_TEST_GATE=str(gate),
    )

    async def running() -> int:
        return (await batch.counts())["running"]

    await wait_for(lambda: _eq(running(), SHORT + LONG), 60, "every item running")
    # a batch waiting behind: the stopping worker must not take any of it
    waiting = await wb.submit([f"http://example.org/w/{i}" for i in range(WAITING)],
                              pipeline="rel-sleep")
    async with wb.ledger.read_engine.connect() as conn:
        held = dict((await conn.execute(text(
            "SELECT id, attempts FROM items WHERE batch_id = :b AND status = 'running'"),
            {"b": batch.id})).all())
    t0 = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)  # stop taking jobs; running ones get the grace period
    gate.touch()  # only now may the short items finish: inside the grace period
    code = worker.popen.wait(GRACE_S + 30)
    stopped_s = round(time.monotonic() - t0, 1)
    assert code == 0, worker.log()[-3000:]

    st = await batch.status()
    short, long = st[st["url"].str.contains("/short/")], st[st["url"].str.contains("/long/")]
    assert (short["status"] == "done").all(), short[["status", "attempts", "tries"]]
    assert (short["attempts"] == 1).all() and (short["tries"] == 1).all()
    assert (long["status"] == "queued").all(), long[["status", "attempts", "tries"]]
    assert (long["tries"] == 0).all()  # a shutdown is not the item's fault
    assert dict(zip(long["item_id"], long["attempts"], strict=True)) == {
        i: held[i] for i in long["item_id"]}  # same attempt: its job is still in the queue
    assert (await waiting.counts())["queued"] == WAITING  # untouched
    assert stopped_s >= GRACE_S * 0.9  # it waited for the long items as long as it was allowed

    t1 = time.monotonic()
    restarted = cluster.start_worker("--processes", "1", "--concurrency", "8",
                                     WORKBENCH_TEST_GATE=str(gate), WORKBENCH_TEST_LONG_S="0.01")
    counts = await wait_settled(wb, batch.id, 60)
    waiting_counts = await wait_settled(wb, waiting.id, 60)
    recovery = round(time.monotonic() - t1, 1)
    assert restarted.terminate() == 0
    t = await tally(wb, batch.id, SHORT + LONG)
    tw = await tally(wb, waiting.id, WAITING)
    report("SIGTERM mid-batch, then restart", backend=cluster.label, lost=t.lost + tw.lost,
           duplicates=t.duplicates + tw.duplicates, recovery_s=recovery,
           finished_in_grace=len(short), handed_back=len(long), grace_s=GRACE_S,
           worker_stopped_in_s=stopped_s, counts=counts, waiting_counts=waiting_counts)
    assert t.lost == 0 and t.duplicates == 0 and counts["done"] == SHORT + LONG
    assert tw.lost == 0 and tw.duplicates == 0 and waiting_counts["done"] == WAITING
    st = await batch.status()
    assert (st["attempts"] == 1).all()  # the handed-back items ran once more, as attempt 1


async def _eq(coro, value: int) -> bool:
    return (await coro) == value
