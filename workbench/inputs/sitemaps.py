"""Sitemaps -> rows of (url, lastmod, sitemap), following indexes, gzip and robots.txt.

    async for row in iter_sitemap_urls("https://example.org/", fetch): ...   # SitemapURL rows
    df = await sitemap_frame("https://example.org/sitemap.xml", fetch)       # DataFrame
    for item in parse_sitemap(body, url, max_bytes=...): ...                 # no I/O

``fetch`` is the caller's fetcher (``workbench.inputs.source``): the client passes Workbench's
polite one, so robots.txt, pacing, the address guard and the size cap apply to sitemaps as to
pages. Given a site root (``https://example.org/`` or ``.../robots.txt``), the sitemaps are the
``Sitemap:`` lines of its robots.txt, else ``/sitemap.xml``. Given any other URL, that is the
sitemap.

What is read:
- ``<urlset>`` (pages) and ``<sitemapindex>`` (more sitemaps, followed breadth-first) in any
  namespace or none; only a ``<url>``'s own ``<loc>``/``<lastmod>`` count (not ``image:loc``).
- gzip, told by its magic bytes (a ``.xml.gz`` the server already inflated reads as well).
- a text sitemap (one URL a line, as the protocol allows) and an RSS/Atom feed given as a
  sitemap (the protocol allows those too: ``workbench.inputs.feeds`` reads them).

Errors and caps (``SitemapLimits``):
- The document the caller named: its fetch errors propagate unchanged (``http_404``,
  ``robots_disallowed``, ...); an HTML page, broken XML or another root element raises
  ``InvalidSitemapError``; more than ``max_bytes`` (the protocol's 50 MB by default, counted
  after gunzipping, so a gzip bomb stops there) raises ``InputTooLarge``.
- A child sitemap (from an index or robots.txt) that fails is recorded in
  ``SitemapReport.failed`` and logged; the others are still read. If nothing could be read at
  all, ``InvalidSitemapError`` lists why.
- ``max_urls`` rows and ``max_sitemaps`` documents: past them reading stops and
  ``SitemapReport.truncated`` says which cap was hit (a listing, unlike a malformed document,
  is still useful when cut). ``max_depth`` bounds nested indexes; loops are read once.
- Rows are yielded as parsed (``lxml``'s pull parser, one element at a time, elements freed
  once read), so a 50 MB sitemap is never held as a tree. Duplicates are kept as listed:
  ``submit`` dedupes.

Why lxml and not a sitemap library. trafilatura's ``sitemaps`` works on decoded strings, keeps
no ``lastmod``, rewrites URLs (``courlan.clean_url``), drops links to other domains and returns
``[]`` instead of errors; courlan only cleans and filters URLs. ultimate-sitemap-parser reads
the formats well but only from a ``str`` (``sitemap_from_str``) that it decodes itself as UTF-8
whatever the XML declares, builds every page as an object before returning, and fetches children
through its own synchronous ``requests`` client. None of them can be fed our fetched bytes, so
this module parses with lxml (already a dependency through trafilatura) without entity
resolution or network access, and keeps everything else (what to fetch, caps, errors) here.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import pandas as pd
from lxml import etree

from workbench.core.errors import InputTooLarge, InvalidSitemapError, PipelineError
from workbench.core.logs import get_logger
from workbench.inputs.feeds import FeedLimits, parse_feed
from workbench.inputs.source import (
    Fetch,
    fetch_document,
    inflate,
    looks_like_html,
    root_name,
)

__all__ = [
    "SitemapLimits",
    "SitemapRef",
    "SitemapReport",
    "SitemapURL",
    "iter_sitemap_urls",
    "parse_lastmod",
    "parse_sitemap",
    "robots_sitemaps",
    "sitemap_frame",
]

log = get_logger("workbench.inputs.sitemaps")

ROBOTS_MAX_BYTES = 512 * 1024  # Google reads the first 500 KiB of a robots.txt
_FEED_ROOTS = frozenset({"rss", "feed", "RDF"})
_YIELD_EVERY = 5_000  # rows between pauses that let the event loop run other tasks


class SitemapURL(NamedTuple):
    """One row: a page listed by ``sitemap``. ``pd.DataFrame(rows, columns=SitemapURL._fields)``."""

    url: str
    lastmod: datetime | None
    sitemap: str


class SitemapRef(NamedTuple):
    """A child sitemap listed by an index (``parse_sitemap`` yields these; the walk follows)."""

    url: str
    lastmod: datetime | None
    parent: str  # the index that lists it


@dataclass(frozen=True)
class SitemapLimits:
    """Caps on one sitemap walk."""

    #: rows yielded; past it reading stops (``SitemapReport.truncated``)
    max_urls: int = 1_000_000
    #: sitemap documents fetched (robots.txt not counted); past it reading stops
    max_sitemaps: int = 1_000
    #: bytes of one sitemap after gunzipping (the protocol's limit): past it, ``InputTooLarge``
    max_bytes: int = 50 * 1024 * 1024
    #: sitemap indexes nested deeper than this are not followed (recorded as failed)
    max_depth: int = 5


@dataclass
class SitemapReport:
    """What a walk found besides its rows (``sitemap_frame`` puts it in ``df.attrs``)."""

    sitemaps: list[str] = field(default_factory=list)  # read, in order
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sitemap, why)
    skipped: int = 0  # entries without a usable http(s) URL
    truncated: str | None = None  # which cap stopped the walk, if one did
    robots_txt: str | None = None  # the robots.txt read for a site root


# -- the walk (async: fetches) --


async def iter_sitemap_urls(
    url: str,
    fetch: Fetch,
    *,
    limits: SitemapLimits = SitemapLimits(),
    report: SitemapReport | None = None,
) -> AsyncIterator[SitemapURL]:
    """Every page URL the sitemap(s) at ``url`` list, as they are read (see the module doc)."""
    report = report if report is not None else SitemapReport()
    queue: deque[tuple[str, int]] = deque()  # (sitemap, depth)
    named: str | None = None  # a sitemap whose own failure is the caller's error
    unnamed_why = ""  # why that sitemap was guessed (no Sitemap: line in robots.txt)
    root = _site_root(url)
    if root is None:
        named = url
        queue.append((url, 0))
    else:
        found, unnamed_why = await _discover(root, fetch, report)
        if not found:
            named = f"{root}/sitemap.xml"
            log.info("no sitemap in robots.txt, trying /sitemap.xml", site=root, why=unnamed_why)
            found = [named]
        queue.extend((s, 0) for s in found)
    seen: set[str] = set()
    emitted = 0
    while queue:
        sitemap, depth = queue.popleft()
        if sitemap in seen:
            continue
        if len(report.sitemaps) >= limits.max_sitemaps:
            _truncate(report, f"more than {limits.max_sitemaps:,} sitemaps (max_sitemaps)")
            break
        seen.add(sitemap)
        try:
            doc = await fetch_document(fetch, sitemap, max_bytes=limits.max_bytes, what="sitemap")
            seen.add(doc.url)
            report.sitemaps.append(doc.url)
            for item in parse_sitemap(
                doc.body, doc.url, max_bytes=limits.max_bytes, report=report
            ):
                if isinstance(item, SitemapRef):
                    if depth + 1 > limits.max_depth:
                        _fail(report, item.url, f"nested deeper than {limits.max_depth} indexes")
                    elif item.url not in seen:
                        queue.append((item.url, depth + 1))
                    continue
                if emitted >= limits.max_urls:
                    _truncate(report, f"more than {limits.max_urls:,} URLs (max_urls)")
                    return
                emitted += 1
                yield item
                if emitted % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # parsing is CPU: let heartbeats and fetches run
        except (InvalidSitemapError, InputTooLarge, PipelineError) as exc:
            if sitemap != named:
                _fail(report, sitemap, f"{type(exc).__name__}: {exc}")
            elif unnamed_why and isinstance(exc, PipelineError):
                raise InvalidSitemapError(
                    f"no sitemap found for {url}: {unnamed_why}, and {sitemap} answered "
                    f"{exc.error_type}: {exc}"
                ) from exc
            else:
                raise
    if emitted == 0 and report.failed:
        shown = "; ".join(f"{u}: {why}" for u, why in report.failed[:5])
        more = f" (and {len(report.failed) - 5} more)" if len(report.failed) > 5 else ""
        raise InvalidSitemapError(f"no page URL could be read from {url}: {shown}{more}")


async def sitemap_frame(
    url: str,
    fetch: Fetch,
    *,
    limits: SitemapLimits = SitemapLimits(),
) -> pd.DataFrame:
    """``iter_sitemap_urls`` as a DataFrame (``url``, ``lastmod`` UTC, ``sitemap``); the
    ``SitemapReport`` is in ``df.attrs["report"]``. Built column by column, not row objects."""
    report = SitemapReport()
    urls: list[str] = []
    lastmods: list[datetime | None] = []
    sitemaps: list[str] = []
    async for row in iter_sitemap_urls(url, fetch, limits=limits, report=report):
        urls.append(row.url)
        lastmods.append(row.lastmod)
        sitemaps.append(row.sitemap)
    df = pd.DataFrame(
        {
            "url": pd.Series(urls, dtype="string"),
            "lastmod": pd.to_datetime(pd.Series(lastmods, dtype=object), utc=True),
            "sitemap": pd.Series(sitemaps, dtype="category"),
        }
    )
    df.attrs["report"] = report
    return df


async def _discover(root: str, fetch: Fetch, report: SitemapReport) -> tuple[list[str], str]:
    """The ``Sitemap:`` lines of a site's robots.txt, or ``[]`` and why there are none."""
    try:
        doc = await fetch_document(
            fetch, f"{root}/robots.txt", max_bytes=ROBOTS_MAX_BYTES, what="robots.txt"
        )
    except InputTooLarge:
        return [], f"its robots.txt is over {ROBOTS_MAX_BYTES:,} bytes"
    except PipelineError as exc:
        return [], f"its robots.txt could not be read ({exc.error_type}: {exc})"
    report.robots_txt = doc.url
    found = robots_sitemaps(doc.body, doc.url)
    return found, "" if found else "its robots.txt has no Sitemap: line"


def robots_sitemaps(body: bytes, robots_url: str) -> list[str]:
    """The ``Sitemap:`` URLs of a robots.txt, absolute, in order, without repeats."""
    parser = RobotFileParser()
    parser.parse(body.decode("utf-8", errors="replace").splitlines())
    urls = [urljoin(robots_url, s.strip()) for s in parser.site_maps() or ()]
    return [u for u in dict.fromkeys(urls) if _is_http(u)]


def _site_root(url: str) -> str | None:
    """``scheme://host`` when ``url`` names a site (its root or its robots.txt), else None."""
    parts = urlsplit(url.strip())
    if parts.path in ("", "/", "/robots.txt") and not parts.query and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


def _fail(report: SitemapReport, sitemap: str, why: str) -> None:
    report.failed.append((sitemap, why))
    log.warning("sitemap skipped", sitemap=sitemap, reason=why)


def _truncate(report: SitemapReport, why: str) -> None:
    report.truncated = why
    log.warning("sitemap listing truncated", reason=why)


# -- one document (sync, no I/O) --


def parse_sitemap(
    body: bytes,
    url: str,
    *,
    max_bytes: int = SitemapLimits.max_bytes,
    report: SitemapReport | None = None,
) -> Iterator[SitemapURL | SitemapRef]:
    """The pages (``SitemapURL``) and child sitemaps (``SitemapRef``) one sitemap lists.

    ``body`` as fetched (gzip or not); ``url`` is where it was read from. Raises
    ``InvalidSitemapError`` or ``InputTooLarge`` (see the module doc).
    """
    report = report if report is not None else SitemapReport()
    chunks = inflate(
        body, max_bytes=max_bytes, source=url, what="sitemap", error=InvalidSitemapError
    )
    first = next((c for c in chunks if c), b"")
    head = first.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise InvalidSitemapError(f"the sitemap {url} is empty")
    if looks_like_html(head):
        raise InvalidSitemapError(f"{url} is an HTML page, not a sitemap")
    if head[:1] != b"<":
        yield from _text_sitemap(first, chunks, url, report)
        return
    name = root_name(head)
    if name in _FEED_ROOTS:
        yield from _feed_as_sitemap(body, url, max_bytes)
        return
    entry = _check_root(name, url)  # "url" in a <urlset>, "sitemap" in a <sitemapindex>
    parser = etree.XMLPullParser(
        events=("end",),
        tag=f"{{*}}{entry}",  # one event per entry: the parser skips the rest in C
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=True,  # one-line sitemaps pass libxml2's 10 MB buffer limit; max_bytes caps input
        remove_comments=True,
        remove_pis=True,
    )
    try:
        for chunk in _chain(first, chunks):
            parser.feed(chunk)
            for _event, elem in parser.read_events():
                parent = elem.getparent()
                if parent is None or parent.getparent() is not None:
                    continue  # only the root's own children are entries
                loc, lastmod = _loc(elem, url)
                parent.remove(elem)  # free what was read: memory stays flat
                if loc is None:
                    report.skipped += 1
                elif entry == "url":
                    yield SitemapURL(loc, lastmod, url)
                else:
                    yield SitemapRef(loc, lastmod, url)
        parser.close()
    except etree.XMLSyntaxError as exc:
        raise InvalidSitemapError(f"the sitemap {url} is not well-formed XML: {exc}") from exc


def _check_root(name: str, url: str) -> str:
    """The entry element of a sitemap whose root element is ``name``, or a clear error."""
    if name == "urlset":
        return "url"
    if name == "sitemapindex":
        return "sitemap"
    if name == "html":
        raise InvalidSitemapError(f"{url} is an XHTML page, not a sitemap")
    if not name:
        raise InvalidSitemapError(f"{url} is not a sitemap: no XML root element in its first 8 KB")
    raise InvalidSitemapError(
        f"{url} is not a sitemap: its root element is <{name}>, "
        "expected <urlset> or <sitemapindex>"
    )


def _local(tag: object) -> str:
    """``{namespace}name`` -> ``name`` (comments and PIs are removed, so tags are strings)."""
    text = str(tag)
    return text[text.rfind("}") + 1 :]


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _loc(elem: etree._Element, base: str) -> tuple[str | None, datetime | None]:
    """A ``<url>``'s or ``<sitemap>``'s own ``<loc>`` (absolute http(s)) and ``<lastmod>``."""
    loc: str | None = None
    lastmod: datetime | None = None
    for child in elem:
        name = _local(child.tag)
        if name == "loc" and loc is None and child.text:
            text = child.text.strip()
            loc = text if _is_http(text) else _absolute(base, text)
        elif name == "lastmod" and child.text:
            lastmod = parse_lastmod(child.text)
    return loc, lastmod


def _absolute(base: str, ref: str) -> str | None:
    """``ref`` made absolute against ``base``, if that gives an http(s) URL."""
    joined = urljoin(base, ref)
    return joined if _is_http(joined) else None


def _text_sitemap(
    first: bytes, rest: Iterator[bytes], url: str, report: SitemapReport
) -> Iterator[SitemapURL]:
    pending = b""
    checked = False
    for chunk in _chain(first, rest):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for raw in lines:
            line = raw.strip().decode("utf-8", errors="replace")
            if not line:
                continue
            if not _is_http(line):
                if not checked:
                    raise InvalidSitemapError(
                        f"{url} is not a sitemap: neither XML nor a list of URLs "
                        f"(first line: {line[:80]!r})"
                    )
                report.skipped += 1
                continue
            checked = True
            yield SitemapURL(line, None, url)
    line = pending.strip().decode("utf-8", errors="replace")
    if line:
        if _is_http(line):
            yield SitemapURL(line, None, url)
        elif not checked:
            raise InvalidSitemapError(f"{url} is not a sitemap: neither XML nor a list of URLs")
        else:
            report.skipped += 1


def _feed_as_sitemap(body: bytes, url: str, max_bytes: int) -> Iterator[SitemapURL]:
    entries = parse_feed(body, url, limits=FeedLimits(max_urls=10**9, max_bytes=max_bytes))
    for entry in entries:
        yield SitemapURL(entry.url, entry.published, url)


_SPACE = re.compile(r"\s")
_W3C_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


def parse_lastmod(text: str) -> datetime | None:
    """A W3C datetime (``2024``, ``2024-05``, ``2024-05-01``, ``2024-05-01T10:00Z``, with
    seconds and fractions) as an aware UTC datetime; a date alone is midnight UTC. None when
    unparseable: sitemaps in the wild carry much junk here, and a row is worth more than it."""
    s = text.strip()
    if not s:
        return None
    m = _W3C_PARTIAL.match(s)
    try:
        if m:
            return datetime(int(m.group(1)), int(m.group(2) or 1), 1, tzinfo=UTC)
        value = datetime.fromisoformat(s)
    except ValueError:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _is_http(url: str) -> bool:
    """An absolute http(s) URL with a host, without parsing it (a sitemap may list 50,000)."""
    if url.startswith("https://"):
        rest = url[8:]
    elif url.startswith("http://"):
        rest = url[7:]
    else:
        return False
    return bool(rest) and rest[0] not in "/?#" and _SPACE.search(rest) is None
