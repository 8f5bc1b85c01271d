"""A fresh client submitting N URLs, for ``bench_scale`` (which samples this process's RSS).

    python -m benchmarks.scale_submit N TAG      # settings from WORKBENCH_* (the bench's env)

Prints one JSON line: the batch id, the seconds ``submit`` took, and this process's RSS (MB)
once the list of URLs was built, just before ``submit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import psutil

from workbench import Workbench

from . import scale_pipeline  # noqa: F401 - registers "scale-text"


async def main(n: int, tag: str) -> None:
    urls = [f"http://host{i % 97}.example.org/{tag}/{i}" for i in range(n)]
    wb = Workbench()
    try:
        await wb.batches()  # the ledger open before the clock starts, as in a notebook
        before = psutil.Process().memory_info().rss / 2**20
        t0 = time.perf_counter()
        batch = await wb.submit(urls, pipeline="scale-text", name=f"scale-{tag}")
        seconds = time.perf_counter() - t0
    finally:
        await wb.close()
    print(json.dumps({"batch_id": batch.id, "seconds": seconds, "rss_before_mb": before}))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
