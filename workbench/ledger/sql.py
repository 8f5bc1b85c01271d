"""Small helpers every ledger module uses: the clock, rows as dicts, a model's ``Table``,
``IN (...)`` lists cut into chunks that stay under SQLite's limit on bound variables, and a
statement run on the driver itself for the rare million-row result."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import DeclarativeBase

T = TypeVar("T")

CHUNK = 500  # rows per IN (...) lookup; well under SQLite's variable limit
TUPLE_CHUNK = 400  # (id, attempt) pairs per IN (...): two variables each


def utcnow() -> datetime:
    return datetime.now(UTC)


def table_of(model: type[DeclarativeBase]) -> Table:
    """The ``Table`` of a mapped class (``Model.__table__`` is typed as a mere ``FromClause``,
    which has no ``insert``/``delete`` and is refused by ``update``/``delete`` in type checks)."""
    return cast(Table, model.__table__)


def row_dict(row: Any) -> dict[str, Any]:
    """A result row as a plain dict of its columns."""
    return dict(row._mapping)


def chunks(ids: Sequence[T], size: int = CHUNK) -> list[Sequence[T]]:
    """``ids`` in slices of at most ``size``, for one ``IN (...)`` each."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


async def driver_rows(conn: AsyncConnection, stmt: Any) -> list[tuple[Any, ...]]:
    """The rows of ``stmt`` (every parameter bound) run on the driver of ``conn`` itself,
    inside its transaction if one is open: plain tuples, no SQLAlchemy row or type processing
    (for a million rows that processing cost more than the statement's own work)."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = []
    for name in compiled.positiontup or ():
        value = compiled.params[name]
        bind = compiled.binds.get(name)  # None for the values of an expanded IN (...)
        process = bind.type.bind_processor(conn.dialect) if bind is not None else None
        params.append(process(value) if process else value)
    return await driver_run(conn, str(compiled), params)


async def driver_run(conn: AsyncConnection, sql: str, params: Sequence[Any]
                     ) -> list[tuple[Any, ...]]:
    """The rows of SQL already compiled for ``conn``'s dialect, its parameters in order (no
    type processing: plain values only), run on the driver as ``driver_rows`` runs them."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    if conn.dialect.name == "sqlite":
        cursor = await driver.execute(sql, params)
        try:
            return list(await cursor.fetchall())
        finally:
            await cursor.close()
    return [tuple(r) for r in await driver.fetch(sql, *params)]
