"""The page store: zstd blobs written in one batch per group commit, zlib blobs of older
versions still readable, one blob per distinct body however many snapshots share it."""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, insert, select

from workbench import Workbench
from workbench.core.page import Page
from workbench.ledger.models import PageBlobRow, SnapshotRow
from workbench.ledger.pages import INLINE_MAX_BYTES, PageStore, compress_page, decompress_page


def _page(url: str, body: bytes) -> Page:
    return Page(url=url, final_url=url, status=200, headers={"x-a": "1"},
                content_type="text/html", body=body, encoding="utf-8",
                fetched_at=datetime.now(UTC))


def test_codecs() -> None:
    body = b"<html><p>" + b"words " * 5000 + b"</p></html>"
    blob = compress_page(body)
    assert blob[:4] == b"\x28\xb5\x2f\xfd" and len(blob) < len(body) // 10
    assert decompress_page(blob) == body
    assert decompress_page(zlib.compress(body, 6)) == body  # blobs stored before zstd
    assert decompress_page(compress_page(b"")) == b""


async def test_concurrent_saves_share_blobs_and_load_back(
    make_wb: Callable[..., Workbench],
) -> None:
    ledger = await make_wb().open_ledger()
    pages = PageStore(ledger)
    bodies = [f"<p>page {i % 5}</p>".encode() for i in range(40)]
    await asyncio.gather(*(pages.save(_page(f"http://a.org/{i}", b), f"http://a.org/{i}")
                           for i, b in enumerate(bodies)))
    await pages.save(_page("http://a.org/0", b"<p>newer</p>"), "http://a.org/0")
    async with ledger.read_engine.connect() as conn:
        blobs = (await conn.execute(select(func.count()).select_from(PageBlobRow))).scalar_one()
        snaps = (await conn.execute(select(func.count()).select_from(SnapshotRow))).scalar_one()
    assert (blobs, snaps) == (6, 41)
    for i in (1, 7, 39):
        page = await pages.load(f"http://a.org/{i}")
        assert page is not None and page.body == bodies[i] and page.headers == {"x-a": "1"}
        assert page.from_store and page.text == bodies[i].decode()
    newest = await pages.load("http://a.org/0")
    assert newest is not None and newest.body == b"<p>newer</p>"


async def test_zlib_blob_of_an_older_version_loads(make_wb: Callable[..., Workbench]) -> None:
    ledger = await make_wb().open_ledger()
    body = b"<p>stored by an older version</p>"
    page = _page("http://old.org/", body)
    async with ledger.engine.begin() as conn:
        await conn.execute(insert(PageBlobRow).values(
            sha256=page.sha256, body=zlib.compress(body, 6), size=len(body),
            stored_at=page.fetched_at))
        await conn.execute(insert(SnapshotRow).values(
            normalized_url="http://old.org/", url=page.url, final_url=page.url, http_status=200,
            content_type="text/html", encoding="utf-8", headers={}, sha256=page.sha256,
            fetched_at=page.fetched_at))
    loaded = await PageStore(ledger).load("http://old.org/")
    assert loaded is not None and loaded.body == body


async def test_large_body_compressed_off_the_loop_round_trips(
    make_wb: Callable[..., Workbench],
) -> None:
    pages = PageStore(await make_wb().open_ledger())
    body = os.urandom(INLINE_MAX_BYTES + 1)  # incompressible: thread both ways
    await pages.save(_page("http://big.org/", body), "http://big.org/")
    loaded = await pages.load("http://big.org/")
    assert loaded is not None and loaded.body == body


async def test_loads_of_one_loop_round_share_one_read(make_wb: Callable[..., Workbench]) -> None:
    # the items a group commit just claimed look up their pages together: on SQLite one thread
    # hand-off for all (benchmarks/NOTES.md, session 11); each still gets its own page or None
    ledger = await make_wb().open_ledger()
    pages = PageStore(ledger)
    for i in range(0, 30, 3):
        await pages.save(_page(f"http://r.org/{i}", f"<p>{i}</p>".encode()), f"http://r.org/{i}")
    reader = ledger.direct_reader
    reads: list[int] = []
    if reader is not None:  # SQLite: count the reader's thread hand-offs
        read = reader.read

        async def counted(fn, arg, doing):  # type: ignore[no-untyped-def]
            reads.append(len(arg))
            return await read(fn, arg, doing)

        reader.read = counted  # type: ignore[method-assign]
    got = await asyncio.gather(*(pages.load(f"http://r.org/{i}") for i in range(30)))
    for i, page in enumerate(got):
        if i % 3:
            assert page is None
        else:
            assert page is not None and page.body == f"<p>{i}</p>".encode()
    one = await pages.load("http://r.org/3")
    assert one is not None and one.body == b"<p>3</p>"
    if reader is not None:
        assert reads == [30, 1]

    # a caller cancelled while its round's read runs leaves the others their pages
    waiting = [asyncio.ensure_future(pages.load(f"http://r.org/{i}")) for i in (0, 6, 9)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [p.body for p in (done[0], done[2])] == [b"<p>0</p>", b"<p>9</p>"]  # type: ignore[union-attr]
