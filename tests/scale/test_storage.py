"""How results are stored (small fields apart from bulky ones, shapes), the migration of an
existing ledger, projection that never reads the texts, and results() as it always was."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event, text

from workbench import Workbench
from workbench.core import codec
from workbench.core.errors import InvalidInputError
from workbench.ledger.shapes import BULKY_CHARS, joined_data, kind_of, store_result

from . import legacy
from .conftest import article, fill


# ------------------------------------------------------------------ the split (pure)
def test_small_results_are_stored_as_they_are() -> None:
    data = codec.dumps({"title": "t", "n": 1, "tags": ["a"]})
    stored = store_result(data)
    assert stored.data == data and stored.bulk is None
    assert json.loads(stored.shape) == [["title", "s", 0], ["n", "i", 0], ["tags", "as", 0]]


def test_bulky_values_go_apart_and_keep_their_place() -> None:
    long = "x" * (BULKY_CHARS + 1)
    value = {"title": "t", "text": long, "links": ["u"] * 300, "n": 2.5, "ok": True}
    stored = store_result(codec.dumps(value))
    assert json.loads(stored.data) == {"title": "t", "text": None, "links": None, "n": 2.5,
                                       "ok": True}
    assert json.loads(stored.bulk or "") == {"text": long, "links": ["u"] * 300}
    assert [f[:3] for f in json.loads(stored.shape)] == [
        ["title", "s", 0], ["text", "s", 1], ["links", "as", 1], ["n", "f", 0], ["ok", "b", 0]]
    assert json.loads(joined_data(stored.data, stored.bulk)) == value
    assert list(json.loads(joined_data(stored.data, stored.bulk))) == list(value)  # order


def test_kinds() -> None:
    arr = codec.loads(codec.dumps({"v": np.zeros(3, dtype=np.float32)}))["v"]
    enc = json.loads(codec.dumps({"v": np.zeros((2, 2), dtype=np.float32)}))["v"]
    assert [kind_of(v) for v in (None, True, 1, 1.5, "s", {"a": 1}, [], ["a"], [1], [1, 2.5],
                                 [True], [1, "a"], [None])] == [
        "n", "b", "i", "f", "s", "o", "a", "as", "ai", "af", "ab", "ax", "ax"]
    assert kind_of(json.loads(codec.dumps({"v": arr}))["v"]) == "vfloat32"
    assert kind_of(enc) == "vfloat32/2"


# ------------------------------------------------------------------ results() as it was
def _varied(i: int) -> Any:
    """Results whose fields come and go and change kind: the dtypes pandas infers must not."""
    d: dict[str, Any] = {"title": f"t{i}", "n": i, "maybe_int": i if i % 3 else None,
                         "flag": i % 2 == 0, "maybe_flag": None if i % 5 == 0 else True,
                         "ratio": i / 3 if i % 2 else i, "tags": [f"a{i}"] * (i % 3),
                         "meta": {"k": i}, "mixed": i if i % 2 else f"s{i}",
                         "text": "y" * (BULKY_CHARS + i)}
    if i % 4 == 0:
        d["sometimes"] = i
    if i == 7:
        d["cached"] = "a field named like provenance"
        d["url"] = "http://pipeline.example/own-url"
    if i % 6 == 0:
        d["vec"] = np.arange(3, dtype=np.float32) + i
    if i == 9:
        return ["not", "a", "dict"]
    return d


def test_lists_of_strings_read_as_to_pylist_reads_them() -> None:
    """A chunk's lists of strings come back equal to Arrow's ``to_pylist`` (each distinct string
    one object in each of its Arrow chunks, for memory): empty lists, non-ASCII, several
    chunks, a slice."""
    import random

    import pyarrow as pa

    from workbench.client.fields import _string_lists

    rnd = random.Random(5)
    words = [f"w{i}" for i in range(50)] + ["", "é", "\U0001f642"]
    rows = [[rnd.choice(words) for _ in range(rnd.randint(0, 6))] for _ in range(5000)]
    values = pa.chunked_array([pa.array(rows[:2500], pa.list_(pa.string())),
                               pa.array(rows[2500:], pa.list_(pa.string()))])
    assert _string_lists(values) == rows
    assert _string_lists(values.slice(7, 3000)) == rows[7:3007]
    assert _string_lists(pa.chunked_array([], pa.list_(pa.string()))) == []
    shared = _string_lists(values)
    assert len({id(w) for row in shared for w in row}) <= 2 * len(words)  # one per Arrow chunk


async def test_results_unchanged_for_small_batches(wb: Workbench) -> None:
    for page in (True, False):
        batch = await fill(wb, 40, _varied, page=page, failed=3)
        expected = legacy.results_frame(await legacy.result_rows(wb.ledger, batch.id))
        got = await batch.results()
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert "sometimes" in got and "_cached" in got and "vec" in got

        items = await wb.ledger.item_rows(batch.id)
        pd.testing.assert_frame_equal(await batch.status(), legacy.items_frame(items))
        failed = [r for r in items if r["status"] == "failed"]
        pd.testing.assert_frame_equal(await batch.failures(), legacy.failures_frame(failed))


def _awkward(i: int) -> dict[str, Any]:
    """Values where a JSON reader could differ from Python's: escapes, non-ASCII, surrogate
    pairs, big integers, tiny and huge floats, empty strings and lists, long texts."""
    return {
        "s": ["", "é", "😀 \"q\" \n\t\\", "\u2028", "x" * (BULKY_CHARS + 5)][i % 5],
        "big": [2**62, -(2**63), 0, 7, 2**53 + 1][i % 5],
        "f": [1e-7, 1.5e300, -0.0, 0.1 + 0.2, 3.0][i % 5],
        "tags": [[], ["é", ""], ["a"] * 3, [], ["😀"]][i % 5],
        "ints": [[1, 2], [], [2**62], [0], [-1]][i % 5],
        "flags": [[True], [False, True], [], [True], []][i % 5],
        "ok": i % 2 == 0,
        "maybe": None if i % 3 else f"m{i}",
    }


async def test_results_unchanged_for_awkward_values(wb: Workbench) -> None:
    batch = await fill(wb, 25, _awkward)
    expected = legacy.results_frame(await legacy.result_rows(wb.ledger, batch.id))
    pd.testing.assert_frame_equal(await batch.results(), expected, check_exact=True)
    got = await batch.results(columns=["s", "big", "f", "tags", "ints", "flags"])
    pd.testing.assert_frame_equal(got, expected[got.columns.tolist()], check_exact=True)


async def test_empty_frames_unchanged(wb: Workbench) -> None:
    batch = await wb.submit(["http://example.org/a", "http://example.org/b"], pipeline="noop")
    pd.testing.assert_frame_equal(await batch.results(), legacy.results_frame([]))
    pd.testing.assert_frame_equal(await batch.failures(), legacy.failures_frame([]))
    items = await wb.ledger.item_rows(batch.id)
    pd.testing.assert_frame_equal(await batch.status(), legacy.items_frame(items))


# ------------------------------------------------------------------ projection
def _statements(wb: Workbench) -> list[str]:
    """Every SQL statement the ledger's reads run from now on: through SQLAlchemy, and the
    chunks it runs on the driver (``Ledger.sql_trace``)."""
    seen: list[str] = []
    wb.ledger.sql_trace = seen

    @event.listens_for(wb.ledger.read_engine.sync_engine, "before_cursor_execute")
    def _log(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    return seen


async def test_projection_never_reads_the_texts(wb: Workbench) -> None:
    batch = await fill(wb, 30, article)
    await batch.counts()  # opens the ledger
    seen = _statements(wb)
    df = await batch.results(columns=["title", "word_count", "language"])
    assert list(df.columns[:5]) == ["item_id", "url", "title", "word_count", "language"]
    assert "text" not in df and "keywords" not in df and "final_url" in df
    assert seen and not any("result_bulk" in s for s in seen), seen
    async for chunk in batch.iter_results(chunk_rows=7, columns=["title"]):
        assert list(chunk.columns[:3]) == ["item_id", "url", "title"]
    assert not any("result_bulk" in s for s in seen)
    seen.clear()
    with_text = await batch.results(columns=["text"])
    assert any("result_bulk" in s for s in seen)
    full = await batch.results()
    assert with_text["text"].tolist() == full["text"].tolist() == [
        article(i)["text"] for i in range(30)]
    pd.testing.assert_frame_equal(df, full[df.columns.tolist()])


async def test_projections_equal_the_whole_frame(wb: Workbench) -> None:
    """Fields picked out by the database (missing, null, bulky in some rows, arrays, objects,
    kinds that change) come back exactly as in the whole frame."""
    batch = await fill(wb, 40, _varied)
    full = await batch.results()
    for cols in (["title", "maybe_int", "sometimes"], ["mixed", "meta", "vec", "tags"],
                 ["text", "flag", "maybe_flag", "ratio"], ["url", "cached", "n"],
                 ["value", "n"]):
        got = await batch.results(columns=cols)
        pd.testing.assert_frame_equal(got, full[got.columns.tolist()], check_exact=True)
        chunks = [df async for df in batch.iter_results(chunk_rows=9, columns=cols)]
        assert all(c.dtypes.to_dict() == chunks[0].dtypes.to_dict() for c in chunks)


async def test_projection_names_unknown_fields(wb: Workbench) -> None:
    batch = await fill(wb, 3, article)
    with pytest.raises(InvalidInputError, match=r"no field 'nope'.*fields: title, author"):
        await batch.results(columns=["title", "nope"])
    with pytest.raises(InvalidInputError, match="list of column names"):
        await batch.results(columns="title")  # type: ignore[arg-type]
    df = await batch.results(columns=["http_status", "title"])  # provenance: always there
    assert df["http_status"].tolist() == [200, 200, 200]
    st = await batch.status(columns=["status", "url"])
    assert list(st.columns) == ["item_id", "status", "url"]
    with pytest.raises(InvalidInputError, match="unknown item column"):
        await batch.status(columns=["bogus"])
    f = await batch.failures(columns=["error_type"])
    assert list(f.columns) == ["item_id", "error_type"] and f.empty


async def test_failures_projection_skips_tracebacks(wb: Workbench) -> None:
    batch = await fill(wb, 6, article, failed=2)
    await batch.counts()
    seen = _statements(wb)
    f = await batch.failures(columns=["url", "error_type", "error_message"])
    assert f["error_type"].tolist() == ["http_404", "http_404"]
    assert not any("traceback" in s for s in seen)


# ------------------------------------------------------------------ cache copies, counts
async def test_cached_copies_keep_their_bulky_parts(wb: Workbench) -> None:
    first = await fill(wb, 5, article)
    urls = (await first.status())["url"].tolist()
    again = await wb.submit(urls, pipeline="noop")
    assert again.cached == 5
    a, b = await first.results(), await again.results()
    assert b["text"].tolist() == a["text"].tolist() and b["cached"].all()
    # every other column as the original's: the copy takes the result's values as they are
    own = {"item_id", "cached", "batch_id", "duration_s", "finished_at", "started_at",
           "submitted_at", "attempts", "tries", "worker"}  # the copy's item, not its result
    assert set(a.columns) == set(b.columns)
    for col in sorted(set(a.columns) - own):
        pd.testing.assert_series_equal(a[col], b[col], check_names=False, obj=col)


async def test_copies_take_the_newest_result_chunk_by_chunk(
    wb: Workbench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each URL's newest result is copied, whichever chunk of the submit it falls in (the
    look-ups and copies run a chunk at a time, inside the submit's transaction)."""
    from workbench.ledger import submit as ledger_submit

    urls = [f"http://example.org/new/{i}" for i in range(7)]

    async def analyse(batch: Any, version: str) -> None:
        info = await wb.ledger.batch_info(batch.id)
        for r in await wb.ledger.item_rows(batch.id):
            assert await wb.ledger.claim(r["id"], r["attempts"], "w")
            assert await wb.ledger.complete(r["id"], r["attempts"], dict(
                batch_id=batch.id, normalized_url=r["normalized_url"], pipeline=info.pipeline,
                pipeline_version=info.pipeline_version, params_hash=info.params_hash,
                workbench_version="0", data=json.dumps({"v": version, "n": r["position"]})))

    await analyse(await wb.submit(urls[:5], pipeline="noop"), "old")
    await analyse(await wb.submit(urls[2:], pipeline="noop", refresh=True), "new")
    monkeypatch.setattr(ledger_submit, "_ENTRY_CHUNK", 3)
    monkeypatch.setattr(ledger_submit, "CHUNK", 2)  # compiled look-ups of 2, and the rest of 1
    again = await wb.submit(["http://example.org/never", *urls], pipeline="noop")
    assert again.cached == 7 and (await again.counts())["queued"] == 1
    df = (await again.results()).set_index("url")
    assert df.loc[urls, "v"].tolist() == ["old", "old", "new", "new", "new", "new", "new"]
    assert df["cached"].all()


async def test_counts_stay_exact_whichever_status_is_largest(wb: Workbench) -> None:
    batch = await wb.submit([f"http://example.org/c/{i}" for i in range(20)], pipeline="noop")
    ledger = wb.ledger
    rows = await ledger.item_rows(batch.id)

    async def check() -> None:
        async with ledger.read_engine.connect() as conn:
            truth = dict((await conn.execute(text(
                "SELECT status, count(*) FROM items WHERE batch_id = :b GROUP BY status"),
                {"b": batch.id})).all())
        counts = await batch.counts()
        assert {k: v for k, v in counts.items() if v} == truth

    await check()  # all queued
    for r in rows[:15]:
        await ledger.claim(r["id"], r["attempts"], "w")
    await check()
    for r in rows[:12]:
        await ledger.complete(r["id"], r["attempts"], dict(
            batch_id=batch.id, normalized_url=r["normalized_url"], pipeline="noop",
            pipeline_version="1", params_hash="p", workbench_version="0", data="{}"))
    await check()
    await ledger.fail(rows[12]["id"], rows[12]["attempts"], {"error_type": "x"})
    await check()
    await batch.cancel()
    await check()
    await batch.retry([rows[12]["id"], rows[19]["id"]])
    await check()
    await check()


async def test_numbers_read_back_exactly(wb: Workbench) -> None:
    """Chunks the database writes as JSON lines keep every digit of a float (SQLite's
    json_object writes 15 of them; 0.1 + 0.2 needs 17)."""
    batch = await fill(wb, 3, article)
    async with wb.ledger.engine.begin() as conn:
        await conn.execute(text("UPDATE items SET duration_s = :d WHERE batch_id = :b"),
                           {"d": 0.1 + 0.2, "b": batch.id})
    assert (await batch.status())["duration_s"].tolist() == [0.1 + 0.2] * 3
    assert (await batch.results(columns=["title"]))["duration_s"].tolist() == [0.1 + 0.2] * 3
    assert (await batch.results())["duration_s"].tolist() == [0.1 + 0.2] * 3


# ------------------------------------------------------------------ the monitor's failures read
async def test_recent_failures_read_by_the_partial_index(wb: Workbench, backend: str) -> None:
    """``failures_since`` (the monitor's read at each tick) returns the failures that finished
    since the mark less its overlap, in item order, with the batch's failed total of the same
    read, and on SQLite reads them by the partial index of failed items by time, not by
    visiting every failed item of the batch."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    from workbench.ledger.store import failures_query

    batch = await fill(wb, 40, article, failed=10)
    mark, every, total = await wb.ledger.failures_since(batch.id, None)
    failed_ids = [r[0] for r in every]
    assert total == 10
    assert len(failed_ids) == 10 and failed_ids == sorted(failed_ids)
    old = failed_ids[:6]  # finished two hours ago
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).replace(tzinfo=None)
    async with wb.ledger.engine.begin() as conn:
        await conn.execute(text(f"UPDATE items SET finished_at = :t WHERE id IN "
                                f"({','.join(map(str, old))})"), {"t": two_hours_ago})
    _, recent, total = await wb.ledger.failures_since(batch.id, mark)
    assert [r[0] for r in recent] == failed_ids[6:] and total == 10
    assert all(r[2] for r in recent)  # error types read
    _, since_long_ago, _ = await wb.ledger.failures_since(batch.id, mark - timedelta(hours=3))
    assert [r[0] for r in since_long_ago] == failed_ids
    if backend == "sqlite":
        stmt = failures_query(batch.id, mark)
        compiled = stmt.compile(dialect=wb.ledger.read_engine.dialect,
                                compile_kwargs={"literal_binds": True})
        async with wb.ledger.read_engine.connect() as conn:
            plan = (await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
        assert any("ix_items_failed_finished" in str(row) for row in plan), plan


async def test_a_batch_with_no_recent_failures_still_gives_its_total(wb: Workbench) -> None:
    from datetime import UTC, datetime

    batch = await fill(wb, 12, article, failed=4)
    _, rows, total = await wb.ledger.failures_since(batch.id, datetime.now(UTC).replace(
        year=2999))
    assert rows == [] and total == 4
    empty = await wb.submit(["http://example.org/none"], pipeline="noop")
    assert (await wb.ledger.failures_since(empty.id, None))[1:] == ([], 0)


async def test_the_monitor_reads_only_new_failures_while_failures_keep_coming(
    wb: Workbench,
) -> None:
    """A batch failing steadily: failures committed after the tick's ``counts()``, and another
    right after the monitor's read. The read's own total (one snapshot) agrees with what it
    read, so the monitor reads once, incrementally; compared with a recount instead, the one
    committed after the read made it reread every failure at each such tick."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from workbench.notebook.monitor import BatchMonitor

    batch = await fill(wb, 30, article, failed=5)
    monitor = BatchMonitor(batch)
    await monitor.refresh()  # every failure read once
    assert len(monitor._failed) == 5
    counts = await batch.counts()
    done = [i for i, s in zip((await batch.status())["item_id"],
                              (await batch.status())["status"], strict=True) if s == "done"]

    async def fail(ids: list[int]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        async with wb.ledger.engine.begin() as conn:
            await conn.execute(text(
                "UPDATE items SET status = 'failed', error_type = 'Late', error_message = 'x', "
                f"finished_at = :t WHERE id IN ({','.join(map(str, ids))})"), {"t": now})

    await fail(done[:2])  # committed after the count
    reads: list[object] = []
    read = batch._failures_since

    async def read_then_another_fails(mark: object) -> tuple[object, list[tuple[object, ...]], int]:
        got = await read(mark)
        reads.append(mark)
        if len(reads) == 1:
            await fail(done[2:3])  # committed after the read
        return got

    batch._failures_since = read_then_another_fails  # type: ignore[method-assign]
    groups = await monitor._read_failures(counts)
    assert len(reads) == 1 and reads[0] is not None, "a full reread"
    assert len(monitor._failed) == 7
    assert sorted(g.count for g in groups) == [2, 5]
    await monitor.refresh()  # the next tick sees the last one
    assert len(monitor._failed) == 8
