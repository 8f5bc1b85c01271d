"""The HTTP API on a real uvicorn server on loopback, with httpx; an OpenAPI schema test."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
import uvicorn

from workbench import Workbench
from workbench.api import create_app

from .conftest import CLI, PIPELINES, cli_env, free_port, interrupt

TOKEN = "test-token-3f9a1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    def __init__(self, base: str, wb_made: list[Workbench]):
        self.base = base
        self.made = wb_made
        self.client = httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30)


@pytest_asyncio.fixture
async def api(make_wb: Callable[..., Workbench]) -> AsyncIterator[Api]:
    made: list[Workbench] = []

    def factory() -> Workbench:
        wb = make_wb(api_token=TOKEN, pipelines=PIPELINES)
        made.append(wb)
        return wb

    config = uvicorn.Config(create_app(factory), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    a = Api(f"http://127.0.0.1:{port}", made)
    yield a
    await a.client.aclose()
    server.should_exit = True
    await task
    assert made and all(wb._closed for wb in made)


async def test_bearer_token_on_every_request(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.base) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            # /docs is public: a page holding no data that asks for the token (test_security)
            for path in ("/batches", "/openapi.json", "/jobs/1:1"):
                r = await anon.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
        r = await anon.post("/batches", json={"urls": ["http://example.org/ok/1"]})
        assert r.status_code == 401
    assert (await api.client.get("/batches")).status_code == 200
    schema = (await api.client.get("/openapi.json")).json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


async def test_batches_routes(api: Api, run_worker: Any) -> None:
    c = api.client
    r = await c.post("/batches", json={"urls": ["http://example.org/ok/1", "ftp://x.org/",
                                                 "http://", "http://example.org/ok/2"]})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [(d["loc"], d["input"]) for d in detail] == [
        (["body", "urls", 1], "ftp://x.org/"), (["body", "urls", 2], "http://")]
    assert "scheme" in detail[0]["msg"]
    for body, loc in (({"urls": ["http://example.org/1"], "pipeline": "nope"},
                       ["body", "pipeline"]),
                      ({"urls": ["http://example.org/1"], "notify": "not-an-email"},
                       ["body", "notify"]),
                      ({"urls": []}, ["body", "urls"]),
                      ({"url": "http://example.org/1"}, ["body", "urls"])):
        r = await c.post("/batches", json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (body, r.text)

    urls = [f"http://example.org/ok/{i}" for i in range(1, 6)] + [
        "http://example.org/bad/6", "http://example.org/gone/7", "http://example.org/ok/1"]
    r = await c.post("/batches", json={"urls": urls, "pipeline": "surf", "name": "api",
                                       "params": {"tag": "t"}})
    assert r.status_code == 201, r.text
    created = r.json()
    bid = created["batch_id"]
    assert created["items"] == 7 and created["status"] == "running" and created["cached"] == 0
    await run_worker(pipelines=PIPELINES)

    listed = (await c.get("/batches")).json()
    assert [b["batch_id"] for b in listed] == [bid] and listed[0]["state"] == "completed"
    one = (await c.get(f"/batches/{bid}")).json()
    assert one["counts"] == {"queued": 0, "running": 0, "done": 5, "failed": 2, "cancelled": 0}
    assert one["params"] == {"tag": "t"} and one["duration_s"] >= 0
    assert {g["error_type"] for g in one["top_errors"]} == {"bad_page", "gone_page"}

    page = (await c.get(f"/batches/{bid}/items", params={"status": "failed", "limit": 1})).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    first = page["items"][0]
    assert first["error_type"] == "bad_page" and first["job_id"].endswith(":1")
    page2 = (await c.get(f"/batches/{bid}/items", params={"limit": 3, "offset": 6})).json()
    assert page2["total"] == 7 and len(page2["items"]) == 1
    r = await c.get(f"/batches/{bid}/items", params={"status": "weird"})
    assert r.status_code == 422

    async with c.stream("GET", f"/batches/{bid}/results") as resp:
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) async for line in resp.aiter_lines() if line]
    assert sorted(x["n"] for x in lines) == [1, 2, 3, 4, 5] and lines[0]["vec"] == [0.0, 1.0, 2.0]
    r = await c.get(f"/batches/{bid}/results", params={"format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0].startswith("item_id,url,n,words,tag")
    assert len(r.text.splitlines()) == 6

    assert (await c.post(f"/batches/{bid}/retry")).json() == {"requeued": 2}
    assert (await c.post(f"/batches/{bid}/cancel")).json() == {"cancelled": 2}
    for path in ("", "/items", "/results"):
        r = await c.get(f"/batches/b-nope{path}")
        assert r.status_code == 404 and "no batch" in r.json()["detail"]
    assert (await c.post("/batches/b-nope/retry")).status_code == 404


async def test_analyses_and_jobs(api: Api, run_worker: Any) -> None:
    c = api.client
    r = await c.post("/analyses", json={"url": "http://example.org/ok/3", "pipeline": "surf"})
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["status"] == "pending" and a["analysis_id"].startswith("b-")
    item, attempt = a["job_id"].split(":")
    assert attempt == "1"
    job = (await c.get(f"/jobs/{a['job_id']}")).json()
    assert job["status"] == "queued" and job["item_status"] == "queued" and job["success"] is None
    r = await c.post(f"/analyses/{a['analysis_id']}/reprocess")
    assert r.status_code == 409  # still queued

    bad = (await c.post("/analyses", json={"url": "http://example.org/bad/4",
                                           "pipeline": "surf"})).json()
    await run_worker(pipelines=PIPELINES)

    job = (await c.get(f"/jobs/{a['job_id']}")).json()
    assert job["status"] == "complete" and job["success"] is True
    assert job["result"]["n"] == 3 and job["result"]["vec"] == [0.0, 1.0, 2.0]
    assert job["enqueue_time"] and job["start_time"] and job["finish_time"]
    assert (await c.get(f"/analyses/{a['analysis_id']}")).json()["result"]["n"] == 3

    failed = (await c.get(f"/jobs/{bad['job_id']}")).json()
    assert failed["status"] == "complete" and failed["success"] is False
    assert failed["error"] == {"type": "bad_page", "message": "page 4 is bad", "retryable": False}

    # reprocess a failed analysis: retried in place, a new attempt and job id
    re_bad = (await c.post(f"/analyses/{bad['analysis_id']}/reprocess")).json()
    bad_item = bad["job_id"].split(":")[0]
    assert re_bad == {"analysis_id": bad["analysis_id"], "job_id": f"{bad_item}:2",
                      "status": "queued", "reprocess_of": None}
    old = (await c.get(f"/jobs/{bad['job_id']}")).json()
    assert old["superseded"] and old["current_job_id"] == f"{bad_item}:2"
    assert old["status"] == "queued"
    # cancel it through the seed's DELETE /jobs/{id}
    gone = (await c.delete(f"/jobs/{bad_item}:2")).json()
    assert gone == {"job_id": f"{bad_item}:2", "cancelled": True, "status": "complete",
                    "item_status": "cancelled"}
    again = (await c.delete(f"/jobs/{bad_item}:2")).json()
    assert again["cancelled"] is False

    # reprocess a done analysis: its result is kept; a new analysis fetches afresh
    re_ok = (await c.post(f"/analyses/{a['analysis_id']}/reprocess")).json()
    assert re_ok["reprocess_of"] == a["analysis_id"] and re_ok["analysis_id"] != a["analysis_id"]
    assert (await c.get(f"/jobs/{re_ok['job_id']}")).json()["status"] == "queued"
    assert (await c.get(f"/jobs/{a['job_id']}")).json()["result"]["n"] == 3

    for path, code in (("/jobs/999999:1", 404), (f"/jobs/{item}:9", 404), ("/jobs/abc", 422),
                       ("/jobs/1:x", 422)):
        assert (await c.get(path)).status_code == code, path
    batch = (await c.post("/batches", json={"urls": ["http://example.org/ok/8",
                                                      "http://example.org/ok/9"]})).json()
    items = (await c.get(f"/batches/{batch['batch_id']}/items")).json()["items"]
    r = await c.delete(f"/jobs/{items[0]['job_id']}")
    assert r.status_code == 409 and "/cancel" in r.json()["detail"]
    assert (await c.get(f"/analyses/{batch['batch_id']}")).status_code == 404
    r = await c.post("/analyses", json={"url": "mailto:a@b.org"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "url"]


OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")


def test_openapi_document_is_unchanged() -> None:
    """The HTTP contract (DESIGN.md §8) as a document: routes and their order, operation ids,
    parameters, responses and schemas equal ``openapi.json`` beside this file, so moving code
    between the api modules cannot change what clients see.

    On a deliberate change of the API, regenerate the file and review its diff::

        .venv/bin/python -c "import json; from workbench.api import create_app; \\
            print(json.dumps(create_app().openapi(), indent=1))" > tests/surfaces/openapi.json
    """
    saved = json.loads(OPENAPI_DOCUMENT.read_text(encoding="utf-8"))
    live = json.loads(json.dumps(create_app().openapi()))
    live["info"]["version"] = saved["info"]["version"]  # a release is not an API change
    assert list(live["paths"]) == list(saved["paths"])  # route order
    assert [list(ops) for ops in live["paths"].values()] == [
        list(ops) for ops in saved["paths"].values()
    ]
    assert json.dumps(live, indent=1) == json.dumps(saved, indent=1)  # key order included


def test_status_query_parameter_names_every_item_status() -> None:
    from typing import get_args

    from workbench.api.models import ItemStatusName
    from workbench.core.status import ITEM_STATUSES

    assert get_args(ItemStatusName) == ITEM_STATUSES


async def test_openapi_schema_fuzzed(api: Api, run_worker: Any) -> None:
    """Schemathesis against the running app: no 5xx, status codes, content types and bodies as
    documented. Ids and URLs are steered towards existing data so success paths run too."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    c = api.client
    batch = (await c.post("/batches", json={"urls": ["http://example.org/ok/1",
                                                     "http://example.org/bad/2"],
                                            "pipeline": "surf"})).json()
    done = (await c.post("/analyses", json={"url": "http://example.org/ok/3",
                                            "pipeline": "surf"})).json()
    await run_worker(pipelines=PIPELINES)
    queued = (await c.post("/analyses", json={"url": "http://example.org/ok/4",
                                              "pipeline": "surf"})).json()
    ids = [batch["batch_id"], done["analysis_id"], queued["analysis_id"], "b-nope"]
    jobs = [done["job_id"], queued["job_id"], "1:1", "424242:1"]
    urls = ["http://example.org/ok/5", "http://example.org/bad/6", "http://example.org/ok/7",
            "ftp://example.org/x"]

    raw = (await c.get("/openapi.json")).json()
    for path in raw["paths"].values():
        for op in path.values():
            for param in op.get("parameters", []):
                if param["name"] in ("batch_id", "analysis_id"):
                    param["schema"] = {"type": "string", "enum": ids}
                elif param["name"] == "job_id":
                    param["schema"] = {"type": "string", "enum": jobs}
    props = raw["components"]["schemas"]
    props["BatchIn"]["properties"]["urls"]["items"] = {"type": "string", "enum": urls}
    props["AnalysisIn"]["properties"]["url"] = {"type": "string", "enum": urls}
    for name in ("BatchIn", "AnalysisIn"):
        props[name]["properties"]["pipeline"] = {"type": "string",
                                                 "enum": ["surf", "noop", "no-such"]}
    schema = schemathesis.openapi.from_dict(raw)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    ops = [res.ok() for res in schema.get_all_operations()]
    assert len(ops) == 12
    seen: set[tuple[str, int]] = set()

    def fuzz() -> None:
        import requests

        session = requests.Session()
        for op in ops:
            @settings(max_examples=15, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def run(case: Any) -> None:
                response = case.call(base_url=api.base, session=session, headers=AUTH)
                seen.add((case.operation.label, response.status_code))
                case.validate_response(response, checks=checks)

            run()

    await asyncio.to_thread(fuzz)
    ok = {label for label, code in seen if code < 300}
    assert len(ok) >= 10, sorted(seen)  # most routes answered with success at least once
    assert not any(code >= 500 for _, code in seen)


async def test_serve_command(tmp_path: Path) -> None:
    """``python -m workbench serve`` with a token on loopback; refused without one elsewhere."""
    port = free_port()
    env = cli_env({"data_dir": tmp_path / "data", "api_token": TOKEN})
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve",
        "--port", str(port), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            # start-up (imports, migrations, the embedded server) took over 15 s in a loaded run
            deadline = time.monotonic() + 120
            while True:
                try:
                    r = await client.get("/batches", headers=AUTH)
                    break
                except httpx.TransportError:
                    assert proc.returncode is None, "serve exited before it answered"
                    assert time.monotonic() < deadline, "serve never answered in 120 s"
                    await asyncio.sleep(0.05)
            assert r.status_code == 200 and r.json() == []
            assert (await client.get("/batches")).status_code == 401
    finally:
        _out, err, _code = await interrupt(proc)
    assert b"serving the Workbench API" in err and b"Traceback" not in err
