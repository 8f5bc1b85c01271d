"""Conditional refetch: a URL whose page is stored is asked for only if it changed.

``Context.fetch`` hands the fetcher the stored page of the item's URL; the request for the URL the
stored page came from (its ``final_url``, after the same redirects) carries ``If-None-Match`` (its
ETag) and ``If-Modified-Since`` (its Last-Modified). A ``304 Not Modified`` answer reuses the stored
page instead of downloading it again: ``revalidated`` returns it with ``status=304``, ``from_store``
true and ``fetched_at`` the time of the revalidation, so the result's provenance reads
``http_status=304, from_stored_page=True`` with the stored ``content_sha256``. A stored page
without either validator is fetched as usual. Any other answer is a normal fetch.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from yarl import URL

from workbench.core.page import Page

__all__ = ["conditional_headers", "revalidated"]


def conditional_headers(stored: Page | None, url: URL) -> dict[str, str] | None:
    """The validators to send with a request for ``url``, if ``stored`` is that URL's page."""
    if stored is None or str(url) != stored.final_url:
        return None
    headers = {}
    if etag := stored.headers.get("etag"):
        headers["If-None-Match"] = etag
    if modified := stored.headers.get("last-modified"):
        headers["If-Modified-Since"] = modified
    return headers or None


def revalidated(stored: Page, url: str, fetched_at: datetime, redirects: list[str]) -> Page:
    """The stored page, confirmed current by a 304 at ``fetched_at``."""
    return replace(stored, url=url, status=304, fetched_at=fetched_at, from_store=True,
                   redirects=tuple(redirects))
