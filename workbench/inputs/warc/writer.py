"""Writing WARC/1.1: the pages a batch analysed, as an archive other tools read.

::

    with WarcWriter("batch.warc.gz", batch_id=batch.id, info={"pipeline": "article"}) as out:
        out.write_page(page)                         # -> WarcRef(file, offset, record_id, ...)

A ``warcinfo`` record first (Workbench's version, the batch, the format), then one ``response``
record per page: the HTTP status line and headers, ``WARC-Target-URI`` (the final URL),
``WARC-Date`` = the fetch time, ``WARC-Payload-Digest`` and ``WARC-Block-Digest`` (SHA-1,
base32, as warcio, pywb and CDX indexers expect). The body stored in the ledger is already
decoded, so ``Content-Encoding``/``Transfer-Encoding`` are dropped and ``Content-Length`` set to
match it: reading the record back gives the same bytes, the same ``sha256``. Header values
are kept on one line (a stored CR or LF would otherwise start a forged header).

Records are assembled here rather than by warcio's ``WARCWriter``, which always compresses at
zlib level 9. Measured (``benchmarks/bench_warc.py``, gzip per record, records/s, same loaded
machine and runs as the reader's figures):

==============================  ================  ===============  ===================
records/s                       warcio (level 9)  here (level 6)   here (level 1)
==============================  ================  ===============  ===================
905 corpus pages (174 KB)       59                86               188 (file +19 %)
10,000 synthetic pages (2 KB)   2,152             2,863            3,654
==============================  ================  ===============  ===================

Compression is nearly all of the cost: ``compresslevel=1`` doubles the rate on real pages for
a fifth more disk; without gzip the corpus writes at ~770 records/s. The output is checked by
warcio itself (``check_digests=True``) in ``tests/inputs/test_warc.py``.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import IO

from workbench.core.page import Page
from workbench.core.version import __version__
from workbench.inputs.warc.reader import WarcRef

__all__ = ["WarcWriter"]


class WarcWriter:
    """WARC/1.1 out: a ``warcinfo`` record, then one ``response`` record per page.

    ``dest`` is a path (created or overwritten) or a binary stream (left open). ``info`` adds
    fields to the warcinfo record (``pipeline``, ``batch-name``, ...). ``gzip`` compresses each
    record as its own member, so any record can be read from its offset alone.
    """

    def __init__(
        self,
        dest: str | Path | IO[bytes],
        *,
        batch_id: str,
        info: Mapping[str, str] | None = None,
        gzip: bool = True,
        compresslevel: int = 6,
    ) -> None:
        if isinstance(dest, str | Path):
            self.file = str(dest)
            self._out: IO[bytes] = open(dest, "wb")  # noqa: SIM115 - closed by close()
            self._owned = True
        else:
            self.file = str(getattr(dest, "name", "<stream>"))
            self._out, self._owned = dest, False
        self._gzip = gzip
        self._level = compresslevel
        self._offset = self._out.tell() if self._out.seekable() else 0
        self.pages = 0  # response records written
        self.records = 0  # every record, the warcinfo one included
        self.warcinfo_id = _record_id()
        fields = {
            "software": f"Workbench/{__version__}",
            "format": "WARC File Format 1.1",
            "conformsTo": "https://iipc.github.io/warc-specifications/specifications/"
            "warc-format/warc-1.1/",
            "batch": batch_id,
            **(info or {}),
        }
        body = "".join(f"{_clean(k)}: {_clean(v)}\r\n" for k, v in fields.items()).encode()
        headers = [
            ("WARC-Type", "warcinfo"),
            ("WARC-Record-ID", self.warcinfo_id),
            ("WARC-Date", _iso(datetime.now(UTC))),
        ]
        if self._owned:
            headers.append(("WARC-Filename", Path(self.file).name))
        self._write(headers, "application/warc-fields", body)

    def write_page(
        self,
        page: Page,
        *,
        status_line: str | None = None,
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> WarcRef:
        """One response record for ``page`` (its final URL, fetch time, body and headers).

        ``status_line`` and ``headers`` override what a stored page keeps (its status code and
        lowercased header names) when the caller has the originals.
        """
        line = status_line or _status_line(page.status)
        kept = [
            (k, v)
            for k, v in (headers if headers is not None else page.headers.items())
            if k.lower() not in _BODY_HEADERS
        ]
        kept.append(("Content-Length", str(len(page.body))))
        head = "".join(f"{_clean(k)}: {_clean(v)}\r\n" for k, v in kept)
        http_head = f"{_clean(line)}\r\n{head}\r\n".encode("utf-8", "surrogateescape")
        record_id = _record_id()
        target = _clean(page.final_url or page.url).replace(" ", "%20")
        offset = self._write(
            [
                ("WARC-Type", "response"),
                ("WARC-Record-ID", record_id),
                ("WARC-Date", _iso(page.fetched_at)),
                ("WARC-Target-URI", target),
                ("WARC-Warcinfo-ID", self.warcinfo_id),
                ("WARC-Payload-Digest", _sha1(page.body)),
            ],
            "application/http;msgtype=response",
            http_head,
            page.body,
        )
        self.pages += 1
        return WarcRef(self.file, offset, record_id, target)

    def write_pages(self, pages: Iterable[Page]) -> int:
        """``write_page`` for each; returns how many were written."""
        before = self.pages
        for page in pages:
            self.write_page(page)
        return self.pages - before

    def _write(
        self, headers: list[tuple[str, str]], content_type: str, block: bytes, payload: bytes = b""
    ) -> int:
        digest = hashlib.sha1(block)
        digest.update(payload)
        headers += [
            ("WARC-Block-Digest", "sha1:" + base64.b32encode(digest.digest()).decode()),
            ("Content-Type", content_type),
            ("Content-Length", str(len(block) + len(payload))),
        ]
        head = "WARC/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        parts = [head.encode("utf-8"), block, payload, b"\r\n\r\n"]
        if self._gzip:
            gz = zlib.compressobj(self._level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            parts = [b"".join(gz.compress(p) for p in parts) + gz.flush()]
        offset = self._offset
        for part in parts:
            self._out.write(part)
            self._offset += len(part)
        self.records += 1
        return offset

    def close(self) -> None:
        self._out.flush()
        if self._owned:
            self._out.close()

    def __enter__(self) -> WarcWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WarcWriter({self.file!r}, {self.pages} pages)"


#: headers that describe the body as sent; the stored body is decoded, so they would lie
_BODY_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


def _status_line(status: int) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return f"HTTP/1.1 {status} {reason}".rstrip()


def _record_id() -> str:
    return f"<urn:uuid:{uuid.uuid4()}>"


def _iso(when: datetime) -> str:
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if when.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return when.strftime(fmt)


def _sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _clean(value: object) -> str:
    """A header name or value on one line (a stored CR or LF must not start a new header)."""
    return " ".join(str(value).split("\r\n")).replace("\r", " ").replace("\n", " ")
