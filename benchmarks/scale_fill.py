"""Finish a submitted ``scale-text`` batch without a worker, for ``bench_scale --fill``.

    python -m benchmarks.scale_fill BATCH      # settings from WORKBENCH_* (the bench's env)

Every item is claimed and completed (or failed, one in a hundred, as ``scale-text`` does) by the
ledger's own claim and completion statements, 5,000 items a transaction: the rows a worker writes
(results, their bulky parts, shapes, item states), without the pipeline's machinery or a worker's
few-dozen-item commits. Their jobs leave the queue, as a worker's finish removes them (left there,
a later cancel measured a queue twice the size of anything a worker leaves). A million items take a
few minutes here instead of most of an hour, so the read side (``status()``, projections,
``iter_results``, the Parquet export) can be measured at a million. It runs as its own process so
that the benchmark's client keeps the RSS a researcher's would. Prints one JSON line: items done,
failed, seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from workbench import Workbench
from workbench.core import codec
from workbench.queue import jobs as queue

from .scale_pipeline import fails, result_for

CHUNK = 5_000


async def main(batch_id: str) -> None:
    wb = Workbench()
    t0 = time.perf_counter()
    done = failed = 0
    try:
        await wb.get_batch(batch_id)  # opens the ledger
        ledger = wb.ledger
        redis = await wb.open_queue()
        info = await ledger.batch_info(batch_id)
        async for chunk in ledger.item_chunks(
            batch_id, columns=["attempts", "url", "normalized_url"], chunk_rows=CHUNK,
            statuses=["queued"],
        ):
            ids, attempts, urls = chunk["item_id"], chunk["attempts"], chunk["url"]
            numbers = [int(u.rsplit("/", 1)[1]) for u in urls]
            bad = [(i, a) for i, a, n in zip(ids, attempts, numbers, strict=True) if fails(n)]
            async with ledger.engine.begin() as conn:
                await ledger._claim_many(conn, [(i, a, "fill") for i, a in zip(
                    ids, attempts, strict=True)])
                results: list[tuple[int, int, dict[str, Any]]] = [
                    (i, a, {
                        "batch_id": batch_id, "normalized_url": norm, "pipeline": "scale-text",
                        "pipeline_version": "1", "params_hash": info.params_hash,
                        "workbench_version": "bench", "data": codec.dumps(result_for(n)),
                        "timings": {"total": 0.001},
                    })
                    for i, a, n, norm in zip(ids, attempts, numbers, chunk["normalized_url"],
                                             strict=True) if not fails(n)
                ]
                await ledger._complete_many(conn, results)
            done += len(results)
            await asyncio.gather(*(ledger.fail(i, a, {
                "error_type": "bench_failure", "error_message": "fails on purpose",
                "retryable": False}) for i, a in bad))
            failed += len(bad)
            await queue.drop(redis, wb.settings.queue_name, list(zip(ids, attempts, strict=True)))
    finally:
        await wb.close()
    print(json.dumps({"done": done, "failed": failed, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
