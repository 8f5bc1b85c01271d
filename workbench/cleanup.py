"""Scheduled cleanup: the worker's daily 03:00 cron job and ``python -m workbench cleanup``.

One pass (``run_cleanup``) does, each step independent of the others:

1. **Raw pages**: stored page snapshots fetched more than ``WORKBENCH_RETENTION_DAYS`` ago are
   deleted, then every page body no snapshot points at (``PageStore.delete_older_than``).
   A rerun of an old batch then reports ``page_not_stored`` for those URLs.
2. **Stale queue entries**: jobs in this queue whose item the ledger holds as done, failed or
   cancelled, whose attempt was superseded by a newer one, or whose item does not exist, are
   removed (sorted-set entry, job key, retry key). A job ARQ is running right now (in-progress
   key) is left alone. With the embedded Redis (private to this data dir) orphaned job keys
   outside the queue are swept too; on a shared Redis only this queue's entries are touched.
3. **Dead workers**: worker records whose heartbeat stopped over an hour ago are marked
   stopped; records of workers stopped over a week ago are removed. Items are never touched
   (the worker's reconcile pass already re-queued what such workers held).
4. **Batch counters** (PostgreSQL): the per-connection rows of settled batches' status counters
   are folded into one row per status (``workbench.ledger.counters``); counts do not change.
5. **Owed emails** (when SMTP is configured): batches with ``notify`` that settled without their
   email going out are sent now - the claim was given back after failed sends, or (batches of
   the last 7 days) no item finished on a worker to trigger it: all cached, the rest cancelled,
   the last ones failed by reconcile. See ``workbench.notify.notifier``.

Results and ledger rows (batches, items) are research data: never deleted here.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from workbench.core.logs import get_logger
from workbench.core.settings import Settings
from workbench.ledger.pages import PageStore
from workbench.ledger.store import Ledger
from workbench.notify.notifier import deliver_notification
from workbench.queue import QueueRedis
from workbench.queue import jobs as queue
from workbench.queue.arq_adapter import CronJob, daily_cron_job

log = get_logger("workbench.cleanup")

CRON_NAME = "cron:cleanup"
CRON_HOUR = 3
CRON_MINUTE = 0
DEAD_WORKER_AFTER_S = 3600.0
FORGET_WORKER_AFTER_S = 7 * 86400.0
OWED_EMAIL_WINDOW_DAYS = 7
_SCAN = 1000


@dataclass
class CleanupReport:
    retention_days: float
    cutoff: datetime
    snapshots_deleted: int = 0
    blobs_deleted: int = 0
    stale_jobs_removed: int = 0
    orphan_keys_removed: int = 0
    workers_marked_dead: int = 0
    workers_forgotten: int = 0
    counter_rows_folded: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cutoff"] = self.cutoff.isoformat()
        return d

    def lines(self) -> list[str]:
        out = [
            f"raw pages older than {self.retention_days:g} days "
            f"(fetched before {self.cutoff:%Y-%m-%d %H:%M} UTC): "
            f"{self.snapshots_deleted} snapshot(s) and {self.blobs_deleted} page body(ies) deleted",
            f"queue: {self.stale_jobs_removed} stale job(s) removed, "
            f"{self.orphan_keys_removed} orphaned key(s) removed",
            f"workers: {self.workers_marked_dead} dead record(s) marked stopped, "
            f"{self.workers_forgotten} old record(s) removed",
        ]
        if self.counter_rows_folded:
            out.append(f"batch counters: {self.counter_rows_folded} per-connection row(s) folded")
        if self.notifications_sent or self.notifications_failed:
            out.append(
                f"emails owed: {self.notifications_sent} sent, "
                f"{self.notifications_failed} still failing"
            )
        out.append("results and ledger rows: kept (never deleted by cleanup)")
        out += [f"error: {e}" for e in self.errors]
        return out


async def run_cleanup(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    redis: QueueRedis | None = None,
    now: datetime | None = None,
    dead_worker_after_s: float = DEAD_WORKER_AFTER_S,
    forget_worker_after_s: float = FORGET_WORKER_AFTER_S,
) -> CleanupReport:
    """One cleanup pass. Opens (and closes) its own ledger and Redis connection unless given."""
    now = now or datetime.now(UTC)
    report = CleanupReport(
        retention_days=settings.retention_days,
        cutoff=now - timedelta(days=settings.retention_days),
    )
    own_ledger = ledger is None
    own_redis = redis is None
    try:
        if ledger is None:
            ledger = await Ledger(settings.effective_database_url).start()
        try:
            report.snapshots_deleted, report.blobs_deleted = await PageStore(
                ledger
            ).delete_older_than(report.cutoff)
        except Exception as exc:
            report.errors.append(f"deleting old pages failed: {exc}")
        try:
            if redis is None:
                redis = await queue.connect(settings)
            await _sweep_queue(settings, ledger, redis, report)
        except Exception as exc:
            report.errors.append(f"sweeping the queue failed: {exc}")
        try:
            await _sweep_workers(ledger, now, dead_worker_after_s, forget_worker_after_s, report)
        except Exception as exc:
            report.errors.append(f"sweeping worker records failed: {exc}")
        try:
            report.counter_rows_folded = await ledger.fold_counters()
        except Exception as exc:
            report.errors.append(f"folding batch counters failed: {exc}")
        if settings.smtp_url:
            try:
                await _send_owed_notifications(settings, ledger, report, now)
            except Exception as exc:
                report.errors.append(f"sending owed emails failed: {exc}")
    finally:
        if own_redis and redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose(close_connection_pool=True)
        if own_ledger and ledger is not None:
            await ledger.close()
    log.info("cleanup done", **{k: v for k, v in report.as_dict().items() if k != "errors"},
             errors=len(report.errors))
    return report


# ---------------------------------------------------------------------------- queue
async def _sweep_queue(
    settings: Settings, ledger: Ledger, redis: QueueRedis, report: CleanupReport
) -> None:
    queue_name = settings.queue_name
    members: dict[str, tuple[int, int]] = {}
    async for jid in queue.queued_ids(redis, queue_name, count=_SCAN):
        job = queue.parse_job_id(jid, queue_name)
        if job:  # other entries (the cleanup cron job itself) are not items
            members[jid] = job
    stale: list[str] = []
    batch: dict[str, tuple[int, int]] = {}
    for jid, job in members.items():
        batch[jid] = job
        if len(batch) >= _SCAN:
            stale += await ledger.stale_jobs(batch)
            batch = {}
    stale += await ledger.stale_jobs(batch)
    stale = await queue.not_running(redis, stale)
    await queue.remove(redis, queue_name, stale)
    report.stale_jobs_removed = len(stale)

    if not settings.uses_embedded_redis:
        return  # a shared Redis may hold other deployments' job keys: leave them to expire
    orphans: dict[str, tuple[int, int]] = {}
    async for jid in queue.stored_ids(redis, count=_SCAN):
        job = queue.parse_job_id(jid, queue_name)
        if job and jid not in members:
            orphans[jid] = job
    gone = await queue.not_running(redis, await ledger.stale_jobs(orphans))
    await queue.remove(redis, queue_name, gone)
    report.orphan_keys_removed = len(gone)


# ---------------------------------------------------------------------------- workers
async def _sweep_workers(
    ledger: Ledger, now: datetime, dead_after_s: float, forget_after_s: float,
    report: CleanupReport,
) -> None:
    report.workers_marked_dead, report.workers_forgotten = await ledger.sweep_workers(
        dead_before=now - timedelta(seconds=dead_after_s),
        forget_before=now - timedelta(seconds=forget_after_s),
    )


# ---------------------------------------------------------------------------- owed emails
async def _send_owed_notifications(
    settings: Settings, ledger: Ledger, report: CleanupReport, now: datetime
) -> None:
    # given back after failed sends, or recent and settled with no item finishing on a worker
    owed = await ledger.owed_notifications(now - timedelta(days=OWED_EMAIL_WINDOW_DAYS))
    for batch_id in owed:
        if not await ledger.claim_notification(batch_id):  # still running: not owed yet
            continue
        outcome = await deliver_notification(settings, ledger, batch_id)
        if outcome == "sent":
            report.notifications_sent += 1
        else:
            report.notifications_failed += 1


# ---------------------------------------------------------------------------- the cron job
async def cleanup_cron(ctx: dict[str, Any]) -> dict[str, Any]:
    """ARQ cron job: one cleanup pass with the worker's own ledger and Redis."""
    runtime = ctx["workbench"]
    report = await run_cleanup(runtime.settings, ledger=runtime.ledger, redis=runtime.redis)
    return report.as_dict()


def cleanup_cron_job() -> CronJob:
    """Daily at 03:00 (the worker's local time); ``unique`` so one worker of many runs it."""
    return daily_cron_job(
        cleanup_cron, name=CRON_NAME, hour=CRON_HOUR, minute=CRON_MINUTE, timeout_s=3600
    )
