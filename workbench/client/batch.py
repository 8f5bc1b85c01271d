"""``Batch``: one submitted batch, read and steered through the ledger (``wb.submit`` and
``wb.get_batch`` return one). Every method reads the ledger afresh; none keeps state but the counts
it read last (for reprs and the monitor, which never do I/O to draw).

A Batch reaches its Workbench only through ``BatchOwner``, the few things it needs of it, so
``client.workbench`` imports this module and never the reverse.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import IO, Any, BinaryIO, Protocol

import numpy as np
import pandas as pd

from workbench.client import archive, cancelling, carried, export, frames, reading
from workbench.core import codec
from workbench.core.errors import (
    EmptyBatchError,
    InvalidInputError,
    QueueError,
    WaitTimeout,
)
from workbench.core.logs import get_logger
from workbench.core.settings import Settings
from workbench.core.status import BatchState, Counts
from workbench.ledger.store import Ledger, NewBatch
from workbench.notebook.monitor import BatchMonitor, display_batch
from workbench.notebook.render import batch_html
from workbench.pipeline.registry import get_pipeline
from workbench.queue import QueueRedis
from workbench.queue import jobs as queue
from workbench.queue.lines import waiting_on_hosts

log = get_logger("workbench.client.batch")


class BatchOwner(Protocol):
    """What a Batch needs of the Workbench that made it (``client.workbench.Workbench``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def closed(self) -> bool: ...
    @property
    def sync(self) -> Any: ...
    async def open_ledger(self) -> Ledger: ...
    async def open_queue(self) -> QueueRedis: ...
    async def batches(self) -> pd.DataFrame: ...
    async def create_batch(
        self, spec: NewBatch, entries: Sequence[tuple[int, str, str]], *, use_cache: bool,
        invalid: Sequence[tuple[int, object, str]] = (),
        carried: Sequence[str | None] | None = None,
    ) -> Batch: ...


class Batch:
    """A submitted batch. Methods read the ledger afresh on every call."""

    def __init__(self, wb: BatchOwner, row: dict[str, Any]):
        self._wb = wb
        self.id: str = row["id"]
        self.name: str | None = row["name"]
        self.pipeline: str = row["pipeline"]
        self.pipeline_version: str = row["pipeline_version"]
        self.params: dict[str, Any] = row["params"] or {}
        self.created_at = row["created_at"]
        self.total: int = row["total"]
        self.use_stored_pages: bool = bool(row["use_stored_pages"])
        self.source_batch_id: str | None = row.get("source_batch_id")
        #: the input's columns carried with each item (``submit(df)``, ``submit_warc``)
        self.carried_columns = carried.specs_from_json(row.get("carried"))
        #: entries left out by ``on_invalid="skip"``: (position, entry, reason)
        self.invalid: list[tuple[int, object, str]] = []
        #: items answered from the result cache at submit
        self.cached: int = 0
        self._last_counts: Counts | None = None

    @property
    def workbench(self) -> BatchOwner:
        """The Workbench this batch was read through."""
        return self._wb

    @property
    def last_counts(self) -> Counts | None:
        """What ``counts()`` read last (by any caller: ``wait()``, the monitor), without I/O;
        ``None`` before the first read."""
        return self._last_counts

    async def counts(self) -> Counts:
        """``{status: count}`` with all five statuses present (a ``Counts``: a dict that also
        knows ``.active``, ``.settled`` and ``.state``)."""
        counts = await (await self._wb.open_ledger()).counts(self.id)
        self._last_counts = counts
        return counts

    async def state(self) -> BatchState:
        """``running`` while any item is queued or running, then ``completed``."""
        return (await self.counts()).state

    async def paced(self) -> tuple[int, int]:
        """``(items, hosts)``: this batch's items waiting in the queue for their paced hosts'
        turn right now (the monitor's "312 items waiting on 3 paced hosts")."""
        return await waiting_on_hosts(
            await self._wb.open_queue(), self._wb.settings.queue_name, self.id
        )

    async def status(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per item: status, attempts, timestamps, worker, last error. ``columns``
        names the item columns to read (``item_id`` always comes first). Carried columns
        (``client.carried``) follow ``url``."""
        ledger = await self._wb.open_ledger()
        df = await reading.whole_items(ledger, self.id, columns=columns,
                                       default=frames.ITEM_COLUMNS)
        return await carried.with_carried(df, ledger, self.id, self.carried_columns)

    async def results(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Done items with the pipeline's fields as columns, then provenance.

        ``columns`` names the pipeline fields to read (``item_id``, ``url`` and provenance
        come always): the others are never read, and a projection naming no bulky field (a
        page's text) never reads the texts. For batches too large for one frame, see
        ``iter_results`` and ``to_parquet``. Carried columns (``client.carried``) follow
        ``url``."""
        ledger = await self._wb.open_ledger()
        df = await reading.whole_results(ledger, self.id, columns=columns)
        return await carried.with_carried(df, ledger, self.id, self.carried_columns, ["done"])

    async def iter_results(
        self, chunk_rows: int = 50_000, columns: Sequence[str] | None = None
    ) -> AsyncGenerator[pd.DataFrame, None]:
        """``async for df in batch.iter_results(): ...``: the results in item order,
        ``chunk_rows`` a frame, every frame with the same columns and dtypes (decided from the
        whole batch up front); memory follows the chunk, not the batch."""
        reading.check_chunk_rows(chunk_rows)
        frames_read = reading.iter_results(await self._wb.open_ledger(), self.id,
                                           chunk_rows=chunk_rows, columns=columns,
                                           carried_columns=self.carried_columns)
        async with aclosing(frames_read) as chunks:
            async for df in chunks:
                yield df
                del df  # not kept while the next chunk is built

    async def export_text(
        self, fmt: str = "csv", columns: Sequence[str] | None = None, *,
        chunk_rows: int = 20_000,
    ) -> AsyncGenerator[str, None]:
        """The results as CSV (one header row) or JSONL text, a piece at a time, read
        ``chunk_rows`` at a time: for a streamed response or file (``client.export``)."""
        if fmt not in ("csv", "jsonl"):
            raise InvalidInputError(f"format must be 'csv' or 'jsonl', got {fmt!r}")
        ledger = await self._wb.open_ledger()
        schemas = await reading.result_schemas(ledger, self.id, columns)
        names = export.arrow_schema(*schemas, self.carried_columns).names
        chunks = reading.iter_results(ledger, self.id, chunk_rows=chunk_rows, columns=columns,
                                      schemas=schemas, carried_columns=self.carried_columns)
        async with aclosing(export.stream_text(chunks, fmt, names)) as pieces:
            async for piece in pieces:
                yield piece
                del piece

    async def iter_status(
        self, chunk_rows: int = 200_000, columns: Sequence[str] | None = None
    ) -> AsyncGenerator[pd.DataFrame, None]:
        """``status()`` in chunks of ``chunk_rows`` items, same columns and dtypes in each."""
        names = reading.check_columns(columns)
        items_read = reading.iter_items(
            await self._wb.open_ledger(), self.id, chunk_rows=chunk_rows,
            columns=frames.ITEM_COLUMNS if names is None else names,
        )
        async with aclosing(items_read) as chunks:
            async for df in chunks:
                yield df
                del df  # not kept while the next chunk is built

    async def iter_failures(
        self, chunk_rows: int = 50_000, columns: Sequence[str] | None = None
    ) -> AsyncGenerator[pd.DataFrame, None]:
        """``failures()`` in chunks of ``chunk_rows`` items, same columns and dtypes in each."""
        names = reading.check_columns(columns)
        items_read = reading.iter_items(
            await self._wb.open_ledger(), self.id, chunk_rows=chunk_rows, statuses=["failed"],
            columns=frames.FAILURE_COLUMNS if names is None else names,
        )
        async with aclosing(items_read) as chunks:
            async for df in chunks:
                yield df
                del df  # not kept while the next chunk is built

    async def to_parquet(
        self, path: str | os.PathLike[str] | IO[bytes], columns: Sequence[str] | None = None,
        *, chunk_rows: int = 10_000,
    ) -> int:
        """Write the results to a Parquet file, one row group per ``chunk_rows`` as they are
        read (memory follows the chunk). Returns the rows written. The file's schema is decided
        from the whole batch before the first row group (``client.export.arrow_schema``)."""
        return await export.write_batch_parquet(
            await self._wb.open_ledger(), self.id, path, columns=columns,
            chunk_rows=chunk_rows, carried=self.carried_columns,
        )

    async def failures(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Failed items with ``error_type``, ``error_message``, ``retryable`` and traceback;
        ``columns`` names the columns to read (without ``traceback``, none is read). Carried
        columns (``client.carried``) follow ``url``."""
        ledger = await self._wb.open_ledger()
        df = await reading.whole_items(ledger, self.id, columns=columns,
                                       default=frames.FAILURE_COLUMNS, statuses=["failed"])
        return await carried.with_carried(df, ledger, self.id, self.carried_columns, ["failed"])

    async def _failures_since(self, mark: Any) -> tuple[Any, list[tuple[Any, ...]], int]:
        """For the monitor (``notebook.protocol``): ``(item_id, url, error_type,
        error_message)`` of the failures newer than ``mark`` (all when None), the next mark,
        and the number of failed items in the same snapshot (``Ledger.failures_since``)."""
        return await (await self._wb.open_ledger()).failures_since(self.id, mark)

    async def embeddings(self, column: str = "embedding") -> tuple[np.ndarray, pd.Index]:
        """The ``column`` of every done item stacked into a matrix (rows follow the returned
        index of item ids), ready for numpy and scikit-learn."""
        fields = (await (await self._wb.open_ledger()).result_schema(self.id)).names
        if column not in fields:
            raise InvalidInputError(
                f"no {column!r} field in the results of batch {self.id}; fields: "
                f"{', '.join(fields) or '(none yet)'}"
            )
        df = await self.results(columns=[column])
        present = df[df[column].map(lambda v: v is not None and not _is_nan(v))]
        if present.empty:
            return np.zeros((0, 0), dtype=np.float32), pd.Index([], name="item_id")
        matrix = np.vstack([np.asarray(v, dtype=np.float32) for v in present[column]])
        return matrix, pd.Index(present["item_id"], name="item_id")

    async def retry(self, item_ids: Sequence[int] | None = None) -> int:
        """Re-queue failed items (or the given failed/cancelled ones). Returns how many."""
        ledger = await self._wb.open_ledger()
        jobs = await ledger.retry(self.id, item_ids)
        await queue.enqueue(await self._wb.open_queue(), self._wb.settings.queue_name, jobs)
        return len(jobs)

    async def cancel(self) -> int:
        """Cancel what has not finished. Returns how many items were cancelled."""
        ledger = await self._wb.open_ledger()
        redis: QueueRedis | None = None
        try:
            redis = await self._wb.open_queue()
        except QueueError as exc:  # harmless: a job left finds its item cancelled
            log.warning("could not drop cancelled jobs from Redis", error=str(exc))
        # the ledger's update and the jobs' removal at once (``client.cancelling``)
        return await cancelling.cancel(ledger, redis, self._wb.settings.queue_name, self.id)

    async def wait(
        self,
        timeout: float | None = None,  # noqa: ASYNC109 - the public contract (DESIGN.md §4)
        *,
        poll_s: float = 0.25,
        progress: bool = False,
    ) -> Counts:
        """Return the counts once nothing is queued or running; ``WaitTimeout`` after
        ``timeout`` seconds. ``progress=True`` shows a tqdm bar (notebook or terminal)."""
        if timeout is not None and timeout < 0:
            raise InvalidInputError(f"timeout must be >= 0, got {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, desc=self.name or self.id, unit="item")
        try:
            delay = min(poll_s, 0.05)
            while True:
                counts = await self.counts()
                active = counts.active
                if bar is not None:
                    bar.total = counts.total
                    bar.n = counts.settled
                    bar.set_postfix(done=counts["done"], failed=counts["failed"], refresh=False)
                    bar.refresh()
                if not active:
                    return counts
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(
                        f"batch {self.id} still has {active} item(s) queued or running after "
                        f"{timeout:g}s: {dict(counts)}",
                        counts,
                    )
                sleep = delay
                if deadline is not None:
                    sleep = min(delay, max(0, deadline - time.monotonic()))
                await asyncio.sleep(sleep)
                delay = min(poll_s * 4, delay * 1.5 + 0.01)
        finally:
            if bar is not None:
                bar.close()

    async def rerun(
        self,
        pipeline: str | None = None,
        params: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Batch:
        """Analyse this batch's URLs again from their stored pages (no network): with a new
        pipeline, version or params. Returns the new batch; its items carry this batch's
        carried columns (a table's, a WARC's provenance)."""
        spec = get_pipeline(pipeline or self.pipeline)
        clean = codec.check_json_object(self.params if params is None else params)
        rows = await (await self._wb.open_ledger()).item_rows(self.id)
        entries = [(r["position"], r["url"], r["normalized_url"]) for r in rows]
        kept = [r.get("carried") for r in rows] if self.carried_columns else None
        if not entries:
            raise EmptyBatchError(f"batch {self.id} has no items to rerun")
        return await self._wb.create_batch(
            NewBatch(
                pipeline=spec.name,
                pipeline_version=spec.version,
                params=clean,
                params_hash=codec.params_hash(clean),
                name=name or f"rerun of {self.name or self.id}",
                use_stored_pages=True,
                source_batch_id=self.id,
                carried=carried.specs_to_json(self.carried_columns) or None,
            ),
            entries,
            use_cache=True,
            carried=kept,
        )

    async def export_warc(self, path: str | os.PathLike[str] | BinaryIO) -> int:
        """Write the pages this batch's done items analysed as a WARC/1.1 file (gzip per
        record; ``client.archive``). Returns the number of response records written."""
        info = {"pipeline": f"{self.pipeline} {self.pipeline_version}"}
        if self.name:
            info["batch-name"] = self.name
        return await archive.export_warc(await self._wb.open_ledger(), self.id, path, info=info)

    def widget(self) -> BatchMonitor:
        """A live ipywidgets monitor of this batch."""
        return BatchMonitor(self).show()

    def __repr__(self) -> str:
        counts = self._last_counts
        tail = ""
        if counts is not None:
            tail = " " + " ".join(f"{k}={v}" for k, v in counts.items()) + f" ({counts.state})"
        name = f" {self.name!r}" if self.name else ""
        return (f"<Batch {self.id}{name} pipeline={self.pipeline} v{self.pipeline_version} "
                f"items={self.total}{tail}>")

    def _repr_html_(self) -> str:
        return batch_html(self)

    def _ipython_display_(self) -> None:
        """As a cell's last expression: the live monitor (static summary without a loop)."""
        display_batch(self)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v
