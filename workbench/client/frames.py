"""Ledger rows -> pandas DataFrames (pure functions, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from workbench.core import codec
from workbench.core.status import ITEM_STATUSES, Counts

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
    """One row per done item: ``item_id``, ``url``, the pipeline's fields as columns, then
    provenance. A pipeline field named like a provenance column wins; provenance gets a ``_``.
    Built column by column: a dict per row cost more than a second per 100k results."""
    datas = [d if isinstance(d, dict) else {"value": d}
             for d in codec.loads_many([r["data"] for r in rows])]
    fields = pd.DataFrame(datas) if datas else pd.DataFrame()
    prov = [c if c not in fields.columns else f"_{c}" for c in PROVENANCE_COLUMNS]
    columns: dict[str, Any] = {
        "item_id": [r["item_id"] for r in rows],
        "url": [r["url"] for r in rows],
    }
    for key in ("item_id", "url"):  # a pipeline field of that name wins where the item has one
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
