"""Fixtures of the queue tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from workbench import Workbench
from workbench.queue import jobs as queue
from workbench.queue.arq_adapter import QueueRedis, open_pool


@pytest_asyncio.fixture
async def redis(wb: Workbench) -> AsyncIterator[Any]:
    """The test Workbench's Redis (its ledger opened first: on SQLite that starts the embedded
    server)."""
    await wb.batches()
    pool = await queue.connect(wb.settings)
    yield pool
    await pool.aclose()


@pytest_asyncio.fixture
async def embedded_pool(embedded_redis: str) -> AsyncIterator[QueueRedis]:
    """A pool on the embedded Redis alone (no ledger, one backend): for the pacer's scripts."""
    pool = await open_pool(embedded_redis, "wbqueue")
    yield pool
    await pool.aclose()
