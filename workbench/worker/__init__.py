"""The worker: ARQ ``Worker`` wiring around ``WorkerRuntime``.

``python -m workbench.worker`` runs it from a shell (see ``__main__``); ``Workbench.start_worker``
runs the same thing inside a notebook's event loop.
"""

from __future__ import annotations

from typing import Any

from arq import Worker
from arq.worker import func

from ..cleanup import cleanup_cron_job
from ..codec import job_dumps, job_loads
from ..queue import JOB_FUNCTION, connect
from ..settings import Settings
from .runtime import WorkerRuntime, run_item

__all__ = ["WorkerRuntime", "build_worker", "run_worker"]


async def build_worker(
    settings: Settings,
    *,
    burst: bool = False,
    concurrency: int | None = None,
    handle_signals: bool = True,
    cpu_processes: int | None = None,
    ledger: Any = None,
    poll_delay_s: float = 0.2,
) -> tuple[Worker, WorkerRuntime]:
    """An ARQ worker bound to a fresh ``WorkerRuntime`` (not started yet: ARQ's on_startup does)."""
    redis = await connect(settings)
    runtime = WorkerRuntime(
        settings, redis, ledger=ledger, concurrency=concurrency, cpu_processes=cpu_processes
    )

    async def on_startup(ctx: dict[str, Any]) -> None:
        await runtime.start()

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await runtime.stop()

    worker = Worker(
        functions=[
            # our own per-item timeout fires first and is retried; ARQ's is only a backstop
            func(run_item, name=JOB_FUNCTION, timeout=settings.job_timeout_s + 60,
                 max_tries=1_000_000, keep_result=0),
        ],
        # daily 03:00 cleanup of old raw pages and stale queue keys; unique across workers
        cron_jobs=[cleanup_cron_job()],
        redis_pool=redis,
        queue_name=settings.queue_name,
        burst=burst,
        max_jobs=runtime.concurrency,
        job_timeout=settings.job_timeout_s + 60,
        keep_result=0,
        poll_delay=poll_delay_s,
        handle_signals=handle_signals,
        job_completion_wait=int(settings.shutdown_grace_s) if handle_signals else 0,
        job_serializer=job_dumps,
        job_deserializer=job_loads,
        ctx={"workbench": runtime},
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        log_results=False,
        max_burst_jobs=-1,
    )
    return worker, runtime


async def run_worker(settings: Settings, **kwargs: Any) -> WorkerRuntime:
    """Run one worker in the current event loop until it stops (burst done or signal)."""
    worker, runtime = await build_worker(settings, **kwargs)
    try:
        await worker.async_run()
    finally:
        await worker.close()
    return runtime
