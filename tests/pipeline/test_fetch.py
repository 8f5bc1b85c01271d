
"""Fetcher: pages, redirects, HTTP errors, network failures, size caps, content types, charsets.

Every test talks to a real server on loopback; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web

from workbench.core.backoff import parse_retry_after
from workbench.core.errors import (
    EmptyResponse,
    FetchConnectionError,
    FetchTimeout,
    HTTPStatusError,
    InvalidPageURL,
    PipelineError,
    ResponseTooLarge,
    TooManyRedirects,
    TransientHTTPError,
    UnsupportedContent,
)

from .fetch_fixtures import closed_port, html, make_fetcher, raw_server, serve  # noqa: F401

FRENCH = (
    "Un café crème à la française, s'il vous plaît. Le garçon était très gentil et nous avons "
    "mangé une crêpe délicieuse près de la fenêtre, en écoutant les élèves réviser leçons."
)
RUSSIAN = (
    "Привет, мир! Это страница на русском языке без объявленной кодировки. Мы проверяем, что "
    "текст декодируется правильно и читается без ошибок, даже если сервер ничего не сказал."
)


def assert_error(exc: PipelineError, error_type: str, retryable: bool, *fragments: str) -> None:
    assert exc.error_type == error_type
    assert exc.retryable is retryable
    for fragment in fragments:
        assert fragment in str(exc)


# -- good pages --


async def test_good_page(serve, make_fetcher):
    seen = {}

    async def page(request: web.Request) -> web.Response:
        seen["ua"] = request.headers.get("User-Agent")
        resp = html("<p>héllo wörld</p>")
        resp.headers["X-Dup"] = "first"
        resp.headers.add("X-Dup", "second")
        return resp

    server = await serve({"/page": page})
    url = str(server.make_url("/page?q=1"))
    fetcher = make_fetcher(user_agent="TestBot/9")
    p = await fetcher.fetch(url)
    assert seen["ua"] == "TestBot/9"
    assert (p.url, p.final_url, p.status) == (url, url, 200)
    assert p.content_type == "text/html"
    assert p.encoding == "utf-8"
    assert "héllo wörld" in p.text
    assert p.headers["content-type"] == "text/html; charset=utf-8"
    assert p.headers["x-dup"] == "second"  # last value wins
    assert p.fetched_at.tzinfo is not None and abs(p.fetched_at - datetime.now(UTC)).seconds < 5
    assert p.from_store is False and p.redirects == ()
    # the same fetcher serves another request on its shared session
    assert (await fetcher.fetch(url)).body == p.body


async def test_gzip_is_decoded_and_text_plain_accepted(serve, make_fetcher):
    async def page(request: web.Request) -> web.Response:
        resp = web.Response(text="plain words " * 500, content_type="text/plain")
        resp.enable_compression(web.ContentCoding.gzip)
        return resp

    server = await serve({"/": page})
    p = await make_fetcher().fetch(str(server.make_url("/")))
    assert p.headers.get("content-encoding") == "gzip"
    assert p.content_type == "text/plain"
    assert p.text == "plain words " * 500


# -- redirects --


async def test_redirect_chain_is_followed(serve, make_fetcher):
    async def a(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/b")  # relative Location

    async def b(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.url.with_path("/c")))  # absolute Location

    async def c(request: web.Request) -> web.Response:
        return html("<p>arrived</p>")

    server = await serve({"/a": a, "/b": b, "/c": c})
    p = await make_fetcher().fetch(str(server.make_url("/a")))
    assert p.final_url == str(server.make_url("/c"))
    assert p.redirects == (str(server.make_url("/a")), str(server.make_url("/b")))
    assert "arrived" in p.text


async def test_cookie_set_on_redirect_to_self_is_not_a_loop(serve, make_fetcher):
    async def gate(request: web.Request) -> web.Response:
        if request.cookies.get("consent") == "yes":
            return html("<p>welcome back</p>")
        resp = web.HTTPFound("/gate")
        resp.set_cookie("consent", "yes")
        raise resp

    server = await serve({"/gate": gate})
    p = await make_fetcher().fetch(str(server.make_url("/gate")))
    assert "welcome back" in p.text and len(p.redirects) == 1


async def test_redirect_loop(serve, make_fetcher):
    async def x(request: web.Request) -> web.Response:
        raise web.HTTPFound("/y")

    async def y(request: web.Request) -> web.Response:
        raise web.HTTPFound("/x")

    server = await serve({"/x": x, "/y": y})
    with pytest.raises(TooManyRedirects) as info:
        await make_fetcher().fetch(str(server.make_url("/x")))
    assert_error(info.value, "too_many_redirects", False, "loop", "/x")


async def test_too_many_redirects(serve, make_fetcher):
    hits = []

    async def hop(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        hits.append(n)
        raise web.HTTPFound(f"/r/{n + 1}")

    server = await serve({"/r/{n}": hop})
    with pytest.raises(TooManyRedirects) as info:
        await make_fetcher(max_redirects=3).fetch(str(server.make_url("/r/0")))
    assert_error(info.value, "too_many_redirects", False, "more than 3 redirects")
    assert hits == [0, 1, 2, 3]  # three redirects followed, the fourth refused


async def test_redirect_to_unsupported_scheme(serve, make_fetcher):
    async def r(request: web.Request) -> web.Response:
        raise web.HTTPFound("ftp://example.org/file")

    server = await serve({"/": r})
    with pytest.raises(InvalidPageURL) as info:
        await make_fetcher().fetch(str(server.make_url("/")))
    assert_error(info.value, "invalid_url", False, "redirected", "ftp://example.org/file")


# -- HTTP errors --


@pytest.mark.parametrize("status", [404, 410, 403])
async def test_permanent_http_errors(serve, make_fetcher, status):
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=status, text="nope")

    server = await serve({"/": gone})
    url = str(server.make_url("/"))
    with pytest.raises(HTTPStatusError) as info:
        await make_fetcher().fetch(url)
    assert info.value.status == status
    assert_error(info.value, f"http_{status}", False, str(status), url)


@pytest.mark.parametrize("status", [500, 503, 408, 429])
async def test_transient_http_errors(serve, make_fetcher, status):
    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=status, text="later")

    server = await serve({"/": busy})
    url = str(server.make_url("/"))
    with pytest.raises(TransientHTTPError) as info:
        await make_fetcher().fetch(url)
    assert info.value.status == status and info.value.retry_after_s is None
    assert_error(info.value, f"http_{status}", True, str(status), url)


async def test_429_retry_after_seconds_and_date(serve, make_fetcher):
    in_30s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    in_1h = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    answers = {"/s": "7", "/d": in_30s, "/far": in_1h, "/junk": "soon"}

    async def limited(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": answers[request.path]})

    server = await serve({path: limited for path in answers})
    # a separate fetcher per case: a 429 with Retry-After pauses the host for later requests
    waits = {}
    for path in answers:
        with pytest.raises(TransientHTTPError) as info:
            await make_fetcher(retry_after_max_s=600).fetch(str(server.make_url(path)))
        assert_error(info.value, "http_429", True, "retry after" if path != "/junk" else "429")
        waits[path] = info.value.retry_after_s
    assert waits["/s"] == 7
    assert 25 <= waits["/d"] <= 30
    assert waits["/far"] == 600  # capped at retry_after_max_s
    assert waits["/junk"] is None


def test_parse_retry_after_edge_cases():
    assert parse_retry_after("120", 60) == 60
    assert parse_retry_after("-5", 60) == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 60) == 0  # in the past
    assert parse_retry_after("nan", 60) is None
    assert parse_retry_after(None, 60) is None


# -- network failures --


async def test_connection_refused(make_fetcher):
    url = f"http://127.0.0.1:{closed_port()}/"
    with pytest.raises(FetchConnectionError) as info:
        await make_fetcher().fetch(url)
    assert_error(info.value, "connection_error", True, url)


async def test_server_resets_mid_body(serve, make_fetcher):
    async def broken(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"<html>" + b"x" * 1000)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    server = await serve({"/": broken})
    url = str(server.make_url("/"))
    with pytest.raises(FetchConnectionError) as info:
        await make_fetcher().fetch(url)
    assert_error(info.value, "connection_error", True, url)
    assert info.value.__cause__ is not None  # raised "from" the aiohttp error


async def test_slow_headers_time_out(serve, make_fetcher):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return html("late")

    server = await serve({"/": slow})
    started = time.monotonic()
    with pytest.raises(FetchTimeout) as info:
        await make_fetcher(read_timeout_s=0.5).fetch(str(server.make_url("/")))
    assert time.monotonic() - started < 10  # the server would have held on for 30 s
    assert_error(info.value, "timeout", True, "read timeout")


async def test_slow_body_times_out(serve, make_fetcher):
    async def stalls(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"<html><body>start")
        await asyncio.sleep(30)
        return resp

    server = await serve({"/": stalls})
    started = time.monotonic()
    with pytest.raises(FetchTimeout) as info:
        await make_fetcher(read_timeout_s=0.5).fetch(str(server.make_url("/")))
    assert time.monotonic() - started < 10  # the server would have stalled for 30 s
    assert_error(info.value, "timeout", True)


async def test_trickling_body_hits_total_timeout(serve, make_fetcher):
    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        for _ in range(300):  # a byte every 0.1 s for 30 s never trips the 5 s read timeout
            await resp.write(b"<")
            await asyncio.sleep(0.1)
        return resp

    server = await serve({"/": trickle})
    started = time.monotonic()
    with pytest.raises(FetchTimeout) as info:
        await make_fetcher(read_timeout_s=5, fetch_timeout_s=1).fetch(str(server.make_url("/")))
    assert time.monotonic() - started < 10
    assert_error(info.value, "timeout", True, "fetch_timeout_s")


# -- size cap --


async def test_huge_streamed_body_is_cut_off_with_bounded_memory(serve, make_fetcher):
    sent = [0]
    chunk = b"<p>" + b"a" * (64 * 1024 - 3)

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})  # chunked, no length
        await resp.prepare(request)
        try:
            for _ in range(1024):  # 64 MiB on offer
                await resp.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    server = await serve({"/": endless})
    cap = 2 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge) as info:
            await make_fetcher(max_page_bytes=cap).fetch(str(server.make_url("/")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_error(info.value, "too_large", False, str(cap))
    assert peak < 6 * cap, f"peak {peak} bytes while capping at {cap}"
    assert sent[0] < 32 * 1024 * 1024  # the server noticed the hang-up long before the end


async def test_content_length_over_cap_is_rejected_before_reading(serve, make_fetcher):
    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        resp.content_length = 50_000_000
        await resp.prepare(request)
        await resp.write(b"<html>")
        await asyncio.sleep(30)  # never sends the rest
        return resp

    server = await serve({"/": big})
    started = time.monotonic()
    with pytest.raises(ResponseTooLarge) as info:
        await make_fetcher(max_page_bytes=1_000_000).fetch(str(server.make_url("/")))
    assert time.monotonic() - started < 10  # refused on the header, not after 30 s of waiting
    assert_error(info.value, "too_large", False, "Content-Length 50000000")


# -- content types --


@pytest.mark.parametrize(
    ("ctype", "fragment"),
    [
        ("image/png", "image/png"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/pdf", "PDFs are not extracted"),
        ("application/json; charset=utf-8", "application/json"),
    ],
)
async def test_unsupported_content(serve, make_fetcher, ctype, fragment):
    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.7 \x00\x01\x02", headers={"Content-Type": ctype})

    server = await serve({"/": binary})
    with pytest.raises(UnsupportedContent) as info:
        await make_fetcher().fetch(str(server.make_url("/")))
    assert_error(info.value, "unsupported_content", False, fragment)


async def test_missing_content_type_is_sniffed(raw_server, make_fetcher):
    body = b"  <!DOCTYPE html><html><body><p>sniffed</p></body></html>"
    url = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    p = await make_fetcher().fetch(url)
    assert p.content_type == "text/html" and "sniffed" in p.text

    url = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n\x89PNG\r\n\x1a\n")
    with pytest.raises(UnsupportedContent) as info:
        await make_fetcher().fetch(url)
    assert_error(info.value, "unsupported_content", False, "does not look like HTML")


async def test_empty_body(serve, make_fetcher):
    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"", headers={"Content-Type": "text/html"})

    server = await serve({"/": empty})
    with pytest.raises(EmptyResponse) as info:
        await make_fetcher().fetch(str(server.make_url("/")))
    assert_error(info.value, "empty_response", False, "empty body")


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org/", "example.org/page", "http://", "mailto:a@b.org", 42, "http://127.1/"],
)
async def test_invalid_urls(make_fetcher, url):
    with pytest.raises(InvalidPageURL) as info:
        await make_fetcher().fetch(url)
    assert_error(info.value, "invalid_url", False)


# -- charsets --


async def test_latin1_page_declared_as_utf8(serve, make_fetcher):
    async def page(request: web.Request) -> web.Response:
        body = f"<html><body><p>{FRENCH}</p></body></html>".encode("latin-1")
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})

    server = await serve({"/": page})
    p = await make_fetcher().fetch(str(server.make_url("/")))
    assert p.encoding != "utf-8"
    for word in ("café", "crème", "française", "fenêtre", "élèves"):
        assert word in p.text
    assert "\ufffd" not in p.text


async def test_cp1251_page_without_any_charset(serve, make_fetcher):
    async def page(request: web.Request) -> web.Response:
        body = f"<html><body><p>{RUSSIAN}</p></body></html>".encode("cp1251")
        return web.Response(body=body, headers={"Content-Type": "text/html"})

    server = await serve({"/": page})
    p = await make_fetcher().fetch(str(server.make_url("/")))
    assert p.encoding == "cp1251"
    for word in ("Привет", "русском", "кодировки", "декодируется"):
        assert word in p.text


@pytest.mark.parametrize(
    ("meta", "codec"),
    [
        ('<meta charset="windows-1251">', "cp1251"),
        ('<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">', "koi8-r"),
    ],
)
async def test_meta_charset_only(serve, make_fetcher, meta, codec):
    async def page(request: web.Request) -> web.Response:
        body = f"<html><head>{meta}</head><body><p>Привет, мир</p></body></html>".encode(codec)
        return web.Response(body=body, headers={"Content-Type": "text/html"})

    server = await serve({"/": page})
    p = await make_fetcher().fetch(str(server.make_url("/")))
    assert p.encoding == codec
    assert "Привет, мир" in p.text


async def test_utf8_page_mislabelled_latin1_and_cp1252_quotes(serve, make_fetcher):
    async def utf8(request: web.Request) -> web.Response:
        body = f"<p>{FRENCH}</p>".encode()
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=ISO-8859-1"})

    async def quotes(request: web.Request) -> web.Response:
        body = "<p>“Très” bien – voilà</p>".encode("cp1252")
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=iso-8859-1"})

    server = await serve({"/utf8": utf8, "/quotes": quotes})
    fetcher = make_fetcher()
    p = await fetcher.fetch(str(server.make_url("/utf8")))
    assert p.encoding == "utf-8" and "française" in p.text
    p = await fetcher.fetch(str(server.make_url("/quotes")))
    assert p.encoding == "cp1252" and "“Très” bien – voilà" in p.text
