"""Fetching through a real forward proxy (proxy.py on loopback): HTTP_PROXY, HTTPS_PROXY with
CONNECT, NO_PROXY, proxy credentials; the address guard judging the target and not the proxy;
robots.txt and pacing unchanged behind the proxy.
"""

from __future__ import annotations

import time

import pytest
from aiohttp import web
from yarl import URL

from workbench.core.errors import (
    BlockedAddress,
    FetchConnectionError,
    HTTPStatusError,
    PermanentError,
    RobotsDisallowed,
    SettingsError,
    TLSCertificateError,
)
from workbench.pipeline.fetch.proxies import ProxyConfig

from .fetch_fixtures import closed_port, html, make_fetcher, serve  # noqa: F401
from .tls_fixtures import (  # noqa: F401
    ca,
    ca_bundle,
    forward_proxy,
    http_url,
    https_url,
    self_signed_context,
    serve_tls,
    server_context,
)

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def page(body: str = "<p>through the proxy</p>"):
    async def handler(request: web.Request) -> web.Response:
        return html(body)

    return handler


async def test_http_page_through_the_proxy(serve, make_fetcher, forward_proxy, monkeypatch):
    proxy = forward_proxy()
    server = await serve({"/page": page()})
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    fetcher = make_fetcher(obey_robots=False)  # the page is the first request the proxy logs
    got = await fetcher.fetch(http_url(server, "/page"))
    assert "through the proxy" in got.text and got.final_url == http_url(server, "/page")
    await fetcher.close()
    assert f"GET 127.0.0.1:{server.port}/page" in await proxy.wait_for_log("/page")


async def test_https_page_through_connect(serve_tls, make_fetcher, forward_proxy, ca, ca_bundle,
                                          monkeypatch):
    proxy = forward_proxy()
    server = await serve_tls({"/": page()}, server_context(ca.issue_cert("127.0.0.1")))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    fetcher = make_fetcher(ca_bundle=str(ca_bundle))
    got = await fetcher.fetch(https_url(server))
    assert got.status == 200 and got.final_url == https_url(server)
    await fetcher.close()
    assert f"CONNECT 127.0.0.1:{server.port}" in await proxy.wait_for_log("CONNECT")


async def test_certificates_are_checked_end_to_end(serve_tls, make_fetcher, forward_proxy,
                                                   ca_bundle, monkeypatch):
    """The tunnel carries TLS to the site itself: a bad certificate is still refused."""
    proxy = forward_proxy()
    server = await serve_tls({"/": page()}, self_signed_context())
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with pytest.raises(TLSCertificateError, match="self-signed"):
        await make_fetcher(ca_bundle=str(ca_bundle)).fetch(https_url(server))


async def test_no_proxy_goes_direct(serve, make_fetcher, monkeypatch):
    server = await serve({"/": page("<p>direct</p>")})
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # nothing listens
    with pytest.raises(FetchConnectionError, match="could not connect to the proxy"):
        await make_fetcher().fetch(http_url(server))
    monkeypatch.setenv("NO_PROXY", "example.org, 127.0.0.1")
    assert "direct" in (await make_fetcher().fetch(http_url(server))).text


async def test_redirect_across_schemes_through_the_proxy(serve, serve_tls, make_fetcher,
                                                         forward_proxy, ca, ca_bundle, monkeypatch):
    proxy = forward_proxy()
    at: dict[str, str] = {}

    async def to_secure(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(at["secure"])

    plain = await serve({"/": to_secure})
    secure = await serve_tls(
        {"/": page("<p>upgraded</p>")}, server_context(ca.issue_cert("127.0.0.1"))
    )
    at["secure"] = https_url(secure)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    fetcher = make_fetcher(ca_bundle=str(ca_bundle), obey_robots=False)
    got = await fetcher.fetch(http_url(plain))
    assert got.final_url == https_url(secure) and got.redirects == (http_url(plain),)
    await fetcher.close()
    get, connect = f"GET 127.0.0.1:{plain.port}/", f"CONNECT 127.0.0.1:{secure.port}"
    log = await proxy.wait_for_log(get, connect)  # two connections: two lines, in either order
    assert get in log and connect in log, log


async def test_guard_judges_the_target_not_the_proxy(serve, make_fetcher, forward_proxy,
                                                     monkeypatch):
    """The guard allows only 127.0.0.3 here. The proxy, named by host name on 127.0.0.1, is the
    operator's own and is used anyway; targets are judged before the proxy sees them."""
    proxy = forward_proxy()
    allowed = await serve({"/": page("<p>allowed target</p>")}, host="127.0.0.3")
    refused = await serve({"/": page()})
    monkeypatch.setenv("HTTP_PROXY", f"http://localhost:{proxy.port}")
    fetcher = make_fetcher(
        address_allowed=lambda ip: str(ip) == "127.0.0.3",
        block_private_addresses=True,
        obey_robots=False,
    )
    assert "allowed target" in (await fetcher.fetch(http_url(allowed))).text
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1"):  # an IP literal
        await fetcher.fetch(http_url(refused))
    with pytest.raises(BlockedAddress, match="through a proxy"):  # a name, resolved here first
        await fetcher.fetch(f"http://localhost:{refused.port}/")
    await fetcher.close()
    log = await proxy.wait_for_log(f"127.0.0.3:{allowed.port}")
    assert f"127.0.0.3:{allowed.port}" in log and f":{refused.port}" not in log


async def test_robots_and_pacing_unchanged_behind_the_proxy(serve, make_fetcher, forward_proxy,
                                                            monkeypatch):
    proxy = forward_proxy()

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow: /private\n")

    server = await serve({"/robots.txt": robots, "/private": page(), "/open": page()})
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    fetcher = make_fetcher(obey_robots=True, per_host_delay_s=0.3)
    with pytest.raises(RobotsDisallowed):
        await fetcher.fetch(http_url(server, "/private"))
    started = time.monotonic()
    for _ in range(3):
        await fetcher.fetch(http_url(server, "/open"))
    assert time.monotonic() - started >= 0.55  # three starts, 0.3 s apart at least
    await fetcher.close()
    log = await proxy.wait_for_log("/robots.txt")
    assert f"GET 127.0.0.1:{server.port}/robots.txt" in log and "/private" not in log


async def test_proxy_credentials(serve, serve_tls, make_fetcher, forward_proxy, ca, ca_bundle,
                                 monkeypatch):
    proxy = forward_proxy(basic_auth="researcher:s3cret")
    plain = await serve({"/": page()})
    secure = await serve_tls({"/": page()}, server_context(ca.issue_cert("127.0.0.1")))
    good = f"http://researcher:s3cret@127.0.0.1:{proxy.port}"
    monkeypatch.setenv("HTTP_PROXY", good)
    monkeypatch.setenv("HTTPS_PROXY", good)
    fetcher = make_fetcher(ca_bundle=str(ca_bundle))
    assert (await fetcher.fetch(http_url(plain))).status == 200
    assert (await fetcher.fetch(https_url(secure))).status == 200
    assert "s3cret" not in repr(fetcher.proxies)

    bad = f"http://researcher:wrong@127.0.0.1:{proxy.port}"
    monkeypatch.setenv("HTTP_PROXY", bad)
    monkeypatch.setenv("HTTPS_PROXY", bad)
    fetcher = make_fetcher(ca_bundle=str(ca_bundle))
    with pytest.raises(HTTPStatusError, match="407"):  # plain HTTP: the proxy's own answer
        await fetcher.fetch(http_url(plain))
    with pytest.raises(PermanentError, match=r"refused to connect.*407") as info:  # CONNECT
        await fetcher.fetch(https_url(secure))
    assert info.value.error_type == "proxy_refused" and not info.value.retryable


def test_fetcher_is_made_outside_an_event_loop(monkeypatch):
    """Tools make the fetcher lazily, but a script may make one before its loop runs."""
    from workbench.core.settings import Settings
    from workbench.pipeline.fetch.fetcher import Fetcher

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.org:3128")
    fetcher = Fetcher(Settings(block_private_addresses=True))
    assert fetcher.proxies and fetcher.proxies.hosts == {"proxy.example.org"}


def test_unusable_proxy_url_fails_loudly(make_fetcher, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with pytest.raises(SettingsError, match=r"HTTPS_PROXY.*only http:// and https://"):
        make_fetcher()


def test_proxy_config_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://upper:3128")
    monkeypatch.setenv("http_proxy", "proxy.example.org:8080")  # lowercase wins; scheme optional
    monkeypatch.setenv("NO_PROXY", "localhost, .internal.example.org, api.example.org:8443")
    config = ProxyConfig.from_environment()
    proxy = config.for_url(URL("http://example.com/"))
    assert proxy is not None and str(proxy.url) == "http://proxy.example.org:8080"
    assert config.for_url(URL("https://example.com/")) is None  # no HTTPS_PROXY set
    assert config.hosts == {"proxy.example.org"}
    for direct in ("http://localhost/", "http://a.internal.example.org/",
                   "http://internal.example.org/", "http://api.example.org:8443/"):
        assert config.bypassed(URL(direct)), direct
    for proxied in ("http://api.example.org/", "http://notinternal.example.org/",
                    "http://example.org/"):
        assert not config.bypassed(URL(proxied)), proxied
    monkeypatch.setenv("NO_PROXY", "*")
    assert ProxyConfig.from_environment().for_url(URL("http://example.com/")) is None
