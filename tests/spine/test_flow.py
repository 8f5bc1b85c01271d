"""End to end: submit -> ledger -> ARQ worker -> DataFrames, on every backend."""

from __future__ import annotations

import pandas as pd

from workbench import Workbench, pipeline
from workbench.core.errors import PermanentError, TransientError


@pipeline("test-echo", version="1")
async def echo(url: str, ctx) -> dict:
    return {"echo": url, "n": int(url.rsplit("/", 1)[1]), "tag": ctx.params.get("tag")}


@pipeline("test-flaky", version="1")
async def flaky(url: str, ctx) -> dict:
    n = int(url.rsplit("/", 1)[1])
    if n % 3 == 0:
        raise PermanentError("no good", error_type="bad_page")
    if n % 3 == 1 and ctx.attempt == 1:
        raise TransientError("try again", error_type="blip")
    return {"n": n, "attempt": ctx.attempt}


async def test_submit_run_read(wb: Workbench, run_worker) -> None:
    urls = [f"http://example.org/item/{i}" for i in range(50)]
    batch = await wb.submit(urls + urls[:5], pipeline="test-echo", params={"tag": "x"}, name="t")
    assert batch.total == 50  # duplicates folded
    assert (await batch.counts())["queued"] == 50
    await run_worker()
    counts = await batch.wait(timeout=10)
    assert counts == {"queued": 0, "running": 0, "done": 50, "failed": 0, "cancelled": 0}
    df = await batch.results()
    assert len(df) == 50 and set(df["echo"]) == set(urls) and (df["tag"] == "x").all()
    assert df["n"].dtype == "int64"
    status = await batch.status()
    assert isinstance(status["submitted_at"].dtype, pd.DatetimeTZDtype)
    assert status["attempts"].dtype == "int64"
    assert (status["status"] == "done").all()
    batches = await wb.batches()
    assert batches.loc[0, "done"] == 50 and batches.loc[0, "state"] == "completed"


async def test_transient_retried_permanent_failed_then_manual_retry(wb: Workbench, run_worker):
    urls = [f"http://example.org/x/{i}" for i in range(12)]
    batch = await wb.submit(urls, pipeline="test-flaky")
    await run_worker()
    counts = await batch.wait(timeout=10)
    assert counts["done"] == 8 and counts["failed"] == 4
    failures = await batch.failures()
    assert set(failures["error_type"]) == {"bad_page"}
    assert not failures["retryable"].any()
    done = await batch.results()
    retried = done[done["n"] % 3 == 1]
    assert (retried["attempt"] == 2).all()
    # a manual retry re-runs the failed ones (they fail again: the page is still bad)
    assert await batch.retry() == 4
    assert (await batch.counts())["queued"] == 4
    await run_worker()
    counts = await batch.wait(timeout=10)
    assert counts["failed"] == 4
    st = await batch.status()
    assert (st[st["status"] == "failed"]["attempts"] == 2).all()


async def test_cancel_and_cache(wb: Workbench, run_worker) -> None:
    urls = [f"http://example.org/c/{i}" for i in range(20)]
    batch = await wb.submit(urls, pipeline="test-echo")
    assert await batch.cancel() == 20
    await run_worker()
    assert (await batch.counts())["cancelled"] == 20
    first = await wb.submit(urls[:10], pipeline="test-echo")
    await run_worker()
    await first.wait(timeout=10)
    again = await wb.submit(urls[:10], pipeline="test-echo")
    assert again.cached == 10
    df = await again.results()
    assert df["cached"].all() and len(df) == 10
    fresh = await wb.submit(urls[:10], pipeline="test-echo", refresh=True)
    assert fresh.cached == 0 and (await fresh.counts())["queued"] == 10


async def test_sync_facade(backend_settings) -> None:
    from workbench import SyncWorkbench

    with SyncWorkbench(**backend_settings) as wb:
        batch = wb.submit(["http://example.org/s/1"], pipeline="test-echo")
        assert batch.counts()["queued"] == 1
        assert batch.cancel() == 1
        assert wb.get_batch(batch.id).counts()["cancelled"] == 1
