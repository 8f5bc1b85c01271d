"""Forward proxies from the environment: ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY``.

Read once, when the fetcher is made, by the standard library's rules (``urllib.request.
getproxies_environment``: lowercase names win over uppercase; ``HTTP_PROXY`` is ignored in a CGI
request, the "httpoxy" rule). ``NO_PROXY`` lists host names and domain suffixes
(``example.org`` and ``.example.org`` both cover ``www.example.org``), optionally with a port, or
``*`` for every host; IP ranges in CIDR form are not understood.

Not aiohttp's ``trust_env``: it would also send credentials from ``~/.netrc`` to the sites
fetched, and it looks the environment up again, in a thread, for every request.

An ``https://`` page goes through the proxy as a ``CONNECT`` tunnel: TLS runs end to end, so the
site's certificate is verified as without a proxy, and the proxy sees only host and port. Proxy
credentials in the URL (``http://user:pass@proxy:3128``) are sent as ``Proxy-Authorization``.
"""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from yarl import URL

from workbench.core.errors import SettingsError

_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Proxy:
    """One proxy: its URL without credentials, and the headers that authenticate to it (sent
    with each request for http:// pages, with the ``CONNECT`` for https:// ones)."""

    url: URL
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        auth = ", authenticated" if self.headers else ""
        return f"Proxy({str(self.url)!r}{auth})"


@dataclass(frozen=True)
class ProxyConfig:
    """Which proxy, if any, each URL goes through."""

    by_scheme: Mapping[str, Proxy] = field(default_factory=dict)
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls) -> ProxyConfig:
        """The proxies the environment names now.

        Raises ``SettingsError`` naming the variable for a proxy URL that cannot be used.
        """
        found = urllib.request.getproxies_environment()
        by_scheme = {
            scheme: _parse_proxy(found[scheme], f"{scheme.upper()}_PROXY")
            for scheme in _SCHEMES
            if found.get(scheme)
        }
        no_proxy = tuple(
            entry.strip().lstrip(".").lower()
            for entry in found.get("no", "").split(",")
            if entry.strip()
        )
        return cls(by_scheme, no_proxy)

    def __bool__(self) -> bool:
        return bool(self.by_scheme)

    @property
    def hosts(self) -> frozenset[str]:
        """The proxies' own host names."""
        return frozenset(p.url.host for p in self.by_scheme.values() if p.url.host)

    def for_url(self, url: URL) -> Proxy | None:
        """The proxy ``url`` goes through, or None for a direct connection."""
        proxy = self.by_scheme.get(url.scheme)
        if proxy is None or self.bypassed(url):
            return None
        return proxy

    def bypassed(self, url: URL) -> bool:
        """True when ``NO_PROXY`` names the URL's host (or a domain it is in)."""
        host = (url.host or "").lower().strip("[]").rstrip(".")
        with_port = f"{host}:{url.port}" if url.port is not None else host
        for entry in self.no_proxy:
            if entry == "*":
                return True
            name = entry.strip("[]") if entry.startswith("[") else entry
            if name in (host, with_port) or host.endswith("." + name):
                return True
            if with_port.endswith("." + name):
                return True
        return False


def _parse_proxy(value: str, variable: str) -> Proxy:
    try:
        url = URL(value.strip() if "://" in value else "http://" + value.strip())
        host = url.host
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{variable}: cannot parse proxy URL {value!r} ({exc})") from None
    if url.scheme not in _SCHEMES or not host:
        raise SettingsError(
            f"{variable}={url.with_user(None)!s}: only http:// and https:// proxies with a host "
            "are supported"
        )
    headers: dict[str, str] = {}
    if url.user is not None:
        token = base64.b64encode(f"{url.user}:{url.password or ''}".encode()).decode("ascii")
        headers["Proxy-Authorization"] = f"Basic {token}"
    return Proxy(url.with_user(None).with_path("").with_query(None).with_fragment(None), headers)
