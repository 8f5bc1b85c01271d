"""``python -m workbench demo``: the whole system on one machine, in one command.

Serves the bundled sample site on loopback, starts a worker in this process (embedded Redis if no
``WORKBENCH_REDIS_URL``), submits every page of the site plus its deliberately broken and flaky
URLs, waits, and prints a summary: what was found, which failures were expected, where the data is
and how to look at it. The parser, exit codes and one-line errors are ``workbench.cli.main``'s;
``CliError`` and opening the ``Workbench`` are ``workbench.cli.common``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from workbench.cli.common import PROG, CliError, err, open_workbench
from workbench.core.text import clip, format_duration


async def run_demo(args: argparse.Namespace) -> int:
    """The ``demo`` command: 0 once the summary is printed; errors as ``workbench.cli.main``'s."""
    from workbench.core.settings import load_settings
    from workbench.notify.summary import summarize_batch
    from workbench.queue.embedded import EmbeddedRedis
    from workbench.samplesite import FLAKY_PATH, sample_site_dir, serve_sample_site

    settings = load_settings()
    try:
        sample_site_dir()
    except FileNotFoundError as exc:
        raise CliError(str(exc), 1) from None
    server = EmbeddedRedis(settings.embedded_redis_dir) if settings.uses_embedded_redis else None
    started_redis = server is not None and not await asyncio.to_thread(server.is_running)
    cpu = max(1, min(2, os.cpu_count() or 1))
    t0 = time.monotonic()
    # quick automatic retries so the demo's broken routes settle in a few seconds; the sample
    # site is on loopback, which the address guard refuses unless allowed: allowed here only
    wb = open_workbench(retry_backoff_s=0.2, retry_backoff_max_s=1.0,
                        block_private_addresses=False)
    try:
        async with serve_sample_site() as site:
            err(f"sample site: {len(site.article_urls())} articles and "
                f"{len(site.broken_urls()) + 1} broken URLs on {site.base_url}")
            await wb.start_worker(cpu_processes=cpu)
            err(f"worker: in this process, extraction in a pool of {cpu} process(es)")
            urls = [*site.urls(), site.flaky_url()]
            batch = await wb.submit(urls, name="demo: sample site", refresh=True)
            err(f"batch {batch.id}: {batch.total} URLs submitted")
            try:
                await batch.wait(timeout=args.timeout, progress=not args.no_progress)
            except Exception:
                await batch.cancel()
                raise
            summary = await summarize_batch(wb.ledger, batch.id, top=10)
            df = await batch.results()
            items = await batch.status()
            expected = {**site.broken_urls()}
        await wb.stop_workers()
        lines = _demo_report(summary, df, items, expected, site_flaky=FLAKY_PATH,
                             elapsed=time.monotonic() - t0, settings=settings,
                             stopped_redis=started_redis, fmt=format_duration)
    finally:
        await wb.close()
        if started_redis and server is not None:
            await asyncio.to_thread(server.stop)
    print("\n".join(lines))
    return 0


def _demo_report(summary: Any, df: Any, items: Any, expected: dict[str, str], *, site_flaky: str,
                 elapsed: float, settings: Any, stopped_redis: bool,
                 fmt: Callable[[float | None], str]) -> list[str]:
    c = summary.counts
    bid = summary.batch_id
    out = [
        "",
        f"Workbench demo — the sample site analysed in {fmt(elapsed)} "
        f"(batch {bid}, pipeline {summary.pipeline} v{summary.pipeline_version})",
        "",
        f"  items      {summary.total}: {c['done']} done, {c['failed']} failed, "
        f"{c['cancelled']} cancelled",
    ]
    if not df.empty:
        if "language" in df.columns:
            langs = Counter(str(x) for x in df["language"].fillna("?"))
            out.append("  languages  " + ", ".join(f"{k} {v}" for k, v in langs.most_common()))
        if "word_count" in df.columns:
            wc = df["word_count"].dropna().astype(float)
            if len(wc):
                out.append(f"  words      per page: mean {wc.mean():.0f}, median {wc.median():.0f},"
                           f" min {wc.min():.0f}, max {wc.max():.0f}; {wc.sum():.0f} in all")
        if "keywords" in df.columns:
            kw: Counter[str] = Counter()
            for v in df["keywords"]:
                if isinstance(v, (list, tuple)):
                    kw.update(str(k).lower() for k in v)
            if kw:
                out.append("  keywords   most frequent: "
                           + ", ".join(f"{k} ({n})" for k, n in kw.most_common(8)))
        if "title" in df.columns:
            out.append("  e.g.       " + "; ".join(clip(t, 50) for t in df["title"].dropna()[:3]))
    flaky = items[items["url"].astype(str).str.contains(site_flaky, regex=False)]
    if len(flaky) and flaky["status"].iloc[0] == "done":
        out.append(f"  retried    {site_flaky} answered 503 at first; retried automatically, it "
                   f"succeeded at attempt {int(flaky['attempts'].iloc[0])}")
    if summary.top_errors:
        out.append("  failures   by error type (the sample site breaks these URLs on purpose):")
        want = Counter(expected.values())
        for g in summary.top_errors:
            mark = "as expected" if g.error_type in want else "unexpected"
            out.append(f"               {g.error_type:<20} {g.count:>3}  {mark}, e.g. "
                       f"{g.sample_url.split('//', 1)[-1].split('/', 1)[-1]}")
    db = settings.effective_database_url
    where = db.split("///", 1)[1] if db.startswith("sqlite") else db.split("@")[-1]
    out += [
        "",
        "Where the data is:",
        f"  ledger     {'SQLite ' if db.startswith('sqlite') else 'PostgreSQL '}{where}  "
        "(batches, items, results, stored raw pages)",
        "  queue      " + (f"embedded Redis under {settings.embedded_redis_dir}"
                          + (" (stopped again)" if stopped_redis else "")
                          if settings.uses_embedded_redis else "Redis at WORKBENCH_REDIS_URL"),
        "",
        "Look at it from a shell:",
        f"  {PROG} status {bid}",
        f"  {PROG} results {bid} --format csv -o demo.csv",
        f"  {PROG} failures {bid}",
        "or in Python (a notebook):",
        "  from workbench import Workbench",
        "  wb = Workbench()",
        f'  batch = await wb.get_batch("{bid}")',
        "  df = await batch.results()      # one row per page: title, language, keywords, ...",
        "  await batch.failures()          # error_type, error_message, traceback",
        "  batch.widget()                  # live monitor with a retry button",
    ]
    return out

