"""Carried columns: a table's other columns travel with each item and come back beside it.

``wb.submit(df, url_column="url")`` (or a CSV/Parquet/JSONL path) reads the table in chunks
(``workbench.inputs.tables``), makes **one item per row** (rows are never merged: two rows with
the same URL and different labels are two items, and the second is normally a cache hit or a
second fetch), and stores each row's other columns with its item as JSON (``items.carried``);
the batch keeps their names and input dtypes (``batches.carried``).

``status()``, ``failures()`` and ``results()`` put the carried columns right after ``url``, with
the input's dtypes restored where the JSON values allow it (``inputs.tables.restore_dtypes``).
**Name clashes**: a carried column named like a column Workbench puts in these frames
(``RESERVED``: ``status``, ``error_type``, ``final_url``, ...) is stored as ``input_<name>`` at
submit; one named like a field of the pipeline's results is shown as ``input_<name>`` in
``results()`` (the prefix repeats until the name is free). ``position`` is the row's 0-based
number in the input, so ``df.join(status.set_index("position"))`` always works.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from workbench.client import frames
from workbench.core.errors import EmptyBatchError, InvalidURLError
from workbench.core.urls import normalize_url
from workbench.inputs.tables import (
    CarriedColumn,
    carried_names,
    open_table,
    restore_dtypes,
)
from workbench.ledger.store import Ledger

#: names a carried column may not take: every column of the status, failures and results frames
RESERVED = frozenset({
    *frames.ITEM_COLUMNS, *frames.FAILURE_COLUMNS, *frames.PROVENANCE_COLUMNS, "carried",
})


class TableEntries:
    """A table read for submit: checked ``entries`` (position, url, normalized url), the JSON of
    each entry's carried values, the carried columns, and the invalid rows."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, str, str]] = []
        self.carried: list[str | None] = []
        self.columns: list[CarriedColumn] = []
        self.invalid: list[tuple[int, object, str]] = []


def read_table(
    source: object, *, url_column: str, columns: Sequence[str] | None = None
) -> TableEntries:
    """Read ``source`` (a DataFrame or a table file) into entries, one per row, in chunks.

    Raises ``InvalidTableError`` for a missing URL column or an unreadable table; invalid URLs
    are collected (``invalid``) for the caller's ``on_invalid``."""
    table = open_table(source, url_column=url_column, reserved=RESERVED, columns=columns)
    out = TableEntries()
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    for chunk in table.chunks():
        rows = chunk.rows
        for pos, url, row in zip(chunk.positions(), chunk.urls, rows, strict=True):
            try:
                norm = normalize_url(url)  # type: ignore[arg-type]
            except ValueError as exc:
                out.invalid.append((pos, url, str(exc)))
                continue
            out.entries.append((pos, str(url).strip(), norm))
            out.carried.append(dumps(row) if row else None)
    out.columns = list(table.carried)  # complete once every chunk is read (JSONL grows it)
    return out


def check_table(read: TableEntries, *, on_invalid: str) -> None:
    if read.invalid and on_invalid == "raise":
        raise InvalidURLError(read.invalid)
    if not read.entries:
        raise EmptyBatchError(
            "nothing to submit: the table has no rows" if not read.invalid
            else "nothing to submit: every URL in the table is invalid"
        )


def specs_to_json(columns: Sequence[CarriedColumn]) -> list[list[str]]:
    return [[c.name, c.stored, c.dtype] for c in columns]


def specs_from_json(value: Any) -> list[CarriedColumn]:
    """The batch row's ``carried`` (``[[name, stored, dtype], ...]`` or None)."""
    if isinstance(value, str):
        value = json.loads(value)
    return [CarriedColumn(str(n), str(s), str(d)) for n, s, d in (value or [])]


async def carried_frame(
    ledger: Ledger, batch_id: str, columns: Sequence[CarriedColumn],
    statuses: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``item_id`` and the carried columns (by stored name) of the batch's items."""
    ids: list[int] = []
    values: list[str | None] = []
    async for chunk in ledger.item_chunks(batch_id, columns=["carried"], statuses=statuses,
                                          chunk_rows=20_000):
        ids.extend(chunk["item_id"])
        values.extend(chunk["carried"])
    return values_frame(ids, values, columns)


def values_frame(
    ids: Sequence[int], values: Sequence[str | None], columns: Sequence[CarriedColumn]
) -> pd.DataFrame:
    """``item_id`` and the carried columns (by stored name) from the items' ``carried`` JSON."""
    decoded = [json.loads(v) if v else {} for v in values]
    data: dict[str, Any] = {"item_id": pd.array(ids, dtype="int64")}
    for name in [c.stored for c in columns]:
        data[name] = pd.Series([v.get(name) for v in decoded], dtype=object)
    return pd.DataFrame(data)


def attach(df: pd.DataFrame, extra: pd.DataFrame, columns: Sequence[CarriedColumn]) -> pd.DataFrame:
    """``df`` with the carried columns of ``extra`` joined on ``item_id``, right after ``url``
    (or at the end), renamed ``input_<name>`` where ``df`` already has the name, with the input
    dtypes restored."""
    if not columns or "item_id" not in df.columns:
        return df
    shown = carried_names([c.stored for c in columns], set(df.columns))
    extra = extra.rename(columns=shown)
    merged = df.merge(extra, on="item_id", how="left", sort=False)
    cols = [c for c in df.columns]
    at = cols.index("url") + 1 if "url" in cols else len(cols)
    order = [*cols[:at], *shown.values(), *cols[at:]]
    merged = merged[order]
    restore_dtypes(merged, [CarriedColumn(c.name, shown[c.stored], c.dtype) for c in columns])
    return merged


async def with_carried(
    df: pd.DataFrame, ledger: Ledger, batch_id: str, columns: Sequence[CarriedColumn],
    statuses: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``attach`` after reading the carried values of the batch's items (of ``statuses``)."""
    if not columns:
        return df
    return attach(df, await carried_frame(ledger, batch_id, columns, statuses), columns)
