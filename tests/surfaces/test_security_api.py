"""Issue 14 against the real HTTP API (uvicorn on loopback, httpx, a real worker): the address
guard on by default through ``POST /batches``, bounded requests, the Host check without a token,
lone surrogates, clipped echoes, declared params, strict ``notify``, ``/docs`` with local assets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from tests.conftest import TestSite as LoopbackSite
from workbench import Workbench
from workbench.api import create_app
from workbench.core.errors import InvalidInputError, InvalidParamsError, SettingsError
from workbench.core.settings import load_settings

from .conftest import PIPELINES

TOKEN = "sec-token-9b1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def serve_api(make_wb: Callable[..., Workbench], **settings: Any) -> AsyncIterator[str]:
    """The API of a Workbench made with ``settings`` on a free loopback port; its base URL."""
    app = create_app(lambda: make_wb(pipelines=PIPELINES, **settings))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# ---------------------------------------------------------------- row 1: the guard, end to end
async def test_the_worker_refuses_internal_addresses_by_default(
    make_wb: Callable[..., Workbench], run_worker: Any, site: LoopbackSite
) -> None:
    """An API caller names loopback in every spelling; the worker (default settings: the
    fixture's opt-out is undone) fetches none of them and nothing internal comes back."""
    port = site.base.rsplit(":", 1)[1]
    urls = [f"http://{h}:{port}/page/1" for h in (
        "127.0.0.1", "localhost", "0.0.0.0", "0x7f000001", "[::ffff:127.0.0.1]", "[::1]",
        "[64:ff9b::7f00:1]", "[2002:7f00:1::1]")]
    async with serve_api(make_wb, block_private_addresses=True) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post("/batches", json={"urls": urls, "on_invalid": "skip"})
        assert r.status_code == 201, r.text
        bid = r.json()["batch_id"]
        await run_worker(block_private_addresses=True)
        failed = (await c.get(f"/batches/{bid}/items", params={"status": "failed"})).json()
        results = (await c.get(f"/batches/{bid}/results")).text
    assert failed["total"] == r.json()["items"] >= 6
    assert {i["error_type"] for i in failed["items"]} == {"blocked_address"}
    assert site.hits == {} and results == ""


# ---------------------------------------------------------------- row 2: bounded requests
async def test_body_cap_413_and_url_count_422(make_wb: Callable[..., Workbench]) -> None:
    async with serve_api(make_wb, api_max_body_bytes=64 * 1024, api_max_urls=100) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as c:
        big = {"urls": [f"http://example.org/{i:08d}" for i in range(4000)]}  # ~110 KB
        r = await c.post("/batches", json=big)
        assert r.status_code == 413 and "WORKBENCH_API_MAX_BODY_BYTES" in r.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            data = json.dumps(big).encode()
            for i in range(0, len(data), 8192):
                yield data[i:i + 8192]

        r = await c.post("/batches", content=chunks(),
                         headers={"Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        r = await c.post("/batches", json={"urls": big["urls"][:101]})
        assert r.status_code == 422
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", "urls"] and detail["type"] == "too_many_urls"
        assert "at most 100" in detail["msg"] and "WORKBENCH_API_MAX_URLS" in detail["msg"]
        r = await c.post("/batches", json={"urls": big["urls"][:100], "pipeline": "surf"})
        assert r.status_code == 201, r.text


async def test_default_cap_refuses_a_50_mb_body_before_reading_it(
    make_wb: Callable[..., Workbench]
) -> None:
    body = b'{"urls": ["' + b"x" * (50 * 2**20) + b'"]}'
    async with serve_api(make_wb) as base, httpx.AsyncClient(base_url=base, timeout=60) as c:
        r = await c.post("/batches", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert load_settings().api_max_body_bytes == 16 * 2**20
    assert load_settings().api_max_urls == 100_000


# ---------------------------------------------------------------- row 5: Host without a token
async def test_token_less_api_answers_only_local_host_names(
    make_wb: Callable[..., Workbench]
) -> None:
    async with serve_api(make_wb) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        port = base.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
            assert (await c.get("/batches", headers={"Host": host})).status_code == 200, host
        for host in (f"evil.example:{port}", "rebind.attacker.test", "127.0.0.1.nip.io",
                     f"localhost.evil.example:{port}", ""):
            r = await c.get("/batches", headers={"Host": host})
            assert r.status_code == 400 and "Host" in r.json()["detail"], host
    async with serve_api(make_wb, api_token=TOKEN) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as c:
        # with a token, the token is the guard: any Host (a public name, a proxy) is fine
        r = await c.get("/batches", headers={**AUTH, "Host": "workbench.lab.example"})
        assert r.status_code == 200
        assert (await c.get("/batches", headers={"Host": "workbench.lab.example"})).status_code \
            == 401


# ---------------------------------------------------------------- rows 6 and 7: 422s
@pytest.mark.parametrize(("path", "body", "loc"), [
    ("/batches", '{"urls": ["http://example.org/\\ud800"]}', ["body", "urls", 0]),
    ("/batches", '{"urls": ["http://example.org/"], "name": "a\\udc00b"}', ["body", "name"]),
    ("/batches", '{"urls": ["http://example.org/"], "notify": "a\\ud800@b.org"}',
     ["body", "notify"]),
    ("/batches", '{"urls": ["http://example.org/"], "pipeline": "\\ud800"}',
     ["body", "pipeline"]),
    ("/batches", '{"urls": ["http://example.org/"], "params": {"k": ["\\udfff"]}}',
     ["body", "params"]),
    ("/batches", '{"rows": [{"url": "http://example.org/", "col": "\\ud800"}]}',
     ["body", "rows"]),
    ("/batches", '{"rows": [{"url": "http://example.org/", "\\udc00": 1}]}', ["body", "rows"]),
    ("/analyses", '{"url": "http://example.org/\\ud800"}', ["body", "url"]),
    ("/analyses", '{"url": "http://example.org/", "notify": "\\ud800"}', ["body", "notify"]),
])
async def test_lone_surrogates_are_422_naming_the_field(
    make_wb: Callable[..., Workbench], path: str, body: str, loc: list[Any]
) -> None:
    async with serve_api(make_wb) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc


async def test_422_bodies_clip_what_they_echo(make_wb: Callable[..., Workbench]) -> None:
    async with serve_api(make_wb) as base, httpx.AsyncClient(base_url=base, timeout=60) as c:
        r = await c.post("/batches", json={"urls": ["http://example.org/"], "name": "n" * 2**20})
        assert r.status_code == 422 and len(r.content) < 2000, len(r.content)
        assert r.json()["detail"][0]["loc"] == ["body", "name"]
        r = await c.post("/batches", json={"urls": ["ftp://" + "u" * 100_000]})
        assert r.status_code == 422 and len(r.content) < 2000
        assert r.json()["detail"][0]["input"].endswith("(100006 characters)")
        r = await c.post("/batches", json={"urls": [1] * 5000})  # 5000 type errors, clipped each
        assert r.status_code == 422 and len(r.content) < 1_500_000


# ---------------------------------------------------------------- row 8: declared params
async def test_params_checked_at_submit(
    make_wb: Callable[..., Workbench], tmp_path: Any
) -> None:
    model = str(tmp_path / "configured-model")
    async with serve_api(make_wb, embed_model=model) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as c:
        for params, loc in (({"max_keywords": -5}, ["body", "params", "max_keywords"]),
                            ({"include_text": "yes"}, ["body", "params", "include_text"]),
                            ({"no_such_param": 1}, ["body", "params", "no_such_param"]),
                            ({"embed_model": "/etc"}, ["body", "params", "embed_model"]),
                            ({"embed_model": "/root/model"}, ["body", "params", "embed_model"])):
            r = await c.post("/batches", json={"urls": ["http://example.org/"], "params": params})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (params, r.text)
        r = await c.post("/analyses", json={"url": "http://example.org/",
                                            "params": {"embed_model": "/etc"}})
        assert r.status_code == 422 and "configured" in r.json()["detail"][0]["msg"]
        r = await c.post("/batches", json={"urls": ["http://example.org/"],
                                           "params": {"embed_model": model, "max_keywords": 3}})
        assert r.status_code == 201, r.text
    wb = make_wb()
    with pytest.raises(InvalidParamsError, match="max_keywords") as info:
        await wb.submit(["http://example.org/"], params={"max_keywords": -5})
    assert info.value.fields and info.value.fields[0][0] == "max_keywords"


# ---------------------------------------------------------------- row 9: notify
@pytest.mark.parametrize("notify", [
    "@", "a@b.org\r\nBcc: x@y.org", "a@b.org\nx@y.org", "Ana <a@b.org>", "a@b", "a@@b.org",
    ", ".join(f"u{i}@example.org" for i in range(11)), "a@b.org,\u00e9@b.org", "",
])
async def test_notify_is_checked_strictly(
    make_wb: Callable[..., Workbench], notify: str
) -> None:
    async with serve_api(make_wb) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.post("/batches", json={"urls": ["http://example.org/"], "notify": notify})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "notify"]
    with pytest.raises(InvalidInputError, match="notify"):
        await make_wb().submit(["http://example.org/"], pipeline="noop", notify=notify)


async def test_notify_list_is_stored_normalised(make_wb: Callable[..., Workbench]) -> None:
    wb = make_wb()
    batch = await wb.submit(["http://example.org/"], pipeline="noop",
                            notify=" ana@example.org;bo@example.org  ana@example.org ")
    info = await wb.ledger.batch_info(batch.id)
    assert info.notify == "ana@example.org, bo@example.org"


def test_smtp_credentials_need_tls_unless_allowed() -> None:
    with pytest.raises(SettingsError, match="clear text") as info:
        load_settings(smtp_url="smtp://ana:s3cret@mail.example.org:25")
    assert "s3cret" not in str(info.value)
    assert load_settings(smtp_url="smtp+starttls://ana:s3cret@mail.example.org:587").smtp_url
    assert load_settings(smtp_url="smtp://ana:s3cret@127.0.0.1:25",
                         smtp_allow_insecure_auth=True).smtp_url
    assert load_settings(smtp_url="smtp://127.0.0.1:25").smtp_url  # no credentials: fine


# ---------------------------------------------------------------- row 10: secrets
def test_secrets_are_masked_in_reprs_and_errors() -> None:
    s = load_settings(api_token="tok-1f2e3d", llm_api_key="key-4c5b6a",
                      smtp_url="smtps://ana:pw-7d8e9f@mail.example.org",
                      redis_url="redis://:pw-0a1b2c@127.0.0.1:6379/0",
                      database_url="postgresql+asyncpg://u:pw-3c4d5e@127.0.0.1/db")
    shown = repr(s) + str(s) + json.dumps(s.describe(), default=str)
    for secret in ("tok-1f2e3d", "key-4c5b6a", "pw-7d8e9f", "pw-0a1b2c", "pw-3c4d5e"):
        assert secret not in shown, secret
    assert s.api_token_value == "tok-1f2e3d" and s.llm_api_key_value == "key-4c5b6a"
    for bad in ("http://:pw-0a1b2c@127.0.0.1:6379", "redis://:pw-0a1b2c@"):
        with pytest.raises(SettingsError) as info:
            load_settings(redis_url=bad)
        assert "pw-0a1b2c" not in str(info.value) and "redis_url" in str(info.value)


# ---------------------------------------------------------------- row 13: /docs
async def test_docs_page_and_assets_are_local_and_the_schema_needs_the_token(
    make_wb: Callable[..., Workbench]
) -> None:
    async with serve_api(make_wb, api_token=TOKEN) as base, \
            httpx.AsyncClient(base_url=base, timeout=30) as c:
        page = await c.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '"tokenRequired": true' in page.text and "wb-login" in page.text
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            r = await c.get(f"/docs/assets/{asset}")
            assert r.status_code == 200 and len(r.content) > 10_000, asset
        assert (await c.get("/openapi.json")).status_code == 401
        assert (await c.get("/openapi.json", headers=AUTH)).status_code == 200
        assert (await c.get("/docs/assets/../../openapi.json")).status_code in (401, 404)
        assert (await c.get("/redoc")).status_code == 401  # no CDN page left behind a token
    async with serve_api(make_wb) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        assert '"tokenRequired": false' in (await c.get("/docs")).text
