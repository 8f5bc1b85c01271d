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


def is_public_address(ip: IPAddress) -> bool:
    """True for a globally routable unicast address.

    ``is_global`` already excludes private, loopback, link-local, reserved, unspecified and
    shared (CGNAT) ranges; multicast is excluded explicitly. IPv4-mapped IPv6 addresses
    (``::ffff:127.0.0.1``) are judged by the IPv4 address they carry.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
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
