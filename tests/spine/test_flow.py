"""End to end: submit -> ledger -> ARQ worker -> DataFrames, on every backend."""

from __future__ import annotations

import asyncio
import uuid

import pandas as pd

from workbench import Workbench, pipeline
from workbench.core.errors import PermanentError, TransientError


@pipeline("test-echo", version="1")
async def echo(url: str, ctx) -> dict:
    return {"echo": url, "n": int(url.rsplit("/", 1)[1]), "tag": ctx.params.get("tag")}


@pipeline("test-fetch-size", version="1")
async def fetch_size(url: str, ctx) -> dict:
    page = await ctx.fetch()
    return {"bytes": len(page.body)}


@pipeline("test-hang", version="1")
async def hang(url: str, ctx) -> dict:
    await asyncio.sleep(float(ctx.params["sleep"]))
    return {"slept": True}


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
    # the cache key is pipeline + version + params: other params miss, whatever the URLs
    other = await wb.submit(urls[:10], pipeline="test-echo", params={"tag": "y"})
    assert other.cached == 0 and (await other.counts())["queued"] == 10
    await run_worker()
    assert set((await other.results())["tag"]) == {"y"}


async def test_refresh_fetches_again_and_keeps_the_old_result(
    wb: Workbench, run_worker, site
) -> None:
    urls = [site.url(f"/page/{i}") for i in range(4)]
    first = await wb.submit(urls, pipeline="test-fetch-size")
    await run_worker()
    assert (await first.wait(timeout=10))["done"] == 4
    assert all(site.hits[f"/page/{i}"] == 1 for i in range(4))
    old = (await first.results()).set_index("url")

    cached = await wb.submit(urls, pipeline="test-fetch-size")
    assert cached.cached == 4 and (await cached.counts())["done"] == 4
    await run_worker()
    assert all(site.hits[f"/page/{i}"] == 1 for i in range(4))  # nothing fetched

    fresh = await wb.submit(urls, pipeline="test-fetch-size", refresh=True)
    assert fresh.cached == 0 and (await fresh.counts())["queued"] == 4
    await run_worker()
    assert (await fresh.wait(timeout=10))["done"] == 4
    assert all(site.hits[f"/page/{i}"] == 2 for i in range(4))  # every page fetched again
    new = (await fresh.results()).set_index("url")
    assert not new["cached"].any() and (new["fetched_at"] > old["fetched_at"]).all()
    assert (new["bytes"] == old["bytes"]).all()
    # the earlier batch keeps its own result: research data is never overwritten
    kept = (await first.results()).set_index("url")
    assert (kept["fetched_at"] == old["fetched_at"]).all() and not kept["cached"].any()


async def test_pipeline_timeout_is_retried_then_failed(wb: Workbench, run_worker) -> None:
    batch = await wb.submit(["http://example.org/hang/1"], pipeline="test-hang",
                            params={"sleep": 3})
    await run_worker(job_timeout_s=0.3, max_tries=2)
    assert (await batch.wait(timeout=10))["failed"] == 1
    f = (await batch.failures()).iloc[0]
    assert f["error_type"] == "pipeline_timeout" and f["retryable"]
    assert f["tries"] == 2 and "took longer than 0.3s" in f["error_message"]


async def test_version_from_source_changes_with_the_code(
    wb: Workbench, run_worker, tmp_path, monkeypatch
) -> None:
    """No ``version=``: the version is a hash of the function's source, so editing the function
    means no stale cache hit; the same source keeps its version (and its cache)."""
    import importlib

    from workbench.pipeline.registry import get_pipeline

    monkeypatch.syspath_prepend(str(tmp_path))
    module = f"wbsrc_{uuid.uuid4().hex[:8]}"
    source = (
        "from workbench import pipeline\n\n\n"
        '@pipeline("test-from-source")\n'
        "async def from_source(url, ctx):\n"
        "    return {'answer': ANSWER}\n"
    )
    path = tmp_path / f"{module}.py"
    path.write_text("ANSWER = 1\n" + source)
    mod = importlib.import_module(module)
    v1 = get_pipeline("test-from-source").version
    assert v1.startswith("src-")
    urls = ["http://example.org/src/1", "http://example.org/src/2"]
    first = await wb.submit(urls, pipeline="test-from-source")
    await run_worker()
    assert set((await first.results())["answer"]) == {1}

    path.write_text("ANSWER = 2\n" + source)  # a constant changed, the function did not
    importlib.reload(mod)
    assert get_pipeline("test-from-source").version == v1
    assert (await wb.submit(urls, pipeline="test-from-source")).cached == 2

    path.write_text("ANSWER = 2\n" + source.replace("'answer': ANSWER", "'answer': ANSWER * 10"))
    importlib.reload(mod)
    v2 = get_pipeline("test-from-source").version
    assert v2.startswith("src-") and v2 != v1
    edited = await wb.submit(urls, pipeline="test-from-source")
    assert edited.cached == 0
    await run_worker()
    df = await edited.results()
    assert set(df["answer"]) == {20} and set(df["pipeline_version"]) == {v2}


async def test_sync_facade(backend_settings) -> None:
    from workbench import SyncWorkbench

    with SyncWorkbench(**backend_settings) as wb:
        batch = wb.submit(["http://example.org/s/1"], pipeline="test-echo")
        assert batch.counts()["queued"] == 1
        assert batch.cancel() == 1
        assert wb.get_batch(batch.id).counts()["cancelled"] == 1
