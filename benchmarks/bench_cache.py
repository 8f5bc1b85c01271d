"""Resubmitting analysed URLs: the result cache against the first run.

A worker (``python -m workbench.worker``, default processes) runs throughout. The first run
submits N small article pages served on loopback with the ``article`` pipeline and waits until
every item settled; the second submits the same URLs again and waits the same way. Both are
timed from ``submit`` to settled. The site counts requests: the second run must cause none.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from workbench import Workbench

from .bench_article import Site
from .common import BenchEnv, Figure, log, wait_until, worker_proc


async def _submit_and_wait(wb: Workbench, urls: list[str]) -> tuple[float, int, dict[str, int]]:
    t0 = time.perf_counter()
    batch = await wb.submit(urls, pipeline="article")
    counts = await batch.wait(timeout=3600, poll_s=0.1)
    return time.perf_counter() - t0, batch.cached, counts


def run(env: BenchEnv, corpus: Path, n: int) -> list[Figure]:
    site = Site(env, corpus, 1)
    worker = worker_proc(env, name="cache-worker")
    try:
        urls = [f"{site.base}/article/{i}" for i in range(n)]

        async def main() -> list[Figure]:
            wb = Workbench(**env.settings())
            try:
                await wb.batches()  # ledger ready before the worker registers
                wait_until(lambda: worker.alive() and _registered(env), 60, "the worker")
                log(f"first run: {n:,} article pages")
                first_s, _, first_counts = await _submit_and_wait(wb, urls)
                hits = site.hits()
                log(f"first run {first_s:.1f} s {first_counts}; resubmitting")
                again_s, cached, again_counts = await _submit_and_wait(wb, urls)
                refetches = site.hits() - hits
            finally:
                await wb.close()
            x = first_s / again_s
            ok = x >= 50 and refetches == 0 and cached == first_counts["done"]
            return [Figure(
                f"resubmitting {n:,} analysed URLs", "first run",
                "≥ 50× faster, 0 refetches", f"{x:.0f}×, {refetches} refetches", ok,
                f"first run {first_s:.1f} s ({first_counts['done']:,} done, "
                f"{first_counts['failed']} failed); resubmission {again_s * 1000:.0f} ms, "
                f"{cached:,} answered from the result cache, {again_counts['done']:,} done",
            )]

        return asyncio.run(main())
    finally:
        worker.stop()
        site.stop()


def _registered(env: BenchEnv) -> bool:
    import sqlite3

    db = env.data_dir / "workbench.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM workers").fetchone()[0] > 0
    except sqlite3.Error:
        return False
