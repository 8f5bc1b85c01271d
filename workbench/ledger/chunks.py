"""What a chunk read of the ledger looks like (``ledger.reads``): the Arrow types of item and
result columns, the database's JSON lines parsed by Arrow's reader, and ``ResultChunk``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from sqlalchemy import case, func, null

#: the time columns (stored as naive UTC; text on SQLite)
TIMES = frozenset({"submitted_at", "started_at", "finished_at", "next_try_at", "fetched_at"})

#: the Arrow type of each item column (``Ledger.item_tables``)
ITEM_ARROW: dict[str, pa.DataType] = {
    "item_id": pa.int64(), "position": pa.int64(), "url": pa.string(),
    "normalized_url": pa.string(), "status": pa.string(), "attempts": pa.int64(),
    "tries": pa.int64(), **{t: pa.timestamp("us") for t in sorted(TIMES - {"fetched_at"})},
    "duration_s": pa.float64(), "worker_id": pa.string(), "cached": pa.bool_(),
    "error_type": pa.string(), "error_message": pa.string(), "traceback": pa.string(),
    "retryable": pa.bool_(), "carried": pa.string(),
}


def sqlite_json_value(column: Any, name: str) -> Any:
    """A value for SQLite's ``json_object``: booleans (kept as 0/1) as true/false, and numbers
    as text of 17 significant digits, read back exactly (``json_object`` writes 15 of them)."""
    typ = ITEM_ARROW.get(name, RESULT_ARROW.get(name))
    if typ == pa.bool_():
        return case((column.is_(None), null()), (column != 0, func.json("true")),
                    else_=func.json("false"))
    if typ == pa.float64():
        return case((column.is_(None), null()), else_=func.printf("%!.17g", column))
    return column


def json_schema(schema: pa.Schema, sqlite: bool) -> pa.Schema:
    """The schema Arrow reads the database's JSON lines with: on SQLite numbers come as text
    (``sqlite_json_value``), cast afterwards by ``ndjson_rows``."""
    if not sqlite:
        return schema
    return pa.schema([(f.name, pa.string() if f.type == pa.float64() else f.type)
                      for f in schema])


def ndjson_table(lines: str | bytes, schema: pa.Schema, *, sqlite: bool = False) -> pa.Table:
    """Newline-delimited JSON objects (from the database) -> a table of ``schema``, by Arrow's
    JSON reader; rows put back in item order should the database have mixed them."""
    return ndjson_rows(lines, schema, sqlite=sqlite)[0]


def ndjson_rows(lines: str | bytes, schema: pa.Schema, *, sqlite: bool = False
                 ) -> tuple[pa.Table, list[int] | None]:
    """``ndjson_table``, and the order the rows were put in (None: as they came)."""
    body = lines.encode() if isinstance(lines, str) else lines
    table = pj.read_json(
        io.BytesIO(body),
        read_options=pj.ReadOptions(block_size=max(1 << 20, len(body) + 1)),
        parse_options=pj.ParseOptions(explicit_schema=json_schema(schema, sqlite)),
    )
    if table.schema != schema:
        table = table.cast(schema)
    ids = table.column("item_id")
    if len(ids) > 1 and not pc.all(pc.greater(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py():
        order = pc.sort_indices(ids)
        return table.take(order), order.to_pylist()
    return table, None


@dataclass(frozen=True)
class ResultChunk:
    """A chunk of results: ``table`` (``item_id``, ``url``, provenance and perhaps
    ``carried``, typed as ``RESULT_ARROW``: times naive UTC, ``timings`` JSON text), ``data``
    (the small fields, one JSON object a line, in the table's order) and ``bulk`` (each row's
    bulky fields, one JSON object a line, ``{}`` for none, as UTF-8; None when not read)."""

    table: pa.Table
    data: str
    bulk: bytes | None

    def __len__(self) -> int:
        return int(self.table.num_rows)


#: the Arrow type of each column of a ``ResultChunk``'s table
RESULT_ARROW: dict[str, pa.DataType] = {
    "item_id": pa.int64(), "url": pa.string(), "final_url": pa.string(),
    "http_status": pa.int64(), "fetched_at": pa.timestamp("us"),
    "content_sha256": pa.string(), "pipeline": pa.string(), "pipeline_version": pa.string(),
    "params_hash": pa.string(), "workbench_version": pa.string(), "cached": pa.bool_(),
    "from_stored_page": pa.bool_(), "duration_s": pa.float64(), "timings": pa.string(),
    "carried": pa.string(),
}
