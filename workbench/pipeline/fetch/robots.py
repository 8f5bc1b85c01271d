"""robots.txt, RFC 9309: fetched once per origin for every worker sharing the pacer, parsed with
Protego, checked before every request (every redirect hop too).

- Matching: Protego, on the user agent's product token (``WorkbenchBot`` from
  ``WorkbenchBot/0.1 (+url)`` or ``Mozilla/5.0 (compatible; WorkbenchBot/0.1)``): the most specific
  group, the longest matching rule, Allow winning a tie, ``*`` and ``$`` wildcards.
  ``urllib.robotparser`` takes the first matching rule and ignores wildcards, so ``Disallow:
  /*?sessionid=`` would not stop it (tests/pipeline/test_robots.py).
- A disallowed URL fails at once with ``RobotsDisallowed`` naming the rule (``Disallow:
  /private/`` and its group) and is never requested.
- Crawl-delay (and Request-rate, as seconds per request) is handed to the pacer: a floor for the
  host's gap between requests, in every worker.
- Answers: 2xx = rules (the first 512 KiB, Google's limit); 4xx = no rules, all allowed; 429 and
  5xx = unreachable: RFC 9309 says to assume complete disallow, so nothing on the origin is fetched
  and items fail with ``RobotsUnavailable`` (transient: retried) until robots.txt is asked again,
  after 1 minute, doubling per failure up to an hour. A site that cannot be reached at all (refused,
  timeout, TLS) fails each item with that same error (``connection_error``...): not cached, so
  the next try asks again.
- Shared: the record (status, body, times) is kept by the pacer for 24 h (Redis, for workers);
  one process loads it under a claim while the others wait for it; each process re-reads the
  shared record at least every 5 minutes and keeps the parsed rules in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import aiohttp
from protego import Protego
from yarl import URL

from workbench.core.errors import RobotsDisallowed, RobotsUnavailable
from workbench.core.logs import get_logger
from workbench.pipeline.fetch.pacing import HostPacer

__all__ = [
    "ROBOTS_MAX_BYTES",
    "ROBOTS_MAX_REDIRECTS",
    "ROBOTS_TIMEOUT_S",
    "RobotsLoader",
    "RobotsPolicy",
    "RobotsRules",
    "read_robots",
    "robots_agent",
]

log = get_logger("workbench.pipeline.fetch")

# a short timeout, Google's size limit (longer files are truncated), a few redirects
ROBOTS_TIMEOUT_S = 10.0
ROBOTS_MAX_BYTES = 512 * 1024
ROBOTS_MAX_REDIRECTS = 5
ROBOTS_TTL_S = 24 * 3600.0  # RFC 9309: SHOULD NOT use a cached copy for more than 24 hours
ROBOTS_RETRY_S = 60.0  # after a 5xx: ask again in a minute, doubling per failure...
ROBOTS_RETRY_MAX_S = 3600.0  # ...up to an hour
LOCAL_TTL_S = 300.0  # a process re-reads the shared record at least this often
_CLAIM_S = ROBOTS_TIMEOUT_S + 5.0
_POLL_S = 0.05
_MAX_LOCAL = 10_000

#: loads a robots.txt URL: (status, body); raises a PipelineError when the site is unreachable
RobotsLoader = Callable[[str], Awaitable[tuple[int, bytes]]]


def robots_agent(user_agent: str) -> str:
    """The product token robots.txt groups are matched against: "WorkbenchBot" from
    "WorkbenchBot/0.1 (+url)" or from "Mozilla/5.0 (compatible; WorkbenchBot/0.1; +url)"."""
    m = re.search(r"compatible;\s*([^/;\s)]+)", user_agent)
    if m:
        return m.group(1)
    return user_agent.split("/", 1)[0].strip() or user_agent


class RobotsRules:
    """One robots.txt, parsed for one product token."""

    def __init__(self, text: str, agent: str):
        self.text = text
        self.agent = agent
        self._parser = Protego.parse(text)

    def allows(self, url: str) -> bool:
        return self._parser.can_fetch(url, self.agent)

    def crawl_delay_s(self) -> float:
        """Crawl-delay for our agent, or Request-rate as seconds per request; 0 for none."""
        delay = self._parser.crawl_delay(self.agent) or 0.0
        rate = self._parser.request_rate(self.agent)
        if rate is not None and rate.requests > 0:
            delay = max(delay, rate.seconds / rate.requests)
        return max(0.0, float(delay))

    def rule_for(self, url: str) -> str:
        """The rule that disallows ``url``: the longest matching ``Disallow`` of our group."""
        groups = _groups(self.text)
        best, chosen = 0, []
        for agents, disallows in groups:
            score = max((_agent_score(a, self.agent) for a in agents), default=0)
            if score > best:
                best, chosen = score, [(agents, disallows)]
            elif score and score == best:
                chosen.append((agents, disallows))
        matches = [
            (len(pattern), pattern, agents)
            for agents, disallows in chosen
            for pattern in disallows
            if not Protego.parse(f"User-agent: *\nDisallow: {pattern}").can_fetch(url, "x")
        ]
        if not matches:
            return f"a rule for {self.agent}"
        _, pattern, agents = max(matches, key=lambda m: m[0])
        return f"Disallow: {pattern} (User-agent: {', '.join(agents)})"


def _groups(text: str) -> list[tuple[list[str], list[str]]]:
    """(user agents, Disallow patterns) of each group, as written."""
    groups: list[tuple[list[str], list[str]]] = []
    agents: list[str] = []
    disallows: list[str] = []
    in_rules = False
    for raw in text.splitlines():
        key, sep, value = raw.split("#", 1)[0].partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("user-agent", "useragent", "user agent"):
            if in_rules:
                groups.append((agents, disallows))
                agents, disallows, in_rules = [], [], False
            agents.append(value)
        elif key in ("allow", "disallow"):
            in_rules = True
            if key == "disallow" and value:
                disallows.append(value)
    groups.append((agents, disallows))
    return [g for g in groups if g[0]]


def _agent_score(group_agent: str, agent: str) -> int:
    """Protego's group choice: the longest token found in ours (at a word start), else ``*``."""
    group_agent, agent = group_agent.lower(), agent.lower()
    if group_agent == "*":
        return 1
    i = agent.find(group_agent)
    while i != -1:
        if i == 0 or not (agent[i - 1].isalnum() or agent[i - 1] in "-_"):
            return len(group_agent)
        i = agent.find(group_agent, i + 1)
    return 0


@dataclass
class _Record:
    """What the pacer stores per origin (JSON)."""

    state: str  # rules | allow_all | unreachable
    status: int
    body: str
    fetched_at: float  # epoch seconds
    retry_at: float = 0.0  # unreachable: when to ask again
    failures: int = 0  # unreachable: answers in a row

    def due_in(self, now: float) -> float:
        """Seconds until robots.txt should be asked again."""
        if self.state == "unreachable":
            return self.retry_at - now
        return self.fetched_at + ROBOTS_TTL_S - now

    @classmethod
    def loads(cls, raw: str) -> _Record | None:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None  # written by another version: fetch again


@dataclass
class _Known:
    record: _Record
    rules: RobotsRules | None
    valid_until: float  # loop time


class RobotsPolicy:
    """Checks URLs against their origin's robots.txt (``check``), loading each origin's file
    once for everyone sharing ``pacer``."""

    def __init__(self, user_agent: str, pacer: HostPacer, load: RobotsLoader):
        self.agent = robots_agent(user_agent)
        self.pacer = pacer
        self._load = load
        self._known: dict[str, _Known] = {}
        self._loading: dict[str, asyncio.Task[_Known]] = {}
        # per host, checks that allowed a URL and are not counted yet: the host's next
        # acquire counts them (``take_allowed``), in the same call to the pacer
        self._allowed: dict[str, int] = {}

    async def check(self, url: URL) -> None:
        """Raise ``RobotsDisallowed`` or ``RobotsUnavailable`` unless ``url`` may be fetched."""
        origin, host = str(url.origin()), url.host or ""
        known = self._known.get(origin)
        if known is None or known.valid_until <= asyncio.get_running_loop().time():
            task = self._loading.get(origin)
            if task is None:
                task = self._loading[origin] = asyncio.get_running_loop().create_task(
                    self._resolve(origin, host)
                )
                task.add_done_callback(lambda _: self._loading.pop(origin, None))
            # shield: one caller being cancelled must not cancel the load the others wait for
            known = await asyncio.shield(task)
        record = known.record
        if record.state == "unreachable":
            wait = max(0.0, record.due_in(time.time()))
            raise RobotsUnavailable(
                f"{origin}/robots.txt answered HTTP {record.status}: nothing on {origin} is "
                f"fetched until it answers (RFC 9309); asking again in {wait:.0f}s",
                retry_after_s=wait,
            )
        if known.rules is not None and not known.rules.allows(str(url)):
            await self.pacer.count(host, "robots_disallowed")
            raise RobotsDisallowed(
                f"robots.txt of {origin} disallows {url} for {self.agent}: "
                f"{known.rules.rule_for(str(url))}"
            )
        if host not in self._allowed and len(self._allowed) >= _MAX_LOCAL:
            # checks never followed by a request (the fetch failed before its turn): count
            # the oldest host's now, so the map stays small
            oldest = next(iter(self._allowed))
            await self.pacer.count(oldest, "robots_allowed", self._allowed.pop(oldest))
        self._allowed[host] = self._allowed.get(host, 0) + 1

    def take_allowed(self, host: str) -> int:
        """The host's allowing checks not counted yet, for its next acquire to count."""
        return self._allowed.pop(host, 0)

    async def _resolve(self, origin: str, host: str) -> _Known:
        """The shared record, or load it: one loader per origin among all sharing the pacer."""
        while True:
            # the first look costs one round trip: none stored, it also claims the load
            raw, claimed = await self.pacer.read_or_claim_robots(origin, _CLAIM_S)
            record = _Record.loads(raw) if raw else None
            if record is not None and record.due_in(time.time()) > 0:
                return self._remember(origin, record)
            if raw and await self.pacer.claim_robots(origin, _CLAIM_S):
                # A record due again (or unreadable): claimed apart from the read, so the
                # loader before us may have stored a fresh one and ended its claim between the
                # two (a loaded run once fetched robots.txt twice so): read again under our
                # claim, and end it unused if the fresh record is there now.
                raw = await self.pacer.robots_record(origin)
                fresh = _Record.loads(raw) if raw else None
                if fresh is not None and fresh.due_in(time.time()) > 0:
                    await self.pacer.store_robots(origin, "", ROBOTS_TTL_S)
                    return self._remember(origin, fresh)
                record, claimed = fresh or record, True
            if claimed:
                try:
                    record = await self._fetch(origin, previous=record)
                    rules = None
                    if record.state == "rules":
                        rules = RobotsRules(record.body, self.agent)
                    # the Crawl-delay is in the host's pacing no later than anyone sees the
                    # rules (one atomic step, which also stores them and ends the claim): no
                    # request may start on the old gap meanwhile
                    await self.pacer.set_robots(
                        host, state=record.state,
                        crawl_delay_s=rules.crawl_delay_s() if rules is not None else 0.0,
                        store=(origin, json.dumps(asdict(record)), ROBOTS_TTL_S),
                    )
                except BaseException as exc:
                    # the claim ends with nothing stored: another process loads it again
                    log.warning("robots_load_abandoned", origin=origin,
                                error=f"{type(exc).__name__}: {exc}")
                    with contextlib.suppress(Exception):  # else the claim lapses by itself
                        await self.pacer.store_robots(origin, "", ROBOTS_TTL_S)
                    raise
                return self._remember(origin, record, rules)
            await asyncio.sleep(_POLL_S)  # another process is loading it

    async def _fetch(self, origin: str, previous: _Record | None) -> _Record:
        robots_url = origin + "/robots.txt"
        status, body = await self._load(robots_url)  # unreachable: raises, nothing cached
        now = time.time()
        if status >= 500 or status == 429:
            failures = previous.failures + 1 if previous and previous.state == "unreachable" else 1
            retry = min(ROBOTS_RETRY_MAX_S, ROBOTS_RETRY_S * 2 ** (failures - 1))
            log.warning("robots_unreachable", robots_url=robots_url, status=status,
                        failures=failures, retry_in_s=retry)
            return _Record("unreachable", status, "", now, retry_at=now + retry, failures=failures)
        if 200 <= status < 300:
            return _Record("rules", status, body.decode("utf-8", errors="replace"), now)
        return _Record("allow_all", status, "", now)  # 4xx (or too many redirects): no rules

    def _remember(
        self, origin: str, record: _Record, rules: RobotsRules | None = None
    ) -> _Known:
        if rules is None and record.state == "rules":
            rules = RobotsRules(record.body, self.agent)
        ttl = min(LOCAL_TTL_S, max(0.0, record.due_in(time.time())))
        known = _Known(record, rules, asyncio.get_running_loop().time() + ttl)
        if len(self._known) >= _MAX_LOCAL:
            self._known.pop(next(iter(self._known)))  # the oldest
        self._known[origin] = known
        return known

    def close(self) -> None:
        for task in self._loading.values():
            task.cancel()
        self._loading.clear()
        self._known.clear()


async def read_robots(resp: aiohttp.ClientResponse) -> tuple[int, str | None, bytes]:
    """(status, redirect location or None, body truncated to ``ROBOTS_MAX_BYTES``)."""
    if 300 <= resp.status < 400 and resp.headers.get("Location"):
        return resp.status, resp.headers["Location"], b""
    if not 200 <= resp.status < 300:
        return resp.status, None, b""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) >= ROBOTS_MAX_BYTES:  # longer files are truncated, not refused
            break
    return resp.status, None, bytes(body[:ROBOTS_MAX_BYTES])
