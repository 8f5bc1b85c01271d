"""What every request to the HTTP API passes before a route sees it (pure ASGI middlewares).

Outermost first, as ``create_app`` stacks them:

1. ``LocalHostOnly``: without ``WORKBENCH_API_TOKEN`` the API answers only requests whose
   ``Host`` is ``localhost`` or a loopback address (``127.0.0.1``, ``[::1]``, with any port), so
   a web page that rebinds its own name to 127.0.0.1 (DNS rebinding) cannot drive a token-less
   API from the user's browser; 400 otherwise. With a token, the token is the guard.
2. ``BearerAuth``: with ``WORKBENCH_API_TOKEN`` set, every request needs
   ``Authorization: Bearer <token>`` (401 otherwise; a constant-time comparison). Only the docs
   page and its static files are exempt (``docs.PUBLIC_PATHS``): they hold no data, and the page
   asks for the token itself.
3. ``BodyLimit``: a request body over ``WORKBENCH_API_MAX_BODY_BYTES`` is refused with 413,
   from its ``Content-Length`` before anything is read, or once a chunked body passes the limit.

Also here: ``echo``, which clips the input a 422 body repeats (a 50 MB ``name`` is not sent
back), and ``without_surrogates``, which makes any text encodable (a lone surrogate such as
``"\\ud800"`` is valid in a JSON string but not in UTF-8).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from workbench.api.deps import WorkbenchHolder
from workbench.core.settings import Settings

Scope = dict[str, Any]
#: how much of an input a 422 repeats: characters of a string, items of a list or an object
ECHO_CHARS = 200
ECHO_ITEMS = 20
_SURROGATE = re.compile("[\ud800-\udfff]")


# ============================================================================ host
def is_local_host(host_header: str) -> bool:
    """``localhost`` or a loopback IP literal, with or without a port (``[::1]:8000``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        name, sep, _ = host[1:].partition("]")
        if not sep:
            return False
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    else:
        name = host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return bytes(value)
    return None


class LocalHostOnly:
    """Without an API token: refuse a ``Host`` that is not localhost or a loopback address."""

    def __init__(self, app: Any, holder: WorkbenchHolder):
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.holder.get().settings.api_token:
            host = (_header(scope, b"host") or b"").decode("latin-1")
            if not is_local_host(host):
                shown = host if len(host) <= 100 else host[:100] + "…"
                response = JSONResponse(
                    {"detail": f"invalid Host header {shown!r}: without WORKBENCH_API_TOKEN "
                     "this API answers only localhost, 127.0.0.1 and [::1]"},
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ============================================================================ auth
class BearerAuth:
    """Pure ASGI middleware: every HTTP request needs the bearer token when one is configured
    (but the public paths: the docs page and its static files)."""

    def __init__(self, app: Any, holder: WorkbenchHolder, public: Callable[[str], bool]):
        self.app = app
        self.holder = holder
        self.public = public

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            token = self.holder.get().settings.api_token_value
            if token and not self.public(scope.get("path", "")) and not token_ok(scope, token):
                response = JSONResponse(
                    {"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                    status_code=401, headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def token_ok(scope: Scope, token: str) -> bool:
    """Whether the request's ``Authorization`` header carries ``token`` (constant time)."""
    value = _header(scope, b"authorization") or b""
    scheme, _, given = value.partition(b" ")
    if scheme.lower() != b"bearer":
        given = b""
    return hmac.compare_digest(given.strip(), token.encode())


# ============================================================================ body size
def _too_large(limit: int) -> str:
    return (f"request body over {limit} bytes (WORKBENCH_API_MAX_BODY_BYTES): submit a large "
            "batch as a file with python -m workbench submit, or in several requests")


class BodyLimit:
    """413 for a request body over ``settings.api_max_body_bytes``."""

    def __init__(self, app: Any, holder: WorkbenchHolder):
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = self.holder.get().settings
        limit = settings.api_max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            response = JSONResponse({"detail": _too_large(limit)}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI lets an HTTPException from reading the body through to its handler
                    raise HTTPException(413, detail=_too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


# ============================================================================ echoed input
def without_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so it can be encoded."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def echo(value: Any, depth: int = 0) -> Any:
    """A bounded copy of an input for an error body: strings clipped to ``ECHO_CHARS``, lists
    and objects to ``ECHO_ITEMS`` entries, three levels deep; lone surrogates replaced."""
    if isinstance(value, str):
        value = without_surrogates(value)
        if len(value) > ECHO_CHARS:
            return f"{value[:ECHO_CHARS]}… ({len(value)} characters)"
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= 3:
        return "…"
    if isinstance(value, dict):
        out = {echo(str(k)): echo(v, depth + 1) for k, v in list(value.items())[:ECHO_ITEMS]}
        if len(value) > ECHO_ITEMS:
            out["…"] = f"{len(value) - ECHO_ITEMS} more"
        return out
    if isinstance(value, (list, tuple)):
        items = [echo(v, depth + 1) for v in value[:ECHO_ITEMS]]
        if len(value) > ECHO_ITEMS:
            items.append(f"… {len(value) - ECHO_ITEMS} more")
        return items
    return echo(str(value), depth)


def clean_text(value: Any) -> Any:
    """Every string in ``value`` (a JSON-like structure) without lone surrogates."""
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_text(v) for v in value]
    return value
