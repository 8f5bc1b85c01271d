"""The worker: ARQ ``Worker`` wiring around ``WorkerRuntime``.

``python -m workbench.worker`` runs it from a shell (see ``__main__``); ``Workbench.start_worker``
runs the same thing inside a notebook's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workbench.cleanup import cleanup_cron_job
from workbench.core.codec import job_dumps, job_loads
from workbench.core.settings import Settings
from workbench.queue.jobs import JOB_FUNCTION, connect
from workbench.worker.runtime import WorkerRuntime, run_item

__all__ = ["WorkerRuntime", "build_worker", "run_worker"]

log = structlog.get_logger("workbench.worker")

_REFILL_COALESCE_S = 0.005
# KEYS[1] = queue; ARGV = now ms, in-progress ttl ms, in-progress key prefix, most to start, ids.
# Starts (in order) each job still queued, due and not in progress elsewhere: the checks of ARQ's
# start_jobs, atomic. Returns id, score, id, score, ... In-progress keys are built from ARQ's
# prefix in the script: like ARQ, this needs one Redis server, not a cluster.
_START_LUA = """
local now, ttl, prefix, most = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local started = {}
for i = 5, #ARGV do
  if #started >= 2 * most then break end
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now and redis.call('EXISTS', prefix .. id) == 0 then
    redis.call('PSETEX', prefix .. id, ttl, '1')
    started[#started + 1] = id
    started[#started + 1] = score
  end
end
return started
"""


class _Worker(Worker):
    """ARQ's ``Worker``, taking the next job as soon as a slot frees while jobs are waiting.

    ARQ reads the queue, starts what fits in the free slots, then sleeps ``poll_delay`` even when
    more jobs wait, so slots freed during the sleep stay idle: it starts at most about ``max_jobs``
    jobs per poll delay whatever their length (160 items/s at 32 slots and 0.2 s). Here, while a
    read started jobs or found every slot busy, the next read waits only for a free slot.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot_freed = asyncio.Event()
        self._read_again = False
        self._start_script: Any = None
        self._redis_failures = 0

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def start_jobs(self, job_ids: Sequence[bytes]) -> None:
        """ARQ's start_jobs, for all the free slots in one script call.

        ARQ checks and marks each job with four round trips (WATCH, EXISTS of the in-progress
        key, ZSCORE, MULTI/PSETEX/EXEC) and re-checks the jobs it is running itself, which stay
        in the queue until they finish; that was a sixth of a no-op worker's CPU. The script does
        the same checks atomically, in queue order, for up to the number of free slots.
        """
        # a job stays in the queue while it runs: ours are never candidates
        self._redis_failures = 0  # this read worked
        running = {jid for jid, task in self.tasks.items() if not task.done()}
        candidates = [jid for jid in job_ids if jid.decode() not in running]
        free = self.max_jobs - self.job_counter
        if not candidates or free <= 0:
            self._read_again = bool(candidates)  # full, with jobs waiting
            return
        if self._start_script is None:
            self._start_script = self.pool.register_script(_START_LUA)
        started = await self._start_script(
            keys=[self.queue_name],
            args=[timestamp_ms(), int(self.in_progress_timeout_s * 1000),
                  in_progress_key_prefix, free, *candidates],
        )
        for raw_id, score in zip(started[::2], started[1::2], strict=True):
            await self.sem.acquire()  # never waits: job_counter < max_jobs
            self.job_counter += 1
            job_id = raw_id.decode()
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        # ids only running elsewhere (other workers) are no reason to read again at once
        self._read_again = bool(started) or self.job_counter >= self.max_jobs

    async def _poll_iteration(self) -> None:
        """One read of the queue (and refills while jobs wait). A Redis outage (restart, failover,
        a full network blip) is waited out here: ARQ would end the worker on the first
        connection error, dropping the jobs it runs; they finish into the ledger meanwhile."""
        try:
            await self._read_and_refill()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._redis_failures += 1
            if self._redis_failures == 1:
                log.warning("Redis unreachable; waiting for it", error=str(exc)[:200])
            await asyncio.sleep(min(5.0, self.poll_delay_s * 2 ** (self._redis_failures - 1)))
            return

    async def _read_and_refill(self) -> None:
        await super()._poll_iteration()
        while self._read_again and self.allow_pick_jobs:
            self._read_again = False
            if self.job_counter >= self.max_jobs:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._slot_freed.wait()
                # jobs end in bursts (one group commit settles many): fill their slots with one read
                await asyncio.sleep(_REFILL_COALESCE_S)
            await super()._poll_iteration()


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

    worker = _Worker(
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
