"""Small helpers every ledger module uses: the clock, rows as dicts, a model's ``Table``, and
``IN (...)`` lists cut into chunks that stay under SQLite's limit on bound variables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Table
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
