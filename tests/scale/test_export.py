"""Streaming exports: Parquet row groups under a schema decided up front, CSV and JSONL chunk by
chunk, identical to exporting the whole frame."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench import Workbench
from workbench.client.export import iter_csv, iter_jsonl, stream_text
from workbench.client.frames import result_columns

from .conftest import article, complete, fill


def _kinds(i: int) -> dict[str, Any]:
    d: dict[str, Any] = {
        "n": i, "maybe_n": None if i % 4 == 0 else i, "x": i / 2, "ok": i % 2 == 0,
        "maybe_ok": None if i == 3 else True, "title": f"t{i}", "tags": [f"a{i}"] * (i % 3),
        "counts": [i, i + 1], "scores": [i, 0.5], "meta": {"k": i},
        "vec": np.full(3, i, dtype=np.float32), "shifty": i if i < 8 else f"s{i}",
        "mixed_list": [1, "a"], "nothing": None,
    }
    if i >= 9:
        d["late"] = "only at the end"
    return d


async def test_parquet_schema_rule_and_round_trip(wb: Workbench, tmp_path: Path) -> None:
    batch = await fill(wb, 11, _kinds)
    path = tmp_path / "out.parquet"
    assert await batch.to_parquet(path, chunk_rows=4) == 11
    f = pq.ParquetFile(path)
    assert f.metadata.num_row_groups == 3
    types = {field.name: field.type for field in f.schema_arrow}
    assert types["n"] == pa.int64() and types["maybe_n"] == pa.int64()
    assert types["x"] == pa.float64() and types["ok"] == types["maybe_ok"] == pa.bool_()
    assert types["title"] == pa.string() and types["tags"] == pa.list_(pa.string())
    assert types["counts"] == pa.list_(pa.int64()) and types["scores"] == pa.list_(pa.float64())
    assert types["vec"] == pa.list_(pa.float32()) and types["nothing"] == pa.string()
    for json_text in ("meta", "shifty", "mixed_list", "timings"):
        assert types[json_text] == pa.string()
        assert f.schema_arrow.field(json_text).metadata == {b"workbench.json": b"1"}
    assert types["fetched_at"] == pa.timestamp("us", tz="UTC")
    table = pq.read_table(path)
    got = table.to_pylist()
    assert [r["maybe_n"] for r in got[:5]] == [None, 1, 2, 3, None]
    assert got[3]["maybe_ok"] is None and got[2]["tags"] == ["a2", "a2"]
    assert [r["shifty"] for r in got[6:10]] == ["6", "7", '"s8"', '"s9"']
    assert got[1]["meta"] == '{"k": 1}' and got[5]["vec"] == [5.0, 5.0, 5.0]
    assert got[0]["late"] is None and got[10]["late"] == "only at the end"
    assert [r["item_id"] for r in got] == sorted(r["item_id"] for r in got)
    df = await batch.results()
    assert table.column_names == list(df.columns)
    assert table.column("title").to_pylist() == df["title"].tolist()


async def test_parquet_of_a_projection_and_of_nothing(wb: Workbench, tmp_path: Path) -> None:
    batch = await fill(wb, 5, article)
    path = tmp_path / "p.parquet"
    assert await batch.to_parquet(path, columns=["title", "word_count"]) == 5
    names = pq.read_schema(path).names
    assert names[:4] == ["item_id", "url", "title", "word_count"] and "text" not in names
    empty = await wb.submit(["http://example.org/none"], pipeline="noop")
    assert await empty.to_parquet(tmp_path / "e.parquet") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 0
    buf = io.BytesIO()  # a file object, as the CLI writes to stdout
    assert await batch.to_parquet(buf) == 5
    assert pq.read_table(io.BytesIO(buf.getvalue())).num_rows == 5


async def test_csv_and_jsonl_in_chunks_equal_the_whole(wb: Workbench) -> None:
    batch = await fill(wb, 23, _kinds)
    whole = await batch.results()
    for fmt, one in (("csv", iter_csv), ("jsonl", iter_jsonl)):
        chunks = batch.iter_results(chunk_rows=5)
        streamed = "".join([p async for p in stream_text(chunks, fmt, list(whole.columns))])
        assert streamed == "".join(one(whole)), fmt
    rows = [json.loads(line) for line in "".join(iter_jsonl(whole)).splitlines()]
    assert rows[2]["tags"] == ["a2", "a2"] and rows[1]["meta"] == {"k": 1}
    assert pd.read_csv(io.StringIO("".join(iter_csv(whole))))["n"].tolist() == list(range(23))


async def test_csv_of_nothing_has_its_header(wb: Workbench) -> None:
    batch = await wb.submit(["http://example.org/none"], pipeline="noop")
    schema = await wb.ledger.result_schema(batch.id)

    async def no_chunks() -> Any:
        return
        yield

    text = "".join([p async for p in stream_text(no_chunks(), "csv",
                                                 result_columns(schema, schema))])
    assert text.startswith("item_id,url,final_url,") and text.count("\n") == 1


async def test_carried_columns_travel_in_every_chunk(wb: Workbench, tmp_path: Path) -> None:
    table = pd.DataFrame({
        "url": [f"http://example.org/carried/{i}" for i in range(12)],
        "label": [f"l{i}" for i in range(12)], "score": list(range(12)),
        "title": ["clashes with a field"] * 12,
    })
    batch = await complete(wb, await wb.submit(table, url_column="url", pipeline="noop"),
                           article)
    whole = await batch.results()
    assert list(whole.columns[:5]) == ["item_id", "url", "label", "score", "input_title"]
    chunks = [df async for df in batch.iter_results(chunk_rows=5)]
    assert all(list(c.columns) == list(whole.columns) for c in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    text = "".join([p async for p in batch.export_text("csv", chunk_rows=5)])
    assert text == "".join(iter_csv(whole))
    assert await batch.to_parquet(tmp_path / "c.parquet", chunk_rows=5) == 12
    f = pq.read_table(tmp_path / "c.parquet")
    assert f.column_names == list(whole.columns)
    assert f.schema.field("score").type == pa.int64()
    assert f.column("label").to_pylist() == table["label"].tolist()


async def test_export_text_of_nothing_and_of_a_projection(wb: Workbench) -> None:
    empty = await wb.submit(["http://example.org/none"], pipeline="noop")
    text = "".join([p async for p in empty.export_text("csv")])
    assert text.startswith("item_id,url,final_url,") and text.count("\n") == 1
    assert "".join([p async for p in empty.export_text("jsonl")]) == ""
    batch = await fill(wb, 4, article)
    lines = [json.loads(x) for x in "".join(
        [p async for p in batch.export_text("jsonl", ["title"])]).splitlines()]
    assert [x["title"] for x in lines] == [f"Article {i}" for i in range(4)]
    assert "text" not in lines[0]


async def test_parquet_straight_from_rows_equals_the_frames_path(
    wb: Workbench, tmp_path: Path
) -> None:
    from workbench.client import export, reading

    def mixed(i: int) -> dict[str, Any]:
        d = article(i, text_chars=2000 if i % 3 else 500)  # the text bulky in some rows only
        d["cached"] = i % 2 == 0  # a field named like provenance: provenance is "_cached"
        if i % 5 == 0:
            d.pop("keywords")
        return d

    batch = await fill(wb, 23, mixed, failed=2)
    for columns in (None, ["title", "text", "cached"]):
        schemas = await reading.result_schemas(wb.ledger, batch.id, columns)
        schema = export.arrow_schema(*schemas)
        assert export.arrow_native(schema, schemas[1], ())
        fast, slow = tmp_path / "fast.parquet", tmp_path / "slow.parquet"
        assert await export.write_batch_parquet(wb.ledger, batch.id, fast, columns=columns,
                                                chunk_rows=7) == 21
        frames = reading.iter_results(wb.ledger, batch.id, chunk_rows=7, columns=columns,
                                      schemas=schemas)
        assert await export.write_parquet(frames, schema, slow) == 21
        assert pq.read_table(fast).equals(pq.read_table(slow))
        assert pq.ParquetFile(fast).metadata.num_row_groups == 3
    kinds = await fill(wb, 3, _kinds)
    schemas = await reading.result_schemas(wb.ledger, kinds.id, None)
    assert not export.arrow_native(export.arrow_schema(*schemas), schemas[1], ())


async def test_a_failed_parquet_write_ends_the_read_of_the_chunks(wb: Workbench) -> None:
    from workbench.client import export, reading

    class DiskFull(io.BytesIO):
        def write(self, data: Any) -> int:
            if self.tell() > 4_000:
                raise OSError("No space left on device")
            return super().write(data)

    batch = await fill(wb, 40, article)
    schemas = await reading.result_schemas(wb.ledger, batch.id, None)
    ended: list[bool] = []

    async def chunks() -> AsyncIterator[Any]:
        try:
            async for df in reading.iter_results(wb.ledger, batch.id, chunk_rows=4,
                                                 columns=None, schemas=schemas):
                yield df
        finally:
            ended.append(True)

    with pytest.raises(OSError, match="No space left"):
        await export.write_parquet(chunks(), export.arrow_schema(*schemas), DiskFull())
    assert ended == [True]  # closed by write_parquet, not left to the garbage collector
