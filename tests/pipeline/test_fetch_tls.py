"""HTTPS as it is served: trusted chains, the certificates that must fail (and fail once, saying
why), old protocols, the trust store, and redirects that change scheme.

Every server is real, on loopback, with certificates made in the test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import warnings
from pathlib import Path

import pytest
from aiohttp import web

from workbench.core.errors import (
    BlockedAddress,
    FetchConnectionError,
    RobotsDisallowed,
    SettingsError,
    TLSCertificateError,
    TLSHandshakeError,
)
from workbench.core.settings import load_settings
from workbench.pipeline.fetch.tls import client_context

from .fetch_fixtures import html, make_fetcher, serve  # noqa: F401
from .tls_fixtures import (  # noqa: F401
    ca,
    ca_bundle,
    http_url,
    https_url,
    old_tls_server,
    self_signed_context,
    serve_tls,
    server_context,
)


def counting(hits: dict[str, int], body: str = "<p>secure page</p>"):
    async def handler(request: web.Request) -> web.Response:
        hits[request.path] = hits.get(request.path, 0) + 1
        return html(body)

    return handler


async def test_valid_chain_trusted_through_the_ca_bundle(serve_tls, make_fetcher, ca, ca_bundle):
    hits: dict[str, int] = {}
    server = await serve_tls({"/": counting(hits)}, server_context(ca.issue_cert("127.0.0.1")))
    page = await make_fetcher(ca_bundle=str(ca_bundle)).fetch(https_url(server))
    assert page.status == 200 and "secure page" in page.text
    assert page.final_url == https_url(server) and hits == {"/": 1}


async def test_private_ca_without_the_bundle_fails_once_saying_why(serve_tls, make_fetcher, ca):
    hits: dict[str, int] = {}
    server = await serve_tls({"/": counting(hits)}, server_context(ca.issue_cert("127.0.0.1")))
    with pytest.raises(TLSCertificateError) as info:
        await make_fetcher().fetch(https_url(server))
    err = info.value
    assert err.error_type == "tls_certificate" and err.retryable is False
    assert "not trusted" in str(err) and "WORKBENCH_CA_BUNDLE" in str(err)
    assert https_url(server) in str(err) and hits == {}  # nothing was sent to the server


async def test_self_signed_certificate(serve_tls, make_fetcher, ca_bundle):
    server = await serve_tls({"/": counting({})}, self_signed_context("127.0.0.1"))
    with pytest.raises(TLSCertificateError, match="self-signed") as info:
        await make_fetcher(ca_bundle=str(ca_bundle)).fetch(https_url(server))
    assert not info.value.retryable


async def test_expired_certificate(serve_tls, make_fetcher, ca, ca_bundle):
    now = dt.datetime.now(dt.UTC)
    cert = ca.issue_cert(
        "127.0.0.1", not_before=now - dt.timedelta(days=90), not_after=now - dt.timedelta(days=1)
    )
    server = await serve_tls({"/": counting({})}, server_context(cert))
    with pytest.raises(TLSCertificateError, match="expired"):
        await make_fetcher(ca_bundle=str(ca_bundle)).fetch(https_url(server))


@pytest.mark.parametrize(
    ("host", "words"),
    [("127.0.0.1", "another IP address"), ("localhost", "another host name")],
)
async def test_certificate_for_another_host(serve_tls, make_fetcher, ca, ca_bundle, host, words):
    server = await serve_tls({"/": counting({})}, server_context(ca.issue_cert("example.org")))
    url = f"https://{host}:{server.port}/"
    with pytest.raises(TLSCertificateError, match=words):
        await make_fetcher(ca_bundle=str(ca_bundle)).fetch(url)


async def test_old_protocol_is_a_permanent_handshake_error(make_fetcher, ca_bundle, old_tls_server):
    with pytest.raises(TLSHandshakeError, match=r"older than 1\.2") as info:
        await make_fetcher(ca_bundle=str(ca_bundle)).fetch(old_tls_server)
    assert info.value.error_type == "tls_handshake" and not info.value.retryable
    # the server does work, for a client that still accepts TLS 1.1: the refusal is ours
    lenient = ssl.create_default_context(cafile=str(ca_bundle))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lenient.minimum_version = ssl.TLSVersion.TLSv1
    lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
    port = int(old_tls_server.rsplit(":", 1)[1].strip("/"))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=lenient)
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1", "TLSv1.1")
    writer.close()


async def test_plain_http_on_an_https_url(serve, make_fetcher):
    server = await serve({"/": counting({})})
    with pytest.raises(TLSHandshakeError, match="does not speak TLS"):
        await make_fetcher().fetch(f"https://127.0.0.1:{server.port}/")


async def test_handshake_cut_off_by_the_network_is_retryable(make_fetcher):
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)  # the ClientHello, then nothing
        writer.transport.abort()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(FetchConnectionError) as info:
            await make_fetcher().fetch(f"https://127.0.0.1:{port}/")
        assert info.value.retryable and info.value.error_type == "connection_error"
    finally:
        server.close()
        await server.wait_closed()


# -- trust: the OS store, the bundle setting, certifi only as a last resort --


def test_ca_bundle_setting_fails_loudly(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match=r"WORKBENCH_CA_BUNDLE.*not a file"):
        load_settings()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    monkeypatch.setenv("WORKBENCH_CA_BUNDLE", str(junk))
    with pytest.raises(SettingsError, match=r"WORKBENCH_CA_BUNDLE.*not a PEM file"):
        load_settings()
    monkeypatch.setenv("WORKBENCH_CA_BUNDLE", "")
    assert load_settings().ca_bundle is None


def test_ca_bundle_setting_accepts_a_pem_file(ca_bundle: Path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CA_BUNDLE", str(ca_bundle))
    assert load_settings().ca_bundle == ca_bundle.resolve()


async def test_os_trust_store_is_used(serve_tls, make_fetcher, ca, ca_bundle, monkeypatch):
    """A CA installed in the OS store (here: named by SSL_CERT_FILE, which OpenSSL's default
    paths honour) is trusted without any Workbench setting."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle))
    server = await serve_tls({"/": counting({})}, server_context(ca.issue_cert("127.0.0.1")))
    page = await make_fetcher().fetch(https_url(server))
    assert page.status == 200


def test_certifi_only_when_the_os_store_is_empty(tmp_path: Path, ca_bundle: Path, monkeypatch):
    import certifi

    certifi_cas = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert client_context().cert_store_stats()["x509_ca"] > 0  # this machine's own store
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert client_context().cert_store_stats()["x509_ca"] == certifi_cas
    with_bundle = client_context(ca_bundle).cert_store_stats()["x509_ca"]
    assert with_bundle == certifi_cas + 1  # the bundle is added on top, never instead


def test_verification_is_always_on():
    ctx = client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


# -- redirects that change scheme: every hop checked, the end recorded --


async def test_http_to_https_and_back(serve, serve_tls, make_fetcher, ca, ca_bundle):
    at: dict[str, str] = {}  # where the other server is; routes are fixed before servers start

    async def to_secure(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(at["secure"] + "secure")

    async def to_plain(request: web.Request) -> web.Response:
        raise web.HTTPFound(at["plain"] + "final")

    plain = await serve({"/start": to_secure, "/final": counting({}, "<p>back on http</p>")})
    secure = await serve_tls({"/secure": to_plain}, server_context(ca.issue_cert("127.0.0.1")))
    at.update(plain=http_url(plain), secure=https_url(secure))
    page = await make_fetcher(ca_bundle=str(ca_bundle)).fetch(http_url(plain, "/start"))
    assert page.final_url == http_url(plain, "/final") and "back on http" in page.text
    assert page.redirects == (http_url(plain, "/start"), https_url(secure, "/secure"))


async def test_robots_checked_on_the_https_hop(serve, serve_tls, make_fetcher, ca, ca_bundle):
    robots_hits: dict[str, int] = {}
    at: dict[str, str] = {}

    def robots(name: str, rules: str):
        async def handler(request: web.Request) -> web.Response:
            robots_hits[name] = robots_hits.get(name, 0) + 1
            return web.Response(text=rules)

        return handler

    async def to_secure(request: web.Request) -> web.Response:
        raise web.HTTPFound(at["secure"] + "private/page")

    plain = await serve(
        {"/robots.txt": robots("http", "User-agent: *\nAllow: /\n"), "/start": to_secure}
    )
    secure = await serve_tls(
        {"/robots.txt": robots("https", "User-agent: *\nDisallow: /private\n")},
        server_context(ca.issue_cert("127.0.0.1")),
    )
    at["secure"] = https_url(secure)
    fetcher = make_fetcher(ca_bundle=str(ca_bundle), obey_robots=True)
    with pytest.raises(RobotsDisallowed, match="private/page"):
        await fetcher.fetch(http_url(plain, "/start"))
    assert robots_hits == {"http": 1, "https": 1}


async def test_guard_checked_on_the_https_hop(serve_tls, make_fetcher, ca, ca_bundle):
    hits: dict[str, int] = {}
    inner = await serve_tls(
        {"/": counting(hits)}, server_context(ca.issue_cert("127.0.0.2")), host="127.0.0.2"
    )

    async def to_inner(request: web.Request) -> web.Response:
        raise web.HTTPFound(https_url(inner))

    secure = await serve_tls({"/": to_inner}, server_context(ca.issue_cert("127.0.0.1")))
    only_first = make_fetcher(
        address_allowed=lambda ip: str(ip) == "127.0.0.1",
        block_private_addresses=True,
        ca_bundle=str(ca_bundle),
    )
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.2"):
        await only_first.fetch(https_url(secure))
    assert hits == {}
