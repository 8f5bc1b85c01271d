"""Tables in chunks: DataFrames and CSV/Parquet/JSONL files, the URL column, carried values and
names, one item per row, bounded memory."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.core.errors import InvalidInputError, InvalidTableError
from workbench.inputs.tables import (
    CarriedColumn,
    TableChunk,
    carried_names,
    open_table,
    restore_dtypes,
)

RESERVED = {"item_id", "position", "url", "normalized_url", "status", "error_type", "title"}


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [10, 11, 12, 13],
            "link": ["http://a.test/1", "http://a.test/2", None, "http://a.test/1"],
            "label": ["x", "y", "z", "w"],
            "score": [0.5, float("nan"), 1.5, float("inf")],
            "seen": pd.to_datetime(["2024-01-01", None, "2024-01-03", "2024-01-04"], utc=True),
            "status": ["new", "old", "new", "old"],  # clashes with Workbench's column
            "flag": pd.array([True, None, False, True], dtype="boolean"),
            "count": pd.array([1, None, 3, 4], dtype="Int64"),
        }
    )


def _all(chunks: Any) -> tuple[list[object], list[dict[str, Any]], list[int]]:
    urls: list[object] = []
    rows: list[dict[str, Any]] = []
    starts = []
    for chunk in chunks:
        assert isinstance(chunk, TableChunk)
        starts.append(chunk.start)
        urls += chunk.urls
        rows += chunk.rows
    return urls, rows, starts


def test_dataframe_rows_carried_values_and_renamed_clashes() -> None:
    table = open_table(_frame(), url_column="link", reserved=RESERVED, chunk_rows=3)
    assert table.rows == 4 and table.url_column == "link"
    assert [(c.name, c.stored) for c in table.carried] == [
        ("id", "id"), ("label", "label"), ("score", "score"), ("seen", "seen"),
        ("status", "input_status"), ("flag", "flag"), ("count", "count"),
    ]
    assert table.carried[0].dtype == "int64" and "UTC" in table.carried[3].dtype
    urls, rows, starts = _all(table.chunks())
    assert starts == [0, 3]
    # one item per row: the duplicated URL stays twice, the missing one is None (submit reports it)
    assert urls == ["http://a.test/1", "http://a.test/2", None, "http://a.test/1"]
    assert rows[0] == {"id": 10, "label": "x", "score": 0.5, "seen": "2024-01-01T00:00:00Z",
                       "input_status": "new", "flag": True, "count": 1}
    assert rows[1]["score"] is None and rows[1]["seen"] is None
    assert rows[1]["flag"] is None and rows[1]["count"] is None
    assert rows[3]["score"] is None  # inf is not JSON
    json.dumps(rows, allow_nan=False)  # every value is JSON
    assert all(type(r["id"]) is int for r in rows)  # numpy scalars became Python numbers


def test_missing_url_column_names_it_and_the_columns_present() -> None:
    with pytest.raises(InvalidTableError) as info:
        open_table(_frame(), url_column="url", reserved=RESERVED)
    msg = str(info.value)
    assert "no URL column 'url'" in msg and "'id', 'link', 'label'" in msg
    assert "did you mean 'link'?" in msg
    assert isinstance(info.value, InvalidInputError)


def test_columns_selects_what_is_carried_and_bad_inputs_are_clear() -> None:
    table = open_table(_frame(), url_column="link", reserved=RESERVED, columns=["id", "label"])
    assert [c.name for c in table.carried] == ["id", "label"]
    with pytest.raises(InvalidTableError, match=r"no column\(s\) \['nope'\]"):
        open_table(_frame(), url_column="link", reserved=RESERVED, columns=["nope"])
    dup = pd.DataFrame([[1, 2]], columns=["url", "url"])
    with pytest.raises(InvalidTableError, match="duplicate column names"):
        open_table(dup, reserved=RESERVED)
    with pytest.raises(InvalidTableError, match="cannot read a table from list"):
        open_table(["http://a.test/"], reserved=RESERVED)


def test_carried_names_are_deterministic_in_column_order() -> None:
    assert carried_names(["url", "input_url"], {"url"}) == {
        "url": "input_url",
        "input_url": "input_input_url",
    }
    assert carried_names(["input_url", "url"], {"url"}) == {
        "input_url": "input_url",
        "url": "input_input_url",
    }
    assert carried_names(["a", "title"], {"url", "title"}) == {"a": "a", "title": "input_title"}


def test_empty_frame_has_no_chunks() -> None:
    table = open_table(pd.DataFrame({"url": []}), reserved=RESERVED)
    assert table.rows == 0 and list(table.chunks()) == []


def test_csv_parquet_and_jsonl_files_read_alike(tmp_path: Path) -> None:
    df = pd.DataFrame({"url": [f"http://a.test/{i}" for i in range(10)],
                       "id": range(10), "label": [f"l{i}" for i in range(10)]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_csv(tmp_path / "t.csv.gz", index=False)
    df.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    df.to_parquet(tmp_path / "t.parquet", row_group_size=4)
    with gzip.open(tmp_path / "t.jsonl.gz", "wt") as f:
        for rec in df.to_dict("records"):
            f.write(json.dumps(rec) + "\n")
    expected = (list(df["url"]), [{"id": i, "label": f"l{i}"} for i in range(10)])
    for name in ("t.csv", "t.csv.gz", "t.tsv", "t.parquet", "t.jsonl.gz"):
        table = open_table(tmp_path / name, reserved=RESERVED, chunk_rows=4)
        urls, rows, starts = _all(table.chunks())
        assert (urls, rows) == expected, name
        assert starts == [0, 4, 8], name
        assert [c.name for c in table.carried] == ["id", "label"], name
    assert open_table(tmp_path / "t.parquet", reserved=RESERVED).rows == 10


def test_file_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("link,id\nhttp://a.test/,1\n")
    with pytest.raises(InvalidTableError, match=r"no URL column 'url'.*did you mean 'link'"):
        open_table(tmp_path / "t.csv", reserved=RESERVED)
    with pytest.raises(InvalidTableError, match="no such file"):
        open_table(tmp_path / "missing.csv", reserved=RESERVED)
    (tmp_path / "t.xlsx").write_bytes(b"PK")
    with pytest.raises(InvalidTableError, match="cannot tell the format"):
        open_table(tmp_path / "t.xlsx", reserved=RESERVED)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidTableError, match="as Parquet"):
        open_table(tmp_path / "bad.parquet", reserved=RESERVED)
    (tmp_path / "bad.jsonl").write_text('{"url": "http://a.test/"}\n[1, 2]\n')
    table = open_table(tmp_path / "bad.jsonl", reserved=RESERVED)
    with pytest.raises(InvalidTableError, match=r"line 2 of .* is a JSON list, not an object"):
        list(table.chunks())
    (tmp_path / "broken.jsonl").write_text('{"url": "http://a.test/"\n')
    with pytest.raises(InvalidTableError, match=r"line 1 of .* is not JSON"):
        open_table(tmp_path / "broken.jsonl", reserved=RESERVED)


def test_jsonl_columns_seen_later_are_carried_too(tmp_path: Path) -> None:
    lines = [{"url": "http://a.test/1", "a": 1},
             {"url": "http://a.test/2", "b": {"nested": [1, 2]}, "status": "x"}]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    table = open_table(path, reserved=RESERVED)
    urls, rows, _ = _all(table.chunks())
    assert urls == ["http://a.test/1", "http://a.test/2"]
    assert rows[1] == {"a": None, "b": {"nested": [1, 2]}, "input_status": "x"}
    assert [c.stored for c in table.carried] == ["a", "b", "input_status"]


def test_odd_values_become_json() -> None:
    df = pd.DataFrame({
        "url": ["http://a.test/1", "http://a.test/2"],
        "d": [date(2024, 1, 2), None],
        "dec": [Decimal("1.5"), Decimal("NaN")],
        "raw": [b"\x00\xff", None],
        "arr": [np.array([1, 2]), [3]],
        "cat": pd.Categorical(["a", None]),
        "np": [np.float32(0.25), np.int16(7)],
        "when": [datetime(2024, 1, 2, 3, 4, tzinfo=UTC), pd.NaT],
        "other": [complex(1, 2), pd.NA],
    })
    (chunk,) = open_table(df, reserved=RESERVED).chunks()
    assert chunk.rows[0] == {"d": "2024-01-02", "dec": 1.5, "raw": "00ff", "arr": [1, 2],
                             "cat": "a", "np": 0.25, "when": "2024-01-02T03:04:00Z",
                             "other": "(1+2j)"}
    assert chunk.rows[1] == {"d": None, "dec": None, "raw": None, "arr": [3], "cat": None,
                             "np": 7, "when": None, "other": None}


def test_restore_dtypes_gives_types_back() -> None:
    table = open_table(_frame(), url_column="link", reserved=RESERVED)
    _, rows, _ = _all(table.chunks())
    back = restore_dtypes(pd.DataFrame(rows), table.carried)
    assert str(back["id"].dtype) == "int64"
    assert str(back["count"].dtype) == "Int64" and str(back["flag"].dtype) == "boolean"
    assert "UTC" in str(back["seen"].dtype)
    assert back["seen"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert restore_dtypes(pd.DataFrame({"x": ["a"]}), [CarriedColumn("x", "x", "int64")])[
        "x"].tolist() == ["a"]  # will not convert: left as it is


def test_polars_frame() -> None:
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"url": ["http://a.test/1", None], "n": [1, None],
                       "when": [datetime(2024, 1, 1, tzinfo=UTC), None]})
    table = open_table(df, reserved=RESERVED, chunk_rows=1)
    urls, rows, starts = _all(table.chunks())
    assert urls == ["http://a.test/1", None] and starts == [0, 1]
    assert rows == [{"n": 1, "when": "2024-01-01T00:00:00+00:00"}, {"n": None, "when": None}]
    assert table.carried[0].dtype == "Int64" and table.rows == 2
    with pytest.raises(InvalidTableError, match="collect"):
        open_table(df.lazy(), reserved=RESERVED)


def test_a_big_table_is_read_in_bounded_memory() -> None:
    """300k rows in chunks of 20k: the peak is one chunk's Python objects, not the table's
    (tracemalloc makes a million rows too slow for the suite; the bound scales the same)."""
    n = 300_000
    df = pd.DataFrame({"url": [f"http://a.test/{i}" for i in range(n)],
                       "id": np.arange(n), "label": np.where(np.arange(n) % 2, "odd", "even")})
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        seen = 0
        for chunk in open_table(df, reserved=RESERVED, chunk_rows=20_000).chunks():
            seen += len(chunk)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert seen == n
    # one chunk of 20k rows as Python objects is ~6 MB; the whole table would be ~100 MB
    assert peak < 25 * 1024 * 1024, peak
