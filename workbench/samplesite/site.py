"""The sample site: a small static magazine served on loopback, with routes that fail on purpose.

``python -m workbench demo``, the example notebooks and the tests analyse it, so they need no
network. The pages live in ``data/sample_site`` of the repository (36 articles in English, German,
French and Spanish, with realistic boilerplate around the main text); this module serves them and
the failure routes::

    async with serve_sample_site() as site:          # or: site = await serve_sample_site()
        batch = await wb.submit(site.urls())          # every article plus one URL per failure kind
        site.broken_urls()                            # {url: expected error_type}
        site.fix("/broken/server-error")              # the route now serves a good article
        site.hits("/broken/server-error")             # requests seen, e.g. to assert "no refetch"

    site = serve_sample_site_in_thread()              # synchronous callers: outlives the cell
    site.close()

The failure routes, what each answers and the ``error_type`` it should leave, are in
``workbench.samplesite.broken``; ``/robots.txt`` allows everything.
"""

from __future__ import annotations

import asyncio
import html
import re
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from yarl import URL

from workbench.samplesite.broken import (
    BROKEN_ROUTES,
    DEFAULT_FLAKY_FAILURES,
    FIXABLE,
    FLAKY_PATH,
    LOOP_HOP,
    broken_response,
    busy_response,
    error_response,
    html_response,
)

__all__ = [
    "SampleArticle",
    "SampleSite",
    "sample_site",
    "sample_site_dir",
    "serve_sample_site",
    "serve_sample_site_in_thread",
]

_ROBOTS = "User-agent: *\nAllow: /\n"


def sample_site_dir() -> Path:
    """The sample site's directory: ``data/sample_site`` of the repository checkout.

    Also looks in ``workbench/sample_site`` (a copy shipped inside the package) and in
    ``./data/sample_site``. Raises ``FileNotFoundError`` saying where it looked.
    """
    package = Path(__file__).resolve().parents[1]  # workbench/ (this file: samplesite/site.py)
    candidates = [
        package.parent / "data" / "sample_site",
        package / "sample_site",
        Path.cwd() / "data" / "sample_site",
    ]
    for path in candidates:
        if (path / "index.html").is_file() and (path / "articles").is_dir():
            return path
    raise FileNotFoundError(
        "the sample site was not found (looked in "
        + ", ".join(str(p) for p in candidates)
        + "). It ships with a checkout of the Workbench repository as data/sample_site, not with "
        "an installed wheel: run from a checkout, or pass site_dir=PATH to a copy of it"
    )


@dataclass(frozen=True)
class SampleArticle:
    """One article page of the sample site."""

    slug: str
    path: str  # "/articles/<slug>.html"
    lang: str  # from <html lang>
    title: str  # from <h1>, else <title>


class SampleSite:
    """A running sample site; ``serve_sample_site`` or ``serve_sample_site_in_thread`` builds it."""

    def __init__(self, site_dir: Path, *, flaky_failures: int = DEFAULT_FLAKY_FAILURES) -> None:
        self.site_dir = Path(site_dir)
        self.flaky_failures = flaky_failures
        self.base_url = ""
        self._index = (self.site_dir / "index.html").read_bytes()
        self._pages = {
            p.name: p.read_bytes() for p in sorted((self.site_dir / "articles").glob("*.html"))
        }
        if not self._pages:
            raise FileNotFoundError(f"no article pages in {self.site_dir / 'articles'}")
        names = list(self._pages)
        # A distinct stand-in article for each failure route, served once the route is fixed.
        self._stand_ins = {r: names[(3 + 5 * i) % len(names)] for i, r in enumerate(FIXABLE)}
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()  # by path
        self._hits_qs: Counter[str] = Counter()  # by path and query
        self._fixed: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses --

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this site (``"/articles/x.html"`` or
        ``"articles/x.html"``; an absolute URL of this site comes back as it is)."""
        if path.startswith(self.base_url + "/"):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def articles(self) -> list[SampleArticle]:
        """Every article page, sorted by path, with its language and title."""
        return [_describe(name, body) for name, body in self._pages.items()]

    def article_urls(self) -> list[str]:
        """URLs of every article page, sorted."""
        return [self.url(f"/articles/{name}") for name in self._pages]

    def broken_urls(self) -> dict[str, str]:
        """URL -> expected ``error_type``, one per failure kind (``/broken/flaky`` excluded)."""
        return {self.url(path): error_type for path, error_type in BROKEN_ROUTES.items()}

    def flaky_url(self, fail: int | None = None) -> str:
        """The route that fails ``fail`` times (default ``flaky_failures``) with 503, then works."""
        return self.url(FLAKY_PATH) + ("" if fail is None else f"?fail={int(fail)}")

    def urls(self, *, broken: bool = True) -> list[str]:
        """Every article URL, then (with ``broken``) one URL per failure kind."""
        return self.article_urls() + (list(self.broken_urls()) if broken else [])

    # -- observing and changing behaviour --

    def hits(self, path: str) -> int:
        """Requests received for ``path`` (a path or URL; with a query, only that exact query)."""
        route, path_qs = _split(path)
        with self._lock:
            return self._hits_qs[path_qs] if "?" in path_qs else self._hits[route]

    def fix(self, path: str) -> str:
        """Make a failure route serve a good article from now on; returns that article's URL."""
        route = self._route(path)
        with self._lock:
            self._fixed.add(route)
        return self.url(f"/articles/{self._stand_ins[route]}")

    def unfix(self, path: str) -> None:
        """Make a fixed failure route fail again."""
        route = self._route(path)
        with self._lock:
            self._fixed.discard(route)

    def reset(self) -> None:
        """Forget every request counted and every fix (the flaky route fails anew)."""
        with self._lock:
            self._hits.clear()
            self._hits_qs.clear()
            self._fixed.clear()

    def _route(self, path: str) -> str:
        route = _split(path)[0]
        if route not in FIXABLE:
            raise ValueError(f"{path!r} is not a failure route; these are: {', '.join(FIXABLE)}")
        return route

    # -- lifecycle --

    async def _start(self, host: str, port: int) -> None:
        app = web.Application(middlewares=[self._count])
        app.router.add_get("/", self._serve_index)
        app.router.add_get("/index.html", self._serve_index)
        app.router.add_get("/robots.txt", self._serve_robots)
        app.router.add_get("/articles/{name}", self._serve_article)
        app.router.add_get(LOOP_HOP, self._serve_loop_hop)
        app.router.add_get("/broken/{kind}", self._serve_broken)
        # A short shutdown: a test or a notebook closing the site should not wait on idle clients.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"http://{shown}:{bound_port}"

    async def _shutdown(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def close(self) -> Awaitable[None]:
        """Stop serving: ``await site.close()``. A site running in its own thread stops at once,
        so ``site.close()`` without ``await`` is enough there. Closing twice is harmless."""
        if self._thread is not None:
            self._stop_thread()
            return _Done()
        return self._shutdown()

    def _stop_thread(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive():
            return
        if threading.current_thread() is thread:
            raise RuntimeError("close a threaded sample site from another thread")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    @staticmethod
    def start_in_thread(
        host: str = "127.0.0.1", port: int = 0, *, site_dir: Path | None = None,
        flaky_failures: int = DEFAULT_FLAKY_FAILURES,
    ) -> SampleSite:
        """Same as ``serve_sample_site_in_thread``."""
        return serve_sample_site_in_thread(
            host, port, site_dir=site_dir, flaky_failures=flaky_failures
        )

    async def __aenter__(self) -> SampleSite:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __enter__(self) -> SampleSite:
        if self._thread is None:
            raise TypeError("use 'async with' for a site on the current event loop")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_thread()

    def __repr__(self) -> str:
        state = "serving" if self._runner is not None else "closed"
        mode = ", in a thread" if self._thread is not None else ""
        return (f"SampleSite({self.base_url or '(not started)'}, {len(self._pages)} articles, "
                f"{state}{mode})")

    # -- request handling --

    @web.middleware
    async def _count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        with self._lock:
            self._hits[request.path] += 1
            self._hits_qs[request.raw_path] += 1
        return await handler(request)

    async def _serve_index(self, request: web.Request) -> web.StreamResponse:
        return html_response(self._index)

    async def _serve_robots(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=_ROBOTS, content_type="text/plain", charset="utf-8")

    async def _serve_article(self, request: web.Request) -> web.StreamResponse:
        body = self._pages.get(request.match_info["name"])
        if body is None:
            return error_response(404, "Not Found", "There is no article at this address.")
        return html_response(body, compress=True)

    async def _serve_loop_hop(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/broken/redirect-loop")

    async def _serve_broken(self, request: web.Request) -> web.StreamResponse:
        route = request.path
        if route not in FIXABLE:
            return error_response(404, "Not Found", "There is no page at this address.")
        with self._lock:
            fixed = route in self._fixed
            seen = self._hits_qs[request.raw_path]
        if fixed:
            return html_response(self._pages[self._stand_ins[route]], compress=True)
        if route == FLAKY_PATH:
            try:
                fail = int(request.query.get("fail", self.flaky_failures))
            except ValueError:
                return error_response(400, "Bad Request", "fail must be a whole number.")
            if seen <= fail:
                return busy_response()
            return html_response(self._pages[self._stand_ins[route]], compress=True)
        return broken_response(route)

def _split(path_or_url: str) -> tuple[str, str]:
    """``(path, path with query)`` of a path or an absolute URL."""
    if "://" in path_or_url:
        u = URL(path_or_url)
        return u.path, u.raw_path_qs
    path_or_url = "/" + path_or_url.lstrip("/")
    return path_or_url.split("?", 1)[0], path_or_url


_LANG = re.compile(rb'<html[^>]*\blang="([^"]+)"')
_H1 = re.compile(rb"<h1[^>]*>(.*?)</h1>", re.S)
_TITLE = re.compile(rb"<title>(.*?)</title>", re.S)


def _describe(name: str, body: bytes) -> SampleArticle:
    lang = _LANG.search(body)
    title = _H1.search(body) or _TITLE.search(body)
    return SampleArticle(
        slug=name.removesuffix(".html"),
        path=f"/articles/{name}",
        lang=lang.group(1).decode() if lang else "",
        title=html.unescape(title.group(1).decode()).strip() if title else "",
    )


class _Done:
    """An awaitable that has already finished (no 'never awaited' warning when dropped)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class _StartingSite:
    """What ``serve_sample_site`` returns: await it, or use it with ``async with``."""

    def __init__(self, host: str, port: int, site_dir: Path | None, flaky_failures: int) -> None:
        self._args = (host, port, site_dir, flaky_failures)
        self._site: SampleSite | None = None

    async def _open(self) -> SampleSite:
        host, port, site_dir, flaky_failures = self._args
        site = SampleSite(site_dir or sample_site_dir(), flaky_failures=flaky_failures)
        await site._start(host, port)
        self._site = site
        return site

    def __await__(self) -> Generator[Any, None, SampleSite]:
        return self._open().__await__()

    async def __aenter__(self) -> SampleSite:
        return await self._open()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._site is not None:
            await self._site.close()


def serve_sample_site(
    host: str = "127.0.0.1", port: int = 0, *, site_dir: Path | None = None,
    flaky_failures: int = DEFAULT_FLAKY_FAILURES,
) -> _StartingSite:
    """Serve the sample site on the running event loop (port 0: a free port).

    ``site = await serve_sample_site()`` (then ``await site.close()``), or
    ``async with serve_sample_site() as site: ...``.
    """
    return _StartingSite(host, port, site_dir, flaky_failures)


#: Another name for ``serve_sample_site``, for ``async with sample_site() as site``.
sample_site = serve_sample_site


def serve_sample_site_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, site_dir: Path | None = None,
    flaky_failures: int = DEFAULT_FLAKY_FAILURES,
) -> SampleSite:
    """Serve the sample site from a daemon thread with its own event loop, for synchronous code
    and notebooks (it outlives the cell that started it). ``site.close()`` stops it; so does
    leaving ``with serve_sample_site_in_thread() as site:``."""
    site = SampleSite(site_dir or sample_site_dir(), flaky_failures=flaky_failures)
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        site._loop = loop
        try:
            loop.run_until_complete(site._start(host, port))
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(site._shutdown())
            loop.close()

    thread = threading.Thread(target=run, name="workbench-sample-site", daemon=True)
    site._thread = thread
    thread.start()
    if not ready.wait(timeout=30):
        raise RuntimeError("the sample site did not start within 30 s")
    if failure:
        site._thread = None
        raise failure[0]
    return site


async def _serve_forever(host: str, port: int) -> None:  # pragma: no cover - manual use
    async with serve_sample_site(host, port) as site:
        print(f"sample site at {site.base_url}/ (Ctrl-C stops it)", flush=True)
        await asyncio.Event().wait()


# manual use: python -m workbench.samplesite.site [PORT]
if __name__ == "__main__":  # pragma: no cover
    import sys

    try:
        asyncio.run(_serve_forever("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
    except KeyboardInterrupt:
        pass
