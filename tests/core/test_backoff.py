"""Retry timing (``core.backoff``): exponential, capped, jittered on the upper half only, with a
server's ``Retry-After`` as a floor that is itself capped; and the worker's retries follow it."""

from __future__ import annotations

import asyncio
import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from workbench import Workbench, pipeline
from workbench.core.backoff import backoff_s, parse_retry_after
from workbench.core.errors import TransientHTTPError


@pytest.mark.parametrize(("attempt", "nominal"), [
    (0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (12, 30.0),
    (200, 30.0),  # no overflow, still the cap
])
def test_exponential_and_capped_without_jitter(attempt: int, nominal: float) -> None:
    assert backoff_s(attempt, 1.0, 30.0, jitter=False) == nominal


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8])
def test_jitter_stays_in_the_upper_half_and_spreads(attempt: int) -> None:
    nominal = backoff_s(attempt, 0.5, 20.0, jitter=False)
    rng = random.getstate()
    random.seed(attempt)
    try:
        draws = [backoff_s(attempt, 0.5, 20.0) for _ in range(2000)]
    finally:
        random.setstate(rng)
    assert all(0.5 * nominal <= d <= nominal for d in draws)  # never sooner than half, never more
    # spread over the whole band, not a constant: retries of many workers do not line up
    assert min(draws) < 0.52 * nominal and max(draws) > 0.98 * nominal
    assert statistics.pstdev(draws) > 0.1 * nominal
    assert 0.72 * nominal < statistics.fmean(draws) < 0.78 * nominal


def test_retry_after_is_a_floor_and_is_capped() -> None:
    for _ in range(200):
        # the server asks for more than our schedule: its wish wins
        assert backoff_s(1, 1.0, 30.0, retry_after_s=12.0) == 12.0
        # ...up to the cap
        assert backoff_s(1, 1.0, 30.0, retry_after_s=3600.0, retry_after_max_s=60.0) == 60.0
        # the server asks for less than our schedule: ours stands (jittered)
        assert 8.0 <= backoff_s(5, 1.0, 30.0, retry_after_s=2.0) <= 16.0
    assert backoff_s(1, 1.0, 30.0, jitter=False, retry_after_s=0.0) == 1.0
    assert backoff_s(1, 0.0, 30.0, jitter=False) == 0.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("120", cap_s=60) == 60
    soon = (datetime.now(UTC) + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 85 <= parse_retry_after(soon) <= 90  # type: ignore[operator]
    assert parse_retry_after(soon, cap_s=10) == 10
    for bad in (None, "", "soon", "inf", "nan"):
        assert parse_retry_after(bad) is None


_raised_at: dict[str, datetime] = {}


@pipeline("test-busy", version="1")
async def busy(url: str, ctx) -> dict:
    _raised_at[url] = datetime.now(UTC)
    raise TransientHTTPError(503, retry_after_s=float(ctx.params.get("retry_after", 0)) or None)


@pytest.mark.parametrize(("params", "low", "high"), [
    ({}, 4.0, 8.0),  # retry_backoff_s=8: the first retry waits 4..8 s
    ({"retry_after": 30}, 30.0, 30.0),  # Retry-After: 30 beats the schedule
    ({"retry_after": 3600}, 60.0, 60.0),  # ...capped by retry_after_max_s
])
async def test_worker_schedules_retries_by_the_backoff(
    make_wb, params: dict, low: float, high: float
) -> None:
    wb: Workbench = make_wb(retry_backoff_s=8.0, retry_backoff_max_s=100.0,
                            retry_after_max_s=60.0, max_tries=3)
    url = f"http://example.org/busy/{len(_raised_at)}"
    batch = await wb.submit([url], pipeline="test-busy", params=params)
    await wb.start_worker(concurrency=1)
    try:
        row = await _until_retried(wb, batch.id)
    finally:
        await wb.stop_workers()
    assert row["status"] == "queued" and row["attempts"] == 2 and row["error_type"] == "http_503"
    delay = (row["next_try_at"] - _raised_at[url]).total_seconds()
    assert low <= delay <= high + 1.0, (delay, low, high)  # + the time to record the failure


async def _until_retried(wb: Workbench, batch_id: str) -> dict:
    for _ in range(600):
        (row,) = await wb.ledger.item_rows(batch_id)
        if row["attempts"] == 2:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("the item was not retried")
