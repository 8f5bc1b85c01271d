"""One worker process: ``WorkerRuntime`` wired into the queue's ARQ worker (``build_worker``), run
until it stops (``run_worker``), and the whole of a ``python -m workbench.worker`` process
(``run_in_this_process``: settings, logging, pipelines, then the worker).

``python -m workbench.worker`` (``__main__``) runs it in this process or, with ``--processes N``,
in N children (``supervisor``); ``Workbench.start_worker`` runs the same worker inside a
notebook's event loop.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from workbench.cleanup import cleanup_cron_job
from workbench.core import loops
from workbench.core.logs import configure_logging
from workbench.core.settings import Settings, load_settings
from workbench.pipeline.registry import load_pipeline_modules
from workbench.queue.arq_adapter import QueueWorker, create_worker, job_function
from workbench.queue.jobs import JOB_FUNCTION, connect, implied_payload
from workbench.worker.runtime import WorkerRuntime, run_item

__all__ = ["build_worker", "run_in_this_process", "run_worker"]


async def build_worker(
    settings: Settings,
    *,
    burst: bool = False,
    concurrency: int | None = None,
    handle_signals: bool = True,
    cpu_processes: int | None = None,
    ledger: Any = None,
    poll_delay_s: float = 0.2,
    warm_up_cpu: bool = False,
) -> tuple[QueueWorker, WorkerRuntime]:
    """An ARQ worker bound to a fresh ``WorkerRuntime`` (not started yet: ARQ's on_startup does).
    ``warm_up_cpu``: start the CPU pool's processes at once, beside the worker's own start."""
    redis = await connect(settings)
    runtime = WorkerRuntime(
        settings, redis, ledger=ledger, concurrency=concurrency, cpu_processes=cpu_processes
    )

    async def on_startup(ctx: dict[str, Any]) -> None:
        if warm_up_cpu:
            runtime.warm_up_cpu()
        await runtime.start()

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await runtime.stop()

    worker = create_worker(
        redis=redis,
        queue_name=settings.queue_name,
        functions=[
            # our own per-item timeout fires first and is retried; ARQ's is only a backstop
            job_function(run_item, name=JOB_FUNCTION, timeout_s=settings.job_timeout_s + 60,
                         max_tries=1_000_000, keep_result_s=0),
        ],
        # daily 03:00 cleanup of old raw pages and stale queue keys; unique across workers
        cron_jobs=[cleanup_cron_job()],
        ctx={"workbench": runtime},
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=runtime.concurrency,
        job_timeout_s=settings.job_timeout_s + 60,
        poll_delay_s=poll_delay_s,
        burst=burst,
        handle_signals=handle_signals,
        shutdown_wait_s=int(settings.shutdown_grace_s) if handle_signals else 0,
        implied_payload=implied_payload(settings.queue_name),
    )
    worker.own_marks(runtime.worker_id)  # reconcile frees the marks of a worker that died
    return worker, runtime


async def run_worker(settings: Settings, **kwargs: Any) -> WorkerRuntime:
    """Run one worker in the current event loop until it stops (burst done or signal)."""
    worker, runtime = await build_worker(settings, **kwargs)
    try:
        await worker.async_run()
    finally:
        await worker.close()
    return runtime


def run_in_this_process(options: dict[str, Any], overrides: dict[str, Any]) -> int:
    """Run one worker in this process until it stops; returns an exit code. Entry point only
    (``python -m workbench.worker`` and its children): it configures logging for the process."""
    settings = load_settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    load_pipeline_modules(settings.pipeline_modules)

    async def main() -> None:
        await run_worker(
            settings,
            burst=options.get("burst", False),
            concurrency=options.get("concurrency"),
            cpu_processes=options.get("cpu_processes"),
            # a worker process exists to run pipelines, most of which extract: its pool starts
            # with it (an in-kernel or test worker starts its pool with the first extraction)
            warm_up_cpu=True,
        )

    freeze_startup_objects()
    try:
        loops.run(main(), settings.event_loop)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # a signal: ARQ already finished or handed back the running items
    return 0


def freeze_startup_objects() -> None:
    """Take what the imports made (modules, classes, functions, the libraries' tables: alive as
    long as the process) out of the garbage collector's walks, after collecting what is already
    garbage. Every full collection otherwise walks all of them again: the no-op worker spent
    about a sixth of its CPU per item on it (0.23 -> 0.19 ms per item, 3 alternating pairs;
    benchmarks/NOTES.md, session 14). Process-wide state: entry points only."""
    gc.collect()
    gc.freeze()
