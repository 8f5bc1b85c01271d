"""``Batch.cancel``: the ledger's UPDATE and the removal of the jobs from Redis, at once.

At a million queued items both halves take seconds: the ledger's ``UPDATE ... RETURNING``
(every row rewritten and moved in its status indexes) and the Redis removal (a ZREM a
job: the server's CPU). One after the other they were ~10 s. Now the UPDATE runs while the jobs
of the batch's active items are read from the ledger in pieces on another connection, each
piece's drop beginning at once in Redis; once the UPDATE has committed, the jobs it returned
that were not dropped (an item re-queued under a new attempt meanwhile, or read after the
commit) are dropped too.

That list is the exact set of jobs to drop, but read from the ledger and held until the UPDATE
has committed: at 1M items ~1.5 s of this process's CPU beside the UPDATE and ~260 MB of
tuples (the UPDATE's RETURNING). A batch that is most of the queue (``SPAN_MIN`` active items
and ``SPAN_SHARE`` of the queue at least) has its jobs found by Redis itself instead: a walk
through the queue for the batch's consecutive item ids (``queue.jobs.drop_span``) while an
UPDATE without RETURNING runs, and a second walk once it has committed. Nothing of the batch is
read or held here.

Dropping a job before the ledger says its item is cancelled is safe:

- the UPDATE commits: every dropped job was of an item now cancelled, or finished; a job not
  dropped (Redis refused, or it was already taken) runs, its claim finds the item cancelled
  (claims want ``queued`` and the attempt) and it is skipped;
- the UPDATE fails: no more jobs are dropped, and those dropped of items still ``queued``
  under the same attempt are enqueued again at once (their retry delays kept), before the error
  is raised; should that fail too, a worker's reconcile (``queue.reconcile``) finds them
  missing;
- meanwhile a reconcile would see queued items without their jobs and enqueue them again,
  each to be skipped later by a worker: the cancel is announced in Redis
  (``queue.jobs.cancel_begin``) and reconcile leaves missing jobs to its next pass while one
  is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from workbench.core.errors import QueueError
from workbench.core.logs import get_logger
from workbench.queue import jobs as queue

if TYPE_CHECKING:
    from workbench.ledger.store import Ledger
    from workbench.queue.arq_adapter import QueueRedis

log = get_logger("workbench.client")

#: items read (and jobs dropped) a piece while the ledger's UPDATE runs
PIECE_ROWS = 20_000
#: a batch with at least this many active items, making up at least this share of the queue,
#: has its jobs dropped by a walk through the queue (``queue.jobs.drop_span``), not by a list
SPAN_MIN = 20_000
SPAN_SHARE = 0.5


async def cancel(ledger: Ledger, redis: QueueRedis | None, queue_name: str,
                 batch_id: str) -> int:
    """Cancel what of the batch has not finished (queued or running); returns how many.
    ``redis`` None: the ledger alone (Redis unreachable; the jobs left find their items
    cancelled)."""
    token = None
    if redis is not None:
        try:
            token = await queue.cancel_begin(redis, queue_name)
        except QueueError as exc:
            log.warning("could not drop cancelled jobs from Redis", error=str(exc))
    if redis is None or token is None:
        return await ledger.cancel_count(batch_id)
    try:
        if await _most_of_the_queue(ledger, redis, queue_name, batch_id):
            return await _cancel_by_span(ledger, redis, queue_name, batch_id)
        return await _cancel(ledger, redis, queue_name, batch_id)
    finally:
        with contextlib.suppress(QueueError):
            await queue.cancel_end(redis, queue_name, token)


async def _most_of_the_queue(ledger: Ledger, redis: QueueRedis, queue_name: str,
                             batch_id: str) -> bool:
    """Whether the batch's active items are at least ``SPAN_MIN`` and ``SPAN_SHARE`` of the
    queue (two counters and a ZCARD: no item read)."""
    counts = await ledger.counts(batch_id)
    active = counts.get("queued", 0) + counts.get("running", 0)
    if active < SPAN_MIN:
        return False
    try:
        return active >= SPAN_SHARE * await queue.queue_length(redis, queue_name)
    except (RedisError, OSError):
        return False  # the list path finds Redis down as well, and says so


async def _cancel_by_span(ledger: Ledger, redis: QueueRedis, queue_name: str,
                          batch_id: str) -> int:
    """The UPDATE (no RETURNING) while Redis walks the queue for the batch's item ids; once it
    has committed, a second walk drops what was enqueued for them meanwhile (a retry or a
    hand-back under a new attempt): the batch was most of the queue, so that walk looks at no
    more members than the first. Nothing of the batch is held in this process."""
    first, last = await ledger.id_span(batch_id)
    if first is None or last is None:
        return await ledger.cancel_count(batch_id)

    async def walk() -> bool:
        try:
            await queue.drop_span(redis, queue_name, first, last)
        except QueueError as exc:  # harmless: the jobs left find their items cancelled
            log.warning("could not drop cancelled jobs from Redis", error=str(exc))
            return False
        return True

    walking = asyncio.ensure_future(walk())
    updating = asyncio.ensure_future(ledger.cancel_count(batch_id))
    try:
        cancelled = await asyncio.shield(updating)
    except BaseException:
        walking.cancel()
        with contextlib.suppress(BaseException):
            await walking
        failed = updating.done() and not updating.cancelled() and updating.exception()
        if failed:  # (not when this call was cancelled: the UPDATE goes on)
            await _restore(ledger, redis, queue_name, batch_id, None)
        raise
    if await walking:
        await walk()
    return cancelled


async def _cancel(ledger: Ledger, redis: QueueRedis, queue_name: str, batch_id: str) -> int:
    dropped: dict[int, int] = {}  # item -> the attempt whose job was dropped
    feed: asyncio.Queue[list[tuple[int, int]] | None] = asyncio.Queue()
    stop = asyncio.Event()  # the UPDATE failed, or Redis refused: drop nothing more
    redis_ok = True

    async def dropping() -> None:
        nonlocal redis_ok
        while (jobs := await feed.get()) is not None and not stop.is_set():
            try:
                await queue.drop(redis, queue_name, jobs)
            except QueueError as exc:
                log.warning("could not drop cancelled jobs from Redis", error=str(exc))
                redis_ok = False
                stop.set()  # the read feeds no more
                return
            dropped.update(jobs)

    async def reading() -> None:
        # pieces of the active items, each dropped at once; read on a connection of its own
        # beside the UPDATE (a snapshot: a piece read after the commit finds its items
        # cancelled and holds none of them; the UPDATE's own list covers those)
        pieces = ledger.item_chunks(batch_id, columns=["attempts"], chunk_rows=PIECE_ROWS,
                                    statuses=["queued", "running"])
        try:
            async for piece in pieces:
                if stop.is_set():
                    break
                feed.put_nowait(list(zip(piece["item_id"], piece["attempts"], strict=True)))
                del piece
        except Exception as exc:  # the read failed: the UPDATE's own list is dropped below
            log.warning("could not read the items to cancel ahead", error=str(exc))
        finally:
            await pieces.aclose()  # left early: its read ahead ends and returns its connection
            feed.put_nowait(None)

    dropper = asyncio.ensure_future(dropping())
    # The UPDATE (seconds at a million rows: SQLite's own thread, or the server) and the read of
    # the jobs to drop (a second of this process's CPU at 1M) run at once; Redis drops each
    # piece as it comes. One after the other, the read was ~1.5 s of a 1M cancel's 10-11 s.
    updating = asyncio.ensure_future(ledger.cancel(batch_id))
    reader = asyncio.ensure_future(reading())
    try:
        cancelled = await asyncio.shield(updating)
    except BaseException:
        stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.shield(reader)  # ends at its next piece
        with contextlib.suppress(BaseException):
            await asyncio.shield(dropper)  # the drop under way ends
        failed = updating.done() and not updating.cancelled() and updating.exception()
        if dropped and failed:  # (not when this call was cancelled: the UPDATE goes on)
            await _restore(ledger, redis, queue_name, batch_id, dropped)
        raise
    await reader
    await dropper
    if redis_ok:
        rest = [(i, a) for i, a in cancelled if dropped.get(i) != a]
        try:
            await queue.drop(redis, queue_name, rest)
        except QueueError as exc:  # harmless: a dropped-late job finds its item cancelled
            log.warning("could not drop cancelled jobs from Redis", error=str(exc))
    return len(cancelled)


async def _restore(ledger: Ledger, redis: QueueRedis, queue_name: str, batch_id: str,
                   dropped: dict[int, int] | None) -> None:
    """The ledger's UPDATE failed: enqueue again the jobs dropped of items still queued under
    the same attempt (``dropped`` None: of every queued item; ZADD NX leaves those never
    dropped as they are), their retry delays kept. A piece at a time: the walk's restore is of
    every queued item of a batch that can hold a million."""
    try:
        async for piece in ledger.item_chunks(batch_id, columns=["attempts", "next_try_at"],
                                              chunk_rows=PIECE_ROWS, statuses=["queued"]):
            jobs: list[tuple[int, int]] = []
            delays: dict[int, float] = {}
            for i, a, t in zip(piece["item_id"], piece["attempts"], piece["next_try_at"],
                               strict=True):
                if dropped is None or dropped.get(i) == a:
                    jobs.append((i, a))
                    if t is not None:
                        delays[i] = queue.defer_from(_utc(t))
            await queue.enqueue(redis, queue_name, jobs, defer_s=delays)
    except Exception as exc:  # the worker's reconcile enqueues them
        log.warning("could not enqueue again the jobs of a failed cancel", error=str(exc))


def _utc(value: Any) -> datetime:
    """A ``next_try_at`` as read (naive UTC: text on SQLite, a datetime on PostgreSQL)."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when
