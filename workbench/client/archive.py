"""Web archives in and out: ``wb.submit_warc(paths)`` and ``batch.export_warc(path)``.

**In.** ``submit_warc`` streams the HTTP response records of WARC/WARC.gz files
(``workbench.inputs.warc``, warcio: see that module for why, measured), stores each usable page
in the page store (``ledger.pages``, with ``fetched_at`` = the record's ``WARC-Date``) and makes
one item per record in a batch that analyses stored pages (as ``batch.rerun`` does): the worker's
``ctx.fetch`` reads the page from the store and **makes no network request**. Each item carries
its provenance as columns (``client.carried``): ``warc_file``, ``warc_record_id`` and
``warc_offset`` (of the record, compressed when the file is), so every row of ``status()``,
``results()`` and ``failures()`` points back into the archive. Records that cannot become a page
(not HTML, revisits, truncated, non-2xx, too large) are not items: they are listed in
``batch.invalid`` as ``(record number, url, "<error_type>: <detail>")`` and counted in the
batch's ``invalid``. A file that is not a WARC (or breaks off) raises ``InvalidWARCError``
before anything is recorded (pages stored by then are only blobs no batch points at; the
retention cleanup removes them). Memory follows ``chunk_records``, not the file. The result cache
is not used: an archived page is analysed even if a live fetch of its URL was analysed before.

The worker reads the newest stored page of an item's URL (by fetch time), so an archive's
captures of one URL make one item, the latest capture's (on equal ``WARC-Date``, the later
record); the others are listed in ``batch.invalid`` as ``duplicate_capture``. Limit: a URL
fetched live (or archived) with a later date than the archive's capture is served that later
page instead; the result's ``content_sha256`` says which page was analysed.

**Out.** ``export_warc`` writes the pages the batch's done items analysed
(``ledger.archive.result_pages``: the snapshot matching each result's ``content_sha256``) as
WARC/1.1, gzip per record: a ``warcinfo`` record naming Workbench's version and the batch, then
one ``response`` record per page (status line, stored headers, ``WARC-Target-URI``,
``WARC-Date`` = the fetch time, payload digests). ``submit_warc`` of the file analyses the same
bytes (same ``content_sha256``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from workbench.core import codec
from workbench.core.errors import EmptyBatchError, InvalidInputError
from workbench.core.logs import get_logger
from workbench.core.urls import normalize_url
from workbench.inputs.tables import CarriedColumn
from workbench.inputs.warc.reader import WarcPage, WarcStats, warc_chunks
from workbench.inputs.warc.writer import WarcWriter
from workbench.ledger.archive import ArchiveStats, result_pages
from workbench.ledger.pages import PageStore
from workbench.ledger.store import Ledger, NewBatch
from workbench.pipeline.registry import get_pipeline

log = get_logger("workbench.client.archive")

#: the provenance columns every item of a ``submit_warc`` batch carries
WARC_COLUMNS = [
    CarriedColumn("warc_file", "warc_file", "str"),
    CarriedColumn("warc_record_id", "warc_record_id", "str"),
    CarriedColumn("warc_offset", "warc_offset", "int64"),
]
_SAVE_CONCURRENCY = 64


def warc_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    try:
        out = [Path(p) for p in paths]
    except TypeError:
        raise InvalidInputError(
            "submit_warc takes a path or a list of paths of WARC/WARC.gz files"
        ) from None
    if not out:
        raise InvalidInputError("submit_warc: no WARC file given")
    return out


@dataclass
class WarcSubmission:
    """What ``Workbench.submit_warc`` hands to ``create_batch``: the batch, its entries (one per
    usable record), their carried provenance (JSON), and the skipped records."""

    spec: NewBatch
    entries: list[tuple[int, str, str]]
    carried: list[str | None]
    skipped: list[tuple[int, object, str]]
    records: int


async def read_warc(
    ledger: Ledger,
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    pipeline: str = "article",
    params: dict[str, Any] | None = None,
    name: str | None = None,
    notify: str | None = None,
    chunk_records: int = 500,
    max_payload_bytes: int | None = None,
) -> WarcSubmission:
    """Store the archive's pages and prepare its batch (see the module doc)."""
    spec = get_pipeline(pipeline)
    clean = codec.check_json_object(params)  # InvalidParamsError naming the keys
    spec.check_params(clean)
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise InvalidInputError("name must be a string of at most 200 characters")
    files = warc_paths(paths)
    store = PageStore(ledger)
    entries: list[tuple[int, str, str]] = []
    carried: list[str | None] = []
    skipped: list[tuple[int, object, str]] = []
    stats = WarcStats()
    position = 0
    kw: dict[str, Any] = {"chunk_records": chunk_records, "stats": stats}
    if max_payload_bytes is not None:
        kw["max_payload_bytes"] = max_payload_bytes
    limit = asyncio.Semaphore(_SAVE_CONCURRENCY)
    latest: dict[str, tuple[int, WarcPage]] = {}  # normalized URL -> (entry, its capture)

    async def save(page: Any, norm: str) -> None:
        async with limit:
            await store.save(page, norm)

    async for chunk in warc_chunks(files, **kw):
        saves = []
        for rec in chunk:
            ref = rec.ref
            if isinstance(rec, WarcPage):
                try:
                    norm = normalize_url(rec.url)
                except ValueError as exc:
                    skipped.append((position, rec.url, f"invalid_url: {exc}"))
                else:
                    provenance = json.dumps({"warc_file": ref.file,
                                             "warc_record_id": ref.record_id,
                                             "warc_offset": ref.offset})
                    seen = latest.get(norm)
                    if seen is None:
                        latest[norm] = (len(entries), rec)
                        entries.append((position, rec.url, norm))
                        carried.append(provenance)
                        saves.append(save(rec.to_page(), norm))
                    elif rec.date >= seen[1].date:  # this capture is the one the store serves
                        index, older = seen
                        skipped.append((entries[index][0], older.url,
                                        _duplicate(older, rec)))
                        latest[norm] = (index, rec)
                        entries[index] = (position, rec.url, norm)
                        carried[index] = provenance
                        saves.append(save(rec.to_page(), norm))
                    else:
                        skipped.append((position, rec.url,
                                        _duplicate(rec, seen[1])))
            else:
                skipped.append((position, rec.url, f"{rec.error_type}: {rec.detail}"))
            position += 1
        await asyncio.gather(*saves)
    if not entries:
        raise EmptyBatchError(
            f"nothing to submit: no usable HTML response in {', '.join(map(str, files))} "
            f"({stats.records} records, {len(skipped)} responses skipped)"
        )
    label = f"warc {files[0].name}" + (f" +{len(files) - 1}" if len(files) > 1 else "")
    return WarcSubmission(
        NewBatch(
            pipeline=spec.name,
            pipeline_version=spec.version,
            params=clean,
            params_hash=codec.params_hash(clean),
            name=name or label,
            notify=notify,
            invalid=len(skipped),
            use_stored_pages=True,
            carried=[[c.name, c.stored, c.dtype] for c in WARC_COLUMNS],
        ),
        entries, carried, skipped, stats.records,
    )


def _duplicate(dropped: WarcPage, kept: WarcPage) -> str:
    return (f"duplicate_capture: {dropped.url} is captured again at offset {kept.ref.offset} "
            f"of {kept.ref.file} ({kept.date:%Y-%m-%d %H:%M:%S}Z), the capture analysed")


async def export_warc(
    ledger: Ledger, batch_id: str, dest: str | os.PathLike[str] | IO[bytes], *,
    info: dict[str, str] | None = None, chunk_rows: int = 500,
) -> int:
    """See the module doc. Returns the number of response records written."""
    stats = ArchiveStats()
    target: str | IO[bytes] = os.fspath(dest) if isinstance(dest, str | os.PathLike) else dest
    writer = await asyncio.to_thread(WarcWriter, target, batch_id=batch_id, info=info)
    try:
        pages_read = result_pages(ledger, batch_id, chunk_rows=chunk_rows, stats=stats)
        async with aclosing(pages_read) as chunks:
            async for pages in chunks:
                await asyncio.to_thread(writer.write_pages, pages)
    finally:
        await asyncio.to_thread(writer.close)
    if stats.missing:
        log.warning("pages no longer stored were left out of the WARC", batch=batch_id,
                    missing=len(stats.missing))
    return writer.pages
