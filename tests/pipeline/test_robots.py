"""robots.txt by RFC 9309 (Protego): wildcards, longest match, the rule named in the error,
Crawl-delay pacing, one fetch per origin for every fetcher sharing a Redis pacer, and an
unreachable site asked again on the next try. Real servers on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid

import pytest
from aiohttp import web
from yarl import URL

from workbench.core.errors import FetchConnectionError, RobotsDisallowed
from workbench.core.settings import Settings
from workbench.pipeline.fetch.fetcher import Fetcher
from workbench.pipeline.fetch.robots import RobotsRules
from workbench.queue.arq_adapter import open_pool
from workbench.queue.hosts import RedisHostPacer, host_rows

from .fetch_fixtures import closed_port, html, make_fetcher, serve  # noqa: F401

RULES = """\
User-agent: *
Disallow: /

User-agent: WorkbenchBot
Disallow: /private/
Allow: /private/open/
Disallow: /*sessionid=
Disallow: /*.pdf$
Crawl-delay: 0.3
"""


def test_rules_by_rfc_9309():
    rules = RobotsRules(RULES, "WorkbenchBot")
    base = "http://site.example"
    assert rules.allows(f"{base}/")
    assert not rules.allows(f"{base}/private/report")
    assert rules.allows(f"{base}/private/open/report")  # the longest match wins
    assert not rules.allows(f"{base}/search?q=x&sessionid=42")  # a wildcard
    assert not rules.allows(f"{base}/paper.pdf") and rules.allows(f"{base}/paper.pdf?v=2")
    assert rules.allows(f"{base}/robots.txt")
    assert rules.crawl_delay_s() == 0.3
    assert rules.rule_for(f"{base}/private/x") == "Disallow: /private/ (User-agent: WorkbenchBot)"
    assert rules.rule_for(f"{base}/a?sessionid=1") == (
        "Disallow: /*sessionid= (User-agent: WorkbenchBot)"
    )
    # another bot falls to the * group
    other = RobotsRules(RULES, "OtherBot")
    assert not other.allows(f"{base}/")
    assert other.rule_for(f"{base}/") == "Disallow: / (User-agent: *)"
    assert other.crawl_delay_s() == 0


def test_request_rate_counts_as_a_crawl_delay():
    rules = RobotsRules("User-agent: *\nRequest-rate: 1/5s\n", "WorkbenchBot")
    assert rules.crawl_delay_s() == 5.0


def site(body: str = RULES):
    hits: dict[str, list[float]] = {"robots": [], "pages": []}

    async def robots(request: web.Request) -> web.Response:
        hits["robots"].append(time.monotonic())
        await asyncio.sleep(0.05)  # concurrent fetchers must share this one load
        return web.Response(text=body)

    async def page(request: web.Request) -> web.Response:
        hits["pages"].append(time.monotonic())
        return html("<p>content</p>")

    return hits, {"/robots.txt": robots, "/{tail:.*}": page}


async def test_a_disallowed_url_names_its_rule_and_is_never_requested(serve, make_fetcher):
    hits, routes = site()
    server = await serve(routes)
    fetcher = make_fetcher(block_private_addresses=False)  # robots obeyed by default
    url = str(server.make_url("/search?q=1&sessionid=9"))
    with pytest.raises(RobotsDisallowed) as info:
        await fetcher.fetch(url)
    assert "Disallow: /*sessionid=" in str(info.value) and url in str(info.value)
    assert hits["pages"] == []


async def test_crawl_delay_spaces_requests(serve, make_fetcher):
    hits, routes = site()
    server = await serve(routes)
    fetcher = make_fetcher(block_private_addresses=False)
    await asyncio.gather(*(fetcher.fetch(str(server.make_url(f"/p/{n}"))) for n in range(4)))
    starts = hits["robots"] + hits["pages"]
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    assert len(hits["pages"]) == 4 and min(gaps) >= 0.28, gaps


async def test_fetchers_sharing_redis_fetch_robots_once_and_share_the_pace(
    serve, embedded_redis
):
    """Two fetchers (as in two worker processes) on one Redis: one robots.txt request, and the
    Crawl-delay holds across both."""
    hits, routes = site()
    server = await serve(routes)
    settings = Settings(queue_name=f"wbrobots:{uuid.uuid4().hex[:8]}",
                        block_private_addresses=False)
    redis = await open_pool(embedded_redis, settings.queue_name)
    fetchers = [Fetcher(settings, pacer=RedisHostPacer(redis, settings)) for _ in range(2)]
    try:
        await asyncio.gather(*(
            fetchers[n % 2].fetch(str(server.make_url(f"/p/{n}"))) for n in range(6)
        ))
        with pytest.raises(RobotsDisallowed):
            await fetchers[1].fetch(str(server.make_url("/private/x")))
        rows = {r["host"]: r for r in await host_rows(redis, settings)}
    finally:
        for f in fetchers:
            await f.close()
        await redis.aclose()
    assert len(hits["robots"]) == 1
    gaps = [b - a for a, b in itertools.pairwise(sorted(hits["robots"] + hits["pages"]))]
    assert min(gaps) >= 0.28, gaps
    row = rows["127.0.0.1"]
    assert row["robots"] == "rules" and row["crawl_delay_s"] == pytest.approx(0.3)
    assert row["robots_allowed"] == 6 and row["robots_disallowed"] == 1
    assert row["requests"] == 7  # robots.txt and 6 pages


async def test_a_record_stored_between_our_read_and_our_claim_is_used_not_fetched_again():
    """The interleaving a loaded run hit once: this process reads a record due again, the other
    loader then stores a fresh one and ends its claim, and this process's claim succeeds. It
    must use the stored record, not fetch robots.txt a second time. (With no record at all the
    read and the claim are one atomic step: tests/pipeline/test_pacing.py.)"""
    from workbench.pipeline.fetch.pacing import LocalPacer, PacingRule
    from workbench.pipeline.fetch.robots import RobotsPolicy

    origin = "http://127.0.0.9:8080"
    now = time.time()

    class LatePacer(LocalPacer):
        """The other loader's store lands right after this process's first read."""

        async def read_or_claim_robots(self, origin: str, ttl_s: float) -> tuple[str | None, bool]:
            due = json.dumps({"state": "unreachable", "status": 503, "body": "",
                              "fetched_at": now - 60, "retry_at": now - 1, "failures": 1})
            await self.store_robots(origin, json.dumps(
                {"state": "rules", "status": 200, "body": "User-agent: *\nDisallow: /x/\n",
                 "fetched_at": now}), 3600)
            return due, False  # read before the store

    loads: list[str] = []

    async def load(url: str) -> tuple[int, bytes]:
        loads.append(url)
        return 200, b"User-agent: *\nDisallow: /\n"

    pacer = LatePacer(PacingRule.from_settings(Settings()))
    policy = RobotsPolicy("WorkbenchBot/0.1", pacer, load)
    await policy.check(URL(origin + "/page"))  # allowed by the stored record's rules
    with pytest.raises(RobotsDisallowed, match="Disallow: /x/"):
        await policy.check(URL(origin + "/x/1"))
    assert loads == [] and pacer._claims == {}  # not fetched; the unused claim ended


async def test_an_unreachable_site_is_asked_again_on_the_next_try(make_fetcher):
    fetcher = make_fetcher(block_private_addresses=False)
    url = f"http://127.0.0.1:{closed_port()}/page"
    for _ in range(2):  # not cached: each try asks for robots.txt again, and says why it failed
        with pytest.raises(FetchConnectionError):
            await fetcher.fetch(url)


async def test_the_user_agent_names_workbench_and_carries_contact_details(serve, make_fetcher):
    from workbench import __version__

    default = Settings().user_agent
    assert default.startswith(f"WorkbenchBot/{__version__} (")
    seen: list[str] = []

    async def robots(request: web.Request) -> web.Response:
        seen.append(request.headers["User-Agent"])
        return web.Response(text=RULES)

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers["User-Agent"])
        return html("<p>content</p>")

    server = await serve({"/robots.txt": robots, "/{tail:.*}": page})
    # contact details alone are added to the default; the WorkbenchBot group still applies
    fetcher = make_fetcher(block_private_addresses=False, user_agent="jane@uni.example; rivers")
    agent = f"{default[:-1]}; jane@uni.example; rivers)"
    await fetcher.fetch(str(server.make_url("/p/1")))
    with pytest.raises(RobotsDisallowed):
        await fetcher.fetch(str(server.make_url("/private/x")))
    assert seen == [agent, agent]  # robots.txt and the page, each with the researcher's address


async def test_allowed_checks_are_counted_by_the_next_acquire(embedded_redis, monkeypatch):
    """An allowing check is counted in the same Redis call as the host's next turn (one round
    trip fewer per fetch); checks never followed by a request are counted once the map of
    pending counts is full, so none is lost and the map stays small."""
    from workbench.pipeline.fetch import robots as robots_module
    from workbench.pipeline.fetch.robots import RobotsPolicy

    settings = Settings(queue_name=f"wbcount:{uuid.uuid4().hex[:8]}")
    redis = await open_pool(embedded_redis, settings.queue_name)
    pacer = RedisHostPacer(redis, settings)
    calls: list[str] = []
    real_count = pacer.count

    async def count(host: str, field: str, n: int = 1) -> None:
        calls.append(f"{host} {field} {n}")
        await real_count(host, field, n)

    pacer.count = count  # type: ignore[method-assign]

    async def load(url: str) -> tuple[int, bytes]:
        return 404, b""  # no rules: everything allowed

    policy = RobotsPolicy(settings.user_agent, pacer, load)
    monkeypatch.setattr(robots_module, "_MAX_LOCAL", 3)
    try:
        for n in range(2):
            await policy.check(URL(f"http://a.example/{n}"))
        assert calls == [] and policy.take_allowed("a.example") == 2
        await pacer.acquire("a.example", max_wait_s=None, robots_allowed=2)
        for host in ("b.example", "c.example", "d.example", "e.example"):
            await policy.check(URL(f"http://{host}/"))  # never fetched
        assert calls == ["b.example robots_allowed 1"]  # the oldest, once the map was full
        rows = {r["host"]: r for r in await host_rows(redis, settings)}
    finally:
        policy.close()
        await redis.aclose()
    assert rows["a.example"]["robots_allowed"] == 2
