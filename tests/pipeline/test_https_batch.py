"""A batch over HTTPS as a researcher behind a proxy and a private CA runs it, by setting only what
the README says (WORKBENCH_CA_BUNDLE, HTTPS_PROXY): good pages done, a bad certificate failed
after one try saying why. On both ledger backends.
"""

from __future__ import annotations

from aiohttp import web

from workbench import Workbench

from .fetch_fixtures import html, serve  # noqa: F401
from .test_fetch_proxy import PROXY_VARIABLES
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

ARTICLE = "<article><h1>Secure study</h1>" + "<p>Rivers in spring carry silt and seeds.</p>" * 20


async def article(request: web.Request) -> web.Response:
    return html(f"<head><title>Secure study</title></head>{ARTICLE}</article>")


async def test_https_batch_behind_a_proxy_and_a_private_ca(
    wb: Workbench, run_worker, serve, serve_tls, forward_proxy, ca, ca_bundle, monkeypatch
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name.lower(), raising=False)
    proxy = forward_proxy()
    at: dict[str, str] = {}

    async def upgrade(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(at["secure"] + "article")

    plain = await serve({"/": upgrade})
    secure = await serve_tls({"/article": article}, server_context(ca.issue_cert("127.0.0.1")))
    bad = await serve_tls({"/article": article}, self_signed_context())
    at["secure"] = https_url(secure)
    monkeypatch.setenv("WORKBENCH_CA_BUNDLE", str(ca_bundle))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")

    urls = [https_url(secure, "/article"), http_url(plain), https_url(bad, "/article")]
    batch = await wb.submit(urls, pipeline="article")
    await run_worker(cpu_processes=1, max_tries=4)
    counts = await batch.wait(timeout=60)
    assert counts["done"] == 2 and counts["failed"] == 1, counts

    done = (await batch.results()).set_index("url")
    assert done.loc[urls[0], "title"] == "Secure study"
    assert done.loc[urls[1], "final_url"] == https_url(secure, "/article")  # http -> https
    failed = (await batch.failures()).set_index("url")
    assert failed.loc[urls[2], "error_type"] == "tls_certificate"
    assert not failed.loc[urls[2], "retryable"] and failed.loc[urls[2], "tries"] == 1
    assert "self-signed" in failed.loc[urls[2], "error_message"]
    assert f"CONNECT 127.0.0.1:{secure.port}" in await proxy.wait_for_log(str(secure.port))
