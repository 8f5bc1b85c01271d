"""What the completion email reads and claims: a batch's activity, and its notification claim.

``batch_activity`` aggregates in SQL (counts, first start, last end, the most frequent error types
with a sample item each): cheap on 100k items. ``workbench.notify.summary`` adds the batch row.

The claim (``notified_at``) is true for exactly one caller across every worker once nothing in the
batch is queued or running; a send that fails transiently gives it back (``settled_at`` kept, so
the daily cleanup knows the email is owed). ``Ledger`` inherits ``SummariesMixin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from workbench.core.status import Counts
from workbench.ledger import counters
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import BatchRow, ItemRow
from workbench.ledger.sql import table_of, utcnow


@dataclass(frozen=True)
class ErrorGroup:
    error_type: str
    count: int
    sample_url: str
    sample_message: str
    retryable: bool | None


@dataclass(frozen=True)
class BatchActivity:
    """Counts, timings and the top error types of a batch's items."""

    counts: Counts
    first_started_at: datetime | None
    last_finished_at: datetime | None
    top_errors: list[ErrorGroup] = field(default_factory=list)


class SummariesMixin:
    """Batch activity and notification claims, for ``Ledger``: uses its engines."""

    engine: AsyncEngine
    read_engine: AsyncEngine

    # ------------------------------------------------------------------ summaries
    async def batch_activity(self, batch_id: str, *, top: int = 5) -> BatchActivity:
        """Counts, first start, last end and the ``top`` most frequent error types of the failed
        items (with the first item of each as a sample). An unknown batch has no items."""
        t = table_of(ItemRow)
        with translate_errors("summarizing a batch"):
            async with self.read_engine.connect() as conn:
                counts = await counters.read(conn, batch_id)
                first, last = (
                    await conn.execute(
                        select(func.min(t.c.started_at), func.max(t.c.finished_at)).where(
                            t.c.batch_id == batch_id
                        )
                    )
                ).one()
                groups = (
                    await conn.execute(
                        select(
                            t.c.error_type,
                            func.count().label("n"),
                            func.min(t.c.id).label("sample"),
                        )
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
        errors = []
        for g in groups:
            sample = samples.get(g.sample)
            errors.append(
                ErrorGroup(
                    error_type=g.error_type or "unknown",
                    count=g.n,
                    sample_url=sample.url if sample else "",
                    sample_message=(sample.error_message or "") if sample else "",
                    retryable=sample.retryable if sample else None,
                )
            )
        # times come back through the UTC type decorator only for whole-column selects
        return BatchActivity(counts, _aware(first), _aware(last), errors)

    # ------------------------------------------------------------------ notification claims
    async def active_count(self, batch_id: str) -> int:
        with translate_errors("counting active items"):
            async with self.read_engine.connect() as conn:
                return (await counters.read(conn, batch_id)).active

    async def claim_notification(self, batch_id: str) -> bool:
        """True for exactly one caller once the batch has settled: that caller sends the email."""
        if await self.active_count(batch_id):
            return False
        now = utcnow()
        with translate_errors("claiming a notification"):
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id, BatchRow.notified_at.is_(None))
                    .values(notified_at=now, settled_at=now)
                )
                return res.rowcount == 1

    async def notification_claimed_at(self, batch_id: str) -> datetime | None:
        """When the batch's notification was claimed (None if unclaimed or no such batch)."""
        with translate_errors("reading a notification claim"):
            async with self.read_engine.connect() as conn:
                return (
                    await conn.execute(select(BatchRow.notified_at).where(BatchRow.id == batch_id))
                ).scalar_one_or_none()

    async def unclaim_notification(self, batch_id: str, claimed_at: datetime | None) -> bool:
        """Give a claim back (only our own: a newer claim after a retry of the batch is left
        alone), so the cleanup sweep or the next settle can try again. ``settled_at`` is kept: it
        marks the batch as one whose notification is owed."""
        t = table_of(BatchRow)
        cond = [t.c.id == batch_id, t.c.notified_at.is_not(None)]
        if claimed_at is not None:
            cond.append(t.c.notified_at == claimed_at)
        with translate_errors("giving back a notification claim"):
            async with self.engine.begin() as conn:
                res = await conn.execute(update(t).where(*cond).values(notified_at=None))
                return res.rowcount == 1

    async def owed_notifications(self, created_since: datetime) -> list[str]:
        """Ids of batches with ``notify`` whose email has not gone out, oldest first: claims given
        back after failed sends (``settled_at`` set), and batches created since ``created_since``
        that may have settled with no item finishing on a worker (no hook fired). Some may still
        be running: ``claim_notification`` decides."""
        b = table_of(BatchRow)
        with translate_errors("listing owed notifications"):
            async with self.read_engine.connect() as conn:
                return [
                    r.id
                    for r in await conn.execute(
                        select(b.c.id)
                        .where(
                            b.c.notify.is_not(None),
                            b.c.notified_at.is_(None),
                            b.c.settled_at.is_not(None) | (b.c.created_at >= created_since),
                        )
                        .order_by(b.c.created_at)
                    )
                ]


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregates hand back the stored text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
