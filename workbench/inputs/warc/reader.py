"""Reading WARC files: their HTTP responses, streamed, with no network.

Reading::

    for rec in iter_warc("crawl.warc.gz"):          # also iter_warcs([...]), warc_chunks(...)
        if isinstance(rec, WarcPage):
            page = rec.to_page()                    # a workbench Page, as if fetched
        else:                                       # SkippedRecord: .reason, .error_type
            ...

- Yields one ``WarcPage`` per usable HTTP ``response`` record: a 2xx answer whose type is HTML,
  XHTML or plain text (the fetcher's rule; a missing type is sniffed), with the payload's
  chunked transfer and gzip/deflate/br content encodings undone (``body`` is what
  ``Page.body`` would be) and where it lives (``file``, ``offset`` of the record, compressed
  when the file is, ``record_id``), so a result points back into the archive.
- Yields a ``SkippedRecord`` with a ``SkipReason`` for an HTTP response that cannot become a
  page: ``not_html``, ``revisit`` (no payload: it points at an earlier record), ``truncated``
  (``WARC-Truncated`` set by the crawler, or the file ends inside the record), ``http_status``
  (not 2xx: redirects, errors), ``empty``, ``too_large`` (over ``max_payload_bytes``),
  ``undecodable`` (a broken content encoding). ``error_type`` gives the ledger's name for each
  (``unsupported_content``, ``warc_revisit``, ``warc_truncated``, ``http_404``, ...).
- Ignores the rest (``warcinfo``, ``request``, ``metadata``, ``resource``, ``dns:`` records).
- Streams: records are read one at a time in 64 KB blocks, a payload is held only up to
  ``max_payload_bytes``; a multi-GB file is never read into memory.
- Raises ``InvalidWARCError`` (naming the file and, past the start, the offset) for a file that
  is missing, empty, not a WARC, or corrupt past its first records.

Why warcio, measured (``benchmarks/bench_warc.py``; each reader parses the HTTP headers, reads
and sha256-hashes every payload; records/s, best of 3 runs; the 2 cores were shared with other
test runs, load average 7-10, so absolute figures are low and moved ±50 % between runs, the
ratios less):

==========================================  ==========  ==========  ==============
records/s                                   warcio 1.8  FastWARC 2  ``iter_warc``
==========================================  ==========  ==========  ==============
905 corpus pages (174 KB), ``.warc.gz``     390         677         281
905 corpus pages (174 KB), ``.warc``        1,229       1,757       764
10,000 synthetic pages (2 KB), ``.warc.gz``  5,282       34,398      3,213
==========================================  ==========  ==========  ==============

(An earlier, quieter run of the corpus ``.warc.gz``: warcio 1,070, FastWARC 2,790 records/s.)
FastWARC is 1.4-2.6x faster on real pages and 6.5x on tiny ones. On real pages the difference,
about 1 ms a page, is a few per cent of extracting that page (~26 ms), and ``submit_warc`` also
stores each page and writes an item, so reading does not bound it. What decided: warcio is pure
Python (FastWARC 2.x, a Rust extension, has no wheels for Intel macOS, musl, or glibc before
2.28, where installing Workbench would need a compiler), it is the reference implementation the
writer's output is checked against, and it undoes chunked and br/gzip/deflate encodings itself.
``iter_warc`` costs a third more than bare warcio (a payload read in 64 KB steps to cap it, the
checks below); its memory does not grow with the file (5 MB of RSS over 157 MB of payloads).
Neither library notices a file that ends inside a record (both yield the short payload as if it
were whole, and warcio stops silently at a gzip member cut inside its headers), so this reader
checks the bytes read against each record's Content-Length and what follows the last record.

The writer is ``workbench.inputs.warc.writer``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import zlib
from collections.abc import AsyncIterator, Generator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from workbench.core.errors import InvalidWARCError
from workbench.core.page import Page
from workbench.pipeline.fetch.charset import (
    ACCEPTED_TYPES,
    choose_encoding,
    media_type,
    sniffs_as_html,
)

__all__ = [
    "SkipReason",
    "SkippedRecord",
    "WarcPage",
    "WarcRef",
    "WarcStats",
    "iter_warc",
    "iter_warcs",
    "warc_chunks",
]


DEFAULT_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # Settings.max_page_bytes' default
_READ_BLOCK = 64 * 1024
# What a broken or hostile file makes warcio raise, besides its own ArchiveLoadFailed.
_READ_ERRORS = (ArchiveLoadFailed, zlib.error, EOFError, OSError, ValueError, AttributeError,
                IndexError, TypeError)


class SkipReason(StrEnum):
    NOT_HTML = "not_html"
    REVISIT = "revisit"
    TRUNCATED = "truncated"
    HTTP_STATUS = "http_status"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    UNDECODABLE = "undecodable"


_ERROR_TYPES = {
    SkipReason.NOT_HTML: "unsupported_content",
    SkipReason.REVISIT: "warc_revisit",
    SkipReason.TRUNCATED: "warc_truncated",
    SkipReason.EMPTY: "empty_response",
    SkipReason.TOO_LARGE: "too_large",
    SkipReason.UNDECODABLE: "warc_undecodable",
}


@dataclass(frozen=True)
class WarcRef:
    """Where a record lives: enough to read it again (``offset`` is of the record's start; in a
    ``.warc.gz``, of its gzip member) and to name it (``record_id``, ``WARC-Record-ID``)."""

    file: str
    offset: int
    record_id: str
    target_uri: str


@dataclass(frozen=True)
class WarcPage:
    """One usable HTTP response from a WARC. ``headers`` as recorded (order and case kept);
    ``body`` with transfer and content encodings undone; ``date`` is the ``WARC-Date``."""

    ref: WarcRef
    status: int
    status_line: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    content_type: str
    date: datetime

    @property
    def url(self) -> str:
        return self.ref.target_uri

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def to_page(self) -> Page:
        """The record as a ``Page`` (``from_store=True``: it came from no network)."""
        raw_type = self.header("content-type")
        return Page(
            url=self.url,
            final_url=self.url,
            status=self.status,
            headers={k.lower(): v for k, v in self.headers},
            content_type=self.content_type,
            body=self.body,
            encoding=choose_encoding(self.body, raw_type),
            fetched_at=self.date,
            from_store=True,
        )

    def __repr__(self) -> str:
        return (f"WarcPage({self.url!r}, {self.status}, {self.content_type}, "
                f"{len(self.body)} bytes, {self.ref.file}@{self.ref.offset})")


@dataclass(frozen=True)
class SkippedRecord:
    """An HTTP response record that is not a usable page, and why."""

    ref: WarcRef
    reason: SkipReason
    detail: str
    status: int | None = None

    @property
    def url(self) -> str:
        return self.ref.target_uri

    @property
    def error_type(self) -> str:
        """The ledger's name for the reason (``http_404`` for an HTTP status)."""
        if self.reason is SkipReason.HTTP_STATUS:
            return f"http_{self.status}"
        return _ERROR_TYPES[self.reason]


@dataclass
class WarcStats:
    """Counts of one read (pass one in to have it filled)."""

    records: int = 0  # every record, of every type
    pages: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # SkipReason -> count
    ignored: int = 0  # warcinfo, request, metadata, non-HTTP responses...


# -- reading --


def iter_warc(
    path: str | Path,
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    stats: WarcStats | None = None,
) -> Generator[WarcPage | SkippedRecord, None, None]:
    """The HTTP response records of one WARC or WARC.gz file (see the module doc)."""
    stats = stats if stats is not None else WarcStats()
    name = str(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in the finally below, across yields
    except OSError as exc:
        raise InvalidWARCError(f"cannot read the WARC file {name}: {exc.strerror}") from exc
    try:
        if not f.read(1):
            raise InvalidWARCError(f"the WARC file {name} is empty")
        f.seek(0)
        records = ArchiveIterator(f, block_size=_READ_BLOCK)
        offset = end = 0
        while True:
            try:
                record = next(records, None)
            except _READ_ERRORS as exc:
                raise _corrupt(name, offset, stats, exc) from exc
            if record is None:
                _check_tail(f, name, end)
                return
            stats.records += 1
            try:
                item = _read_record(record, name, max_payload_bytes)
                offset = records.get_record_offset()
                end = offset + records.get_record_length()
            except _READ_ERRORS as exc:
                raise _corrupt(name, offset, stats, exc) from exc
            if item is None:
                stats.ignored += 1
                continue
            item = _with_offset(item, offset)
            if isinstance(item, WarcPage):
                stats.pages += 1
            else:
                stats.skipped[item.reason] = stats.skipped.get(item.reason, 0) + 1
            yield item
            if isinstance(item, SkippedRecord) and item.detail.startswith("the file ends"):
                return
    finally:
        f.close()


def iter_warcs(
    paths: str | Path | Iterable[str | Path],
    *,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    stats: WarcStats | None = None,
) -> Generator[WarcPage | SkippedRecord, None, None]:
    """``iter_warc`` over several files, one after the other (a single path is accepted)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    for path in paths:
        yield from iter_warc(path, max_payload_bytes=max_payload_bytes, stats=stats)


async def warc_chunks(
    paths: str | Path | Iterable[str | Path],
    *,
    chunk_records: int = 500,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    stats: WarcStats | None = None,
) -> AsyncIterator[list[WarcPage | SkippedRecord]]:
    """``iter_warcs`` in lists of up to ``chunk_records``, each read in a worker thread so the
    event loop keeps running (file reads and gunzipping are blocking)."""
    records = iter_warcs(paths, max_payload_bytes=max_payload_bytes, stats=stats)

    def take() -> list[WarcPage | SkippedRecord]:
        out: list[WarcPage | SkippedRecord] = []
        for rec in records:
            out.append(rec)
            if len(out) >= chunk_records:
                break
        return out

    try:
        while chunk := await asyncio.to_thread(take):
            yield chunk
    finally:
        records.close()


def _read_record(record: Any, name: str, cap: int) -> WarcPage | SkippedRecord | None:
    """One record as a page, a skip, or None (not an HTTP response). Offsets are set later."""
    rec_type = record.rec_type
    uri = record.rec_headers.get_header("WARC-Target-URI") or ""
    if rec_type not in ("response", "revisit") or not uri.startswith(("http://", "https://")):
        return None
    ref = WarcRef(name, -1, record.rec_headers.get_header("WARC-Record-ID") or "", uri)
    http = record.http_headers
    if rec_type == "revisit":
        refers = record.rec_headers.get_header("WARC-Refers-To-Target-URI") or "an earlier record"
        status = _status(http)
        return SkippedRecord(ref, SkipReason.REVISIT, f"a revisit of {refers}", status)
    if http is None:
        return None
    status = _status(http)
    if status is None:
        return SkippedRecord(ref, SkipReason.UNDECODABLE, f"no HTTP status in {http.statusline!r}")
    truncated = record.rec_headers.get_header("WARC-Truncated")
    raw_length = record.raw_stream.limit  # the payload's bytes as recorded, still encoded
    body, over, error = _payload(record, cap)
    encoding = (http.get_header("Content-Encoding") or "").strip().lower()
    if not body and raw_length and encoding not in ("", "identity") and not error:
        error = f"its {encoding} payload ({raw_length:,} bytes) decodes to nothing"
    if record.raw_stream.limit > 0:  # the file ran out before the record's Content-Length
        return SkippedRecord(
            ref, SkipReason.TRUNCATED,
            f"the file ends inside this record ({record.raw_stream.limit:,} bytes missing)", status,
        )
    if truncated:
        return SkippedRecord(
            ref, SkipReason.TRUNCATED, f"the crawler cut the payload (WARC-Truncated: {truncated})",
            status,
        )
    if not 200 <= status < 300:
        return SkippedRecord(ref, SkipReason.HTTP_STATUS, http.statusline, status)
    if error:
        return SkippedRecord(ref, SkipReason.UNDECODABLE, error, status)
    if over:
        return SkippedRecord(
            ref, SkipReason.TOO_LARGE, f"payload over {cap:,} bytes (max_payload_bytes)", status
        )
    raw_type = http.get_header("Content-Type")
    ctype = media_type(raw_type)
    if not body:
        return SkippedRecord(ref, SkipReason.EMPTY, "the payload is empty", status)
    if not ctype and sniffs_as_html(body):
        ctype = "text/html"
    if ctype not in ACCEPTED_TYPES:
        return SkippedRecord(ref, SkipReason.NOT_HTML, f"content type {ctype or 'unknown'}", status)
    return WarcPage(
        ref=ref,
        status=status,
        status_line=f"{http.protocol} {http.statusline}".strip(),
        headers=tuple((str(k), str(v)) for k, v in http.headers),
        body=body,
        content_type=ctype,
        date=_warc_date(record.rec_headers.get_header("WARC-Date")),
    )


def _status(http: Any) -> int | None:
    try:
        return int(http.get_statuscode()) if http is not None else None
    except (TypeError, ValueError):
        return None


def _payload(record: Any, cap: int) -> tuple[bytes, bool, str]:
    """(decoded payload up to ``cap``, whether it was longer, a decoding error). Reads the
    rest of the record's raw bytes, so ``raw_stream.limit`` then tells a cut-off file."""
    buf = bytearray()
    over = False
    error = ""
    try:
        stream = record.content_stream()
        while chunk := stream.read(_READ_BLOCK):
            buf += chunk
            if len(buf) > cap:
                over = True
                break
    except (zlib.error, OSError, ValueError, EOFError) as exc:
        error = f"the payload cannot be decoded: {exc}"
    except Exception as exc:  # brotli and others raise their own types
        error = f"the payload cannot be decoded: {type(exc).__name__}: {exc}"
    while record.raw_stream.read(_READ_BLOCK):
        pass
    return bytes(buf[:cap]), over, error


def _with_offset(item: WarcPage | SkippedRecord, offset: int) -> WarcPage | SkippedRecord:
    ref = WarcRef(item.ref.file, offset, item.ref.record_id, item.ref.target_uri)
    if isinstance(item, WarcPage):
        return WarcPage(ref, item.status, item.status_line, item.headers, item.body,
                        item.content_type, item.date)
    return SkippedRecord(ref, item.reason, item.detail, item.status)


def _warc_date(value: str | None) -> datetime:
    try:
        parsed = datetime.fromisoformat((value or "").strip())
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _check_tail(f: IO[bytes], name: str, end: int) -> None:
    """warcio stops quietly at a last gzip member cut inside its headers: the bytes after the
    last record it read tell (only the blank lines that close a record may follow it)."""
    size = os.fstat(f.fileno()).st_size
    if size <= end:
        return
    f.seek(end)
    tail = f.read(64)
    if size - end > 64 or tail.strip(b"\r\n"):
        raise InvalidWARCError(
            f"the WARC file {name} ends with {size - end:,} bytes after offset {end:,} that are "
            "not a complete record (is the file cut off?)"
        )


def _corrupt(name: str, offset: int, stats: WarcStats, exc: BaseException) -> InvalidWARCError:
    if stats.records == 0:
        return InvalidWARCError(f"{name} is not a WARC file: {_first_line(exc)}")
    return InvalidWARCError(
        f"the WARC file {name} is corrupt after the record at offset {offset:,} "
        f"({stats.records} records read): {_first_line(exc)}"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
