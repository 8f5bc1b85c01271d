"""A chunk's rows as lines built by the database and read back by Arrow (``ledger.chunks``:
CSV by ``printf`` on SQLite, JSON on PostgreSQL): every value comes back exactly, whatever
the text holds, and an error's NUL characters are stored as U+FFFD on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import text

from workbench import Workbench
from workbench.core import codec
from workbench.ledger.chunks import rows_table

from .conftest import complete

#: text that breaks naive CSV or JSON: quotes of both kinds, separators, line ends of three
#: kinds, the words a reader takes for null, empty text, escapes, non-ASCII, a long value
NASTY = [
    "it's", "''", "'", "a,b", "line\nbreak", "cr\rline", "crlf\r\nend", "NULL", "null", "",
    'say "hi"', "back\\slash", "\ttab", "héllo wörld ✓ 東京", "\u2028sep", "x" * 5000,
    "'NULL'", " padded ", "=1+1",
]


@pytest.mark.asyncio
async def test_error_texts_read_back_exactly(wb: Workbench) -> None:
    n = len(NASTY)
    batch = await wb.submit([f"http://lines.example.org/{i}" for i in range(n)],
                            pipeline="noop")
    rows = await wb.ledger.item_rows(batch.id)
    # claimed and failed by the ledger's own statements, as a worker does
    async with wb.ledger.engine.begin() as conn:
        await wb.ledger._claim_many(conn, [(r["id"], r["attempts"], "w") for r in rows])
    for r, message in zip(rows, NASTY, strict=True):
        assert await wb.ledger.fail(r["id"], r["attempts"], {
            "error_type": "nasty", "error_message": message, "traceback": message + "\n" + message,
            "retryable": False})
    got = await batch.failures(columns=["url", "error_type", "error_message", "traceback"])
    assert got["error_message"].tolist() == NASTY
    assert got["traceback"].tolist() == [m + "\n" + m for m in NASTY]
    status = await batch.status(columns=["error_message", "retryable", "duration_s"])
    assert status["error_message"].tolist() == NASTY
    assert status["retryable"].tolist() == [False] * n


@pytest.mark.asyncio
async def test_provenance_reads_back_exactly(wb: Workbench) -> None:
    """Provenance of every type through ``result_chunks``: text with quotes and line ends,
    floats to the last digit, nulls, booleans, times."""
    n = 6
    batch = await wb.submit([f"http://prov.example.org/{i}" for i in range(n)], pipeline="noop")
    await complete(wb, batch, lambda i: {"title": NASTY[i]})
    ledger = wb.ledger
    ids = [r["id"] for r in await ledger.item_rows(batch.id)]
    async with ledger.engine.begin() as conn:
        for k, (final, dur) in enumerate([("http://x/it's", 0.1 + 0.2), ("a,'b'\nc", 1 / 3),
                                         ("NULL", None), ("", 1e-300),
                                         (None, 123456789.123456789), ("\r", 2.5)]):
            await conn.execute(text(
                "UPDATE results SET final_url = :f WHERE item_id = :i"),
                {"f": final, "i": ids[k]})
            await conn.execute(text("UPDATE items SET duration_s = :d WHERE id = :i"),
                               {"d": dur, "i": ids[k]})
    chunks = [c async for c in ledger.result_chunks(batch.id, chunk_rows=100, bulk=False)]
    table = pa.concat_tables([c.table for c in chunks])
    assert table.column("final_url").to_pylist() == [
        "http://x/it's", "a,'b'\nc", "NULL", "", None, "\r"]
    assert table.column("duration_s").to_pylist() == [
        0.1 + 0.2, 1 / 3, None, 1e-300, 123456789.123456789, 2.5]
    assert table.column("cached").to_pylist() == [False] * n
    assert table.column("http_status").to_pylist() == [200] * n
    fetched = table.column("fetched_at").to_pylist()
    assert all(isinstance(t, datetime) for t in fetched)
    assert abs(fetched[0].replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() < 600
    assert [codec.loads(t) for t in table.column("timings").to_pylist()] == [{"total": 0.01}] * n


def test_rows_table_restores_item_order() -> None:
    schema = pa.schema([("item_id", pa.int64()), ("url", pa.string())])
    table, order = rows_table("3,'c'\n1,'a'\n2,'b'", schema, sqlite=True)
    assert table.column("item_id").to_pylist() == [1, 2, 3]
    assert table.column("url").to_pylist() == ["a", "b", "c"]
    assert order == [1, 2, 0]
    table, order = rows_table('{"item_id": 1, "url": "a"}\n{"item_id": 2, "url": null}',
                              schema, sqlite=False)
    assert table.column("url").to_pylist() == ["a", None] and order is None


@pytest.mark.asyncio
async def test_an_errors_nul_characters_are_stored_as_replacement(wb: Workbench) -> None:
    """PostgreSQL's text cannot hold NUL: a page whose bytes reach an exception's message
    must not make the failure unwritable (and the item stuck); on SQLite the same rule."""
    batch = await wb.submit(["http://nul.example.org/a"], pipeline="noop")
    [row] = await wb.ledger.item_rows(batch.id)
    async with wb.ledger.engine.begin() as conn:
        await wb.ledger._claim_many(conn, [(row["id"], row["attempts"], "w")])
    error: dict[str, Any] = {"error_type": "bad", "error_message": "before\x00after",
                             "traceback": "tb\x00", "retryable": False}
    assert await wb.ledger.fail(row["id"], row["attempts"], error)
    got = await batch.failures(columns=["error_message", "traceback"])
    assert got["error_message"].tolist() == ["before\ufffdafter"]
    assert got["traceback"].tolist() == ["tb\ufffd"]
    assert error["error_message"] == "before\x00after"  # the caller's dict is left alone
