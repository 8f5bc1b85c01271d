"""WARC in and out: warcio-built files read back, records skipped with reasons, the writer read
by warcio and by our reader (same payload sha256), bad files as clear errors, bounded memory."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from tests.inputs.warc_fixtures import (
    FETCHED_AT,
    Builder,
    chunked,
    gzipped,
    sample_page_objects,
    sample_pages,
)
from workbench.core.errors import InvalidWARCError
from workbench.core.page import Page
from workbench.core.version import __version__
from workbench.inputs.warc import (
    SkippedRecord,
    SkipReason,
    WarcPage,
    WarcStats,
    WarcWriter,
    iter_warc,
    iter_warcs,
    warc_chunks,
)

HTML = b"<html><head><title>t</title></head><body><p>Hello archive.</p></body></html>"


@pytest.mark.parametrize("compressed", [True, False])
def test_sample_site_pages_read_back_with_offsets(tmp_path: Path, compressed: bool) -> None:
    pages = sample_pages()
    b = Builder(gzip=compressed).warcinfo()
    for url, body in pages:
        b.request(url).response(url, body)
    path = b.save(tmp_path / ("site.warc.gz" if compressed else "site.warc"))
    stats = WarcStats()
    got = list(iter_warc(path, stats=stats))
    assert all(isinstance(r, WarcPage) for r in got)
    assert [(r.url, r.body) for r in got] == pages
    assert stats.records == 1 + 2 * len(pages) and stats.pages == len(pages)
    assert stats.ignored == 1 + len(pages) and stats.skipped == {}
    first = got[0]
    assert isinstance(first, WarcPage)
    assert first.status == 200 and first.status_line == "HTTP/1.1 200 OK"
    assert first.content_type == "text/html" and first.date == FETCHED_AT
    assert first.ref.file == str(path) and first.ref.record_id.startswith("<urn:uuid:")
    # each offset is where warcio finds that very record
    with path.open("rb") as f:
        for rec in got[:5]:
            f.seek(rec.ref.offset)
            again = next(iter(ArchiveIterator(f)))
            assert again.rec_headers.get_header("WARC-Record-ID") == rec.ref.record_id
    page = first.to_page()
    assert page.url == page.final_url == first.url and page.from_store
    assert page.encoding == "utf-8" and page.headers["content-type"].startswith("text/html")
    assert page.sha256 == first.sha256 == hashlib.sha256(pages[0][1]).hexdigest()


def test_each_kind_of_record_is_read_skipped_or_ignored(tmp_path: Path) -> None:
    big = b"<html><body>" + b"x" * 5000 + b"</body></html>"
    path = (
        Builder()
        .warcinfo()
        .response("http://a.test/plain", HTML)
        .response("http://a.test/gzip", gzipped(HTML),
                  [("Content-Type", "text/html"), ("Content-Encoding", "gzip")])
        .response("http://a.test/chunked", chunked(HTML),
                  [("Content-Type", "text/html"), ("Transfer-Encoding", "chunked")])
        .response("http://a.test/no-type", HTML, [])
        .response("http://a.test/text", b"plain words", [("Content-Type", "text/plain")])
        .revisit("http://a.test/revisit")
        .response("http://a.test/cut", HTML[:20], warc_headers={"WARC-Truncated": "length"})
        .response("http://a.test/image", b"\x89PNG....", [("Content-Type", "image/png")])
        .response("http://a.test/pdf", b"%PDF-1.4", [("Content-Type", "application/pdf")])
        .response("http://a.test/missing", HTML, status="404 Not Found")
        .response("http://a.test/moved", b"", [("Location", "/x")], status="301 Moved Permanently")
        .response("http://a.test/empty", b"")
        .response("http://a.test/big", big)
        .response("http://a.test/bad-gzip", b"\x1f\x8b\x08\x00broken",
                  [("Content-Type", "text/html"), ("Content-Encoding", "gzip")])
        .resource("dns:a.test", b"a.test. 300 IN A 127.0.0.1")
        .metadata("http://a.test/plain")
        .save(tmp_path / "mixed.warc.gz")
    )
    stats = WarcStats()
    got = {r.url: r for r in iter_warc(path, max_payload_bytes=4096, stats=stats)}
    for url in ("plain", "gzip", "chunked", "no-type"):
        page = got[f"http://a.test/{url}"]
        assert isinstance(page, WarcPage), page
        assert page.body == HTML and page.content_type == "text/html"
    assert isinstance(got["http://a.test/text"], WarcPage)
    expected = {
        "revisit": (SkipReason.REVISIT, "warc_revisit"),
        "cut": (SkipReason.TRUNCATED, "warc_truncated"),
        "image": (SkipReason.NOT_HTML, "unsupported_content"),
        "pdf": (SkipReason.NOT_HTML, "unsupported_content"),
        "missing": (SkipReason.HTTP_STATUS, "http_404"),
        "moved": (SkipReason.HTTP_STATUS, "http_301"),
        "empty": (SkipReason.EMPTY, "empty_response"),
        "big": (SkipReason.TOO_LARGE, "too_large"),
        "bad-gzip": (SkipReason.UNDECODABLE, "warc_undecodable"),
    }
    for name, (reason, error_type) in expected.items():
        rec = got[f"http://a.test/{name}"]
        assert isinstance(rec, SkippedRecord), rec
        assert (rec.reason, rec.error_type) == (reason, error_type), (name, rec)
        assert rec.ref.offset > 0 and rec.detail
    assert "WARC-Truncated: length" in got["http://a.test/cut"].detail  # type: ignore[union-attr]
    assert "max_payload_bytes" in got["http://a.test/big"].detail  # type: ignore[union-attr]
    assert stats.pages == 5 and sum(stats.skipped.values()) == 9
    assert stats.ignored == 3  # warcinfo, dns: resource, metadata


@pytest.mark.parametrize(("compressed", "cut"), [(True, 100), (True, 50), (False, 200)])
def test_a_file_cut_inside_a_payload_flags_that_record(
    tmp_path: Path, compressed: bool, cut: int
) -> None:
    b = Builder(gzip=compressed)
    # a payload that does not compress away, so the cut lands inside it whatever the
    # (time-dependent) record headers compress to
    body = HTML + random.Random(7).randbytes(2000).hex().encode()
    for i in range(3):
        b.response(f"http://a.test/{i}", body)
    data = b.data()
    path = tmp_path / "cut.warc"
    path.write_bytes(data[: len(data) - cut])
    got = list(iter_warc(path))
    assert [type(r) for r in got] == [WarcPage, WarcPage, SkippedRecord]
    last = got[-1]
    assert isinstance(last, SkippedRecord) and last.reason is SkipReason.TRUNCATED
    assert "the file ends inside this record" in last.detail


@pytest.mark.parametrize("cut", [200, 600])
def test_a_file_cut_inside_record_headers_is_an_error_after_the_good_records(
    tmp_path: Path, cut: int
) -> None:
    b = Builder()
    for i in range(3):
        b.response(f"http://a.test/{i}", HTML * 50)
    data = b.data()
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[: len(data) - cut])
    got: list[object] = []
    with pytest.raises(InvalidWARCError, match="not a complete record"):
        for rec in iter_warc(path):
            got.append(rec)
    assert len(got) == (2 if cut == 200 else 1)


def test_blank_lines_closing_the_last_record_are_not_a_cut(tmp_path: Path) -> None:
    data = Builder(gzip=False).response("http://a.test/0", HTML).data()
    assert data.endswith(b"\r\n\r\n")
    path = tmp_path / "plain.warc"
    path.write_bytes(data)
    assert len(list(iter_warc(path))) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (HTML, "is not a WARC file"),
        (gzipped(b"just some text\n" * 100), "is not a WARC file"),
        (bytes(range(256)) * 10, "is not a WARC file"),
    ],
)
def test_files_that_are_not_warcs_are_clear_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "input.warc.gz"
    path.write_bytes(content)
    with pytest.raises(InvalidWARCError, match=message) as info:
        list(iter_warc(path))
    assert str(path) in str(info.value)


def test_missing_file_and_corruption_after_good_records(tmp_path: Path) -> None:
    with pytest.raises(InvalidWARCError, match="cannot read the WARC file"):
        list(iter_warc(tmp_path / "nope.warc.gz"))
    good = Builder().response("http://a.test/1", HTML).response("http://a.test/2", HTML).data()
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(good + b"\x1f\x8b\x08\x00this is no gzip member at all" * 20)
    got: list[object] = []
    with pytest.raises(InvalidWARCError, match="is corrupt after the record at offset") as info:
        for rec in iter_warc(path):
            got.append(rec)
    assert len(got) == 2 and "2 records read" in str(info.value)


def test_reading_is_streamed_not_held(tmp_path: Path) -> None:
    noise = random.Random(0).randbytes(150_000).hex().encode()  # incompressible-ish, 300 KB
    body = b"<html><body>" + noise + b"</body></html>"
    b = Builder()
    for i in range(100):
        b.response(f"http://a.test/{i}", body)
    path = b.save(tmp_path / "big.warc.gz")
    assert path.stat().st_size > 1_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_warc(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100
    assert peak < 8 * len(body), peak  # a few records' worth, never the 30 MB of payloads


async def test_warc_chunks_reads_in_a_thread_in_chunks(tmp_path: Path) -> None:
    b = Builder()
    for i in range(7):
        b.response(f"http://a.test/{i}", HTML)
    one, two = b.save(tmp_path / "one.warc.gz"), tmp_path / "two.warc.gz"
    Builder().response("http://b.test/x", HTML).save(two)
    sizes = [len(c) async for c in warc_chunks([one, two], chunk_records=3)]
    assert sizes == [3, 3, 2]
    assert [r.url for r in iter_warcs(two)] == ["http://b.test/x"]


# -- the writer --


def _written(path: Path, pages: list[Page], **kw: object) -> WarcWriter:
    with WarcWriter(path, batch_id="b-1", info={"pipeline": "article"}, **kw) as out:  # type: ignore[arg-type]
        refs = [out.write_page(p) for p in pages]
    assert [r.target_uri for r in refs] == [p.final_url for p in pages]
    return out


@pytest.mark.parametrize("compressed", [True, False])
def test_writer_output_is_read_by_warcio_with_valid_digests(
    tmp_path: Path, compressed: bool
) -> None:
    pages = sample_page_objects()
    path = tmp_path / ("out.warc.gz" if compressed else "out.warc")
    out = _written(path, pages, gzip=compressed)
    assert (out.pages, out.records) == (len(pages), len(pages) + 1)
    with path.open("rb") as f:
        it = ArchiveIterator(f, check_digests=True)  # raises on a digest mismatch
        records = []
        for rec in it:
            payload = rec.content_stream().read()
            records.append((rec, payload))
        assert it.err_count == 0
    info, first_payload = records[0]
    assert info.rec_type == "warcinfo"
    assert info.rec_headers.get_header("WARC-Filename") == path.name
    fields = dict(line.split(": ", 1) for line in first_payload.decode().splitlines())
    assert fields["software"] == f"Workbench/{__version__}"
    assert fields["batch"] == "b-1" and fields["pipeline"] == "article"
    assert fields["format"] == "WARC File Format 1.1"
    for (rec, payload), page in zip(records[1:], pages, strict=True):
        assert rec.rec_type == "response"
        assert rec.rec_headers.protocol == "WARC/1.1"
        assert rec.rec_headers.get_header("WARC-Target-URI") == page.final_url
        assert rec.rec_headers.get_header("WARC-Date") == "2024-03-01T12:30:15Z"
        assert rec.rec_headers.get_header("WARC-Warcinfo-ID") == info.rec_headers.get_header(
            "WARC-Record-ID")
        assert rec.rec_headers.get_header("WARC-Payload-Digest").startswith("sha1:")
        assert rec.http_headers.statusline == "200 OK"
        assert rec.http_headers.get_header("content-type") == "text/html; charset=utf-8"
        assert hashlib.sha256(payload).hexdigest() == page.sha256


def test_round_trip_writer_to_reader_keeps_every_payload(tmp_path: Path) -> None:
    pages = sample_page_objects()
    path = tmp_path / "round.warc.gz"
    _written(path, pages)
    back = list(iter_warc(path))
    assert all(isinstance(r, WarcPage) for r in back)
    assert [(r.url, r.sha256, r.date) for r in back] == [
        (p.final_url, p.sha256, p.fetched_at) for p in pages
    ]
    assert [r.to_page().sha256 for r in back] == [p.sha256 for p in pages]  # type: ignore[union-attr]


def test_writer_drops_body_headers_and_keeps_records_on_one_line(tmp_path: Path) -> None:
    page = Page(
        "http://a.test/start", "http://a.test/final page", 404,
        {"content-type": "text/html", "content-encoding": "gzip", "transfer-encoding": "chunked",
         "content-length": "12", "x-evil": "a\r\nWARC-Type: metadata"},
        "text/html", HTML, "utf-8", datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    buf = io.BytesIO()
    out = WarcWriter(buf, batch_id="b-2", gzip=False)
    ref = out.write_page(page)
    out.write_page(page, status_line="HTTP/1.0 404 Gone Fishing", headers=[("X-Orig", "1")])
    out.close()
    assert ref.target_uri == "http://a.test/final%20page" and ref.file == "<stream>"
    recs, payloads = [], []
    for rec in ArchiveIterator(io.BytesIO(buf.getvalue()), check_digests=True):
        recs.append(rec)
        payloads.append(rec.content_stream().read())
    first, second = recs[1], recs[2]
    assert first.http_headers.statusline == "404 Not Found"
    assert first.http_headers.get_header("content-encoding") is None
    assert first.http_headers.get_header("transfer-encoding") is None
    assert first.http_headers.get_header("Content-Length") == str(len(HTML))
    assert first.http_headers.get_header("x-evil") == "a WARC-Type: metadata"
    assert first.rec_headers.get_header("WARC-Date") == "2024-01-02T03:04:05.678000Z"
    assert payloads[1] == HTML
    assert second.http_headers.protocol == "HTTP/1.0"
    assert second.http_headers.statusline == "404 Gone Fishing"
    assert second.http_headers.get_header("X-Orig") == "1"
    # a 404 read back is flagged, not analysed
    skipped = [r for r in iter_warcs(_save(tmp_path, buf)) if isinstance(r, SkippedRecord)]
    assert [s.error_type for s in skipped] == ["http_404", "http_404"]


def _save(tmp_path: Path, buf: io.BytesIO) -> Path:
    path = tmp_path / "stream.warc"
    path.write_bytes(buf.getvalue())
    return path


def test_corpus_round_trip_through_warcio_and_the_writer(tmp_path: Path) -> None:
    """The article corpus (``WORKBENCH_TEST_CORPUS``) archived by warcio, read, written by the
    writer, read again: every page, every byte."""
    corpus = os.environ.get("WORKBENCH_TEST_CORPUS")
    if not corpus or not (Path(corpus) / "ground-truth.json").is_file():
        pytest.skip("WORKBENCH_TEST_CORPUS is not set (point it at article-extraction-benchmark)")
    truth = json.loads((Path(corpus) / "ground-truth.json").read_text())
    html = Path(corpus) / "html"
    pages = [(truth[i]["url"], gzip.decompress((html / f"{i}.html.gz").read_bytes()))
             for i in sorted(truth)]
    b = Builder().warcinfo()
    for url, body in pages:
        b.response(url, body)
    first = list(iter_warc(b.save(tmp_path / "corpus.warc.gz")))
    assert [(r.url, r.body) for r in first] == pages
    out = tmp_path / "again.warc.gz"
    with WarcWriter(out, batch_id="corpus") as writer:
        writer.write_pages(r.to_page() for r in first if isinstance(r, WarcPage))
    again = list(iter_warc(out))
    assert [(r.url, r.sha256) for r in again] == [(r.url, r.sha256) for r in first]
