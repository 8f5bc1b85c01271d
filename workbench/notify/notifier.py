"""Email on completion: one summary email per batch submitted with ``notify="a@b.org"``.

When ``WORKBENCH_SMTP_URL`` is set, a worker installs a ``Notifier`` as its settled hook
(``WorkerRuntime.notifier``). After an item of a batch with ``notify`` finishes, the notifier asks
the ledger to ``claim_notification(batch_id)``, which is true for exactly one caller across every
worker once nothing in the batch is queued or running. That caller sends the email, in a task of
its own so the item's job is not held up.

Delivery policy:

- Transient failures (connection refused or reset, timeouts, 4xx replies) are retried with
  exponential backoff: ``WORKBENCH_SMTP_MAX_TRIES`` tries, ``WORKBENCH_SMTP_BACKOFF_S`` doubling.
- If every try fails transiently, the claim is given back (``notified_at`` cleared, ``settled_at``
  kept). The daily cleanup (``python -m workbench cleanup`` and the worker's 03:00 cron) sends
  the emails still owed: batches whose claim was given back, and recent batches (created in the
  last 7 days) that settled without an item finishing on a worker - every item cached at submit,
  the rest cancelled, or the last ones failed by reconcile as ``worker_lost``. The next settle of
  the batch (after a retry) also tries again. A worker that stops while a send is pending waits a
  few seconds for it, then gives the claim back the same way.
- A permanent failure (5xx: recipient or sender refused, authentication failed, STARTTLS not
  offered) is logged and not retried: the batch stays marked as notified.
- Nothing here ever fails an item or a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from workbench.core.logs import get_logger
from workbench.core.settings import Settings
from workbench.ledger.store import BatchInfo, Ledger
from workbench.notify.email import (
    PermanentSmtpError,
    compose_email,
    parse_smtp_url,
    recipients_of,
    send_email,
)
from workbench.notify.summary import summarize_batch

log = get_logger("workbench.notify.notifier")

__all__ = ["Notifier", "deliver_notification"]


async def deliver_notification(
    settings: Settings,
    ledger: Ledger,
    batch_id: str,
    *,
    on_failure: Callable[[BaseException], object] | None = None,
) -> str:
    """Send the email of a batch whose notification the caller has just claimed.

    Returns ``"sent"``, ``"permanent_failure"`` (logged, stays claimed) or ``"unclaimed"``
    (transient failures used up every try, or cancelled: the claim is given back)."""
    claimed_at = await ledger.notification_claimed_at(batch_id)
    try:
        if not settings.smtp_url:
            raise PermanentSmtpError("WORKBENCH_SMTP_URL is not set")
        target = parse_smtp_url(
            settings.smtp_url, allow_insecure_auth=settings.smtp_allow_insecure_auth
        )
        summary = await summarize_batch(ledger, batch_id)
        to = recipients_of(summary.notify or "")
        if not to:
            raise PermanentSmtpError(f"no valid recipient in {summary.notify!r}")
        message = compose_email(summary, sender=settings.smtp_from, recipients=to)
        await send_email(
            message, target, tries=settings.smtp_max_tries, backoff_s=settings.smtp_backoff_s,
            timeout_s=settings.smtp_timeout_s, on_failure=on_failure,
        )
    except PermanentSmtpError as exc:
        log.error("notification email refused; not retrying", batch=batch_id, error=str(exc)[:500])
        return "permanent_failure"
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(ledger.unclaim_notification(batch_id, claimed_at))
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):
            await ledger.unclaim_notification(batch_id, claimed_at)
        log.warning("notification email not sent; will retry at the next cleanup",
                    batch=batch_id, error=f"{type(exc).__name__}: {exc}"[:500])
        return "unclaimed"
    log.info("notification email sent", batch=batch_id, to=", ".join(to))
    return "sent"


class Notifier:
    """A worker's settled hook: claims a settled batch's notification, then sends in a
    background task. Needs only the settings and the ledger."""

    def __init__(self, settings: Settings, ledger: Ledger):
        self.settings = settings
        self.ledger = ledger
        self.tasks: set[asyncio.Task[str]] = set()
        self.outcomes: list[tuple[str, str]] = []  # (batch_id, outcome), for tests and logs
        self.failed_attempts = 0

    async def __call__(self, batch: BatchInfo) -> None:
        """An item of ``batch`` has just finished: send its email if it is settled and unsent."""
        if not batch.notify:
            return
        if not await self.ledger.claim_notification(batch.id):
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(batch.id), name=f"workbench-notify-{batch.id}"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _count_failure(self, exc: BaseException) -> None:
        self.failed_attempts += 1

    async def _deliver(self, batch_id: str) -> str:
        outcome = await deliver_notification(
            self.settings, self.ledger, batch_id, on_failure=self._count_failure
        )
        self.outcomes.append((batch_id, outcome))
        return outcome

    async def close(self, grace_s: float = 10.0) -> None:
        """Wait up to ``grace_s`` for pending sends, then cancel them (their claims are given
        back, so the cleanup sweep sends those emails later)."""
        pending = list(self.tasks)
        if not pending:
            return
        _done, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
