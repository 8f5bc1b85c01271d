"""``iter_results`` over a batch in a fresh process, for ``bench_scale`` (its RSS is this
process's own: nothing read before it left memory behind to reuse).

    python -m benchmarks.scale_iter BATCH drop|hold     # settings from WORKBENCH_*

``drop``: the loop lets each chunk go before the next is read (``del chunk``); ``hold``: it
keeps it until the next one is bound (two chunks alive at the peak). Prints one JSON line: rows,
seconds, CPU seconds, RSS once the ledger is open (MB) and the peak RSS while iterating (sampled
every 5 ms).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
import time

import psutil

from workbench import Workbench


async def main(batch_id: str, mode: str) -> None:
    proc = psutil.Process()
    wb = Workbench()
    try:
        batch = await wb.get_batch(batch_id)
        await batch.counts()
        gc.collect()
        start = peak = proc.memory_info().rss / 2**20
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, proc.memory_info().rss / 2**20)
                time.sleep(0.005)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0, c0 = time.perf_counter(), time.process_time()
        rows = 0
        async for chunk in batch.iter_results():
            rows += len(chunk)
            if mode == "drop":
                del chunk
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        thread.join()
    finally:
        await wb.close()
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu": cpu, "start_mb": start,
                      "peak_mb": peak}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
