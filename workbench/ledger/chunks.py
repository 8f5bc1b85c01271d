"""What a chunk read of the ledger looks like (``ledger.reads``): the Arrow types of item and
result columns, a row as one line of text built by the database and the lines parsed by
Arrow's readers (``row_line``, ``rows_table``), and ``ResultChunk``.

pyarrow is imported on first use, not with the module: the ledger (and so every worker process)
imports this module, and only the readers need Arrow; importing it (with numpy) was ~0.1 s of a
worker's start, on the way to its first page (benchmarks/NOTES.md, session 16).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, case, cast, func, literal, null

if TYPE_CHECKING:
    import pyarrow as pa

#: the time columns (stored as naive UTC; text on SQLite)
TIMES = frozenset({"submitted_at", "started_at", "finished_at", "next_try_at", "fetched_at"})


@cache
def item_arrow() -> dict[str, pa.DataType]:
    """The Arrow type of each item column (``Ledger.item_tables``)."""
    import pyarrow as pa

    return {
        "item_id": pa.int64(), "position": pa.int64(), "url": pa.string(),
        "normalized_url": pa.string(), "status": pa.string(), "attempts": pa.int64(),
        "tries": pa.int64(), **{t: pa.timestamp("us") for t in sorted(TIMES - {"fetched_at"})},
        "duration_s": pa.float64(), "worker_id": pa.string(), "cached": pa.bool_(),
        "error_type": pa.string(), "error_message": pa.string(), "traceback": pa.string(),
        "retryable": pa.bool_(), "carried": pa.string(),
    }


def row_line(columns: Mapping[str, Any], sqlite: bool) -> Any:
    """One row of a chunk as one line of text, built by the database (``rows_table`` reads
    the lines back): on SQLite a CSV record made by one ``printf`` (text quoted by ``%Q``,
    ``'`` doubled, NULL unquoted; numbers as they are, floats with 17 significant digits so
    they read back exactly; times as their stored ISO text); on PostgreSQL a JSON object.

    Why CSV on SQLite: Arrow's CSV reader parses a 1,000-row chunk of the 14 provenance
    columns in ~0.8 ms where its JSON reader took ~3 ms (and a cast after it), and
    ``printf`` costs SQLite no more than ``json_object`` (benchmarks/NOTES.md). A NUL
    character would end a ``%Q`` value early: no text column holds one (the ledger replaces
    it in error messages, ``work.storable_error``; URLs and JSON text cannot hold it raw)."""
    if not sqlite:
        return cast(func.json_build_object(
            *[x for name, column in columns.items() for x in (literal(name), column)]), Text)
    import pyarrow as pa

    formats, values = [], []
    items, results = item_arrow(), result_arrow()
    for name, column in columns.items():
        typ = items.get(name, results.get(name))
        if typ == pa.float64():
            formats.append("%s")
            values.append(case((column.is_(None), null()), else_=func.printf("%!.17g", column)))
        elif typ in (pa.int64(), pa.bool_()):
            formats.append("%s")  # NULL: empty
            values.append(column)
        else:
            formats.append("%Q")
            values.append(column)
    return func.printf(literal(",".join(formats)), *values)


def rows_table(lines: str | bytes, schema: pa.Schema, *, sqlite: bool
               ) -> tuple[pa.Table, list[int] | None]:
    """The lines of ``row_line`` -> a table of ``schema``, and the order the rows were put in
    to restore item order should the database have mixed them (None: as they came)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.json as pj

    body = lines.encode() if isinstance(lines, str) else lines
    block = max(1 << 20, len(body) + 1)  # one block: the chunk is parsed in one go
    if sqlite:
        table = pcsv.read_csv(
            io.BytesIO(body),
            read_options=pcsv.ReadOptions(column_names=schema.names, block_size=block),
            parse_options=pcsv.ParseOptions(quote_char="'", double_quote=True,
                                            escape_char=False, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types=schema, null_values=["", "NULL"], strings_can_be_null=True,
                quoted_strings_can_be_null=False, true_values=["1"], false_values=["0"]),
        )
    else:
        table = pj.read_json(
            io.BytesIO(body),
            read_options=pj.ReadOptions(block_size=block),
            parse_options=pj.ParseOptions(explicit_schema=schema),
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
    ``carried``, typed as ``result_arrow()``: times naive UTC, ``timings`` JSON text), ``data``
    (the small fields, one JSON object a line, in the table's order) and ``bulk`` (each row's
    bulky fields, one JSON object a line, ``{}`` for none, as UTF-8; None when not read)."""

    table: pa.Table
    data: str
    bulk: bytes | None

    def __len__(self) -> int:
        return int(self.table.num_rows)


@cache
def result_arrow() -> dict[str, pa.DataType]:
    """The Arrow type of each column of a ``ResultChunk``'s table."""
    import pyarrow as pa

    return {
        "item_id": pa.int64(), "url": pa.string(), "final_url": pa.string(),
        "http_status": pa.int64(), "fetched_at": pa.timestamp("us"),
        "content_sha256": pa.string(), "pipeline": pa.string(), "pipeline_version": pa.string(),
        "params_hash": pa.string(), "workbench_version": pa.string(), "cached": pa.bool_(),
        "from_stored_page": pa.bool_(), "duration_s": pa.float64(), "timings": pa.string(),
        "carried": pa.string(),
    }
