"""Fixtures for the fetcher tests: real aiohttp servers on loopback and fetchers that get closed.

Imported by the test_fetch*.py modules (not a conftest, so other pipeline tests stay untouched).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from workbench.core.settings import Settings
from workbench.pipeline.fetch.fetcher import Fetcher

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve({"/path": handler, ...}, host="127.0.0.1")`` starts a server on a free port."""
    servers: list[TestServer] = []

    async def start(routes: dict[str, Handler], host: str = "127.0.0.1") -> TestServer:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("GET", path, handler)
        server = TestServer(app, host=host, port=0)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """A bare TCP server answering every request with the given bytes (for malformed replies
    aiohttp's server would not produce, such as a response without Content-Type)."""
    servers: list[asyncio.Server] = []

    async def start(payload: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(payload)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def make_fetcher() -> AsyncIterator[Callable[..., Fetcher]]:
    """``make_fetcher(address_allowed=None, **settings)``: a Fetcher closed after the test."""
    fetchers: list[Fetcher] = []

    def make(address_allowed: Any = None, **settings: Any) -> Fetcher:
        # the test servers are on loopback: allowed unless a test turns the guard on
        settings.setdefault("block_private_addresses", False)
        fetcher = Fetcher(Settings(**settings), address_allowed=address_allowed)
        fetchers.append(fetcher)
        return fetcher

    yield make
    for fetcher in fetchers:
        await fetcher.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def html(body: str, charset: str = "utf-8") -> web.Response:
    return web.Response(
        body=f"<html><body>{body}</body></html>".encode(charset),
        headers={"Content-Type": f"text/html; charset={charset}"},
    )
