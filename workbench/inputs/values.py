"""Table values as JSON: what a carried column's cells become (see ``workbench.inputs.tables``).

Numbers, strings, booleans and nulls stay as they are; NaN, NaT, ``pd.NA`` and ±inf become null;
datetimes, dates and times ISO 8601 strings (an aware datetime column as UTC, ``...Z``); numpy
scalars numbers; lists and dicts recursively; decimals floats; bytes hex; anything else its
``str()``. Whole columns are converted by dtype where numpy can do it, value by value otherwise.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["column_values", "json_list", "json_value"]


def column_values(col: pd.Series) -> list[Any]:
    """A column's values as JSON-safe Python objects, vectorised by dtype where it can be
    (100k rows x 5 columns on a busy 2-core machine: 1.6 s value by value, 0.24 s so)."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind in "biu":
            return col.tolist()
        if dtype.kind == "f":
            return _floats(col.to_numpy())
        if dtype.kind == "M":
            return _datetimes(col.to_numpy(), utc=False)
        if dtype.kind == "O":
            return json_list(col.tolist())
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _datetimes(col.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(), utc=True)
    # extension dtypes (str, string, Int64, boolean, category, arrow): missing values -> None
    return json_list(col.to_numpy(dtype=object, na_value=None).tolist())


def _floats(values: np.ndarray) -> list[Any]:
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        out[i] = None
    return out


def _datetimes(values: np.ndarray, *, utc: bool) -> list[Any]:
    """ISO 8601 strings (``...Z`` when the column was time-zone aware, as UTC), None for NaT;
    whole seconds unless some value has a fraction."""
    missing = np.isnat(values)
    whole = bool((values[~missing].astype("datetime64[s]") == values[~missing]).all())
    text = np.datetime_as_string(values, unit="s" if whole else "us",
                                 timezone="UTC" if utc else "naive")
    out: list[Any] = text.tolist()
    for i in np.flatnonzero(missing).tolist():
        out[i] = None
    return out


_PLAIN = frozenset({str, int, bool, type(None)})


def json_list(values: list[Any]) -> list[Any]:
    """``values`` made JSON-safe; one pass of type checks when they already are."""
    if all(type(v) in _PLAIN for v in values):
        return values
    return [json_value(v) for v in values]


def json_value(v: Any) -> Any:
    if v is None or isinstance(v, str | bool | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.generic):
        return json_value(v.item())
    if isinstance(v, dt.datetime | dt.date | dt.time):  # pd.Timestamp too; NaT is caught next
        return None if pd.isna(v) else v.isoformat()
    if isinstance(v, list | tuple | np.ndarray):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, bytes):
        return v.hex()
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)
