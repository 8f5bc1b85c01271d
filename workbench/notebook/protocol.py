"""What the notebook layer needs of a batch, as protocols: ``workbench.client.Batch`` and its
``Workbench`` satisfy them without either side importing the other's module.

The notebook layer sits below the client (``tests/house/test_architecture.py``): the monitor and its
rendering work on these few reads and actions, and the client's ``Batch.widget()`` and reprs import
the notebook package, never the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from workbench.core.status import Counts

__all__ = ["BatchView", "MonitoredBatch", "MonitoredWorkbench"]


class BatchView(Protocol):
    """What ``render.batch_html`` needs of a batch: its identity and the counts last read."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def pipeline(self) -> str: ...
    @property
    def pipeline_version(self) -> str: ...
    @property
    def total(self) -> int: ...
    @property
    def last_counts(self) -> Mapping[str, int] | None: ...


class MonitoredWorkbench(Protocol):
    """What the monitor needs of the Workbench a batch belongs to."""

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called: reads fail from then on, and the monitor stops."""
        ...

    async def batches(self) -> Any:
        """The ``wb.batches()`` frame (for ``last_finished_at``)."""
        ...

    @property
    def sync(self) -> Any:
        """The blocking facade (``sync.get_batch(id).counts()``): for a script with no loop."""
        ...


class MonitoredBatch(BatchView, Protocol):
    """What the monitor reads and steers of a batch (``workbench.client.Batch`` is one)."""

    @property
    def created_at(self) -> Any: ...
    @property
    def workbench(self) -> MonitoredWorkbench: ...
    @property
    def last_counts(self) -> Counts | None:
        """The counts the batch's ``counts()`` read last (by anyone), without I/O."""
        ...

    async def counts(self) -> Counts: ...
    async def paced(self) -> tuple[int, int]:
        """``(items, hosts)``: items waiting in the queue for their paced hosts' turn."""
        ...

    async def failures(self, columns: Sequence[str] | None = None) -> Any: ...
    async def _failures_since(self, mark: Any) -> tuple[Any, list[tuple[Any, ...]], int]:
        """``(mark, [(item_id, url, error_type, error_message), ...], failed)``: the failed
        items that finished since ``mark`` (every one when None), the mark to pass next time,
        and the batch's number of failed items as the same read saw it."""
        ...

    async def retry(self, item_ids: Sequence[int] | None = None) -> int: ...
    async def cancel(self) -> int: ...
