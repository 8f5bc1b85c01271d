"""Fixtures of the scale tests: batches filled through the ledger's real write path, fast, and a
peak-RSS probe."""

from __future__ import annotations

import functools
import gc
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psutil

from workbench import Batch, Workbench
from workbench.core import codec

WORDS = ["the", "river", "flow", "spring", "team", "satellite", "gauge", "bank", "snow",
         "season", "farmer", "data", "official", "summary", "plan", "ahead"]


@functools.cache
def _texts(chars: int) -> tuple[str, ...]:
    rnd = random.Random(chars)
    return tuple(" ".join(rnd.choice(WORDS) for _ in range(chars // 4))[:chars]
                 for _ in range(61))


def article(i: int, text_chars: int = 1500) -> dict[str, Any]:
    """A result like the ``article`` pipeline's: small fields and a text of ``text_chars``."""
    text = f"{i} {_texts(text_chars)[i % 61]}"
    return {"title": f"Article {i}", "author": None if i % 7 else "Ada", "language": "en",
            "word_count": len(text.split()), "keywords": ["river", f"k{i % 13}"],
            "published": "2024-05-01", "reading_time_min": 2.5, "text": text}


async def fill(
    wb: Workbench, n: int, data: Callable[[int], Any], *, page: bool = True, failed: int = 0,
) -> Batch:
    """A batch of ``n`` items done with ``data(i)`` as their results (the last ``failed`` of
    them failed instead), written by the ledger's own claim and completion statements in
    transactions of 5,000 items (a worker writes the same rows, a few dozen per commit)."""
    tag = uuid.uuid4().hex[:8]
    batch = await wb.submit([f"http://h{i % 7}.example.org/{tag}/{i}" for i in range(n)],
                            pipeline="noop")
    return await complete(wb, batch, data, page=page, failed=failed)


async def complete(
    wb: Workbench, batch: Batch, data: Callable[[int], Any], *, page: bool = True,
    failed: int = 0,
) -> Batch:
    """Finish every item of a submitted batch as ``fill`` does."""
    ledger = wb.ledger
    n = batch.total
    rows = await ledger.item_rows(batch.id)
    params_hash = (await ledger.batch_info(batch.id)).params_hash
    now = datetime.now(UTC)
    for start in range(0, n, 5000):
        part = rows[start : start + 5000]
        async with ledger.engine.begin() as conn:
            await ledger._claim_many(conn, [(r["id"], r["attempts"], "w") for r in part])
            results = [(r["id"], r["attempts"], dict(
                batch_id=batch.id, normalized_url=r["normalized_url"], pipeline="noop",
                pipeline_version="1", params_hash=params_hash, workbench_version="0",
                data=codec.dumps(data(start + k)),
                final_url=r["url"] if page else None, http_status=200 if page else None,
                content_sha256="ab" * 32 if page else None, fetched_at=now if page else None,
                timings={"total": 0.01},
            )) for k, r in enumerate(part) if start + k < n - failed]
            await ledger._complete_many(conn, results)
    for r in rows[n - failed:]:
        await ledger.fail(r["id"], r["attempts"], {
            "error_type": "http_404", "error_message": f"gone {r['id']}",
            "traceback": "Traceback...\n" * 50, "retryable": False})
    gc.collect()
    return batch


class PeakRSS:
    """Samples this process's RSS every 2 ms while running; ``growth`` is the peak minus the
    RSS at the start, in MB."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.start = self.peak = 0.0

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    async def measure(self, work: Callable[[], Awaitable[Any]]) -> float:
        gc.collect()
        self.start = self.peak = self._rss()
        self._stop.clear()
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            await work()
        finally:
            self._stop.set()
            thread.join()
        gc.collect()
        return self.peak - self.start
