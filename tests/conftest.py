"""Shared fixtures: real Redis, real SQLite/PostgreSQL, real HTTP servers on loopback.

Backends: every test using ``wb``/``make_wb`` runs on SQLite + the embedded Redis, and again on
PostgreSQL + the machine's Redis 7 when ``WORKBENCH_TEST_DATABASE_URL`` and
``WORKBENCH_TEST_REDIS_URL`` are set (``.ci/run`` sets both).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from workbench import Workbench
from workbench.queue.embedded import EmbeddedRedis

# The product's own settings come from WORKBENCH_* variables; one left in the shell that runs the
# suite (CI's smoke run exports WORKBENCH_DATA_DIR for its demo) would change what every test
# sees. Tests set what they need themselves; only the WORKBENCH_TEST_* switches pass through.
for _name in [n for n in os.environ if n.startswith("WORKBENCH_")]:
    if not _name.startswith("WORKBENCH_TEST_"):
        del os.environ[_name]

PG_URL = os.environ.get("WORKBENCH_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("WORKBENCH_TEST_REDIS_URL")

BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL and REDIS_URL else [])


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One embedded redis-server for the session (tests isolate by queue name)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis") / "redis")
    url = server.ensure_running()
    yield url
    server.stop()


async def _create_pg_database() -> tuple[str, Callable[[], Awaitable[None]]]:
    import asyncpg

    assert PG_URL
    base = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"wbtest_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    head, _, _ = PG_URL.rpartition("/")
    url = f"{head}/{name}"

    async def drop() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return url, drop


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture
async def backend_settings(
    backend: str, tmp_path: Path, embedded_redis: str
) -> AsyncIterator[dict[str, Any]]:
    """Keyword settings for a Workbench on the chosen backend, isolated per test."""
    queue = f"wbtest:{uuid.uuid4().hex[:10]}"
    kw: dict[str, Any] = dict(
        data_dir=str(tmp_path / "data"),
        queue_name=queue,
        heartbeat_s=0.5,
        heartbeat_timeout_s=3.0,
        reconcile_interval_s=0.5,
        retry_backoff_s=0.05,
        retry_backoff_max_s=0.5,
        log_format="console",
        # the test sites are on loopback: allowed explicitly (the guard is on by default)
        block_private_addresses=False,
    )
    drop = None
    if backend == "postgresql":
        kw["database_url"], drop = await _create_pg_database()
        kw["redis_url"] = REDIS_URL
    else:
        kw["redis_url"] = embedded_redis
    yield kw
    if drop is not None:
        await drop()


@pytest_asyncio.fixture
async def make_wb(backend_settings: dict[str, Any]) -> AsyncIterator[Callable[..., Workbench]]:
    """Factory of Workbench instances sharing the test's backend; all closed at teardown."""
    made: list[Workbench] = []

    def make(**overrides: Any) -> Workbench:
        wb = Workbench(**{**backend_settings, **overrides})
        made.append(wb)
        return wb

    yield make
    for wb in made:
        await wb.close()


@pytest_asyncio.fixture
async def wb(make_wb: Callable[..., Workbench]) -> Workbench:
    return make_wb()


@pytest_asyncio.fixture
async def run_worker(
    backend_settings: dict[str, Any],
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await run_worker(burst=True)`` runs an in-process worker on the test's backend until the
    queue is empty; ``run_worker(burst=False)`` returns a task (cancelled at teardown)."""
    from workbench.core.settings import load_settings
    from workbench.worker.process import run_worker as _run

    tasks: list[asyncio.Task[Any]] = []

    async def run(burst: bool = True, **kw: Any) -> Any:
        overrides = {k: kw.pop(k) for k in list(kw) if k not in
                     ("concurrency", "cpu_processes", "poll_delay_s")}
        settings = load_settings(**{**backend_settings, **overrides})
        coro = _run(settings, burst=burst, handle_signals=False, **kw)
        if burst:
            return await asyncio.wait_for(coro, 120)
        task = asyncio.get_running_loop().create_task(coro)
        tasks.append(task)
        return task

    yield run
    for task in tasks:
        task.cancel()
    for task in tasks:
        # only the cancel we just sent is expected: a worker that crashed (or failed to stop
        # cleanly) after the test's asserts must fail the test, not vanish in teardown
        with contextlib.suppress(asyncio.CancelledError):
            await task


def article_html(n: int, *, lang: str = "en") -> str:
    """A realistic article page with boilerplate around real sentences."""
    sentences = [
        f"Article number {n} explains how researchers measured the flow of rivers in spring.",
        "The team combined satellite images with gauges placed along the banks every kilometre.",
        "They found that melting snow arrived earlier than in any season recorded before.",
        "Farmers downstream changed their planting calendars in response to the new data.",
        "Local officials now publish weekly summaries so that everyone can plan ahead.",
    ]
    body = "".join(f"<p>{' '.join(sentences)} Paragraph {i} of article {n}.</p>" for i in range(6))
    return (
        f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>"
        f"<title>River study {n}</title><meta name='author' content='Ada Writer'>"
        f"<meta name='description' content='A study of rivers, part {n}.'></head><body>"
        "<nav><a href='/'>Home</a> <a href='/about'>About</a></nav>"
        f"<article><h1>River study {n}</h1>{body}</article>"
        "<footer>Copyright Example Press. All rights reserved.</footer></body></html>"
    )


class TestSite:
    """A loopback HTTP site for tests: /page/{n}, /status/{code}, /slow, with hit counters."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.fail_first: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.base = ""

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def _page(self, request: web.Request) -> web.Response:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        remaining = self.fail_first.get(path, 0)
        if remaining:
            self.fail_first[path] = remaining - 1
            return web.Response(status=503, text="try later", headers={"Retry-After": "0"})
        return web.Response(text=article_html(int(request.match_info["n"])),
                            content_type="text/html", charset="utf-8")

    async def _status(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def _slow(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text=article_html(0), content_type="text/html")

    async def start(self) -> TestSite:
        app = web.Application()
        app.router.add_get("/page/{n}", self._page)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/slow", self._slow)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest_asyncio.fixture
async def site() -> AsyncIterator[TestSite]:
    s = await TestSite().start()
    yield s
    await s.close()


PYTHON = sys.executable
