"""Research scale: a million-URL batch end to end, read back in bounded memory (issue 10).

    .venv/bin/python -m benchmarks scale              # 1,000,000 items (~45 min on 2 cores)
    .venv/bin/python -m benchmarks scale --quick      # 100,000 items
    .venv/bin/python -m benchmarks scale --fill       # 1,000,000 items, no worker (~15 min)

One real worker (``python -m workbench.worker --processes 1``) runs ``scale-text``
(``benchmarks/scale_pipeline.py``: ~3 KB of text and a dozen small fields a result, no network,
one item in a hundred failing) over a 100k batch, then over the N-item batch. This process is
the researcher's client; its RSS is sampled every 5 ms by a thread. Measured, in order:

- ``results()`` of the 100k batch: time, and peak RSS growth over the frame's own size
  (``memory_usage(deep=True)``);
- ``submit`` of N URLs from a fresh client process (``benchmarks/scale_submit.py``): time and
  its peak RSS (the list of URLs included);
- ``counts()`` on the N items, all queued and all settled (median of 15);
- the worker over the N items: items/s around item 100,000 and around item N - 100,000 (±2 %
  of N, read from the queue's length), its RSS growth after the first 10,000 items; meanwhile
  the notebook monitor's ``refresh()`` every few seconds (CPU of this process per tick, the
  ledger's SQLite thread included: the worst of the ticks);
- ``status()``, ``results(columns=<five small fields>)`` and ``iter_results()`` over the whole
  batch: time and peak RSS growth (``iter_results`` in a fresh process);
- ``python -m workbench results B -o out.parquet`` in a subprocess: its peak RSS and rows/s;
- ``cancel()`` of a second N-item batch, all queued (ledger + Redis).

With ``--fill`` both batches are completed without a worker, by the ledger's own claim and
completion statements (``benchmarks/scale_fill.py``: the same rows a worker writes, 5,000 items
a transaction), so the read side can be measured at a million items in minutes: there is no
worker figure then, and the monitor ticks while the filler writes.

``iter_results`` runs in a fresh process (``benchmarks/scale_iter.py``: the reads before it
would have left memory behind that it reuses unseen), with a loop that lets each chunk go
before asking for the next (``del chunk``); the figure of a loop that keeps it until the next
one is given beside (that loop holds two chunks at the peak, whatever the library does:
2 × ~180 MB with this pipeline's 50,000-row chunks).

"Today" is the figure the issue measured before this work (same machine); where this run can
measure the old way, it does so beside the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import redis as sync_redis

from workbench import Workbench
from workbench.queue.jobs import redis_url_for

from . import scale_pipeline  # noqa: F401 - registers "scale-text" in this process
from .common import PYTHON, REPO, BenchEnv, Figure, log, worker_proc

PIPELINE = "scale-text"
SMALL_FIELDS = ["title", "language", "word_count", "date", "author"]
SMALL_N = 100_000


class PeakRSS:
    """This process's RSS sampled every 5 ms while ``measure`` runs (MB)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0.0

    def rss(self) -> float:
        return self.proc.memory_info().rss / 2**20

    async def measure(self, work: Callable[[], Awaitable[Any]]) -> tuple[Any, float, float, float]:
        """(result, seconds, RSS at start, peak RSS) of ``await work()``."""
        import gc

        gc.collect()
        start = self.peak = self.rss()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(0.005)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        try:
            out = await work()
        finally:
            elapsed = time.perf_counter() - t0
            stop.set()
            thread.join()
        return out, elapsed, start, self.peak


def _urls(tag: str, n: int) -> list[str]:
    return [f"http://host{i % 97}.example.org/{tag}/{i}" for i in range(n)]


async def _timed_counts(batch: Any, repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await batch.counts()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def _drain(env: BenchEnv, r: sync_redis.Redis, total: int, *, monitor: Any = None,
                 name: str) -> dict[str, Any]:
    """Run a burst worker until the queue is empty; sample progress, its RSS and the monitor."""
    worker = worker_proc(env, "--processes", "1", "--burst", "--concurrency", "32",
                         "--pipelines", "benchmarks.scale_pipeline", name=name)
    samples: list[tuple[float, int]] = []
    cpu: list[tuple[float, int]] = []  # (worker CPU seconds, items finished)
    rss: list[tuple[int, float]] = []
    ticks: list[float] = []
    next_tick = time.monotonic() + 5
    try:
        while True:
            left = int(r.zcard(env.queue_name))
            done = total - left
            samples.append((time.perf_counter(), done))
            cpu.append((worker.cpu_s(), done))
            rss.append((done, worker.rss_mb()))
            if left == 0:
                break
            if not worker.alive():
                raise RuntimeError(f"worker exited with {left} jobs left:\n{worker.tail()}")
            if monitor is not None and time.monotonic() >= next_tick:
                c0 = time.process_time()
                await monitor.refresh()
                ticks.append(time.process_time() - c0)
                next_tick = time.monotonic() + 5
            await asyncio.sleep(0.2)
        await asyncio.to_thread(worker.wait, 120)
    finally:
        worker.stop()
    return {"samples": samples, "cpu": [(c, n) for c, n in cpu if not math.isnan(c)],
            "rss": rss, "ticks": ticks}


def _rate_at(samples: list[tuple[float, int]], center: int, half: int) -> float:
    def time_at(done: float) -> float:
        prev = samples[0]
        for t, n in samples:
            if n >= done:
                t0, n0 = prev
                return t if n == n0 else t0 + (t - t0) * (done - n0) / (n - n0)
            prev = (t, n)
        return samples[-1][0]

    lo, hi = max(0, center - half), center + half
    t_lo, t_hi = time_at(lo), time_at(hi)
    return (hi - lo) / (t_hi - t_lo) if t_hi > t_lo else float("nan")


async def _fill(env: BenchEnv, batch_id: str, *, monitor: Any = None) -> dict[str, Any]:
    """Complete a batch by ``benchmarks.scale_fill`` (a subprocess); the monitor ticks."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "benchmarks.scale_fill", batch_id, env=env.env(), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    ticks: list[float] = []
    waiting = asyncio.ensure_future(proc.communicate())
    while not waiting.done():
        await asyncio.wait([waiting], timeout=5)
        if monitor is not None and not waiting.done():
            c0 = time.process_time()
            await monitor.refresh()
            ticks.append(time.process_time() - c0)
    out, err = waiting.result()
    if proc.returncode != 0:
        raise RuntimeError(f"scale_fill failed: {err.decode()[-3000:]}")
    info = json.loads(out.decode().strip().splitlines()[-1])
    return {**info, "ticks": ticks}


def _sampled(args: list[str], env: BenchEnv, cpu: list[float] | None = None
             ) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of a subprocess, its RSS sampled every 5 ms (and its
    CPU seconds, the last sample, appended to ``cpu``)."""
    proc = subprocess.Popen(args, env=env.env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0.0
    t0 = time.perf_counter()
    used = 0.0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, ps.memory_info().rss / 2**20)
            times = ps.cpu_times()
            used = times.user + times.system
        time.sleep(0.005)
    if cpu is not None:
        cpu.append(used)
    elapsed = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[1:])} failed: {err.decode()[-3000:]}")
    return elapsed, peak, out.decode()


def _submit_fresh(env: BenchEnv, n: int, tag: str) -> tuple[str, float, float, float]:
    """(batch id, submit seconds, RSS before submit, peak RSS) of a fresh client process."""
    _, peak, out = _sampled([PYTHON, "-m", "benchmarks.scale_submit", str(n), tag], env)
    info = json.loads(out.strip().splitlines()[-1])
    return info["batch_id"], info["seconds"], info["rss_before_mb"], peak


def _iterate_fresh(env: BenchEnv, batch_id: str, mode: str) -> dict[str, Any]:
    """``benchmarks.scale_iter`` in a subprocess: its rows, seconds, CPU and RSS."""
    _, _, out = _sampled([PYTHON, "-m", "benchmarks.scale_iter", batch_id, mode], env)
    return dict(json.loads(out.strip().splitlines()[-1]))


def _cli_parquet(env: BenchEnv, batch_id: str, out: Path) -> tuple[float, float, int, float]:
    """(seconds, peak RSS MB, rows, CPU seconds) of ``python -m workbench results B -o
    out.parquet``."""
    import pyarrow.parquet as pq

    cpu: list[float] = []
    secs, peak, _ = _sampled([PYTHON, "-m", "workbench", "results", batch_id, "-o", str(out)],
                             env, cpu)
    return secs, peak, pq.ParquetFile(out).metadata.num_rows, cpu[0]


async def _worker_figures(env: BenchEnv, r: sync_redis.Redis, n: int, batch: Any, monitor: Any,
                          add: Callable[[Figure], None]) -> dict[str, Any]:
    """One worker over the N items: its items/s early and late, its RSS (a figure)."""
    log(f"the worker over the {n:,}-item batch (monitor refreshing every 5 s)")
    run_ = await _drain(env, r, n, monitor=monitor, name="worker-big")
    counts = await batch.counts()
    half = max(1, n // 50)
    early, late = min(100_000, n // 10), max(n - 100_000, n * 9 // 10)
    rate_early = _rate_at(run_["samples"], early, half)
    rate_late = _rate_at(run_["samples"], late, half)
    ratio_ = rate_late / rate_early
    # the worker's CPU per item over the same windows: what other load on the machine
    # does not change (items/s does)
    ms_early = 1000 / _rate_at(run_["cpu"], early, half)
    ms_late = 1000 / _rate_at(run_["cpu"], late, half)
    rss = [(d, mb) for d, mb in run_["rss"] if not math.isnan(mb) and d > 0]
    base = next((mb for d, mb in rss if d >= min(10_000, n // 10)), rss[0][1])
    growth = max(mb for _, mb in rss) - base
    add(Figure(f"worker items/s at item {late:,} vs {early:,}", "—",
               "within 10 %, RSS growth ≤ 50 MB", f"{ratio_:.2f}×, {growth:+.0f} MB",
               ratio_ >= 0.9 and growth <= 50,
               f"{rate_early:,.0f} items/s around item {early:,}, {rate_late:,.0f} around "
               f"{late:,} (±{half:,}); worker CPU {ms_early:.2f} ms/item around "
               f"{early:,}, {ms_late:.2f} around {late:,}; worker RSS {base:,.0f} MB "
               f"after 10k items, peak "
               f"{base + growth:,.0f} MB; {dict(counts)}"))
    return run_


def run(env: BenchEnv, n: int, *, fill: bool = False) -> list[Figure]:
    return asyncio.run(_run(env, n, fill))


async def _run(env: BenchEnv, n: int, fill: bool = False) -> list[Figure]:
    from workbench.notebook.monitor import BatchMonitor

    figures: list[Figure] = []
    probe = PeakRSS()
    small_n = min(SMALL_N, n)

    def add(fig: Figure) -> None:
        figures.append(fig)
        log(fig.line())

    wb = Workbench(**env.settings())
    try:
        warm = await wb.submit(["http://example.org/warm/0"], pipeline="noop")
        await warm.cancel()
        r = sync_redis.Redis.from_url(await redis_url_for(wb.settings))

        # ---- the 100k batch: results() memory against the frame it returns
        log(f"{small_n:,}-item batch " + ("completed by scale_fill" if fill
                                           else "through one worker"))
        small = await wb.submit(_urls("small", small_n), pipeline=PIPELINE, name="scale-small")
        if fill:
            await _fill(env, small.id)
        else:
            await _drain(env, r, small_n, name="worker-small")
        df, secs, start, peak = await probe.measure(small.results)
        held = df.memory_usage(deep=True).sum() / 2**20
        x = (peak - start) / held
        add(Figure(f"results() of {len(df):,} rows", "today: ~5× (peak 1.8 GB for 100k)",
                   "memory ≤ 2.5× the data it holds", f"{x:.2f}×", x <= 2.5,
                   f"{secs:.1f} s; peak RSS +{peak - start:,.0f} MB for a frame of "
                   f"{held:,.0f} MB ({df.shape[0]:,} × {df.shape[1]})"))
        del df

        # ---- submit N, from a fresh client process
        log(f"submitting {n:,} URLs")
        batch_id, secs, start, peak = await asyncio.to_thread(_submit_fresh, env, n, "big")
        batch = await wb.get_batch(batch_id)
        add(Figure(f"submit {n:,} URLs", "today: 18 s (1M)", "≤ 15 s, peak client RSS ≤ 600 MB",
                   f"{secs:.1f} s, {peak:,.0f} MB", secs <= 15 and peak <= 600,
                   f"{n / secs:,.0f} URLs/s; a fresh client process (benchmarks.scale_submit): "
                   f"RSS {start:,.0f} MB with its list of URLs built, peak {peak:,.0f} MB"))
        counts_queued = await _timed_counts(batch)

        # ---- the worker over N (or the filler), the monitor watching
        monitor = BatchMonitor(batch)
        if fill:
            log(f"completing the {n:,}-item batch by scale_fill (monitor refreshing every 5 s)")
            run_ = await _fill(env, batch.id, monitor=monitor)
            log(f"filled: {run_['done']:,} done, {run_['failed']:,} failed in "
                f"{run_['seconds']:.0f} s")
        else:
            run_ = await _worker_figures(env, r, n, batch, monitor, add)
        ticks = run_["ticks"]
        worst = max(ticks) if ticks else float("nan")
        add(Figure(f"monitor refresh on the {n:,}-item batch", "—", "≤ 50 ms CPU per tick",
                   f"{worst * 1000:.0f} ms", worst <= 0.050,
                   f"{len(ticks)} ticks while the {'filler' if fill else 'worker'} ran, CPU of "
                   f"this process per refresh(): median {statistics.median(ticks) * 1000:.0f} "
                   f"ms, worst "
                   f"{worst * 1000:.0f} ms" if ticks else "no tick"))
        counts_done = await _timed_counts(batch)
        worst_counts = max(counts_queued, counts_done)
        add(Figure(f"counts() on {n:,} items", "today: 72 ms (1M)", "≤ 50 ms",
                   f"{worst_counts * 1000:.1f} ms", worst_counts <= 0.050,
                   f"median of 15: {counts_queued * 1000:.1f} ms all queued, "
                   f"{counts_done * 1000:.1f} ms all settled"))

        # ---- reading N back
        df, secs, start, peak = await probe.measure(batch.status)
        add(Figure(f"status() of {n:,} items", "today: 15 s (1M)", "≤ 5 s", f"{secs:.1f} s",
                   secs <= 5, f"peak RSS +{peak - start:,.0f} MB; frame "
                   f"{df.memory_usage(deep=True).sum() / 2**20:,.0f} MB"))
        del df
        df, secs, start, peak = await probe.measure(
            lambda: batch.results(columns=SMALL_FIELDS))
        add(Figure(f"results(columns=<5 small fields>) of {len(df):,} rows",
                   "today: results() then select (~18 GB at 1M)", "≤ 10 s, RSS growth ≤ 1 GB",
                   f"{secs:.1f} s, +{peak - start:,.0f} MB",
                   secs <= 10 and peak - start <= 1024,
                   f"columns {', '.join(SMALL_FIELDS)} + item_id, url, provenance; frame "
                   f"{df.memory_usage(deep=True).sum() / 2**20:,.0f} MB"))
        del df

        # in fresh processes: reads before it left memory behind that it would reuse unseen
        drop = await asyncio.to_thread(_iterate_fresh, env, batch.id, "drop")
        hold = await asyncio.to_thread(_iterate_fresh, env, batch.id, "hold")
        grew, held = drop["peak_mb"] - drop["start_mb"], hold["peak_mb"] - hold["start_mb"]
        rows = drop["rows"]
        add(Figure(f"iter_results() over {rows:,} rows", "today: results() (~18 GB at 1M)",
                   "RSS growth ≤ 300 MB",
                   f"+{grew:,.0f} MB (+{held:,.0f} MB holding each chunk until the next)",
                   grew <= 300,
                   f"chunks of 50,000 (the default), a fresh process each "
                   f"(benchmarks.scale_iter): a loop that lets each chunk go (del chunk) "
                   f"{drop['seconds']:.1f} s, {drop['cpu']:.1f} s of CPU "
                   f"({rows / drop['cpu']:,.0f} rows per CPU-second), peak RSS +{grew:,.0f} MB "
                   f"over {drop['start_mb']:,.0f} MB; one that keeps it until the next is "
                   f"read (two chunks alive at the peak, whatever the library does): "
                   f"+{held:,.0f} MB, {hold['seconds']:.1f} s"))

        log("python -m workbench results -o out.parquet")
        out = env.root / "out.parquet"
        secs, peak, rows, cpu_s = await asyncio.to_thread(_cli_parquet, env, batch.id, out)
        load = psutil.getloadavg()[0]
        rate = rows / secs
        add(Figure(f"Parquet export of {rows:,} rows, all columns (CLI)",
                   "today: peak 1.8 GB and 15k rows/s at 100k", "peak RSS ≤ 400 MB, "
                   "≥ 50,000 rows/s", f"{peak:,.0f} MB, {rate:,.0f} rows/s",
                   peak <= 400 and rate >= 50_000,
                   f"python -m workbench results B -o out.parquet: {secs:.1f} s, "
                   f"{cpu_s:.1f} s of CPU ({rows / cpu_s:,.0f} rows per CPU-second; the "
                   f"process start and imports included), load average {load:.1f} on "
                   f"{psutil.cpu_count()} cores; {out.stat().st_size / 2**20:,.0f} MB written"))
        out.unlink()

        # ---- cancel N queued items
        log(f"submitting {n:,} more URLs to cancel them")
        doomed_id, *_ = await asyncio.to_thread(_submit_fresh, env, n, "cancel")
        doomed = await wb.get_batch(doomed_id)
        await doomed.counts()
        cancelled, secs, _, _ = await probe.measure(doomed.cancel)
        add(Figure(f"cancel() of {n:,} queued items", "today: 10 s (1M)", "≤ 5 s",
                   f"{secs:.1f} s", secs <= 5 and cancelled == n,
                   f"{cancelled:,} cancelled (ledger update and Redis removal)"))
    finally:
        await wb.close()
    return figures
