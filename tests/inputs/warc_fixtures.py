"""WARC files built with warcio (the reference implementation) from the bundled sample site."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from workbench.core.page import Page
from workbench.samplesite.site import sample_site_dir

FETCHED_AT = datetime(2024, 3, 1, 12, 30, 15, tzinfo=UTC)


def sample_pages() -> list[tuple[str, bytes]]:
    """(url, html) of every article of the sample site."""
    articles = sorted((sample_site_dir() / "articles").glob("*.html"))
    assert articles, "the sample site has no articles"
    return [(f"http://sample.test/articles/{p.name}", p.read_bytes()) for p in articles]


def sample_page_objects() -> list[Page]:
    return [
        Page(url, url, 200, {"content-type": "text/html; charset=utf-8", "server": "sample"},
             "text/html", body, "utf-8", FETCHED_AT)
        for url, body in sample_pages()
    ]


class Builder:
    """``Builder(gzip=True).response(...).revisit(...).save(path)``: a WARC made by warcio."""

    def __init__(self, *, gzip: bool = True) -> None:
        self.buf = io.BytesIO()
        self.writer = WARCWriter(self.buf, gzip=gzip, warc_version="1.1")

    def warcinfo(self) -> Builder:
        self.writer.write_record(self.writer.create_warcinfo_record("x.warc", {"software": "t"}))
        return self

    def response(
        self,
        url: str,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        *,
        status: str = "200 OK",
        warc_headers: dict[str, str] | None = None,
    ) -> Builder:
        http = StatusAndHeaders(status, headers if headers is not None else
                                [("Content-Type", "text/html; charset=utf-8")],
                                protocol="HTTP/1.1")
        rec = self.writer.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http,
            warc_headers_dict={"WARC-Date": "2024-03-01T12:30:15Z", **(warc_headers or {})},
        )
        self.writer.write_record(rec)
        return self

    def request(self, url: str) -> Builder:
        http = StatusAndHeaders("GET / HTTP/1.1", [("Host", "x")], is_http_request=True)
        self.writer.write_record(self.writer.create_warc_record(
            url, "request", payload=io.BytesIO(b""), length=0, http_headers=http))
        return self

    def revisit(self, url: str) -> Builder:
        rec = self.writer.create_revisit_record(
            url, digest="sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", refers_to_uri=url + "?orig",
            refers_to_date="2024-01-01T00:00:00Z",
            http_headers=StatusAndHeaders("200 OK", [("Content-Type", "text/html")],
                                          protocol="HTTP/1.1"),
        )
        self.writer.write_record(rec)
        return self

    def resource(self, uri: str, body: bytes, content_type: str = "text/dns") -> Builder:
        self.writer.write_record(self.writer.create_warc_record(
            uri, "resource", payload=io.BytesIO(body), length=len(body),
            warc_content_type=content_type))
        return self

    def metadata(self, uri: str) -> Builder:
        self.writer.write_record(self.writer.create_warc_record(
            uri, "metadata", payload=io.BytesIO(b"outlink: x"), length=10,
            warc_content_type="application/warc-fields"))
        return self

    def data(self) -> bytes:
        return self.buf.getvalue()

    def save(self, path: Path) -> Path:
        path.write_bytes(self.data())
        return path


def chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)
