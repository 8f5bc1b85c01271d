"""URL validation and normalization for ``submit``.

Normalization makes two spellings of one page one cache key and one item: the scheme and host are
lowercased, the host is IDNA-encoded, a default port and the fragment are dropped and an empty path
becomes ``/``. The query string is kept as given: its order can matter to the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from yarl import URL

MAX_URL_LENGTH = 8192
# whitespace (\s is str.isspace's set) or control characters; a regex, not a loop per character
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(
    rf"(?P<scheme>[Hh][Tt][Tt][Pp][Ss]?)://(?P<host>{_LABEL}(?:\.{_LABEL})*\.?)"
    r"(?::(?P<port>[0-9]{1,5}))?(?P<path>/[A-Za-z0-9\-._~/]*)?(?:\?(?P<query>[A-Za-z0-9\-._~=&/]*))?"
)

_LOWER_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# a URL already in normal form: lowercase http(s) and host, no port, a path, a non-empty query or
# none (with no "/." anywhere, tested apart: a dot segment goes through the full path). Such a URL
# has no whitespace, control character or surrogate, and normalizes to itself.
_NORMAL = re.compile(
    rf"https?://{_LOWER_LABEL}(?:\.{_LOWER_LABEL})*/[A-Za-z0-9\-._~/]*(?:\?[A-Za-z0-9\-._~=&/]+)?"
)


@dataclass(frozen=True)
class CheckedURLs:
    """The outcome of validating a batch of URL entries."""

    #: (position, url as given, normalized url) for each valid, first-seen entry
    valid: list[tuple[int, str, str]]
    #: (position, entry, reason) for each invalid entry
    invalid: list[tuple[int, object, str]]
    #: how many valid entries repeated an earlier one and were folded into it
    duplicates: int


def normalize_url(url: str) -> str:
    """Return the normalized form of ``url``; raises ``ValueError`` with a reason if invalid."""
    if not isinstance(url, str):
        raise ValueError(f"not a string but {type(url).__name__}")
    raw = url.strip()
    if len(raw) <= MAX_URL_LENGTH and "/." not in raw and _NORMAL.fullmatch(raw):
        return raw  # the common case of a large batch, at half the cost of the checks below
    if not raw:
        raise ValueError("empty string")
    if len(raw) > MAX_URL_LENGTH:
        raise ValueError(f"longer than {MAX_URL_LENGTH} characters")
    if _BAD_CHARS.search(raw):
        raise ValueError("contains whitespace or control characters")
    if _SURROGATE.search(raw):  # not text: it cannot be stored or sent anywhere
        raise ValueError("contains a lone surrogate (such as \\ud800): not valid Unicode text")
    return _normalize_plain(raw) or _normalize_with_yarl(raw)


def _normalize_plain(raw: str) -> str | None:
    """The normal form of a plain URL (http(s), a DNS name or IPv4 host, an optional port, a path
    and query of characters yarl leaves as they are), or None for anything else. Same result as
    ``_normalize_with_yarl`` (tests/reliability checks it), at a third of the cost: parsing with
    yarl was a third of a 100k-URL submit."""
    m = _PLAIN.fullmatch(raw)
    if m is None or "/." in (m["path"] or ""):  # dot segments: yarl resolves them
        return None
    scheme, host, port = m["scheme"].lower(), m["host"].lower().rstrip("."), m["port"]
    netloc = host
    if port is not None:
        number = int(port)
        if not 0 < number < 65536:
            return None  # yarl's path words the error
        if number != _DEFAULT_PORTS[scheme]:
            netloc = f"{host}:{number}"
    query = m["query"]
    return f"{scheme}://{netloc}{m['path'] or '/'}{'?' + query if query else ''}"


def _normalize_with_yarl(raw: str) -> str:
    try:
        parsed = URL(raw)
    except (ValueError, TypeError) as exc:
        if "port" in str(exc).lower():
            raise ValueError(f"has an invalid port ({exc})") from None
        raise ValueError(f"cannot be parsed ({exc})") from None
    scheme = (parsed.scheme or "").lower()
    if not scheme:
        raise ValueError("has no scheme (expected http:// or https://)")
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme!r} is not http or https")
    try:
        host = parsed.raw_host
        port = parsed.explicit_port
    except ValueError as exc:
        raise ValueError(f"has an invalid port ({exc})") from None
    if not host:
        raise ValueError("has no host")
    host = host.lower().rstrip(".")
    if not host or ".." in host or host.startswith("."):
        raise ValueError(f"has an invalid host {parsed.raw_host!r}")
    if parsed.user is not None or parsed.password is not None:
        raise ValueError("contains credentials (user:password@); pass them another way")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"has an invalid port {port}")
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        netloc = f"[{host}]" if port in (None, _DEFAULT_PORTS[scheme]) else f"[{host}]:{port}"
    path = parsed.raw_path or "/"
    query = f"?{parsed.raw_query_string}" if parsed.raw_query_string else ""
    return f"{scheme}://{netloc}{path}{query}"


def check_urls(entries: Iterable[object]) -> CheckedURLs:
    """Validate, normalize and dedupe ``entries`` keeping the first occurrence's position."""
    valid: list[tuple[int, str, str]] = []
    invalid: list[tuple[int, object, str]] = []
    seen: set[str] = set()
    duplicates = 0
    for pos, entry in enumerate(entries):
        try:
            norm = normalize_url(entry)  # type: ignore[arg-type]
        except ValueError as exc:
            invalid.append((pos, entry, str(exc)))
            continue
        if norm in seen:
            duplicates += 1
            continue
        seen.add(norm)
        valid.append((pos, str(entry).strip(), norm))
    return CheckedURLs(valid, invalid, duplicates)
