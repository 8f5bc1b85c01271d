"""Reading a batch back in bounded memory: its result schema, and results or items in chunks.

Chunks are read by keyset pagination on the item id (``id > last ORDER BY id LIMIT n`` on the
index (batch_id, status, id)), never by OFFSET: every chunk costs the same, the last of a million
items as the first. Each chunk is one short read transaction: a long export holds no snapshot
open (SQLite's WAL can checkpoint, PostgreSQL can vacuum), and items that finish meanwhile with an
id past the cursor are included.

Values come back column by column (``{name: [values in item order]}``), as stored: times are
ISO text on SQLite and naive UTC datetimes on PostgreSQL (``pandas.to_datetime(..., utc=True)``
reads both, vectorised: SQLAlchemy's per-value datetime parsing was most of the time of a
1M-item ``status()``); ``timings`` is as the driver gives it (``decode_json``).

A result's small fields (``results.data``) and bulky values (``result_bulk``) are stored apart
(``workbench.ledger.shapes``): a chunk read with ``bulk=False`` never touches ``result_bulk``.
``ResultSchema`` is every field of a batch's results, in the order pandas would give them, with
their JSON kinds, read from the batch's distinct shapes by index seeks alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    LargeBinary,
    Text,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncEngine

from workbench.core import codec
from workbench.core.errors import InvalidInputError
from workbench.core.status import ItemStatus
from workbench.ledger import keyset
from workbench.ledger.chunks import (
    TIMES,
    ResultChunk,
    item_arrow,
    result_arrow,
    row_line,
    rows_table,
)
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import ItemRow, ResultBulkRow, ResultRow
from workbench.ledger.sql import table_of

if TYPE_CHECKING:
    import pyarrow as pa

#: the item columns a chunk of items can hold (``item_id`` is the item's ``id``)
ITEM_FIELDS = (
    "item_id", "position", "url", "normalized_url", "status", "attempts", "tries",
    "submitted_at", "started_at", "finished_at", "next_try_at", "duration_s", "worker_id",
    "cached", "error_type", "error_message", "traceback", "retryable", "carried",
)
#: the columns of a results chunk besides the pipeline's fields (``data``/``bulk``)
RESULT_COLUMNS = (
    "item_id", "url", "final_url", "http_status", "fetched_at", "content_sha256", "pipeline",
    "pipeline_version", "params_hash", "workbench_version", "cached", "from_stored_page",
    "duration_s", "timings",
)
#: a chunk of results holds about this many characters of stored JSON at most (the rows of
#: the next read follow the size of the last; the first read asks for ``keyset.FIRST_ROWS``)
CHUNK_BYTES = 32 << 20

# The distinct shapes of a batch's results with the first item of each: a loose index scan of
# (batch_id, shape, item_id), one seek per distinct shape (a batch has a handful), whatever the
# batch's size.
_SHAPES_SQL = text("""
WITH RECURSIVE s(shape) AS (
    SELECT min(shape) FROM results WHERE batch_id = :b
    UNION ALL
    SELECT (SELECT min(r.shape) FROM results r WHERE r.batch_id = :b AND r.shape > s.shape)
    FROM s WHERE s.shape IS NOT NULL
)
SELECT s.shape,
       (SELECT min(r.item_id) FROM results r WHERE r.batch_id = :b AND r.shape = s.shape)
           AS first_item,
       rs.fields
FROM s JOIN result_shapes rs ON rs.id = s.shape
""")


@dataclass(frozen=True)
class ResultField:
    """One field of a batch's results: its JSON kinds (``ledger.shapes``), whether every result
    has it, and whether it is stored apart (bulky) in any."""

    name: str
    kinds: frozenset[str]
    complete: bool
    bulky: bool


@dataclass(frozen=True)
class ResultSchema:
    """The fields of a batch's results in first-appearance order (item order, then the order
    of the pipeline's dict: the columns ``pandas.DataFrame(list_of_dicts)`` would give)."""

    fields: tuple[ResultField, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def get(self, name: str) -> ResultField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def select(self, names: Sequence[str] | None) -> ResultSchema:
        """The fields named (in the order given; unknown names are left out), or all."""
        if names is None:
            return self
        by_name = {f.name: f for f in self.fields}
        return ResultSchema(tuple(by_name[n] for n in dict.fromkeys(names) if n in by_name))

    @property
    def bulky(self) -> bool:
        return any(f.bulky for f in self.fields)


def schema_from_shapes(shapes: Sequence[str]) -> ResultSchema:
    """Merge shapes (JSON, in the order of their first item) into one schema."""
    order: dict[str, None] = {}
    kinds: dict[str, set[str]] = {}
    seen: dict[str, int] = {}
    bulky: set[str] = set()
    for shape in shapes:
        for name, kind, big in json.loads(shape):
            order.setdefault(name)
            kinds.setdefault(name, set()).add(kind)
            seen[name] = seen.get(name, 0) + 1
            if big:
                bulky.add(name)
    return ResultSchema(tuple(
        ResultField(n, frozenset(kinds[n]), seen[n] == len(shapes), n in bulky) for n in order
    ))


def decode_json(values: Sequence[Any]) -> list[Any]:
    """The values of a JSON column (``timings``) as read: text on SQLite, decoded already on
    PostgreSQL (asyncpg's codec). Text is parsed in one go (``codec.loads_many``)."""
    texts = [n for n, v in enumerate(values) if isinstance(v, str)]
    if not texts:
        return list(values)
    if len(texts) == len(values):
        return codec.loads_many(values)
    out = list(values)
    for n, v in zip(texts, codec.loads_many([values[n] for n in texts]), strict=True):
        out[n] = v
    return out


def decode_fields(data: Sequence[str], bulk: bytes | None) -> list[Any]:
    """The pipeline's values of each row of a chunk: small fields and, where read, bulky ones
    (``bulk``: a JSON object a line) in their places (one JSON parse per column of the chunk,
    ``codec.loads_many``)."""
    values = codec.loads_many(data)
    if bulk is not None:
        lines = bulk.decode().split("\n")
        rows = [n for n, b in enumerate(lines) if b != "{}"]
        for n, extra in zip(rows, codec.loads_many([lines[n] for n in rows]), strict=True):
            if isinstance(values[n], dict):
                values[n].update(extra)
    return values


class ReadsMixin:
    """Schemas and chunked, projected reads, for ``Ledger``: uses its read engine."""

    read_engine: AsyncEngine
    #: when a list, the SQL of every chunk read is appended to it (chunks run on the driver,
    #: past SQLAlchemy's events): for tests and for seeing what a read costs
    sql_trace: list[str] | None = None

    async def result_schema(self, batch_id: str) -> ResultSchema:
        """Every field of the batch's results, with kinds and storage (few index seeks)."""
        with translate_errors("reading the fields of results"):
            async with self.read_engine.connect() as conn:
                rows = (await conn.execute(_SHAPES_SQL, {"b": batch_id})).all()
        return schema_from_shapes([r.fields for r in sorted(rows, key=lambda r: r.first_item)])

    async def result_chunks(
        self, batch_id: str, *, chunk_rows: int, bulk: bool, carried: bool = False,
        after: int = 0,
    ) -> AsyncGenerator[ResultChunk, None]:
        """The batch's done items with their results, at most ``chunk_rows`` a chunk in item
        order (``ResultChunk``: provenance as an Arrow table, the small fields as JSON lines,
        and with ``bulk`` the bulky fields' JSON lines). A chunk is one SQL row: provenance as
        lines built by the database (``chunks.row_line``), the small fields' and bulky parts'
        JSON lines as they are stored, concatenated by it (no Python object per row or value:
        3 KB texts came back as a Python string each, then joined and encoded again). Without
        ``bulk`` the bulky parts are never read. A chunk holds about ``CHUNK_BYTES`` of stored
        JSON at most (at least one row; ``_keyset``), so that one SQL value stays far below
        the databases' 1 GB limit and memory follows the chunk however large the pages.

        The fields are picked out of ``data`` by the client (``client.fields``), not by the
        database: SQLite's ``->`` took 0.52 s for 5 fields of 100k results, against 0.14 s to
        read ``data`` and ~0.2 s to parse it whole; PostgreSQL's saved the client 15 % of its
        CPU but cost more time in all (the server parses the text again for every field)."""
        i, r, b = table_of(ItemRow), table_of(ResultRow), table_of(ResultBulkRow)
        cols: list[Any] = [
            i.c.id.label("item_id"), i.c.url, r.c.final_url, r.c.http_status,
            type_coerce(r.c.fetched_at, Text).label("fetched_at"), r.c.content_sha256,
            r.c.pipeline, r.c.pipeline_version, r.c.params_hash, r.c.workbench_version,
            r.c.cached, r.c.from_stored_page, i.c.duration_s,
            cast(r.c.timings, Text).label("timings"),
        ]
        if carried:
            cols.append(i.c.carried)
        names = [c.key for c in cols]
        import pyarrow as pa

        schema = pa.schema([(n, result_arrow()[n]) for n in names])
        joined = i.join(r, r.c.item_id == i.c.id)
        cols.append(r.c.data)
        if bulk:
            joined = joined.outerjoin(b, b.c.item_id == i.c.id)
            cols.append(func.coalesce(b.c.data, "{}").label("bulk"))
        inner = (
            select(*cols).select_from(joined)
            .where(i.c.batch_id == bindparam("b"), i.c.status == "done",
                   i.c.id > bindparam("after"))
            .order_by(i.c.id).limit(bindparam("n"))
        ).subquery()
        sqlite = self.read_engine.dialect.name == "sqlite"

        def lines(value: Any, blob: bool = False) -> Any:  # one text (or UTF-8) a chunk
            if sqlite:
                out = func.group_concat(value, literal("\n"))
                return cast(out, LargeBinary) if blob else out
            out = func.string_agg(value, aggregate_order_by(literal("\n"), inner.c.item_id))
            return func.convert_to(out, "UTF8") if blob else out

        outs = [lines(row_line({n: inner.c[n] for n in names}, sqlite)).label("lines"),
                func.count().label("n"), func.max(inner.c.item_id).label("last"),
                lines(inner.c.data).label("data")]
        if bulk:
            outs.append(lines(inner.c.bulk, blob=True).label("bulk"))
        agg = select(*outs)
        rows_read = self._keyset(agg, batch_id, chunk_rows, after, "reading results",
                                 aggregated=True, max_bytes=CHUNK_BYTES)
        async with contextlib.aclosing(rows_read) as chunks:
            async for chunk in chunks:
                table, order = rows_table(chunk.pop("lines"), schema, sqlite=sqlite)
                data, extra = chunk.pop("data"), chunk.pop("bulk", None)
                del chunk
                if order is not None:  # the database mixed the rows: the other lines follow
                    split = data.split("\n")
                    data = "\n".join(split[k] for k in order)
                    if extra is not None:
                        parts = bytes(extra).split(b"\n")
                        extra = b"\n".join(parts[k] for k in order)
                box = [ResultChunk(table, data, None if extra is None else bytes(extra))]
                del table, data, extra
                yield box.pop()

    async def item_chunks(
        self,
        batch_id: str,
        *,
        columns: Sequence[str],
        chunk_rows: int,
        statuses: Sequence[str] | None = None,
        after: int = 0,
    ) -> AsyncGenerator[dict[str, list[Any]], None]:
        """The batch's items (of ``statuses``, or all), ``chunk_rows`` a chunk in item order,
        with the ``columns`` named (of ``ITEM_FIELDS``; ``item_id`` always), as lists."""
        built = await self._item_query(batch_id, columns, statuses, after)
        if built is not None:
            q, after, _ = built
            rows_read = self._keyset(q, batch_id, chunk_rows, after, "reading items")
            async with contextlib.aclosing(rows_read) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def item_tables(
        self,
        batch_id: str,
        *,
        columns: Sequence[str],
        chunk_rows: int,
        statuses: Sequence[str] | None = None,
        after: int = 0,
    ) -> AsyncGenerator[pa.Table, None]:
        """``item_chunks`` as Arrow tables (``item_arrow()`` types; times naive UTC): each chunk
        is one row of SQL, its items as lines built by the database (``chunks.row_line``) and
        parsed by Arrow's reader. No Python object per value: on 100k items, 0.53 s of CPU against
        ~0.95 s for rows of values turned into columns."""
        sqlite = self.read_engine.dialect.name == "sqlite"
        # every item on SQLite: chunks by id span (see ``_item_query``)
        built = await self._item_query(batch_id, columns, statuses, after,
                                       span=sqlite and not statuses)
        if built is None:
            return
        q, after, span_to = built
        inner = q.subquery()
        names = list(inner.c.keys())
        line = row_line({n: inner.c[n] for n in names}, sqlite)
        if sqlite:
            lines = func.group_concat(line, literal("\n"))
        else:
            lines = func.string_agg(line, aggregate_order_by(literal("\n"), inner.c.item_id))
        agg = select(lines.label("lines"), func.count().label("n"),
                     func.max(inner.c.item_id).label("last"))
        import pyarrow as pa

        schema = pa.schema([(n, item_arrow()[n]) for n in names])
        rows_read = self._keyset(agg, batch_id, chunk_rows, after, "reading items",
                                 aggregated=True, span_to=span_to)
        async with contextlib.aclosing(rows_read) as chunks:
            async for chunk in chunks:
                yield rows_table(chunk["lines"], schema, sqlite=sqlite)[0]

    async def _item_query(
        self, batch_id: str, columns: Sequence[str], statuses: Sequence[str] | None, after: int,
        *, span: bool = False,
    ) -> tuple[Any, int, int | None] | None:
        """The query of ``item_chunks``, where it starts, and with ``span`` (items of every
        status only) the batch's last item id. ``span``: a chunk is the span of ids (after,
        after + n], not n rows in id order: a batch's ids are consecutive, so SQLite reads
        the span straight off the primary key, with no ordered, limited subquery to fill
        first (a 1M-item status(): 3.5 -> 2.6 s of SQLite's CPU; ``_keyset``'s ``span_to``)."""
        unknown = [c for c in columns if c not in ITEM_FIELDS]
        if unknown:
            raise InvalidInputError(
                f"unknown item column(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(ITEM_FIELDS)}"
            )
        t = table_of(ItemRow)
        cols: list[Any] = [t.c.id.label("item_id")]
        for name in dict.fromkeys(columns):
            if name == "item_id":
                continue
            col = t.c[name]
            cols.append(type_coerce(col, Text).label(name) if name in TIMES else col)
        q = select(*cols)
        if statuses and len(statuses) == 1:
            # (batch_id, status, id): the items of one status in id order, straight
            q = q.where(t.c.batch_id == bindparam("b"), t.c.status == statuses[0],
                        t.c.id > bindparam("after"))
        else:
            # Items of every status in id order: a primary-key range over the batch's ids (a
            # batch's ids are consecutive), the batch compared as an expression so that no
            # planner walks (batch_id, status, id) and sorts the whole batch for every chunk:
            # that was 7 s a chunk of a 1M-item status() on SQLite.
            lo, hi = await self._id_span(batch_id)
            if lo is None or hi is None:
                return None
            after = max(after, lo - 1)
            q = q.where(t.c.id > bindparam("after"), (t.c.batch_id + "") == bindparam("b"))
            if span:
                # the span's end the only upper bound: given `id <= hi` as well, SQLite took
                # that one for its range and read on to the batch's end for every chunk
                return q.where(t.c.id <= bindparam("after") + bindparam("n")), after, hi
            q = q.where(t.c.id <= hi)
            if statuses:
                # not IN (its expanding parameter and positional binds did not mix), and the
                # status as an expression too: compared as a column, SQLite walked
                # (status, worker_id) for every piece and sorted it (0.59 s a piece of 20,000
                # of a 1M-item batch, against 0.017 s over the primary key)
                q = q.where(or_(*((t.c.status + "") == s for s in statuses)))
        return q.order_by(t.c.id).limit(bindparam("n")), after, None

    async def _id_span(self, batch_id: str) -> tuple[int | None, int | None]:
        """The first and last item id of a batch: the first and last of each status, each one
        seek of the (batch, status, id) index (one ``min``/``max`` over the batch walked all its
        entries: 0.17-0.19 s at 1M items on SQLite, 0.2 ms so)."""
        t = table_of(ItemRow)

        def end(of: Any, status: str) -> Any:
            return select(of(t.c.id)).where(t.c.batch_id == batch_id,
                                            t.c.status == status).scalar_subquery()

        statuses = [s.value for s in ItemStatus]
        with translate_errors("reading items"):
            async with self.read_engine.connect() as conn:
                row = (await conn.execute(select(
                    *(end(func.min, s) for s in statuses), *(end(func.max, s) for s in statuses)
                ))).one()
        firsts = [v for v in row[: len(statuses)] if v is not None]
        lasts = [v for v in row[len(statuses) :] if v is not None]
        return (min(firsts), max(lasts)) if firsts else (None, None)

    def _keyset(
        self, q: Any, batch_id: str, chunk_rows: int, after: int, doing: str,
        *, aggregated: bool = False, max_bytes: int | None = None, span_to: int | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``keyset.chunks`` on the read engine (its docstring says how)."""
        return keyset.chunks(self.read_engine, q, batch_id, chunk_rows, after, doing,
                             aggregated=aggregated, max_bytes=max_bytes, span_to=span_to,
                             sql_trace=self.sql_trace)
