"""Where the fetcher's politeness state lives: the ``HostPacer`` protocol, and ``LocalPacer``, its
in-process implementation for a fetcher on its own.

The rule itself (when a host's next request may start, how the gap adapts) is ``core/pacing.py``.
A pacer keeps that state per host, plus the shared robots.txt records and the per-host counts
``wb.hosts()`` shows. Two implementations:

- ``workbench.queue.hosts.RedisHostPacer``: the state in Redis, changed by atomic Lua scripts, so
  every worker process and machine on the same Redis shares one schedule, one concurrency count
  and one robots.txt fetch per host. The worker wires it into its fetcher (``Tools(pacer=...)``).
- ``LocalPacer`` (here): the same rule in one process's memory; what a ``Fetcher()`` made without
  a pacer uses (scripts, tests).

Why a protocol and not an import: ``pipeline`` and ``queue`` are the same layer and may not
import each other (docs/architecture.md). The fetcher asks for this small interface of plain
values; the worker, above both, hands it the Redis implementation.

``HostPaced`` is how a fetch says "this host's next free start is too far away to wait for": the
worker gives the item back to the queue, in its host's line (``queue/lines.py``), and its worker
slot serves other hosts meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from contextvars import ContextVar
from typing import Protocol

from workbench.core import pacing
from workbench.core.pacing import HostPace, Outcome, PacingRule, Verdict

__all__ = ["PACED_JOB", "HostPaced", "HostPacer", "LocalPacer"]

#: ``(batch id, job id)`` of the item a worker runs (task-local): a grant takes the job out of
#: its host's line and out of the batch's waiting count (``queue/lines.py``); empty outside one
PACED_JOB: ContextVar[tuple[str, str]] = ContextVar("workbench_paced_job", default=("", ""))


class HostPaced(BaseException):
    """The host's next free start is ``wait_s`` away, past what a fetch may wait in place.

    A ``BaseException``, like ``asyncio.CancelledError``: a pipeline's ``except Exception`` must
    not swallow it. The worker catches it and re-queues the item, due in ``wait_s``; outside a
    worker nothing raises it (a fetcher without ``defer_after_s`` waits in place)."""

    def __init__(self, host: str, wait_s: float):
        super().__init__(f"{host} is paced: next free start in {wait_s:.2f}s")
        self.host = host
        self.wait_s = wait_s


class HostPacer(Protocol):
    """Per-host pacing state, robots.txt records and counts, shared by whoever shares the pacer.

    Times are seconds. Records are opaque strings (JSON written by ``robots.py``)."""

    async def acquire(
        self, host: str, *, max_wait_s: float | None, job: tuple[str, str] = ("", ""),
        robots_allowed: int = 0,
    ) -> Verdict:
        """``core.pacing.acquire`` on the host's state: ``("go", wait_s, lease)`` (start after
        ``wait_s``), ``("busy", retry_in_s, "")`` or ``("defer", next_free_in_s, "")``.
        ``job``: the worker's ``(batch, job id)`` asking (``PACED_JOB``), which leaves its
        host's line on a grant. ``robots_allowed``: robots.txt checks of the host that allowed
        a URL since its last acquire, added to its count in the same call (a fetch checks,
        then asks for its turn: one round trip to Redis fewer per fetch)."""
        ...

    async def confirm(self, host: str) -> float:
        """``core.pacing.confirm``: 0 if a request that slept for its turn may go now, else how
        much longer to wait."""
        ...

    async def touch(self, host: str) -> None:
        """``core.pacing.touch``: a request to ``host`` left late, just now."""
        ...

    async def release(
        self, host: str, lease: str, outcome: Outcome, *, latency_s: float, retry_after_s: float
    ) -> None:
        """``core.pacing.release``: free the lease; the outcome moves the host's gap."""
        ...

    def release_soon(
        self, host: str, lease: str, outcome: Outcome, *, latency_s: float, retry_after_s: float
    ) -> None:
        """``release`` without waiting for it: recorded before this pacer's next ``acquire``
        takes effect, or on its own within moments (a shared pacer sends both in one round
        trip). A failure is logged; the lease then expires with its TTL."""
        ...

    async def flush(self) -> None:
        """Until every ``release_soon`` so far is recorded."""
        ...

    async def set_robots(
        self, host: str, *, state: str, crawl_delay_s: float,
        store: tuple[str, str, float] | None = None,
    ) -> None:
        """Record the host's robots.txt state (``rules``, ``allow_all``, ``unreachable``) and the
        Crawl-delay it asks for (0 for none). ``store`` (origin, record, ttl_s): also
        ``store_robots`` of it, in the same atomic step (one round trip; the Crawl-delay is in
        the host's pacing no later than anyone sees the record)."""
        ...

    async def count(self, host: str, field: str, n: int = 1) -> None:
        """Add ``n`` to a per-host count (``robots_allowed``, ``robots_disallowed``)."""
        ...

    async def robots_record(self, origin: str) -> str | None:
        """The stored robots.txt record of an origin, if any."""
        ...

    async def claim_robots(self, origin: str, ttl_s: float) -> bool:
        """Become the one loader of an origin's robots.txt for ``ttl_s``; False if another is."""
        ...

    async def read_or_claim_robots(self, origin: str, ttl_s: float) -> tuple[str | None, bool]:
        """``robots_record``, and when there is none, ``claim_robots`` in the same atomic step
        (one round trip, and no other loader's store can land between the two):
        ``(record, False)``, ``(None, True)`` claimed, ``(None, False)`` another is loading it."""
        ...

    async def store_robots(self, origin: str, record: str, ttl_s: float) -> None:
        """Store a record for ``ttl_s`` and end the claim (``record=""``: only end the claim)."""
        ...


class LocalPacer:
    """``HostPacer`` in one process's memory (loop time), for a fetcher on its own."""

    #: past this many known hosts, idle ones are forgotten (a process may see millions)
    MAX_HOSTS = 10_000

    def __init__(self, rule: PacingRule):
        self.rule = rule
        self.hosts: dict[str, HostPace] = {}
        self.robots_state: dict[str, tuple[str, int, int]] = {}  # host -> (state, allowed, denied)
        self._records: dict[str, tuple[float, str]] = {}  # origin -> (expiry, record)
        self._claims: dict[str, float] = {}  # origin -> expiry

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _host(self, host: str) -> HostPace:
        state = self.hosts.get(host)
        if state is None:
            if len(self.hosts) >= self.MAX_HOSTS:
                self._forget_idle()
            state = self.hosts[host] = HostPace()
        return state

    def _forget_idle(self) -> None:
        now = self._now()
        for name, s in list(self.hosts.items()):
            if not s.leases and max(s.next_at, s.paused_until) <= now:
                del self.hosts[name]

    async def acquire(
        self, host: str, *, max_wait_s: float | None, job: tuple[str, str] = ("", ""),
        robots_allowed: int = 0,
    ) -> Verdict:
        if robots_allowed:
            await self.count(host, "robots_allowed", robots_allowed)
        return pacing.acquire(
            self._host(host), self.rule, self._now(), max_wait_s=max_wait_s,
            lease_id=os.urandom(4).hex(),
        )

    async def confirm(self, host: str) -> float:
        return pacing.confirm(self._host(host), self.rule, self._now())

    async def touch(self, host: str) -> None:
        pacing.touch(self._host(host), self._now())

    async def release(
        self, host: str, lease: str, outcome: Outcome, *, latency_s: float, retry_after_s: float
    ) -> None:
        self.release_soon(host, lease, outcome, latency_s=latency_s, retry_after_s=retry_after_s)

    def release_soon(
        self, host: str, lease: str, outcome: Outcome, *, latency_s: float, retry_after_s: float
    ) -> None:
        pacing.release(
            self._host(host), self.rule, self._now(), lease, outcome,
            latency_s=latency_s, retry_after_s=retry_after_s,
        )

    async def flush(self) -> None:
        return None  # in memory: every release is recorded at once

    async def set_robots(
        self, host: str, *, state: str, crawl_delay_s: float,
        store: tuple[str, str, float] | None = None,
    ) -> None:
        pacing.set_crawl_delay(self._host(host), self.rule, crawl_delay_s)
        _, allowed, denied = self.robots_state.get(host, ("", 0, 0))
        self.robots_state[host] = (state, allowed, denied)
        if store is not None:
            self._store(*store)

    async def count(self, host: str, field: str, n: int = 1) -> None:
        state, allowed, denied = self.robots_state.get(host, ("", 0, 0))
        if field == "robots_allowed":
            allowed += n
        elif field == "robots_disallowed":
            denied += n
        self.robots_state[host] = (state, allowed, denied)

    async def robots_record(self, origin: str) -> str | None:
        return self._record(origin)

    def _record(self, origin: str) -> str | None:
        entry = self._records.get(origin)
        if entry is None or entry[0] <= self._now():
            self._records.pop(origin, None)
            return None
        return entry[1]

    async def claim_robots(self, origin: str, ttl_s: float) -> bool:
        return self._claim(origin, ttl_s)

    def _claim(self, origin: str, ttl_s: float) -> bool:
        now = self._now()
        if self._claims.get(origin, 0.0) > now:
            return False
        self._claims[origin] = now + ttl_s
        return True

    async def read_or_claim_robots(self, origin: str, ttl_s: float) -> tuple[str | None, bool]:
        # no await between the read and the claim: atomic on the one event loop
        record = self._record(origin)
        if record is not None:
            return record, False
        return None, self._claim(origin, ttl_s)

    async def store_robots(self, origin: str, record: str, ttl_s: float) -> None:
        self._store(origin, record, ttl_s)

    def _store(self, origin: str, record: str, ttl_s: float) -> None:
        self._claims.pop(origin, None)
        if record:
            if len(self._records) >= self.MAX_HOSTS:
                self._records.pop(next(iter(self._records)))  # the oldest
            self._records[origin] = (self._now() + ttl_s, record)
