"""``Context``: what a pipeline gets besides its URL.

It gives shared, polite tools (``fetch``, ``extract``, ``run_cpu``, ``embed``, ``llm``), the batch's
``params``, a bound logger, and records per-step timings and the provenance of the item's page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from workbench.core.errors import PageNotStored, PermanentError
from workbench.core.logs import get_logger
from workbench.core.page import Document, Page
from workbench.core.pagecodec import StoredBody
from workbench.core.urls import normalize_url

if TYPE_CHECKING:
    import numpy as np

    from workbench.core.settings import Settings
    from workbench.pipeline.llm import LLMReply
    from workbench.pipeline.tools import Tools

T = TypeVar("T")


class Context:
    """Per-item context handed to a pipeline function ``(url, ctx) -> dict``."""

    def __init__(
        self,
        *,
        url: str,
        normalized_url: str,
        item_id: int,
        batch_id: str,
        attempt: int,
        params: dict[str, Any],
        tools: Tools,
        use_stored_pages: bool = False,
        log: Any = None,
    ):
        self.url = url
        self.normalized_url = normalized_url
        self.item_id = item_id
        self.batch_id = batch_id
        self.attempt = attempt
        self.params = params
        self.tools = tools
        self.use_stored_pages = use_stored_pages
        self.log = log or get_logger("workbench.pipeline").bind(
            item=item_id, batch=batch_id, url=url
        )
        self.timings: dict[str, float] = {}
        #: the page fetched for this item's own URL (its provenance lands in the result)
        self.page: Page | None = None
        # the item's page fetched with defer_store=True, not stored yet, and its stored form
        self._unstored: tuple[Page, str] | None = None
        self._stored_body: StoredBody | None = None

    @property
    def settings(self) -> Settings:
        return self.tools.settings

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a block; repeated steps add up. Timings land in the result's provenance."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    async def fetch(self, url: str | None = None, *, defer_store: bool = False) -> Page:
        """Fetch ``url`` (default: the item's URL) politely, or read it from the page store when
        this batch re-analyses stored pages. Raises typed ``PipelineError``s.

        ``defer_store`` (the item's own page only): store the fetched page when the pipeline
        calls ``store_fetched`` instead of before returning, so that the process that extracts
        it can also hash and compress it (``stored_body_ready``). A pipeline that defers must
        call ``store_fetched`` whether its next steps succeed or fail.
        """
        if defer_store and url is not None:
            raise ValueError("defer_store is for the item's own page (fetch() with no url)")
        target = url or self.url
        norm = self.normalized_url if url is None else normalize_url(target)
        with self.step("fetch"):
            if self.use_stored_pages:
                page = await self.tools.pages.load(norm) if self.tools.pages else None
                if page is None:
                    raise PageNotStored(
                        f"no stored page for {target}; it was never fetched or was cleaned up "
                        "(submit it normally to fetch it again)"
                    )
            else:
                pages = self.tools.pages if self.settings.store_pages else None
                # a stored page of this URL: asked for only if it changed (fetch/revalidate.py)
                stored = await pages.load(norm) if pages is not None else None
                page = await self.tools.fetcher.fetch(target, revalidate=stored)
                if pages is not None and not page.from_store:
                    if defer_store:
                        self._unstored, self._stored_body = (page, norm), None
                    else:
                        await pages.save(page, norm)
        if url is None or norm == self.normalized_url:
            self.page = page
        return page

    @property
    def store_pending(self) -> bool:
        """Whether a page fetched with ``defer_store`` still waits for ``store_fetched``."""
        return self._unstored is not None

    def stored_body_ready(self, stored: StoredBody) -> None:
        """The pending page's body, hashed and compressed elsewhere (``core.pagecodec``)."""
        if self._unstored is None:
            return
        page = self._unstored[0]
        self._stored_body = stored
        # the result's content_sha256 reads page.sha256: the digest of these very bytes, so the
        # worker's process need not hash the page again
        vars(page).setdefault("sha256", stored.sha256)

    async def store_fetched(self) -> None:
        """Store the page fetched with ``defer_store`` (compressing it here unless
        ``stored_body_ready`` gave its stored form). Does nothing when none is pending."""
        pages = self.tools.pages
        if self._unstored is None or pages is None:  # (set only where there is a page store)
            return
        (page, norm), stored = self._unstored, self._stored_body
        self._unstored = self._stored_body = None
        await pages.save(page, norm, stored)

    async def extract(self, page: Page) -> Document:
        """Main text and metadata with trafilatura, in the worker's process pool."""
        from workbench.pipeline.text.extract import extract

        with self.step("extract"):
            return await extract(self.tools.cpu, page)

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a picklable top-level function in the process pool, off the event loop."""
        with self.step(getattr(fn, "__name__", "cpu")):
            return await self.tools.cpu.run(fn, *args)

    async def embed(self, texts: list[str], *, model: str | None = None) -> np.ndarray:
        """Embed texts with a local model (``params['embed_model']`` or WORKBENCH_EMBED_MODEL)."""
        spec = model or self.params.get("embed_model") or self.settings.embed_model
        if not spec:
            raise PermanentError(
                "no embedding model configured: set WORKBENCH_EMBED_MODEL or params "
                "{'embed_model': '/path/to/model2vec-model'}",
                error_type="embed_not_configured",
            )
        with self.step("embed"):
            embedder = await self.tools.embedder(spec)
            # static embeddings are cheap lookups, but a long text list still deserves a thread
            return await asyncio.to_thread(embedder.encode, texts)

    async def llm(self, prompt: str, **kwargs: Any) -> LLMReply:
        """One chat completion from the configured OpenAI-compatible endpoint."""
        with self.step("llm"):
            return await self.tools.llm.complete(prompt, **kwargs)
