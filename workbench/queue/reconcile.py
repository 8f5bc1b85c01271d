"""Reconcile Redis with the ledger: the ledger is the truth, Redis only the transport.

- Items ``running`` on a worker whose heartbeat lapsed go back to the queue with a new attempt
  (or fail as ``worker_lost`` once out of tries).
- Items ``queued`` whose job is missing in Redis (flushed, restarted without AOF, expired) are
  enqueued again, keeping their retry delay; not while a cancel is under way (it drops jobs
  before the ledger says cancelled: ``client.cancelling``), the next pass does.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass

from workbench.core.logs import get_logger
from workbench.core.settings import Settings
from workbench.ledger.store import Ledger
from workbench.queue import jobs as queue
from workbench.queue import marks
from workbench.queue.arq_adapter import QueueRedis

log = get_logger("workbench.queue.reconcile")


@dataclass(frozen=True)
class ReconcileReport:
    lost_requeued: int = 0
    lost_failed: int = 0
    missing_requeued: int = 0
    unmarked: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.lost_requeued or self.lost_failed or self.missing_requeued
                    or self.unmarked)


async def reconcile(
    ledger: Ledger, redis: QueueRedis, settings: Settings, *, full: bool = False
) -> ReconcileReport:
    """One pass. Without ``full``, the per-job check runs only when Redis holds fewer jobs than
    the ledger has queued items (cheap enough to run every few seconds on 100k-item queues)."""
    lost, failed = await ledger.requeue_lost(settings.heartbeat_timeout_s, settings.max_tries)
    if lost:
        # ahead of the backlog: "re-run within 60 s" must not mean "after every waiting item"
        await queue.enqueue(redis, settings.queue_name, lost, front=True)
    unmarked = await _free_dead_marks(ledger, redis, settings)
    missing_count = 0
    queued_total = await ledger.count_queued()
    if queued_total and (
        full or await queue.queue_length(redis, settings.queue_name) < queued_total
    ):
        # a cancel drops jobs before the ledger says cancelled (``queue.jobs.cancel_begin``):
        # what is missing is left for the next pass if one ran during this one
        cancels = await queue.cancels_state(redis, settings.queue_name)
        # a chunk at a time: read from the ledger, checked in Redis, the missing enqueued
        async with aclosing(ledger.queued_jobs()) as chunks:
            async for queued in chunks:
                gone = await queue.missing(redis, settings.queue_name,
                                           [(i, a) for i, a, _ in queued])
                if gone and (cancels[1] or await queue.cancels_state(redis, settings.queue_name)
                             != cancels):
                    log.info("a cancel is under way: jobs missing from Redis left for the "
                             "next pass", missing=len(gone))
                    break
                if gone:
                    delays = {i: queue.defer_from(next_try) for i, _, next_try in queued}
                    missing_count += await queue.enqueue(redis, settings.queue_name, gone,
                                                         defer_s=delays)
    report = ReconcileReport(len(lost), failed, missing_count, unmarked)
    if report.changed:
        log.warning(
            "reconciled queue with ledger",
            lost_requeued=report.lost_requeued,
            lost_failed=report.lost_failed,
            missing_requeued=report.missing_requeued,
            unmarked=report.unmarked,
        )
    return report


async def _free_dead_marks(ledger: Ledger, redis: QueueRedis, settings: Settings) -> int:
    """Delete the in-progress marks of the queue's leading jobs whose worker the ledger knows
    to be dead (``queue.marks``)."""
    found = await marks.marked(redis, settings.queue_name, int(time.time() * 1000))
    owners = {job: marks.owner_of(mark) for job, mark in found}
    dead = await ledger.dead_workers([o for o in owners.values() if o],
                                     settings.heartbeat_timeout_s)
    return await marks.unmark(redis, [(j, m) for j, m in found if owners[j] in dead])
