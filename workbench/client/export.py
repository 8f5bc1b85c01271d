"""Results frames out: JSON-ready values, JSONL and CSV (streamed in chunks) and Parquet.

Shared by the command line (``results``, ``failures``, ``status --json``) and the HTTP API
(``GET /batches/{id}/results``), so both export the same bytes. pandas, numpy and pyarrow are
imported on first use, keeping ``python -m workbench --help`` quick.

A batch is exported chunk by chunk (``Batch.iter_results``): CSV and JSONL as text pieces
(``stream_text``), Parquet one row group per chunk (``write_parquet``). The Parquet schema is
decided before the first row group, from the kinds of every field over the whole batch
(``workbench.ledger.reads.ResultSchema``), so it holds whatever a later chunk brings
(``arrow_schema``): a field missing from some results is null there; integers are int64
(nullable), numbers float64, booleans bool, strings string (large_string for bulky fields);
lists of strings, integers, numbers or booleans are lists of that type, numpy arrays lists of
float32 (float64 when their dtypes differ); anything else -- objects, nested or mixed lists, a
field whose kind changes between results -- is its JSON text. Provenance has fixed types;
carried columns (``client.carried``) the type of their input dtype (object: JSON text).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from workbench.inputs.tables import CarriedColumn
    from workbench.ledger.reads import ResultField, ResultSchema
    from workbench.ledger.store import Ledger


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of a result value: numpy arrays and scalars, timestamps, NaN -> null."""
    import numpy as np
    import pandas as pd

    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


#: what a spreadsheet reads as the start of a formula in a cell (OWASP, "CSV Injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(text: str) -> str:
    """A text cell a spreadsheet shows as text: one that starts like a formula (``= + - @``,
    tab, carriage return) gets a leading ``'``, as OWASP advises, so a page titled
    ``=HYPERLINK(...)`` is not a live link in Excel or LibreOffice. Only CSV does this; JSONL
    and Parquet keep every value as it is."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value: Any) -> Any:
    """A CSV cell: numbers as they are, text made formula-safe (``csv_safe``), lists and dicts
    as JSON."""
    v = jsonable(value)
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, str):
        return csv_safe(v)
    return "" if v is None else v


def frame_records(df: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Each row as a dict of JSON-ready values (``jsonable``)."""
    cols = list(df.columns)
    for row in df.itertuples(index=False, name=None):
        yield {c: jsonable(v) for c, v in zip(cols, row, strict=True)}


def iter_jsonl(df: pd.DataFrame) -> Iterator[str]:
    """One JSON object a line, a line at a time."""
    for rec in frame_records(df):
        yield json.dumps(rec, ensure_ascii=False) + "\n"


def iter_csv(df: pd.DataFrame, chunk_rows: int = 500, *, header: bool = True) -> Iterator[str]:
    """CSV with a header row (unless ``header=False``: a later chunk of one export),
    ``chunk_rows`` rows a piece; lists and dicts as JSON text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    # the csv module quotes a field holding the line terminator ("\n") but not a lone "\r",
    # which every reader takes for a line break: a row with one has its text fields quoted
    quoting = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    if header:
        writer.writerow([csv_safe(str(c)) for c in df.columns])
    for n, row in enumerate(df.itertuples(index=False, name=None), start=1):
        cells = [_cell(v) for v in row]
        if any(isinstance(c, str) and "\r" in c for c in cells):
            quoting.writerow(cells)
        else:
            writer.writerow(cells)
        if n % chunk_rows == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """Parquet of a results frame: lists stay lists (arrays become lists of floats), dicts and
    mixed columns become JSON text."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        vals = [v for v in out[col]
                if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if any(isinstance(v, np.ndarray) for v in vals):
            out[col] = [v.tolist() if isinstance(v, np.ndarray) else v for v in out[col]]
        if any(isinstance(v, dict) for v in vals) or len({type(v) for v in vals}) > 1:
            out[col] = [None if v is None else json.dumps(jsonable(v), ensure_ascii=False)
                        for v in out[col]]
    try:
        table = pa.Table.from_pandas(out, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        for col in out.columns:
            if out[col].dtype == object:
                out[col] = [None if v is None else json.dumps(jsonable(v), ensure_ascii=False)
                            for v in out[col]]
        table = pa.Table.from_pandas(pd.DataFrame(out), preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# ------------------------------------------------------------------ streaming a whole batch
async def stream_text(
    chunks: AsyncGenerator[pd.DataFrame, None], fmt: str, columns: Sequence[str]
) -> AsyncGenerator[str, None]:
    """CSV (one header) or JSONL text of every chunk, a piece at a time; ``columns`` makes the
    header of an export with no rows. ``chunks`` is closed with it (as ``reading._rechunk``
    closes its pieces)."""
    first = True
    async with aclosing(chunks):
        async for df in chunks:
            for piece in iter_csv(df, header=first) if fmt == "csv" else iter_jsonl(df):
                yield piece
            first = False
    if first and fmt == "csv":
        import pandas as pd

        for piece in iter_csv(pd.DataFrame(columns=list(columns))):
            yield piece


def arrow_schema(
    batch: ResultSchema, fields: ResultSchema, carried: Sequence[CarriedColumn] = ()
) -> pa.Schema:
    """The Parquet schema of a batch's results (the ``fields`` projected of the ``batch``, and
    the ``carried`` columns after ``url``), decided up front by the rule in the module
    docstring. A column written as JSON text says so in its metadata (``workbench.json``)."""
    import pyarrow as pa

    from workbench.client.fields import field_dtype
    from workbench.client.frames import PROVENANCE_COLUMNS, result_columns
    from workbench.inputs.tables import carried_names

    def column(name: str, typ: pa.DataType, as_json: bool = False) -> pa.Field:
        return pa.field(name, typ, metadata={"workbench.json": "1"} if as_json else None)

    url = fields.get("url")
    out = [column("item_id", pa.int64()),
           column("url", *(_field_type(url) if url is not None and field_dtype(url) != "str"
                           else (pa.string(), False)))]
    shown = carried_names([c.stored for c in carried], set(result_columns(batch, fields)))
    out += [column(shown[c.stored], *_carried_type(c.dtype)) for c in carried]
    out += [column(f.name, *_field_type(f)) for f in fields.fields
            if f.name not in ("item_id", "url")]
    provenance = _provenance_types()
    names = set(batch.names)
    out += [column(name if name not in names else f"_{name}", provenance[name](),
                   name == "timings") for name in PROVENANCE_COLUMNS]
    return pa.schema(out)


def _field_type(field: ResultField) -> tuple[pa.DataType, bool]:
    """A pipeline field's Arrow type, and whether its values are written as JSON text."""
    import pyarrow as pa

    text = pa.large_string() if field.bulky else pa.string()
    kinds = field.kinds - {"n"}
    if not kinds:
        return pa.string(), False
    if kinds == {"b"}:
        return pa.bool_(), False
    if kinds == {"i"}:
        return pa.int64(), False
    if kinds <= {"i", "f"}:
        return pa.float64(), False
    if kinds == {"s"}:
        return text, False
    lists = kinds - {"a"}
    if lists <= {"as"}:
        return pa.list_(pa.string()), False
    if lists == {"ai"}:
        return pa.list_(pa.int64()), False
    if lists <= {"ai", "af"}:
        return pa.list_(pa.float64()), False
    if lists == {"ab"}:
        return pa.list_(pa.bool_()), False
    if all(k.startswith("v") and "/" not in k for k in kinds):
        dtypes = {k[1:] for k in kinds}
        if dtypes == {"float32"}:
            return pa.list_(pa.float32()), False
        if dtypes <= _NUMERIC_DTYPES:
            return pa.list_(pa.float64()), False
    return text, True


def _carried_type(dtype: str) -> tuple[pa.DataType, bool]:
    """A carried column's Arrow type, from the input's dtype (``client.carried``)."""
    import pyarrow as pa

    d = dtype.lower()
    if d.startswith(("int", "uint")):
        return pa.int64(), False
    if d.startswith("float"):
        return pa.float64(), False
    if d in ("bool", "boolean"):
        return pa.bool_(), False
    if d.startswith("datetime64"):
        return pa.timestamp("us", tz="UTC" if "utc" in d or "," in d else None), False
    if d in ("str", "string", "category"):
        return pa.string(), False
    return pa.string(), True


_NUMERIC_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"}


def _provenance_types() -> dict[str, Callable[[], pa.DataType]]:
    import pyarrow as pa

    return {
        "item_id": pa.int64, "url": pa.string, "final_url": pa.string, "http_status": pa.int64,
        "fetched_at": lambda: pa.timestamp("us", tz="UTC"), "content_sha256": pa.string,
        "pipeline": pa.string, "pipeline_version": pa.string, "params_hash": pa.string,
        "workbench_version": pa.string, "cached": pa.bool_, "from_stored_page": pa.bool_,
        "duration_s": pa.float64, "timings": pa.string,
    }


def arrow_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A chunk of results as an Arrow table of ``schema`` (``arrow_schema``)."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        col = df[field.name]
        if field.metadata and field.metadata.get(b"workbench.json"):
            values: Any = [_json_text(v) for v in col]
        else:
            values = col
        arr = pa.array(values, type=field.type, from_pandas=True) \
            if not isinstance(values, pa.ChunkedArray) else values
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def _json_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return json.dumps(jsonable(value), ensure_ascii=False)


async def write_parquet(
    chunks: AsyncIterator[pd.DataFrame] | AsyncIterator[pa.Table], schema: pa.Schema,
    path: str | os.PathLike[str] | IO[bytes],
) -> int:
    """Write every chunk (a frame, or an Arrow table of ``schema``) as one row group of a
    Parquet file of ``schema``; returns the rows. A row group is written in a thread while the
    next chunk is read."""
    import asyncio

    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.client.fields import release_parsed

    rows = 0
    writer = pq.ParquetWriter(path, schema, compression="zstd")
    pool = pa.default_memory_pool()

    def write(table: pa.Table) -> None:
        writer.write_table(table)
        del table
        pool.release_unused()  # the row group's buffers back to the system, not kept by the pool
        release_parsed()  # and its parsed fields' (``client.fields.parse_pool``)
    pending: asyncio.Future[None] | None = None
    try:
        async for df in chunks:
            table = df if isinstance(df, pa.Table) else arrow_table(df, schema)
            rows += table.num_rows
            del df
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(asyncio.to_thread(write, table))
            del table
        if pending is not None:
            await pending
    finally:
        if pending is not None:
            if not pending.done():  # the read failed: the row group being written ends first
                await asyncio.wait([pending])  # (a thread cannot be cancelled) then the writer
            if not pending.cancelled():
                pending.exception()  # retrieved: the error raised is the one that ended the loop
        writer.close()
        # a failed write leaves the chunks unread: end their read now (its ledger connection
        # back to the pool), not whenever the garbage collector finalizes the generator
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return rows


# ------------------------------------------------------------------ Parquet straight from rows
def arrow_native(schema: pa.Schema, fields: ResultSchema,
                 carried: Sequence[CarriedColumn]) -> bool:
    """Whether ``arrow_chunks`` can build the tables of ``schema`` with no DataFrame: no
    carried columns, no JSON-text or numpy-array field, no field named ``item_id``, ``url``
    or ``value`` (those need the frame's rules)."""
    if carried or any(f.name in ("item_id", "url", "value") for f in fields.fields):
        return False
    if any(k.startswith("v") for f in fields.fields for k in f.kinds):
        return False
    names = set(fields.names)
    return not any(f.metadata and f.name in names for f in schema)


async def arrow_chunks(
    ledger: Ledger, batch_id: str, schema: pa.Schema, fields: ResultSchema, *,
    chunk_rows: int,
) -> AsyncGenerator[pa.Table, None]:
    """The done items' results as Arrow tables of ``schema`` (``arrow_native`` must hold),
    ``chunk_rows`` rows each, built from the ledger's rows: the pipeline's fields parsed by
    Arrow's JSON reader (C++, no Python object per value), provenance converted column by
    column. Rows are read ``ARROW_FETCH_ROWS`` at a time: with 3 KB results, 5,000 held
    ~60 MB more at the peak than 1,000 (Python's copies of the texts), for no more rows/s."""
    import pyarrow as pa

    from workbench.client.fields import bulk_column, json_table

    names = set(fields.names)
    small = pa.schema([schema.field(n) for n in fields.names])
    bulky = pa.schema([schema.field(f.name) for f in fields.fields if f.bulky])
    held: list[pa.Table] = []
    count = 0
    rows_read = ledger.result_chunks(batch_id, chunk_rows=min(chunk_rows, ARROW_FETCH_ROWS),
                                     bulk=len(bulky) > 0)
    async with aclosing(rows_read) as raws:
        async for raw in raws:
            values = json_table(raw.data, small)
            if len(bulky) and raw.bulk is not None:
                extra = json_table(raw.bulk, bulky)
                for name in bulky.names:
                    at = values.schema.get_field_index(name)
                    values = values.set_column(at, small.field(name), bulk_column(
                        extra.column(name), values.column(name)))
                del extra
            arrays: list[Any] = []
            for field in schema:
                if field.name in names:
                    arrays.append(values.column(field.name))
                else:  # item_id, url, provenance ("_name" when a field took its name)
                    key = field.name if field.name in raw.table.column_names else field.name[1:]
                    arrays.append(raw.table.column(key).cast(field.type))
            held.append(pa.Table.from_arrays(arrays, schema=schema))
            count += len(raw)
            del raw, values
            if count >= chunk_rows:
                table = pa.concat_tables(held)
                rest = table.slice(chunk_rows)
                held, count = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
                box = [table.slice(0, chunk_rows)]
                del table, rest
                yield box.pop()
    if count:
        yield pa.concat_tables(held)


#: rows per read of the ledger for ``arrow_chunks``
ARROW_FETCH_ROWS = 1_000


async def write_batch_parquet(
    ledger: Ledger, batch_id: str, path: str | os.PathLike[str] | IO[bytes], *,
    columns: Sequence[str] | None, chunk_rows: int, carried: Sequence[CarriedColumn] = (),
) -> int:
    """``Batch.to_parquet``: the schema decided up front, then a row group per chunk, built
    without DataFrames where the schema allows it (``arrow_native``)."""
    from workbench.client import reading

    reading.check_chunk_rows(chunk_rows)
    batch, fields = await reading.result_schemas(ledger, batch_id, columns)
    schema = arrow_schema(batch, fields, carried)
    if arrow_native(schema, fields, carried):
        return await write_parquet(
            arrow_chunks(ledger, batch_id, schema, fields, chunk_rows=chunk_rows), schema, path)
    frames = reading.iter_results(ledger, batch_id, chunk_rows=chunk_rows, columns=columns,
                                  schemas=(batch, fields), carried_columns=carried)
    return await write_parquet(frames, schema, path)
