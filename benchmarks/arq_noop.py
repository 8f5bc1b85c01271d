"""The baseline: a plain ARQ worker running a no-op job, as a user of raw ARQ would write it.

``python -m benchmarks.arq_noop REDIS_URL QUEUE [--max-jobs N] [--poll-delay S] [--keep-result S]``
runs one worker process in burst mode. ARQ's defaults are kept (pickle serializer, results kept
for an hour) except ``max_jobs`` and ``poll_delay``, which are set to the same values as
Workbench's worker so the two differ only in what each does per job.

The second anchor is ARQ tuned as a user chasing throughput would set it (issue 13):
``--max-jobs 100 --poll-delay 0.05 --keep-result 60 --uvloop``: on uvloop's event loop, as
Workbench's worker runs when uvloop is installed (ARQ has no option for it; a user would start
the loop themselves, as ``--uvloop`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from arq import Worker
from arq.connections import RedisSettings


async def noop(ctx: dict[str, Any], url: str) -> dict[str, Any]:
    return {"url": url}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("redis_url")
    p.add_argument("queue")
    p.add_argument("--max-jobs", type=int, default=32)
    p.add_argument("--poll-delay", type=float, default=0.2)
    p.add_argument("--keep-result", type=float, default=None,
                   help="seconds ARQ keeps each result (default: ARQ's own, an hour)")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    factory = None
    if args.uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_run(args))


async def _run(args: argparse.Namespace) -> None:
    # built inside the running loop: ARQ binds its worker to the loop current at construction
    worker = Worker(
        functions=[noop],
        redis_settings=RedisSettings.from_dsn(args.redis_url),
        queue_name=args.queue,
        burst=True,
        max_jobs=args.max_jobs,
        poll_delay=args.poll_delay,
        handle_signals=True,
        log_results=False,
        **({} if args.keep_result is None else {"keep_result": args.keep_result}),
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()


if __name__ == "__main__":
    main()
