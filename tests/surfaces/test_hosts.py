"""Seeing politeness (issue 11): ``await wb.hosts()``, ``python -m workbench hosts`` and the
monitor's line on items waiting for paced hosts. A real worker fetches from loopback sites with a
robots.txt (Disallow + Crawl-delay); the pure renderings are checked without I/O."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from aiohttp import web

from workbench import Workbench
from workbench.cli.hosts import hosts_text
from workbench.client.hosts import HOST_COLUMNS, hosts_frame
from workbench.core.status import Counts
from workbench.notebook.render import Snapshot, status_html, summary_text

from .conftest import cli_env, run_cli

ROBOTS = "User-agent: *\nDisallow: /private/\nCrawl-delay: 0.3\n"


def _row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict(
        host="a.example", requests=10, errors=2, throttled=1, in_flight=0, delay_s=1.05,
        response_gap_s=0.01, backoff_s=0.0, crawl_delay_s=1.0, robots="rules",
        robots_allowed=9, robots_disallowed=3, paused_until=None, deferred=4, waiting=2,
        next_free_in_s=0.0, last_request_at=1_700_000_000.0,
    )
    row.update(kw)
    return row


def test_hosts_frame_has_stable_columns_and_types():
    empty = hosts_frame([])
    assert list(empty.columns) == HOST_COLUMNS and empty.empty
    df = hosts_frame([_row(), _row(host="b.example", crawl_delay_s=None, paused_until=2e9)])
    assert df["requests"].dtype == "int64" and df["crawl_delay_s"].dtype == "float64"
    assert str(df["paused_until"].dtype).startswith("datetime64") and df["paused_until"].isna()[0]


def test_hosts_text_says_why_a_host_is_slow():
    now = pd.Timestamp("2030-01-01", tz="UTC")
    df = hosts_frame([
        _row(),
        _row(host="busy.example", crawl_delay_s=None, robots="allow_all", robots_allowed=5,
             robots_disallowed=0, delay_s=4.0, backoff_s=4.0, response_gap_s=0.2,
             paused_until=(now + pd.Timedelta(seconds=42)).timestamp()),
    ])
    text = hosts_text(df, now=now)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["host", "requests"]
    assert "1.1s (crawl-delay)" in lines[1] and "rules 9/3" in lines[1] and "2 (1)" in lines[1]
    assert "4.0s (back-off)" in lines[2] and "allow_all 5/0" in lines[2] and "42s" in lines[2]
    assert hosts_text(hosts_frame([])) == "no hosts fetched in the last 7 days"


def test_the_monitor_says_how_many_items_wait_on_paced_hosts():
    running = Counts({"queued": 312, "running": 4, "done": 20, "failed": 0, "cancelled": 0})
    snap = Snapshot("b-1", None, "article", "1", running, paced=(312, 3))
    assert "<b>312</b> items waiting on <b>3</b> paced hosts" in status_html(snap)
    assert "312 item(s) waiting on 3 paced host(s)" in summary_text(snap)
    quiet = Snapshot("b-1", None, "article", "1", running)
    assert "paced" not in status_html(quiet) and "paced" not in summary_text(quiet)


@pytest.fixture
async def polite_site() -> Any:
    async def robots(request: web.Request) -> web.Response:
        return web.Response(text=ROBOTS)

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><head><title>t</title></head><body><article>"
            + "<p>Rivers rise in spring when the snow melts in the hills above.</p>" * 6
            + "</article></body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.31", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.31:{port}"
    await runner.cleanup()


async def test_hosts_after_a_batch(wb: Workbench, run_worker, backend_settings, polite_site):
    urls = [f"{polite_site}/pub/{n}" for n in range(4)] + [f"{polite_site}/private/1"]
    batch = await wb.submit(urls, pipeline="article")
    await run_worker(cpu_processes=1)
    counts = await batch.wait(timeout=60)
    assert counts["done"] == 4 and counts["failed"] == 1
    assert await batch.paced() == (0, 0)  # nothing waits any more
    df = (await wb.hosts()).set_index("host")
    row = df.loc["127.0.0.31"]
    assert row["requests"] == 5 and row["errors"] == 0  # robots.txt and 4 pages
    assert row["robots"] == "rules" and row["crawl_delay_s"] == pytest.approx(0.3)
    assert row["robots_allowed"] == 4 and row["robots_disallowed"] == 1
    assert row["delay_s"] == pytest.approx(0.315)  # the Crawl-delay, with its 5 % margin

    env = cli_env(backend_settings)
    rc, out, err = await run_cli("hosts", env=env)
    assert rc == 0, err
    assert "127.0.0.31" in out and "(crawl-delay)" in out and "rules 4/1" in out
    rc, out, err = await run_cli("hosts", "--json", env=env)
    assert rc == 0, err
    rows = {r["host"]: r for r in map(json.loads, out.splitlines())}
    assert rows["127.0.0.31"]["robots_disallowed"] == 1
