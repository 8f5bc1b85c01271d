"""The one ARQ adapter: the only module that touches ARQ (``arq`` is imported nowhere else).

ARQ gives Workbench its Redis job queue: a sorted set of job ids, a key per job, a worker loop
with timeouts and cron. Workbench goes past ARQ's documented API in a few places, each for a
measured reason, and all of them are here:

- **Job payloads implied by job ids** (``payload_template``): an item job is only its queue
  entry (``queue.jobs``); when one starts, the worker hands ARQ's ``run_job`` the bytes
  ``arq.jobs.serialize_job`` would have stored for our JSON serializer, built from its id
  (``create_worker``'s ``implied_payload``). A job with a key of its own (cron jobs, jobs of
  earlier versions) runs from that key, as in ARQ.
- **The worker's job start** (``QueueWorker``): overrides ``start_jobs``, ``_poll_iteration`` and
  ``_release_sem_dec_counter_on_complete``, and drives ARQ's semaphore and job counter: jobs
  start in one script call for all free slots (CPU 1.5 -> 0.75 ms/item), which also reads the
  queue and what ARQ's ``run_job`` reads at each job's start (``queue/starts.py``), and a freed
  slot is refilled at once instead of after ``poll_delay`` (133 -> 194 items/s, in-process; see
  benchmarks/RESULTS.md); a Redis outage is waited out instead of ending the worker. Overrides
  ``finish_job`` too: a job's finish (``queue/finishes.py``) is not waited for but rides with the
  next start call, which its freed slot brings about at once (``queue/rides.py``).
- **ARQ's key layout** (``JOB_KEY_PREFIX``, ``RETRY_KEY_PREFIX``, ``IN_PROGRESS_KEY_PREFIX``): to
  drop, check and sweep jobs without ARQ's per-job round trips.
- **``Job``'s private constructor arguments** (``arq_job``), to read a job back in tests.
- **``Retry``** (``deferral``): a job whose host is paced goes back to the queue, due later, with
  its id and payload unchanged and without holding a worker slot meanwhile.

tests/queue/test_arq_adapter.py names every ARQ attribute, method and signature relied on here:
an ARQ upgrade that renames or removes one fails that test, loudly, not a running worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
from collections.abc import Awaitable, Callable, Sequence
from signal import SIGUSR1, Signals
from typing import Any, TypeAlias, cast

from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    retry_key_prefix,
)
from arq.cron import CronJob
from arq.jobs import Job
from arq.typing import WorkerCoroutine
from arq.utils import timestamp_ms
from arq.worker import Function, Worker, func
from arq.worker import Retry as ArqRetry
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workbench.core.codec import job_dumps, job_loads
from workbench.core.logs import get_logger
from workbench.queue.connections import quicken, refuses_writes
from workbench.queue.finishes import FINISH_LUA, FINISHED, requeued
from workbench.queue.rides import Rides
from workbench.queue.starts import CURRENT_START, START_LUA, StartedPool, started_jobs

__all__ = [
    "IN_PROGRESS_KEY_PREFIX",
    "JOB_KEY_PREFIX",
    "RETRY_KEY_PREFIX",
    "CronJob",
    "Function",
    "QueueRedis",
    "QueueWorker",
    "arq_job",
    "create_worker",
    "daily_cron_job",
    "deferral",
    "job_function",
    "open_pool",
    "paced_key",
    "payload_template",
    "redis_settings",
    "refuses_writes",
]

log = get_logger("workbench.worker")

#: The Redis connection every queue operation takes: ARQ's ``ArqRedis``, a ``redis.asyncio.Redis``
#: that also knows the queue's default name and job serializer. Import it from ``workbench.queue``.
QueueRedis: TypeAlias = ArqRedis

#: ARQ's keys: ``<JOB_KEY_PREFIX><job id>`` holds the payload, the retry key counts ARQ's tries,
#: the in-progress key marks a job a worker is running (a PSETEX with ARQ's timeout).
JOB_KEY_PREFIX: str = job_key_prefix
RETRY_KEY_PREFIX: str = retry_key_prefix
IN_PROGRESS_KEY_PREFIX: str = in_progress_key_prefix
#: between the owner and the call count in an in-progress mark written by ``QueueWorker``
MARK_SEPARATOR = "|"

JobCoroutine = Callable[..., Awaitable[Any]]
#: the payload of a job that has no job key, from its id and score (None: not one of ours)
ImpliedPayload = Callable[[str, int], bytes | None]
Hook = Callable[[dict[str, Any]], Awaitable[None]]


# ---------------------------------------------------------------------------- connections
def redis_settings(url: str) -> RedisSettings:
    rs = RedisSettings.from_dsn(url)
    rs.conn_timeout = 5
    rs.conn_retries = 3
    # After a Redis restart every pooled connection is dead: reconnect and retry the command
    # instead of failing once per pooled connection.
    rs.retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
    rs.retry_on_error = [RedisConnectionError]
    return rs


async def open_pool(url: str, queue_name: str) -> QueueRedis:
    """An ArqRedis pool with the JSON serializer (never pickle) that checks a connection it
    hands out without a zero-timeout read (``queue.connections``)."""
    redis = await create_pool(redis_settings(url), job_serializer=job_dumps,
                              job_deserializer=job_loads, default_queue_name=queue_name)
    quicken(redis)
    return redis


# ---------------------------------------------------------------------------- jobs
def payload_template(function_name: str) -> bytes:
    """ARQ's job payload for ``function_name(item_id, attempt)``, ``%``-formatted with
    ``(item_id, attempt, enqueue_time_ms)``: what ``arq.jobs.serialize_job(function_name,
    (item, attempt), {}, None, enqueue_time_ms, serializer=job_dumps)`` returns, byte for byte
    (tests/queue/test_arq_adapter.py checks it), at a fraction of the cost."""
    return b'{"t":null,"f":"' + function_name.encode() + b'","a":[%d,%d],"k":{},"et":%d}'


def arq_job(redis: QueueRedis, job_id: str, queue_name: str) -> Job:
    """ARQ's own view of a job (status, info), readable because our payloads are ARQ's."""
    return Job(job_id, redis, _queue_name=queue_name, _deserializer=job_loads)


def deferral(delay_s: float) -> Exception:
    """What a job function raises to be run again in ``delay_s``, same id and payload (ARQ's
    ``Retry``: the job's score moves, its in-progress key goes, nothing else changes)."""
    return ArqRetry(defer=max(0.0, delay_s))


def job_function(
    coroutine: JobCoroutine, *, name: str, timeout_s: float, max_tries: int, keep_result_s: float
) -> Function:
    """A job function for the worker: ``coroutine(ctx, *args)`` registered under ``name``."""
    return func(cast(WorkerCoroutine, coroutine), name=name, timeout=timeout_s,
                max_tries=max_tries, keep_result=keep_result_s)


def daily_cron_job(
    coroutine: JobCoroutine, *, name: str, hour: int, minute: int, timeout_s: float
) -> CronJob:
    """Daily at ``hour:minute`` (the worker's local time); ``unique`` so one worker of many
    runs it; never at start-up, no result kept, no retry."""
    return cron(
        cast(WorkerCoroutine, coroutine),
        name=name,
        hour=hour,
        minute=minute,
        unique=True,
        run_at_startup=False,
        timeout=timeout_s,
        keep_result=0,
        max_tries=1,
    )


# ---------------------------------------------------------------------------- the worker
#: How long a freed slot waits for the other jobs ending with it before one read refills them
#: all: jobs end in bursts (one group commit settles many). 5 ms capped the no-op worker at
#: 2,500-2,900 items/s with its 32 slots (every slot idled 5 ms per item of ~12 ms); 1 ms ran
#: 4,100-4,550; the article run's worker CPU per page did not move (benchmarks/NOTES.md,
#: session 14).
_REFILL_COALESCE_S = 0.001
#: a job's finish waits at most this long for a start call to ride with (``queue/rides.py``)
_FINISH_LINGER_S = 0.05


def paced_key(queue_name: str) -> str:
    """The sorted set of a queue's paced jobs released for their host's turn (``queue/lines.py``),
    scored by when they are due (Redis' clock): the start script takes them first, whatever the
    job's own score (deferred by ``deferral`` as a fallback). ARQ alone starts due jobs in score
    order, so a paced job would wait behind every older job of a backlog, its host idle."""
    return f"{queue_name}:paced"


class QueueWorker(Worker):
    """ARQ's ``Worker``, taking the next job as soon as a slot frees while jobs are waiting.

    ARQ reads the queue, starts what fits in the free slots, then sleeps ``poll_delay`` even when
    more jobs wait, so slots freed during the sleep stay idle: it starts at most about ``max_jobs``
    jobs per poll delay whatever their length (160 items/s at 32 slots and 0.2 s). Here, while a
    read started jobs or found every slot busy, the next read waits only for a free slot.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._implied_payload: ImpliedPayload | None = None
        if self.allow_abort_jobs:  # run_job would start with a ZREM the start script skips
            raise ValueError("QueueWorker does not take allow_abort_jobs")
        self._slot_freed = asyncio.Event()
        self._read_again = False
        self._start_script: Any = None
        self._finish_script: Any = None
        self._rides: Rides | None = None
        self._redis_failures = 0
        self._writes_refused = False
        #: jobs whose start or finish Redis refused to record (a full disk): their in-progress
        #: keys are dropped once it takes writes again, so they run (or are seen done) at once
        self._handed_back: set[str] = set()
        #: set by every stop (close() and the signal handlers all end in handle_sig)
        self._stopping = False
        #: whose the start script's in-progress marks are (``owner|call``): the ledger's worker
        #: id once ``own_marks`` names it, so reconcile can free the marks of a dead worker
        self._owner = secrets.token_hex(8)
        self._start_calls = 0

    def imply_payloads(self, payload: ImpliedPayload) -> None:
        """Build the payload of a job started without a job key (an item job) with
        ``payload(job_id, score)``."""
        self._implied_payload = payload

    def own_marks(self, owner: str) -> None:
        """Write ``owner`` (the ledger's id of this worker) into the in-progress marks."""
        self._owner = owner

    def _start_token(self) -> str:
        """A token no other start call (of any worker) uses: see ``queue.starts.START_LUA``."""
        self._start_calls += 1
        return f"{self._owner}{MARK_SEPARATOR}{self._start_calls}"

    @property
    def pool(self) -> QueueRedis:
        """ARQ's pool; in a job task the start script started, the pool with its first
        pipeline (``run_job``'s start: payload, try count) already answered."""
        read = CURRENT_START.get()
        if read is None or read.taken:
            return cast(QueueRedis, self._pool)
        return cast(QueueRedis, StartedPool(self._pool, read))

    def handle_sig(self, signum: Signals) -> None:
        self._stopping = True
        super().handle_sig(signum)

    async def close(self) -> None:
        """ARQ's close, except that job tasks the stop cancelled do not raise out of it: a task
        cancelled before its first step never enters ``run_job`` (whose handler ends a stopped
        job quietly), so ARQ's gather raised ``CancelledError`` and skipped ``on_shutdown``
        (seen on PostgreSQL in loaded runs of tests/queue/test_worker_stop.py). Any other
        exception of a job task is raised as before."""
        if not self._handle_signals:
            self.handle_sig(SIGUSR1)
        if not self._pool:
            return
        outcomes = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, asyncio.CancelledError
            ):
                raise outcome
        if self._rides is not None:  # the last finishes (a failure is logged)
            with contextlib.suppress(RedisError, OSError):
                await self._rides.flush()
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose()
        self._pool = None

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_freed.set()

    async def start_jobs(self, job_ids: Sequence[bytes]) -> None:
        """ARQ's start_jobs, for all the free slots in one script call. ARQ checks and marks each
        job with four round trips (WATCH, EXISTS of the in-progress key, ZSCORE, MULTI/PSETEX/EXEC):
        a sixth of a no-op worker's CPU. The script does the same checks atomically, in order."""
        # a job stays in the queue while it runs: ours are never candidates
        self._redis_failures = 0  # this read worked
        running = {jid for jid, task in self.tasks.items() if not task.done()}
        candidates = [jid for jid in job_ids if jid.decode() not in running]
        if self.max_jobs - self.job_counter <= 0:
            self._read_again = bool(candidates)  # full, with jobs waiting
            return
        await self._start(candidates, read_first=0)

    async def _start(self, candidates: Sequence[bytes], *, read_first: int) -> None:
        """One start script call: the first ``read_first`` due jobs, then ``candidates``."""
        free = self.max_jobs - self.job_counter
        # no candidates: the script still looks for released paced jobs (queue/lines.py)
        if self._start_script is None:
            self._start_script = self.pool.register_script(START_LUA)
        try:  # the finishes waiting to be sent go first, in the same round trip
            started = await self._riding().call(
                self._start_script,
                [self.queue_name, paced_key(self.queue_name)],
                [timestamp_ms(), int(self.in_progress_timeout_s * 1000), in_progress_key_prefix,
                 job_key_prefix, retry_key_prefix, free, self._start_token(), read_first,
                 *candidates],
            )
        except ResponseError as exc:
            if refuses_writes(exc):  # it may have marked some before Redis said no
                self._handed_back.update(jid.decode() for jid in candidates)
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError):
            # the script may have run with its answer lost (Redis killed right after, its AOF
            # kept the marks): marks nobody runs would hold these jobs until they expire
            self._handed_back.update(jid.decode() for jid in candidates)
            raise
        self._redis_failures = 0  # this call (and the script's read of the queue) worked
        self._writes_work()
        for job_id, score, read in started_jobs(started, job_key_prefix, retry_key_prefix):
            if read.payload is None and self._implied_payload is not None:
                read.payload = self._implied_payload(job_id, score)  # no key: an item job
            await self.sem.acquire()  # never waits: job_counter < max_jobs
            self.job_counter += 1
            # run_job's start pipeline is answered from the script's read (the ``pool``
            # property below), in the job task's own context
            context = contextvars.copy_context()
            context.run(CURRENT_START.set, read)
            task = self.loop.create_task(self.run_job(job_id, score), context=context)
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        # ids only running elsewhere (other workers) are no reason to read again at once
        self._read_again = bool(started) or self.job_counter >= self.max_jobs

    async def _poll_once(self) -> None:
        """ARQ's ``_poll_iteration``, the queue read by the start script (one round trip, not two);
        its burst limit and aborts are never on here (``create_worker``)."""
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            await self._start((), read_first=self.queue_read_limit)
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()  # as ARQ: an error of run_job itself propagates
        await self.heart_beat()

    async def run_job(self, job_id: str, score: int) -> None:
        """ARQ's run_job; a job whose bookkeeping Redis refuses to write is handed back (its item
        is untouched in the ledger, or already recorded there), not raised into a task nobody
        awaits. A stop's cancel landing in ARQ's bookkeeping after the function returned ended
        the task in ``CancelledError``, which ``close()`` raised, skipping ``on_shutdown`` (1 stop
        in 3, tests/queue/test_worker_stop.py): the outcome is in the ledger, so it ends quietly."""
        try:
            await super().run_job(job_id, score)
        except ResponseError as exc:
            if not refuses_writes(exc):
                raise
            self._handed_back.add(job_id)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            # Redis went away during ARQ's bookkeeping of the job: its in-progress mark (kept by
            # the AOF) would hold it for job_timeout + 10 s. Handed back, it runs again once Redis
            # is back; the ledger's attempt guard skips it if its outcome is already recorded.
            self._handed_back.add(job_id)
        except asyncio.CancelledError:
            # the flag, not only the main task's state: that task's cancel request can be
            # consumed before the job task sees its own (seen once in a loaded run on PostgreSQL)
            main = self.main_task
            stopping = self._stopping or (main is not None and (main.done() or main.cancelling()))
            if not stopping:
                raise  # not our stop

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """ARQ's finish_job as a ``FINISH_LUA`` call, not waited for: it rides with the start call
        the freed slot brings about (``queue/rides.py``); one Redis refuses hands the job back, as
        in ``run_job``. Jobs whose result or in-progress key is kept (cron) are ARQ's."""
        if result_data or keep_in_progress is not None:
            await super().finish_job(job_id, finish, result_data, result_timeout_s,
                                     keep_result_forever, incr_score, keep_in_progress)
            return
        rides = self._riding()
        if self._finish_script is None:
            self._finish_script = self.pool.register_script(FINISH_LUA)
        rides.add(
            self._finish_script, [self.queue_name, abort_jobs_ss],
            [in_progress_key_prefix, retry_key_prefix, job_key_prefix, job_id,
             FINISHED if finish else requeued(incr_score)],
            on_error=lambda _exc: self._handed_back.add(job_id),
        )

    def _riding(self) -> Rides:
        """The finishes waiting to ride with the next start call (on ARQ's own pool)."""
        if self._rides is None:
            self._rides = Rides(cast(QueueRedis, self._pool), linger_s=_FINISH_LINGER_S,
                                what="job finishes")
        return self._rides

    async def _hand_back(self) -> None:
        jobs, self._handed_back = sorted(self._handed_back), set()
        try:
            await self.pool.delete(*(in_progress_key_prefix + j for j in jobs))
        except BaseException:
            self._handed_back.update(jobs)
            raise
        self._writes_work()

    def _writes_work(self) -> None:
        if self._writes_refused:
            self._writes_refused = False
            log.info("Redis takes writes again")

    async def _poll_iteration(self) -> None:
        """One read of the queue (and refills while jobs wait). A Redis outage (restart, failover,
        a full network blip) is waited out here: ARQ would end the worker on the first
        connection error, dropping the jobs it runs; they finish into the ledger meanwhile.
        So is a Redis that refuses writes (``refuses_writes``: its disk is full and the AOF
        cannot be written, it ran out of memory, it is a read-only replica): one log line, the
        jobs it would not let start or finish handed back, and a read again after a pause."""
        try:
            if self._handed_back:
                await self._hand_back()
            await self._read_and_refill()
        except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
            if isinstance(exc, ResponseError):
                if not refuses_writes(exc):
                    raise
                if not self._writes_refused:
                    log.warning("Redis refuses writes (a full disk?); waiting for it",
                                error=str(exc)[:200])
                self._writes_refused = True
                await asyncio.sleep(min(5.0, self.poll_delay_s * 4))
                return
            self._redis_failures += 1
            if self._redis_failures == 1:
                log.warning("Redis unreachable; waiting for it", error=str(exc)[:200])
            await asyncio.sleep(min(5.0, self.poll_delay_s * 2 ** (self._redis_failures - 1)))
            return

    async def _read_and_refill(self) -> None:
        await self._poll_once()
        while self._read_again and self.allow_pick_jobs:
            self._read_again = False
            if self.job_counter >= self.max_jobs:
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._slot_freed.wait()
                await asyncio.sleep(_REFILL_COALESCE_S)  # the slots freed with it: one read
            await self._poll_once()


def create_worker(
    *,
    redis: QueueRedis,
    queue_name: str,
    functions: Sequence[Function],
    cron_jobs: Sequence[CronJob],
    ctx: dict[str, Any],
    on_startup: Hook,
    on_shutdown: Hook,
    max_jobs: int,
    job_timeout_s: float,
    poll_delay_s: float,
    burst: bool,
    handle_signals: bool,
    shutdown_wait_s: int,
    implied_payload: ImpliedPayload | None = None,
) -> QueueWorker:
    """A ``QueueWorker`` on ``redis`` with JSON jobs (never pickle), no results kept in Redis
    (the ledger has them) and no per-job result logging. ``shutdown_wait_s``: on SIGTERM, how
    long running jobs may take to finish before they are cancelled (and handed back).
    ``implied_payload``: the payload of a job found without a job key (an item job)."""
    worker = QueueWorker(
        functions=list(functions),
        cron_jobs=list(cron_jobs),
        redis_pool=redis,
        queue_name=queue_name,
        burst=burst,
        max_jobs=max_jobs,
        job_timeout=job_timeout_s,
        keep_result=0,
        poll_delay=poll_delay_s,
        handle_signals=handle_signals,
        job_completion_wait=shutdown_wait_s,
        job_serializer=job_dumps,
        job_deserializer=job_loads,
        ctx=ctx,
        on_startup=cast(Any, on_startup),
        on_shutdown=cast(Any, on_shutdown),
        log_results=False,
        max_burst_jobs=-1,
    )
    if implied_payload is not None:
        worker.imply_payloads(implied_payload)
    return worker
