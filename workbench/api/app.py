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

The analyses and jobs routes, and how they map to ARQ's job words, are described in
``workbench.api.seed``; the request and response models are in ``workbench.api.models``.

With ``WORKBENCH_API_TOKEN`` set, every request (docs and schema included) needs
``Authorization: Bearer <token>``; otherwise 401. The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer

from workbench.api.models import (
    NOT_FOUND,
    BatchCreated,
    BatchDetail,
    BatchId,
    BatchIn,
    BatchOut,
    Cancelled,
    ItemsPage,
    Requeued,
    format_job_id,
    input_error,
    unprocessable,
)
from workbench.api.seed import add_seed_routes
from workbench.client.export import iter_csv, iter_jsonl, jsonable
from workbench.client.workbench import Workbench
from workbench.core.errors import BatchNotFoundError, InvalidInputError, ServiceError
from workbench.core.status import ITEM_STATUSES
from workbench.core.version import __version__


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


def _item_out(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": r["id"], "job_id": format_job_id(r["id"], r["attempts"]),
        **{k: r.get(k) for k in ("position", "url", "normalized_url", "status", "attempts",
                                 "submitted_at", "started_at", "finished_at", "duration_s",
                                 "worker_id", "error_type", "error_message", "retryable")},
        "cached": bool(r.get("cached")),
    }


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
        return JSONResponse({"detail": [unprocessable(["body"], str(exc), "invalid_input")]},
                            status_code=422)

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
            raise input_error(exc, ["body", "urls"]) from None
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

    @app.get("/batches/{batch_id}", response_model=BatchDetail, responses=NOT_FOUND,
             tags=["batches"])
    async def get_batch(batch_id: str = BatchId(), wb: Workbench = Depends(get_wb)) -> dict[str, Any]:
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

    @app.get("/batches/{batch_id}/items", response_model=ItemsPage, responses=NOT_FOUND,
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

    @app.post("/batches/{batch_id}/retry", response_model=Requeued, responses=NOT_FOUND,
              tags=["batches"])
    async def retry(batch_id: str = BatchId(), wb: Workbench = Depends(get_wb)) -> dict[str, int]:
        """Re-queue the failed items."""
        batch = await wb.get_batch(batch_id)
        return {"requeued": await batch.retry()}

    @app.post("/batches/{batch_id}/cancel", response_model=Cancelled, responses=NOT_FOUND,
              tags=["batches"])
    async def cancel(batch_id: str = BatchId(), wb: Workbench = Depends(get_wb)) -> dict[str, int]:
        """Cancel what has not finished."""
        batch = await wb.get_batch(batch_id)
        return {"cancelled": await batch.cancel()}

    add_seed_routes(app, get_wb)  # /analyses and /jobs

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
