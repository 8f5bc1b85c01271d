"""The status model: item states, the batch state derived from them, and per-status counts.

One place for the rule "queued + running = active, the rest settled" (DESIGN.md §1)::

    queued → running → done | failed | cancelled
    running → queued     (transient error: automatic retry with backoff)
    failed → queued      (manual retry)
    queued|running → cancelled

A batch is ``running`` while any item is active, then ``completed``. ``Counts`` is the one shape
of per-status counts that the client, frames, monitor, CLI, API and email all use; it is a plain
``dict`` of every status to its count (the public ``batch.counts()`` contract) with the derived
figures as properties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class ItemStatus(StrEnum):
    """The state of one item; compares equal to its string value (``ItemStatus.DONE == "done"``)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Not settled yet: the queue still owes this item a run."""
        return self in (ItemStatus.QUEUED, ItemStatus.RUNNING)


class BatchState(StrEnum):
    """A batch's state, derived from its items' counts."""

    RUNNING = "running"
    COMPLETED = "completed"


#: Every item status, in lifecycle order (columns, categories, count keys).
ITEM_STATUSES: tuple[str, ...] = tuple(s.value for s in ItemStatus)
#: Statuses of items the queue still owes a run.
ACTIVE_STATUSES: tuple[str, ...] = tuple(s.value for s in ItemStatus if s.active)
#: Statuses an item keeps until someone retries it.
TERMINAL_STATUSES: tuple[str, ...] = tuple(s.value for s in ItemStatus if not s.active)


class Counts(dict[str, int]):
    """Items per status, every status present (0 when none), plus the figures derived from them.

    A ``dict`` subclass so that it is what ``batch.counts()`` has always returned (JSON-ready,
    comparable to a plain dict) while ``counts.active`` / ``counts.state`` keep the rule here.
    """

    def __init__(self, values: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None) -> None:
        given = dict(values or {})
        unknown = set(given) - set(ITEM_STATUSES)
        if unknown:
            raise ValueError(f"unknown item status(es): {', '.join(sorted(map(str, unknown)))}")
        super().__init__({s: int(given.get(s) or 0) for s in ITEM_STATUSES})

    @property
    def total(self) -> int:
        return sum(self.values())

    @property
    def active(self) -> int:
        """Items queued or running."""
        return sum(self[s] for s in ACTIVE_STATUSES)

    @property
    def settled(self) -> int:
        """Items done, failed or cancelled."""
        return self.total - self.active

    @property
    def is_settled(self) -> bool:
        """Nothing queued or running (an empty batch is settled)."""
        return self.active == 0

    @property
    def state(self) -> BatchState:
        return BatchState.RUNNING if self.active else BatchState.COMPLETED

    # repr is dict's own: a notebook printing ``await batch.wait()`` sees the plain mapping.


def batch_state(counts: Mapping[str, Any]) -> BatchState:
    """The state of a batch with these per-status counts."""
    return Counts(counts).state
