"""Fetching one input document (a sitemap, a feed, a robots.txt) through the caller's fetcher.

The readers in this package do no networking of their own. They take a ``fetch`` callable, and
the client passes Workbench's polite fetcher, so a sitemap or a feed is read with the same
robots.txt rules, per-host pacing, address guard, size cap and typed errors as a page::

    async def fetch(url: str) -> bytes | Fetched: ...

- It returns the body as received (after the HTTP transfer and content encodings, which aiohttp
  undoes) or any object with ``final_url``, ``body`` and ``content_type`` attributes: a
  ``workbench.core.page.Page`` is one, so ``Fetcher.fetch`` fits once it can be told to accept
  ``INPUT_CONTENT_TYPES`` (XML, feeds, gzip) besides HTML. Returning the final URL matters:
  relative links resolve against it.
- It raises ``workbench.core.errors.PipelineError`` subclasses (``HTTPStatusError``,
  ``RobotsDisallowed``, ``ResponseTooLarge``, ``FetchTimeout``, ...). The readers let them
  through unchanged for the document the caller named, so a 404 sitemap reads as ``http_404``
  exactly as a 404 page would.

A gzipped body (``sitemap.xml.gz`` served as ``application/gzip``) is recognised by its magic
bytes, never by the URL or the Content-Type, and is inflated incrementally with the same cap
(``max_bytes``) on the inflated size: a gzip bomb stops at the cap without ever being held.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from workbench.core.errors import InputTooLarge, InvalidInputError

if TYPE_CHECKING:
    from workbench.core.page import Page

__all__ = [
    "INPUT_CONTENT_TYPES",
    "Document",
    "Fetch",
    "Fetched",
    "fetch_document",
    "inflate",
    "is_gzip",
    "looks_like_html",
    "root_name",
]

#: Content-Types a fetch for these readers should accept (the page fetcher takes HTML and text
#: only). Servers mislabel sitemaps freely, so the readers judge by the bytes, not by this list.
INPUT_CONTENT_TYPES = frozenset({
    "application/xml", "text/xml", "application/rss+xml", "application/atom+xml",
    "application/rdf+xml", "application/x-gzip", "application/gzip", "application/octet-stream",
    "text/plain", "text/html", "application/xhtml+xml",
})
GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_CHUNK = 256 * 1024
_PROLOG = re.compile(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE(?:[^\[>]|\[.*?\])*>", re.S)
_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s/>]")


class Fetched(Protocol):
    """What a fetch may return instead of bare bytes (``workbench.core.page.Page`` fits)."""

    @property
    def final_url(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


#: ``async (url) -> bytes | Fetched``, raising ``PipelineError`` subclasses
Fetch = Callable[[str], Awaitable["bytes | Fetched"]]


if TYPE_CHECKING:

    def _page_is_fetched(page: Page) -> Fetched:  # mypy checks that a Page fits ``Fetch``
        return page


@dataclass(frozen=True)
class Document:
    """One fetched input document. ``url`` is where it was finally read from (after redirects);
    ``body`` may still be gzipped (see ``inflate``)."""

    url: str
    body: bytes
    content_type: str = ""

    def __repr__(self) -> str:
        return f"Document({self.url!r}, {len(self.body)} bytes, {self.content_type or '?'})"


async def fetch_document(fetch: Fetch, url: str, *, max_bytes: int, what: str) -> Document:
    """Fetch ``url`` with ``fetch`` and check its size against ``max_bytes``.

    ``what`` names the document in messages ("sitemap", "feed"). Errors of ``fetch`` propagate.
    """
    got = await fetch(url)
    if isinstance(got, bytes | bytearray | memoryview):
        doc = Document(url, bytes(got))
    else:
        doc = Document(got.final_url or url, bytes(got.body), (got.content_type or "").lower())
    if len(doc.body) > max_bytes:
        raise InputTooLarge(
            f"the {what} {doc.url} is {len(doc.body):,} bytes, over the {max_bytes:,}-byte cap "
            "(max_bytes)",
            limit="max_bytes",
            value=max_bytes,
        )
    return doc


def is_gzip(body: bytes) -> bool:
    return body[:2] == GZIP_MAGIC


def inflate(
    body: bytes,
    *,
    max_bytes: int,
    source: str,
    what: str,
    error: type[InvalidInputError] = InvalidInputError,
) -> Iterator[bytes]:
    """The document's bytes in chunks: gunzipped when ``body`` is gzip, else ``body`` itself.

    Raises ``InputTooLarge`` once the inflated size passes ``max_bytes`` (before holding more
    than one chunk past it), and ``error`` for a corrupt gzip stream. Concatenated gzip members
    (allowed by RFC 1952) are read one after the other.
    """
    if not is_gzip(body):
        if len(body) > max_bytes:
            raise _too_large(what, source, max_bytes)
        view = memoryview(body)  # chunks, so a pull parser never sees the whole document at once
        for start in range(0, len(body), _INFLATE_CHUNK):
            yield bytes(view[start : start + _INFLATE_CHUNK])
        return
    total = 0
    data = body
    checked_trailer = False
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            while data:
                chunk = inflater.decompress(data, _INFLATE_CHUNK)
                data = inflater.unconsumed_tail
                total += len(chunk)
                if chunk and not checked_trailer:
                    # Once the stream proved to be gzip, its trailer's ISIZE (inflated size mod
                    # 2**32) tells a big one before inflating it; the running count below still
                    # holds for streams it misstates (several members, over 4 GiB).
                    checked_trailer = True
                    if int.from_bytes(body[-4:], "little") > max_bytes:
                        raise _too_large(what, source, max_bytes, inflated=True)
                if total > max_bytes:
                    raise _too_large(what, source, max_bytes, inflated=True)
                if chunk:
                    yield chunk
                if inflater.eof:
                    break
            if not inflater.eof:
                raise error(f"the {what} {source} is a gzip stream that breaks off")
        except zlib.error as exc:
            raise error(f"the {what} {source} is not a valid gzip stream: {exc}") from exc
        data = inflater.unused_data.lstrip(b"\0")  # some servers pad members with NULs
        if data and not is_gzip(data):
            raise error(f"the {what} {source} has trailing bytes after its gzip stream")


def _too_large(what: str, source: str, max_bytes: int, *, inflated: bool = False) -> InputTooLarge:
    how = "inflates to more than" if inflated else "is more than"
    return InputTooLarge(
        f"the {what} {source} {how} the {max_bytes:,}-byte cap (max_bytes)",
        limit="max_bytes",
        value=max_bytes,
    )


def looks_like_html(head: bytes) -> bool:
    """True when a document's first bytes say it is an HTML page (the Content-Type is not
    trusted: servers label sitemaps text/html and HTML application/xml)."""
    text = head[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<?xml"):
        return False  # XHTML is told by its root element, once parsed
    return text.startswith((b"<!doctype html", b"<html")) or b"<html" in text


def root_name(head: bytes) -> str:
    """The local name of an XML document's root element, from its first 8 KB, or ''."""
    m = _ROOT.search(_PROLOG.sub(b"", head[:8192]))
    return m.group(1).decode("ascii", "replace") if m else ""
