"""Issue 14, row 4: no formula in a CSV export (the CLI's and the HTTP API's), JSONL unchanged."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import httpx

from workbench import Workbench
from workbench.client.export import csv_safe

from .conftest import cli_env, run_cli
from .test_security_api import serve_api
from .test_security_local import FORMULAS


# ---------------------------------------------------------------- row 4: no formula in a CSV
def test_csv_safe_follows_owasp() -> None:
    for value in FORMULAS.values():
        safe = csv_safe(value)
        assert not safe.startswith(("=", "+", "-", "@", "\t", "\r")), safe
    assert csv_safe("a plain title") == "a plain title" and csv_safe("") == ""
    assert csv_safe("=1") == "'=1"


async def test_csv_exports_neutralise_formulas_jsonl_keeps_them(
    make_wb: Callable[..., Workbench], backend_settings: dict[str, Any], run_worker: Any
) -> None:
    wb = make_wb()
    batch = await wb.submit([f"http://example.org{p}" for p in FORMULAS],
                            pipeline="formula-titles")
    await run_worker()
    env = cli_env(backend_settings)
    rc, cli_csv, err = await run_cli("results", batch.id, "--format", "csv", env=env)
    assert rc == 0, err
    rc, cli_jsonl, err = await run_cli("results", batch.id, "--format", "jsonl", env=env)
    assert rc == 0, err
    async with serve_api(make_wb) as base, httpx.AsyncClient(base_url=base, timeout=30) as c:
        http_csv = (await c.get(f"/batches/{batch.id}/results", params={"format": "csv"})).text
    for text in (cli_csv, http_csv):
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        assert "'=column" in rows[0]  # a field name is a cell too
        titles = sorted(r["title"] for r in rows)
        assert titles == sorted(csv_safe(t) for t in FORMULAS.values())
        assert all(not t.startswith(("=", "+", "-", "@", "\t", "\r")) for t in titles)
        assert {r["score"] for r in rows} == {"-5"}  # numbers stay numbers
    assert sorted(f'"title": {t!r}' for t in FORMULAS.values())  # JSONL keeps the values
    assert sorted(json.loads(line)["title"] for line in cli_jsonl.splitlines()) == sorted(
        FORMULAS.values())


