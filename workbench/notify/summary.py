"""Batch summaries: counts, timings and the most frequent error types of one batch.

``summarize_batch`` is shared by the completion email (``workbench.notify.email``), the CLI's
``status`` and ``demo`` and the HTTP API. The figures come from the ledger
(``Ledger.batch_activity``, aggregated in SQL: cheap on 100k items); the state comes from
``core.status.Counts``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workbench.core.status import BatchState, Counts
from workbench.core.text import clip
from workbench.ledger.store import ErrorGroup, Ledger

__all__ = ["BatchSummary", "ErrorGroup", "summarize_batch"]


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    name: str | None
    pipeline: str
    pipeline_version: str
    created_at: datetime
    counts: Counts
    first_started_at: datetime | None
    last_finished_at: datetime | None
    top_errors: list[ErrorGroup] = field(default_factory=list)
    notify: str | None = None

    @property
    def total(self) -> int:
        return self.counts.total

    @property
    def state(self) -> BatchState:
        return self.counts.state

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
    """Counts, timings and the ``top`` most frequent error types (with a sample each) of one
    batch. Raises ``BatchNotFoundError`` for an unknown id, ``LedgerError`` if the database
    cannot be read."""
    row = await ledger.get_batch(batch_id)
    activity = await ledger.batch_activity(batch_id, top=top)
    return BatchSummary(
        batch_id=row["id"],
        name=row["name"],
        pipeline=row["pipeline"],
        pipeline_version=row["pipeline_version"],
        created_at=row["created_at"],
        counts=activity.counts,
        first_started_at=activity.first_started_at,
        last_finished_at=activity.last_finished_at,
        top_errors=activity.top_errors,
        notify=row.get("notify"),
    )
