"""``wb.hosts()``: what politeness is doing, one row per host fetched in the last 7 days.

The rows come from the per-host state every worker shares in Redis (``queue.hosts.host_rows``):

- ``requests``, ``errors`` (4xx/5xx answers and failed connections), ``throttled`` (429, 503 and
  timeouts: the answers that made pacing back off), ``in_flight`` right now;
- ``delay_s``: the current gap between two requests to the host, and what it is made of:
  ``response_gap_s`` (following response time), ``backoff_s`` (after throttling),
  ``crawl_delay_s`` (robots.txt's Crawl-delay or Request-rate);
- ``robots``: ``rules``, ``allow_all`` (no robots.txt), ``unreachable`` (5xx: nothing fetched) or
  empty (not obeyed, or not read yet), with ``robots_allowed`` / ``robots_disallowed`` counts of
  URLs checked;
- ``paused_until`` (a Retry-After), ``deferred`` (times an item was sent back to the queue to
  wait for its turn), ``waiting`` (items in the host's line now), ``next_free_in_s`` and
  ``last_request_at``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.core.settings import Settings
from workbench.queue import QueueRedis
from workbench.queue.hosts import host_rows

__all__ = ["HOST_COLUMNS", "hosts_frame", "read_hosts"]

HOST_COLUMNS = [
    "host", "requests", "errors", "throttled", "in_flight", "delay_s", "response_gap_s",
    "backoff_s", "crawl_delay_s", "robots", "robots_allowed", "robots_disallowed",
    "paused_until", "deferred", "waiting", "next_free_in_s", "last_request_at",
]
_INTS = ("requests", "errors", "throttled", "in_flight", "robots_allowed", "robots_disallowed",
         "deferred", "waiting")
_FLOATS = ("delay_s", "response_gap_s", "backoff_s", "crawl_delay_s", "next_free_in_s")


def hosts_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame with stable columns and dtypes (also when empty)."""
    df = pd.DataFrame(rows, columns=HOST_COLUMNS)
    for col in _INTS:
        df[col] = df[col].astype("int64")
    for col in _FLOATS:
        df[col] = df[col].astype("float64")
    for col in ("paused_until", "last_request_at"):
        df[col] = pd.to_datetime(df[col].astype("float64"), unit="s", utc=True)
    df["host"] = df["host"].astype(str)
    df["robots"] = df["robots"].astype(str)
    return df


async def read_hosts(redis: QueueRedis, settings: Settings, *, limit: int = 10_000) -> pd.DataFrame:
    """The most recently fetched ``limit`` hosts, most recent first."""
    return hosts_frame(await host_rows(redis, settings, limit=limit))
