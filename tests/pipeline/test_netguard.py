"""The address guard is on by default (issue 14, row 1) and judges the IPv4 address an IPv6
address carries (NAT64, 6to4, IPv4-compatible, IPv4-translated, IPv4-mapped).

Real servers on loopback; every fetcher here is made with the settings' defaults (no opt-out).
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp import web

from workbench.core.errors import BlockedAddress, InvalidPageURL
from workbench.core.settings import Settings, load_settings
from workbench.pipeline.fetch.fetcher import Fetcher
from workbench.pipeline.fetch.netguard import embedded_ipv4, is_public_address

from .fetch_fixtures import html, serve  # noqa: F401


def test_the_guard_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_BLOCK_PRIVATE_ADDRESSES", raising=False)
    assert Settings().block_private_addresses is True
    assert load_settings().block_private_addresses is True
    monkeypatch.setenv("WORKBENCH_BLOCK_PRIVATE_ADDRESSES", "false")  # the documented opt-out
    assert load_settings().block_private_addresses is False


@pytest.mark.parametrize(("address", "inner"), [
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
    ("64:ff9b::a00:1", "10.0.0.1"),
    ("2002:7f00:1::1", "127.0.0.1"),  # 6to4
    ("2002:a9fe:a9fe::", "169.254.169.254"),  # 6to4 of the cloud metadata address
    ("::7f00:1", "127.0.0.1"),  # IPv4-compatible (::a.b.c.d)
    ("::ffff:0:7f00:1", "127.0.0.1"),  # IPv4-translated (::ffff:0:a.b.c.d)
    ("::ffff:0:c0a8:101", "192.168.1.1"),
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
])
def test_ipv4_inside_ipv6_is_unwrapped_and_blocked(address: str, inner: str) -> None:
    ip = ipaddress.ip_address(address)
    assert embedded_ipv4(ip) == ipaddress.IPv4Address(inner)
    assert not is_public_address(ip), address


@pytest.mark.parametrize("address", [
    "64:ff9b::808:808", "2002:808:808::1", "::ffff:0:808:808", "::ffff:8.8.8.8",
    "2606:4700:4700::1111", "93.184.216.34",
])
def test_public_addresses_stay_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)), address


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_default_fetcher_refuses_every_spelling_of_loopback(serve) -> None:
    """The issue's list: 127.0.0.1, localhost, 0.0.0.0, 0x7f000001, [::ffff:127.0.0.1], [::1],
    NAT64 and 6to4 spellings; the site never sees a request."""
    hits = [0]

    async def secret(request: web.Request) -> web.Response:
        hits[0] += 1
        return html("<p>internal page</p>")

    server = await serve({"/": secret}, host="0.0.0.0")  # answers on every IPv4 address
    port = server.port
    urls = [f"http://{host}:{port}/" for host in (
        "127.0.0.1", "localhost", "0.0.0.0", "0x7f000001", "2130706433", "127.1",
        "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::1]", "[::7f00:1]",
        "[::ffff:0:7f00:1]", "127.0.0.2",
    )]
    if _ipv6_loopback():
        urls.append(f"http://[::1]:{port}/")
    fetcher = Fetcher(Settings(obey_robots=False))  # the default guard
    try:
        for url in urls:
            # numeric spellings yarl will not parse are refused as URLs before any lookup
            numeric = url.split("//")[1].split(":")[0] in ("2130706433", "127.1")
            kind = InvalidPageURL if numeric else BlockedAddress
            with pytest.raises(kind):
                await fetcher.fetch(url)
    finally:
        await fetcher.close()
    assert hits[0] == 0


async def test_default_fetcher_refuses_a_redirect_into_loopback(serve) -> None:
    """A public-looking first hop (here 127.0.0.2, allowed by the test's own check) that
    redirects to 127.0.0.1 is refused at the second hop."""
    inner_hits = [0]

    async def secret(request: web.Request) -> web.Response:
        inner_hits[0] += 1
        return html("<p>internal page</p>")

    inner = await serve({"/": secret}, host="127.0.0.1")

    async def bounce(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{inner.port}/")

    outer = await serve({"/bounce": bounce}, host="127.0.0.2")

    def only_127_0_0_2(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return str(ip) == "127.0.0.2"

    fetcher = Fetcher(Settings(obey_robots=False), address_allowed=only_127_0_0_2)
    try:
        with pytest.raises(BlockedAddress):
            await fetcher.fetch(f"http://127.0.0.2:{outer.port}/bounce")
    finally:
        await fetcher.close()
    assert inner_hits[0] == 0
