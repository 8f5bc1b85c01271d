"""The ``article`` pipeline on the real corpus served on loopback, beside two anchors:

- the CPU limit: ``cores ÷ single-core trafilatura time per page``, with trafilatura measured in
  this run on the same pages before and after the runs (the mean: the machine's speed drifts
  within minutes), called as the pipeline calls it (``bare_extraction`` with
  ``workbench.pipeline.text.extract.EXTRACT_OPTIONS`` on the decoded text). Our figure is the
  steady-state pages/s (10 % → 90 % of the batch, the mean of our two runs), so start-up does
  not count against it.
- trafilatura's own CLI in batch mode on the same URLs (``--input-file``, ``--parallel 16``
  download threads, ``SLEEP_TIME = 0`` and ``SSRF_PROTECTION = off`` in a config file so it
  neither sleeps per host nor refuses loopback, and ``--precision --with-metadata`` so it
  extracts as the pipeline does). Both are timed end to end from a cold start: process start to
  the last page, our worker included (``python -m workbench.worker --burst``, default processes).
  Each runs twice, in the order ours, CLI, CLI, ours (each of ours on a fresh ledger and Redis),
  and the figure is the ratio of the totals: the machine's speed drifts within a run, and one
  run of each in a fixed order put the drift on one side (benchmarks/NOTES.md, session 15).

CPU is accounted per process with psutil over the same steady window (issue 13): the worker's own
processes (the event loop: fetch, ledger, queue) and the extraction processes (the CPU pool and
its fork server), each per page and beside trafilatura's single-core time, and how busy they kept
the cores (pages/s × CPU per page ÷ cores). The pages are on loopback, so the run turns off the
fetcher's refusal of non-public addresses (``block_private_addresses``), as a user crawling an
intranet would.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import trafilatura

from workbench import Workbench
from workbench.pipeline.cpu_child import limit_blas_threads
from workbench.pipeline.fetch.charset import choose_encoding
from workbench.pipeline.text.article import extract_and_analyse
from workbench.pipeline.text.extract import EXTRACT_OPTIONS

from .common import PYTHON, BenchEnv, Figure, Proc, fmt_x, log, wait_until, worker_proc
from .corpus_site import CorpusPage, load_corpus


class Site:
    """The corpus server in its own process."""

    def __init__(self, env: BenchEnv, corpus: Path, repeat: int):
        ready = env.root / f"site-{repeat}.json"
        self.proc = Proc(
            [PYTHON, "-m", "benchmarks.corpus_site", "--corpus", str(corpus),
             "--repeat", str(repeat), "--ready-file", str(ready)],
            env=env.env(), log_path=env.root / "site.log",
        )
        wait_until(lambda: (ready.exists() and ready.stat().st_size > 0) or not self.proc.alive(),
                   60, "the corpus site")
        if not self.proc.alive():
            raise RuntimeError(f"corpus site failed:\n{self.proc.tail()}")
        info = json.loads(ready.read_text())
        self.urls: list[str] = info["urls"]
        self.base: str = info["base"]
        self.domains: int = info["domains"]

    def hits(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"{self.base}/_hits", timeout=10) as resp:
            return int(json.loads(resp.read())["hits"])

    def stop(self) -> None:
        self.proc.stop()


def single_core_ms(pages: list[CorpusPage], *, pipeline: bool = True) -> tuple[float, float]:
    """Mean ms per page, in this one process: trafilatura as the pipeline calls it, and the
    pipeline's whole CPU step (extraction + analysis; NaN unless ``pipeline``). One warm-up
    pass, then a timed pass. One BLAS thread, as in the pool's processes: OpenBLAS's own
    threads spin after language detection's product, and ``process_time`` counted their spin
    (25.0 ms/page for the whole step, 16.9-17.1 with one thread; benchmarks/NOTES.md)."""
    limit_blas_threads()
    docs = [(p.body.decode(choose_encoding(p.body, "text/html"), "replace"), p.url) for p in pages]
    out = []
    fns: list[Any] = [
        lambda html, url: trafilatura.bare_extraction(html, url=url, **EXTRACT_OPTIONS)]
    if pipeline:
        fns.append(extract_and_analyse)
    for fn in fns:
        for html, url in docs[:20]:
            fn(html, url)
        t0 = time.process_time()
        for html, url in docs:
            fn(html, url)
        out.append(1000 * (time.process_time() - t0) / len(docs))
    return out[0], out[1] if pipeline else float("nan")


#: How often our run's counts are read, and, once at most ``LAST_ITEMS`` items are left, how
#: often the last ones are: a run ends when its last item settles, and reading the counts every
#: 0.25 s to the end made ours ~0.125 s later than it was on average (the CLI's end is its exit).
#: A 20 ms poll all along costs ~1 % of the machine (benchmarks/NOTES.md, session 15); over the
#: last items, ~40 polls of ~0.6 ms.
POLL_S = 0.25
LAST_POLL_S = 0.02
LAST_ITEMS = 64


async def _run_ours(env: BenchEnv, urls: list[str]) -> dict[str, Any]:
    """Cold: submit, then start the worker; until every item settled."""
    wb = Workbench(**env.settings())
    try:
        t0 = time.perf_counter()
        batch = await wb.submit(urls, pipeline="article", name="bench-article")
        worker = worker_proc(env, "--burst", name="article-worker")
        samples: list[tuple[float, int]] = []
        cpu: list[tuple[int, dict[int, tuple[bool, float]]]] = []
        seen: dict[int, tuple[bool, float]] = {}
        sampled = 0.0
        try:
            while True:
                counts = await batch.counts()
                now = time.perf_counter()
                settled = counts["done"] + counts["failed"] + counts["cancelled"]
                samples.append((now, settled))
                if now - sampled >= POLL_S:  # psutil's walk costs ~1 ms: not on every last poll
                    sampled = now
                    _tree_cpu(worker.ps, seen)
                    cpu.append((settled, dict(seen)))
                if settled == len(urls):
                    break
                if not worker.alive():
                    raise RuntimeError(f"worker exited early: {counts}\n{worker.tail()}")
                await asyncio.sleep(POLL_S if len(urls) - settled > LAST_ITEMS else LAST_POLL_S)
            wall = time.perf_counter() - t0
            worker.wait(120)
        finally:
            worker.stop()
        failures = await batch.failures()
        return {
            "wall_s": wall,
            "steady": _steady_rate(samples, len(urls)),
            "cpu_ms": _steady_cpu_ms(cpu, len(urls)),
            "counts": counts,
            "errors": Counter(failures["error_type"]).most_common(5),
        }
    finally:
        await wb.close()


def _tree_cpu(root: psutil.Process, seen: dict[int, tuple[bool, float]]) -> None:
    """CPU seconds so far of every process under ``root``: (is a worker process, seconds)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for proc in procs:
        try:
            cmd = " ".join(proc.cmdline())
            t = proc.cpu_times()
        except psutil.Error:
            continue  # gone: its last sample stands
        if "resource_tracker" in cmd:
            continue
        # the worker processes: the supervisor and its spawned children (not the fork server's)
        seen[proc.pid] = (proc.pid == root.pid or "spawn_main" in cmd, t.user + t.system)


def _steady_cpu_ms(
    cpu: list[tuple[int, dict[int, tuple[bool, float]]]], total: int
) -> dict[str, float]:
    """ms of CPU per page from 10 % to 90 % settled: worker processes, extraction, all."""
    def at(n: float) -> tuple[int, dict[int, tuple[bool, float]]]:
        return next((c for c in cpu if c[0] >= n), cpu[-1])

    (k0, c0), (k1, c1) = at(0.1 * total), at(0.9 * total)
    pages = max(1, k1 - k0)
    main = sum(s - c0.get(pid, (w, 0.0))[1] for pid, (w, s) in c1.items() if w)
    rest = sum(s - c0.get(pid, (w, 0.0))[1] for pid, (w, s) in c1.items() if not w)
    return {"main": 1000 * main / pages, "extraction": 1000 * rest / pages,
            "all": 1000 * (main + rest) / pages}


def _steady_rate(samples: list[tuple[float, int]], total: int) -> float:
    def at(n: float) -> float:
        prev = samples[0]
        for t, k in samples:
            if k >= n:
                t0, k0 = prev
                return t if k == k0 else t0 + (t - t0) * (n - k0) / (k - k0)
            prev = (t, k)
        return samples[-1][0]

    lo, hi = at(0.1 * total), at(0.9 * total)
    return 0.8 * total / (hi - lo) if hi > lo else float("nan")


def _cli_config(path: Path) -> Path:
    cfg = configparser.ConfigParser()
    cfg.read(Path(trafilatura.__file__).parent / "settings.cfg")
    cfg["DEFAULT"]["SLEEP_TIME"] = "0"  # no per-host sleep
    cfg["DEFAULT"]["SSRF_PROTECTION"] = "off"  # the pages are on loopback
    with open(path, "w") as fh:
        cfg.write(fh)
    return path


def _run_cli(env: BenchEnv, urls: list[str], parallel: int = 16) -> dict[str, Any]:
    listing = env.root / "cli-urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    out = env.root / "cli-out"
    shutil.rmtree(out, ignore_errors=True)
    exe = Path(sys.executable).parent / "trafilatura"
    cmd = [str(exe), "--input-file", str(listing), "--parallel", str(parallel),
           "--output-dir", str(out), "--precision", "--with-metadata",
           "--config-file", str(_cli_config(env.root / "trafilatura.cfg"))]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=env.root, timeout=3600,
                          check=False)
    wall = time.perf_counter() - t0
    extracted = sum(1 for _ in out.rglob("*") if _.is_file()) if out.exists() else 0
    return {"wall_s": wall, "extracted": extracted, "rc": proc.returncode,
            "stderr": proc.stderr[-500:], "cmd": " ".join(cmd[1:])}


def run(env: BenchEnv, corpus: Path, repeat: int) -> list[Figure]:
    env.extra.setdefault("block_private_addresses", "false")  # the corpus is served on loopback
    pages = load_corpus(corpus)
    cores = os.cpu_count() or 1
    log(f"single-core trafilatura on {len(pages)} pages")
    traf_before, pipeline_ms = single_core_ms(pages)
    site = Site(env, corpus, repeat)
    try:
        n = len(site.urls)
        log(f"article pipeline on {n} URLs ({len(pages)} pages x {repeat}, {site.domains} hosts)")
        ours = asyncio.run(_run_ours(env, site.urls))
        log(f"ours: {ours}")
        clis = []
        for _ in range(2):
            log(f"trafilatura CLI on the same {n} URLs")
            clis.append(_run_cli(env, site.urls))
            log(f"cli: { {k: v for k, v in clis[-1].items() if k != 'stderr'} }")
        log(f"article pipeline again, on a fresh ledger and Redis ({n} URLs)")
        again = BenchEnv(env.root / "again", extra=dict(env.extra))
        try:
            ours_again = asyncio.run(_run_ours(again, site.urls))
        finally:
            again.stop_redis()
        log(f"ours again: {ours_again}")
    finally:
        site.stop()
    # measured again after the runs: this machine's speed drifts by a quarter within minutes
    # (benchmarks/NOTES.md, session 7), so the anchor is the mean of both measurements
    log(f"single-core trafilatura on {len(pages)} pages, again")
    traf_after, _ = single_core_ms(pages, pipeline=False)
    traf_ms = (traf_before + traf_after) / 2
    limit = cores * 1000 / traf_ms
    runs = (ours, ours_again)
    steady = sum(r["steady"] for r in runs) / 2
    frac = steady / limit
    ours_wall = [r["wall_s"] for r in runs]
    cli_wall = [c["wall_s"] for c in clis]
    x = sum(cli_wall) / sum(ours_wall)
    ours_rate, cli_rate = 2 * n / sum(ours_wall), 2 * n / sum(cli_wall)
    done = [r["counts"]["done"] for r in runs]
    failed = [r["counts"]["failed"] for r in runs]
    cpu = {k: sum(r["cpu_ms"][k] for r in runs) / 2 for k in ("main", "extraction", "all")}
    whole = cpu["all"] / traf_ms
    # the share of the cores the worker's processes used over the steady window: pages/s times
    # CPU ms per page (both the mean of our two runs), over the cores' ms per second
    busy = steady * cpu["all"] / (cores * 1000)
    return [
        Figure(
            "article on the real corpus served locally",
            "CPU limit: cores ÷ single-core trafilatura time", "≥ 0.65", f"{frac:.2f}",
            frac >= 0.65,
            f"{steady:.1f} pages/s steady (10→90 %, the mean of our two runs: "
            f"{ours['steady']:.1f}, {ours_again['steady']:.1f}) on {n} URLs vs limit {limit:.1f} "
            f"pages/s = {cores} cores ÷ {traf_ms:.1f} ms (trafilatura alone, single core, same "
            f"pages, mean of {traf_before:.1f} ms before the runs and {traf_after:.1f} after); "
            f"the pipeline's whole CPU step (extraction + analysis) is {pipeline_ms:.1f} "
            f"ms/page single-core; done {done[0]}, {done[1]}, failed {failed[0]}, {failed[1]} "
            f"{ours['errors'] or ours_again['errors']}",
        ),
        Figure(
            "article on the same URLs", "trafilatura's own CLI batch mode (no per-host sleep)",
            "≥ 1.5×", fmt_x(x), x >= 1.5,
            f"cold start to last page, run in the order ours, CLI, CLI, ours; the ratio of the "
            f"totals: workbench {ours_wall[0]:.1f} + {ours_wall[1]:.1f} s ({ours_rate:.1f} "
            f"pages/s, submit + worker start included) vs trafilatura CLI {cli_wall[0]:.1f} + "
            f"{cli_wall[1]:.1f} s ({cli_rate:.1f} pages/s, {clis[0]['extracted']} files "
            f"written, --parallel 16 --precision --with-metadata, SLEEP_TIME 0)",
        ),
        Figure(
            "article: CPU of the worker's own processes per page",
            "the event loop's share (fetch, page store, ledger, queue)", "≤ 4 ms",
            f"{cpu['main']:.1f} ms", cpu["main"] <= 4,
            f"psutil, steady window 10→90 %, the mean of our two runs ("
            f"{ours['cpu_ms']['main']:.1f}, {ours_again['cpu_ms']['main']:.1f}): "
            f"worker processes {cpu['main']:.1f} ms/page, "
            f"extraction processes {cpu['extraction']:.1f} ms/page, all {cpu['all']:.1f} ms/page",
        ),
        Figure(
            "article: whole-run CPU per page", "single-core trafilatura time per page",
            "≤ 1.3×", fmt_x(whole), whole <= 1.3,
            f"{cpu['all']:.1f} ms/page over every process of the worker (steady window, the mean "
            f"of our two runs) vs "
            f"{traf_ms:.1f} ms trafilatura alone (same run, same pages; {traf_before:.1f} ms "
            f"before the runs, {traf_after:.1f} after)",
        ),
        Figure(
            "article: cores kept busy", "the cores' capacity over the steady window", "≥ 90 %",
            f"{busy:.0%}", busy >= 0.90,
            f"the worker's processes (event loop, extraction processes, fork server): "
            f"{steady:.1f} pages/s × {cpu['all']:.1f} ms of CPU per page ÷ {cores} cores, the "
            f"mean of our two runs, steady window 10→90 % (the corpus site, Redis and this "
            f"benchmark's own reads are the rest of the machine)",
        ),
    ]
