"""The private-address guard: refuse to connect to non-public IP addresses.

Checked on the *resolved* address, so a public hostname that resolves to 127.0.0.1 (or a redirect
to one) is refused as well as an IP literal. The resolver wrapper plugs into aiohttp's connector,
so the address checked is the address connected to (no time-of-check/time-of-use gap).

Behind a forward proxy the guard judges the target, not the proxy: the proxy is the operator's own
infrastructure (and usually on a private address), so its host names are exempt, while each
proxied target is resolved here first (``ProxiedTargetCheck``) and refused unless *every* address
it has is allowed, since the proxy, not we, picks the one it connects to. This needs the target's
name to resolve locally; where only the proxy can resolve names, turn the guard off and let the
proxy's own rules guard the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Collection

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressCheck = Callable[[IPAddress], bool]


# IPv6 ranges whose last 32 bits are an IPv4 address a gateway or the host's own stack connects
# to (Python 3.11's ``is_global`` calls the first three global, so they must be unwrapped):
_EMBEDDING_V4 = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix (RFC 6052)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # SIIT, IPv4-translated (RFC 2765)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible, deprecated (RFC 4291); :: and ::1 too
)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if any: IPv4-mapped (``::ffff:a.b.c.d``),
    NAT64 (``64:ff9b::a.b.c.d``), 6to4 (``2002:AABB:CCDD::/48``), IPv4-translated
    (``::ffff:0:a.b.c.d``) or IPv4-compatible (``::a.b.c.d``)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _EMBEDDING_V4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True for a globally routable unicast address.

    ``is_global`` already excludes private, loopback, link-local, reserved, unspecified and
    shared (CGNAT) ranges; multicast is excluded explicitly. An IPv6 address that carries an
    IPv4 address (``embedded_ipv4``: mapped, NAT64, 6to4, translated, compatible) is judged by
    that IPv4 address, since that is where a packet to it ends up: ``64:ff9b::127.0.0.1``
    through a NAT64 gateway is 127.0.0.1 as surely as ``::ffff:127.0.0.1`` is.
    """
    inner = embedded_ipv4(ip)
    if inner is not None:
        ip = inner
    return ip.is_global and not ip.is_multicast


def ip_literal(host: str | None) -> IPAddress | None:
    """The address if ``host`` is an IP literal (brackets and zone id allowed), else None."""
    if not host:
        return None
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class AddressBlockedError(OSError):
    """Raised inside aiohttp's connector; the fetcher turns it into ``BlockedAddress``.

    An ``OSError`` so that aiohttp treats it like any resolution failure (wrapping it in
    ``ClientConnectorDNSError``) instead of mishandling an exception type it does not expect.
    """

    def __init__(self, host: str, addresses: list[str], *, proxied: bool = False):
        self.host = host
        self.addresses = addresses
        if proxied:
            message = (
                f"{host} resolves to blocked address(es) {', '.join(addresses)} (through a proxy "
                "every address of a host must be public)"
            )
        else:
            message = f"{host} resolves only to blocked address(es): {', '.join(addresses)}"
        super().__init__(message)


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and drops addresses the check refuses; none left → AddressBlockedError."""

    def __init__(
        self,
        allowed: AddressCheck,
        inner: AbstractResolver | None = None,
        *,
        exempt: Collection[str] = (),
    ) -> None:
        self._allowed = allowed
        # DefaultResolver is ThreadedResolver, or AsyncResolver when aiodns is installed.
        self._inner = inner if inner is not None else DefaultResolver()
        #: host names resolved without the check (the configured proxies)
        self.exempt = frozenset(h.lower() for h in exempt)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() in self.exempt:
            return results
        kept = [r for r in results if self._ok(r["host"])]
        if not kept:
            raise AddressBlockedError(host, sorted({r["host"] for r in results}))
        return kept

    def _ok(self, address: str) -> bool:
        return _allowed(self._allowed, address)

    async def close(self) -> None:
        await self._inner.close()


class ProxiedTargetCheck:
    """Judges a target a proxy will connect to: all of its addresses must be allowed.

    Verdicts are kept for ``ttl_s`` (like the connector's DNS cache), so a crawl through a proxy
    does not add a lookup to every request.
    """

    MAX_ENTRIES = 10_000

    def __init__(
        self, allowed: AddressCheck, inner: AbstractResolver | None = None, ttl_s: float = 300.0
    ) -> None:
        self._allowed = allowed
        self._inner = inner  # made on first use: aiohttp's resolvers bind to the running loop
        self.ttl_s = ttl_s
        self._verdicts: dict[str, tuple[float, AddressBlockedError | None]] = {}

    async def check(self, host: str) -> None:
        """Return if ``host`` may be fetched; raise ``AddressBlockedError`` if not, or ``OSError``
        when it does not resolve."""
        loop = asyncio.get_running_loop()
        cached = self._verdicts.get(host)
        if cached is None or cached[0] <= loop.time():
            if self._inner is None:
                self._inner = DefaultResolver()
            results = await self._inner.resolve(host, 0, socket.AF_UNSPEC)
            addresses = sorted({r["host"] for r in results})
            refused = [a for a in addresses if not _allowed(self._allowed, a)]
            verdict = AddressBlockedError(host, refused, proxied=True) if refused else None
            if len(self._verdicts) >= self.MAX_ENTRIES:
                self._verdicts.pop(next(iter(self._verdicts)))
            cached = self._verdicts[host] = (loop.time() + self.ttl_s, verdict)
        if cached[1] is not None:
            raise cached[1]

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _allowed(check: AddressCheck, address: str) -> bool:
    ip = ip_literal(address)
    return ip is not None and check(ip)
