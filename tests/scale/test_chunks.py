"""Chunked reading: item order, the same columns and dtypes in every chunk however the fields
come and go, the sync facade, and memory that follows the chunk, not the batch."""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench import Workbench
from workbench.client import frames

from .conftest import PeakRSS, article, fill


def _evolving(i: int) -> dict[str, Any]:
    """Fields that appear late, change kind, or go missing, chunk by chunk."""
    d: dict[str, Any] = {"n": i, "shifty": i if i < 20 else f"s{i}", "flag": True}
    if i >= 25:
        d["late"] = i * 1.5
    if i % 10 != 3:
        d["gappy"] = i
    if i == 36:
        d["flag"] = None
    return d


async def test_chunks_share_columns_and_dtypes(wb: Workbench) -> None:
    batch = await fill(wb, 37, _evolving)
    chunks = [df async for df in batch.iter_results(chunk_rows=10)]
    assert [len(c) for c in chunks] == [10, 10, 10, 7]
    first = chunks[0]
    for chunk in chunks:
        assert list(chunk.columns) == list(first.columns)
        assert chunk.dtypes.to_dict() == first.dtypes.to_dict()
    assert first["shifty"].dtype == object and first["late"].dtype == "float64"
    assert first["gappy"].dtype == "float64" and first["flag"].dtype == object
    whole = pd.concat(chunks, ignore_index=True)
    assert whole["item_id"].is_monotonic_increasing
    pd.testing.assert_frame_equal(whole, await batch.results())


async def test_status_and_failures_in_chunks(wb: Workbench) -> None:
    batch = await fill(wb, 25, article, failed=6)
    parts = [df async for df in batch.iter_status(chunk_rows=10)]
    assert [len(p) for p in parts] == [10, 10, 5]
    assert all(p.dtypes.to_dict() == parts[0].dtypes.to_dict() for p in parts)
    # the whole frame gives a column with no value at all the dtype pandas infers for it
    whole = frames.finish_whole(pd.concat(parts, ignore_index=True), frames.NULLABLE_STRINGS)
    pd.testing.assert_frame_equal(whole, await batch.status())
    fails = [df async for df in batch.iter_failures(chunk_rows=4, columns=["error_type"])]
    assert [len(f) for f in fails] == [4, 2]
    assert list(fails[0].columns) == ["item_id", "error_type"]


async def test_status_reads_past_a_gap_in_the_batch_ids(wb: Workbench) -> None:
    """A batch's ids are consecutive (``_reserve_ids``), so on SQLite every-status reads go by
    id span; a span holding no item (were ids ever missing) is skipped, not taken for the
    end of the batch."""
    from sqlalchemy import text

    batch = await fill(wb, 30, article, failed=3)
    whole = await batch.status()
    ids = list(whole["item_id"])
    gone = ids[8:21]  # wider than a chunk: one span holds nothing at all
    listed = ",".join(map(str, gone))
    async with wb.ledger.engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM results WHERE item_id IN ({listed})"))
        await conn.execute(text(f"DELETE FROM items WHERE id IN ({listed})"))
    parts = [df async for df in batch.iter_status(chunk_rows=5)]
    left = pd.concat(parts, ignore_index=True)
    assert list(left["item_id"]) == [i for i in ids if i not in gone]
    assert all(len(p) for p in parts)
    assert list((await batch.status())["item_id"]) == list(left["item_id"])


async def test_sync_facade_iterates_and_exports(backend_settings: dict[str, Any],
                                                tmp_path: Any) -> None:
    from workbench import SyncWorkbench

    awb = Workbench(**backend_settings)
    try:
        batch_id = (await fill(awb, 12, article)).id
    finally:
        await awb.close()
    with SyncWorkbench(**backend_settings) as wb:
        batch = wb.get_batch(batch_id)
        sizes = [len(df) for df in batch.iter_results(chunk_rows=5, columns=["title"])]
        assert sizes == [5, 5, 2]
        assert batch.to_parquet(tmp_path / "out.parquet") == 12
        assert len(pd.read_parquet(tmp_path / "out.parquet")) == 12


async def test_memory_follows_the_chunk_not_the_batch(wb: Workbench, tmp_path: Any) -> None:
    """iter_results and to_parquet over 10k and 40k results (~3.3 KB each) grow the RSS by
    about the same amount (a chunk's worth, 20-40 MB here): a 4x larger batch must not need 4x
    the memory (the 30k more results hold ~100 MB of text). 10k/40k rather than 20k/80k: the
    filling took most of the 300 s limit on PostgreSQL on a loaded machine (5 s for each
    5,000-item transaction), and rows of 3 KB keep the difference well above the margin. Each
    figure is the least of three reads (below)."""
    small = await fill(wb, 10_000, lambda i: article(i, 3000))
    big = await fill(wb, 40_000, lambda i: article(i, 3000))
    probe = PeakRSS()

    async def iterate(batch: Any) -> None:
        rows = 0
        async for df in batch.iter_results(chunk_rows=5_000):
            rows += len(df)
        assert rows == batch.total

    async def export(batch: Any) -> None:
        assert await batch.to_parquet(tmp_path / f"{batch.id}.parquet", chunk_rows=5_000) \
            == batch.total

    async def least(work: Any, batch: Any) -> float:
        # the least of three: one read's peak moves by tens of MB with the allocator's state
        # (a 40k read measured 8-51 MB over the same run, with no growth from chunk to chunk);
        # a read that held the batch would show its growth in every one
        return min([await probe.measure(lambda: work(batch)) for _ in range(3)])

    for work in (iterate, export):
        await probe.measure(lambda w=work: w(small))  # warm up: imports, pools, arenas
        grew_small = await least(work, small)
        grew_big = await least(work, big)
        # unbounded, the 30k more results (~100 MB of text) would show in full
        assert grew_big - grew_small < 50, (work.__name__, grew_small, grew_big)


async def test_chunks_follow_their_size(wb: Workbench, monkeypatch: Any) -> None:
    """A chunk of results stops at about ``CHUNK_BYTES`` of stored JSON (at least one row):
    every row comes back, in order, whatever the sizes. A read the database finds too big (its
    1 GB limit for one value) is told apart from other errors, to be asked again for fewer
    rows."""
    from workbench.core.errors import LedgerError
    from workbench.ledger import keyset, reads

    batch = await fill(wb, 60, lambda i: article(i, 3000 if i % 5 else 30_000))
    whole = await batch.results()
    monkeypatch.setattr(reads, "CHUNK_BYTES", 20_000)
    monkeypatch.setattr(keyset, "FIRST_ROWS", 4)
    sizes = [len(c) async for c in wb.ledger.result_chunks(batch.id, chunk_rows=50, bulk=True)]
    assert sum(sizes) == 60 and sizes[0] == 4 and max(sizes) < 12, sizes
    chunks = [df async for df in batch.iter_results(chunk_rows=50)]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    assert keyset._too_big(LedgerError("ledger error while reading: string or blob too big"))
    assert keyset._too_big(LedgerError("invalid memory alloc request size 1073741824 "
                                      "(cannot enlarge string buffer)"))
    assert not keyset._too_big(LedgerError("ledger error while reading: no such table"))


async def test_leaving_a_chunked_read_early_leaves_no_connection_busy(wb: Workbench) -> None:
    """A loop that breaks out of iter_results lets the read asked for ahead finish and return
    its connection (it was cancelled mid-query: aiosqlite logged an error resetting it, and a
    PostgreSQL session could stay idle in a transaction)."""
    import asyncio

    batch = await fill(wb, 300, article)
    pool = wb.ledger.read_engine.pool
    for _ in range(5):
        async for df in batch.iter_results(chunk_rows=50):
            assert len(df) == 50
            break
        # the loop's generator is closed by the event loop (aclose) once dropped
        for _ in range(200):
            if not pool.checkedout():
                break
            await asyncio.sleep(0.05)
        assert pool.checkedout() == 0, pool.status()
    assert len(await batch.results()) == 300


async def test_closing_a_chunked_read_closes_the_whole_chain_at_once(wb: Workbench) -> None:
    """``aclose()`` of an ``iter_results``/``iter_status``/``iter_failures`` generator closes
    every read under it in the same task: when it returns, the read asked for ahead has ended
    and its connection is back in the pool (the inner reads were left to the garbage
    collector, each closed later by a task of its own)."""
    from contextlib import aclosing

    batch = await fill(wb, 300, article)
    pool = wb.ledger.read_engine.pool
    for read in (lambda: batch.iter_results(chunk_rows=50),
                 lambda: batch.iter_status(chunk_rows=50)):
        async with aclosing(read()) as chunks:
            async for df in chunks:
                assert len(df) == 50
                break
        assert pool.checkedout() == 0, pool.status()
