"""The HTTP API when things go wrong, on a real uvicorn server on loopback: a job waiting for its
retry's backoff reports ``deferred``; Redis or the database down answers 503 naming the service,
never a 500 or a hung request, and the API comes back once the service does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from workbench import Workbench, pipeline
from workbench.api import create_app
from workbench.core.errors import TransientError
from workbench.queue.embedded import EmbeddedRedis

from .conftest import PIPELINES, free_port


@pipeline("test-api-busy", version="1")
async def busy(url: str, ctx: Any) -> dict:
    raise TransientError("the site is busy", error_type="busy")


@asynccontextmanager
async def serve(factory: Callable[[], Workbench]) -> AsyncIterator[httpx.AsyncClient]:
    config = uvicorn.Config(create_app(factory), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    server.should_exit = True
    await task


async def test_a_job_waiting_for_its_backoff_is_deferred(make_wb: Any) -> None:
    wb: Workbench = make_wb(retry_backoff_s=300, retry_backoff_max_s=300, max_tries=3,
                            pipelines=PIPELINES)
    async with serve(lambda: wb) as api:
        r = await api.post("/analyses", json={"url": "http://example.org/busy/1",
                                              "pipeline": "test-api-busy"})
        assert r.status_code == 201, r.text
        job = r.json()["job_id"]
        item = job.split(":")[0]
        assert (await api.get(f"/jobs/{job}")).json()["status"] == "queued"
        await wb.start_worker(concurrency=1)
        try:
            for _ in range(400):  # the first try fails; the retry waits ~150-300 s
                st = (await api.get(f"/jobs/{item}:2")).json()
                if st.get("status") == "deferred":
                    break
                await asyncio.sleep(0.05)
        finally:
            await wb.stop_workers()
        assert st["status"] == "deferred" and st["item_status"] == "queued", st
        assert st["error"]["type"] == "busy" and st["error"]["retryable"] is True
        assert st["success"] is None and not st["superseded"]
        old = (await api.get(f"/jobs/{job}")).json()  # the first attempt's job id
        assert old["status"] == "deferred" and old["superseded"]
        assert old["current_job_id"] == f"{item}:2"


async def test_redis_down_is_503_and_recovers(
    make_wb: Any, run_worker: Any, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "own-redis")
    url = await asyncio.to_thread(server.ensure_running)
    try:
        wb: Workbench = make_wb(redis_url=url, pipelines=PIPELINES)
        async with serve(lambda: wb) as api:
            r = await api.post("/batches", json={"urls": ["http://example.org/bad/1",
                                                          "http://example.org/ok/2"],
                                                 "pipeline": "surf"})
            assert r.status_code == 201, r.text
            batch_id = r.json()["batch_id"]
            await run_worker(redis_url=url, pipelines=PIPELINES)
            await asyncio.to_thread(server.stop)  # Redis goes away

            r = await api.post(f"/batches/{batch_id}/retry")
            assert r.status_code == 503, r.text
            assert r.json()["detail"].startswith("a backing service is unavailable")
            assert "Redis" in r.json()["detail"]
            # what needs only the ledger still answers
            r = await api.get(f"/batches/{batch_id}")
            assert r.status_code == 200 and r.json()["counts"]["done"] == 1

            await asyncio.to_thread(server.ensure_running)  # back
            r = await api.post(f"/batches/{batch_id}/cancel")
            assert r.status_code == 200, r.text
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.parametrize("route", ["/batches", "/batches/b-00000000-000000-00000000",
                                   "/jobs/1:1"])
async def test_database_down_is_503(make_wb: Any, route: str) -> None:
    down = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    wb: Workbench = make_wb(database_url=down, pipelines=PIPELINES)
    async with serve(lambda: wb) as api:
        r = await api.get(route)
        assert r.status_code == 503, r.text
        detail = r.json()["detail"]
        assert detail.startswith("a backing service is unavailable") and "ledger" in detail
        r = await api.post("/batches", json={"urls": ["http://example.org/ok/1"],
                                             "pipeline": "surf"})
        assert r.status_code == 503, r.text
