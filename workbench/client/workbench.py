"""The notebook-facing client: ``Workbench`` submits batches, ``Batch`` reads and steers them.

The client reads the ledger, never ARQ's result keys. Connections open lazily on first use and
belong to the instance (notebooks reload modules; no module-level state).
"""

from __future__ import annotations

import asyncio
import html
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import structlog

from workbench.client import frames
from workbench.core import codec
from workbench.core.errors import (
    EmptyBatchError,
    InvalidInputError,
    InvalidParamsError,
    InvalidURLError,
    QueueError,
    WaitTimeout,
)
from workbench.core.settings import Settings, load_settings
from workbench.core.urls import check_urls
from workbench.ledger.store import Ledger, NewBatch
from workbench.pipeline.registry import get_pipeline, load_pipeline_modules
from workbench.queue import QueueRedis
from workbench.queue import jobs as queue
from workbench.queue.reconcile import ReconcileReport, reconcile

if TYPE_CHECKING:
    from workbench.client.sync import SyncProxy
    from workbench.worker.runtime import WorkerRuntime

log = structlog.get_logger("workbench.client.workbench")


class Workbench:
    """Entry point: ``wb = Workbench()`` (settings from ``WORKBENCH_*`` env and keywords)."""

    def __init__(self, **settings: Any):
        self.settings: Settings = load_settings(**settings)
        load_pipeline_modules(self.settings.pipeline_modules)
        self._ledger: Ledger | None = None
        self._redis: QueueRedis | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._workers: list[tuple[Any, WorkerRuntime, asyncio.Task[None]]] = []
        self._sync: SyncProxy | None = None
        self._closed = False

    # ------------------------------------------------------------------ connections
    async def open_ledger(self) -> Ledger:
        """The ledger, opened and migrated on first use (for tools built on Workbench: the API,
        the CLI). Prefer the Batch methods for everything they cover."""
        if self._closed:
            raise InvalidInputError("this Workbench is closed; create a new one")
        if self._ledger is None:
            if self._connect_lock is None:
                self._connect_lock = asyncio.Lock()
            async with self._connect_lock:
                if self._ledger is None:
                    ledger = Ledger(self.settings.effective_database_url)
                    await ledger.start()
                    self._ledger = ledger
        return self._ledger

    async def _redis_ready(self) -> QueueRedis:
        if self._redis is None:
            if self._connect_lock is None:
                self._connect_lock = asyncio.Lock()
            async with self._connect_lock:  # concurrent first calls must not open two pools
                if self._redis is None:
                    self._redis = await queue.connect(self.settings)
        return self._redis

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the ledger is not open yet; await a Workbench method first")
        return self._ledger

    # ------------------------------------------------------------------ submit
    async def submit(
        self,
        urls: Iterable[str],
        pipeline: str = "article",
        params: dict[str, Any] | None = None,
        name: str | None = None,
        refresh: bool = False,
        *,
        on_invalid: str = "raise",
        notify: str | None = None,
    ) -> Batch:
        """Validate, normalize and dedupe ``urls``, record the batch, and queue its items.

        URLs already analysed with the same pipeline, version and params reuse their stored
        result (marked ``cached``) unless ``refresh=True``. Invalid entries raise
        ``InvalidURLError`` naming each one, or with ``on_invalid="skip"`` are left out and
        listed in ``batch.invalid``.
        """
        spec = get_pipeline(pipeline)
        entries = _url_list(urls)
        try:
            clean_params = codec.check_json_object(params)
        except ValueError as exc:
            raise InvalidParamsError(str(exc)) from None
        if on_invalid not in ("raise", "skip"):
            raise InvalidInputError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise InvalidInputError("name must be a string of at most 200 characters")
        if notify is not None and (not isinstance(notify, str) or "@" not in notify):
            raise InvalidInputError(f"notify must be an email address, got {notify!r}")
        checked = check_urls(entries)
        if checked.invalid and on_invalid == "raise":
            raise InvalidURLError(checked.invalid)
        if not checked.valid:
            raise EmptyBatchError(
                "nothing to submit: " + ("no URLs given" if not entries else "every URL is invalid")
            )
        return await self._create(
            NewBatch(
                pipeline=spec.name,
                pipeline_version=spec.version,
                params=clean_params,
                params_hash=codec.params_hash(clean_params),
                name=name,
                notify=notify,
                invalid=len(checked.invalid),
                duplicates=checked.duplicates,
            ),
            checked.valid,
            use_cache=not refresh,
            invalid=checked.invalid,
        )

    async def _create(
        self,
        spec: NewBatch,
        entries: Sequence[tuple[int, str, str]],
        *,
        use_cache: bool,
        invalid: Sequence[tuple[int, object, str]] = (),
    ) -> Batch:
        ledger = await self.open_ledger()
        outcome = await ledger.create_batch(spec, entries, use_cache=use_cache)
        try:
            redis = await self._redis_ready()
            await queue.enqueue(redis, self.settings.queue_name, outcome.queued)
        except QueueError as exc:
            # The ledger has every item as queued: a worker's reconcile pass enqueues them later.
            warnings.warn(
                f"batch {outcome.batch_id} is recorded but could not be queued yet ({exc}); "
                "a worker will queue it when Redis is reachable",
                RuntimeWarning,
                stacklevel=3,
            )
        batch = Batch(self, await ledger.get_batch(outcome.batch_id))
        batch.invalid = list(invalid)
        batch.cached = outcome.cached
        log.info("batch submitted", batch=batch.id, items=len(entries),
                 cached=outcome.cached, invalid=len(invalid))
        return batch

    # ------------------------------------------------------------------ reads
    async def batches(self) -> pd.DataFrame:
        """One row per batch: counts per status, state, timings."""
        ledger = await self.open_ledger()
        return frames.batches_frame(await ledger.list_batches())

    async def get_batch(self, batch_id: str) -> Batch:
        ledger = await self.open_ledger()
        return Batch(self, await ledger.get_batch(batch_id))

    async def reconcile(self, *, full: bool = True) -> ReconcileReport:
        """Re-enqueue what the ledger holds as queued but Redis lost, and items of dead workers."""
        return await reconcile(
            await self.open_ledger(), await self._redis_ready(), self.settings, full=full
        )

    # ------------------------------------------------------------------ in-kernel worker
    async def start_worker(self, *, concurrency: int | None = None,
                           cpu_processes: int | None = None,
                           log_level: str | None = "warning") -> WorkerRuntime:
        """Run a worker inside this event loop (a notebook's kernel), e.g. for pipelines defined
        in the notebook. It shares the ledger and queue semantics of ``python -m workbench.worker``
        and stops with ``close()`` (or ``stop_workers()``). ``log_level`` is the level of
        Workbench's own ``workbench`` logger (warnings only by default, so cell output stays
        readable); the root logger and its level are left alone. ``None`` leaves logging as it
        is."""
        from workbench.core.logs import configure_workbench_logger
        from workbench.worker.process import build_worker

        if log_level is not None:
            configure_workbench_logger(log_level)

        await self.open_ledger()
        worker, runtime = await build_worker(
            self.settings, concurrency=concurrency, handle_signals=False,
            cpu_processes=cpu_processes,
        )
        task = asyncio.get_running_loop().create_task(worker.async_run(), name="workbench-worker")
        self._workers.append((worker, runtime, task))
        # wait until it is registered so a submit right after is picked up
        for _ in range(200):
            if runtime.worker_id in {w["id"] for w in await self.ledger.workers()}:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        return runtime

    async def stop_workers(self) -> None:
        """Stop in-kernel workers; items they were running go back to the queue."""
        workers, self._workers = self._workers, []
        for worker, _runtime, task in workers:
            await worker.close()
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def close(self, *, stop_redis: bool = False) -> None:
        """Stop in-kernel workers and close connections. Idempotent.

        The embedded redis-server outlives a Workbench on purpose (workers and other kernels
        share it); ``stop_redis=True`` stops it too, for a notebook or script that owns its data
        dir. Nothing is lost either way: the queue is in its AOF and the ledger is the truth."""
        await self.stop_workers()
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)
            self._redis = None
        if self._ledger is not None:
            await self._ledger.close()
            self._ledger = None
        if stop_redis and self.settings.uses_embedded_redis:
            from workbench.queue.embedded import EmbeddedRedis

            await asyncio.to_thread(EmbeddedRedis(self.settings.embedded_redis_dir).stop)
        self._closed = True

    async def __aenter__(self) -> Workbench:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sync(self) -> SyncProxy:
        """A synchronous facade for scripts and widget callbacks: ``wb.sync.submit(urls)``."""
        if self._sync is None:
            from workbench.client.sync import SyncProxy, SyncRunner

            self._sync = SyncProxy(self, SyncRunner())
        return self._sync

    def __repr__(self) -> str:
        s = self.settings
        redis = "embedded" if s.uses_embedded_redis else "external"
        db = "sqlite" if s.effective_database_url.startswith("sqlite") else "postgresql"
        state = "closed" if self._closed else f"{len(self._workers)} in-kernel worker(s)"
        return (f"<Workbench data_dir={str(s.resolved_data_dir)!r} db={db} redis={redis} "
                f"queue={s.queue_name!r} {state}>")

    def _repr_html_(self) -> str:
        s = self.settings
        described = s.describe()  # secrets masked
        rows = [
            ("data dir", str(s.resolved_data_dir)),
            ("ledger", described["database_url"] or s.effective_database_url),
            ("queue", f"{described['redis_url'] or 'embedded Redis (unix socket in the data dir)'}"
                      f" · {s.queue_name}"),
            ("in-kernel workers", "closed" if self._closed else str(len(self._workers))),
        ]
        try:
            from workbench.pipeline.registry import registry

            rows.append(("pipelines", ", ".join(registry.names())))
        except Exception:
            pass
        body = "".join(
            f"<tr><td style='text-align:left;padding-right:12px;opacity:.7'>{html.escape(k)}</td>"
            f"<td style='text-align:left'><code>{html.escape(v)}</code></td></tr>"
            for k, v in rows
        )
        return (
            f"<div><b>Workbench</b>{' (closed)' if self._closed else ''}<table>{body}</table>"
            "<span style='opacity:.7'><code>batch = await wb.submit(urls)</code> starts a batch, "
            "<code>await wb.batches()</code> lists them</span></div>"
        )


class Batch:
    """A submitted batch. Methods read the ledger afresh on every call."""

    def __init__(self, wb: Workbench, row: dict[str, Any]):
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
        #: entries left out by ``on_invalid="skip"``: (position, entry, reason)
        self.invalid: list[tuple[int, object, str]] = []
        #: items answered from the result cache at submit
        self.cached: int = 0
        self._last_counts: dict[str, int] | None = None

    @property
    def workbench(self) -> Workbench:
        return self._wb

    async def counts(self) -> dict[str, int]:
        """``{status: count}`` with all five statuses present."""
        counts = await (await self._wb.open_ledger()).counts(self.id)
        self._last_counts = counts
        return counts

    async def state(self) -> str:
        return frames.state_of(await self.counts())

    async def status(self) -> pd.DataFrame:
        """One row per item: status, attempts, timestamps, worker, last error."""
        rows = await (await self._wb.open_ledger()).item_rows(self.id)
        return frames.items_frame(rows)

    async def results(self) -> pd.DataFrame:
        """Done items with the pipeline's fields as columns, then provenance."""
        rows = await (await self._wb.open_ledger()).result_rows(self.id)
        return frames.results_frame(rows)

    async def failures(self) -> pd.DataFrame:
        """Failed items with ``error_type``, ``error_message``, ``retryable`` and traceback."""
        rows = await (await self._wb.open_ledger()).item_rows(self.id, statuses=["failed"])
        return frames.failures_frame(rows)

    async def embeddings(self, column: str = "embedding") -> tuple[np.ndarray, pd.Index]:
        """The ``column`` of every done item stacked into a matrix (rows follow the returned
        index of item ids), ready for numpy and scikit-learn."""
        df = await self.results()
        if column not in df.columns:
            raise InvalidInputError(
                f"no {column!r} field in the results of batch {self.id}; fields: "
                f"{', '.join(map(str, df.columns))}"
            )
        present = df[df[column].map(lambda v: v is not None and not _is_nan(v))]
        if present.empty:
            return np.zeros((0, 0), dtype=np.float32), pd.Index([], name="item_id")
        matrix = np.vstack([np.asarray(v, dtype=np.float32) for v in present[column]])
        return matrix, pd.Index(present["item_id"], name="item_id")

    async def retry(self, item_ids: Sequence[int] | None = None) -> int:
        """Re-queue failed items (or the given failed/cancelled ones). Returns how many."""
        ledger = await self._wb.open_ledger()
        jobs = await ledger.retry(self.id, item_ids)
        await queue.enqueue(await self._wb._redis_ready(), self._wb.settings.queue_name, jobs)
        return len(jobs)

    async def cancel(self) -> int:
        """Cancel what has not finished. Returns how many items were cancelled."""
        ledger = await self._wb.open_ledger()
        jobs = await ledger.cancel(self.id)
        try:
            await queue.drop(await self._wb._redis_ready(), self._wb.settings.queue_name, jobs)
        except QueueError as exc:  # harmless: a dropped-late job finds its item cancelled
            log.warning("could not drop cancelled jobs from Redis", error=str(exc))
        return len(jobs)

    async def wait(
        self, timeout: float | None = None, *, poll_s: float = 0.25, progress: bool = False
    ) -> dict[str, int]:
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
                active = counts["queued"] + counts["running"]
                if bar is not None:
                    total = sum(counts.values())
                    bar.total = total
                    bar.n = total - active
                    bar.set_postfix(done=counts["done"], failed=counts["failed"], refresh=False)
                    bar.refresh()
                if not active:
                    return counts
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(
                        f"batch {self.id} still has {active} item(s) queued or running after "
                        f"{timeout:g}s: {counts}",
                        counts,
                    )
                sleep = delay if deadline is None else min(delay, max(0, deadline - time.monotonic()))
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
        pipeline, version or params. Returns the new batch."""
        spec = get_pipeline(pipeline or self.pipeline)
        try:
            clean = codec.check_json_object(self.params if params is None else params)
        except ValueError as exc:
            raise InvalidParamsError(str(exc)) from None
        rows = await (await self._wb.open_ledger()).item_rows(self.id)
        entries = [(r["position"], r["url"], r["normalized_url"]) for r in rows]
        if not entries:
            raise EmptyBatchError(f"batch {self.id} has no items to rerun")
        return await self._wb._create(
            NewBatch(
                pipeline=spec.name,
                pipeline_version=spec.version,
                params=clean,
                params_hash=codec.params_hash(clean),
                name=name or f"rerun of {self.name or self.id}",
                use_stored_pages=True,
                source_batch_id=self.id,
            ),
            entries,
            use_cache=True,
        )

    def widget(self) -> Any:
        """A live ipywidgets monitor of this batch."""
        from workbench.notebook.monitor import BatchMonitor

        return BatchMonitor(self).show()

    def __repr__(self) -> str:
        counts = self._last_counts
        tail = ""
        if counts is not None:
            tail = " " + " ".join(f"{k}={v}" for k, v in counts.items()) + f" ({frames.state_of(counts)})"
        name = f" {self.name!r}" if self.name else ""
        return f"<Batch {self.id}{name} pipeline={self.pipeline} v{self.pipeline_version} items={self.total}{tail}>"

    def _repr_html_(self) -> str:
        from workbench.notebook.render import batch_html

        return batch_html(self)

    def _ipython_display_(self) -> None:
        """As a cell's last expression: the live monitor (static summary without a loop)."""
        from workbench.notebook.monitor import display_batch

        display_batch(self)


def _url_list(urls: Any) -> list[Any]:
    if isinstance(urls, (str, bytes)):
        raise InvalidInputError(
            "urls must be a list (or other iterable) of URL strings, not a single string; "
            "wrap it: submit([url])"
        )
    if isinstance(urls, pd.Series):
        return urls.tolist()
    try:
        return list(urls)
    except TypeError:
        raise InvalidInputError(
            f"urls must be an iterable of URL strings, got {type(urls).__name__}"
        ) from None


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v
