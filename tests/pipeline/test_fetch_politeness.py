"""Fetcher politeness and safety: per-host concurrency and delay, Retry-After pauses, robots.txt,
and the private-address guard. Real servers on loopback (127.0.0.1 and 127.0.0.2).

robots.txt is obeyed by default since issue 11; tests about something else that count every
request turn it off. tests/pipeline/test_robots.py and test_pacing.py hold the rest."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time

import pytest
from aiohttp import web

from workbench.core.errors import (
    BlockedAddress,
    RobotsDisallowed,
    RobotsUnavailable,
    TransientHTTPError,
)
from workbench.pipeline.fetch.netguard import is_public_address
from workbench.pipeline.fetch.robots import robots_agent

from .fetch_fixtures import html, make_fetcher, serve  # noqa: F401

ALLOW_127_0_0_2 = ipaddress.ip_address("127.0.0.2")


def only_127_0_0_2(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A guard check that treats 127.0.0.2 as the one "public" address."""
    return ip == ALLOW_127_0_0_2


# -- per-host limits --


async def test_per_host_concurrency_is_enforced(serve, make_fetcher):
    in_flight = [0]
    peak = [0]

    async def page(request: web.Request) -> web.Response:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.1)
        in_flight[0] -= 1
        return html("<p>ok</p>")

    server = await serve({"/{n}": page})
    # the cap alone: the adaptive gap would keep ~1 request in flight (target concurrency 1)
    fetcher = make_fetcher(per_host_concurrency=2, per_host_target_concurrency=8)
    pages = await asyncio.gather(*(fetcher.fetch(str(server.make_url(f"/{n}"))) for n in range(8)))
    assert len(pages) == 8
    assert peak[0] == 2


async def test_per_host_delay_spaces_request_starts(serve, make_fetcher):
    starts: list[float] = []

    async def page(request: web.Request) -> web.Response:
        starts.append(time.monotonic())
        return html("<p>ok</p>")

    server = await serve({"/{n}": page})
    fetcher = make_fetcher(per_host_concurrency=10, per_host_delay_s=0.2, obey_robots=False)
    await asyncio.gather(*(fetcher.fetch(str(server.make_url(f"/{n}"))) for n in range(4)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 4 and min(gaps) >= 0.18, gaps


async def test_retry_after_pauses_the_host_for_later_requests(serve, make_fetcher):
    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "30"})

    async def ok(request: web.Request) -> web.Response:
        return html("<p>ok</p>")

    server = await serve({"/busy": busy, "/ok": ok})
    other = await serve({"/ok": ok}, host="127.0.0.2")
    fetcher = make_fetcher(retry_after_max_s=2)
    with pytest.raises(TransientHTTPError) as info:
        await fetcher.fetch(str(server.make_url("/busy")))
    paused_at = time.monotonic()
    assert info.value.status == 503 and info.value.retry_after_s == 2  # capped
    # the same host waits out the pause; another host is served meanwhile, not after it
    same = asyncio.create_task(fetcher.fetch(str(server.make_url("/ok"))))
    await fetcher.fetch(str(other.make_url("/ok")))
    assert not same.done()
    await same
    assert time.monotonic() - paused_at >= 1.8


# -- robots.txt --


def robots_site(robots_status: int = 200, robots_body: str = ""):
    hits = {"robots": 0, "pages": 0}

    async def robots(request: web.Request) -> web.Response:
        hits["robots"] += 1
        await asyncio.sleep(0.05)  # concurrent fetches must share this one load
        return web.Response(status=robots_status, text=robots_body)

    async def page(request: web.Request) -> web.Response:
        hits["pages"] += 1
        return html("<p>content</p>")

    return hits, {"/robots.txt": robots, "/{tail:.*}": page}


RULES = "User-agent: OtherBot\nDisallow: /\n\nUser-agent: WorkbenchBot\nDisallow: /private\n"


async def test_robots_disallow_is_obeyed_when_on(serve, make_fetcher):
    hits, routes = robots_site(robots_body=RULES)
    server = await serve(routes)
    fetcher = make_fetcher(obey_robots=True)
    pages = await asyncio.gather(
        *(fetcher.fetch(str(server.make_url(f"/pub/{n}"))) for n in range(3))
    )
    assert len(pages) == 3
    url = str(server.make_url("/private/report"))
    with pytest.raises(RobotsDisallowed) as info:
        await fetcher.fetch(url)
    assert info.value.error_type == "robots_disallowed" and info.value.retryable is False
    assert url in str(info.value)
    assert hits == {"robots": 1, "pages": 3}  # fetched once, cached for the host


async def test_robots_is_ignored_when_off(serve, make_fetcher):
    hits, routes = robots_site(robots_body=RULES)
    server = await serve(routes)
    page = await make_fetcher(obey_robots=False).fetch(str(server.make_url("/private/report")))
    assert page.status == 200
    assert hits == {"robots": 0, "pages": 1}


async def test_robots_rules_are_checked_after_a_redirect(serve, make_fetcher):
    hits, routes = robots_site(robots_body=RULES)

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/private/x")

    server = await serve({"/hop": hop, **routes})
    with pytest.raises(RobotsDisallowed):
        await make_fetcher(obey_robots=True).fetch(str(server.make_url("/hop")))
    assert hits["pages"] == 0


def test_robots_agent_token():
    assert robots_agent("WorkbenchBot/0.1 (+https://example.org/workbench)") == "WorkbenchBot"
    assert (
        robots_agent("Mozilla/5.0 (compatible; ResearchBot/2.1; +https://x.org)") == "ResearchBot"
    )


async def test_robots_matches_a_browser_style_user_agent(serve, make_fetcher):
    _, routes = robots_site(robots_body=RULES)
    server = await serve(routes)
    fetcher = make_fetcher(obey_robots=True, user_agent="Mozilla/5.0 (compatible; WorkbenchBot/1)")
    with pytest.raises(RobotsDisallowed):
        await fetcher.fetch(str(server.make_url("/private/x")))


@pytest.mark.parametrize("status", [404, 403])
async def test_robots_client_errors_allow_everything(serve, make_fetcher, status):
    hits, routes = robots_site(robots_status=status, robots_body="User-agent: *\nDisallow: /\n")
    server = await serve(routes)
    fetcher = make_fetcher(obey_robots=True)
    await fetcher.fetch(str(server.make_url("/a")))
    await fetcher.fetch(str(server.make_url("/b")))
    assert hits == {"robots": 1, "pages": 2}


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_robots_server_errors_disallow_until_asked_again(serve, make_fetcher, status):
    """RFC 9309: an unreachable robots.txt means complete disallow (the default changed in
    issue 11: it used to allow everything). The items are retried, robots.txt asked again later."""
    hits, routes = robots_site(robots_status=status, robots_body="")
    server = await serve(routes)
    fetcher = make_fetcher(block_private_addresses=False)  # robots obeyed by default
    for path in ("/a", "/b"):
        with pytest.raises(RobotsUnavailable) as info:
            await fetcher.fetch(str(server.make_url(path)))
        assert info.value.error_type == "robots_unavailable" and info.value.retryable
        assert 55 <= (info.value.retry_after_s or 0) <= 60  # asked again in a minute
        assert f"HTTP {status}" in str(info.value)
    assert hits == {"robots": 1, "pages": 0}


# -- private-address guard --


def test_default_guard_check():
    ip = ipaddress.ip_address
    for blocked in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "240.0.0.1",
    ):
        assert not is_public_address(ip(blocked)), blocked
    for allowed in ("93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert is_public_address(ip(allowed)), allowed


async def test_guard_blocks_loopback_literal(serve, make_fetcher):
    hits = [0]

    async def page(request: web.Request) -> web.Response:
        hits[0] += 1
        return html("<p>secret</p>")

    server = await serve({"/": page})
    url = str(server.make_url("/"))
    with pytest.raises(BlockedAddress) as info:
        await make_fetcher(block_private_addresses=True, obey_robots=True).fetch(url)
    assert info.value.error_type == "blocked_address" and info.value.retryable is False
    assert "127.0.0.1" in str(info.value)
    assert hits[0] == 0  # not even robots.txt was requested
    assert (await make_fetcher(block_private_addresses=False).fetch(url)).status == 200


async def test_guard_blocks_hostname_resolving_to_loopback(serve, make_fetcher):
    async def page(request: web.Request) -> web.Response:
        return html("<p>secret</p>")

    server = await serve({"/": page})
    url = f"http://localhost:{server.port}/"
    with pytest.raises(BlockedAddress) as info:
        await make_fetcher(block_private_addresses=True).fetch(url)
    assert "localhost" in str(info.value)


@pytest.mark.parametrize("target_host", ["127.0.0.1", "localhost"])
async def test_guard_blocks_redirect_from_allowed_host(serve, make_fetcher, target_host):
    inner_hits = [0]

    async def secret(request: web.Request) -> web.Response:
        inner_hits[0] += 1
        return html("<p>secret</p>")

    inner = await serve({"/": secret}, host="127.0.0.1")

    async def public(request: web.Request) -> web.Response:
        return html("<p>public</p>")

    async def bounce(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://{target_host}:{inner.port}/")

    outer = await serve({"/": public, "/bounce": bounce}, host="127.0.0.2")
    fetcher = make_fetcher(block_private_addresses=True, address_allowed=only_127_0_0_2)
    page = await fetcher.fetch(str(outer.make_url("/")))  # the allowed host itself works
    assert "public" in page.text
    with pytest.raises(BlockedAddress) as info:
        await fetcher.fetch(str(outer.make_url("/bounce")))
    assert info.value.error_type == "blocked_address"
    assert inner_hits[0] == 0
