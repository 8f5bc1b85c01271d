"""The pipeline's fields of a chunk of results, as DataFrame columns.

A field's dtype follows from its JSON kinds over the whole batch (``field_dtype``). Fields whose
values Arrow's JSON reader turns into exactly what Python's ``json`` gives -- integers, numbers,
booleans without gaps, strings, lists of strings, integers or booleans without gaps -- are
parsed by it (C++, no Python object per value until the column needs one); the others (objects,
mixed kinds, numbers in lists, numpy arrays, booleans or lists with gaps: pandas tells a missing
field, NaN, from a null one, None, there) by ``json`` in Python. Measured on 20,000 results of
~500 bytes of small fields: 127 ms with ``json``, 30 ms with Arrow.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from workbench.ledger.chunks import ResultChunk
from workbench.ledger.reads import ResultField, ResultSchema, decode_fields

#: a field the result does not have: NaN, as ``pandas.DataFrame(list_of_dicts)`` gives
MISSING = np.nan
_LISTS = {"as": pa.string(), "ai": pa.int64(), "ab": pa.bool_()}


def field_dtype(field: ResultField) -> Any:
    """The dtype of a pipeline field, from its JSON kinds over the whole batch: the rule pandas
    applies to a list of dicts."""
    kinds = field.kinds - {"n"}
    gaps = "n" in field.kinds or not field.complete
    if kinds == {"b"}:
        return object if gaps else "bool"
    if kinds == {"i"}:
        return "float64" if gaps else "int64"
    if kinds and kinds <= {"i", "f"}:
        return "float64"
    if kinds == {"s"}:
        return "str"
    return object


def _arrow_type(field: ResultField) -> pa.DataType | None:
    """The type Arrow parses the field as, or None where only Python's ``json`` is exact."""
    dtype = field_dtype(field)
    if dtype in ("int64", "float64", "bool"):
        return {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}[dtype]
    if dtype == "str":
        return pa.large_string()
    lists = field.kinds - {"a"}
    if field.complete and "n" not in field.kinds and len(lists) <= 1 and lists <= set(_LISTS):
        return pa.list_(_LISTS[next(iter(lists), "as")])
    return None


def json_table(texts: Sequence[str] | str | bytes, schema: pa.Schema) -> pa.Table:
    """JSON objects (texts, or one text of them a line, perhaps UTF-8) -> a table of
    ``schema`` (missing fields null), by Arrow."""
    import pyarrow.json as pj

    if isinstance(texts, bytes):
        body = texts
    else:
        body = (texts if isinstance(texts, str) else "\n".join(texts)).encode()
    return pj.read_json(
        io.BytesIO(body),
        read_options=pj.ReadOptions(block_size=max(1 << 20, len(body) + 1)),
        parse_options=pj.ParseOptions(explicit_schema=schema,
                                      unexpected_field_behavior="ignore"),
        memory_pool=parse_pool(),
    )


@functools.cache
def parse_pool() -> pa.MemoryPool | None:
    """Where the parsed fields live: Arrow's jemalloc pool where this pyarrow has one (None:
    Arrow's default, mimalloc). The texts of a 50,000-row ``iter_results`` chunk are ~150 MB of
    it, parsed a piece at a time while the last chunk's are freed. On 200k ``scale-text``
    results, a loop dropping each chunk: peak RSS growth 286-288 MB with jemalloc, 298-300 with
    mimalloc, 326 with the system allocator (benchmarks/NOTES.md). jemalloc keeps freed pages
    for a while, so the growth followed the batch until ``release_parsed`` handed them back
    after each chunk (tests/scale/test_chunks.py). A pool passed to each read, not the default
    pool: the rest of the process keeps Arrow's own choice."""
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return None


def release_parsed() -> None:
    """Hand the pages ``parse_pool`` has freed back to the system (jemalloc's purge; what
    a chunk let go leaves). Changes no setting: the pool only drops what it had cached."""
    pool = parse_pool()
    if pool is not None:
        pool.release_unused()


def _from_arrow(values: Any, field: ResultField) -> Any:
    dtype = field_dtype(field)
    if dtype == "str":
        return pd.array(values, dtype="str")
    if dtype == "float64":
        return values.to_numpy(zero_copy_only=False).astype("float64")
    if dtype in ("int64", "bool"):
        return values.to_numpy(zero_copy_only=False)
    if pa.types.is_list(values.type) and values.type.value_type == pa.string():
        return pd.Series(_string_lists(values), dtype=object)
    return pd.Series(values.to_pylist(), dtype=object)


def _string_lists(values: pa.ChunkedArray) -> list[list[str]]:
    """Lists of strings (no nulls: ``_arrow_type``) as Python lists in which each distinct
    string is one object per Arrow chunk (one read of the ledger). A chunk's keyword lists
    repeat their words: 250,000 values, 43 distinct, in 50,000 ``scale-text`` results, 19 MB
    as ``to_pylist`` makes them (an object per value) against ~5 MB so; 76 against 173 ms for
    50,000 lists of five."""
    out: list[list[str]] = []
    for chunk in values.chunks:
        encoded = pc.dictionary_encode(chunk.flatten())
        distinct = np.array(encoded.dictionary.to_pylist(), dtype=object)
        objects = distinct[encoded.indices.to_numpy(zero_copy_only=False)]
        ends = np.cumsum(pc.list_value_length(chunk).to_numpy(zero_copy_only=False)).tolist()
        out.extend(objects[start:end].tolist()
                   for start, end in zip([0, *ends[:-1]], ends, strict=True))
    return out


def _from_python(values: list[Any], field: ResultField) -> Any:
    dtype = field_dtype(field)
    if dtype is object:
        return pd.Series(values, dtype=object)
    try:
        if dtype == "str":
            return pd.array(pa.array(values, type=pa.large_string(), from_pandas=True),
                            dtype="str")
        return np.array(values, dtype=dtype)
    except (OverflowError, TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.Series(values, dtype=object)  # an integer beyond int64, say


def field_columns(
    chunk: ResultChunk, fields: ResultSchema
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The columns of ``fields`` (but ``item_id`` and ``url``) for a chunk of results, and the
    raw values (``MISSING`` where absent) of a field named ``item_id`` or ``url``."""
    by_arrow = {f.name: t for f in fields.fields
                if f.name not in ("item_id", "url") and (t := _arrow_type(f)) is not None}
    columns: dict[str, Any] = {}
    if by_arrow:
        try:
            columns = _arrow_columns(chunk, fields, by_arrow)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
            columns = {}  # an integer beyond int64, a lone surrogate: Python reads it
    rest = [f for f in fields.fields if f.name not in columns]
    overrides: dict[str, list[Any]] = {}
    if rest:
        datas = [d if isinstance(d, dict) else {"value": d}
                 for d in decode_fields(chunk.data.split("\n"), chunk.bulk)]
        for f in rest:
            values = [d.get(f.name, MISSING) for d in datas]
            if f.name in ("item_id", "url"):
                overrides[f.name] = values
            else:
                columns[f.name] = _from_python(values, f)
    return {f.name: columns[f.name] for f in fields.fields if f.name in columns}, overrides


def _arrow_columns(chunk: ResultChunk, fields: ResultSchema,
                   types: dict[str, pa.DataType]) -> dict[str, Any]:
    table = json_table(chunk.data, pa.schema(list(types.items())))
    bulky = [f.name for f in fields.fields if f.bulky and f.name in types]
    extra = None
    if bulky and chunk.bulk is not None:
        extra = json_table(chunk.bulk, pa.schema([(n, types[n]) for n in bulky]))
    out = {}
    for f in fields.fields:
        if f.name not in types:
            continue
        values = table.column(f.name)
        if extra is not None and f.name in bulky:
            values = bulk_column(extra.column(f.name), values)
        out[f.name] = _from_arrow(values, f)
    return out


def bulk_column(bulky: pa.ChunkedArray, small: pa.ChunkedArray) -> pa.ChunkedArray:
    """A field's values: its bulky ones where stored apart, its small ones elsewhere (no copy
    when every value is of one kind, as a field of long texts has)."""
    if small.null_count == len(small):
        return bulky
    if bulky.null_count == len(bulky):
        return small
    return pc.coalesce(bulky, small)
