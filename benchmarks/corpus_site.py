"""Serve the article-extraction-benchmark corpus (and small synthetic articles) on loopback.

``python -m benchmarks.corpus_site --corpus DIR --repeat R --ready-file F`` runs in its own
process, so both tools under test fetch from the same server and neither pays for serving. Each
original domain of the corpus gets its own loopback address (127.0.1.1, 127.0.1.2, ...: all of
127/8 is loopback on Linux), so per-host politeness behaves as it would on the real web for both
tools: trafilatura's CLI downloads one URL per host per round, our fetcher limits requests per
host. ``R`` copies of each page are served at ``/<id>/<r>``.

``/article/<n>`` serves a small synthetic article (~3 KB) on 127.0.0.1; ``/_hits`` returns the
number of page requests served so far (for "no refetch" checks). The page URLs are written as
JSON to the ready file once every address listens.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web


@dataclass(frozen=True)
class CorpusPage:
    id: str
    url: str  # the page's original URL
    body: bytes


def load_corpus(directory: Path) -> list[CorpusPage]:
    truth = json.loads((directory / "ground-truth.json").read_text())
    pages = []
    for page_id in sorted(truth):
        body = gzip.decompress((directory / "html" / f"{page_id}.html.gz").read_bytes())
        pages.append(CorpusPage(page_id, truth[page_id]["url"], body))
    return pages


def synthetic_article(n: int) -> bytes:
    sentences = [
        f"Report number {n} describes how the survey team measured rainfall across the valley.",
        "They combined radar images with gauges placed along the river every few kilometres.",
        "Farmers downstream adjusted their planting calendars after reading the early results.",
        "Officials now publish a weekly summary so that towns can prepare for heavy storms.",
    ]
    body = "".join(f"<p>{' '.join(sentences)} Paragraph {i} of report {n}.</p>" for i in range(5))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Rainfall report {n}</title></head><body><nav><a href='/'>Home</a></nav>"
        f"<article><h1>Rainfall report {n}</h1>{body}</article>"
        "<footer>Example Press</footer></body></html>"
    ).encode()


class CorpusSite:
    def __init__(self, pages: list[CorpusPage], repeat: int):
        self.pages = {p.id: p for p in pages}
        self.repeat = repeat
        domains = sorted({urlsplit(p.url).hostname or "" for p in pages})
        if len(domains) > 250:
            raise ValueError("more domains than loopback addresses 127.0.1.1-250")
        self.address = {d: f"127.0.1.{i + 1}" for i, d in enumerate(domains)}
        self.hits = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    def urls(self) -> list[str]:
        out = []
        for r in range(self.repeat):
            for p in self.pages.values():
                host = self.address[urlsplit(p.url).hostname or ""]
                out.append(f"http://{host}:{self.port}/{p.id}/{r}")
        return out

    async def _page(self, request: web.Request) -> web.Response:
        page = self.pages.get(request.match_info["id"])
        if page is None:
            raise web.HTTPNotFound()
        self.hits += 1
        return web.Response(body=page.body, content_type="text/html")

    async def _article(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(body=synthetic_article(int(request.match_info["n"])),
                            content_type="text/html", charset="utf-8")

    async def _hits(self, request: web.Request) -> web.Response:
        return web.json_response({"hits": self.hits})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/_hits", self._hits)
        app.router.add_get("/article/{n}", self._article)
        app.router.add_get("/{id}/{r}", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with socket.socket() as s:  # one free port, then the same port on every address
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        for host in ["127.0.0.1", *self.address.values()]:
            await web.TCPSite(self._runner, host, self.port, backlog=1024).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _main(args: argparse.Namespace) -> None:
    site = CorpusSite(load_corpus(Path(args.corpus)), args.repeat)
    await site.start()
    Path(args.ready_file).write_text(json.dumps({
        "urls": site.urls(), "port": site.port, "base": f"http://127.0.0.1:{site.port}",
        "domains": len(site.address),
    }))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await site.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.corpus_site")
    p.add_argument("--corpus", required=True)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--ready-file", required=True)
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
