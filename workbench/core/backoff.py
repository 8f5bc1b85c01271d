"""Retry timing: one exponential backoff and one ``Retry-After`` parser for every caller.

Used by the worker (item retries), the fetcher (pausing a host that answered 429/503), the LLM
client and the SMTP sender. Jitter spreads the retries of many workers instead of synchronising
them; a server's ``Retry-After`` is a floor, never shortened by our own schedule.
"""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC, datetime


def parse_retry_after(value: str | None, cap_s: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    None when the header is missing or unparseable; a date in the past gives 0; the result is
    capped at ``cap_s`` when given (a server asking for a day must not park a worker for a day).
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    seconds = max(seconds, 0.0)
    return seconds if cap_s is None else min(seconds, cap_s)


def backoff_s(
    attempt: int,
    base_s: float,
    max_s: float,
    *,
    jitter: bool = True,
    retry_after_s: float | None = None,
    retry_after_max_s: float | None = None,
) -> float:
    """The delay before retry number ``attempt`` (1 = the first retry).

    ``base_s * 2**(attempt-1)`` capped at ``max_s``; with ``jitter`` a uniform draw from the upper
    half of that, so retries spread without ever coming much sooner than planned. A server's
    ``retry_after_s`` (capped at ``retry_after_max_s``) is a floor.
    """
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    if jitter:
        delay *= random.uniform(0.5, 1.0)
    if retry_after_s:
        cap = retry_after_max_s if retry_after_max_s is not None else retry_after_s
        floor = min(retry_after_s, cap)
        delay = max(delay, floor)
    return delay
