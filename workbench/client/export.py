"""Results frames out: JSON-ready values, JSONL and CSV (streamed in chunks) and Parquet.

Shared by the command line (``results``, ``failures``, ``status --json``) and the HTTP API
(``GET /batches/{id}/results``), so both export the same bytes. pandas, numpy and pyarrow are
imported on first use, keeping ``python -m workbench --help`` quick.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


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


def _cell(value: Any) -> Any:
    """A CSV cell: scalars as they are, lists and dicts as JSON."""
    v = jsonable(value)
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
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


def iter_csv(df: pd.DataFrame, chunk_rows: int = 500) -> Iterator[str]:
    """CSV with a header row, ``chunk_rows`` rows a chunk; lists and dicts as JSON text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([str(c) for c in df.columns])
    for n, row in enumerate(df.itertuples(index=False, name=None), start=1):
        writer.writerow([_cell(v) for v in row])
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
