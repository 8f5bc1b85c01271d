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

With ``WORKBENCH_API_TOKEN`` set, every request (docs and schema included) needs
``Authorization: Bearer <token>``; otherwise 401. The comparison is constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from workbench.api import batches, seed
from workbench.api.deps import WorkbenchHolder
from workbench.api.models import unprocessable
from workbench.client.workbench import Workbench
from workbench.core.errors import BatchNotFoundError, InvalidInputError, ServiceError
from workbench.core.version import __version__


# ============================================================================ auth
class _BearerAuth:
    """Pure ASGI middleware: every HTTP request needs the bearer token when one is configured."""

    def __init__(self, app: Any, holder: WorkbenchHolder):
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


# ============================================================================ errors
async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"a backing service is unavailable: {exc}"}, status_code=503)


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": [unprocessable(["body"], str(exc), "invalid_input")]},
                        status_code=422)


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
    )
    app.add_middleware(_BearerAuth, holder=holder)
    app.state.workbench_holder = holder  # what get_workbench hands to the routes

    app.add_exception_handler(BatchNotFoundError, _not_found)
    app.add_exception_handler(ServiceError, _unavailable)
    app.add_exception_handler(InvalidInputError, _invalid_input)

    app.include_router(batches.router)  # /batches
    app.include_router(seed.router)  # /analyses and /jobs
    return app
