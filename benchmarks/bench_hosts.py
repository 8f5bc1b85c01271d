"""Politeness costs nothing where it is not needed (issue 11).

Three measurements:

- **Two worker processes keep one schedule per host** (the issue's first targets). Two real
  ``python -m workbench.worker`` processes (``--processes 1 --concurrency 16``), default
  settings, one batch: 8 public and 4 ``/private/`` pages of a host (127.0.3.1) whose robots.txt
  says ``Disallow: /private/`` and ``Crawl-delay: 1``, and 20 pages of a host (127.0.3.2) that
  answers 429 (no Retry-After) to any request less than 0.5 s after the one before. Figures, as
  the sites saw them: requests to ``/private/`` (target 0), the smallest gap between two
  requests to the Crawl-delay host (>= 0.95 s), the 429s (<= 6) and the limited host's items
  ``done`` (20). On SQLite + the embedded Redis, and on PostgreSQL + a shared Redis when
  ``WORKBENCH_BENCH_DATABASE_URL`` (an existing database; a fresh one is created beside it) and
  ``WORKBENCH_BENCH_REDIS_URL`` are set (or the tests' ``WORKBENCH_TEST_*`` twins); the run
  takes an empty database index of that Redis and empties it after.
- **A slow host and a paced host do not stall the others.** 50 hosts on their own loopback
  addresses (127.0.2.1-50), 20 synthetic articles each: 48 ordinary hosts, one answering in 2 s,
  one whose robots.txt says ``Crawl-delay: 2``. The 48 hosts' items are one batch, the two hosts'
  another, submitted first (at the head of the queue: the worst case). Figure: the time the 48
  hosts' batch takes to settle beside the two, over the time it takes alone. Items of the two
  hosts wait in the queue (deferred), not in worker slots, so the ratio should be ~1.
- **The article corpus loses little to pacing.** ``bench_article``'s corpus (one loopback
  address per original domain) with the default politeness (robots.txt, adaptive pacing) vs
  pacing turned off (``obey_robots=false``, per-host concurrency and target 1000), alternating,
  medians of the steady pages/s (10 → 90 %).

``python -m benchmarks hosts [--corpus DIR]`` runs them all (the corpus part with ``--corpus``) and
writes the "Politeness" section of ``RESULTS.md``; ``python -m benchmarks.bench_hosts [--corpus
DIR] [--rounds N] [--skip-hosts] [--skip-workers]`` only prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from workbench import Workbench
from workbench.queue.hosts import host_rows

from .common import BenchEnv, Figure, bench_env, log, worker_proc
from .corpus_site import synthetic_article

HOSTS = 50
PER_HOST = 20
SECTION_START = "<!-- hosts: written by python -m benchmarks hosts -->"
SECTION_END = "<!-- /hosts -->"
SLOW_S = 2.0
CRAWL_DELAY = 2


class Hosts:
    """50 loopback hosts in this process: 48 ordinary, one slow, one with a Crawl-delay."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.bases: list[str] = []

    async def start(self) -> Hosts:
        for i in range(1, HOSTS + 1):
            app = web.Application()
            app["kind"] = "slow" if i == HOSTS - 1 else "delayed" if i == HOSTS else "ok"
            app.router.add_get("/robots.txt", self._robots)
            app.router.add_get("/a/{n}", self._article)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, f"127.0.2.{i}", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.runners.append(runner)
            self.bases.append(f"http://127.0.2.{i}:{port}")
        return self

    @staticmethod
    async def _robots(request: web.Request) -> web.Response:
        if request.app["kind"] == "delayed":
            return web.Response(text=f"User-agent: *\nCrawl-delay: {CRAWL_DELAY}\n")
        return web.Response(status=404)

    @staticmethod
    async def _article(request: web.Request) -> web.Response:
        if request.app["kind"] == "slow":
            await asyncio.sleep(SLOW_S)
        return web.Response(body=synthetic_article(int(request.match_info["n"])),
                            content_type="text/html")

    def urls(self, hosts: range) -> list[str]:
        return [f"{self.bases[h]}/a/{n}" for h in hosts for n in range(PER_HOST)]

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _settle(wb: Workbench, batch_id: str, timeout_s: float = 600) -> float:
    batch = await wb.get_batch(batch_id)
    t0 = time.perf_counter()
    while True:
        counts = await batch.counts()
        if counts["queued"] + counts["running"] == 0:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"batch not settled: {counts}")
        await asyncio.sleep(0.1)


async def _hosts_round(env: BenchEnv, hosts: Hosts, *, with_two: bool) -> dict[str, Any]:
    wb = Workbench(**env.settings())
    try:
        two = None
        if with_two:  # first in the queue: the worst case for the others
            two = await wb.submit(hosts.urls(range(HOSTS - 2, HOSTS)), pipeline="article")
        ordinary = await wb.submit(hosts.urls(range(HOSTS - 2)), pipeline="article")
        worker = worker_proc(env, name="hosts-worker")
        try:
            ordinary_s = await _settle(wb, ordinary.id)
            two_s = await _settle(wb, two.id) + ordinary_s if two is not None else None
        finally:
            worker.stop()
        counts = await ordinary.counts()
        rows = {r["host"]: r for r in await host_rows(await wb.open_queue(), wb.settings)}
        special = [rows.get(f"127.0.2.{i}", {}) for i in (HOSTS - 1, HOSTS)]
        return {"ordinary_s": ordinary_s, "two_s": two_s, "done": counts["done"],
                "failed": counts["failed"],
                "deferrals": [r.get("deferred", 0) for r in special] if two else None}
    finally:
        await wb.close()


def run_hosts(rounds: int) -> Figure:
    async def main() -> tuple[list[float], list[float], list[dict[str, Any]]]:
        hosts = await Hosts().start()
        alone: list[float] = []
        beside: list[float] = []
        details: list[dict[str, Any]] = []
        try:
            for r in range(rounds):
                for with_two in (False, True):
                    with bench_env() as env:
                        out = await _hosts_round(env, hosts, with_two=with_two)
                    log(f"round {r} {'beside the two' if with_two else 'alone'}: {out}")
                    (beside if with_two else alone).append(out["ordinary_s"])
                    details.append(out)
        finally:
            await hosts.close()
        return alone, beside, details

    alone, beside, details = asyncio.run(main())
    a, b = statistics.median(alone), statistics.median(beside)
    x = b / a
    two_s = [d["two_s"] for d in details if d["two_s"] is not None]
    deferrals = [d["deferrals"] for d in details if d["deferrals"] is not None]
    return Figure(
        "48 ordinary hosts beside a slow one (2 s answers) and a paced one (Crawl-delay 2)",
        "the same 48 hosts alone", "≤ 1.05×", f"{x:.2f}×", x <= 1.05,
        f"{(HOSTS - 2) * PER_HOST} articles on 48 hosts settle in {b:.1f} s beside the two hosts' "
        f"{2 * PER_HOST} items (submitted first) vs {a:.1f} s alone (medians of {rounds}; "
        f"alone {[round(s, 1) for s in alone]}, beside {[round(s, 1) for s in beside]}); the two "
        f"hosts' items finished after {[round(s, 1) for s in two_s]} s, deferred "
        f"{deferrals} times (slow host, Crawl-delay host)",
    )


def run_corpus(corpus: Path, rounds: int, repeat: int = 5) -> Figure:
    from .bench_article import Site, _run_ours

    polite: list[float] = []
    off: list[float] = []
    with bench_env() as env:
        site = Site(env, corpus, repeat)
        try:
            urls = site.urls
            for r in range(rounds):
                for pacing in (True, False):
                    extra = {} if pacing else {
                        "obey_robots": "false", "per_host_concurrency": "1000",
                        "per_host_target_concurrency": "1000",
                    }
                    with bench_env(**extra) as run_env:
                        out = asyncio.run(_run_ours(run_env, urls))
                    log(f"round {r} {'polite' if pacing else 'pacing off'}: "
                        f"{out['steady']:.1f} pages/s steady, {out['wall_s']:.1f} s, "
                        f"{out['counts']}")
                    (polite if pacing else off).append(out["steady"])
            domains = site.domains
        finally:
            site.stop()
    p, o = statistics.median(polite), statistics.median(off)
    loss = 1 - p / o
    return Figure(
        "article on the corpus, default politeness", "pacing and robots.txt off", "loss ≤ 5 %",
        f"{100 * loss:.1f} %", loss <= 0.05,
        f"{len(urls)} URLs on {domains} hosts: {p:.1f} pages/s steady polite vs {o:.1f} pages/s "
        f"with pacing off (medians of {rounds}, alternating; polite {[round(x, 1) for x in polite]}"
        f", off {[round(x, 1) for x in off]})",
    )


CRAWL_DELAY_HOST = "127.0.3.1"
LIMITED_HOST = "127.0.3.2"
LIMIT_S = 0.5


class PoliteSites:
    """The Crawl-delay host and the 429 host of the two-worker measurement, hits as they arrive."""

    def __init__(self) -> None:
        self.hits: dict[str, list[tuple[float, str, int]]] = {CRAWL_DELAY_HOST: [],
                                                               LIMITED_HOST: []}
        self.runners: list[web.AppRunner] = []
        self.base: dict[str, str] = {}

    async def _crawl_delay(self, request: web.Request) -> web.Response:
        self.hits[CRAWL_DELAY_HOST].append((time.monotonic(), request.path, 200))
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private/\nCrawl-delay: 1\n")
        return web.Response(body=synthetic_article(len(request.path)), content_type="text/html")

    async def _limited(self, request: web.Request) -> web.Response:
        hits = self.hits[LIMITED_HOST]
        now = time.monotonic()
        status = 429 if hits and now - hits[-1][0] < LIMIT_S else 200
        hits.append((now, request.path, status))
        if status == 429:
            return web.Response(status=429, text="slow down")
        if request.path == "/robots.txt":
            return web.Response(status=404)
        return web.Response(body=synthetic_article(len(request.path)), content_type="text/html")

    async def start(self) -> PoliteSites:
        for host, handler in ((CRAWL_DELAY_HOST, self._crawl_delay),
                              (LIMITED_HOST, self._limited)):
            app = web.Application()
            app.router.add_get("/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.base[host] = f"http://{host}:{port}"
            self.runners.append(runner)
        return self

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def _two_workers_round(env: BenchEnv) -> dict[str, Any]:
    sites = await PoliteSites().start()
    wb = Workbench(**env.settings())
    try:
        public = [f"{sites.base[CRAWL_DELAY_HOST]}/public/{n}" for n in range(8)]
        private = [f"{sites.base[CRAWL_DELAY_HOST]}/private/{n}" for n in range(4)]
        limited = [f"{sites.base[LIMITED_HOST]}/page/{n}" for n in range(20)]
        batch = await wb.submit(public + private + limited, pipeline="article")
        workers = [worker_proc(env, "--processes", "1", "--concurrency", "16",
                               name=f"polite-worker-{i}") for i in range(2)]
        try:
            settle_s = await _settle(wb, batch.id, timeout_s=300)
        finally:
            for w in workers:
                w.stop()
        st = (await batch.status()).set_index("url")
        failures = (await batch.failures()).set_index("url")
        delayed = sites.hits[CRAWL_DELAY_HOST]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(delayed)]
        return {
            "settle_s": settle_s,
            "private_requests": sum(1 for _, p, _ in delayed if p.startswith("/private/")),
            "private_refused": int((failures.reindex(private)["error_type"]
                                    == "robots_disallowed").sum()),
            "crawl_delay_requests": len(delayed),
            "min_gap_s": min(gaps) if gaps else float("nan"),
            "too_many": sum(1 for _, _, s in sites.hits[LIMITED_HOST] if s == 429),
            "limited_requests": len(sites.hits[LIMITED_HOST]),
            "limited_done": int((st.loc[limited, "status"] == "done").sum()),
            "workers_used": int(st["worker_id"].nunique()),
        }
    finally:
        await wb.close()
        await sites.close()


def _shared_backend() -> tuple[str, str] | None:
    """(database URL, Redis URL) of the PostgreSQL + shared Redis run, if configured."""
    db = (os.environ.get("WORKBENCH_BENCH_DATABASE_URL")
          or os.environ.get("WORKBENCH_TEST_DATABASE_URL"))
    redis_url = (os.environ.get("WORKBENCH_BENCH_REDIS_URL")
                 or os.environ.get("WORKBENCH_TEST_REDIS_URL"))
    return (db, redis_url) if db and redis_url else None


async def _pg_database(base_url: str) -> tuple[str, Any]:
    """A fresh database beside ``base_url``'s, and its drop."""
    import asyncpg

    plain = base_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"wbbench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(plain)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return f"{base_url.rpartition('/')[0]}/{name}", drop


def _empty_redis_index(url: str) -> tuple[str, Any]:
    """An empty database index of the shared Redis, claimed (ARQ's job keys are not under the
    queue's name: item ids of a fresh database would meet other runs' keys), and its release."""
    import redis

    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    for index in range(14, 0, -1):
        client = redis.Redis.from_url(f"{base}/{index}")
        if client.dbsize() == 0 and client.set("wbbench:claimed", "1", nx=True, ex=3600):
            if client.dbsize() == 1:
                return f"{base}/{index}", client
            client.delete("wbbench:claimed")
        client.close()
    raise RuntimeError(f"no empty database index on {base}")


def run_two_workers() -> list[Figure]:
    """The issue's Crawl-delay, robots.txt and 429 targets with two worker processes, on SQLite
    + the embedded Redis and (when configured) PostgreSQL + a shared Redis."""
    runs: list[tuple[str, dict[str, Any]]] = []
    with bench_env() as env:
        runs.append(("SQLite + embedded Redis", asyncio.run(_two_workers_round(env))))
    shared = _shared_backend()
    if shared is not None:
        db_url, drop = asyncio.run(_pg_database(shared[0]))
        redis_url, claim = _empty_redis_index(shared[1])
        try:
            with bench_env(database_url=db_url, redis_url=redis_url) as env:
                runs.append(("PostgreSQL + shared Redis 7", asyncio.run(_two_workers_round(env))))
        finally:
            claim.flushdb()
            claim.close()
            asyncio.run(drop())
    figures = []
    for name, r in runs:
        log(f"two workers, {name}: {r}")
        ok = (r["private_requests"] == 0 and r["min_gap_s"] >= 0.95
              and r["crawl_delay_requests"] == 9)
        figures.append(Figure(
            f"Crawl-delay 1 and Disallow, 2 worker processes, {name}",
            "issue: 0.00 s apart, every disallowed URL fetched",
            "0 disallowed requests; gaps ≥ 0.95 s",
            f"{r['private_requests']}; min {r['min_gap_s']:.3f} s", ok,
            f"{r['crawl_delay_requests']} requests (robots.txt + 8 pages), the closest two "
            f"{r['min_gap_s']:.3f} s apart; the 4 /private/ URLs failed robots_disallowed: "
            f"{r['private_refused']}; batch settled in {r['settle_s']:.1f} s, items run by "
            f"{r['workers_used']} processes",
        ))
        figures.append(Figure(
            f"429 under 0.5 s, 20 URLs, 2 worker processes, {name}",
            "issue: 59 × 429, 9 of 20 failed",
            "20 done, ≤ 6 × 429",
            f"{r['limited_done']} done, {r['too_many']} × 429",
            r["limited_done"] == 20 and r["too_many"] <= 6,
            f"{r['limited_requests']} requests to the host (robots.txt included), "
            f"{r['too_many']} answered 429",
        ))
    return figures


def run(corpus: Path | None, rounds: int) -> list[Figure]:
    """All three measurements (the corpus one only with ``corpus``)."""
    figures = [*run_two_workers(), run_hosts(rounds)]
    if corpus is not None:
        figures.append(run_corpus(corpus, rounds))
    return figures


def render_section(figures: list[Figure], command: str, elapsed_s: float) -> str:
    """The "Politeness" section of RESULTS.md, between its markers."""
    lines = [
        SECTION_START,
        "## Politeness (issue 11)",
        "",
        (f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; the "
         f"run took {elapsed_s / 60:.1f} min. How each figure is measured: the docstring of "
         "`benchmarks/bench_hosts.py`."),
        "",
        "| benchmark | compared with | target | figure | met |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {f.benchmark} | {f.compared_with} | {f.target} | {f.figure} | "
              f"{'yes' if f.passed else '**no**'} |" for f in figures]
    lines += ["", *[f"- **{f.benchmark}**: {f.detail}" for f in figures], SECTION_END]
    return "\n".join(lines)


def with_section(text: str, section: str) -> str:
    """``text`` with its Politeness section replaced by ``section`` (else put before the
    machine); an empty ``section`` keeps the one there."""
    if SECTION_START in text and SECTION_END in text:
        old = text[text.index(SECTION_START) : text.index(SECTION_END) + len(SECTION_END)]
        return text.replace(old, section) if section else text
    if not section:
        return text
    head, sep, tail = text.partition("## Machine")
    return f"{head}{section}\n\n{sep}{tail}" if sep else f"{text}\n{section}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-hosts", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    figures = [] if args.skip_workers else run_two_workers()
    if not args.skip_hosts:
        figures.append(run_hosts(args.rounds))
    if args.corpus:
        figures.append(run_corpus(args.corpus, args.rounds))
    for f in figures:
        print(f.line())


if __name__ == "__main__":
    main()
