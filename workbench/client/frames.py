"""Ledger chunks -> pandas DataFrames (pure functions, no I/O).

The ledger hands back a batch column by column, a chunk at a time (``workbench.ledger.reads``);
these functions turn one chunk into a DataFrame whose columns and dtypes depend only on the
batch's schema, never on the chunk: every chunk of ``iter_results`` has the same dtypes.

The dtype of a pipeline field follows from its JSON kinds over the whole batch
(``ResultSchema``), by the rule pandas applies to a list of dicts, so ``results()`` is what it
always was: integers -> int64 (float64 when some are null or missing), numbers -> float64,
booleans -> bool (object with nulls), strings -> str, anything else or a mix -> object.
Provenance columns have fixed dtypes in chunks (str, Int64, datetime64[us, UTC], bool, float64);
``finish_whole`` then gives a whole-batch frame the dtypes pandas inferred before chunks
existed (a column with no value at all is object, an all-NaT time is datetime64[s, UTC]).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from workbench.client.fields import MISSING, field_columns, field_dtype
from workbench.core.status import ITEM_STATUSES, Counts
from workbench.ledger.chunks import ResultChunk
from workbench.ledger.reads import ResultSchema, decode_json

ITEM_COLUMNS = [
    "item_id", "position", "url", "normalized_url", "status", "attempts", "tries",
    "submitted_at", "started_at", "finished_at", "next_try_at", "duration_s", "worker_id",
    "cached", "error_type", "error_message", "retryable",
]
FAILURE_COLUMNS = [
    "item_id", "url", "error_type", "error_message", "retryable", "attempts", "tries",
    "finished_at", "traceback",
]
PROVENANCE_COLUMNS = [
    "final_url", "http_status", "fetched_at", "content_sha256", "pipeline", "pipeline_version",
    "params_hash", "workbench_version", "cached", "from_stored_page", "duration_s", "timings",
]
_TIME_COLUMNS = ("submitted_at", "started_at", "finished_at", "next_try_at", "fetched_at",
                 "created_at", "first_started_at", "last_finished_at")
_TIME = "datetime64[us, UTC]"
_ITEM_DTYPES: dict[str, Any] = {
    "item_id": "int64", "position": "int64", "attempts": "int64", "tries": "int64",
    "duration_s": "float64", "cached": "bool", "retryable": "boolean",
    "status": pd.CategoricalDtype(ITEM_STATUSES),
    **{c: _TIME for c in ("submitted_at", "started_at", "finished_at", "next_try_at")},
}
_PROVENANCE_DTYPES: dict[str, Any] = {
    "final_url": "str", "http_status": "Int64", "fetched_at": _TIME, "content_sha256": "str",
    "pipeline": "str", "pipeline_version": "str", "params_hash": "str",
    "workbench_version": "str", "cached": "bool", "from_stored_page": "bool",
    "duration_s": "float64", "timings": object,
}


def _times(df: pd.DataFrame) -> pd.DataFrame:
    for col in _TIME_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_datetime(df[col], utc=True)
    return df


def _chunk_times(df: pd.DataFrame) -> pd.DataFrame:
    """Time columns not built by ``time_column`` (a pipeline field named like one)."""
    for col in _TIME_COLUMNS:
        if col in df.columns and str(df[col].dtype) != _TIME:
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601").astype(_TIME)
    return df


def time_column(values: Sequence[Any]) -> pd.Series:
    """Times as stored (ISO text on SQLite, naive UTC datetimes on PostgreSQL, None) ->
    datetime64[us, UTC], parsed by numpy (5x ``pandas.to_datetime`` on ISO text)."""
    try:
        parsed = np.array(values, dtype="datetime64[us]")
    except (ValueError, TypeError):  # an offset or an odd format: pandas reads those
        return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True,
                                        format="ISO8601").astype(_TIME))
    return pd.Series(parsed).dt.tz_localize("UTC")


def string_column(values: Sequence[Any]) -> Any:
    """Strings (None: missing) as pandas' ``str`` dtype, through Arrow directly (2x
    ``pd.array(values, dtype="str")``)."""
    try:
        return pd.array(pa.array(values, type=pa.large_string(), from_pandas=True), dtype="str")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.array(values, dtype="str")


_STATUS_DTYPE = pd.CategoricalDtype(ITEM_STATUSES)
_STATUS_CODES = {s: n for n, s in enumerate(ITEM_STATUSES)}


def _objects(values: Sequence[Any]) -> pd.Series:
    return pd.Series(values, dtype=object)


# ------------------------------------------------------------------ items
def items_frame(table: pa.Table, columns: Sequence[str] = ITEM_COLUMNS) -> pd.DataFrame:
    """A chunk of items (``Ledger.item_tables``) with ``columns``, in fixed dtypes."""
    return pd.DataFrame({c: _item_column(c, table.column(c)) for c in columns})


def _item_column(name: str, values: pa.ChunkedArray) -> Any:
    dtype = _ITEM_DTYPES.get(name, "str")
    if dtype == _TIME:
        return pd.Series(values.to_numpy(zero_copy_only=False)).dt.tz_localize("UTC")
    if dtype == "str":
        return pd.array(values, dtype="str")
    if name == "status":
        codes = np.full(len(values), -1, dtype=np.int8)
        if len(values):
            encoded = values.combine_chunks().dictionary_encode()
            lookup = np.array([_STATUS_CODES.get(s, -1)
                               for s in encoded.dictionary.to_pylist()], dtype=np.int8)
            indices = encoded.indices.to_numpy(zero_copy_only=False)
            codes = lookup[indices] if len(lookup) else codes
        return pd.Categorical.from_codes(codes, dtype=_STATUS_DTYPE)
    if dtype == "boolean":
        return values.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get).array
    return values.to_numpy(zero_copy_only=False).astype(dtype)


def failures_frame(chunk: Mapping[str, Sequence[Any]],
                   columns: Sequence[str] = FAILURE_COLUMNS) -> pd.DataFrame:
    """A chunk of failed items with ``columns`` (``FAILURE_COLUMNS`` by default)."""
    return items_frame(chunk, columns)


# ------------------------------------------------------------------ results
def result_columns(batch: ResultSchema, fields: ResultSchema) -> list[str]:
    """The columns of a results frame: ``item_id``, ``url``, the ``fields``, provenance (a
    provenance column named like a field of the batch gets a ``_``)."""
    names = set(batch.names)
    return ["item_id", "url", *(n for n in fields.names if n not in ("item_id", "url")),
            *(c if c not in names else f"_{c}" for c in PROVENANCE_COLUMNS)]


def results_frame(chunk: ResultChunk, batch: ResultSchema,
                  fields: ResultSchema | None = None) -> pd.DataFrame:
    """A chunk of results (``Ledger.result_chunks``): ``item_id``, ``url``, the pipeline's
    ``fields`` (all of the ``batch`` by default) as columns, then provenance. A pipeline field
    named ``item_id`` or ``url`` wins where the item has one; one named like a provenance
    column wins too, and provenance gets a ``_``."""
    fields = batch if fields is None else fields
    table = chunk.table
    picked, overrides = field_columns(chunk, fields)
    columns: dict[str, Any] = {"item_id": table.column("item_id").to_numpy()}
    if overrides:
        own_ids = table.column("item_id").to_pylist()
        own_urls = table.column("url").to_pylist()
        for key, own in (("item_id", own_ids), ("url", own_urls)):
            if key in overrides:
                given = [v if x is MISSING else x for x, v in zip(overrides[key], own,
                                                                  strict=True)]
                columns[key] = np.asarray(given, dtype="int64") if key == "item_id" else given
        if "url" in overrides:
            columns["url"] = string_column(columns["url"]) if key_is_str(fields, "url") \
                else _objects(columns["url"])
    if "url" not in columns:
        columns["url"] = pd.array(table.column("url"), dtype="str")
    columns.update(picked)
    names = set(batch.names)
    for name in PROVENANCE_COLUMNS:
        col = name if name not in names else f"_{name}"
        dtype = _PROVENANCE_DTYPES[name]
        values = table.column(name)
        if name == "timings":
            columns[col] = _objects([v if isinstance(v, dict) else {}
                                     for v in decode_json(values.to_pylist())])
        elif dtype == _TIME:
            columns[col] = pd.Series(values.to_numpy(zero_copy_only=False)).dt.tz_localize("UTC")
        elif dtype == "str":
            columns[col] = pd.array(values, dtype="str")
        elif dtype == "Int64":
            columns[col] = values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get).array
        else:
            columns[col] = values.to_numpy(zero_copy_only=False).astype(dtype)
    return _chunk_times(pd.DataFrame(columns))


def key_is_str(fields: ResultSchema, key: str) -> bool:
    field = fields.get(key)
    return field is None or field_dtype(field) == "str"


def finish_whole(df: pd.DataFrame, object_if_empty: Collection[str]) -> pd.DataFrame:
    """A whole-batch frame (the chunks concatenated) with the dtypes pandas infers for the
    whole: a column of ``object_if_empty`` with no value at all is object (None), a time column
    with none is datetime64[s, UTC]."""
    for col in df.columns:
        s = df[col]
        if col in object_if_empty and s.dtype == "str" and s.isna().all():
            df[col] = _objects([None] * len(s))
        elif str(s.dtype) == _TIME and s.isna().all():
            df[col] = s.astype("datetime64[s, UTC]")
    return df


#: the string columns of items and results that hold None until there is a value
NULLABLE_STRINGS = frozenset({
    "url", "normalized_url", "worker_id", "error_type", "error_message", "traceback",
    "final_url", "content_sha256", "_final_url", "_content_sha256",
})


def empty_results_frame(batch: ResultSchema, fields: ResultSchema | None = None
                        ) -> pd.DataFrame:
    """The frame of a batch with no results: the columns, and the dtypes pandas gave before."""
    cols = result_columns(batch, batch if fields is None else fields)
    df = pd.DataFrame(index=pd.RangeIndex(0), columns=cols, dtype="float64")
    df["item_id"] = df["item_id"].astype("int64")
    for name in ("http_status", "_http_status"):
        if name in df.columns:
            df[name] = df[name].astype("Int64")
    return _times(df)


def concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Chunks of one schema as one frame (a fresh RangeIndex)."""
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------ batches
def batches_frame(batches: Sequence[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for b in batches:
        counts = Counts(b["counts"])
        rows.append({
            "batch_id": b["id"],
            "name": b["name"],
            "pipeline": b["pipeline"],
            "pipeline_version": b["pipeline_version"],
            "created_at": b["created_at"],
            "total": counts.total,
            **{s: counts[s] for s in ITEM_STATUSES},
            "state": counts.state.value,
            "first_started_at": b.get("first_started_at"),
            "last_finished_at": b.get("last_finished_at"),
        })
    columns = ["batch_id", "name", "pipeline", "pipeline_version", "created_at", "total",
               *ITEM_STATUSES, "state", "first_started_at", "last_finished_at"]
    df = _times(pd.DataFrame(rows, columns=columns))
    for col in ("total", *ITEM_STATUSES):
        df[col] = df[col].astype("int64")
    return df
