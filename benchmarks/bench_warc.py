"""WARC in and out: which library reads, and how records are written (``workbench/inputs/warc.py``).

    .venv/bin/python -m benchmarks.bench_warc --corpus ../shared/corpus/article-extraction-benchmark
    .venv/bin/python -m benchmarks.bench_warc                   # synthetic ~3 KB articles instead

Builds one WARC of HTTP response records (the corpus pages, ``--copies`` times each, or synthetic
articles), compressed per record and plain, then:

- **read**: warcio's and FastWARC's ``ArchiveIterator`` each walk every response record, parse its
  HTTP headers, read and sha256 the decoded payload and note its offset: what ``submit_warc``
  needs from a reader. Then Workbench's own reader (``iter_warc``) over the library it chose.
  Each run is a fresh subprocess, so its peak RSS is its own; the figure is the best of
  ``--repeat`` runs.
- **write**: warcio's ``WARCWriter`` (gzip per record, zlib level 9, its own digests) against
  Workbench's ``WarcWriter`` (records assembled by hand, gzip per record, level 6, or 1).

The numbers go into ``benchmarks/NOTES.md`` and the docstring of ``workbench/inputs/warc.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

HTML_HEADERS = [("Content-Type", "text/html; charset=utf-8"), ("Server", "bench")]


def _pages(corpus: str | None, copies: int, synthetic: int) -> list[tuple[str, bytes]]:
    from .corpus_site import load_corpus, synthetic_article  # not in the reading subprocesses

    if corpus:
        base = load_corpus(Path(corpus))
        return [(f"{p.url}?copy={c}", p.body) for c in range(copies) for p in base]
    return [(f"http://bench.test/article/{n}", synthetic_article(n)) for n in range(synthetic)]


def _write_warcio(path: Path, pages: list[tuple[str, bytes]], gzip: bool) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=gzip, warc_version="1.1")
        for url, body in pages:
            http = StatusAndHeaders(
                "200 OK", [*HTML_HEADERS, ("Content-Length", str(len(body)))], protocol="HTTP/1.1"
            )
            rec = writer.create_warc_record(
                url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http
            )
            writer.write_record(rec)


def _write_workbench(
    path: Path, pages: list[tuple[str, bytes]], gzip: bool, level: int = 6
) -> None:
    from workbench.core.page import Page
    from workbench.inputs.warc import WarcWriter

    now = datetime.now(UTC)
    with WarcWriter(path, batch_id="bench", gzip=gzip, compresslevel=level) as writer:
        for url, body in pages:
            page = Page(
                url=url,
                final_url=url,
                status=200,
                headers={k.lower(): v for k, v in HTML_HEADERS},
                content_type="text/html",
                body=body,
                encoding="utf-8",
                fetched_at=now,
            )
            writer.write_page(page)


WRITERS: dict[str, Callable[[Path, list[tuple[str, bytes]], bool], None]] = {
    "warcio WARCWriter": _write_warcio,
    "workbench WarcWriter": _write_workbench,
    "workbench WarcWriter, zlib level 1": lambda path, pages, gz: _write_workbench(
        path, pages, gz, level=1
    ),
}


# -- readers (each runs in its own subprocess) --


def _read_warcio(path: Path) -> Iterator[tuple[int, int]]:
    from warcio.archiveiterator import ArchiveIterator

    with path.open("rb") as f:
        it = ArchiveIterator(f)
        for rec in it:
            if rec.rec_type != "response":
                continue
            status = int(rec.http_headers.get_statuscode())
            rec.http_headers.get_header("Content-Type")
            body = rec.content_stream().read()
            hashlib.sha256(body).hexdigest()
            yield status, len(body)
            it.get_record_offset()


def _read_fastwarc(path: Path) -> Iterator[tuple[int, int]]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with path.open("rb") as f:
        for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
            status = rec.http_headers.status_code
            rec.http_headers.get("Content-Type")
            body = rec.reader.read()
            hashlib.sha256(body).hexdigest()
            rec.stream_pos  # noqa: B018 - the offset is part of what a reader must give
            yield status, len(body)


def _read_workbench(path: Path) -> Iterator[tuple[int, int]]:
    from workbench.inputs.warc import WarcPage, iter_warc

    for rec in iter_warc(path):
        if isinstance(rec, WarcPage):
            hashlib.sha256(rec.body).hexdigest()
            yield rec.status, len(rec.body)


READERS: dict[str, Callable[[Path], Iterator[tuple[int, int]]]] = {
    "warcio": _read_warcio,
    "fastwarc": _read_fastwarc,
    "workbench iter_warc": _read_workbench,
}


def _vm_kb(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB. VmHWM (peak RSS) starts afresh at exec, unlike
    ``ru_maxrss``, which a child inherits from the parent it was forked from."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _read_one(reader: str, path: Path) -> dict[str, float]:
    for _ in READERS[reader](path):  # one warm-up record: imports done, buffers made
        break
    before_mb = _vm_kb("VmRSS") / 1024
    started = time.perf_counter()
    records = payload = 0
    for _status, size in READERS[reader](path):
        records += 1
        payload += size
    seconds = time.perf_counter() - started
    peak_mb = _vm_kb("VmHWM") / 1024
    return {"records": records, "payload": payload, "seconds": seconds, "rss_mb": peak_mb,
            "growth_mb": peak_mb - before_mb}


def _measure_read(reader: str, path: Path, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_warc", "--read-one", reader, str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(out))
    best = min(runs, key=lambda r: r["seconds"])
    best["growth_mb"] = max(r["growth_mb"] for r in runs)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_warc")
    p.add_argument("--corpus", help="article-extraction-benchmark directory")
    p.add_argument("--copies", type=int, default=5, help="copies of each corpus page")
    p.add_argument("--synthetic", type=int, default=10_000, help="synthetic pages without corpus")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--read-one", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.read_one:
        print(json.dumps(_read_one(args.read_one[0], Path(args.read_one[1]))))
        return

    pages = _pages(args.corpus, args.copies, args.synthetic)
    payload_mb = sum(len(b) for _, b in pages) / 1e6
    what = f"{len(pages)} pages, {payload_mb:.0f} MB of HTML"
    print(f"# WARC benchmark: {what} ({'corpus' if args.corpus else 'synthetic'})")
    with tempfile.TemporaryDirectory(prefix="bench-warc-") as tmp:
        files = {}
        print("\n| write | compression | records/s | MB/s (payload) | file MB |")
        print("|---|---|---|---|---|")
        for n, (name, write) in enumerate(WRITERS.items()):
            for gz in (True, False):
                if "level" in name and not gz:
                    continue  # the level is of gzip: without it, the same writer again
                path = Path(tmp) / f"{name.split()[0]}-{n}.warc{'.gz' if gz else ''}"
                best = float("inf")
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    write(path, pages, gz)
                    best = min(best, time.perf_counter() - started)
                files[(name, gz)] = path
                print(
                    f"| {name} | {'gzip per record' if gz else 'none'} "
                    f"| {len(pages) / best:,.0f} | {payload_mb / best:,.0f} "
                    f"| {os.path.getsize(path) / 1e6:,.1f} |"
                )
        print("\n| read | file | records/s | MB/s (payload) | peak RSS MB | RSS growth MB |")
        print("|---|---|---|---|---|---|")
        for gz in (True, False):
            path = files[("warcio WARCWriter", gz)]
            for reader in READERS:
                if reader == "fastwarc" and importlib.util.find_spec("fastwarc") is None:
                    print(f"| fastwarc | {path.name} | not installed (pip install fastwarc) |||")
                    continue
                r = _measure_read(reader, path, args.repeat)
                assert r["records"] == len(pages), (reader, r)
                print(
                    f"| {reader} | {path.name} | {r['records'] / r['seconds']:,.0f} "
                    f"| {r['payload'] / 1e6 / r['seconds']:,.0f} | {r['rss_mb']:,.0f} "
                    f"| {r['growth_mb']:,.1f} |"
                )


if __name__ == "__main__":
    main()
