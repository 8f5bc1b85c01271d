"""``python -m workbench hosts``: per-host politeness as a table (``wb.hosts()``'s frame).

One line per host, most recently fetched first: requests, errors (of which throttled: 429, 503,
timeouts), the current gap between requests and why (``crawl-delay`` or ``back-off`` when one of
them sets it), robots.txt (state, URLs allowed / disallowed), and a pause (Retry-After) still
running. ``--json`` prints the rows as JSON lines instead.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

from workbench.cli.common import open_workbench
from workbench.core.text import format_duration, table

__all__ = ["hosts_text", "run_hosts"]


def hosts_text(df: pd.DataFrame, *, now: pd.Timestamp | None = None) -> str:
    """The hosts frame as an aligned table (pure: no I/O)."""
    if df.empty:
        return "no hosts fetched in the last 7 days"
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    rows = []
    for r in df.itertuples():
        paused = "-"
        if not pd.isna(r.paused_until) and r.paused_until > now:
            paused = format_duration((r.paused_until - now).total_seconds())
        rows.append((
            r.host, r.requests, f"{r.errors} ({r.throttled})", _delay(r),
            _robots(r), format_duration(r.crawl_delay_s), paused, r.deferred,
        ))
    return table(
        ["host", "requests", "errors (throttled)", "delay", "robots.txt", "crawl-delay",
         "paused", "deferred"],
        rows,
    )


def _delay(r: Any) -> str:
    text = format_duration(r.delay_s)
    if not pd.isna(r.crawl_delay_s) and r.crawl_delay_s and r.delay_s <= r.crawl_delay_s * 1.06:
        return f"{text} (crawl-delay)"
    if r.backoff_s and r.backoff_s >= r.response_gap_s and r.delay_s > 0:
        return f"{text} (back-off)"
    return text


def _robots(r: Any) -> str:
    if not r.robots:
        return "-"
    return f"{r.robots} {r.robots_allowed}/{r.robots_disallowed}"


async def run_hosts(args: argparse.Namespace) -> int:
    """``hosts [--json]``."""
    async with open_workbench() as wb:
        df = await wb.hosts()
    if getattr(args, "json", False):
        for row in df.to_dict(orient="records"):
            print(json.dumps({k: (None if pd.isna(v) else v.isoformat()
                                  if isinstance(v, pd.Timestamp) else v)
                              for k, v in row.items()}))
        return 0
    print(hosts_text(df))
    return 0
