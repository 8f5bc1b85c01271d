"""``POST /batches`` with ``rows``: carried columns through the HTTP API, returned with the
streamed results; malformed combinations are 422s naming the problem."""

from __future__ import annotations

import json
from typing import Any

from .conftest import PIPELINES
from .test_api import Api, api  # noqa: F401 - the fixture


async def test_rows_with_their_urls_carried_to_results(api: Api, run_worker: Any) -> None:
    c = api.client
    r = await c.post("/batches", json={
        "rows": [{"link": "http://example.org/ok/1", "label": "a", "status": "x"},
                 {"link": "http://example.org/ok/2", "label": "b", "status": "y"},
                 {"link": "http://example.org/ok/1", "label": "c", "status": "z"}],
        "url_column": "link", "pipeline": "surf",
    })
    assert r.status_code == 201, r.text
    assert r.json()["items"] == 3  # one item per row: the repeated URL is kept
    batch_id = r.json()["batch_id"]
    r = await c.post("/batches", json={"urls": ["http://example.org/ok/3"],
                                       "rows": [{"id": 7}], "pipeline": "surf"})
    assert r.status_code == 201, r.text
    second = r.json()["batch_id"]
    await run_worker(pipelines=PIPELINES)

    text = (await c.get(f"/batches/{batch_id}/results")).text
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["label"] for r in records] == ["a", "b", "c"]
    assert [r["input_status"] for r in records] == ["x", "y", "z"]  # the clash rule
    text = (await c.get(f"/batches/{second}/results")).text
    assert [json.loads(line)["id"] for line in text.splitlines()] == [7]


async def test_bad_rows_are_422s(api: Api) -> None:
    c = api.client
    cases = [
        ({"pipeline": "surf"}, "urls"),
        ({"urls": ["http://example.org/ok/1"], "rows": [{}, {}], "pipeline": "surf"}, "rows"),
        ({"rows": [{"link": "http://example.org/ok/1"}], "pipeline": "surf"}, "url"),
        ({"urls": ["http://example.org/ok/1"], "url_column": "u", "pipeline": "surf"},
         "url_column"),
        ({"rows": [{"url": "nonsense"}], "pipeline": "surf"}, "nonsense"),
    ]
    for body, word in cases:
        r = await c.post("/batches", json=body)
        assert r.status_code == 422, (body, r.text)
        assert word in r.text, (body, r.text)
    assert (await c.get("/batches")).json() == []
