"""The read path as it was before results were chunked (commit 3e8a088): the reference that
``results()``, ``status()`` and ``failures()`` of a small batch must still equal exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Text, select, type_coerce

from workbench.core import codec
from workbench.core.status import ITEM_STATUSES
from workbench.ledger.models import ItemRow, ResultBulkRow, ResultRow
from workbench.ledger.shapes import joined_data
from workbench.ledger.sql import table_of
from workbench.ledger.store import Ledger

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


async def result_rows(ledger: Ledger, batch_id: str) -> list[dict[str, Any]]:
    """The old ``Ledger.result_rows``, with the stored parts joined back into ``data``."""
    i, r, b = table_of(ItemRow), table_of(ResultRow), table_of(ResultBulkRow)
    q = (
        select(i.c.id.label("item_id"), i.c.position, i.c.url, i.c.normalized_url,
               i.c.attempts, i.c.duration_s, i.c.finished_at, r.c.data,
               b.c.data.label("bulk"), r.c.pipeline, r.c.pipeline_version, r.c.params_hash,
               r.c.workbench_version, r.c.final_url, r.c.http_status, r.c.content_sha256,
               r.c.fetched_at, r.c.cached, r.c.from_stored_page,
               type_coerce(r.c.timings, Text).label("timings"))
        .select_from(i.join(r, r.c.item_id == i.c.id).outerjoin(b, b.c.item_id == i.c.id))
        .where(i.c.batch_id == batch_id, i.c.status == "done")
        .order_by(i.c.id)
    )
    async with ledger.read_engine.connect() as conn:
        result = await conn.execute(q)
        keys = list(result.keys())
        rows = [dict(zip(keys, row, strict=True)) for row in result]
    for row in rows:
        row["data"] = joined_data(row["data"], row.pop("bulk"))
        if isinstance(row["timings"], str):
            row["timings"] = codec.loads(row["timings"])
    return rows


def _times(df: pd.DataFrame) -> pd.DataFrame:
    for col in _TIME_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_datetime(df[col], utc=True)
    return df


def items_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame([{**r, "item_id": r["id"]} for r in rows], columns=ITEM_COLUMNS)
    df = _times(df)
    df["status"] = pd.Categorical(df["status"], categories=ITEM_STATUSES)
    for col in ("item_id", "position", "attempts", "tries"):
        df[col] = df[col].astype("int64")
    df["duration_s"] = df["duration_s"].astype("float64")
    df["cached"] = df["cached"].astype(bool)
    df["retryable"] = df["retryable"].astype("boolean")
    return df


def failures_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame([{**r, "item_id": r["id"]} for r in rows], columns=FAILURE_COLUMNS)
    df = _times(df)
    for col in ("item_id", "attempts", "tries"):
        df[col] = df[col].astype("int64")
    df["retryable"] = df["retryable"].astype("boolean")
    return df


def results_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    datas = [d if isinstance(d, dict) else {"value": d}
             for d in codec.loads_many([r["data"] for r in rows])]
    fields = pd.DataFrame(datas) if datas else pd.DataFrame()
    prov = [c if c not in fields.columns else f"_{c}" for c in PROVENANCE_COLUMNS]
    columns: dict[str, Any] = {
        "item_id": [r["item_id"] for r in rows],
        "url": [r["url"] for r in rows],
    }
    for key in ("item_id", "url"):
        if key in fields.columns:
            has = [key in d for d in datas]
            columns[key] = [d[key] if h else v for d, h, v in zip(datas, has, columns[key],
                                                                    strict=True)]
    df = pd.DataFrame(columns)
    for key in fields.columns:
        if key not in ("item_id", "url"):
            df[key] = fields[key].to_numpy()
    for name, col in zip(PROVENANCE_COLUMNS, prov, strict=True):
        df[col] = [r.get(name) for r in rows]
    df = _times(df)
    df["item_id"] = df["item_id"].astype("int64")
    if "http_status" in df.columns:
        df["http_status"] = df["http_status"].astype("Int64")
    return df
