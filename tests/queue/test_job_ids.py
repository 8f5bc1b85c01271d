"""Job ids carry their queue: two deployments on one Redis never take each other's jobs.

ARQ keeps a job's keys (``arq:job:<id>``, ``arq:in-progress:<id>``) outside any queue, and two
ledgers number their items from 1 alike. Before ids were tagged, a job key or an in-progress mark
left by one deployment made the other's item with the same number never start (seen in CI: a
test's items 31 and 42 blocked for 30 minutes by another test's in-progress marks).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from workbench import Workbench, pipeline
from workbench.queue import jobs as queue
from workbench.queue.arq_adapter import IN_PROGRESS_KEY_PREFIX


@pipeline("job-ids-echo", version="1")
async def _echo(url: str, ctx: Any) -> dict[str, Any]:
    return {"url_seen": url}


def test_ids_name_their_queue() -> None:
    a, b = queue.job_id("team-a", 7, 2), queue.job_id("team-b", 7, 2)
    assert a != b and a.startswith("7:2:") and b.startswith("7:2:")
    assert queue.parse_job_id(a, "team-a") == (7, 2)
    assert queue.parse_job_id(a, "team-b") is None  # another queue's item
    assert queue.parse_job_id("7:2", "team-b") == (7, 2)  # untagged, from before the tag
    assert queue.parse_job_id("cron:cleanup", "team-a") is None


async def test_another_deployments_jobs_on_the_same_redis_block_nothing(
    make_wb: Any, run_worker: Any, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]  # the machine's Redis outlives each test: queues of this run only
    first: Workbench = make_wb(queue_name=f"wbtest-ids-first-{run}")
    urls = [f"http://example.org/ids/{n}" for n in range(6)]
    held = await first.submit(urls, pipeline="job-ids-echo")  # never run: its jobs stay queued
    ids = [int(i) for i in (await held.status())["item_id"]]
    redis = await queue.connect(first.settings)
    try:
        for item_id in ids:  # as if a worker of the first deployment were running them
            await redis.set(IN_PROGRESS_KEY_PREFIX + queue.job_id(first.settings.queue_name,
                                                                  item_id, 1), b"1", px=600_000)

        second_settings = {"queue_name": f"wbtest-ids-second-{run}", "database_url": None,
                           "data_dir": str(tmp_path / "second")}
        second: Workbench = make_wb(**second_settings)  # a ledger of its own: ids from 1 too
        batch = await second.submit(urls, pipeline="job-ids-echo")
        # the same item numbers: the scenario that collided
        assert len({int(i) for i in (await batch.status())["item_id"]} & set(ids)) >= 5
        await run_worker(burst=True, **second_settings)
        assert (await batch.wait(timeout=60))["done"] == len(urls)
        # the first deployment's jobs are untouched, still its own
        assert (await held.counts())["queued"] == len(urls)
        for item_id in ids:
            assert await redis.zscore(first.settings.queue_name, queue.job_id(
                first.settings.queue_name, item_id, 1)) is not None
        await held.cancel()  # leaves nothing behind in a shared Redis
    finally:
        await redis.aclose()
