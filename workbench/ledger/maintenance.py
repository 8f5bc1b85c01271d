"""The cleanup's side of the ledger: which queue entries are stale, and the worker records' sweep.

Stored raw pages are deleted by ``PageStore.delete_older_than``; results, batches and items are
research data and nothing here deletes them. ``Ledger`` inherits ``MaintenanceMixin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from workbench.core.status import TERMINAL_STATUSES
from workbench.ledger import counters
from workbench.ledger.engine import translate_errors
from workbench.ledger.models import ItemRow, WorkerRow
from workbench.ledger.sql import chunks, table_of


class MaintenanceMixin:
    """Sweeps for the daily cleanup, for ``Ledger``: uses its engines."""

    engine: AsyncEngine
    read_engine: AsyncEngine

    async def stale_jobs(self, jobs: Mapping[str, tuple[int, int]]) -> list[str]:
        """The job ids among ``jobs`` (job id -> (item id, attempt)) whose item is finished
        (done, failed or cancelled), superseded by a newer attempt, or unknown."""
        if not jobs:
            return []
        t = table_of(ItemRow)
        ids = sorted({item for item, _ in jobs.values()})
        current: dict[int, tuple[str, int]] = {}
        with translate_errors("reading item states"):
            async with self.read_engine.connect() as conn:
                for chunk in chunks(ids):
                    for row in await conn.execute(
                        select(t.c.id, t.c.status, t.c.attempts).where(t.c.id.in_(chunk))
                    ):
                        current[row.id] = (row.status, row.attempts)
        stale = []
        for jid, (item, attempt) in jobs.items():
            state = current.get(item)
            if state is None or state[0] in TERMINAL_STATUSES or state[1] != attempt:
                stale.append(jid)
        return stale

    async def sweep_workers(
        self, dead_before: datetime, forget_before: datetime
    ) -> tuple[int, int]:
        """Mark stopped the worker records whose heartbeat stopped before ``dead_before`` (as of
        their last heartbeat), and remove those stopped and silent since before
        ``forget_before``. Items are never touched. Returns (marked, removed)."""
        w = table_of(WorkerRow)
        with translate_errors("sweeping worker records"):
            async with self.engine.begin() as conn:
                marked = await conn.execute(
                    update(w)
                    .where(w.c.stopped_at.is_(None), w.c.heartbeat_at < dead_before)
                    .values(stopped_at=w.c.heartbeat_at)
                )
                forgotten = await conn.execute(
                    delete(w).where(
                        and_(w.c.stopped_at.is_not(None), w.c.stopped_at < forget_before,
                             w.c.heartbeat_at < forget_before)
                    )
                )
        return marked.rowcount, forgotten.rowcount

    async def fold_counters(self) -> int:
        """Fold the per-connection rows of settled batches' status counters (PostgreSQL;
        ``ledger.counters.fold``). Returns how many rows were folded."""
        with translate_errors("folding batch counters"):
            async with self.engine.begin() as conn:
                return await counters.fold(conn)

