"""Content encodings real servers use: gzip, deflate (zlib and raw) and brotli decoded; the size
cap counts decoded bytes, so compression bombs stop at the cap; Accept-Encoding advertises only
what can be decoded.
"""

from __future__ import annotations

import time
import tracemalloc
import zlib

import brotli
import pytest
from aiohttp import web
from aiohttp.compression_utils import HAS_ZSTD

from workbench.core.errors import ResponseTooLarge, UnsupportedContent
from workbench.pipeline.fetch.charset import ACCEPT_ENCODING

from .fetch_fixtures import make_fetcher, serve  # noqa: F401

PAGE = ("<html><head><meta charset='utf-8'><title>Zürich</title></head><body>"
        + "<p>Grüße aus Zürich, encoded and compressed.</p>" * 200 + "</body></html>").encode()
MIB = 1024 * 1024


def gzip_bytes(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


def raw_deflate(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


def bomb(make: object, decoded_mib: int) -> bytes:
    """``decoded_mib`` MiB of zeros, streamed through a compressor (never held in memory)."""
    chunk = b"\0" * MIB
    if make == "br":
        c = brotli.Compressor(quality=5)
        return b"".join(c.process(chunk) for _ in range(decoded_mib)) + c.finish()
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(z.compress(chunk) for _ in range(decoded_mib)) + z.flush()


def encoded(body: bytes, encoding: str) -> web.Response:
    return web.Response(
        body=body,
        headers={"Content-Type": "text/html; charset=utf-8", "Content-Encoding": encoding},
    )


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("gzip", gzip_bytes),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", raw_deflate),  # raw, as some servers send it anyway
        ("br", brotli.compress),
    ],
)
async def test_encodings_are_decoded(serve, make_fetcher, encoding, encode):
    body = encode(PAGE)
    assert len(body) < len(PAGE) // 10

    async def page(request: web.Request) -> web.Response:
        return encoded(body, encoding)

    server = await serve({"/": page})
    got = await make_fetcher().fetch(str(server.make_url("/")))
    assert got.body == PAGE and "Grüße aus Zürich" in got.text
    assert got.headers["content-encoding"] == encoding  # provenance: how it came


async def test_accept_encoding_names_only_what_can_be_decoded(serve, make_fetcher):
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        return encoded(brotli.compress(PAGE), "br")

    server = await serve({"/": page})
    await make_fetcher().fetch(str(server.make_url("/")))
    offered = [c.strip() for c in seen[0].split(",")]
    assert offered[:3] == ["gzip", "deflate", "br"] and ("zstd" in offered) == HAS_ZSTD
    assert seen[0] == ACCEPT_ENCODING


@pytest.mark.parametrize("coding", ["compress", "x-unknown"] + ([] if HAS_ZSTD else ["zstd"]))
async def test_an_encoding_that_cannot_be_decoded_is_refused(serve, make_fetcher, coding):
    async def page(request: web.Request) -> web.Response:
        return encoded(b"\x1f\x9d\x90garbage", coding)

    server = await serve({"/": page})
    with pytest.raises(UnsupportedContent, match=r"(?i)content-encoding") as info:
        await make_fetcher().fetch(str(server.make_url("/")))
    assert not info.value.retryable


async def test_size_cap_counts_decoded_bytes(serve, make_fetcher):
    big = b"<html><body>" + b"<p>" + b"word " * (400 * 1024) + b"</p></body></html>"  # ~2 MiB
    small = big[: MIB // 2] + b"</p></body></html>"

    async def page(request: web.Request) -> web.Response:
        return encoded(gzip_bytes(big if request.path == "/big" else small), "gzip")

    server = await serve({"/big": page, "/small": page})
    fetcher = make_fetcher(max_page_bytes=MIB)
    assert len(gzip_bytes(big)) < MIB // 100  # the wire size alone would pass the cap
    with pytest.raises(ResponseTooLarge, match="max_page_bytes"):
        await fetcher.fetch(str(server.make_url("/big")))
    assert len((await fetcher.fetch(str(server.make_url("/small")))).body) == len(small)


@pytest.mark.parametrize(("coding", "decoded_mib"), [("br", 256), ("gzip", 64)])
async def test_compression_bomb_stops_at_the_cap(serve, make_fetcher, coding, decoded_mib):
    payload = bomb(coding, decoded_mib)
    assert len(payload) * 200 < decoded_mib * MIB  # a bomb: tiny on the wire

    async def page(request: web.Request) -> web.Response:
        return encoded(payload, coding)

    server = await serve({"/": page})
    fetcher = make_fetcher(max_page_bytes=MIB)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ResponseTooLarge, match="more than the 1048576-byte cap"):
            await fetcher.fetch(str(server.make_url("/")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB, f"decoding held {peak / MIB:.0f} MiB for a 1 MiB cap"
    assert time.monotonic() - started < 10
