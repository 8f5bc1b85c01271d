"""The notebook-facing client: ``Workbench`` submits batches, ``Batch`` (``client.batch``) reads
and steers them, ``wb.sync`` / ``SyncWorkbench`` are the blocking facade (``client.sync``).

The client reads the ledger, never ARQ's result keys. Connections open lazily on first use and
belong to the instance (notebooks reload modules; no module-level state).
"""

from __future__ import annotations

import asyncio
import html
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from workbench.client import archive, carried, discover, frames
from workbench.client.batch import Batch
from workbench.client.hosts import read_hosts
from workbench.client.sync import SyncProxy, SyncRunner
from workbench.core import codec
from workbench.core.errors import (
    EmptyBatchError,
    InvalidInputError,
    InvalidURLError,
    QueueError,
)
from workbench.core.logs import get_logger
from workbench.core.settings import Settings, load_settings
from workbench.core.urls import check_urls
from workbench.inputs.feeds import FeedLimits
from workbench.inputs.sitemaps import SitemapLimits
from workbench.ledger.store import Ledger, NewBatch
from workbench.notify.email import normalize_notify
from workbench.pipeline.fetch.fetcher import Fetcher
from workbench.pipeline.registry import get_pipeline, load_pipeline_modules
from workbench.queue import QueueRedis
from workbench.queue import jobs as queue
from workbench.queue.reconcile import ReconcileReport, reconcile

if TYPE_CHECKING:
    from workbench.worker.runtime import WorkerRuntime

log = get_logger("workbench.client.workbench")


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
        self._fetcher: Fetcher | None = None
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

    async def open_queue(self) -> QueueRedis:
        """The queue's Redis connection, opened on first use (for tools built on Workbench, and
        for ``Batch``, which re-queues and drops jobs through it)."""
        if self._redis is None:
            if self._connect_lock is None:
                self._connect_lock = asyncio.Lock()
            async with self._connect_lock:  # concurrent first calls must not open two pools
                if self._redis is None:
                    self._redis = await queue.connect(self.settings)
        return self._redis

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (reads fail from then on; create a new Workbench)."""
        return self._closed

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
        url_column: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> Batch:
        """Validate, normalize and dedupe ``urls``, record the batch, and queue its items.

        URLs already analysed with the same pipeline, version and params reuse their stored
        result (marked ``cached``) unless ``refresh=True``. Invalid entries raise
        ``InvalidURLError`` naming each one, or with ``on_invalid="skip"`` are left out and
        listed in ``batch.invalid``.

        ``urls`` may also be a table: a pandas or polars DataFrame, or the path of a CSV,
        Parquet or JSONL file, with its URLs in ``url_column`` (default ``"url"``). Then every
        row is one item (not deduplicated) and the row's other columns (or those named by
        ``columns``) are carried with it: they come back beside ``url`` in ``status()``,
        ``failures()`` and ``results()`` (see ``workbench.client.carried``).
        """
        spec = get_pipeline(pipeline)
        table = url_column is not None or _is_table(urls)
        entries = [] if table else _url_list(urls)
        clean_params = codec.check_json_object(params)  # InvalidParamsError naming the keys
        spec.check_params(clean_params)  # before the URLs: a wrong param fails fast
        if on_invalid not in ("raise", "skip"):
            raise InvalidInputError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise InvalidInputError("name must be a string of at most 200 characters")
        if name is not None and not name.encode("utf-8", "surrogatepass").decode(
                "utf-8", "ignore") == name:
            raise InvalidInputError("name contains a lone surrogate (such as \\ud800): not text")
        try:  # strict: plain addresses, at most notify.email.MAX_RECIPIENTS, no line breaks
            notify = normalize_notify(notify)
        except ValueError as exc:
            raise InvalidInputError(f"notify: {exc}") from None
        if table:
            read = await asyncio.to_thread(carried.read_table, urls, url_column=url_column or "url",
                                           columns=columns)
            carried.check_table(read, on_invalid=on_invalid)
            return await self.create_batch(
                NewBatch(
                    pipeline=spec.name,
                    pipeline_version=spec.version,
                    params=clean_params,
                    params_hash=codec.params_hash(clean_params),
                    name=name,
                    notify=notify,
                    invalid=len(read.invalid),
                    carried=carried.specs_to_json(read.columns) or None,
                ),
                read.entries,
                use_cache=not refresh,
                invalid=read.invalid,
                carried=read.carried if read.columns else None,
            )
        checked = check_urls(entries)
        if checked.invalid and on_invalid == "raise":
            raise InvalidURLError(checked.invalid)
        if not checked.valid:
            raise EmptyBatchError(
                "nothing to submit: " + ("no URLs given" if not entries else "every URL is invalid")
            )
        return await self.create_batch(
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

    async def submit_warc(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        pipeline: str = "article",
        params: dict[str, Any] | None = None,
        name: str | None = None,
        *,
        notify: str | None = None,
        max_payload_bytes: int | None = None,
    ) -> Batch:
        """Analyse the HTTP responses archived in WARC/WARC.gz files with no network request:
        each usable record's page is stored and becomes an item carrying ``warc_file``,
        ``warc_record_id`` and ``warc_offset``; skipped records (not HTML, revisits,
        truncated, non-2xx) are listed in ``batch.invalid``. See ``workbench.client.archive``."""
        try:
            notify = normalize_notify(notify)
        except ValueError as exc:
            raise InvalidInputError(f"notify: {exc}") from None
        read = await archive.read_warc(
            await self.open_ledger(), paths, pipeline=pipeline, params=params, name=name,
            notify=notify, max_payload_bytes=max_payload_bytes,
        )
        return await self.create_batch(read.spec, read.entries, use_cache=False,
                                       invalid=read.skipped, carried=read.carried)

    # ------------------------------------------------------------------ input documents
    async def _input_fetcher(self) -> Fetcher:
        if self._closed:
            raise InvalidInputError("this Workbench is closed; create a new one")
        if self._fetcher is None:
            self._fetcher = discover.input_fetcher(self.settings, await self.open_queue())
        return self._fetcher

    async def sitemap_urls(
        self, url: str, *, limits: SitemapLimits | None = None
    ) -> pd.DataFrame:
        """The page URLs a site's sitemaps list (``url``, ``lastmod``, ``sitemap``), following
        sitemap indexes and gzipped sitemaps; given a site root (``https://site/``), the
        ``Sitemap:`` lines of its robots.txt (else ``/sitemap.xml``). Fetched by Workbench's
        polite fetcher (robots.txt, pacing shared with the workers, caps: ``limits``). The frame
        is ``submit`` input: ``await wb.submit(df)`` carries ``lastmod`` and ``sitemap``."""
        return await discover.sitemap_urls(await self._input_fetcher(), url, limits=limits)

    async def feed_urls(self, url: str, *, limits: FeedLimits | None = None) -> pd.DataFrame:
        """The entries of an RSS 2.0 or Atom feed (``url``, ``title``, ``published``), fetched
        politely as ``sitemap_urls`` is; ``submit`` input as it is."""
        return await discover.feed_urls(await self._input_fetcher(), url, limits=limits)

    async def create_batch(
        self,
        spec: NewBatch,
        entries: Sequence[tuple[int, str, str]],
        *,
        use_cache: bool,
        invalid: Sequence[tuple[int, object, str]] = (),
        carried: Sequence[str | None] | None = None,
    ) -> Batch:
        """Record a batch of checked ``(position, url, normalized url)`` entries and queue its
        items: the step ``submit`` and ``Batch.rerun`` share. Prefer those; this is for tools
        built on Workbench that validate their own input. The params are checked against the
        pipeline's declared params here, so every way of making a batch checks them."""
        get_pipeline(spec.pipeline).check_params(spec.params)
        ledger = await self.open_ledger()
        outcome = await ledger.create_batch(spec, entries, use_cache=use_cache, carried=carried)
        try:
            redis = await self.open_queue()
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

    async def hosts(self, *, limit: int = 10_000) -> pd.DataFrame:
        """Per host fetched in the last 7 days, most recent first: requests, errors, the current
        delay and what sets it, robots.txt (state, URLs allowed/disallowed, Crawl-delay), a
        pause, deferred items (``client.hosts`` describes the columns)."""
        return await read_hosts(await self.open_queue(), self.settings, limit=limit)

    async def reconcile(self, *, full: bool = True) -> ReconcileReport:
        """Re-enqueue what the ledger holds as queued but Redis lost, and items of dead workers."""
        return await reconcile(
            await self.open_ledger(), await self.open_queue(), self.settings, full=full
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
        if self._fetcher is not None:
            await self._fetcher.close()
            self._fetcher = None
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
            self._sync = SyncProxy(self, SyncRunner(), wraps=(Workbench, Batch))
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


def SyncWorkbench(**settings: Any) -> SyncProxy:  # noqa: N802 - reads like a class to users
    """``with SyncWorkbench() as wb: batch = wb.submit(urls); batch.wait()`` for plain scripts."""
    return Workbench(**settings).sync


def _is_table(urls: Any) -> bool:
    """A DataFrame (pandas, polars) or a path object: ``submit`` reads it as a table."""
    return isinstance(urls, pd.DataFrame | os.PathLike) or (
        type(urls).__module__.split(".")[0] == "polars" and hasattr(urls, "columns")
    )


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

