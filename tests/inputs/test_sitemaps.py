"""Sitemaps over loopback HTTP: indexes, gzip, robots.txt discovery, caps and bad documents."""

from __future__ import annotations

import gzip
import tracemalloc
from datetime import UTC, datetime

import pytest

from tests.inputs.conftest import HTML, Fetcher, InputSite, sitemapindex, urlset
from workbench.core.errors import (
    HTTPStatusError,
    InputTooLarge,
    InvalidInputError,
    InvalidSitemapError,
)
from workbench.core.page import Page
from workbench.inputs.sitemaps import (
    SitemapLimits,
    SitemapRef,
    SitemapReport,
    SitemapURL,
    iter_sitemap_urls,
    parse_lastmod,
    parse_sitemap,
    robots_sitemaps,
    sitemap_frame,
)


async def _rows(url: str, fetch: Fetcher, **kw: object) -> list[SitemapURL]:
    return [row async for row in iter_sitemap_urls(url, fetch, **kw)]  # type: ignore[arg-type]


async def test_site_root_follows_robots_index_plain_and_gzipped_children(
    input_site: InputSite, fetch: Fetcher
) -> None:
    report = SitemapReport()
    rows = await _rows(input_site.root, fetch, report=report)
    pages, news = input_site.url("/sitemap-pages.xml"), input_site.url("/sitemap-news.xml.gz")
    assert rows == [
        SitemapURL(input_site.url("/articles/one.html"), datetime(2024, 1, 5, tzinfo=UTC), pages),
        SitemapURL(
            input_site.url("/articles/two.html"), datetime(2024, 2, 1, 9, 30, tzinfo=UTC), pages
        ),
        SitemapURL(input_site.url("/articles/relative.html"), None, pages),
        SitemapURL(input_site.url("/news/a.html"), datetime(2024, 5, 1, tzinfo=UTC), news),
        SitemapURL(input_site.url("/news/b.html"), None, news),  # junk lastmod -> None
    ]
    assert report.robots_txt == input_site.url("/robots.txt")
    assert report.sitemaps == [input_site.url("/sitemap_index.xml"), pages, news]
    assert report.failed == [] and report.truncated is None
    # the image:loc inside a <url> is not a page
    assert all("img.example" not in r.url for r in rows)


async def test_robots_txt_url_and_index_url_give_the_same_rows(
    input_site: InputSite, fetch: Fetcher
) -> None:
    from_root = await _rows(input_site.root, fetch)
    assert await _rows(input_site.url("/robots.txt"), fetch) == from_root
    assert await _rows(input_site.url("/sitemap_index.xml"), fetch) == from_root
    # a redirect to the index: the final URL is what children resolve against
    assert await _rows(input_site.url("/redirect-to-index"), fetch) == from_root


async def test_frame_has_the_contract_columns(input_site: InputSite, fetch: Fetcher) -> None:
    df = await sitemap_frame(input_site.root, fetch)
    assert list(df.columns) == ["url", "lastmod", "sitemap"]
    assert len(df) == 5
    assert str(df["lastmod"].dtype) == "datetime64[ns, UTC]" or "UTC" in str(df["lastmod"].dtype)
    assert df["lastmod"].isna().sum() == 2
    assert isinstance(df.attrs["report"], SitemapReport)
    empty = await sitemap_frame(input_site.url("/sitemap-pages.xml"), fetch,
                                limits=SitemapLimits(max_urls=0))
    assert list(empty.columns) == ["url", "lastmod", "sitemap"] and len(empty) == 0


async def test_html_page_given_as_sitemap_is_a_clear_error(
    input_site: InputSite, fetch: Fetcher
) -> None:
    with pytest.raises(InvalidSitemapError, match="is an HTML page, not a sitemap"):
        await _rows(input_site.url("/page.html"), fetch)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/broken.xml", "not well-formed XML"),
        ("/other-root.xml", "root element is <catalog>"),
        ("/urls.txt", "neither XML nor a list of URLs"),
    ],
)
async def test_bad_documents_are_clear_errors(
    input_site: InputSite, fetch: Fetcher, path: str, message: str
) -> None:
    with pytest.raises(InvalidSitemapError, match=message) as info:
        await _rows(input_site.url(path), fetch)
    assert isinstance(info.value, InvalidInputError)
    assert input_site.url(path) in str(info.value)


async def test_fetch_errors_of_the_named_sitemap_propagate(
    input_site: InputSite, fetch: Fetcher
) -> None:
    with pytest.raises(HTTPStatusError) as info:
        await _rows(input_site.url("/gone.xml"), fetch)
    assert info.value.error_type == "http_404"


async def test_a_200_mb_gzipped_sitemap_is_refused_before_inflating(
    input_site: InputSite, fetch: Fetcher
) -> None:
    assert len(input_site.routes["/huge.xml.gz"][0]) < 2 * 1024 * 1024  # small on the wire
    tracemalloc.start()
    try:
        with pytest.raises(InputTooLarge, match="max_bytes") as info:
            await _rows(input_site.url("/huge.xml.gz"), fetch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.limit == "max_bytes" and info.value.value == 50 * 1024 * 1024
    assert peak < 20 * 1024 * 1024, peak


def test_a_gzip_stream_that_hides_its_size_stops_at_the_cap(huge_gzip: bytes) -> None:
    """The trailer lies (two members, the last one small): inflating stops at the cap anyway."""
    lying = huge_gzip + gzip.compress(b"")
    tracemalloc.start()
    try:
        with pytest.raises(InputTooLarge, match="inflates to more than"):
            for _ in parse_sitemap(lying, "http://x/huge.xml.gz", max_bytes=2 * 1024 * 1024):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak


async def test_an_oversized_plain_sitemap_is_refused(
    input_site: InputSite, fetch: Fetcher
) -> None:
    with pytest.raises(InputTooLarge, match="over the 100,000-byte cap"):
        await _rows(input_site.url("/big.xml"), fetch, limits=SitemapLimits(max_bytes=100_000))


async def test_caps_on_urls_and_sitemaps_truncate_and_say_so(
    input_site: InputSite, fetch: Fetcher
) -> None:
    report = SitemapReport()
    rows = await _rows(input_site.root, fetch, limits=SitemapLimits(max_urls=4), report=report)
    assert len(rows) == 4 and report.truncated == "more than 4 URLs (max_urls)"
    report = SitemapReport()
    rows = await _rows(input_site.root, fetch, limits=SitemapLimits(max_sitemaps=2), report=report)
    assert len(rows) == 3  # the index and its first child only
    assert report.truncated == "more than 2 sitemaps (max_sitemaps)"


async def test_max_depth_zero_with_nothing_read_is_an_error(
    input_site: InputSite, fetch: Fetcher
) -> None:
    with pytest.raises(InvalidSitemapError, match="no page URL could be read") as info:
        await _rows(input_site.url("/sitemap_index.xml"), fetch,
                    limits=SitemapLimits(max_depth=0))
    assert "nested deeper than 0 indexes" in str(info.value)


async def test_a_failing_child_is_reported_and_the_rest_read(
    input_site: InputSite, fetch: Fetcher
) -> None:
    report = SitemapReport()
    rows = await _rows(input_site.url("/broken-index.xml"), fetch, report=report)
    assert len(rows) == 3
    assert report.failed == [
        (gone := input_site.url("/gone.xml"), f"HTTPStatusError: HTTP 404 from {gone}")
    ]


async def test_every_child_failing_is_an_error_naming_each(
    input_site: InputSite, fetch: Fetcher
) -> None:
    with pytest.raises(InvalidSitemapError) as info:
        await _rows(input_site.url("/all-broken-index.xml"), fetch)
    assert "gone.xml: HTTPStatusError" in str(info.value)
    assert "page.html: InvalidSitemapError" in str(info.value)


async def test_an_index_listing_itself_is_read_once(input_site: InputSite, fetch: Fetcher) -> None:
    report = SitemapReport()
    rows = await _rows(input_site.url("/loop-index.xml"), fetch, report=report)
    assert len(rows) == 3
    assert fetch.requested.count(input_site.url("/loop-index.xml")) == 1


async def test_text_sitemap_and_feed_given_as_sitemap(
    input_site: InputSite, fetch: Fetcher
) -> None:
    report = SitemapReport()
    rows = await _rows(input_site.url("/text-sitemap.txt"), fetch, report=report)
    assert [r.url for r in rows] == [input_site.url(f"/t/{i}") for i in (1, 2, 3)]
    assert report.skipped == 1
    rows = await _rows(input_site.url("/feed-as-sitemap.xml"), fetch)
    assert rows[0] == SitemapURL(
        input_site.url("/articles/rain.html"),
        datetime(2003, 6, 10, 4, tzinfo=UTC),
        input_site.url("/feed-as-sitemap.xml"),
    )


async def test_site_without_sitemap_lines_falls_back_to_sitemap_xml(
    bare_site: InputSite, fetch: Fetcher
) -> None:
    bare_site.routes["/robots.txt"] = (b"User-agent: *\nDisallow:\n", "text/plain")
    bare_site.routes["/sitemap.xml"] = (urlset([(bare_site.url("/a"), None)]), "application/xml")
    rows = await _rows(bare_site.root, fetch)
    assert [r.url for r in rows] == [bare_site.url("/a")]


async def test_site_without_any_sitemap_says_what_was_tried(
    bare_site: InputSite, fetch: Fetcher
) -> None:
    with pytest.raises(InvalidSitemapError) as info:
        await _rows(bare_site.root, fetch)
    msg = str(info.value)
    assert "its robots.txt could not be read (http_404" in msg
    assert f"{bare_site.url('/sitemap.xml')} answered http_404" in msg


async def test_a_page_returning_fetch_fits(bare_site: InputSite) -> None:
    """``Fetcher.fetch`` returns a Page: its final URL is what relative locs resolve against."""
    body = urlset([("relative/page", None)])

    async def fetch_page(url: str) -> Page:
        return Page(url, "http://final.example/dir/sitemap.xml", 200, {}, "application/xml",
                    body, "utf-8", datetime.now(UTC))

    rows = await _rows("http://start.example/sitemap.xml", fetch_page)  # type: ignore[arg-type]
    assert rows == [SitemapURL("http://final.example/dir/relative/page", None,
                               "http://final.example/dir/sitemap.xml")]


def test_parse_sitemap_yields_index_children_and_skips_bad_locs() -> None:
    body = sitemapindex(["http://a.example/s1.xml", "ftp://a.example/s2.xml", "/s3.xml"])
    report = SitemapReport()
    items = list(parse_sitemap(body, "http://a.example/index.xml", report=report))
    assert [i.url for i in items] == ["http://a.example/s1.xml", "http://a.example/s3.xml"]
    assert all(isinstance(i, SitemapRef) for i in items) and report.skipped == 1


def test_parse_sitemap_refuses_entities_and_other_encodings_work() -> None:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<urlset><url><loc>&x;</loc></url><url><loc>http://a/ok</loc></url></urlset>')
    report = SitemapReport()
    assert [i.url for i in parse_sitemap(xxe, "http://a/s.xml", report=report)] == ["http://a/ok"]
    assert report.skipped == 1
    latin = ('<?xml version="1.0" encoding="ISO-8859-1"?><urlset><url><loc>http://a/caf\xe9</loc>'
             "</url></urlset>").encode("latin-1")
    assert [i.url for i in parse_sitemap(latin, "http://a/s.xml")] == ["http://a/café"]


def test_parse_sitemap_memory_stays_flat_on_a_big_urlset() -> None:
    body = urlset([(f"http://a.example/p/{i}", "2024-01-01") for i in range(20_000)])
    tracemalloc.start()
    try:
        count = sum(1 for _ in parse_sitemap(body, "http://a.example/s.xml"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 2 * 1024 * 1024, (peak, len(body))  # Python objects: a chunk and a few rows


def test_xhtml_and_empty_documents() -> None:
    xhtml = b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body/></html>'
    with pytest.raises(InvalidSitemapError, match="XHTML page"):
        list(parse_sitemap(xhtml, "http://a/s.xml"))
    with pytest.raises(InvalidSitemapError, match="is empty"):
        list(parse_sitemap(b"  \n", "http://a/s.xml"))
    with pytest.raises(InvalidSitemapError, match="HTML page"):
        list(parse_sitemap(gzip.compress(HTML), "http://a/s.xml.gz"))
    with pytest.raises(InvalidSitemapError, match="not a valid gzip stream"):
        list(parse_sitemap(b"\x1f\x8b\x08\x00garbage-garbage-garbage", "http://a/s.xml.gz"))


def test_robots_sitemaps_reads_sitemap_lines() -> None:
    body = (b"User-agent: *\nDisallow: /private\n# Sitemap: http://commented.example/x.xml\n"
            b"sitemap: http://a.example/one.xml\nSitemap: /relative.xml\n"
            b"Sitemap: http://a.example/one.xml\n")
    assert robots_sitemaps(body, "http://a.example/robots.txt") == [
        "http://a.example/one.xml",
        "http://a.example/relative.xml",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-03", datetime(2024, 5, 3, tzinfo=UTC)),
        ("2024-05-03T10:00Z", datetime(2024, 5, 3, 10, tzinfo=UTC)),
        ("2024-05-03T10:00:30.5+02:00", datetime(2024, 5, 3, 8, 0, 30, 500000, tzinfo=UTC)),
        (" 2024-05-03T10:00:00 ", datetime(2024, 5, 3, 10, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        ("2024-13", None),
    ],
)
def test_parse_lastmod(text: str, expected: datetime | None) -> None:
    assert parse_lastmod(text) == expected

