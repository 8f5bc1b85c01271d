"""``wb.sitemap_urls`` and ``wb.feed_urls`` through Workbench's polite fetcher on a loopback site
(a robots.txt naming a sitemap index with one plain and one gzipped child, RSS and Atom), their
frames submitted end to end through a real worker; bad documents are clear errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import article_html
from tests.inputs.conftest import InputSite
from workbench import Workbench
from workbench.core.errors import (
    InputTooLarge,
    InvalidFeedError,
    InvalidSitemapError,
    RobotsDisallowed,
)
from workbench.ledger.models import BatchRow


def _with_pages(site: InputSite, paths: list[str]) -> None:
    for n, path in enumerate(paths):
        site.routes[path] = (article_html(n).encode(), "text/html")


async def test_sitemap_of_a_site_root_submitted_end_to_end(
    wb: Workbench, input_site: InputSite, run_worker: Any
) -> None:
    _with_pages(input_site, ["/articles/one.html", "/articles/two.html",
                             "/articles/relative.html", "/news/a.html", "/news/b.html"])
    df = await wb.sitemap_urls(input_site.root)  # robots.txt -> index -> plain + gzipped
    assert sorted(df["url"]) == sorted(input_site.url(p) for p in [
        "/articles/one.html", "/articles/two.html", "/articles/relative.html",
        "/news/a.html", "/news/b.html"])
    assert list(df.columns) == ["url", "lastmod", "sitemap"]
    assert df.attrs["report"].robots_txt == input_site.url("/robots.txt")
    assert set(df["sitemap"]) == {input_site.url("/sitemap-pages.xml"),
                                  input_site.url("/sitemap-news.xml.gz")}

    batch = await wb.submit(df)
    await run_worker(burst=True)
    assert (await batch.wait(timeout=60))["done"] == 5
    results = await batch.results()
    assert list(results.columns[:4]) == ["item_id", "url", "lastmod", "sitemap"]
    one = results.set_index("url").loc[input_site.url("/articles/one.html")]
    assert str(one["lastmod"]).startswith("2024-01-05") and one["title"] == "River study 0"


async def test_feeds_rss_and_atom_submitted(
    wb: Workbench, input_site: InputSite, run_worker: Any
) -> None:
    rss = await wb.feed_urls(input_site.url("/feed.rss"))
    assert rss["url"].tolist() == [input_site.url("/articles/rain.html"),
                                   "http://other.example/g/1"]
    assert rss["title"].tolist()[0] == "Rain & rivers"
    atom = await wb.feed_urls(input_site.url("/feed.atom"))
    assert atom["url"].tolist() == [input_site.url("/posts/two"), "http://abs.example/3"]
    assert str(atom["published"].iloc[0]) == "2024-01-05 08:00:00+00:00"

    _with_pages(input_site, ["/articles/rain.html"])
    batch = await wb.submit(rss.iloc[:1])
    await run_worker(burst=True)
    assert (await batch.wait(timeout=60))["done"] == 1
    results = await batch.results()
    assert results["title"].tolist() == ["River study 0"]
    assert results["published"].notna().all()


async def test_bad_documents_are_clear_errors_and_nothing_recorded(
    wb: Workbench, input_site: InputSite
) -> None:
    # robots.txt rules hold for input documents too (read once per host: set before any fetch)
    input_site.routes["/robots.txt"] = (b"User-agent: *\nDisallow: /private/\n", "text/plain")
    input_site.routes["/private/sitemap.xml"] = input_site.routes["/sitemap-pages.xml"]
    with pytest.raises(RobotsDisallowed):
        await wb.sitemap_urls(input_site.url("/private/sitemap.xml"))
    with pytest.raises(InvalidSitemapError, match="HTML"):
        await wb.sitemap_urls(input_site.url("/page.html"))
    with pytest.raises(InputTooLarge, match="max_bytes"):  # a 200 MB sitemap (gzipped)
        await wb.sitemap_urls(input_site.url("/huge.xml.gz"))
    with pytest.raises(InvalidFeedError):
        await wb.feed_urls(input_site.url("/page.html"))
    ledger = await wb.open_ledger()
    async with ledger.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(BatchRow))).scalar() == 0
