"""The seed's routes, ``/analyses`` and ``/jobs``: an ``APIRouter`` that ``api.app`` includes.

An *analysis* is a batch of one URL: ``analysis_id`` is its batch id and ``job_id`` the ARQ job id
of its item, ``"<item>:<attempt>"``.

``POST /analyses/{id}/reprocess`` runs the analysis again, fetching the page anew:

- failed or cancelled: the item is retried in place (``Batch.retry``) - same ``analysis_id``,
  a new attempt and so a new ``job_id``; the worker always fetches, never uses the result cache;
- done: the stored result is research data and is never overwritten, so a new analysis of the
  same URL, pipeline and params is submitted with ``refresh=True``; the answer carries the new
  ``analysis_id`` and ``reprocess_of`` (the old one);
- still queued or running: 409.

``GET /jobs/{job_id}`` answers with ARQ's job fields, read from the ledger (never from ARQ's
result keys). ``status`` maps the item's state to ARQ's words: queued -> ``queued`` (``deferred``
while waiting for an automatic retry's backoff), running -> ``in_progress``,
done/failed/cancelled -> ``complete`` (``success`` true only for done; ``result`` is the
pipeline's dict, ``error`` holds type, message and retryable). ``item_status`` gives our precise
state. A superseded attempt (an automatic or manual retry made a newer job) reports the item's
current state, with ``superseded: true`` and ``current_job_id``; an unknown or future attempt is
404 ``not_found``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from workbench.api.deps import get_workbench
from workbench.api.models import (
    NOT_FOUND,
    AnalysisCreated,
    AnalysisIn,
    BatchId,
    JobCancelled,
    JobId,
    JobStatus,
    Problem,
    Reprocessed,
    check_request,
    format_job_id,
    input_error,
    parse_job_id,
)
from workbench.client.export import jsonable
from workbench.client.workbench import Batch, Workbench
from workbench.core import codec
from workbench.core.errors import InvalidInputError
from workbench.core.status import ACTIVE_STATUSES

router = APIRouter()


# ============================================================================ analyses (seed)
async def _analysis(wb: Workbench, analysis_id: str) -> tuple[Batch, dict[str, Any]]:
    batch = await wb.get_batch(analysis_id)
    rows = await wb.ledger.item_rows(analysis_id, limit=2)
    if batch.total != 1 or len(rows) != 1:
        raise HTTPException(
            404, detail=f"{analysis_id} is a batch of {batch.total} URLs, not an analysis: "
            f"use /batches/{analysis_id}"
        )
    return batch, rows[0]


@router.post("/analyses", status_code=201, response_model=AnalysisCreated, tags=["analyses"])
async def create_analysis(
    body: AnalysisIn, wb: Workbench = Depends(get_workbench)
) -> dict[str, Any]:
    """Analyse one URL (a batch of one). Poll ``GET /jobs/{job_id}``."""
    check_request(wb.settings, urls=1, params=body.params)
    try:
        batch = await wb.submit([body.url], pipeline=body.pipeline, params=body.params,
                                name="analysis", refresh=body.refresh, notify=body.notify)
    except InvalidInputError as exc:
        raise input_error(exc, ["body", "url"], single=True) from None
    rows = await wb.ledger.item_rows(batch.id, limit=1)
    return {"analysis_id": batch.id,
            "job_id": format_job_id(rows[0]["id"], rows[0]["attempts"]),
            "status": "pending", "cached": bool(batch.cached)}


@router.get("/analyses/{analysis_id}", response_model=JobStatus, responses=NOT_FOUND,
            tags=["analyses"])
async def get_analysis(analysis_id: str = BatchId(),
                       wb: Workbench = Depends(get_workbench)) -> dict[str, Any]:
    """The analysis's current job status and, once done, its result."""
    _batch, row = await _analysis(wb, analysis_id)
    item = await _item_by_id(wb, row["id"])
    assert item is not None
    return _job_status(format_job_id(item["id"], item["attempts"]), item["attempts"], item)


@router.post("/analyses/{analysis_id}/reprocess", response_model=Reprocessed,
             responses={**NOT_FOUND, 409: {"model": Problem}}, tags=["analyses"])
async def reprocess(analysis_id: str = BatchId(),
                    wb: Workbench = Depends(get_workbench)) -> dict[str, Any]:
    """Run the analysis again with a fresh fetch (see the module docs for the semantics)."""
    batch, row = await _analysis(wb, analysis_id)
    if row["status"] in ACTIVE_STATUSES:
        raise HTTPException(409, detail=f"analysis {analysis_id} is still {row['status']}; "
                            f"follow it at /jobs/{format_job_id(row['id'], row['attempts'])}")
    if row["status"] in ("failed", "cancelled"):
        await batch.retry([row["id"]])
        item = await _item_by_id(wb, row["id"])
        assert item is not None
        return {"analysis_id": analysis_id,
                "job_id": format_job_id(item["id"], item["attempts"]), "status": "queued"}
    info = await wb.get_batch(analysis_id)
    try:
        new = await wb.submit([row["url"]], pipeline=info.pipeline, params=info.params,
                              name="analysis", refresh=True)
    except InvalidInputError as exc:
        raise HTTPException(409, detail=f"cannot reprocess {analysis_id}: {exc}") from None
    rows = await wb.ledger.item_rows(new.id, limit=1)
    return {"analysis_id": new.id, "job_id": format_job_id(rows[0]["id"], rows[0]["attempts"]),
            "status": "queued", "reprocess_of": analysis_id}


# ============================================================================ jobs (seed)
@router.get("/jobs/{job_id}", response_model=JobStatus,
            responses={404: {"model": Problem, "description": "status not_found"}},
            tags=["jobs"])
async def job_status(
    job_id: str = JobId(), wb: Workbench = Depends(get_workbench)
) -> dict[str, Any]:
    """ARQ-style job status, read from the ledger."""
    item_id, attempt = parse_job_id(job_id)
    item = await _item_by_id(wb, item_id)
    if item is None or attempt < 1 or attempt > item["attempts"]:
        raise _not_found_job(job_id)
    return _job_status(job_id, attempt, item)


@router.delete("/jobs/{job_id}", response_model=JobCancelled,
               responses={404: {"model": Problem}, 409: {"model": Problem}}, tags=["jobs"])
async def cancel_job(
    job_id: str = JobId(), wb: Workbench = Depends(get_workbench)
) -> dict[str, Any]:
    """Cancel a job (an analysis's, or any job of a one-URL batch)."""
    item_id, attempt = parse_job_id(job_id)
    item = await _item_by_id(wb, item_id)
    if item is None or attempt < 1 or attempt > item["attempts"]:
        raise _not_found_job(job_id)
    batch = await wb.get_batch(item["batch_id"])
    if batch.total != 1:
        raise HTTPException(
            409, detail=f"job {job_id} is one of {batch.total} items of batch {batch.id}; "
            f"cancel the batch with POST /batches/{batch.id}/cancel"
        )
    n = await batch.cancel() if item["status"] in ACTIVE_STATUSES else 0
    after = await _item_by_id(wb, item_id)
    assert after is not None
    st = _job_status(job_id, attempt, after)
    return {"job_id": job_id, "cancelled": bool(n), "status": st["status"],
            "item_status": after["status"]}


# ============================================================================ helpers
async def _item_by_id(wb: Workbench, item_id: int) -> dict[str, Any] | None:
    """One item with its result data (read-only lookup by id; the ledger is open)."""
    ledger = await wb.open_ledger()
    return await ledger.item(item_id)


def _job_status(job_id: str, attempt: int, item: dict[str, Any]) -> dict[str, Any]:
    status = item["status"]
    current = format_job_id(item["id"], item["attempts"])
    if status == "queued":
        nxt = item.get("next_try_at")
        arq_status = "deferred" if nxt is not None and nxt > datetime.now(UTC) else "queued"
    elif status == "running":
        arq_status = "in_progress"
    else:
        arq_status = "complete"
    error = None
    if status in ("failed", "cancelled") or (status == "queued" and item.get("error_type")):
        error = {
            "type": item.get("error_type") or status,
            "message": item.get("error_message")
            or ("cancelled before it finished" if status == "cancelled" else None),
            "retryable": item.get("retryable"),
        }
    result = None
    if status == "done" and item.get("data"):
        data = codec.loads(item["data"])
        result = jsonable(data if isinstance(data, dict) else {"value": data})
    return {
        "job_id": job_id,
        "status": arq_status,
        "item_status": status,
        "analysis_id": item["batch_id"],
        "url": item["url"],
        "attempts": item["attempts"],
        "enqueue_time": item.get("submitted_at"),
        "start_time": item.get("started_at"),
        "finish_time": item.get("finished_at"),
        "success": None if arq_status != "complete" else status == "done",
        "result": result,
        "error": error,
        "superseded": attempt != item["attempts"],
        "current_job_id": current,
    }


def _not_found_job(job_id: str) -> HTTPException:
    return HTTPException(404, detail=f"no job {job_id!r} (status: not_found)")
