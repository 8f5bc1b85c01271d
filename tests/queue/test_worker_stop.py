"""Stopping a worker while its jobs are finishing: the stop cancels what still runs, and a cancel
that lands in ARQ's own bookkeeping of a job (``finish_job``, after the pipeline returned) must
not abort the shutdown: ``stop_workers()`` returns, and the worker's ``on_shutdown`` ran (its
record says stopped, its ledger is closed)."""

from __future__ import annotations

import asyncio

from workbench import Workbench, pipeline


@pipeline("test-stop-quick", version="1")
async def quick(url: str, ctx) -> dict:
    await asyncio.sleep(0.01 * int(url.rsplit("/", 1)[1]))
    return {"ok": True}


async def test_stop_while_jobs_finish_always_shuts_down(make_wb) -> None:
    wb: Workbench = make_wb()
    for round_ in range(8):
        batch = await wb.submit([f"http://example.org/stop{round_}/{i}" for i in range(6)],
                                pipeline="test-stop-quick")
        runtime = await wb.start_worker(concurrency=6)
        while (await batch.counts())["done"] == 0:  # stop right as the first jobs finish
            await asyncio.sleep(0.005)
        await wb.stop_workers()  # must not raise, whatever the jobs were doing
        (row,) = [w for w in await wb.ledger.workers() if w["id"] == runtime.worker_id]
        assert row["stopped_at"] is not None, f"round {round_}: on_shutdown never ran"
        counts = await batch.counts()
        assert counts["running"] == 0, counts  # every item done or handed back


async def test_stop_right_after_a_job_task_was_created(make_wb) -> None:
    """A job task the stop cancels before its first step never enters ``run_job``: the stop
    must still return and run ``on_shutdown`` (ARQ's own close raised ``CancelledError``)."""
    wb: Workbench = make_wb()
    runtime = await wb.start_worker(concurrency=2)
    (worker, _runtime, _task) = wb._workers[0]
    # as start_jobs does, with no await between the task's creation and the stop
    worker.tasks["never-started"] = asyncio.get_running_loop().create_task(asyncio.sleep(30))
    await wb.stop_workers()
    (row,) = [w for w in await wb.ledger.workers() if w["id"] == runtime.worker_id]
    assert row["stopped_at"] is not None
