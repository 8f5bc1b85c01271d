"""Bulk INSERTs through the driver's executemany: 100k items of a submit, or a commit's results.

SQLAlchemy processes every parameter of every row in Python; for these inserts that was most of
the time. An ``InsertPlan`` compiles the INSERT once and converts only the values that need it;
a ``BulkInserter`` (one per ``Ledger``) keeps a plan per table, columns and shared values.
An INSERT may skip rows whose key exists (``ON CONFLICT DO NOTHING``, as the page store writes
content-addressed blobs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import DateTime, Table, bindparam, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class InsertPlan:
    """An INSERT run through the driver's executemany, with values converted by their column
    types but without SQLAlchemy's per-row parameter processing (most of the time of a 100k-URL
    submit, and of writing results): values shared by every row are converted once."""

    sql: str
    arrange: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]  # per-row columns that need one
    fixed_converters: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def build(
        cls, dialect: Any, table: Table, columns: Sequence[str], fixed: dict[str, Any],
        skip_existing: Sequence[str] = (),
    ) -> InsertPlan:
        """``skip_existing``: key columns; a row whose key exists is skipped, not an error."""
        given = [*columns, *fixed]
        values: dict[str, Any] = {c: bindparam(c) for c in given}
        if skip_existing:
            dialect_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
            stmt: Any = dialect_insert(table).values(values).on_conflict_do_nothing(
                index_elements=list(skip_existing)
            )
        else:
            stmt = insert(table).values(values)
        compiled = stmt.compile(dialect=dialect)
        order = list(compiled.positiontup or ())
        if sorted(order) != sorted(given):  # a column default would slip in unconverted
            raise AssertionError(f"parameters {order} are not the columns given {given}")
        converters = []
        for i, name in enumerate(columns):
            process: Callable[[Any], Any] | None = table.c[name].type.bind_processor(dialect)
            if dialect.name == "sqlite" and _holds_datetimes(table.c[name].type):
                process = _as_sqlite_text(process)
            if process is not None:
                converters.append((i, process))
        return cls(
            sql=str(compiled),
            arrange=itemgetter(*(given.index(name) for name in order)),
            converters=tuple(converters),
            # SQLite: a shared datetime becomes text once, not in the driver for every row (its
            # adapter ran per row: ~0.7 s of a 1M-URL submit)
            fixed_converters=tuple(
                _as_sqlite_text(table.c[n].type.bind_processor(dialect))
                if dialect.name == "sqlite" else table.c[n].type.bind_processor(dialect)
                for n in fixed),
        )

    async def run(
        self, conn: AsyncConnection, rows: Sequence[tuple[Any, ...]], fixed: dict[str, Any],
        chunk: int = 5000,
    ) -> None:
        for start in range(0, len(rows), chunk):
            await conn.exec_driver_sql(self.sql, self.params(rows[start : start + chunk], fixed))

    def params(
        self, rows: Sequence[tuple[Any, ...]], fixed: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The driver's parameters for ``rows`` plus ``fixed`` (for ``executemany(self.sql)``,
        as ``ledger.direct`` runs it on a plain ``sqlite3`` connection)."""
        tail = tuple(
            process(value) if process else value
            for process, value in zip(self.fixed_converters, fixed.values(), strict=True)
        )
        if self.converters:
            rows = [self._convert(row) for row in rows]
        return [self.arrange(row + tail) for row in rows]

    def _convert(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, process in self.converters:
            values[i] = process(values[i])
        return tuple(values)


def _holds_datetimes(type_: Any) -> bool:
    """A DateTime column, or a type decorating one (``models.UTCDateTime``)."""
    return isinstance(type_, DateTime) or isinstance(getattr(type_, "impl_instance", None),
                                                     DateTime)


def _as_sqlite_text(process: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """``process``, then a datetime as the text sqlite3's default adapter gave it (that adapter
    is deprecated since Python 3.12; registering our own would change the process's global
    sqlite3 state, which a library must not)."""
    def convert(value: Any) -> Any:
        if process is not None:
            value = process(value)
        return value.isoformat(" ") if isinstance(value, datetime) else value
    return convert


class BulkInserter:
    """Runs INSERTs through an ``InsertPlan`` built on first use and kept for the next time."""

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], InsertPlan] = {}

    async def insert(
        self,
        conn: AsyncConnection,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        fixed: dict[str, Any],
        *,
        skip_existing: Sequence[str] = (),
    ) -> None:
        """INSERT ``rows`` (values of ``columns``) plus ``fixed`` values shared by every row;
        with ``skip_existing`` (key columns), rows whose key exists are skipped."""
        if not rows:
            return
        await self.plan(conn.dialect, table, columns, fixed, skip_existing).run(conn, rows, fixed)

    def plan(
        self, dialect: Any, table: Table, columns: Sequence[str], fixed: dict[str, Any],
        skip_existing: Sequence[str] = (),
    ) -> InsertPlan:
        """The plan of this INSERT, built on first use."""
        key = (table.name, tuple(columns), tuple(fixed), tuple(skip_existing))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = InsertPlan.build(
                dialect, table, columns, fixed, skip_existing
            )
        return plan
