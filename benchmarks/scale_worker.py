"""The worker alone over one large ``scale-text`` batch: items/s and CPU per item along the batch.

    .venv/bin/python -m benchmarks.scale_worker N [--profile AT,AT...] [--keep]

A fresh data dir (embedded Redis, SQLite ledger), N items submitted in-process, then one burst
worker (``--processes 1 --concurrency 32``, as ``bench_scale``) with no monitor or other client
reading beside it. Every 10 % of the batch: items/s, and CPU per item of the worker process and
of the Redis server (psutil), so growth in the worker's own per-item cost is told apart from
the machine's load; ``--monitor`` refreshes the notebook monitor every 5 s in this process, as
``bench_scale`` does. ``--profile`` records 15 s of py-spy on the worker once that many items are
done (flamegraph-ready ``.txt`` collapsed stacks, in the data dir: use ``--keep``).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from pathlib import Path

import psutil
import redis as sync_redis

from workbench import Workbench
from workbench.queue.jobs import redis_url_for

from . import scale_pipeline  # noqa: F401 - registers "scale-text"
from .common import REPO, bench_env, log, worker_proc


def _redis_proc(data_dir: Path) -> psutil.Process | None:
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "redis" in cmd.lower() and str(data_dir) in cmd:
            return p
    return None


def _cpu(p: psutil.Process | None) -> float:
    if p is None:
        return float("nan")
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


async def main(n: int, profile_at: list[int], keep: bool, monitor: bool) -> None:
    from workbench.notebook.monitor import BatchMonitor

    with bench_env(keep=keep) as env:
        wb = Workbench(**env.settings())
        try:
            batch = await wb.submit([f"http://host{i % 97}.example.org/big/{i}" for i in range(n)],
                                    pipeline="scale-text", name="scale-worker")
            r = sync_redis.Redis.from_url(await redis_url_for(wb.settings))
        except BaseException:
            await wb.close()
            raise
        log(f"submitted {n:,} items ({batch.id}); data dir {env.root}")
        redis_ps = _redis_proc(env.data_dir)
        worker = worker_proc(env, "--processes", "1", "--burst", "--concurrency", "32",
                             "--pipelines", "benchmarks.scale_pipeline")
        samples: list[tuple[float, int, float, float]] = []
        spies: list[subprocess.Popen[bytes]] = []
        todo = sorted(profile_at)
        mon = BatchMonitor(batch) if monitor else None
        ticks: list[tuple[int, float]] = []
        next_tick = time.monotonic() + 5
        try:
            while True:
                left = int(r.zcard(env.queue_name))
                done = n - left
                samples.append((time.perf_counter(), done, worker.cpu_s(), _cpu(redis_ps)))
                if todo and done >= todo[0]:
                    out = env.root / f"profile-{todo.pop(0)}.txt"
                    spies.append(subprocess.Popen(
                        [str(REPO / ".venv/bin/py-spy"), "record", "-p", str(worker.pid), "-d",
                         "15", "-r", "200", "-f", "raw", "-o", str(out)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    log(f"profiling at {done:,} -> {out}")
                if left == 0 or not worker.alive():
                    break
                if mon is not None and time.monotonic() >= next_tick:
                    c0 = time.process_time()
                    await mon.refresh()
                    ticks.append((done, time.process_time() - c0))
                    next_tick = time.monotonic() + 5
                await asyncio.sleep(0.5)
        finally:
            worker.stop()
            for s in spies:
                s.wait()
            await wb.close()
        if ticks:
            every = ticks[:: max(1, len(ticks) // 8)]
            print("monitor refresh CPU (items done: ms): "
                  + ", ".join(f"{d:,}: {c * 1000:.0f}" for d, c in every))
        step = n // 10
        print(f"{'items':>12} {'items/s':>8} {'worker ms/item':>15} {'redis ms/item':>14}")
        for lo in range(0, n - step + 1, step):
            hi = lo + step
            a = next(s for s in samples if s[1] >= lo)
            b = next((s for s in samples if s[1] >= hi), samples[-1])
            items = b[1] - a[1]
            if items <= 0 or b[0] <= a[0]:
                continue
            print(f"{lo:>6,}-{hi:<6,} {items / (b[0] - a[0]):8.0f} "
                  f"{(b[2] - a[2]) * 1000 / items:15.2f} {(b[3] - a[3]) * 1000 / items:14.3f}")
        print(f"load average {psutil.getloadavg()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--profile", default="", help="item counts at which to record 15 s of py-spy")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--monitor", action="store_true", help="refresh a BatchMonitor every 5 s")
    a = ap.parse_args()
    asyncio.run(main(a.n, [int(x) for x in a.profile.split(",") if x], a.keep, a.monitor))
