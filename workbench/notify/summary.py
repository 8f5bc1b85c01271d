"""Email on completion: one summary email per batch submitted with ``notify="a@b.org"``.

A worker calls ``install_notify_hook(runtime)`` at start-up. When ``WORKBENCH_SMTP_URL`` is set,
that adds a settled hook: after an item of a batch with ``notify`` finishes, the hook asks the
ledger to ``claim_notification(batch_id)``, which is true for exactly one caller across every
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

``summarize_batch`` is shared with the CLI's ``status`` and ``demo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import structlog
from sqlalchemy import func, select, update

from workbench.core.status import ITEM_STATUSES
from workbench.core.text import clip
from workbench.ledger.models import BatchRow, ItemRow
from workbench.ledger.store import BatchInfo, Ledger

if TYPE_CHECKING:
    from workbench.core.settings import Settings
    from workbench.worker.runtime import WorkerRuntime

log = structlog.get_logger("workbench.notify.summary")

__all__ = [
    "BatchSummary",
    "ErrorGroup",
    "Notifier",
    "SmtpTarget",
    "compose_email",
    "deliver_notification",
    "format_duration",
    "install_notify_hook",
    "parse_smtp_url",
    "send_email",
    "summarize_batch",
]


# ---------------------------------------------------------------------------- batch summaries
@dataclass(frozen=True)
class ErrorGroup:
    error_type: str
    count: int
    sample_url: str
    sample_message: str
    retryable: bool | None


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    name: str | None
    pipeline: str
    pipeline_version: str
    created_at: datetime
    counts: dict[str, int]
    first_started_at: datetime | None
    last_finished_at: datetime | None
    top_errors: list[ErrorGroup] = field(default_factory=list)
    notify: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def state(self) -> str:
        return "running" if self.counts["queued"] + self.counts["running"] else "completed"

    @property
    def duration_s(self) -> float | None:
        """From submission to the last item's end."""
        if self.last_finished_at is None:
            return None
        return max(0.0, (self.last_finished_at - self.created_at).total_seconds())

    @property
    def label(self) -> str:
        return f"{clip(self.name, 120)!r} ({self.batch_id})" if self.name else self.batch_id


async def summarize_batch(ledger: Ledger, batch_id: str, *, top: int = 5) -> BatchSummary:
    """Counts, timings and the most frequent error types (with a sample each) of one batch.

    Raises ``BatchNotFoundError`` for an unknown id. Aggregates in SQL: cheap on 100k items.
    """
    row = await ledger.get_batch(batch_id)
    t = ItemRow.__table__
    async with ledger.read_engine.connect() as conn:
        counts = {s: 0 for s in ITEM_STATUSES}
        for status, n in await conn.execute(
            select(t.c.status, func.count()).where(t.c.batch_id == batch_id).group_by(t.c.status)
        ):
            counts[status] = n
        first, last = (
            await conn.execute(
                select(func.min(t.c.started_at), func.max(t.c.finished_at)).where(
                    t.c.batch_id == batch_id
                )
            )
        ).one()
        groups = (
            await conn.execute(
                select(t.c.error_type, func.count().label("n"), func.min(t.c.id).label("sample"))
                .where(t.c.batch_id == batch_id, t.c.status == "failed")
                .group_by(t.c.error_type)
                .order_by(func.count().desc(), t.c.error_type)
                .limit(top)
            )
        ).all()
        samples: dict[int, Any] = {}
        if groups:
            samples = {
                r.id: r
                for r in await conn.execute(
                    select(t.c.id, t.c.url, t.c.error_message, t.c.retryable).where(
                        t.c.id.in_([g.sample for g in groups])
                    )
                )
            }
    # times come back through the UTC type decorator only for whole-column selects
    first = _aware(first)
    last = _aware(last)
    errors = [
        ErrorGroup(
            error_type=g.error_type or "unknown",
            count=g.n,
            sample_url=samples[g.sample].url if g.sample in samples else "",
            sample_message=(samples[g.sample].error_message or "") if g.sample in samples else "",
            retryable=samples[g.sample].retryable if g.sample in samples else None,
        )
        for g in groups
    ]
    return BatchSummary(
        batch_id=row["id"],
        name=row["name"],
        pipeline=row["pipeline"],
        pipeline_version=row["pipeline_version"],
        created_at=row["created_at"],
        counts=counts,
        first_started_at=first,
        last_finished_at=last,
        top_errors=errors,
        notify=row.get("notify"),
    )


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregates hand back the stored text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


# ---------------------------------------------------------------------------- the email
def compose_email(summary: BatchSummary, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The summary email: counts, duration, top error types with a sample, how to retry."""
    c = summary.counts
    outcome = f"{c['done']} done, {c['failed']} failed"
    if c["cancelled"]:
        outcome += f", {c['cancelled']} cancelled"
    msg = EmailMessage()
    label = clip(summary.name, 80) if summary.name else summary.batch_id  # one line, always
    msg["Subject"] = f"[Workbench] batch {label} finished: {outcome}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=_domain_of(sender))
    msg["X-Workbench-Batch"] = summary.batch_id
    bid = summary.batch_id
    lines = [
        f"Batch {summary.label} has finished.",
        "",
        f"Pipeline:  {summary.pipeline} v{summary.pipeline_version}",
        f"Items:     {summary.total} — "
        + ", ".join(f"{s} {c[s]}" for s in ("done", "failed", "cancelled")),
        f"Submitted: {summary.created_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if summary.last_finished_at is not None:
        lines.append(
            f"Finished:  {summary.last_finished_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(took {format_duration(summary.duration_s)})"
        )
    lines.append("")
    if summary.top_errors:
        lines.append("Failures by error type (most frequent first):")
        for g in summary.top_errors:
            retry = "" if g.retryable is None else (" (retryable)" if g.retryable else "")
            lines.append(f"  {g.error_type}: {g.count} item(s){retry}")
            lines.append(f"      e.g. {g.sample_url}")
            if g.sample_message:
                lines.append(f"      {clip(g.sample_message, 200)}")
        shown = sum(g.count for g in summary.top_errors)
        if shown < c["failed"]:
            lines.append(f"  … and {c['failed'] - shown} more in other error types")
        lines += [
            "",
            "To retry the failed items, from a shell:",
            f"    python -m workbench retry {bid}",
            "or in Python (a notebook):",
            "    from workbench import Workbench",
            "    wb = Workbench()",
            f'    batch = await wb.get_batch("{bid}")',
            "    await batch.retry()",
            "",
            f"List the failures:  python -m workbench failures {bid}",
        ]
    else:
        lines.append("No item failed.")
    lines += [
        f"Export the results: python -m workbench results {bid} --format csv -o results.csv",
        f'In Python:          df = await (await wb.get_batch("{bid}")).results()',
        "",
        f"-- sent by the Workbench worker on {socket.gethostname()}",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _domain_of(address: str) -> str:
    _, addr = email.utils.parseaddr(address)
    return addr.rpartition("@")[2] or "localhost"


def recipients_of(notify: str) -> list[str]:
    """``"a@b.org, c@d.org"`` -> both addresses."""
    return [a for _, a in email.utils.getaddresses([notify]) if "@" in a]


# ---------------------------------------------------------------------------- SMTP
@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False  # smtps:// (TLS from the first byte)
    start_tls: bool = False  # smtp+starttls://

    def __repr__(self) -> str:  # never show the password
        user = f"{self.username}@" if self.username else ""
        mode = "smtps" if self.use_tls else ("smtp+starttls" if self.start_tls else "smtp")
        return f"SmtpTarget({mode}://{user}{self.hostname}:{self.port})"


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://host:port`` (plain, default port 25), ``smtps://host:port`` (implicit TLS, 465),
    ``smtp+starttls://user:pass@host:port`` (STARTTLS, 587). User and password are
    percent-decoded."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    defaults = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}
    if scheme not in defaults or not parts.hostname:
        raise ValueError(
            "WORKBENCH_SMTP_URL must look like smtp://host:port, smtps://host:port or "
            "smtp+starttls://user:pass@host:port"
        )
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or defaults[scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=scheme == "smtps",
        start_tls=scheme == "smtp+starttls",
    )


class PermanentSmtpError(Exception):
    """The server refused for good (5xx) or the configuration cannot work."""


def _is_transient(exc: BaseException) -> bool:
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(400 <= r.code < 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 400 <= exc.code < 500
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return False
    return isinstance(exc, (OSError, TimeoutError, aiosmtplib.SMTPException))


async def send_email(
    message: EmailMessage,
    target: SmtpTarget,
    *,
    tries: int = 4,
    backoff_s: float = 2.0,
    timeout_s: float = 30.0,
    on_failure: Any = None,
) -> None:
    """Send with retries on transient failures. Raises ``PermanentSmtpError`` at once on a
    permanent one, or the last transient error once ``tries`` are used up."""
    import aiosmtplib

    for attempt in range(1, tries + 1):
        try:
            await aiosmtplib.send(
                message,
                hostname=target.hostname,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.use_tls,
                start_tls=target.start_tls,
                timeout=timeout_s,
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_failure is not None:
                on_failure(exc)
            if not _is_transient(exc):
                raise PermanentSmtpError(f"{type(exc).__name__}: {exc}") from exc
            if attempt == tries:
                raise
            delay = backoff_s * (2 ** (attempt - 1))
            log.info("smtp send failed; retrying", target=repr(target), attempt=attempt,
                     delay_s=delay, error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(delay)


# ---------------------------------------------------------------------------- claim and deliver
async def _claimed_at(ledger: Ledger, batch_id: str) -> datetime | None:
    async with ledger.read_engine.connect() as conn:
        return (
            await conn.execute(select(BatchRow.notified_at).where(BatchRow.id == batch_id))
        ).scalar_one_or_none()


async def unclaim_notification(ledger: Ledger, batch_id: str, claimed_at: datetime | None) -> bool:
    """Give a claim back (only our own: a newer claim after a retry of the batch is left alone),
    so the cleanup sweep or the next settle can try again. ``settled_at`` is kept: it marks the
    batch as one whose notification is owed."""
    t = BatchRow.__table__
    cond = [t.c.id == batch_id, t.c.notified_at.is_not(None)]
    if claimed_at is not None:
        cond.append(t.c.notified_at == claimed_at)
    async with ledger.engine.begin() as conn:
        res = await conn.execute(update(t).where(*cond).values(notified_at=None))
        return res.rowcount == 1


async def deliver_notification(
    settings: Settings, ledger: Ledger, batch_id: str, *, on_failure: Any = None
) -> str:
    """Send the email of a batch whose notification the caller has just claimed.

    Returns ``"sent"``, ``"permanent_failure"`` (logged, stays claimed) or ``"unclaimed"``
    (transient failures used up every try, or cancelled: the claim is given back)."""
    claimed_at = await _claimed_at(ledger, batch_id)
    try:
        if not settings.smtp_url:
            raise PermanentSmtpError("WORKBENCH_SMTP_URL is not set")
        target = parse_smtp_url(settings.smtp_url)
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
            await asyncio.shield(unclaim_notification(ledger, batch_id, claimed_at))
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):
            await unclaim_notification(ledger, batch_id, claimed_at)
        log.warning("notification email not sent; will retry at the next cleanup",
                    batch=batch_id, error=f"{type(exc).__name__}: {exc}"[:500])
        return "unclaimed"
    log.info("notification email sent", batch=batch_id, to=", ".join(to))
    return "sent"


class Notifier:
    """The settled hook of one worker: claims, then sends in a background task."""

    def __init__(self, settings: Settings, ledger: Ledger):
        self.settings = settings
        self.ledger = ledger
        self.tasks: set[asyncio.Task[str]] = set()
        self.outcomes: list[tuple[str, str]] = []  # (batch_id, outcome), for tests and logs
        self.failed_attempts = 0

    async def __call__(self, runtime: WorkerRuntime, batch: BatchInfo) -> None:
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


def install_notify_hook(runtime: WorkerRuntime) -> Notifier | None:
    """Add the notification hook to a worker when ``WORKBENCH_SMTP_URL`` is set (idempotent).
    The notifier is kept as ``runtime.notifier``."""
    existing = getattr(runtime, "notifier", None)
    if existing is not None:
        return existing
    if not runtime.settings.smtp_url:
        return None
    notifier = Notifier(runtime.settings, runtime.ledger)
    runtime.settled_hooks.append(notifier)
    runtime.notifier = notifier
    return notifier
