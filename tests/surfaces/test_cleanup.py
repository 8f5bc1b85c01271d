"""Scheduled cleanup: old raw pages, stale queue entries, dead worker records; never results."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix
from sqlalchemy import func, select, update

from workbench import Workbench
from workbench.cleanup import CRON_NAME, cleanup_cron, run_cleanup
from workbench.core.page import Page
from workbench.core.settings import load_settings
from workbench.ledger.models import ItemRow, ResultRow, WorkerRow
from workbench.ledger.pages import PageStore
from workbench.queue.jobs import enqueue, job_id
from workbench.worker.process import build_worker

from .conftest import PIPELINES, cli_env, run_cli

NOW = datetime.now(UTC)


def _page(url: str, body: bytes, age_days: float) -> Page:
    return Page(url=url, final_url=url, status=200, headers={}, content_type="text/html",
                body=body, encoding="utf-8", fetched_at=NOW - timedelta(days=age_days))


async def _table_count(wb: Workbench, model: Any) -> int:
    async with wb.ledger.read_engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(model.__table__))).scalar_one()


async def test_old_pages_deleted_newer_kept_results_untouched(
    make_wb: Callable[..., Workbench], run_worker: Any, tmp_path: Path, backend_settings: Any
) -> None:
    wb = make_wb(pipelines=PIPELINES)
    batch = await wb.submit([f"http://example.org/ok/{i}" for i in range(5)] +
                            ["http://example.org/bad/9"], pipeline="surf")
    await run_worker(pipelines=PIPELINES)
    await batch.wait(timeout=10)
    pages = PageStore(wb.ledger)
    await pages.save(_page("http://a.org/old", b"<p>only old</p>", 40), "http://a.org/old")
    await pages.save(_page("http://a.org/shared", b"<p>shared</p>", 45), "http://a.org/shared")
    await pages.save(_page("http://a.org/new", b"<p>shared</p>", 1), "http://a.org/new")
    await pages.save(_page("http://a.org/edge", b"<p>edge</p>", 29), "http://a.org/edge")
    before = (await _table_count(wb, ItemRow), await _table_count(wb, ResultRow),
              (await batch.results()).to_json(date_format="iso"))

    # the CLI command and the cron job call the same function
    env = cli_env(backend_settings)
    rc, out, err = await run_cli("cleanup", env=env)
    assert rc == 0, err
    assert "2 snapshot(s) and 1 page body(ies) deleted" in out
    assert "results and ledger rows: kept" in out

    assert await pages.load("http://a.org/old") is None
    assert await pages.load("http://a.org/shared") is None
    new = await pages.load("http://a.org/new")
    assert new is not None and new.body == b"<p>shared</p>"  # its blob survived the shared delete
    assert await pages.load("http://a.org/edge") is not None
    after = (await _table_count(wb, ItemRow), await _table_count(wb, ResultRow),
             (await batch.results()).to_json(date_format="iso"))
    assert after == before
    assert (await batch.counts())["failed"] == 1

    again = await run_cleanup(wb.settings)
    assert (again.snapshots_deleted, again.blobs_deleted) == (0, 0) and again.ok
    shorter = await run_cleanup(load_settings(**{**backend_settings, "retention_days": 7}))
    assert (shorter.snapshots_deleted, shorter.blobs_deleted) == (1, 1)  # the 29-day-old page


async def test_stale_queue_entries_swept_live_ones_kept(
    make_wb: Callable[..., Workbench], run_worker: Any, backend_settings: dict[str, Any],
) -> None:
    """Done/failed/cancelled, superseded and unknown items' jobs go; queued items' jobs and
    non-item entries stay. Orphaned job keys of this queue are swept only on the embedded (private)
    Redis; another queue's jobs are never touched."""
    # redis_url=None: its own embedded Redis under the test's data dir, private to it
    wb = make_wb(redis_url=None, pipelines=PIPELINES)
    try:
        done = await wb.submit(["http://example.org/ok/1", "http://example.org/bad/2"],
                               pipeline="surf")
        await run_worker(pipelines=PIPELINES, redis_url=None)
        assert (await done.wait(timeout=10))["failed"] == 1
        live = await wb.submit([f"http://example.org/ok/{i}" for i in range(10, 14)],
                               pipeline="surf")
        cancelled = await wb.submit(["http://example.org/ok/20"], pipeline="surf")
        await cancelled.cancel()
        st = await done.status()
        done_jobs = [(int(i), int(a)) for i, a in zip(st["item_id"], st["attempts"], strict=True)]
        cancelled_id = int((await cancelled.status())["item_id"][0])
        live_ids = [int(i) for i in (await live.status())["item_id"]]
        redis = await wb.open_queue()
        queue_name = wb.settings.queue_name

        def jid(item: int, attempt: int) -> str:
            return job_id(queue_name, item, attempt)

        stale = [*done_jobs, (cancelled_id, 1), (live_ids[0], 0), (999_999, 1)]
        await enqueue(redis, queue_name, stale)  # leftovers: a lost drop, a crash after commit
        await redis.set(in_progress_key_prefix + jid(live_ids[1], 0), b"1")  # being run: kept
        await enqueue(redis, queue_name, [(live_ids[1], 0)])
        await redis.zadd(queue_name, {"cron:cleanup:1700000000000": 1})
        async def legacy_keys(jobs: list[str]) -> None:
            # job keys as earlier versions wrote them (item jobs are queue entries alone now)
            for j in jobs:
                await redis.set(job_key_prefix + j, b'{"t":null}', px=600_000)

        orphans = [(cancelled_id, 7), (888_888, 1)]
        await legacy_keys([jid(i, a) for i, a in orphans])  # job keys with no queue entry
        foreign = job_id("another:queue", 777_777, 1)
        await legacy_keys([foreign])  # another queue's job: not ours

        assert wb.settings.uses_embedded_redis
        report = await run_cleanup(wb.settings)
        assert report.ok and report.stale_jobs_removed == len(stale)
        assert report.orphan_keys_removed == 2
        members = {m.decode() for m in await redis.zrange(queue_name, 0, -1)}
        expected_live = {jid(i, 1) for i in live_ids}
        assert members == expected_live | {jid(live_ids[1], 0), "cron:cleanup:1700000000000"}
        for item, attempt in stale + orphans:
            assert not await redis.exists(job_key_prefix + jid(item, attempt))
        assert await redis.exists(job_key_prefix + foreign)

        # on a shared Redis (an explicit URL), keys outside this queue are left to expire
        await legacy_keys([jid(i, a) for i, a in orphans])
        from workbench.queue.embedded import EmbeddedRedis

        url = EmbeddedRedis(wb.settings.embedded_redis_dir).url
        shared = await run_cleanup(load_settings(**{**backend_settings, "redis_url": url}))
        assert shared.orphan_keys_removed == 0 and shared.stale_jobs_removed == 0
        assert await redis.exists(job_key_prefix + jid(888_888, 1))
        assert (await live.counts())["queued"] == 4  # nothing in the ledger moved
    finally:
        from workbench.queue.embedded import EmbeddedRedis

        await wb.close()
        await asyncio.to_thread(EmbeddedRedis(wb.settings.embedded_redis_dir).stop)


async def test_dead_worker_records_marked_then_forgotten_items_untouched(
    wb: Workbench,
) -> None:
    batch = await wb.submit(["http://example.org/ok/1"], pipeline="surf")
    ledger = wb.ledger
    for wid in ("lapsed", "long-gone", "alive"):
        await ledger.register_worker(wid, hostname="h", pid=1, concurrency=1, pipelines=[])
    w, t = WorkerRow.__table__, ItemRow.__table__
    async with ledger.engine.begin() as conn:
        await conn.execute(update(w).where(w.c.id == "lapsed")
                           .values(heartbeat_at=NOW - timedelta(hours=2)))
        await conn.execute(update(w).where(w.c.id == "long-gone").values(
            heartbeat_at=NOW - timedelta(days=9), stopped_at=NOW - timedelta(days=9)))
        await conn.execute(update(t).where(t.c.batch_id == batch.id)
                           .values(status="running", worker_id="lapsed"))
    report = await run_cleanup(wb.settings)
    assert (report.workers_marked_dead, report.workers_forgotten) == (1, 1)
    workers = {r["id"]: r for r in await ledger.workers()}
    assert set(workers) == {"lapsed", "alive"}
    assert workers["lapsed"]["stopped_at"] == workers["lapsed"]["heartbeat_at"]
    assert workers["alive"]["stopped_at"] is None
    item = (await batch.status()).iloc[0]
    assert item["status"] == "running" and item["worker_id"] == "lapsed"  # never touched


async def test_cron_job_daily_at_3_unique_across_workers(
    wb: Workbench, backend_settings: dict[str, Any]
) -> None:
    settings = load_settings(**backend_settings)
    built = [await build_worker(settings, handle_signals=False) for _ in range(2)]
    try:
        for worker, _runtime in built:
            (job,) = worker.cron_jobs
            assert job.name == CRON_NAME and job.coroutine is cleanup_cron
            assert (job.hour, job.minute, job.second) == (3, 0, 0)
            assert job.unique and not job.run_at_startup
        job.calculate_next(datetime(2026, 5, 1, 12, 30, tzinfo=UTC))
        assert (job.next_run.day, job.next_run.hour, job.next_run.minute) == (2, 3, 0)

        # both workers reach 03:00 together: one job is queued, not two
        due = datetime.now(built[0][0].timezone)
        for worker, _ in built:
            worker.cron_jobs[0].next_run = due
        await asyncio.gather(*(worker.run_cron(due, 0.5) for worker, _ in built))
        redis = built[0][1].redis
        entries = [m.decode() for m in await redis.zrange(settings.queue_name, 0, -1)]
        assert len(entries) == 1 and entries[0].startswith(f"{CRON_NAME}:")

        # the job a worker runs is the same cleanup, with the worker's own ledger and Redis
        await wb.submit(["http://example.org/ok/1"], pipeline="surf")  # opens the ledger
        await PageStore(wb.ledger).save(_page("http://a.org/x", b"x", 90), "http://a.org/x")
        runtime = built[0][1]
        await runtime.ledger.start()
        result = await cleanup_cron({"workbench": runtime})
        assert result["snapshots_deleted"] == 1 and result["errors"] == []
    finally:
        for worker, _ in built:
            await worker.close()
