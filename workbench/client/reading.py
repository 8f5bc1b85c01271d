"""Reading a batch back as DataFrames in bounded memory: chunks, projections, whole frames.

``Batch.results``/``iter_results``/``status``/``failures`` and the exports are built on these.
The ledger is read in pieces of at most ``FETCH_ROWS`` rows (keyset pagination,
``workbench.ledger.reads``); each piece becomes a DataFrame at once, so the raw rows and parsed
JSON of only one piece are alive beside the frames being assembled. A chunk of ``chunk_rows`` is
the concatenation of its pieces (string columns are Arrow-backed: concatenating them copies no
text).

Measured on 100k results of ~3.5 KB (3 KB of text) on the 2-core development machine: the whole
``results()`` went from 6.4 s and a peak of ~18 KB of memory per row (every row as a dict, then
the frame) to the figures in ``benchmarks/RESULTS.md`` (``python -m benchmarks scale``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from workbench.client import carried, frames
from workbench.client.fields import release_parsed
from workbench.core.errors import InvalidInputError
from workbench.inputs.tables import CarriedColumn
from workbench.ledger.chunks import item_arrow
from workbench.ledger.reads import ResultSchema

if TYPE_CHECKING:
    from workbench.ledger.store import Ledger

#: rows per read of the ledger: bounds the raw rows and parsed JSON alive at once
FETCH_ROWS = 2_000
#: the same when no bulky value is read (a projection of small fields: ~0.5 KB a row, so the
#: pieces hold no more): 990k rows of five small fields, a piece of 2,000 -> 10,000 rows, 8.0-9.0
#: -> 5.0-6.1 s (each piece's Arrow JSON reads, frame and concatenation cost alike per piece)
SMALL_FETCH_ROWS = 10_000


def fetch_rows(fields: ResultSchema) -> int:
    """Rows per read of the ledger for the fields ``fields`` projects."""
    return FETCH_ROWS if fields.bulky else SMALL_FETCH_ROWS


def check_columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise InvalidInputError(
            f"columns must be a list of column names, got {columns!r}"
        )
    return list(columns)


def check_chunk_rows(chunk_rows: int) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise InvalidInputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    return chunk_rows


async def result_schemas(
    ledger: Ledger, batch_id: str, columns: Sequence[str] | None
) -> tuple[ResultSchema, ResultSchema]:
    """The batch's result schema and the projection of it that ``columns`` names (pipeline
    fields; ``item_id``, ``url`` and provenance columns are always there). A name that is none
    of these raises ``InvalidInputError`` naming the fields, once the batch has results."""
    batch = await ledger.result_schema(batch_id)
    names = check_columns(columns)
    if names is None:
        return batch, batch
    always = {"item_id", "url", *frames.result_columns(batch, ResultSchema(()))}
    unknown = [n for n in names if batch.get(n) is None and n not in always]
    if unknown and batch.fields:
        raise InvalidInputError(
            f"no field {', '.join(map(repr, unknown))} in the results of batch {batch_id}; "
            f"fields: {', '.join(batch.names)} (item_id, url and provenance come always)"
        )
    # a pipeline field named item_id or url wins in those columns: read it whatever is asked
    return batch, batch.select([*(k for k in ("item_id", "url") if batch.get(k)), *names])


async def _rechunk(pieces: AsyncGenerator[pd.DataFrame, None],
                   chunk_rows: int) -> AsyncGenerator[pd.DataFrame, None]:
    """Frames of exactly ``chunk_rows`` rows (the last one shorter) from pieces of any size.
    ``pieces`` is closed with it: a loop that stops early closes the whole chain of reads in
    its own task (left to the garbage collector, an inner read was closed without its event
    loop: "async generator ignored GeneratorExit")."""
    buffer: list[pd.DataFrame] = []
    held = 0
    async with aclosing(pieces):
        async for piece in pieces:
            buffer.append(piece)
            held += len(piece)
            del piece
            while held >= chunk_rows:
                whole = frames.concat(buffer)
                yield whole.iloc[:chunk_rows].reset_index(drop=True)
                rest = whole.iloc[chunk_rows:].reset_index(drop=True)
                del whole
                buffer, held = ([rest], len(rest)) if len(rest) else ([], 0)
    if held:
        yield frames.concat(buffer)


async def iter_results(
    ledger: Ledger, batch_id: str, *, chunk_rows: int, columns: Sequence[str] | None,
    schemas: tuple[ResultSchema, ResultSchema] | None = None,
    carried_columns: Sequence[CarriedColumn] = (),
) -> AsyncGenerator[pd.DataFrame, None]:
    """The done items' results, ``chunk_rows`` a frame in item order, every frame with the
    same columns and dtypes. The bulky values are read only if a projected field has some.
    ``carried_columns`` (``client.carried``) come after ``url``, read with the same rows."""
    check_chunk_rows(chunk_rows)
    batch, fields = schemas or await result_schemas(ledger, batch_id, columns)

    async def pieces() -> AsyncGenerator[pd.DataFrame, None]:
        rows_read = ledger.result_chunks(
            batch_id, chunk_rows=min(chunk_rows, fetch_rows(fields)), bulk=fields.bulky,
            carried=bool(carried_columns),
        )
        async with aclosing(rows_read) as raws:
            async for raw in raws:
                df = frames.results_frame(raw, batch, fields)
                if carried_columns:
                    extra = carried.values_frame(raw.table.column("item_id").to_pylist(),
                                                 raw.table.column("carried").to_pylist(),
                                                 carried_columns)
                    df = carried.attach(df, extra, carried_columns)
                del raw
                yield df
                del df

    async with aclosing(_rechunk(pieces(), chunk_rows)) as chunks:
        async for df in chunks:
            yield df
            del df  # not kept while the next chunk is built
            release_parsed()  # what the caller let go of it, back to the system


async def whole_results(
    ledger: Ledger, batch_id: str, *, columns: Sequence[str] | None
) -> pd.DataFrame:
    """All done items' results as one frame, with the dtypes pandas infers for the whole."""
    batch, fields = await result_schemas(ledger, batch_id, columns)
    parts = [df async for df in iter_results(ledger, batch_id, chunk_rows=fetch_rows(fields),
                                             columns=columns, schemas=(batch, fields))]
    if not parts:
        return frames.empty_results_frame(batch, fields)
    return frames.finish_whole(frames.concat(parts), frames.NULLABLE_STRINGS)


async def iter_items(
    ledger: Ledger, batch_id: str, *, chunk_rows: int, columns: Sequence[str],
    statuses: Sequence[str] | None = None,
) -> AsyncGenerator[pd.DataFrame, None]:
    """The batch's items (of ``statuses``), ``chunk_rows`` a frame, with ``columns``."""
    check_chunk_rows(chunk_rows)
    cols = ["item_id", *(c for c in columns if c != "item_id")]

    async def pieces() -> AsyncGenerator[pd.DataFrame, None]:
        tables_read = ledger.item_tables(batch_id, columns=cols, statuses=statuses,
                                         chunk_rows=min(chunk_rows, FETCH_ROWS * 4))
        async with aclosing(tables_read) as tables:
            async for table in tables:
                yield frames.items_frame(table, cols)
                del table

    async with aclosing(_rechunk(pieces(), chunk_rows)) as chunks:
        async for df in chunks:
            yield df
            del df


async def whole_items(
    ledger: Ledger, batch_id: str, *, columns: Sequence[str] | None,
    default: Sequence[str], statuses: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The batch's items (of ``statuses``) as one frame, with the dtypes pandas infers for the
    whole; ``columns`` (or ``default``) names them, ``item_id`` first."""
    names = check_columns(columns)
    cols = ["item_id", *(c for c in (default if names is None else names) if c != "item_id")]
    parts = [df async for df in iter_items(ledger, batch_id, chunk_rows=FETCH_ROWS * 4,
                                           columns=cols, statuses=statuses)]
    if not parts:
        empty = pa.schema([(c, item_arrow()[c]) for c in cols]).empty_table()
        parts = [frames.items_frame(empty, cols)]
    return frames.finish_whole(frames.concat(parts), frames.NULLABLE_STRINGS)
