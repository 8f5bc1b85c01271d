"""What the fetcher asks before each request, and tells after it: ``Politeness``.

- ``check(url)``: may the URL be fetched at all (robots.txt, ``robots.py``)?
- ``slot(url)``: wait for the host's next start (``core/pacing.py`` states the rule), confirm it
  on waking, hold one of its concurrency leases during the request, and report the outcome, which
  moves the host's gap: response time (to the headers), 429, 503, timeouts, Retry-After. The
  session's trace (``trace_config``) notes a request that left late.

The state is in a ``HostPacer`` (``pacing.py``): Redis for workers (one schedule per host across
every process and machine), in-process memory for a fetcher on its own.

A fetch waits in place for at most ``defer_after_s`` (the worker's setting: 1 s); a longer wait
raises ``HostPaced`` and the worker puts the item in its host's line (``queue/lines.py``), so paced
hosts never hold worker slots and other hosts keep flowing. Without ``defer_after_s`` (scripts,
tests) a fetch waits however long its host needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from yarl import URL

from workbench.core.errors import FetchTimeout, PipelineError, TransientHTTPError
from workbench.core.pacing import Outcome, PacingRule
from workbench.core.settings import Settings
from workbench.pipeline.fetch.pacing import PACED_JOB, HostPaced, HostPacer, LocalPacer
from workbench.pipeline.fetch.robots import RobotsLoader, RobotsPolicy, robots_agent

__all__ = ["Politeness", "Slot", "robots_agent"]


#: a request leaving this much after it asked for its turn records when it left (``touch``)
LATE_S = 0.02


class Slot:
    """One request's hold on its host; the fetcher calls ``responded`` when headers arrive (and
    aiohttp's trace, ``Politeness.trace_config``, when the request left)."""

    def __init__(self, host: str, started: float, asked_at: float, *, robots: bool = False):
        self.host = host
        self.started = started
        self.asked_at = asked_at  # loop time of the call that gave the request its turn
        self.robots = robots  # a robots.txt request: a 4xx there is an answer, not an error
        self.status: int | None = None
        self.latency_s = 0.0

    def responded(self, status: int) -> None:
        self.status = status
        self.latency_s = asyncio.get_running_loop().time() - self.started


def classify(slot: Slot, exc: BaseException | None) -> tuple[Outcome, float]:
    """The pacing outcome of a request, and the Retry-After it carried (0 for none)."""
    retry_after = exc.retry_after_s or 0.0 if isinstance(exc, TransientHTTPError) else 0.0
    if slot.status == 429:
        return "too_many", retry_after
    if slot.status == 503 or isinstance(exc, FetchTimeout | TimeoutError):  # aiohttp's read
        return "overloaded", retry_after  # timeouts are TimeoutErrors too
    if exc is not None and not isinstance(exc, PipelineError | aiohttp.ClientError | OSError):
        return "cancelled", 0.0  # cancelled, or a bug: says nothing about the host
    if slot.status is None:
        return "error", 0.0
    ok = slot.status < (500 if slot.robots else 400)
    return ("ok" if ok else "http_error"), 0.0


class Politeness:
    """robots.txt and per-host pacing for one fetcher."""

    def __init__(
        self,
        settings: Settings,
        pacer: HostPacer | None,
        load_robots: RobotsLoader,
        *,
        defer_after_s: float | None = None,
    ):
        self.pacer: HostPacer = pacer or LocalPacer(PacingRule.from_settings(settings))
        self.defer_after_s = defer_after_s
        self.robots: RobotsPolicy | None = None
        if settings.obey_robots:
            self.robots = RobotsPolicy(settings.user_agent, self.pacer, load_robots)

    async def check(self, url: URL) -> None:
        """Raise ``RobotsDisallowed``/``RobotsUnavailable`` unless robots.txt allows ``url``."""
        if self.robots is not None:
            await self.robots.check(url)

    @asynccontextmanager
    async def slot(self, url: URL) -> AsyncIterator[Slot]:
        """Hold a start and a concurrency lease on the URL's host for one request."""
        host = url.host or ""
        lease, asked_at = await self._acquire(host)
        loop = asyncio.get_running_loop()
        slot = Slot(host, loop.time(), asked_at, robots=url.path == "/robots.txt")
        failure: BaseException | None = None
        try:
            yield slot
        except BaseException as exc:
            failure = exc
            raise
        finally:
            outcome, retry_after = classify(slot, failure)
            # not waited for (it rides with the pacer's next call); a cancelled fetch frees its
            # lease too (else it would hold it until the lease expires), and the host's gap
            # learns from what did happen
            self.pacer.release_soon(
                host, lease, outcome, latency_s=slot.latency_s, retry_after_s=retry_after
            )

    def trace_config(self) -> aiohttp.TraceConfig:
        """For the fetcher's session: a request that leaves late records when it left."""
        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(self._headers_sent)
        return trace

    async def _headers_sent(self, session: object, ctx: Any, params: object) -> None:
        slot = ctx.trace_request_ctx
        if not isinstance(slot, Slot):
            return
        if asyncio.get_running_loop().time() - slot.asked_at > LATE_S:
            with contextlib.suppress(Exception):  # the request is out: never fail it now
                await self.pacer.touch(slot.host)

    async def _acquire(self, host: str) -> tuple[str, float]:
        """A lease and the loop time of the call that gave the turn."""
        waited = 0.0
        loop = asyncio.get_running_loop()
        allowed = self.robots.take_allowed(host) if self.robots is not None else 0
        while True:
            asked_at = loop.time()
            verdict, wait_s, lease = await self.pacer.acquire(
                host, max_wait_s=self.defer_after_s, job=PACED_JOB.get(),
                robots_allowed=allowed,
            )
            allowed = 0  # counted
            if verdict == "go":
                if wait_s > 0:
                    try:
                        await asyncio.sleep(wait_s)
                        # awake: confirm the turn (a late wake-up must not bunch requests);
                        # a deadline kept in Redis, not an event: nothing here could signal it
                        while True:
                            asked_at = loop.time()
                            if (more := await self.pacer.confirm(host)) <= 0:
                                break
                            await asyncio.sleep(more)
                    except BaseException:
                        self.pacer.release_soon(
                            host, lease, "cancelled", latency_s=0.0, retry_after_s=0.0
                        )
                        raise
                return lease, asked_at
            if verdict == "defer":
                raise HostPaced(host, wait_s)
            # busy: every concurrency lease of the host is taken
            if self.defer_after_s is not None and waited + wait_s > self.defer_after_s:
                raise HostPaced(host, max(wait_s, self.defer_after_s))
            await asyncio.sleep(wait_s)
            waited += wait_s

    def close(self) -> None:
        if self.robots is not None:
            self.robots.close()
