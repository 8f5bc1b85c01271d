"""aiohttp's exceptions, translated at the boundary into Workbench's error tree.

``fetch`` raises only ``PipelineError`` subclasses: the caller learns what happened (a timeout, a
refused connection, a bad certificate, a proxy that said no) and whether a retry can help, never
which HTTP library is underneath.
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from workbench.core.errors import (
    BlockedAddress,
    FetchConnectionError,
    FetchTimeout,
    InvalidPageURL,
    PermanentError,
    PipelineError,
    UnsupportedContent,
)
from workbench.core.settings import Settings
from workbench.pipeline.fetch.netguard import AddressBlockedError
from workbench.pipeline.fetch.proxies import Proxy
from workbench.pipeline.fetch.tls import certificate_error, handshake_error


def client_error(
    exc: BaseException, url: URL, *, settings: Settings, proxy: Proxy | None = None
) -> PipelineError:
    """The typed error for ``exc`` (a ``TimeoutError``, ``aiohttp.ClientError`` or ``OSError``)
    raised while requesting ``url``, directly or through ``proxy``."""
    if isinstance(exc, TimeoutError):  # aiohttp's timeout errors subclass it too
        return FetchTimeout(_timeout_message(exc, url, settings))
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return certificate_error(url, exc.host, exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return handshake_error(url, exc.host, exc.os_error)
    via = str(proxy.url) if proxy is not None else "(none)"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return FetchConnectionError(
            f"could not connect to the proxy {via}: {exc.os_error} (fetching {url})"
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        message = (
            f"the proxy {via} refused to connect to {url.host}: HTTP {exc.status} {exc.message}"
        )
        if exc.status in (403, 407):  # its policy or its credentials: no retry changes those
            return PermanentError(message, error_type="proxy_refused")
        return FetchConnectionError(message)  # 502/503/504: the proxy could not get through now
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, AddressBlockedError):
            return BlockedAddress(f"refusing to fetch {url}: {exc.os_error}")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return FetchConnectionError(f"DNS lookup failed for {url}: {exc.os_error}")
        return FetchConnectionError(f"could not connect to {url}: {exc.os_error}")
    if isinstance(exc, aiohttp.InvalidURL):
        return InvalidPageURL(f"cannot request {url}: {exc}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return FetchConnectionError(f"server disconnected before answering {url}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return FetchConnectionError(f"response body from {url} was cut off or corrupt: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        if "content-encoding" in exc.message.lower():
            # aiohttp refuses a coding it has no decoder for (zstd without a zstd module) while
            # parsing the headers; the type is lost on the way, only the message says so.
            return UnsupportedContent(f"{url} sent a body that cannot be decoded: {exc.message}")
        return FetchConnectionError(f"invalid HTTP response from {url}: {exc.message}")
    return FetchConnectionError(f"connection error fetching {url}: {exc!r}")


def _timeout_message(exc: BaseException, url: URL, s: Settings) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connecting to {url.host} took over {s.connect_timeout_s:g}s fetching {url}"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"{url} sent nothing for {s.read_timeout_s:g}s (read timeout)"
    return f"fetching {url} took over {s.fetch_timeout_s:g}s (fetch_timeout_s)"
