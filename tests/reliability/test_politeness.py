"""Politeness across worker processes (issue 11): two real worker processes, default settings,
real sites on their own loopback addresses (one host each):

- 127.0.0.21: robots.txt ``Disallow: /private/`` and ``Crawl-delay: 1``;
- 127.0.0.22: answers 429 (no Retry-After) to any request less than 0.5 s after the one before.

Targets: 0 requests to disallowed paths; consecutive requests to the Crawl-delay host >= 0.95 s
apart although two processes fetch from it; the rate-limited host's 20 URLs all ``done`` with at
most 6 x 429 in all. On SQLite + the embedded Redis, and on PostgreSQL + the machine's Redis.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from .conftest import Cluster, report, tally, wait_settled

CRAWL_DELAY_HOST = "127.0.0.21"
LIMITED_HOST = "127.0.0.22"
ROBOTS = "User-agent: *\nDisallow: /private/\nCrawl-delay: 1\n"
PAGE = ("<html><head><title>t</title></head><body><article>"
        + "<p>Plenty of words in a paragraph about rivers and their seasons.</p>" * 5
        + "</article></body></html>")


class Sites:
    def __init__(self) -> None:
        self.hits: dict[str, list[tuple[float, str, int]]] = {CRAWL_DELAY_HOST: [],
                                                               LIMITED_HOST: []}
        self.runners: list[web.AppRunner] = []
        self.base: dict[str, str] = {}

    async def crawl_delay(self, request: web.Request) -> web.Response:
        self.hits[CRAWL_DELAY_HOST].append((time.monotonic(), request.path, 200))
        if request.path == "/robots.txt":
            return web.Response(text=ROBOTS)
        return web.Response(text=PAGE, content_type="text/html")

    async def limited(self, request: web.Request) -> web.Response:
        hits = self.hits[LIMITED_HOST]
        now = time.monotonic()
        status = 429 if hits and now - hits[-1][0] < 0.5 else 200
        hits.append((now, request.path, status))
        if status == 429:
            return web.Response(status=429, text="slow down")
        if request.path == "/robots.txt":
            return web.Response(status=404)
        return web.Response(text=PAGE, content_type="text/html")

    async def start(self) -> Sites:
        for host, handler in ((CRAWL_DELAY_HOST, self.crawl_delay), (LIMITED_HOST, self.limited)):
            app = web.Application()
            app.router.add_get("/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.base[host] = f"http://{host}:{port}"
            self.runners.append(runner)
        return self

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest_asyncio.fixture
async def sites() -> AsyncIterator[Sites]:
    s = await Sites().start()
    yield s
    await s.close()


async def _run(cluster: Cluster, sites: Sites, name: str) -> None:
    cluster.extra_env.update(WORKBENCH_BLOCK_PRIVATE_ADDRESSES="false")  # loopback sites
    wb = cluster.client(block_private_addresses=False)
    public = [f"{sites.base[CRAWL_DELAY_HOST]}/public/{n}" for n in range(8)]
    private = [f"{sites.base[CRAWL_DELAY_HOST]}/private/{n}" for n in range(4)]
    limited = [f"{sites.base[LIMITED_HOST]}/page/{n}" for n in range(20)]
    batch = await wb.submit(public + private + limited, pipeline="rel-fetch")
    t0 = time.monotonic()
    workers = [cluster.start_worker("--processes", "1", "--concurrency", "16") for _ in range(2)]
    counts = await wait_settled(wb, batch.id, 120)
    settled_s = round(time.monotonic() - t0, 1)
    for w in workers:
        assert w.terminate() == 0
    t = await tally(wb, batch.id, len(public) + len(limited))
    st = (await batch.status()).set_index("url")
    failures = (await batch.failures()).set_index("url")
    hosts = (await wb.hosts()).set_index("host")

    delayed = sites.hits[CRAWL_DELAY_HOST]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(delayed)]
    to_private = [p for _, p, _ in delayed if p.startswith("/private/")]
    too_many = sum(1 for _, _, status in sites.hits[LIMITED_HOST] if status == 429)
    ran_by = st["worker_id"].nunique()
    report(name, lost=t.lost, duplicates=t.duplicates, recovery_s="n/a", settled_s=settled_s,
           disallowed_requests=len(to_private), crawl_delay_min_gap_s=round(min(gaps), 3),
           requests_429=too_many, limited_requests=len(sites.hits[LIMITED_HOST]),
           workers_used=ran_by, counts=dict(counts))
    assert t.lost == 0 and t.duplicates == 0
    assert to_private == []  # never a request to a disallowed path
    assert set(failures.loc[private, "error_type"]) == {"robots_disallowed"}
    assert all("Disallow: /private/" in m for m in failures.loc[private, "error_message"])
    robots_lines = [line for w in workers for line in w.log().splitlines() if "robots" in line]
    # robots.txt + pages; the workers' robots.txt log lines say why, if it was loaded twice
    assert len(delayed) == 1 + len(public) and min(gaps) >= 0.95, (delayed, robots_lines)
    assert (st.loc[limited, "status"] == "done").all() and too_many <= 6, sites.hits[LIMITED_HOST]
    assert ran_by == 2  # both processes took a share
    assert hosts.loc[CRAWL_DELAY_HOST, "crawl_delay_s"] == 1.0
    assert hosts.loc[CRAWL_DELAY_HOST, "robots_disallowed"] == len(private)
    assert hosts.loc[LIMITED_HOST, "throttled"] == too_many
    assert (hosts["waiting"] == 0).all() and await batch.paced() == (0, 0)


@pytest.mark.slow
async def test_two_workers_share_robots_and_pacing(make_cluster, sites: Sites) -> None:
    await _run(make_cluster(), sites, "politeness: 2 worker processes, SQLite")


@pytest.mark.slow
async def test_two_workers_share_robots_and_pacing_on_postgres(
    make_cluster, sites: Sites
) -> None:
    cluster = await make_cluster.postgres()
    await _run(cluster, sites, "politeness: 2 worker processes, PostgreSQL + Redis 7")
