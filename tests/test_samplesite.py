"""The sample site: every article is a good page, every failure route fails as documented."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from workbench.samplesite import (
    BROKEN_ROUTES,
    SampleSite,
    sample_site_dir,
    serve_sample_site,
    serve_sample_site_in_thread,
)


@pytest.fixture
async def site() -> AsyncIterator[SampleSite]:
    async with serve_sample_site() as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, aiohttp.ClientResponse, bytes]:
    async with http.get(url, allow_redirects=False) as resp:
        return resp.status, resp, await resp.read()


def test_site_dir_is_the_checkout_copy() -> None:
    path = sample_site_dir()
    assert path == Path(__file__).resolve().parents[1] / "data" / "sample_site"
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert total < 1_000_000


async def test_every_article_is_a_good_page(site: SampleSite, http: aiohttp.ClientSession) -> None:
    articles = site.articles()
    urls = site.article_urls()
    assert [site.url(a.path) for a in articles] == urls == sorted(urls)
    assert Counter(a.lang for a in articles) == {"en": 24, "de": 4, "fr": 4, "es": 4}
    for article in articles:
        status, resp, body = await get(http, site.url(article.path))
        assert status == 200, article.path
        assert resp.content_type == "text/html" and resp.charset == "utf-8"
        page = body.decode("utf-8")
        assert f'<html lang="{article.lang}">' in page
        assert re.search(r'<meta name="description" content="[^"]{40,}">', page)
        assert "<title>" in page and article.title and "<nav" in page and "<footer" in page


async def test_main_text_is_long_and_boilerplate_free(site: SampleSite) -> None:
    trafilatura = pytest.importorskip("trafilatura")
    with_author = 0
    for article in site.articles():
        html = (site.site_dir / article.path.lstrip("/")).read_text(encoding="utf-8")
        doc = trafilatura.bare_extraction(html, favor_precision=True, with_metadata=True)
        words = len(doc.text.split())
        assert 300 <= words <= 900, (article.slug, words)
        assert doc.title == article.title and doc.date
        assert "Most read" not in doc.text and "cookies" not in doc.text
        with_author += bool(doc.author)
    assert with_author == len(site.articles())


async def test_index_links_every_article(site: SampleSite, http: aiohttp.ClientSession) -> None:
    status, _, body = await get(http, site.url("/"))
    assert status == 200
    linked = set(re.findall(r'href="(/articles/[^"]+)"', body.decode()))
    assert {site.url(p) for p in linked} == set(site.article_urls())
    status, _, body = await get(http, site.url("/robots.txt"))
    assert status == 200 and b"Allow: /" in body and b"Disallow" not in body


async def test_broken_routes_fail_as_documented(
    site: SampleSite, http: aiohttp.ClientSession
) -> None:
    broken = site.broken_urls()
    assert set(broken.values()) == set(BROKEN_ROUTES.values()) and len(broken) == 7
    assert site.urls() == site.article_urls() + list(broken)
    assert site.urls(broken=False) == site.article_urls()
    for route, status in [("not-found", 404), ("gone", 410), ("server-error", 500)]:
        for _ in range(2):
            assert (await get(http, site.url(f"/broken/{route}")))[0] == status
    status, resp, body = await get(http, site.url("/broken/binary"))
    assert status == 200 and resp.content_type == "application/octet-stream" and len(body) > 1000
    status, resp, body = await get(http, site.url("/broken/empty"))
    assert status == 200 and resp.content_type == "text/html" and body == b""
    status, resp, body = await get(http, site.url("/broken/no-content"))
    assert status == 200 and b"<nav" in body and b'<main id="content"></main>' in body
    status, resp, _ = await get(http, site.url("/broken/redirect-loop"))
    assert status == 302
    status, resp2, _ = await get(http, site.url(resp.headers["Location"]))
    assert status == 302 and resp2.headers["Location"] == "/broken/redirect-loop"
    with pytest.raises(aiohttp.TooManyRedirects):
        await http.get(site.url("/broken/redirect-loop"))


async def test_project_fetcher_reports_the_expected_error_types(site: SampleSite) -> None:
    """End to end through the pipeline's own fetch and extract: the error types line up."""
    from workbench.core.errors import PipelineError
    from workbench.core.settings import Settings
    from workbench.pipeline.fetch.fetcher import Fetcher
    from workbench.pipeline.text.extract import check_main_content, extract_document

    fetcher = Fetcher(Settings(block_private_addresses=False))  # the site is on loopback
    try:
        seen = {}
        for url in site.broken_urls():
            try:
                page = await fetcher.fetch(url)
                check_main_content(extract_document(page.text, page.final_url), url)
            except PipelineError as exc:
                seen[url] = exc.error_type
        assert seen == site.broken_urls()
    finally:
        await fetcher.close()


async def test_flaky_route_recovers(site: SampleSite, http: aiohttp.ClientSession) -> None:
    for _ in range(2):
        status, resp, _ = await get(http, site.flaky_url())
        assert status == 503 and resp.headers["Retry-After"] == "1"
    status, resp, body = await get(http, site.flaky_url())
    assert status == 200 and b"<h1" in body
    assert (await get(http, site.flaky_url(fail=1)))[0] == 503  # counted apart from the default
    assert (await get(http, site.flaky_url(fail=1)))[0] == 200
    assert site.hits("/broken/flaky") == 5 and site.hits(site.flaky_url(fail=1)) == 2
    site.reset()
    assert site.hits("/broken/flaky") == 0 and (await get(http, site.flaky_url()))[0] == 503


async def test_fix_and_hits(site: SampleSite, http: aiohttp.ClientSession) -> None:
    url = site.url("/broken/server-error")
    assert site.hits(url) == 0
    assert (await get(http, url))[0] == 500
    stand_in = site.fix("/broken/server-error")
    status, _, body = await get(http, url)
    assert status == 200 and body == (await get(http, stand_in))[2]
    assert site.hits(url) == site.hits("/broken/server-error") == 2
    assert site.hits(stand_in) == 1
    stand_ins = {site.fix(u) for u in site.broken_urls()}
    assert len(stand_ins) == len(BROKEN_ROUTES)  # a different article per route
    for u in site.broken_urls():
        assert (await get(http, u))[0] == 200
    site.unfix(url)
    assert (await get(http, url))[0] == 500
    with pytest.raises(ValueError, match="not a failure route"):
        site.fix("/articles/railway-time.html")


async def test_await_form_and_repr() -> None:
    site = await serve_sample_site(flaky_failures=0)
    try:
        assert site.base_url.startswith("http://127.0.0.1:") and "serving" in repr(site)
        async with aiohttp.ClientSession() as http:
            assert (await get(http, site.flaky_url()))[0] == 200
    finally:
        await site.close()
    assert "closed" in repr(site)
    await site.close()  # twice is harmless


def test_thread_mode_from_synchronous_code() -> None:
    site = serve_sample_site_in_thread()
    with urllib.request.urlopen(site.article_urls()[0], timeout=5) as resp:
        assert resp.status == 200 and resp.headers.get_content_charset() == "utf-8"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(site.url("/broken/gone"), timeout=5)
    assert err.value.code == 410 and site.hits("/broken/gone") == 1
    site.close()  # no await needed for a threaded site
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(site.url("/"), timeout=5)
    with (
        SampleSite.start_in_thread() as again,
        urllib.request.urlopen(again.url("/index.html"), timeout=5) as resp,
    ):
        assert resp.status == 200


async def test_missing_site_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "articles").mkdir()
    (tmp_path / "index.html").write_text("<html></html>")
    with pytest.raises(FileNotFoundError, match="no article pages"):
        await serve_sample_site(site_dir=tmp_path)
