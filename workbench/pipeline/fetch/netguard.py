"""The private-address guard: refuse to connect to non-public IP addresses.

Checked on the *resolved* address, so a public hostname that resolves to 127.0.0.1 (or a redirect
to one) is refused as well as an IP literal. The resolver wrapper plugs into aiohttp's connector,
so the address checked is the address connected to (no time-of-check/time-of-use gap).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

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

    def __init__(self, host: str, addresses: list[str]):
        self.host = host
        self.addresses = addresses
        super().__init__(f"{host} resolves only to blocked address(es): {', '.join(addresses)}")


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and drops addresses the check refuses; none left → AddressBlockedError."""

    def __init__(self, allowed: AddressCheck, inner: AbstractResolver | None = None) -> None:
        self._allowed = allowed
        # DefaultResolver is ThreadedResolver, or AsyncResolver when aiodns is installed.
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if self._ok(r["host"])]
        if not kept:
            raise AddressBlockedError(host, sorted({r["host"] for r in results}))
        return kept

    def _ok(self, address: str) -> bool:
        ip = ip_literal(address)
        return ip is not None and self._allowed(ip)

    async def close(self) -> None:
        await self._inner.close()
