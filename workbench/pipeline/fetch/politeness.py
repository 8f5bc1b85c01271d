"""Per-host politeness shared by every job in a worker process: concurrency, spacing, back-off,
and robots.txt.

Plain asyncio, no I/O of its own: the fetcher hands ``RobotsCache`` a loader coroutine, so these
classes are easy to reason about and to reuse for anything else that calls out to web hosts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.robotparser import RobotFileParser

import structlog
from yarl import URL

from workbench.core.errors import PipelineError

log = structlog.get_logger("workbench.pipeline.fetch")


@dataclass
class _Host:
    sem: asyncio.Semaphore
    next_start: float = 0.0  # loop time before which no new request may start (delay)
    paused_until: float = 0.0  # loop time before which no new request may start (Retry-After)
    users: int = 0  # holders and waiters; an idle entry can be forgotten


class HostLimiter:
    """At most ``concurrency`` requests in flight per host, starts at least ``delay_s`` apart,
    and no starts while a host is paused (after it answered 429/503 with Retry-After)."""

    #: past this many known hosts, idle ones are forgotten (a worker may see millions of hosts)
    MAX_HOSTS = 10_000

    def __init__(self, concurrency: int, delay_s: float = 0.0) -> None:
        self.concurrency = concurrency
        self.delay_s = delay_s
        self._hosts: dict[str, _Host] = {}

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            if len(self._hosts) >= self.MAX_HOSTS:
                self._forget_idle()
            state = self._hosts[host] = _Host(asyncio.Semaphore(self.concurrency))
        return state

    def _forget_idle(self) -> None:
        now = asyncio.get_running_loop().time()
        for name in [
            n
            for n, s in self._hosts.items()
            if s.users == 0 and s.next_start <= now and s.paused_until <= now
        ]:
            del self._hosts[name]

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        """Hold one of the host's request slots, waiting for its delay and any pause first."""
        state = self._host(host)
        state.users += 1
        try:
            async with state.sem:
                loop = asyncio.get_running_loop()
                # Re-check after every sleep: another task may have started (moving next_start)
                # or a 429 may have paused the host while we slept.
                # A deadline, not an event: nothing signals "the delay is over" (hence the noqa).
                while (wait := max(state.next_start, state.paused_until) - loop.time()) > 0:  # noqa: ASYNC110
                    await asyncio.sleep(wait)
                # No await between the check and this update, so starts are spaced exactly.
                state.next_start = loop.time() + self.delay_s
                yield
        finally:
            state.users -= 1

    def pause(self, host: str, seconds: float) -> None:
        """Start no new request to ``host`` for ``seconds`` (requests in flight are not touched)."""
        if seconds <= 0:
            return
        state = self._host(host)
        state.paused_until = max(state.paused_until, asyncio.get_running_loop().time() + seconds)


def robots_agent(user_agent: str) -> str:
    """The product token robots.txt groups are matched against: "WorkbenchBot" from
    "WorkbenchBot/0.1 (+url)" or from "Mozilla/5.0 (compatible; WorkbenchBot/0.1; +url)"."""
    m = re.search(r"compatible;\s*([^/;\s)]+)", user_agent)
    if m:
        return m.group(1)
    return user_agent.split("/", 1)[0].strip() or user_agent


#: loads a robots.txt URL; returns (status, body) or raises a PipelineError when unreachable
RobotsLoader = Callable[[str], Awaitable[tuple[int, bytes]]]


@dataclass
class _RobotsEntry:
    expires: float
    task: asyncio.Task[RobotFileParser | None] = field(repr=False)


class RobotsCache:
    """robots.txt rules per origin, fetched once and shared by all jobs (concurrent callers for
    the same origin wait on one load).

    A 4xx robots.txt allows everything (there are no rules); a 5xx or an unreachable one is
    logged and also allows everything, so a broken robots.txt never fails a batch. Matching is
    urllib.robotparser's: the first matching rule in a group wins (not Google's longest match),
    and Crawl-delay is not read (``per_host_delay_s`` spaces requests instead).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, user_agent: str, load: RobotsLoader, ttl_s: float = 3600.0) -> None:
        self.user_agent = user_agent
        self.agent = robots_agent(user_agent)
        self._load = load
        self.ttl_s = ttl_s
        self._entries: dict[str, _RobotsEntry] = {}

    async def allowed(self, url: URL) -> bool:
        """Whether our user agent may fetch ``url``."""
        rules = await self.rules_for(url)
        return rules is None or rules.can_fetch(self.agent, str(url))

    async def rules_for(self, url: URL) -> RobotFileParser | None:
        """The parsed rules for the URL's origin; None means everything is allowed."""
        origin = str(url.origin())
        loop = asyncio.get_running_loop()
        entry = self._entries.get(origin)
        if entry is None or entry.expires <= loop.time():
            if len(self._entries) >= self.MAX_ENTRIES:
                # dicts keep insertion order: drop the oldest entry
                self._entries.pop(next(iter(self._entries))).task.cancel()
            task = loop.create_task(self._fetch(origin + "/robots.txt"))
            entry = self._entries[origin] = _RobotsEntry(loop.time() + self.ttl_s, task)
        # shield: one caller being cancelled must not cancel the load the others wait for
        return await asyncio.shield(entry.task)

    async def _fetch(self, robots_url: str) -> RobotFileParser | None:
        try:
            status, body = await self._load(robots_url)
        except PipelineError as exc:
            log.warning("robots_unreachable", robots_url=robots_url, error=str(exc), allow="all")
            return None
        if status >= 500:
            log.warning("robots_server_error", robots_url=robots_url, status=status, allow="all")
            return None
        if not 200 <= status < 300:
            return None  # 4xx (or an unfollowed redirect): no rules
        parser = RobotFileParser(robots_url)
        parser.parse(body.decode("utf-8", errors="replace").splitlines())
        return parser

    def close(self) -> None:
        for entry in self._entries.values():
            entry.task.cancel()
        self._entries.clear()
