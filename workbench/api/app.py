"""The HTTP API (FastAPI, extra ``api``): ``python -m workbench serve`` serves ``create_app()``.

``create_app`` builds the application: its lifespan, the bearer-token check, the error handlers,
and the routes, each group an ``APIRouter`` module. Every route goes through the ``Workbench``
client (submit, retry, cancel, reads); there is no second implementation of them here. One
``Workbench`` per app (``workbench.api.deps``), opened with the app's lifespan (or on first use)
and closed on shutdown.

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

The batches routes are in ``workbench.api.batches``; the analyses and jobs routes, and how they
map to ARQ's job words, in ``workbench.api.seed``; the request and response models in
``workbench.api.models``. Their order here is the OpenAPI document's, which a test keeps equal to
``tests/surfaces/openapi.json``.

With ``WORKBENCH_API_TOKEN`` set, every request (the schema included) needs
``Authorization: Bearer <token>``; otherwise 401. The comparison is constant-time. Without a
token, only requests to localhost or a loopback address are answered (DNS rebinding). Request
bodies are capped (413) and so are the URLs of one ``POST /batches`` (422); a 422 repeats at
most a clipped copy of the input. All of that is ``workbench.api.guards``; ``/docs`` (Swagger UI
served from this machine, asking for the token itself) is ``workbench.api.docs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from workbench.api import batches, docs, seed
from workbench.api.deps import WorkbenchHolder
from workbench.api.guards import BearerAuth, BodyLimit, LocalHostOnly, clean_text, echo
from workbench.api.models import unprocessable
from workbench.client.workbench import Workbench
from workbench.core.errors import BatchNotFoundError, InvalidInputError, ServiceError
from workbench.core.version import __version__


# ============================================================================ errors
async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"a backing service is unavailable: {exc}"}, status_code=503)


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": [unprocessable(["body"], str(exc), "invalid_input")]},
                        status_code=422)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, repeating only a clipped copy of each input (``guards.echo``)."""
    assert isinstance(exc, RequestValidationError)
    detail = []
    for error in exc.errors():
        entry = {k: v for k, v in error.items() if k not in ("input", "url")}
        if "input" in error:
            entry["input"] = echo(error["input"])
        detail.append(entry)
    return JSONResponse({"detail": clean_text(jsonable_encoder(detail))}, status_code=422)


# ============================================================================ the app
def create_app(wb_factory: Callable[[], Workbench] | None = None) -> FastAPI:
    """The FastAPI app. ``wb_factory`` makes its one ``Workbench`` (default: ``Workbench()``,
    settings from the environment)."""
    holder = WorkbenchHolder(wb_factory or Workbench)

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
        # our own /docs: local assets, and a page that asks for the token (api.docs)
        docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
    )
    # the last added runs first: the Host check, then the token, then the body's size
    app.add_middleware(BodyLimit, holder=holder)
    app.add_middleware(BearerAuth, holder=holder, public=docs.is_public)
    app.add_middleware(LocalHostOnly, holder=holder)
    app.state.workbench_holder = holder  # what get_workbench hands to the routes

    app.add_exception_handler(BatchNotFoundError, _not_found)
    app.add_exception_handler(ServiceError, _unavailable)
    app.add_exception_handler(InvalidInputError, _invalid_input)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    app.include_router(batches.router)  # /batches
    app.include_router(seed.router)  # /analyses and /jobs
    docs.add_docs(app, holder)  # /docs, not in the schema
    return app
