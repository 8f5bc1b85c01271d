"""Fixtures for the input readers: a loopback site of sitemaps and feeds, and a plain fetcher.

The readers take any ``async (url) -> bytes | Fetched`` callable. The client will pass
Workbench's polite fetcher; here a small aiohttp fetch with the same error types (a 4xx is
``HTTPStatusError``, a refused connection ``FetchConnectionError``) stands in for it, so these
tests exercise the readers over real HTTP without depending on the fetcher's content-type rules.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from workbench.core.errors import FetchConnectionError, HTTPStatusError, TransientHTTPError

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
IMAGE_NS = 'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'


@dataclass(frozen=True)
class Fetched:
    final_url: str
    body: bytes
    content_type: str


class Fetcher:
    """``await fetcher(url)``: GET with redirects; counts requests per path."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.requested: list[str] = []

    async def __call__(self, url: str) -> Fetched:
        self.requested.append(url)
        try:
            async with self.session.get(url) as resp:
                if resp.status >= 500:
                    raise TransientHTTPError(resp.status, f"HTTP {resp.status} from {url}")
                if resp.status >= 400:
                    raise HTTPStatusError(resp.status, f"HTTP {resp.status} from {url}")
                return Fetched(str(resp.url), await resp.read(), resp.content_type)
        except aiohttp.ClientConnectionError as exc:
            raise FetchConnectionError(f"could not connect to {url}: {exc}") from exc


@pytest.fixture
async def fetch() -> AsyncIterator[Fetcher]:
    async with aiohttp.ClientSession() as session:
        yield Fetcher(session)


def urlset(urls: list[tuple[str, str | None]], *, extra: str = "") -> bytes:
    rows = "".join(
        f"<url><loc>{u}</loc>{f'<lastmod>{m}</lastmod>' if m else ''}{extra}</url>"
        for u, m in urls
    )
    return f'{XML_DECL}<urlset {NS} {IMAGE_NS}>{rows}</urlset>'.encode()


def sitemapindex(locs: list[str]) -> bytes:
    rows = "".join(f"<sitemap><loc>{u}</loc><lastmod>2024-03-01</lastmod></sitemap>" for u in locs)
    return f"{XML_DECL}<sitemapindex {NS}>{rows}</sitemapindex>".encode()


def big_gzip_sitemap(inflated_bytes: int) -> bytes:
    """A gzipped urlset that inflates to about ``inflated_bytes`` (built without holding it)."""
    entry = b"<url><loc>http://example.org/page</loc></url>"
    block = entry * (1024 * 1024 // len(entry))
    comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(f"<urlset {NS}>".encode())]
    for _ in range(inflated_bytes // len(block)):
        parts.append(comp.compress(block))
    parts.append(comp.compress(b"</urlset>"))
    parts.append(comp.flush())
    return b"".join(parts)


RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Example News</title><link>/</link>
<item><title>Rain &amp; rivers</title><link>/articles/rain.html</link>
  <pubDate>Tue, 10 Jun 2003 04:00:00 GMT</pubDate></item>
<item><title>Permalink guid</title><guid isPermaLink="true">http://other.example/g/1</guid></item>
<item><title>No link at all</title></item>
<item><title>Mail link</title><link>mailto:editor@example.org</link></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Example Atom</title>
<entry><title type="html">&lt;b&gt;Bold&lt;/b&gt; title</title>
  <link rel="alternate" href="posts/two"/><link rel="enclosure" href="two.mp3"/>
  <id>urn:uuid:2</id><published>2024-01-05T10:00:00+02:00</published></entry>
<entry><title>Updated only</title><link href="http://abs.example/3"/><id>tag:x,2024:3</id>
  <updated>2024-01-06T00:00:00Z</updated></entry>
</feed>"""

HTML = b"<!DOCTYPE html><html><head><title>Not a sitemap</title></head><body>Hi</body></html>"


@dataclass
class InputSite:
    server: TestServer
    routes: dict[str, tuple[bytes, str]]  # path -> (body, content type); editable by a test

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    @property
    def root(self) -> str:
        return self.url("/")


async def _serve(routes: dict[str, tuple[bytes, str]]) -> InputSite:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1", port=0)

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/redirect-to-index":
            raise web.HTTPFound("/sitemap_index.xml")
        if request.path not in routes:
            raise web.HTTPNotFound()
        body, ctype = routes[request.path]
        return web.Response(body=body, content_type=ctype)

    app.router.add_get("/{tail:.*}", handle)
    await server.start_server()
    return InputSite(server, routes)


def _routes(site: Callable[[str], str], huge_gzip: bytes) -> dict[str, tuple[bytes, str]]:
    pages = [
        (site("/articles/one.html"), "2024-01-05"),
        (site("/articles/two.html"), "2024-02-01T10:30:00+01:00"),
        ("/articles/relative.html", None),  # relative: resolved against the sitemap
    ]
    news = [(site("/news/a.html"), "2024-05"), (site("/news/b.html"), "junk date")]
    image = "<image:image><image:loc>http://img.example/x.jpg</image:loc></image:image>"
    xml = "application/xml"
    return {
        "/robots.txt": (
            f"User-agent: *\nAllow: /\nSitemap: {site('/sitemap_index.xml')}\n".encode(),
            "text/plain",
        ),
        "/sitemap_index.xml": (
            sitemapindex([site("/sitemap-pages.xml"), site("/sitemap-news.xml.gz")]),
            xml,
        ),
        "/sitemap-pages.xml": (urlset(pages, extra=image), xml),
        "/sitemap-news.xml.gz": (gzip.compress(urlset(news)), "application/gzip"),
        "/broken-index.xml": (sitemapindex([site("/sitemap-pages.xml"), site("/gone.xml")]), xml),
        "/all-broken-index.xml": (sitemapindex([site("/gone.xml"), site("/page.html")]), xml),
        "/loop-index.xml": (
            sitemapindex([site("/loop-index.xml"), site("/sitemap-pages.xml")]),
            xml,
        ),
        "/page.html": (HTML, "text/html"),
        "/text-sitemap.txt": (
            f"{site('/t/1')}\n\n{site('/t/2')}\nnot a url\n{site('/t/3')}".encode(),
            "text/plain",
        ),
        "/urls.txt": (b"hello world\nthis is prose\n", "text/plain"),
        "/broken.xml": (b'<?xml version="1.0"?><urlset><url><loc>http://a/</loc></url', xml),
        "/other-root.xml": (b'<?xml version="1.0"?><catalog><item/></catalog>', xml),
        "/huge.xml.gz": (huge_gzip, "application/gzip"),
        "/big.xml": (urlset([(site(f"/p/{i}"), None) for i in range(40_000)]), xml),
        "/feed.rss": (RSS, "application/rss+xml"),
        "/feed.atom": (ATOM, "application/atom+xml"),
        "/feed-as-sitemap.xml": (RSS, xml),
    }


@pytest.fixture(scope="session")
def huge_gzip() -> bytes:
    return big_gzip_sitemap(200 * 1024 * 1024)


@pytest.fixture
async def input_site(huge_gzip: bytes) -> AsyncIterator[InputSite]:
    """Sitemaps (an index, one plain child, one gzipped), feeds and bad documents."""
    site = await _serve({})
    site.routes.update(_routes(site.url, huge_gzip))
    yield site
    await site.server.close()


@pytest.fixture
async def bare_site() -> AsyncIterator[InputSite]:
    """An empty site: a test adds the routes it needs."""
    site = await _serve({})
    yield site
    await site.server.close()
