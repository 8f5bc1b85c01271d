"""What the fetcher accepts (content types, content encodings) and charset detection.

Pure functions on bytes and header strings, so they are cheap to test and reuse (a stored page
is decoded the same way as a fetched one).
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from yarl import URL

from workbench.core.errors import UnsupportedContent

#: Media types the fetcher returns as pages. Everything else is ``UnsupportedContent``.
ACCEPTED_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/plain"})
#: Content-Encodings aiohttp decodes here (br needs brotli, zstd a zstd module): the only ones
#: advertised in Accept-Encoding; a body in any other is ``UnsupportedContent``.
DECODABLE_ENCODINGS = ("gzip", "deflate") + (("br",) if HAS_BROTLI else ()) + (
    ("zstd",) if HAS_ZSTD else ()
)
ACCEPT_ENCODING = ", ".join(DECODABLE_ENCODINGS)

#: How far into the body to look for ``<meta charset>`` (the HTML spec's prescan uses 1024 bytes;
#: real pages often put a long <script> or comment first, so look a little further).
META_SCAN_BYTES = 4096
#: charset_normalizer's cost grows with input size; a sample this big is plenty to guess from.
DETECT_SAMPLE_BYTES = 64 * 1024
_DECODE_STEP = 256 * 1024

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Labels that browsers decode as windows-1252 (WHATWG Encoding Standard): servers say
# "iso-8859-1" but send curly quotes in 0x80-0x9F.
_LATIN1_LABELS = frozenset({"iso8859-1", "ascii", "cp1252"})
# Never honour these even when declared: UTF-7 is an XSS vector and browsers refuse it.
_REFUSED = frozenset({"utf-7"})

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.I)
_CT_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([^"';,\s]+)""", re.I)

# WHATWG MIME sniffing: tags whose presence at the start of a body means HTML.
_HTML_STARTS = tuple(
    t.encode()
    for t in (
        "<!doctype html",
        "<html",
        "<head",
        "<script",
        "<iframe",
        "<h1",
        "<div",
        "<font",
        "<table",
        "<a",
        "<style",
        "<title",
        "<b",
        "<body",
        "<br",
        "<p",
        "<!--",
        "<meta",
    )
)


def media_type(content_type: str | None) -> str:
    """The lowercased media type without parameters ('' when the header is missing)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def check_content_type(ctype: str, url: URL) -> None:
    """Raise ``UnsupportedContent`` for a media type the fetcher does not return (from the
    headers, before the body is downloaded); an empty type is sniffed later."""
    if not ctype or ctype in ACCEPTED_TYPES:
        return  # a missing type is sniffed once the body is in
    if ctype == "application/pdf":
        raise UnsupportedContent(f"{url} is a PDF (application/pdf); PDFs are not extracted")
    raise UnsupportedContent(
        f"{url} has content type {ctype}; only HTML, XHTML and plain text pages are fetched"
    )


def check_content_encoding(encoding: str | None, url: URL) -> None:
    """Raise ``UnsupportedContent`` for a Content-Encoding not in ``DECODABLE_ENCODINGS`` (the
    body would otherwise reach charset detection still compressed)."""
    coding = (encoding or "").strip().lower()
    if coding and coding != "identity" and coding not in DECODABLE_ENCODINGS:
        raise UnsupportedContent(
            f"{url} sent its body with Content-Encoding {coding!r}, which cannot be decoded here "
            f"(decodable: {ACCEPT_ENCODING})"
        )


def sniffs_as_html(body: bytes) -> bool:
    """True when the body starts (after whitespace and a BOM) with an HTML tag or comment."""
    head = body[:1024]
    for bom, _ in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
            break
    head = head.lstrip(b" \t\r\n\x0c").lower()
    for tag in _HTML_STARTS:
        if head.startswith(tag):
            # "<b" must not match "<base64..." or "<bogus": the tag name has to end here.
            nxt = head[len(tag) : len(tag) + 1]
            if tag == b"<!--" or nxt in (b" ", b">", b"/", b"\t", b"\n", b"\r", b""):
                return True
    return False


def codec_name(label: str | None) -> str | None:
    """The Python codec name for a charset label, or None if unknown or not a text encoding."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in ("x-user-defined", "unicode-1-1-utf-8", "utf8mb4"):
        label = "utf-8" if label != "x-user-defined" else "cp1252"
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # codecs.lookup also finds bytes-to-bytes codecs such as "base64" or "zlib".
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return None
    return info.name


def declared_charset(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header, as a Python codec name."""
    if not content_type:
        return None
    m = _CT_CHARSET.search(content_type)
    return codec_name(m.group(1)) if m else None


def meta_charset(body: bytes) -> str | None:
    """The charset of ``<meta charset=...>`` or an http-equiv Content-Type in the first few KB."""
    m = _META_CHARSET.search(body[:META_SCAN_BYTES])
    if not m:
        return None
    name = codec_name(m.group(1).decode("ascii", "ignore"))
    # A page that reached us as bytes cannot really be UTF-16 if its <meta> was ASCII-readable;
    # the HTML spec says to treat that declaration as UTF-8.
    if name and name.startswith("utf-16"):
        return "utf-8"
    return name


def _decodes(body: bytes, name: str) -> bool:
    """Whether the whole body decodes strictly, without materializing a string of its size."""
    view = memoryview(body)
    try:
        decoder = codecs.getincrementaldecoder(name)(errors="strict")
        for start in range(0, len(view), _DECODE_STEP):
            decoder.decode(view[start : start + _DECODE_STEP])
        decoder.decode(b"", final=True)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _refine_declared(body: bytes, name: str) -> str:
    """Apply the browsers' reading of latin-1-ish labels, and catch UTF-8 mislabelled as latin-1."""
    if name not in _LATIN1_LABELS or body.isascii():
        return name
    # Valid UTF-8 with non-ASCII bytes is vanishingly unlikely to be latin-1 text by accident,
    # while "charset=iso-8859-1" on a UTF-8 page is a common server default.
    if _decodes(body, "utf-8"):
        return "utf-8"
    return "cp1252" if _decodes(body, "cp1252") else "iso8859-1"


def _detect(body: bytes) -> str | None:
    """charset_normalizer's best guess from a sample, if it decodes the whole body."""
    sample = body[:DETECT_SAMPLE_BYTES]
    if len(body) > DETECT_SAMPLE_BYTES:
        # Cut at an ASCII byte so the sample does not end inside a multi-byte character.
        cut = max(sample.rfind(b"\n"), sample.rfind(b" "), sample.rfind(b">"))
        if cut > DETECT_SAMPLE_BYTES // 2:
            sample = sample[:cut]
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        return None
    name = codec_name(best.encoding)
    if name and _decodes(body, name):
        return name
    return None


def choose_encoding(body: bytes, content_type: str | None) -> str:
    """The codec to decode ``body`` with.

    In order: a byte-order mark; the Content-Type charset; a ``<meta>`` charset (each only if the
    whole body decodes with it); charset_normalizer's guess; else UTF-8 (decoded with replacement).
    """
    for bom, bom_codec in _BOMS:
        if body.startswith(bom) and _decodes(body, bom_codec):
            # "utf-8-sig" drops the BOM from the text; UTF-16/32 codecs consume it themselves.
            return "utf-8-sig" if bom_codec == "utf-8" else bom_codec
    for name in (declared_charset(content_type), meta_charset(body)):
        if name and _decodes(body, name):
            return _refine_declared(body, name)
    if body.isascii():
        return "utf-8"
    if _decodes(body, "utf-8"):
        # Cheap and right for most of the web; charset_normalizer would only agree more slowly.
        return "utf-8"
    return _detect(body) or "utf-8"
