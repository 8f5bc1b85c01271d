"""RSS and Atom feeds -> rows of (url, title, published).

    entries = await read_feed("https://example.org/feed.xml", fetch)       # list[FeedEntry]
    entries = parse_feed(body, "https://example.org/feed.xml")            # no I/O

``fetch`` is the caller's fetcher (see ``workbench.inputs.source``): the client passes
Workbench's polite one, so a feed is read under the same robots.txt, pacing and size rules as a
page, and its errors (``http_404``, ``robots_disallowed``, ...) propagate unchanged.

The parser is feedparser (maintained since 2002, the reference for the formats' many dialects):
it reads RSS 0.9x/1.0/2.0 and Atom 0.3/1.0 from bytes, honours the declared encoding, resolves
relative links against ``xml:base`` and the feed's own URL (given as its Content-Location), uses
a permalink ``<guid>`` when an item has no ``<link>``, and parses the dozens of date formats
feeds use. It is handed a ``BytesIO``, never a string: given a string, feedparser would open it
as a URL or a local file name. trafilatura's feed code was not used: it returns links only (no
title, no date) and filters them by domain; ultimate-sitemap-parser drops items without a title
or date.

Rules:
- ``url``: the item's alternate link, else a permalink guid/id; made absolute; items with
  neither, or with a non-http(s) link, are counted in ``FeedReport.skipped`` and left out.
- ``title``: plain text (an HTML title has its tags removed); ``None`` when missing.
- ``published``: the published date, else the updated date, as an aware UTC ``datetime``;
  ``None`` when missing or unparseable.
- A document that is an HTML page, a sitemap, or no feed at all raises ``InvalidFeedError``;
  one past ``max_bytes`` (after gunzipping) raises ``InputTooLarge``. Past ``max_urls`` entries
  the rest are dropped and ``FeedReport.truncated`` says so.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import feedparser
import lxml.etree
import lxml.html
import pandas as pd

from workbench.core.errors import InvalidFeedError
from workbench.core.logs import get_logger
from workbench.inputs.source import Fetch, fetch_document, inflate, looks_like_html, root_name

__all__ = ["FeedEntry", "FeedLimits", "FeedReport", "feed_frame", "parse_feed", "read_feed"]

log = get_logger("workbench.inputs.feeds")

class FeedEntry(NamedTuple):
    """One row of ``read_feed``: ``pd.DataFrame(rows, columns=FeedEntry._fields)``."""

    url: str
    title: str | None
    published: datetime | None


@dataclass(frozen=True)
class FeedLimits:
    """Caps on what one feed may make us read and hold."""

    #: entries kept; later ones are dropped (``FeedReport.truncated``)
    max_urls: int = 100_000
    #: bytes of the feed, after gunzipping: past it, ``InputTooLarge``
    max_bytes: int = 10 * 1024 * 1024


@dataclass
class FeedReport:
    """What reading a feed found besides its rows."""

    url: str = ""
    format: str = ""  # feedparser's version name: "rss20", "atom10", ...
    entries: int = 0
    skipped: int = 0  # items without a usable http(s) link
    truncated: str | None = None  # why rows were dropped, if they were


async def read_feed(
    url: str,
    fetch: Fetch,
    *,
    limits: FeedLimits = FeedLimits(),
    report: FeedReport | None = None,
) -> list[FeedEntry]:
    """Fetch the feed at ``url`` with ``fetch`` and return its entries (see the module doc)."""
    doc = await fetch_document(fetch, url, max_bytes=limits.max_bytes, what="feed")
    return parse_feed(
        doc.body, doc.url, content_type=doc.content_type, limits=limits, report=report
    )


async def feed_frame(
    url: str,
    fetch: Fetch,
    *,
    limits: FeedLimits = FeedLimits(),
) -> pd.DataFrame:
    """``read_feed`` as a DataFrame (``url``, ``title``, ``published`` UTC); the ``FeedReport``
    is in ``df.attrs["report"]``."""
    report = FeedReport()
    rows = await read_feed(url, fetch, limits=limits, report=report)
    df = pd.DataFrame(
        {
            "url": pd.Series([r.url for r in rows], dtype="string"),
            "title": pd.Series([r.title for r in rows], dtype="string"),
            "published": pd.to_datetime(
                pd.Series([r.published for r in rows], dtype=object), utc=True
            ),
        }
    )
    df.attrs["report"] = report
    return df


def parse_feed(
    body: bytes,
    url: str,
    *,
    content_type: str = "",
    limits: FeedLimits = FeedLimits(),
    report: FeedReport | None = None,
) -> list[FeedEntry]:
    """Parse a feed's bytes; ``url`` is where it was read from (relative links resolve
    against it). Raises ``InvalidFeedError`` or ``InputTooLarge``; does no I/O."""
    report = report if report is not None else FeedReport()
    report.url = url
    data = b"".join(
        inflate(body, max_bytes=limits.max_bytes, source=url, what="feed", error=InvalidFeedError)
    )
    _check_is_feed(data, url)
    headers = {"content-location": url, "content-type": content_type or "application/xml"}
    parsed = feedparser.parse(io.BytesIO(data), response_headers=headers, sanitize_html=False)
    if not parsed.get("version"):
        why = parsed.get("bozo_exception")
        raise InvalidFeedError(
            f"{url} is not an RSS or Atom feed"
            + (f" (root element <{root_name(data)}>)" if root_name(data) else "")
            + (f": {why}" if why else "")
        )
    report.format = parsed.version
    rows: list[FeedEntry] = []
    for entry in parsed.entries:
        link = _entry_url(entry, url)
        if link is None:
            report.skipped += 1
            continue
        if len(rows) >= limits.max_urls:
            report.truncated = f"more than {limits.max_urls:,} entries (max_urls)"
            log.warning("feed truncated", feed=url, max_urls=limits.max_urls)
            break
        rows.append(FeedEntry(link, _title(entry), _published(entry)))
    report.entries = len(rows)
    return rows


def _check_is_feed(data: bytes, url: str) -> None:
    if not data.strip():
        raise InvalidFeedError(f"{url} is empty, not a feed")
    if looks_like_html(data):
        raise InvalidFeedError(f"{url} is an HTML page, not an RSS or Atom feed")
    if root_name(data) in ("urlset", "sitemapindex"):
        raise InvalidFeedError(f"{url} is a sitemap, not a feed: read it as a sitemap")


def _entry_url(entry: Any, base: str) -> str | None:
    candidates = [entry.get("link")]
    candidates += [
        link.get("href") for link in entry.get("links", ()) if link.get("rel") == "alternate"
    ]
    if entry.get("guidislink") or str(entry.get("id", "")).startswith(("http://", "https://")):
        candidates.append(entry.get("id"))
    for value in candidates:
        if not value or not isinstance(value, str):
            continue
        absolute = urljoin(base, value.strip())
        parts = urlsplit(absolute)
        if parts.scheme in ("http", "https") and parts.netloc:
            return absolute
    return None


def _title(entry: Any) -> str | None:
    title = entry.get("title")
    if not title:
        return None
    detail = entry.get("title_detail") or {}
    if "html" in str(detail.get("type", "")) and "<" in title:
        try:
            title = lxml.html.fragment_fromstring(title, create_parent="div").text_content()
        except (ValueError, lxml.etree.ParserError):
            pass
    title = " ".join(title.split())
    return title or None


def _published(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = entry.get(key)
        if isinstance(value, time.struct_time):
            try:
                return datetime(*value[:6], tzinfo=UTC)
            except ValueError:
                continue
    return None
