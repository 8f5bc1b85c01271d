"""RSS and Atom feeds over loopback HTTP: rows, relative links, dates, caps and bad documents."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from tests.inputs.conftest import ATOM, HTML, RSS, Fetcher, InputSite, urlset
from workbench.core.errors import HTTPStatusError, InputTooLarge, InvalidFeedError
from workbench.inputs.feeds import (
    FeedEntry,
    FeedLimits,
    FeedReport,
    feed_frame,
    parse_feed,
    read_feed,
)


async def test_rss_relative_links_resolve_against_the_feed_url(
    input_site: InputSite, fetch: Fetcher
) -> None:
    report = FeedReport()
    rows = await read_feed(input_site.url("/feed.rss"), fetch, report=report)
    assert rows == [
        FeedEntry(
            input_site.url("/articles/rain.html"),
            "Rain & rivers",
            datetime(2003, 6, 10, 4, tzinfo=UTC),
        ),
        FeedEntry("http://other.example/g/1", "Permalink guid", None),
    ]
    assert report.format == "rss20"
    assert report.skipped == 2  # no link at all; a mailto: link
    assert report.entries == 2 and report.truncated is None


async def test_atom_links_titles_and_dates(input_site: InputSite, fetch: Fetcher) -> None:
    rows = await read_feed(input_site.url("/feed.atom"), fetch)
    assert rows == [
        # relative href against the feed's URL; HTML title as text; published in UTC
        FeedEntry(input_site.url("/posts/two"), "Bold title", datetime(2024, 1, 5, 8, tzinfo=UTC)),
        # no published date: the updated one
        FeedEntry("http://abs.example/3", "Updated only", datetime(2024, 1, 6, tzinfo=UTC)),
    ]


async def test_feed_frame_columns(input_site: InputSite, fetch: Fetcher) -> None:
    df = await feed_frame(input_site.url("/feed.atom"), fetch)
    assert list(df.columns) == ["url", "title", "published"]
    assert len(df) == 2 and "UTC" in str(df["published"].dtype)
    assert df.attrs["report"].format == "atom10"


async def test_html_page_given_as_feed_is_a_clear_error(
    input_site: InputSite, fetch: Fetcher
) -> None:
    with pytest.raises(InvalidFeedError, match="is an HTML page, not an RSS or Atom feed"):
        await read_feed(input_site.url("/page.html"), fetch)


async def test_fetch_errors_propagate(input_site: InputSite, fetch: Fetcher) -> None:
    with pytest.raises(HTTPStatusError):
        await read_feed(input_site.url("/no-such-feed.xml"), fetch)


def test_a_sitemap_or_other_xml_is_not_a_feed() -> None:
    with pytest.raises(InvalidFeedError, match="is a sitemap, not a feed"):
        parse_feed(urlset([("http://a/", None)]), "http://a/feed.xml")
    with pytest.raises(InvalidFeedError, match=r"not an RSS or Atom feed \(root element <catalog>"):
        parse_feed(b'<?xml version="1.0"?><catalog><item/></catalog>', "http://a/feed.xml")
    with pytest.raises(InvalidFeedError, match="is empty"):
        parse_feed(b"", "http://a/feed.xml")
    with pytest.raises(InvalidFeedError, match="HTML page"):
        parse_feed(HTML, "http://a/feed.xml")


def test_gzipped_feed_caps_and_truncation() -> None:
    assert len(parse_feed(gzip.compress(ATOM), "http://a/feed.atom.gz")) == 2
    with pytest.raises(InputTooLarge, match="max_bytes"):
        parse_feed(ATOM, "http://a/feed.atom", limits=FeedLimits(max_bytes=100))
    report = FeedReport()
    rows = parse_feed(RSS, "http://a/feed.rss", limits=FeedLimits(max_urls=1), report=report)
    assert len(rows) == 1 and report.truncated == "more than 1 entries (max_urls)"


def test_feedparser_never_opens_the_body_as_a_path_or_url(tmp_path: object) -> None:
    """Handed a str, feedparser would fetch a URL or open a file: parse_feed passes a stream."""
    with pytest.raises(InvalidFeedError):
        parse_feed(b"/etc/hostname", "http://a/feed.xml")
    with pytest.raises(InvalidFeedError):
        parse_feed(b"http://127.0.0.1:9/feed.xml", "http://a/feed.xml")
