"""The ``/batches`` routes (an ``APIRouter``, included by ``workbench.api.app``)::

    POST   /batches                      {urls, pipeline?, params?, name?, notify?, refresh?}
    GET    /batches                      GET /batches/{id}
    GET    /batches/{id}/items?status=&limit=&offset=
    GET    /batches/{id}/results?format=jsonl|csv      (streamed)
    POST   /batches/{id}/retry           POST /batches/{id}/cancel

Each goes through the ``Workbench`` client (submit, retry, cancel, reads); counts and the batch
state are ``workbench.core.status``'s, the result export ``workbench.client.export``'s.
"""

from __future__ import annotations

from typing import Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from workbench.api.deps import get_workbench
from workbench.api.guards import echo
from workbench.api.models import (
    NOT_FOUND,
    BatchCreated,
    BatchDetail,
    BatchId,
    BatchIn,
    BatchOut,
    Cancelled,
    ItemsPage,
    ItemStatusName,
    Requeued,
    check_request,
    format_job_id,
    input_error,
    unprocessable,
)
from workbench.client.export import jsonable
from workbench.client.workbench import Workbench
from workbench.core.errors import InvalidInputError
from workbench.core.status import ITEM_STATUSES, Counts

router = APIRouter()


@router.post("/batches", status_code=201, response_model=BatchCreated, tags=["batches"])
async def create_batch(body: BatchIn, wb: Workbench = Depends(get_workbench)) -> dict[str, Any]:
    """Submit a batch; 422 names each invalid URL (or skips them with on_invalid=skip).
    With ``rows``, every row is one item and its other keys are carried with it."""
    if body.urls is None and body.rows is None:  # as when urls alone was required
        raise HTTPException(422, detail=[unprocessable(
            ["body", "urls"], "Field required (or give rows)", "missing")])
    check_request(wb.settings, urls=body.size, params=body.params)
    source: Any = body.urls
    url_column = None
    if body.rows is not None:
        source, url_column = rows_frame(body.rows, body.urls, body.url_column)
    try:
        batch = await wb.submit(
            source, pipeline=body.pipeline, params=body.params, name=body.name,
            refresh=body.refresh, on_invalid=body.on_invalid, notify=body.notify,
            url_column=url_column,
        )
    except InvalidInputError as exc:
        raise input_error(exc, ["body", "urls" if body.rows is None else "rows"]) from None
    counts = Counts(await batch.counts())
    return {
        "batch_id": batch.id, "items": batch.total,
        "status": counts.state.value,
        "cached": batch.cached,
        "invalid": [{"position": p, "entry": echo(jsonable(e)), "reason": r}
                    for p, e, r in batch.invalid],
    }


@router.get("/batches", response_model=list[BatchOut], tags=["batches"])
async def list_batches(wb: Workbench = Depends(get_workbench)) -> list[dict[str, Any]]:
    """Every batch with its counts and state, oldest first."""
    df = await wb.batches()
    out = []
    for rec in df.to_dict("records"):
        r = {k: _ts(v) if k.endswith("_at") else _none_if_na(v) for k, v in rec.items()}
        out.append({
            "batch_id": r["batch_id"], "name": r["name"], "pipeline": r["pipeline"],
            "pipeline_version": r["pipeline_version"], "created_at": r["created_at"],
            "total": int(r["total"]), "counts": {s: int(r[s]) for s in ITEM_STATUSES},
            "state": r["state"],
            "first_started_at": r["first_started_at"],
            "last_finished_at": r["last_finished_at"],
        })
    return out


@router.get("/batches/{batch_id}", response_model=BatchDetail, responses=NOT_FOUND,
            tags=["batches"])
async def get_batch(
    batch_id: str = BatchId(), wb: Workbench = Depends(get_workbench)
) -> dict[str, Any]:
    """One batch: counts, state, timings and its most frequent error types."""
    from workbench.notify.summary import summarize_batch

    batch = await wb.get_batch(batch_id)
    s = await summarize_batch(wb.ledger, batch_id)
    return {
        "batch_id": batch.id, "name": batch.name, "pipeline": batch.pipeline,
        "pipeline_version": batch.pipeline_version, "created_at": batch.created_at,
        "total": s.total, "counts": s.counts, "state": s.state, "params": batch.params,
        "first_started_at": s.first_started_at, "last_finished_at": s.last_finished_at,
        "duration_s": s.duration_s, "top_errors": [vars(g) for g in s.top_errors],
    }


@router.get("/batches/{batch_id}/items", response_model=ItemsPage, responses=NOT_FOUND,
            tags=["batches"])
async def list_items(
    batch_id: str = BatchId(),
    status: ItemStatusName | None = None,
    limit: int = Query(100, ge=1, le=10_000),
    offset: int = Query(0, ge=0, le=10**12),
    wb: Workbench = Depends(get_workbench),
) -> dict[str, Any]:
    """Items of a batch in submission order, paged; optionally of one status."""
    batch = await wb.get_batch(batch_id)
    counts = Counts(await batch.counts())
    rows = await wb.ledger.item_rows(
        batch_id, statuses=[status] if status else None, limit=limit, offset=offset
    )
    return {
        "batch_id": batch_id, "limit": limit, "offset": offset,
        "total": counts[status] if status else counts.total,
        "items": [_item_out(r) for r in rows],
    }


@router.get(
    "/batches/{batch_id}/results",
    responses={
        **NOT_FOUND,
        200: {"description": "one JSON object a line, or CSV with a header row",
              "content": {"application/x-ndjson": {}, "text/csv": {}}},
    },
    response_class=StreamingResponse,
    tags=["batches"],
)
async def results(
    batch_id: str = BatchId(),
    format: Literal["jsonl", "csv"] = "jsonl",
    wb: Workbench = Depends(get_workbench),
) -> StreamingResponse:
    """The done items' results, streamed: the pipeline's fields, then provenance."""
    # read a chunk at a time while the response is sent: memory follows the chunk
    batch = await wb.get_batch(batch_id)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        batch.export_text(format), media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{batch_id}.{format}"'},
    )


@router.post("/batches/{batch_id}/retry", response_model=Requeued, responses=NOT_FOUND,
             tags=["batches"])
async def retry(
    batch_id: str = BatchId(), wb: Workbench = Depends(get_workbench)
) -> dict[str, int]:
    """Re-queue the failed items."""
    batch = await wb.get_batch(batch_id)
    return {"requeued": await batch.retry()}


@router.post("/batches/{batch_id}/cancel", response_model=Cancelled, responses=NOT_FOUND,
             tags=["batches"])
async def cancel(
    batch_id: str = BatchId(), wb: Workbench = Depends(get_workbench)
) -> dict[str, int]:
    """Cancel what has not finished."""
    batch = await wb.get_batch(batch_id)
    return {"cancelled": await batch.cancel()}


# ============================================================================ helpers
def _item_out(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": r["id"], "job_id": format_job_id(r["id"], r["attempts"]),
        **{k: r.get(k) for k in ("position", "url", "normalized_url", "status", "attempts",
                                 "submitted_at", "started_at", "finished_at", "duration_s",
                                 "worker_id", "error_type", "error_message", "retryable")},
        "cached": bool(r.get("cached")),
    }


def _ts(value: Any) -> Any:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).to_pydatetime()


def _none_if_na(value: Any) -> Any:
    import pandas as pd

    if value is None or isinstance(value, (list, dict)):
        return value
    try:
        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


def rows_frame(
    rows: list[dict[str, Any]], urls: list[str] | None, url_column: str | None
) -> tuple[pd.DataFrame, str]:
    """The request's rows as a table for ``submit`` and the name of its URL column (``urls``,
    when given, go in a column of their own)."""
    df = pd.DataFrame.from_records(rows) if any(rows) else pd.DataFrame(index=range(len(rows)))
    if urls is None:
        return df, url_column or "url"
    name = "url"
    while name in df.columns:
        name = "_" + name
    df.insert(0, name, urls)
    return df, name
