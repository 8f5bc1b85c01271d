"""How a result is stored: small fields and bulky values apart, and the result's *shape*.

A pipeline's dict is written in two parts. ``results.data`` keeps every field in the pipeline's
order, except that a bulky value (a string longer than ``BULKY_CHARS``, or a list or object whose
JSON is) is replaced by ``null`` there and stored in ``result_bulk.data`` instead, keyed by the
field's name. Reading metadata of a million items then never touches their texts: a projection
that names no bulky field reads ``results`` only (``ledger.reads``). Measured on results of the
``article`` kind (~3.5 KB, 3 KB of it text): the small part is ~500 bytes.

The *shape* of a result is its fields in order, each with its JSON kind and whether it was stored
bulky: ``[["title", "s", 0], ["text", "s", 1], ["keywords", "as", 0]]``. Each distinct shape is
stored once in ``result_shapes`` under a 16-hex-digit id, and every result row names its shape, so
the fields and types of a whole batch (``ledger.reads.ResultSchema``) come from a few index seeks,
not from reading the batch.

Kinds: ``n`` null, ``b`` boolean, ``i`` integer, ``f`` float, ``s`` string, ``o`` object,
``v<dtype>`` a numpy array (``workbench.core.codec``; ``v<dtype>/<ndim>`` when not
one-dimensional), and for lists ``a`` (empty), ``as`` strings, ``ai`` integers, ``af`` numbers,
``ab`` booleans, ``ax`` anything else (mixed, nested, nulls).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from workbench.core.codec import NDARRAY_KEY
from workbench.ledger.bulk import BulkInserter
from workbench.ledger.models import ResultBulkRow, ResultShapeRow
from workbench.ledger.sql import chunks, table_of

#: a string (or the JSON of a list or object) longer than this is stored apart from the rest
BULKY_CHARS = 1024


@dataclass(frozen=True)
class StoredResult:
    """One pipeline dict as written: ``data`` (small fields, bulky ones null), ``bulk`` (the
    bulky fields as a JSON object, or None), and its shape (id and JSON)."""

    data: str
    bulk: str | None
    shape_id: str
    shape: str


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def kind_of(value: Any) -> str:
    """The JSON kind of a decoded value (see the module docstring)."""
    if value is None:
        return "n"
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    if isinstance(value, str):
        return "s"
    if isinstance(value, dict):
        if NDARRAY_KEY in value and "dtype" in value:
            shape = value.get("shape")
            ndim = len(shape) if isinstance(shape, list) else 1
            return f"v{value['dtype']}" + ("" if ndim == 1 else f"/{ndim}")
        return "o"
    if isinstance(value, list):
        if not value:
            return "a"
        kinds = {kind_of(v) for v in value}
        if kinds == {"s"}:
            return "as"
        if kinds == {"b"}:
            return "ab"
        if kinds == {"i"}:
            return "ai"
        if kinds <= {"i", "f"}:
            return "af"
        return "ax"
    return "ax"  # not produced by json.loads


def store_result(data: str) -> StoredResult:
    """Split the JSON text of a pipeline's dict (``workbench.core.codec.dumps``) for storage.

    Text of ``BULKY_CHARS`` or less cannot hold a bulky value and is stored as it is. Long
    strings are found by their length; a list or object is measured (encoded) only while the
    rest of the text could still hold a bulky one. ~40 -> ~25 us a 3 KB result here."""
    obj = json.loads(data)
    if not isinstance(obj, dict):  # frames show a non-dict result as one field, "value"
        return StoredResult(data, None, *_shape((("value", kind_of(obj), 0),)))
    bulky: dict[str, Any] = {}
    if len(data) > BULKY_CHARS:
        rest = len(data)
        for key, value in obj.items():
            if isinstance(value, str) and len(value) > BULKY_CHARS:
                bulky[key] = value
                rest -= len(value)
        if rest > BULKY_CHARS:
            for key, value in obj.items():
                if isinstance(value, (list, dict)) and key not in bulky \
                        and len(_dumps(value)) > BULKY_CHARS:
                    bulky[key] = value
        for key in bulky:
            obj[key] = None  # keeps the field's place in the order
    shape = _shape(tuple((k, kind_of(bulky.get(k, v)), int(k in bulky))
                         for k, v in obj.items()))
    if not bulky:
        return StoredResult(data, None, *shape)
    return StoredResult(_dumps(obj), _dumps(bulky), *shape)


_SHAPES: dict[tuple[tuple[str, str, int], ...], tuple[str, str]] = {}


def _shape(fields: tuple[tuple[str, str, int], ...]) -> tuple[str, str]:
    """(id, JSON) of a shape; remembered, since a batch has a handful (bounded all the same)."""
    known = _SHAPES.get(fields)
    if known is None:
        text = _dumps([list(f) for f in fields])
        known = (shape_id(text), text)
        if len(_SHAPES) > 10_000:
            _SHAPES.clear()
        _SHAPES[fields] = known
    return known


def shape_id(shape: str) -> str:
    return hashlib.sha1(shape.encode(), usedforsecurity=False).hexdigest()[:16]


def joined_data(data: str, bulk: str | None) -> str:
    """The pipeline's dict as one JSON text again (small fields and bulky ones in place)."""
    if not bulk:
        return data
    obj = json.loads(data)
    obj.update(json.loads(bulk))
    return _dumps(obj)


async def write_parts(
    conn: AsyncConnection,
    inserter: BulkInserter,
    bulk_rows: Sequence[tuple[int, str]],
    shapes: dict[str, str],
) -> None:
    """Insert the ``(item_id, bulk JSON)`` rows and register ``shapes`` (id -> JSON) not yet
    known, in the caller's transaction (with the results rows that name them)."""
    if bulk_rows:
        await inserter.insert(conn, table_of(ResultBulkRow), ("item_id", "data"), bulk_rows, {})
    if shapes:
        t = table_of(ResultShapeRow)
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        # sorted: concurrent writers take the keys' locks in one order (no deadlock)
        values = [{"id": k, "fields": shapes[k]} for k in sorted(shapes)]
        await conn.execute(dialect.insert(t).values(values).on_conflict_do_nothing())


async def delete_parts(conn: AsyncConnection, results: Table, item_ids: Sequence[int]) -> None:
    """Delete the results (and their bulky parts) of ``item_ids``."""
    bulk = table_of(ResultBulkRow)
    for chunk in chunks(item_ids):
        await conn.execute(results.delete().where(results.c.item_id.in_(chunk)))
        await conn.execute(bulk.delete().where(bulk.c.item_id.in_(chunk)))
