"""The HTTP API (FastAPI, extra ``api``): ``python -m workbench serve`` serves ``create_app()``.

Every route goes through the ``Workbench`` client (submit, retry, cancel, reads); there is no
second implementation of them here. One ``Workbench`` per app, opened with the app's lifespan (or
on first use) and closed on shutdown.

Routes (DESIGN.md §8)::

    POST   /batches                      {urls, pipeline?, params?, name?, notify?, refresh?}
    GET    /batches                      GET /batches/{id}
    GET    /batches/{id}/items?status=&limit=&offset=
    GET    /batches/{id}/results?format=jsonl|csv      (streamed)
    POST   /batches/{id}/retry           POST /batches/{id}/cancel
    POST   /analyses                     {url, pipeline?, params?, refresh?, notify?}
    GET    /analyses/{id}
    POST   /analyses/{id}/reprocess
    GET    /jobs/{job_id}                DELETE /jobs/{job_id}

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

With ``WORKBENCH_API_TOKEN`` set, every request (docs and schema included) needs
``Authorization: Bearer <token>``; otherwise 401. The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from . import __version__, codec
from .cli import iter_csv, iter_jsonl, jsonable
from .client import Batch, Workbench
from .errors import (
    BatchNotFoundError,
    EmptyBatchError,
    InvalidInputError,
    InvalidParamsError,
    InvalidURLError,
    ServiceError,
    UnknownPipelineError,
)
from .ledger.models import ITEM_STATUSES, ItemRow, ResultRow

JOB_ID_PATTERN = r"^[0-9]{1,18}:[0-9]{1,9}$"
BATCH_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,40}$"


# ============================================================================ models
class Problem(BaseModel):
    detail: str


def _check_email(v: str | None) -> str | None:
    if v is not None and "@" not in v:
        raise ValueError("must be an email address")
    return v


class BatchIn(BaseModel):
    urls: list[str] = Field(..., min_length=1, description="http(s) URLs; duplicates folded")
    pipeline: str = Field("article", min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    name: str | None = Field(None, max_length=200)
    notify: str | None = Field(None, max_length=320, description="email when the batch completes")
    refresh: bool = False
    on_invalid: Literal["raise", "skip"] = "raise"

    _email = field_validator("notify")(_check_email)


class InvalidEntry(BaseModel):
    position: int
    entry: Any
    reason: str


class BatchCreated(BaseModel):
    batch_id: str
    items: int
    status: str
    cached: int
    invalid: list[InvalidEntry] = []


class BatchOut(BaseModel):
    batch_id: str
    name: str | None
    pipeline: str
    pipeline_version: str
    created_at: datetime
    total: int
    counts: dict[str, int]
    state: str
    first_started_at: datetime | None = None
    last_finished_at: datetime | None = None


class ErrorGroupOut(BaseModel):
    error_type: str
    count: int
    sample_url: str
    sample_message: str
    retryable: bool | None


class BatchDetail(BatchOut):
    params: dict[str, Any]
    duration_s: float | None
    top_errors: list[ErrorGroupOut]


class ItemOut(BaseModel):
    item_id: int
    job_id: str
    position: int
    url: str
    normalized_url: str
    status: str
    attempts: int
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    worker_id: str | None
    cached: bool
    error_type: str | None
    error_message: str | None
    retryable: bool | None


class ItemsPage(BaseModel):
    batch_id: str
    total: int
    limit: int
    offset: int
    items: list[ItemOut]


class Requeued(BaseModel):
    requeued: int


class Cancelled(BaseModel):
    cancelled: int


class AnalysisIn(BaseModel):
    url: str = Field(..., description="one http(s) URL")
    pipeline: str = Field("article", min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    refresh: bool = False
    notify: str | None = Field(None, max_length=320)

    _email = field_validator("notify")(_check_email)


class AnalysisCreated(BaseModel):
    analysis_id: str
    job_id: str
    status: Literal["pending"] = "pending"
    cached: bool = False


class Reprocessed(BaseModel):
    analysis_id: str
    job_id: str
    status: Literal["queued"] = "queued"
    reprocess_of: str | None = None


class JobError(BaseModel):
    type: str
    message: str | None = None
    retryable: bool | None = None


class JobStatus(BaseModel):
    job_id: str
    status: Literal["deferred", "queued", "in_progress", "complete", "not_found"]
    item_status: str
    analysis_id: str
    url: str
    attempts: int
    enqueue_time: datetime | None
    start_time: datetime | None
    finish_time: datetime | None
    success: bool | None
    result: dict[str, Any] | None
    error: JobError | None
    superseded: bool = False
    current_job_id: str


class JobCancelled(BaseModel):
    job_id: str
    cancelled: bool
    status: str
    item_status: str


# ============================================================================ the app's Workbench
class _Holder:
    """The app's one Workbench: made on startup (or first use), closed on shutdown."""

    def __init__(self, factory: Callable[[], Workbench]):
        self.factory = factory
        self.wb: Workbench | None = None

    def get(self) -> Workbench:
        if self.wb is None:
            self.wb = self.factory()
        return self.wb

    async def close(self) -> None:
        wb, self.wb = self.wb, None
        if wb is not None:
            await wb.close()


class _BearerAuth:
    """Pure ASGI middleware: every HTTP request needs the bearer token when one is configured."""

    def __init__(self, app: Any, holder: _Holder):
        self.app = app
        self.holder = holder

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            token = self.holder.get().settings.api_token
            if token and not _token_ok(scope, token):
                response = JSONResponse(
                    {"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _token_ok(scope: dict[str, Any], token: str) -> bool:
    value = b""
    for name, v in scope.get("headers", []):
        if name == b"authorization":
            value = v
            break
    scheme, _, given = value.partition(b" ")
    if scheme.lower() != b"bearer":
        given = b""
    return hmac.compare_digest(given.strip(), token.encode())


def _unprocessable(loc: list[Any], msg: str, kind: str, value: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"loc": loc, "msg": msg, "type": kind}
    if value is not None:
        out["input"] = jsonable(value)
    return out


def _input_error(exc: InvalidInputError, url_loc: list[Any], single: bool = False) -> HTTPException:
    """422 naming each invalid URL or field, in FastAPI's validation-error shape."""
    if isinstance(exc, InvalidURLError):
        detail = [
            _unprocessable(url_loc if single else [*url_loc, pos], reason, "invalid_url", entry)
            for pos, entry, reason in exc.invalid
        ]
    elif isinstance(exc, UnknownPipelineError):
        detail = [_unprocessable(["body", "pipeline"], str(exc), "unknown_pipeline")]
    elif isinstance(exc, InvalidParamsError):
        detail = [_unprocessable(["body", "params"], str(exc), "invalid_params")]
    elif isinstance(exc, EmptyBatchError):
        detail = [_unprocessable(url_loc, str(exc), "empty_batch")]
    else:
        detail = [_unprocessable(["body"], str(exc), "invalid_input")]
    return HTTPException(status_code=422, detail=detail)


def _job_id(item_id: int, attempt: int) -> str:
    return f"{item_id}:{attempt}"


def _item_out(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": r["id"], "job_id": _job_id(r["id"], r["attempts"]),
        **{k: r.get(k) for k in ("position", "url", "normalized_url", "status", "attempts",
                                 "submitted_at", "started_at", "finished_at", "duration_s",
                                 "worker_id", "error_type", "error_message", "retryable")},
        "cached": bool(r.get("cached")),
    }


async def _item_by_id(wb: Workbench, item_id: int) -> dict[str, Any] | None:
    """One item with its result data (read-only lookup by id; the ledger is open)."""
    i, r = ItemRow.__table__, ResultRow.__table__
    q = select(i, r.c.data).select_from(i.outerjoin(r, r.c.item_id == i.c.id)).where(
        i.c.id == item_id
    )
    ledger = await wb.open_ledger()
    async with ledger.read_engine.connect() as conn:
        row = (await conn.execute(q)).first()
    return dict(row._mapping) if row is not None else None


def _job_status(job_id: str, attempt: int, item: dict[str, Any]) -> dict[str, Any]:
    status = item["status"]
    current = _job_id(item["id"], item["attempts"])
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


def _parse_job(job_id: str) -> tuple[int, int]:
    item, _, attempt = job_id.partition(":")
    return int(item), int(attempt)


def _not_found_job(job_id: str) -> HTTPException:
    return HTTPException(404, detail=f"no job {job_id!r} (status: not_found)")


# ============================================================================ the app
def create_app(wb_factory: Callable[[], Workbench] | None = None) -> FastAPI:
    """The FastAPI app. ``wb_factory`` makes its one ``Workbench`` (default: ``Workbench()``,
    settings from the environment)."""
    holder = _Holder(wb_factory or Workbench)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.get()
        try:
            yield
        finally:
            await holder.close()

    bearer = HTTPBearer(auto_error=False, description="WORKBENCH_API_TOKEN, when set")
    app = FastAPI(
        title="Workbench API",
        version=__version__,
        description="Batch analyses of web pages: submit URLs, follow batches and jobs, "
        "stream results. Every route shares the Python client's code.",
        lifespan=lifespan,
        # documents the bearer scheme; the middleware enforces it on every request
        dependencies=[Security(bearer)],
    )
    app.add_middleware(_BearerAuth, holder=holder)
    app.state.workbench_holder = holder

    def get_wb() -> Workbench:
        return holder.get()

    @app.exception_handler(BatchNotFoundError)
    async def _nf(request: Request, exc: BatchNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ServiceError)
    async def _svc(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": f"a backing service is unavailable: {exc}"},
                            status_code=503)

    @app.exception_handler(InvalidInputError)
    async def _bad(request: Request, exc: InvalidInputError) -> JSONResponse:
        return JSONResponse({"detail": [_unprocessable(["body"], str(exc), "invalid_input")]},
                            status_code=422)

    not_found = {404: {"model": Problem, "description": "no such batch"}}

    def BatchId() -> Any:  # noqa: N802 - a fresh Path() per parameter (FastAPI mutates them)
        return Path(..., pattern=BATCH_ID_PATTERN, description="a batch id, e.g. b-20261129-...")

    def JobId() -> Any:  # noqa: N802
        return Path(..., pattern=JOB_ID_PATTERN, description='"<item>:<attempt>"')

    # ------------------------------------------------------------------------ batches
    @app.post("/batches", status_code=201, response_model=BatchCreated, tags=["batches"])
    async def create_batch(body: BatchIn, wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
        """Submit a batch; 422 names each invalid URL (or skips them with on_invalid=skip)."""
        try:
            batch = await wb.submit(
                body.urls, pipeline=body.pipeline, params=body.params, name=body.name,
                refresh=body.refresh, on_invalid=body.on_invalid, notify=body.notify,
            )
        except InvalidInputError as exc:
            raise _input_error(exc, ["body", "urls"]) from None
        counts = await batch.counts()
        return {
            "batch_id": batch.id, "items": batch.total,
            "status": "running" if counts["queued"] + counts["running"] else "completed",
            "cached": batch.cached,
            "invalid": [{"position": p, "entry": jsonable(e), "reason": r}
                        for p, e, r in batch.invalid],
        }

    @app.get("/batches", response_model=list[BatchOut], tags=["batches"])
    async def list_batches(wb: Workbench = Depends(get_wb)) -> list[dict[str, Any]]:
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

    @app.get("/batches/{batch_id}", response_model=BatchDetail, responses=not_found,
             tags=["batches"])
    async def get_batch(batch_id: str = BatchId(), wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
        """One batch: counts, state, timings and its most frequent error types."""
        from .notify import summarize_batch

        batch = await wb.get_batch(batch_id)
        s = await summarize_batch(wb.ledger, batch_id)
        return {
            "batch_id": batch.id, "name": batch.name, "pipeline": batch.pipeline,
            "pipeline_version": batch.pipeline_version, "created_at": batch.created_at,
            "total": s.total, "counts": s.counts, "state": s.state, "params": batch.params,
            "first_started_at": s.first_started_at, "last_finished_at": s.last_finished_at,
            "duration_s": s.duration_s, "top_errors": [vars(g) for g in s.top_errors],
        }

    @app.get("/batches/{batch_id}/items", response_model=ItemsPage, responses=not_found,
             tags=["batches"])
    async def list_items(
        batch_id: str = BatchId(),
        status: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0, le=10**12),
        wb: Workbench = Depends(get_wb),
    ) -> dict[str, Any]:
        """Items of a batch in submission order, paged; optionally of one status."""
        batch = await wb.get_batch(batch_id)
        counts = await batch.counts()
        rows = await wb.ledger.item_rows(
            batch_id, statuses=[status] if status else None, limit=limit, offset=offset
        )
        return {
            "batch_id": batch_id, "limit": limit, "offset": offset,
            "total": counts[status] if status else sum(counts.values()),
            "items": [_item_out(r) for r in rows],
        }

    @app.get(
        "/batches/{batch_id}/results",
        responses={
            **not_found,
            200: {"description": "one JSON object a line, or CSV with a header row",
                  "content": {"application/x-ndjson": {}, "text/csv": {}}},
        },
        response_class=StreamingResponse,
        tags=["batches"],
    )
    async def results(
        batch_id: str = BatchId(),
        format: Literal["jsonl", "csv"] = "jsonl",  # noqa: A002 - the contract's name
        wb: Workbench = Depends(get_wb),
    ) -> StreamingResponse:
        """The done items' results, streamed: the pipeline's fields, then provenance."""
        batch = await wb.get_batch(batch_id)
        df = await batch.results()
        if format == "csv":
            body, media = iter_csv(df), "text/csv; charset=utf-8"
        else:
            body, media = iter_jsonl(df), "application/x-ndjson"
        return StreamingResponse(
            body, media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{batch_id}.{format}"'},
        )

    @app.post("/batches/{batch_id}/retry", response_model=Requeued, responses=not_found,
              tags=["batches"])
    async def retry(batch_id: str = BatchId(), wb: Workbench = Depends(get_wb)) -> dict[str, int]:
        """Re-queue the failed items."""
        batch = await wb.get_batch(batch_id)
        return {"requeued": await batch.retry()}

    @app.post("/batches/{batch_id}/cancel", response_model=Cancelled, responses=not_found,
              tags=["batches"])
    async def cancel(batch_id: str = BatchId(), wb: Workbench = Depends(get_wb)) -> dict[str, int]:
        """Cancel what has not finished."""
        batch = await wb.get_batch(batch_id)
        return {"cancelled": await batch.cancel()}

    # ------------------------------------------------------------------------ analyses (seed)
    async def _analysis(wb: Workbench, analysis_id: str) -> tuple[Batch, dict[str, Any]]:
        batch = await wb.get_batch(analysis_id)
        rows = await wb.ledger.item_rows(analysis_id, limit=2)
        if batch.total != 1 or len(rows) != 1:
            raise HTTPException(
                404, detail=f"{analysis_id} is a batch of {batch.total} URLs, not an analysis: "
                f"use /batches/{analysis_id}"
            )
        return batch, rows[0]

    @app.post("/analyses", status_code=201, response_model=AnalysisCreated, tags=["analyses"])
    async def create_analysis(body: AnalysisIn, wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
        """Analyse one URL (a batch of one). Poll ``GET /jobs/{job_id}``."""
        try:
            batch = await wb.submit([body.url], pipeline=body.pipeline, params=body.params,
                                    name="analysis", refresh=body.refresh, notify=body.notify)
        except InvalidInputError as exc:
            raise _input_error(exc, ["body", "url"], single=True) from None
        rows = await wb.ledger.item_rows(batch.id, limit=1)
        return {"analysis_id": batch.id, "job_id": _job_id(rows[0]["id"], rows[0]["attempts"]),
                "status": "pending", "cached": bool(batch.cached)}

    @app.get("/analyses/{analysis_id}", response_model=JobStatus, responses=not_found,
             tags=["analyses"])
    async def get_analysis(analysis_id: str = BatchId(),
                           wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
        """The analysis's current job status and, once done, its result."""
        _batch, row = await _analysis(wb, analysis_id)
        item = await _item_by_id(wb, row["id"])
        assert item is not None
        return _job_status(_job_id(item["id"], item["attempts"]), item["attempts"], item)

    @app.post("/analyses/{analysis_id}/reprocess", response_model=Reprocessed,
              responses={**not_found, 409: {"model": Problem}}, tags=["analyses"])
    async def reprocess(analysis_id: str = BatchId(),
                        wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
        """Run the analysis again with a fresh fetch (see the module docs for the semantics)."""
        batch, row = await _analysis(wb, analysis_id)
        if row["status"] in ("queued", "running"):
            raise HTTPException(409, detail=f"analysis {analysis_id} is still {row['status']}; "
                                f"follow it at /jobs/{_job_id(row['id'], row['attempts'])}")
        if row["status"] in ("failed", "cancelled"):
            await batch.retry([row["id"]])
            item = await _item_by_id(wb, row["id"])
            assert item is not None
            return {"analysis_id": analysis_id, "job_id": _job_id(item["id"], item["attempts"]),
                    "status": "queued"}
        info = await wb.get_batch(analysis_id)
        try:
            new = await wb.submit([row["url"]], pipeline=info.pipeline, params=info.params,
                                  name="analysis", refresh=True)
        except InvalidInputError as exc:
            raise HTTPException(409, detail=f"cannot reprocess {analysis_id}: {exc}") from None
        rows = await wb.ledger.item_rows(new.id, limit=1)
        return {"analysis_id": new.id, "job_id": _job_id(rows[0]["id"], rows[0]["attempts"]),
                "status": "queued", "reprocess_of": analysis_id}

    # ------------------------------------------------------------------------ jobs (seed)
    @app.get("/jobs/{job_id}", response_model=JobStatus,
             responses={404: {"model": Problem, "description": "status not_found"}},
             tags=["jobs"])
    async def job_status(job_id: str = JobId(), wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
        """ARQ-style job status, read from the ledger."""
        item_id, attempt = _parse_job(job_id)
        item = await _item_by_id(wb, item_id)
        if item is None or attempt < 1 or attempt > item["attempts"]:
            raise _not_found_job(job_id)
        return _job_status(job_id, attempt, item)

    @app.delete("/jobs/{job_id}", response_model=JobCancelled,
                responses={404: {"model": Problem}, 409: {"model": Problem}}, tags=["jobs"])
    async def cancel_job(job_id: str = JobId(), wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
        """Cancel a job (an analysis's, or any job of a one-URL batch)."""
        item_id, attempt = _parse_job(job_id)
        item = await _item_by_id(wb, item_id)
        if item is None or attempt < 1 or attempt > item["attempts"]:
            raise _not_found_job(job_id)
        batch = await wb.get_batch(item["batch_id"])
        if batch.total != 1:
            raise HTTPException(
                409, detail=f"job {job_id} is one of {batch.total} items of batch {batch.id}; "
                f"cancel the batch with POST /batches/{batch.id}/cancel"
            )
        n = await batch.cancel() if item["status"] in ("queued", "running") else 0
        after = await _item_by_id(wb, item_id)
        assert after is not None
        st = _job_status(job_id, attempt, after)
        return {"job_id": job_id, "cancelled": bool(n), "status": st["status"],
                "item_status": after["status"]}

    return app


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
