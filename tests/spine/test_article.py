"""The built-in article pipeline end to end, stored pages and reruns without the network."""

from __future__ import annotations

import hashlib

import pytest

from tests.conftest import article_html
from workbench import Context, Workbench, pipeline
from workbench.core.urls import normalize_url
from workbench.ledger import pages as page_store


@pipeline("test-title-words", version="2")
async def title_words(url: str, ctx: Context) -> dict:
    page = await ctx.fetch()
    doc = await ctx.extract(page)
    return {"title_words": len((doc.title or "").split()), "from_store": page.from_store}


async def test_article_results_and_failures(wb: Workbench, run_worker, site) -> None:
    urls = [site.url(f"/page/{i}") for i in range(6)]
    site.fail_first["/page/1"] = 1  # one 503 first: retried, then done
    bad = [site.url("/status/404"), site.url("/status/500")]
    batch = await wb.submit(urls + bad, pipeline="article", params={"max_keywords": 5})
    await run_worker(cpu_processes=1, max_tries=2)
    counts = await batch.wait(timeout=30)
    assert counts["done"] == 6 and counts["failed"] == 2, counts
    df = await batch.results()
    row = df.set_index("url").loc[urls[0]]
    assert row["title"] == "River study 0" and row["author"] == "Ada Writer"
    assert row["language"] == "en" and row["word_count"] > 100
    assert 0 < len(row["keywords"]) <= 5 and "rivers in spring" in row["text"]
    assert row["http_status"] == 200 and row["final_url"] == urls[0]
    assert len(row["content_sha256"]) == 64 and set(row["timings"]) >= {"fetch", "extract", "total"}
    status = (await batch.status()).set_index("url")
    assert status.loc[urls[1], "attempts"] == 2 and status.loc[urls[1], "status"] == "done"
    f = (await batch.failures()).set_index("url")
    assert f.loc[bad[0], "error_type"] == "http_404" and not f.loc[bad[0], "retryable"]
    # a transient 500 is retried up to max_tries, then failed with the last error
    assert f.loc[bad[1], "error_type"] == "http_500" and f.loc[bad[1], "retryable"]
    assert f.loc[bad[1], "tries"] == 2 and site.hits["/status/500"] == 2
    assert "HTTP 500" in f.loc[bad[1], "error_message"] or "500" in f.loc[bad[1], "error_message"]


async def test_article_pages_are_stored_as_their_extraction_process_compressed_them(
    wb: Workbench, run_worker, site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The extraction process hashes and compresses each page beside its extraction (issue 13):
    # the worker's process compresses none, a page with too little text is stored all the same,
    # and the result's content_sha256 is the digest the child computed of the stored bytes.
    compressed_here: list[int] = []
    real = page_store.compress_page

    def counting(body: bytes) -> bytes:
        compressed_here.append(len(body))
        return real(body)

    monkeypatch.setattr(page_store, "compress_page", counting)
    ok = await wb.submit([site.url("/page/1")], pipeline="article")
    thin = await wb.submit([site.url("/page/2")], pipeline="article",
                           params={"min_chars": 1_000_000})
    await run_worker(cpu_processes=1)
    assert (await ok.wait(timeout=30))["done"] == 1
    assert (await thin.wait(timeout=30))["failed"] == 1
    assert list((await thin.failures())["error_type"]) == ["no_main_content"]
    assert compressed_here == []
    store = page_store.PageStore(wb.ledger)
    for n in (1, 2):
        stored = await store.load(normalize_url(site.url(f"/page/{n}")))
        assert stored is not None and stored.body == article_html(n).encode()
    body = article_html(1).encode()
    row = (await ok.results()).iloc[0]
    assert row["content_sha256"] == hashlib.sha256(body).hexdigest()


async def test_rerun_uses_stored_pages_only(wb: Workbench, run_worker, site) -> None:
    urls = [site.url(f"/page/{i}") for i in range(4)]
    first = await wb.submit(urls, pipeline="article")
    await run_worker(cpu_processes=1)
    assert (await first.wait(timeout=30))["done"] == 4
    hits = dict(site.hits)
    again = await first.rerun(pipeline="test-title-words")
    assert again.use_stored_pages and again.source_batch_id == first.id
    await run_worker(cpu_processes=1)
    assert (await again.wait(timeout=30))["done"] == 4
    assert site.hits == hits  # not one request more
    df = await again.results()
    assert (df["title_words"] == 3).all()
    assert df["from_store"].all() and df["from_stored_page"].all()
    # same URLs, same pipeline/version/params: answered from the result cache at once
    cached = await wb.submit(urls, pipeline="article")
    assert cached.cached == 4 and (await cached.counts())["done"] == 4
    assert site.hits == hits


async def test_rerun_without_stored_page_fails_clearly(wb: Workbench, run_worker) -> None:
    batch = await wb.submit(["http://127.0.0.1:9/never"], pipeline="noop")
    await run_worker()
    rerun = await batch.rerun(pipeline="test-title-words")
    await run_worker()
    f = await rerun.failures()
    assert list(f["error_type"]) == ["page_not_stored"]
    assert "no stored page" in f.loc[0, "error_message"]


@pytest.mark.parametrize("n", [3])
async def test_in_kernel_worker(wb: Workbench, site, n: int) -> None:
    runtime = await wb.start_worker(concurrency=4, cpu_processes=1)
    batch = await wb.submit([site.url(f"/page/{i}") for i in range(n)], pipeline="article")
    assert (await batch.wait(timeout=30))["done"] == n
    assert runtime.items_done == n
    await wb.stop_workers()
