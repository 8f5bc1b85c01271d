"""Shared tools of one worker process: the HTTP fetcher, the CPU pool, the page store, embedders
and the LLM client. Created lazily, so a pipeline that never fetches never opens a session."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.core.settings import Settings
    from workbench.ledger.pages import PageStore
    from workbench.pipeline.cpu import CpuPool
    from workbench.pipeline.embed import Embedder
    from workbench.pipeline.fetch.fetcher import Fetcher
    from workbench.pipeline.fetch.pacing import HostPacer
    from workbench.pipeline.llm import LLMClient


class Tools:
    """``pacer`` and ``defer_after_s`` go to the fetcher (``Fetcher`` says what they do)."""

    def __init__(
        self,
        settings: Settings,
        pages: PageStore | None,
        *,
        cpu_processes: int | None = None,
        pacer: HostPacer | None = None,
        defer_after_s: float | None = None,
    ):
        self.settings = settings
        self.pacer = pacer
        self.defer_after_s = defer_after_s
        self.cpu_processes = cpu_processes or settings.extract_processes or 1
        self.pages = pages
        self._fetcher: Fetcher | None = None
        self._cpu: CpuPool | None = None
        self._llm: LLMClient | None = None
        self._embedders: dict[str, Embedder] = {}
        self._embed_lock = asyncio.Lock()

    @property
    def fetcher(self) -> Fetcher:
        if self._fetcher is None:
            from workbench.pipeline.fetch.fetcher import Fetcher

            self._fetcher = Fetcher(
                self.settings, pacer=self.pacer, defer_after_s=self.defer_after_s
            )
        return self._fetcher

    @property
    def cpu(self) -> CpuPool:
        if self._cpu is None:
            from workbench.pipeline.cpu import CpuPool

            self._cpu = CpuPool(self.cpu_processes)
        return self._cpu

    @property
    def llm(self) -> LLMClient:
        if self._llm is None:
            from workbench.pipeline.llm import LLMClient

            self._llm = LLMClient(self.settings)
        return self._llm

    async def embedder(self, spec: str) -> Embedder:
        async with self._embed_lock:
            if spec not in self._embedders:
                from workbench.pipeline.embed import load_embedder

                # loading a model reads files: keep it off the event loop
                self._embedders[spec] = await asyncio.to_thread(load_embedder, spec)
            return self._embedders[spec]

    async def close(self) -> None:
        if self._fetcher is not None:
            await self._fetcher.close()
        if self._llm is not None:
            await self._llm.close()
        if self._cpu is not None:
            self._cpu.close()
