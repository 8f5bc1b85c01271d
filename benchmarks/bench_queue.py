"""The machinery itself, beside raw ARQ on the same Redis:

- submit N URLs (ledger + queue) vs an ARQ ``enqueue_job`` loop;
- ``counts()`` on the N-item batch;
- the no-op pipeline in one worker process vs a raw ARQ no-op worker (same process count, same
  ``max_jobs`` and poll delay), and vs raw ARQ tuned as a user would (``TUNED_ARQ``: max_jobs
  100, poll delay 0.05 s, results kept 60 s, on uvloop when Workbench's worker is), with the
  worker's RSS sampled over all N items;
- ``results()`` of the N rows.

Throughput is measured in steady state, from 10 % to 90 % of the jobs finished, read the same way
for both (the length of the ARQ queue, which both workers shrink as jobs finish), so start-up
costs of either worker do not count.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import redis as sync_redis
from arq.connections import ArqRedis, RedisSettings, create_pool

from workbench import Workbench
from workbench.core.loops import loop_name
from workbench.queue.jobs import redis_url_for

from .common import PYTHON, BenchEnv, Figure, Proc, fmt_x, log, ratio, worker_proc

CONCURRENCY = 32
POLL_DELAY_S = 0.2  # what workbench.worker.build_worker uses
#: raw ARQ tuned for throughput as a user would (issue 13), on uvloop when Workbench's worker is
#: (its default where uvloop is installed); Workbench keeps its defaults
TUNED_ARQ = ("--max-jobs", "100", "--poll-delay", "0.05", "--keep-result", "60",
             *(("--uvloop",) if loop_name() == "uvloop" else ()))


@dataclass
class Progress:
    """Samples of (time, jobs finished) and of the worker's RSS while a queue drains."""

    total: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    rss: list[tuple[int, float]] = field(default_factory=list)  # (finished, MB)

    def rate(self, lo: float = 0.1, hi: float = 0.9) -> float:
        t_lo = self._time_at(lo * self.total)
        t_hi = self._time_at(hi * self.total)
        return (hi - lo) * self.total / (t_hi - t_lo) if t_hi > t_lo else float("nan")

    def _time_at(self, done: float) -> float:
        prev = self.samples[0]
        for t, n in self.samples:
            if n >= done:
                t0, n0 = prev
                return t if n == n0 else t0 + (t - t0) * (done - n0) / (n - n0)
            prev = (t, n)
        return self.samples[-1][0]


def drain(proc: Proc, r: sync_redis.Redis, queue: str, total: int, *, timeout_s: float,
          sample_rss: bool = False) -> Progress:
    """Wait for ``proc`` to empty ``queue``, sampling progress (and RSS) every 100 ms."""
    prog = Progress(total)
    deadline = time.monotonic() + timeout_s
    while True:
        left = int(r.zcard(queue))
        done = total - left
        prog.samples.append((time.perf_counter(), done))
        if sample_rss:
            prog.rss.append((done, proc.rss_mb()))
        if left == 0:
            return prog
        if not proc.alive():
            raise RuntimeError(f"worker exited with {left} jobs left:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not drained in {timeout_s}s ({left} left)")
        time.sleep(0.1)


async def _arq_enqueue_loop(url: str, queue: str, n: int) -> float:
    """Seconds for ``n`` ``enqueue_job`` calls, the way ARQ's docs show (one awaited call each)."""
    pool: ArqRedis = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            await pool.enqueue_job("noop", f"http://example.org/arq/{i}", _queue_name=queue)
        return time.perf_counter() - t0
    finally:
        await pool.aclose()


async def _timed_counts(batch: Any, repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await batch.counts()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(env: BenchEnv, n: int, round_n: int, rounds: int) -> list[Figure]:
    return asyncio.run(_run(env, n, round_n, rounds))


async def _arq_round(env: BenchEnv, redis_url: str, r: sync_redis.Redis, m: int, i: int,
                     *, tuned: bool = False) -> float:
    queue = f"{env.queue_name}:arq{i}{'t' if tuned else ''}"
    await _arq_enqueue_loop(redis_url, queue, m)
    options = TUNED_ARQ if tuned else ("--max-jobs", str(CONCURRENCY),
                                       "--poll-delay", str(POLL_DELAY_S))
    arq = Proc(
        [PYTHON, "-m", "benchmarks.arq_noop", redis_url, queue, *options],
        env=env.env(), log_path=env.root / f"arq-noop-{i}{'-tuned' if tuned else ''}.log",
    )
    try:
        prog = drain(arq, r, queue, m, timeout_s=max(600, m / 50))
        arq.wait(60)
    finally:
        arq.stop()
    return prog.rate()


async def _ours_round(env: BenchEnv, wb: Workbench, r: sync_redis.Redis, m: int, i: int,
                      *, sample_rss: bool = False) -> tuple[float, Progress]:
    if m:
        urls = [f"http://round{i}.example.org/item/{k}" for k in range(m)]
        await wb.submit(urls, pipeline="noop", name=f"bench-noop-round-{i}")
    worker = worker_proc(env, "--processes", "1", "--burst", "--concurrency", str(CONCURRENCY),
                         name=f"noop-worker-{i}")
    total = int(r.zcard(env.queue_name))
    try:
        prog = drain(worker, r, env.queue_name, total, timeout_s=max(600, total / 50),
                     sample_rss=sample_rss)
        worker.wait(60)
    finally:
        worker.stop()
    return prog.rate(), prog


async def _run(env: BenchEnv, n: int, round_n: int, rounds: int) -> list[Figure]:
    figures: list[Figure] = []
    wb = Workbench(**env.settings())
    try:
        # warm up: migrations, the embedded Redis, connection pools (the ARQ loop gets an open pool)
        warm = await wb.submit(["http://example.org/warm"], pipeline="noop")
        await warm.cancel()
        redis_url = await redis_url_for(wb.settings)
        r = sync_redis.Redis.from_url(redis_url)

        # ---- no-op throughput: alternating rounds of raw ARQ and workbench, same Redis
        pairs, tuned_pairs = [], []
        for i in range(rounds):
            log(f"round {i + 1}/{rounds}: raw ARQ no-op worker, {round_n:,} jobs")
            arq_rate = await _arq_round(env, redis_url, r, round_n, i)
            log(f"round {i + 1}/{rounds}: raw ARQ tuned no-op worker, {round_n:,} jobs")
            tuned_rate = await _arq_round(env, redis_url, r, round_n, i, tuned=True)
            log(f"round {i + 1}/{rounds}: workbench no-op worker, {round_n:,} items")
            wb_rate, _ = await _ours_round(env, wb, r, round_n, i)
            pairs.append((wb_rate, arq_rate))
            tuned_pairs.append((wb_rate, tuned_rate))
            log(f"  workbench {wb_rate:,.0f} items/s, raw ARQ {arq_rate:,.0f} jobs/s, "
                f"tuned {tuned_rate:,.0f} jobs/s")

        # ---- submit N vs an enqueue_job loop (ARQ's jobs in their own Redis db, then dropped)
        log(f"submitting {n:,} URLs")
        urls = [f"http://host{i % 97}.example.org/articles/{i}?ref=bench" for i in range(n)]
        t0 = time.perf_counter()
        batch = await wb.submit(urls, pipeline="noop", name="bench-noop")
        submit_s = time.perf_counter() - t0
        log(f"ARQ enqueue_job loop of {n:,} jobs")
        loop_url = redis_url.replace("db=0", "db=1") if "db=0" in redis_url else redis_url
        arq_s = await _arq_enqueue_loop(loop_url, f"{env.queue_name}:loop", n)
        sync_redis.Redis.from_url(loop_url).flushdb()
        speedup = ratio(arq_s, submit_s)
        figures.append(Figure(
            f"submit {n:,} URLs (ledger + queue)", "an ARQ enqueue_job loop", "≤ 3 s, ≥ 10×",
            f"{submit_s:.2f} s, {fmt_x(speedup)}", submit_s <= 3 and speedup >= 10,
            f"workbench {n / submit_s:,.0f} URLs/s ({submit_s:.2f} s: validate, normalize, "
            f"dedupe, ledger insert, enqueue); ARQ loop {n / arq_s:,.0f} jobs/s ({arq_s:.1f} s)",
        ))
        log(figures[-1].line())

        counts_queued = await _timed_counts(batch)

        # ---- the N-item batch through one worker: throughput again, and its memory
        log(f"workbench no-op worker over the {n:,}-item batch (RSS sampled)")
        big_rate, prog = await _ours_round(env, wb, r, 0, rounds, sample_rss=True)
        counts = await batch.counts()
        if counts["done"] != n:
            raise RuntimeError(f"no-op batch did not finish cleanly: {counts}")
        ratios = sorted(w / a for w, a in pairs)
        x = ratios[len(ratios) // 2]
        tuned_ratios = sorted(w / a for w, a in tuned_pairs)
        tx = tuned_ratios[len(tuned_ratios) // 2]
        figures.append(Figure(
            "no-op pipeline items/s, one worker process",
            "raw ARQ no-op jobs/s, same Redis, same process count", "≥ 1.5×",
            fmt_x(x), x >= 1.5,
            f"median of {rounds} alternating rounds of {round_n:,}: "
            + "; ".join(f"{w:,.0f} vs {a:,.0f}" for w, a in pairs)
            + f" (workbench items/s, ledger writes included, vs raw ARQ jobs/s); both "
            f"max_jobs={CONCURRENCY}, poll delay {POLL_DELAY_S}s, steady state 10→90 %; "
            f"workbench over the {n:,}-item batch: {big_rate:,.0f} items/s",
        ))
        log(figures[-1].line())
        figures.append(Figure(
            "no-op pipeline items/s, one worker process",
            f"raw ARQ tuned (max_jobs 100, poll delay 0.05 s, keep_result 60 s, {loop_name()}), "
            "same Redis, same process count", "≥ 1.0×", fmt_x(tx), tx >= 1.0,
            f"median of {rounds} alternating rounds of {round_n:,}: "
            + "; ".join(f"{w:,.0f} vs {a:,.0f}" for w, a in tuned_pairs)
            + f" (workbench items/s at its defaults, max_jobs={CONCURRENCY}, ledger writes "
            "included, vs tuned raw ARQ jobs/s); steady state 10→90 %",
        ))
        log(figures[-1].line())

        # ---- counts() on the N-item batch (median of 15), queued and done
        counts_done = await _timed_counts(batch)
        worst = max(counts_queued, counts_done)
        figures.append(Figure(
            f"counts() on a {n:,}-item batch", "—", "≤ 50 ms", f"{worst * 1000:.1f} ms",
            worst <= 0.050,
            f"median of 15: {counts_queued * 1000:.1f} ms all queued, "
            f"{counts_done * 1000:.1f} ms all done",
        ))
        log(figures[-1].line())

        # ---- results() of N rows
        t0 = time.perf_counter()
        df = await batch.results()
        results_s = time.perf_counter() - t0
        assert len(df) == n, len(df)
        figures.append(Figure(
            f"results() of {n:,} rows", "—", "≤ 2 s", f"{results_s:.2f} s", results_s <= 2,
            f"DataFrame {df.shape[0]:,} × {df.shape[1]} columns",
        ))
        log(figures[-1].line())

        # ---- worker memory over N items
        figures.append(_memory_figure(prog, n))
        log(figures[-1].line())
    finally:
        await wb.close()
    return figures


def _memory_figure(prog: Progress, n: int) -> Figure:
    # drop NaN (process gone) and the first samples of a process still starting up
    rss = [(done, mb) for done, mb in prog.rss if not math.isnan(mb) and done > 0]
    warm_at = min(1000, n // 10)
    base = next((mb for done, mb in rss if done >= warm_at), rss[0][1])
    peak = max(mb for _, mb in rss)
    last = rss[-1][1]
    growth = peak - base
    return Figure(
        f"worker memory over {n:,} items", "—", "RSS growth ≤ 50 MB", f"{growth:+.1f} MB",
        growth <= 50,
        f"no-op pipeline; RSS {rss[0][1]:.0f} MB at start, {base:.0f} MB after {warm_at:,} "
        f"items, peak {peak:.0f} MB, {last:.0f} MB at the end",
    )


