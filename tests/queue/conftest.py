"""Fixtures of the queue tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from workbench import Workbench
from workbench.queue import jobs as queue


@pytest_asyncio.fixture
async def redis(wb: Workbench) -> AsyncIterator[Any]:
    """The test Workbench's Redis (its ledger opened first: on SQLite that starts the embedded
    server)."""
    await wb.batches()
    pool = await queue.connect(wb.settings)
    yield pool
    await pool.aclose()
