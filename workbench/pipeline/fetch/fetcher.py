"""Polite, capped HTTP fetching with typed errors.

One ``Fetcher`` per worker process, shared by all its jobs: one aiohttp session (connection pool
and DNS cache) and one ``Politeness`` (robots.txt and per-host pacing, whose state a worker keeps
in Redis for all its processes and machines: ``politeness``, ``pacing``, ``robots``). ``fetch``
raises only ``workbench.core.errors.PipelineError`` subclasses; aiohttp's exceptions never escape.

Decisions worth knowing:

- Accepted: text/html, application/xhtml+xml, text/plain, and a response with no Content-Type
  whose body sniffs as HTML (reported as text/html). PDFs are refused with ``UnsupportedContent``
  ("PDFs are not extracted"), as are images, octet-stream and every other type; the type is
  checked from the headers, before the body is downloaded.
- Redirects are followed by hand so every hop is checked (address guard, robots.txt, loop).
  Cookies set during a redirect chain are sent on its later hops (many sites set a cookie and
  redirect to themselves); they are kept for that one fetch only.
- ``Page.headers`` has lowercased names; ``Page.redirects`` lists the URLs that answered with a
  redirect, in order (the first is the requested URL; ``final_url`` is not included).
- ``fetch_timeout_s`` bounds the network time of the whole fetch, all hops together; time spent
  waiting for a per-host slot (politeness) does not count against it. A worker's fetcher waits
  at most ``defer_after_s`` for its host, then raises ``HostPaced`` (the item is re-queued).

HTTPS, proxies and encodings (``tls``, ``proxies`` and ``netguard`` hold the details):

- Certificates are always verified, against the OS trust store plus ``WORKBENCH_CA_BUNDLE``. A
  certificate that fails (self-signed, expired, unknown CA, another host's) is
  ``TLSCertificateError`` (``tls_certificate``) and an impossible handshake (an old protocol, no
  shared cipher) ``TLSHandshakeError`` (``tls_handshake``): permanent, one try, saying which.
- ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` are honoured (https through ``CONNECT``). Behind a
  proxy, robots.txt, per-host pacing and the private-address guard still apply to the target
  site; the guard never judges the proxy itself.
- Redirects may change scheme (http -> https and back); each hop is checked the same way and
  ``Page.final_url`` records where the chain ended.
- ``Accept-Encoding`` names only what can be decoded here (gzip, deflate, br; zstd when a zstd
  module is installed); another Content-Encoding is ``UnsupportedContent``. Bodies are decoded as
  they stream in, so ``max_page_bytes`` counts decoded bytes and a compression bomb stops at the
  cap with ``ResponseTooLarge``, its memory bounded by the cap.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.cookies import SimpleCookie
from typing import TypeVar

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from workbench.core.backoff import parse_retry_after
from workbench.core.errors import (
    BlockedAddress,
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
from workbench.core.logs import get_logger
from workbench.core.page import Page
from workbench.core.settings import Settings
from workbench.pipeline.fetch.charset import (
    ACCEPT_ENCODING,
    check_content_encoding,
    check_content_type,
    choose_encoding,
    media_type,
    sniffs_as_html,
)
from workbench.pipeline.fetch.netguard import (
    AddressBlockedError,
    AddressCheck,
    GuardedResolver,
    ProxiedTargetCheck,
    ip_literal,
    is_public_address,
)
from workbench.pipeline.fetch.pacing import HostPacer
from workbench.pipeline.fetch.politeness import Politeness
from workbench.pipeline.fetch.proxies import ProxyConfig
from workbench.pipeline.fetch.revalidate import conditional_headers, revalidated
from workbench.pipeline.fetch.robots import ROBOTS_MAX_REDIRECTS, ROBOTS_TIMEOUT_S, read_robots
from workbench.pipeline.fetch.tls import client_context
from workbench.pipeline.fetch.translate import client_error

__all__ = ["TRANSIENT_STATUSES", "Fetcher"]

log = get_logger("workbench.pipeline.fetch")

T = TypeVar("T")

#: 4xx statuses that are worth retrying (all 5xx are too)
TRANSIENT_STATUSES = frozenset({408, 425, 429})
_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1"
_CHUNK = 64 * 1024
#: decode big bodies off the event loop (charset detection is pure Python)
_DECODE_IN_THREAD_BYTES = 512 * 1024
# Servers with big cookies or CSP headers exceed aiohttp's 8 KiB default and would fail to parse.
_MAX_HEADER_BYTES = 32 * 1024


class _Budget:
    """Network time left for one fetch (all hops share it)."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def spend(self, seconds: float) -> None:
        self.left -= seconds


@dataclass
class _Redirect:
    location: str
    cookies: SimpleCookie


@dataclass
class _Final:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    fetched_at: datetime


def _check_url(url: object, *, context: str = "") -> URL:
    """Parse a URL the fetcher can request, or raise InvalidPageURL saying why not."""
    if not isinstance(url, str):
        raise InvalidPageURL(f"{context}not a URL string: {url!r}")
    try:
        parsed = URL(url.strip())
        host = parsed.host
    except (ValueError, TypeError) as exc:
        raise InvalidPageURL(f"{context}cannot parse URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidPageURL(f"{context}only http(s) URLs can be fetched, got {url!r}")
    if not host:
        raise InvalidPageURL(f"{context}URL has no host: {url!r}")
    return parsed.with_fragment(None)


class Fetcher:
    """One per worker process; shared by all jobs in that process.

    ``address_allowed`` replaces the private-address guard's check (used when
    ``settings.block_private_addresses`` is on); tests use it to allow one loopback address.
    Proxies are read from the environment when the fetcher is made (``proxies.ProxyConfig``).
    ``pacer`` keeps the per-host politeness state (default: this process's memory; a worker
    passes Redis'); ``defer_after_s``: wait at most this long for a host, then raise ``HostPaced``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        address_allowed: AddressCheck | None = None,
        pacer: HostPacer | None = None,
        defer_after_s: float | None = None,
    ) -> None:
        self.settings = settings
        self._allowed: AddressCheck | None = None
        if settings.block_private_addresses:
            self._allowed = address_allowed or is_public_address
        self.proxies = ProxyConfig.from_environment()
        self._proxied_check: ProxiedTargetCheck | None = None
        if self._allowed is not None and self.proxies:
            self._proxied_check = ProxiedTargetCheck(self._allowed)
        self._ssl: ssl.SSLContext | None = None
        self._session: aiohttp.ClientSession | None = None
        self.politeness = Politeness(
            settings, pacer, self._load_robots, defer_after_s=defer_after_s
        )

    # -- lifecycle --

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the running loop (the Fetcher may be built outside one).
        if self._session is None or self._session.closed:
            s = self.settings
            if self._ssl is None:  # ~70 ms to parse the trust store: once per fetcher
                self._ssl = client_context(s.ca_bundle)
            resolver = None
            if self._allowed is not None:  # the proxies' own names are not judged (netguard)
                resolver = GuardedResolver(self._allowed, exempt=self.proxies.hosts)
            connector = aiohttp.TCPConnector(
                limit=0,  # total concurrency is the worker's; per-host is our semaphore's
                limit_per_host=0,
                use_dns_cache=True,
                ttl_dns_cache=300,
                resolver=resolver,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,  # the fetch-wide budget is enforced around each hop
                    connect=s.connect_timeout_s,
                    sock_connect=s.connect_timeout_s,
                    sock_read=s.read_timeout_s,
                ),
                headers={
                    "User-Agent": s.user_agent,
                    "Accept": _ACCEPT,
                    "Accept-Encoding": ACCEPT_ENCODING,
                },
                # No shared cookie jar: jobs must not leak cookies into each other, and a jar
                # for thousands of hosts only grows. Redirect chains carry their own (see fetch).
                cookie_jar=aiohttp.DummyCookieJar(),
                # Proxies are chosen per request from self.proxies; trust_env would also send
                # ~/.netrc credentials to the sites fetched.
                trust_env=False,
                max_line_size=_MAX_HEADER_BYTES,
                max_field_size=_MAX_HEADER_BYTES,
                trace_configs=[self.politeness.trace_config()],  # when requests really leave
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool. Idempotent; a later ``fetch`` opens a new one."""
        self.politeness.close()
        try:  # the ends of the last requests, not left to their leases' expiry
            await self.politeness.pacer.flush()
        except Exception as exc:
            log.warning("recording the last requests' ends failed", error=str(exc)[:300])
        if self._proxied_check is not None:
            await self._proxied_check.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- fetching --

    async def fetch(
        self, url: str, *, accept: Collection[str] | None = None, max_bytes: int | None = None,
        revalidate: Page | None = None,
    ) -> Page:
        """Fetch ``url`` politely and return the page; raises PipelineError subclasses only.

        ``accept``: the media types to take instead of HTML, XHTML and plain text (the input
        readers pass ``inputs.source.INPUT_CONTENT_TYPES`` for sitemaps and feeds; a body with no
        Content-Type is then returned unsniffed); ``max_bytes``: the size cap instead of
        ``max_page_bytes``. robots.txt, pacing, the address guard and timeouts are the same.
        ``revalidate``: the stored page of ``url``, fetched only if changed (revalidate.py)."""
        target = _check_url(url)
        accepted = frozenset(accept) if accept is not None else None
        budget = _Budget(self.settings.fetch_timeout_s)
        redirects: list[str] = []
        jar: aiohttp.CookieJar | None = None
        seen: set[tuple[str, str]] = set()
        while True:
            cookie = _cookie_header(jar, target)
            seen.add((str(target), cookie))
            self._check_literal(target)
            await self.politeness.check(target)  # robots.txt, every hop
            validators = conditional_headers(revalidate, target)
            outcome = await self._exchange(
                target, partial(self._handle, url=target, accept=accepted, max_bytes=max_bytes,
                                conditional=validators is not None),
                budget=budget, cookie=cookie, extra_headers=validators,
            )
            if isinstance(outcome, _Final) and outcome.status == 304 and revalidate is not None:
                return revalidated(revalidate, url, outcome.fetched_at, redirects)
            if isinstance(outcome, _Final):
                return await self._page(url, target, outcome, redirects, sniff=accepted is None)
            # A redirect: check the next hop before taking it.
            redirects.append(str(target))
            if outcome.cookies:
                jar = jar or aiohttp.CookieJar(unsafe=True)  # unsafe: allow IP-literal hosts
                jar.update_cookies(outcome.cookies, target)
            nxt = _redirect_target(target, outcome.location)
            if (str(nxt), _cookie_header(jar, nxt)) in seen:
                raise TooManyRedirects(
                    f"redirect loop fetching {url}: {target} redirects to {nxt}, "
                    "which was already visited"
                )
            if len(redirects) > self.settings.max_redirects:
                raise TooManyRedirects(
                    f"more than {self.settings.max_redirects} redirects fetching {url} "
                    f"(last: {target} -> {nxt})"
                )
            log.debug("fetch_redirect", url=str(target), to=str(nxt))
            target = nxt

    async def _handle(
        self, resp: aiohttp.ClientResponse, url: URL, *,
        accept: frozenset[str] | None = None, max_bytes: int | None = None,
        conditional: bool = False,
    ) -> _Redirect | _Final:
        """Turn one response into a redirect to follow, a final body, or a typed error."""
        status = resp.status
        if status == 304 and conditional:  # not modified: the caller has the page
            return _Final(status, resp.headers, b"", datetime.now(UTC))
        if 300 <= status < 400 and status != 304:
            location = resp.headers.get("Location")
            if not location:
                raise HTTPStatusError(
                    status, f"HTTP {status} redirect without a Location from {url}"
                )
            return _Redirect(location, resp.cookies)
        if status in TRANSIENT_STATUSES or 500 <= status <= 599:
            retry_after = parse_retry_after(
                resp.headers.get("Retry-After"), self.settings.retry_after_max_s
            )
            wait = f", retry after {retry_after:g}s" if retry_after is not None else ""
            raise TransientHTTPError(
                status, f"{_status_text(resp)} from {url}{wait}", retry_after_s=retry_after
            )
        if status >= 300:  # 304 (never asked for), other 4xx, nonsense above 599
            raise HTTPStatusError(status, f"{_status_text(resp)} from {url}")
        ctype = media_type(resp.headers.get("Content-Type"))
        if accept is None:
            check_content_type(ctype, url)  # before downloading a PDF or a video
        elif ctype and ctype not in accept:
            raise UnsupportedContent(
                f"{url} has content type {ctype}; expected one of {', '.join(sorted(accept))}"
            )
        check_content_encoding(resp.headers.get("Content-Encoding"), url)
        body = await self._read_capped(resp, url, max_bytes)
        return _Final(status, resp.headers, body, datetime.now(UTC))

    async def _read_capped(
        self, resp: aiohttp.ClientResponse, url: URL, max_bytes: int | None = None
    ) -> bytes:
        # The chunks are decoded (gzip, br...) as they arrive, so the cap counts decoded bytes; a
        # compressed Content-Length over the cap can only decode to more.
        cap = self.settings.max_page_bytes if max_bytes is None else max_bytes
        what = "max_page_bytes" if max_bytes is None else "max_bytes"
        if resp.content_length is not None and resp.content_length > cap:
            raise ResponseTooLarge(
                f"{url} declares Content-Length {resp.content_length} bytes, "
                f"over the {cap}-byte cap ({what})"
            )
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            buf += chunk
            if len(buf) > cap:
                # Leaving the response context closes the connection: the rest is never read.
                raise ResponseTooLarge(f"{url} sent more than the {cap}-byte cap ({what})")
        return bytes(buf)

    async def _page(
        self, url: str, final: URL, res: _Final, redirects: list[str], *, sniff: bool = True
    ) -> Page:
        if not res.body:
            raise EmptyResponse(f"{final} answered HTTP {res.status} with an empty body")
        raw_type = res.headers.get("Content-Type")
        ctype = media_type(raw_type)
        if not ctype and not sniff:
            ctype = "application/octet-stream"  # an input document: its reader judges the bytes
        if not ctype:
            if res.body[:1024].lstrip()[:5] == b"%PDF-":
                raise UnsupportedContent(
                    f"{final} is a PDF (no Content-Type); PDFs are not extracted"
                )
            if not sniffs_as_html(res.body):
                raise UnsupportedContent(f"{final} has no Content-Type and does not look like HTML")
            ctype = "text/html"
        if len(res.body) > _DECODE_IN_THREAD_BYTES:
            encoding = await asyncio.to_thread(choose_encoding, res.body, raw_type)
        else:
            encoding = choose_encoding(res.body, raw_type)
        return Page(
            url=url,
            final_url=str(final),
            status=res.status,
            headers={k.lower(): v for k, v in res.headers.items()},  # later duplicates win
            content_type=ctype,
            body=res.body,
            encoding=encoding,
            fetched_at=res.fetched_at,
            from_store=False,
            redirects=tuple(redirects),
        )

    # -- one request, with politeness, timeouts and error translation --

    def _check_literal(self, url: URL) -> None:
        # The connector skips the resolver for IP literals, so they are checked here.
        if self._allowed is None:
            return
        ip = ip_literal(url.host)
        if ip is not None and not self._allowed(ip):
            raise BlockedAddress(f"refusing to fetch {url}: {ip} is not a public address")

    async def _exchange(
        self,
        url: URL,
        handle: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        budget: _Budget,
        cookie: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> T:
        """One GET (no redirect following) inside the host's slot; ``handle`` reads the response."""
        self._check_literal(url)
        if budget.left <= 0:
            raise FetchTimeout(
                f"no time left to fetch {url} (fetch_timeout_s exhausted by redirects)"
            )
        session = self._get_session()
        loop = asyncio.get_running_loop()
        headers = {**({"Cookie": cookie} if cookie else {}), **(extra_headers or {})} or None
        proxy = self.proxies.for_url(url)
        if self._proxied_check is not None and (proxy or url.host in self.proxies.hosts):
            await self._check_proxied_target(url)
        if proxy is not None and proxy.headers and url.scheme == "http":
            headers = {**(headers or {}), **proxy.headers}  # the proxy reads the request itself
        try:
            # the host's start and concurrency lease; the outcome paces its later requests
            async with self.politeness.slot(url) as slot:
                started = loop.time()
                try:
                    async with asyncio.timeout(budget.left):
                        async with session.get(
                            url,
                            allow_redirects=False,
                            headers=headers,
                            proxy=proxy.url if proxy else None,
                            proxy_headers=dict(proxy.headers) if proxy and proxy.headers else None,
                            trace_request_ctx=slot,
                        ) as resp:
                            slot.responded(resp.status)
                            return await handle(resp)
                finally:
                    budget.spend(loop.time() - started)
        except PipelineError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise client_error(exc, url, settings=self.settings, proxy=proxy) from exc

    async def _check_proxied_target(self, url: URL) -> None:
        """The guard's verdict on a target the proxy will connect to (see netguard)."""
        assert self._proxied_check is not None and url.host is not None
        if ip_literal(url.host) is not None:
            return  # literals are judged by _check_literal
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await self._proxied_check.check(url.host)
        except AddressBlockedError as exc:
            raise BlockedAddress(f"refusing to fetch {url}: {exc}") from exc
        except TimeoutError as exc:
            raise FetchTimeout(
                f"looking up {url.host} for the address guard took over "
                f"{self.settings.connect_timeout_s:g}s"
            ) from exc
        except OSError as exc:
            raise FetchConnectionError(
                f"DNS lookup failed for {url} ({exc}); with a proxy and the address guard on, "
                "target names must also resolve locally"
            ) from exc

    # -- robots.txt --

    async def _load_robots(self, robots_url: str) -> tuple[int, bytes]:
        """Fetch a robots.txt (following a few redirects, each hop checked): (status, body)."""
        target = URL(robots_url)
        budget = _Budget(min(ROBOTS_TIMEOUT_S, self.settings.fetch_timeout_s))
        for _ in range(ROBOTS_MAX_REDIRECTS + 1):
            status, location, body = await self._exchange(target, read_robots, budget=budget)
            if location is None:
                return status, body
            target = _redirect_target(target, location)
        return 404, b""  # too many redirects: Google treats it as "no robots.txt"


def _redirect_target(current: URL, location: str) -> URL:
    """The URL a Location header points to, or InvalidPageURL naming both ends."""
    try:
        joined = str(current.join(URL(location)))
    except (ValueError, TypeError) as exc:
        raise InvalidPageURL(f"{current} redirected to an unparseable URL {location!r}") from exc
    return _check_url(joined, context=f"{current} redirected to a bad URL: ")


def _status_text(resp: aiohttp.ClientResponse) -> str:
    return f"HTTP {resp.status} {resp.reason}" if resp.reason else f"HTTP {resp.status}"


def _cookie_header(jar: aiohttp.CookieJar | None, url: URL) -> str:
    if jar is None:
        return ""
    return "; ".join(f"{m.key}={m.coded_value}" for m in jar.filter_cookies(url).values())
