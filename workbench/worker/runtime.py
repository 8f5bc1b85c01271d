"""What a worker process does with one job: claim the item, run its pipeline, record the outcome.

The outcome is committed to the ledger before the ARQ job returns. A transient error re-queues the
item under a new attempt number with exponential backoff and jitter (honouring Retry-After) until
``max_tries``; a permanent one fails it with type, message and traceback. On shutdown, an item still
running is handed back to the queue, never lost. Heart-beats and reconcile passes run beside jobs.

Politeness is shared through Redis (``queue.hosts.RedisHostPacer``, handed to the fetcher): every
worker process and machine on the queue keeps one schedule per host. An item whose host's next free
start is more than ``DEFER_AFTER_S`` away is handed back (same attempt, the try not counted) and
waits in its host's line (``queue/lines.py``) until its turn: in the queue, not in a worker slot,
and other hosts' items take the slot meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from workbench.core import codec
from workbench.core.backoff import backoff_s
from workbench.core.errors import (
    PermanentError,
    PipelineError,
    PipelineNotAvailable,
    UnknownPipelineError,
    error_type_of,
    is_retryable,
)
from workbench.core.logs import get_logger
from workbench.core.settings import Settings
from workbench.core.version import __version__
from workbench.ledger.pages import PageStore
from workbench.ledger.store import BatchInfo, ClaimedItem, Ledger
from workbench.notify.notifier import Notifier
from workbench.pipeline.context import Context
from workbench.pipeline.fetch.pacing import PACED_JOB, HostPaced
from workbench.pipeline.registry import get_pipeline
from workbench.pipeline.tools import Tools
from workbench.queue import QueueRedis
from workbench.queue import jobs as queue
from workbench.queue.arq_adapter import deferral
from workbench.queue.hosts import RedisHostPacer
from workbench.queue.reconcile import reconcile

log = get_logger("workbench.worker")

_MAX_TRACEBACK = 20_000
_MAX_MESSAGE = 2_000
#: a fetch waits in place for its host at most this long; a longer wait defers the item
DEFER_AFTER_S = 1.0
#: called after an item of a batch with ``notify`` finishes (done or failed)
SettledHook = Callable[[BatchInfo], Awaitable[None]]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"


class WorkerRuntime:
    """State shared by all jobs of one worker process."""

    def __init__(
        self,
        settings: Settings,
        redis: QueueRedis,
        *,
        ledger: Ledger | None = None,
        concurrency: int | None = None,
        cpu_processes: int | None = None,
    ):
        self.settings = settings
        self.redis = redis
        self.worker_id = new_worker_id()
        self.concurrency = concurrency or settings.worker_concurrency
        self._own_ledger = ledger is None
        self.ledger = ledger or Ledger(
            settings.effective_database_url, commit_linger_s=settings.commit_interval_ms / 1000
        )
        self.pacer = RedisHostPacer(redis, settings)
        self.tools = Tools(
            settings, PageStore(self.ledger), cpu_processes=cpu_processes,
            pacer=self.pacer, defer_after_s=DEFER_AFTER_S,
        )
        self.items_done = 0
        self.items_deferred = 0
        self.running: dict[int, int] = {}
        self.settled_hooks: list[SettledHook] = []
        #: sends the completion emails; installed by ``start`` when WORKBENCH_SMTP_URL is set
        self.notifier: Notifier | None = None
        self._batches: dict[str, BatchInfo] = {}
        self._background: list[asyncio.Task[None]] = []
        self.log = log.bind(worker=self.worker_id)

    # ---------------------------------------------------------------- lifecycle
    def warm_up_cpu(self) -> None:
        """Start the CPU pool's processes in the background, now. Otherwise they start with
        the first extraction, after the worker's own start and the first fetches: a cold
        ``python -m workbench.worker`` waited ~1-2 s of the fork server importing the
        extraction stack before its first page (benchmarks/NOTES.md). Best effort: a pool
        that cannot start now is started (and its error raised) by the first call."""
        self._background.append(asyncio.get_running_loop().create_task(self._warm_up_cpu()))

    async def _warm_up_cpu(self) -> None:
        try:
            await self.tools.cpu.warm_up()
        except Exception as exc:
            self.log.warning("cpu pool warm-up failed", error=f"{type(exc).__name__}: {exc}")

    async def start(self) -> None:
        await self.ledger.start()
        await self.ledger.register_worker(
            self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            concurrency=self.concurrency,
            pipelines=_registered_names(),
        )
        # A restart after a crash or a Redis wipe: put the queue back before taking jobs.
        await reconcile(self.ledger, self.redis, self.settings, full=True)
        loop = asyncio.get_running_loop()
        self._background += [
            loop.create_task(self._every(self.settings.heartbeat_s, self._heartbeat)),
            loop.create_task(self._every(self.settings.reconcile_interval_s, self._reconcile)),
        ]
        self.log.info("worker started", concurrency=self.concurrency,
                      database=self.ledger.dialect, queue=self.settings.queue_name,
                      event_loop=type(loop).__module__.split(".")[0])
        if self.notifier is None and self.settings.smtp_url:  # email on completion
            self.notifier = Notifier(self.settings, self.ledger)
            self.settled_hooks.append(self.notifier)

    async def stop(self) -> None:
        if self.notifier is not None:  # let pending emails go out first
            await self.notifier.close(grace_s=min(10.0, self.settings.shutdown_grace_s))
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.ledger.stop_worker(self.worker_id)
        await self.tools.close()
        if self._own_ledger:
            await self.ledger.close()
        self.log.info("worker stopped", items_done=self.items_done)

    async def _every(self, interval_s: float, fn: Callable[[], Awaitable[None]]) -> None:
        failing = ""  # the error logged last: a lasting failure (a full disk) is one log line
        while True:
            await asyncio.sleep(interval_s * random.uniform(0.8, 1.2))
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                if error != failing:
                    self.log.warning("background task failed; retrying", task=fn.__name__,
                                     error=error, every_s=interval_s)
                failing = error
            else:
                if failing:
                    self.log.info("background task works again", task=fn.__name__)
                failing = ""

    async def _heartbeat(self) -> None:
        await self.ledger.heartbeat(self.worker_id, items_done=self.items_done)

    async def _reconcile(self) -> None:
        # one reconcile at a time across all workers sharing this Redis
        lock = f"{self.settings.queue_name}:reconcile-lock"
        ttl_ms = int(self.settings.reconcile_interval_s * 1000 * 0.9)
        if await self.redis.set(lock, self.worker_id, px=max(ttl_ms, 1000), nx=True):
            # alive, since it reconciles: a pause of this process past heartbeat_timeout_s must
            # not make its own running items look lost to itself (re-run, fetched twice)
            await self._heartbeat()
            await reconcile(self.ledger, self.redis, self.settings)

    async def batch_info(self, batch_id: str) -> BatchInfo:
        info = self._batches.get(batch_id)
        if info is None:
            info = await self.ledger.batch_info(batch_id)
            if len(self._batches) > 1000:
                self._batches.clear()
            self._batches[batch_id] = info
        return info

    # ---------------------------------------------------------------- one job
    async def run_item(self, item_id: int, attempt: int) -> str:
        claiming = asyncio.ensure_future(self.ledger.claim(item_id, attempt, self.worker_id))
        try:
            claim = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # shutdown while claiming: the claim is a shared write and lands anyway, so wait for
            # it and give back what it took (else the item stays running until reconcile)
            with contextlib.suppress(Exception):
                if await claiming is not None:
                    await asyncio.shield(self.ledger.hand_back(item_id, attempt))
            raise
        if claim is None:
            return "skipped"  # cancelled, finished, or superseded by a newer attempt
        self.running[item_id] = attempt
        # whose fetches these are, for their hosts' lines (task-local: ARQ runs each job in a
        # task of its own)
        PACED_JOB.set((claim.batch_id, queue.job_id(self.settings.queue_name, item_id, attempt)))
        try:
            batch = await self.batch_info(claim.batch_id)
            outcome = await self._execute(claim, batch)
        except HostPaced as paced:
            fallback_s = await self._defer(claim, paced)
            if fallback_s is None:
                return "stale"
            raise deferral(fallback_s) from None  # its line wakes it; ARQ's score: a fallback
        except asyncio.CancelledError:
            # shutdown: give the item back (same attempt; ARQ keeps the job queued)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.ledger.hand_back(item_id, attempt))
            raise
        finally:
            self.running.pop(item_id, None)
        if outcome in ("done", "failed"):
            self.items_done += 1
            if batch.notify and self.settled_hooks:
                await self._run_settled_hooks(batch)
        return outcome

    async def _defer(self, claim: ClaimedItem, paced: HostPaced) -> float | None:
        """Give a paced item back (the try is not counted) and put it in its host's line;
        returns when its job runs anyway (a fallback), or None if it was cancelled meanwhile."""
        if not await self.ledger.hand_back(claim.item_id, claim.attempt):
            return None
        self.items_deferred += 1
        try:
            fallback_s = await self.pacer.defer(
                claim.batch_id, claim.item_id, claim.attempt, paced.host, paced.wait_s
            )
        except Exception as exc:  # no line: the job comes back when the host is next free
            self.log.warning("putting a paced item in line failed", error=str(exc)[:300])
            fallback_s = paced.wait_s
        self.log.debug("item deferred", item=claim.item_id, host=paced.host,
                       wait_s=round(paced.wait_s, 2), fallback_s=round(fallback_s, 2))
        return fallback_s

    async def _execute(self, claim: ClaimedItem, batch: BatchInfo) -> str:
        t0 = time.perf_counter()
        ctx: Context | None = None
        try:
            try:
                spec = get_pipeline(batch.pipeline)
            except UnknownPipelineError as exc:
                raise PipelineNotAvailable(
                    f"this worker has no pipeline {batch.pipeline!r}: start it with "
                    f"--pipelines MODULE (or WORKBENCH_PIPELINES) that defines it ({exc})"
                ) from None
            ctx = Context(
                url=claim.url,
                normalized_url=claim.normalized_url,
                item_id=claim.item_id,
                batch_id=claim.batch_id,
                attempt=claim.attempt,
                params=batch.params,
                tools=self.tools,
                use_stored_pages=batch.use_stored_pages,
                log=self.log.bind(item=claim.item_id, url=claim.url),
            )
            try:
                async with asyncio.timeout(self.settings.job_timeout_s):
                    data = await spec.fn(claim.url, ctx)
            except TimeoutError:
                raise PipelineError(
                    f"pipeline {spec.name!r} took longer than {self.settings.job_timeout_s:g}s",
                    error_type="pipeline_timeout",
                    retryable=True,
                ) from None
            if not isinstance(data, dict):
                raise PermanentError(
                    f"pipeline {spec.name!r} returned {type(data).__name__}, expected a dict",
                    error_type="bad_result",
                )
            try:
                encoded = codec.dumps(data)
            except (TypeError, ValueError) as exc:
                raise PermanentError(
                    f"pipeline {spec.name!r} returned a value that is not JSON: {exc}",
                    error_type="bad_result",
                ) from exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return await self._record_failure(claim, exc)
        ctx.timings["total"] = time.perf_counter() - t0
        page = ctx.page
        result = dict(
            batch_id=claim.batch_id,
            normalized_url=claim.normalized_url,
            pipeline=spec.name,
            pipeline_version=spec.version,
            params_hash=batch.params_hash,
            workbench_version=__version__,
            data=encoded,
            final_url=page.final_url if page else None,
            http_status=page.status if page else None,
            content_sha256=page.sha256 if page else None,
            fetched_at=page.fetched_at if page else None,
            cached=False,
            from_stored_page=bool(page and page.from_store),
            timings={k: round(v, 6) for k, v in ctx.timings.items()},
        )
        if await self.ledger.complete(claim.item_id, claim.attempt, result):
            return "done"
        return "stale"

    async def _record_failure(self, claim: ClaimedItem, exc: BaseException) -> str:
        error = dict(
            error_type=error_type_of(exc)[:100],
            error_message=(str(exc) or repr(exc))[:_MAX_MESSAGE],
            traceback="".join(traceback.format_exception(exc))[-_MAX_TRACEBACK:],
            retryable=is_retryable(exc),
        )
        if error["retryable"] and claim.tries < self.settings.max_tries:
            # jitter on the upper half; the server's Retry-After (capped) is a floor
            delay = backoff_s(
                claim.tries, self.settings.retry_backoff_s, self.settings.retry_backoff_max_s,
                retry_after_s=getattr(exc, "retry_after_s", None),
                retry_after_max_s=self.settings.retry_after_max_s,
            )
            new_attempt = await self.ledger.retry_later(
                claim.item_id, claim.attempt, error, delay
            )
            if new_attempt is None:
                return "stale"
            try:
                await queue.enqueue(
                    self.redis, self.settings.queue_name, [(claim.item_id, new_attempt)],
                    defer_s=delay,
                )
            except Exception as qexc:
                self.log.warning("enqueue of a retry failed", item=claim.item_id, error=str(qexc))
            self.log.info("retrying later", item=claim.item_id, error_type=error["error_type"],
                          delay_s=round(delay, 2), tries=claim.tries)
            return "retrying"
        if await self.ledger.fail(claim.item_id, claim.attempt, error):
            self.log.info("item failed", item=claim.item_id, error_type=error["error_type"])
            return "failed"
        return "stale"

    async def _run_settled_hooks(self, batch: BatchInfo) -> None:
        for hook in self.settled_hooks:
            try:
                await hook(batch)
            except Exception as exc:
                self.log.warning("settled hook failed", batch=batch.id, error=str(exc)[:300])


def _registered_names() -> list[str]:
    from workbench.pipeline.registry import registry

    return registry.names()


async def run_item(arq_ctx: dict[str, Any], item_id: int, attempt: int) -> str:
    """The ARQ job function (registered as ``run_item``)."""
    runtime: WorkerRuntime = arq_ctx["workbench"]
    return await runtime.run_item(int(item_id), int(attempt))
