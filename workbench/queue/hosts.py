"""Per-host politeness shared by every worker process and machine: ``RedisHostPacer``.

The fetcher's ``HostPacer`` (``pipeline/fetch/pacing.py``) with its state in Redis, so four
worker processes on two machines press a host no harder than one: one schedule of request
starts, one count of requests in flight, one robots.txt fetch per host. The rule is
``core/pacing.py``'s; the two scripts below are its twin in Lua (tests/pipeline/test_pacing.py
runs the same checks on both), run atomically inside Redis on Redis' own clock (``TIME``), so
machines with skewed clocks still space their requests right.

Keys, under the queue's name (``<queue>:``), so deployments and test runs sharing a Redis stay
apart; like ARQ, one Redis server, not a cluster:

- ``host:<host>``: a hash, the host's ``HostPace`` in milliseconds plus its counts and robots
  state; expires 7 days after its last request.
- ``host:<host>:leases``: a sorted set of the host's requests in flight (score: expiry, so a
  lease of a process that died frees itself).
- ``hosts``: a sorted set of hosts by last request, for ``wb.hosts()``.
- ``robots:<origin>`` and ``robots:<origin>:claim``: the shared robots.txt record and the
  claim of the one process loading it.
- ``host:<host>:line``, ``paced`` and ``waiting:<batch>``: the items waiting for the host's turn,
  those released for it, and per batch what the monitor counts (``queue/lines.py``).
"""

from __future__ import annotations

import os
import time
from dataclasses import fields
from typing import Any

from redis.exceptions import RedisError

from workbench.core.errors import QueueError
from workbench.core.pacing import HostPace, Outcome, PacingRule, Verdict, gap_s
from workbench.core.settings import Settings
from workbench.queue.arq_adapter import QueueRedis
from workbench.queue.jobs import job_id
from workbench.queue.lines import (
    RELEASE_NEXT_LUA,
    enter_line,
    line_keys,
    note_waiting,
    waiting_key,
)
from workbench.queue.rides import Rides

__all__ = ["HOST_TTL_S", "RedisHostPacer", "host_rows"]

HOST_TTL_S = 7 * 24 * 3600
#: a request's end (``release_soon``) waits at most this long for the next ``acquire`` to ride
#: with (``queue/rides.py``); in a busy worker the next one comes in ~15 ms
RELEASE_LINGER_S = 0.05

# KEYS: host hash, leases, hosts index, line, paced, queue, the batch's waiting set. ARGV: max wait
# ms (-1: wait however long), floor ms, ceiling ms, max concurrency, lease ttl ms, lease id, host,
# key ttl s, hard margin, job id ('' outside a worker), robots.txt checks that allowed a URL to
# add to the host's count. core.pacing.acquire, in milliseconds of Redis' clock; a grant takes
# the job out of the host's line and out of the batch's waiting items, and releases the next
# one in line.
_ACQUIRE_LUA = RELEASE_NEXT_LUA + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'next_at', 'paused_until', 'latency_gap',
                     'penalty', 'crawl_delay', 'streak', 'last_sent')
local next_at, paused = tonumber(f[1]) or 0, tonumber(f[2]) or 0
local lat, pen, crawl = tonumber(f[3]) or 0, tonumber(f[4]) or 0, tonumber(f[5]) or 0
local streak, sent = tonumber(f[6]) or 0, tonumber(f[7]) or 0
if tonumber(ARGV[11]) > 0 then redis.call('HINCRBY', KEYS[1], 'robots_allowed', ARGV[11]) end
local max_wait, floor, ceiling = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gap = math.max(tonumber(ARGV[9]) * math.max(floor, crawl),
                     math.min(ceiling, math.max(lat, pen)))
local start = math.max(now, next_at, paused, sent + gap)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 1)
redis.call('ZADD', KEYS[3], now, ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[8])
if max_wait < 0 or start - now <= max_wait then
  if redis.call('ZCARD', KEYS[2]) >= math.min(tonumber(ARGV[4]), 1 + streak) then
    return {'busy', tostring(math.min(500, math.max(10, lat)))}
  end
  redis.call('HSET', KEYS[1], 'next_at', start + gap, 'last_at', start)
  if start <= now then redis.call('HSET', KEYS[1], 'last_sent', now) end
  redis.call('HINCRBY', KEYS[1], 'requests', 1)
  local lease = string.format('%d:%s', start, ARGV[6])
  redis.call('ZADD', KEYS[2], start + tonumber(ARGV[5]), lease)
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  local job = ARGV[10]
  if job ~= '' then  -- its turn came: out of the line
    if redis.call('HGET', KEYS[1], 'released') == job then
      redis.call('HDEL', KEYS[1], 'released', 'released_until')
    else
      redis.call('LREM', KEYS[4], 0, job)
    end
    redis.call('ZREM', KEYS[7], ARGV[7] .. ' ' .. string.match(job, '^[^:]+'))
  end
  release_next(KEYS[1], KEYS[4], KEYS[5], KEYS[6], now)
  return {'go', tostring(start - now), lease}
end
redis.call('HINCRBY', KEYS[1], 'deferred', 1)
return {'defer', tostring(start - now)}
"""

# KEYS: host hash, leases, line, paced, queue. ARGV: lease, outcome, latency ms, retry-after ms,
# target concurrency, floor ms, ceiling ms, backoff factor, recover factor, 429 step ms,
# 503/timeout step ms, hard margin. core.pacing.release, in milliseconds of Redis' clock; then
# the next in the host's line is released for the host's next free start.
_RELEASE_LUA = RELEASE_NEXT_LUA + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
local start = tonumber(string.match(ARGV[1], '^(%d+):')) or now
local outcome = ARGV[2]
local f = redis.call('HMGET', KEYS[1], 'latency_gap', 'penalty', 'backoff_at', 'next_at',
                     'paused_until', 'crawl_delay')
local lat, pen, backoff_at = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0
local next_at, paused, crawl = tonumber(f[4]) or 0, tonumber(f[5]) or 0, tonumber(f[6]) or 0
local floor, ceiling = tonumber(ARGV[6]), tonumber(ARGV[7])
if outcome == 'ok' then
  redis.call('HINCRBY', KEYS[1], 'streak', 1)
  local target = tonumber(ARGV[3]) / tonumber(ARGV[5])
  if lat <= 0 then lat = target else lat = (lat + target) / 2 end
  pen = pen * tonumber(ARGV[9])
  if pen < 1 then pen = 0 end
  redis.call('HSET', KEYS[1], 'latency_gap', lat, 'penalty', pen)
elseif outcome == 'too_many' or outcome == 'overloaded' then
  redis.call('HINCRBY', KEYS[1], 'errors', 1)
  redis.call('HINCRBY', KEYS[1], 'throttled', 1)
  redis.call('HSET', KEYS[1], 'streak', 0)
  if start > backoff_at then
    local step = tonumber(ARGV[11])
    if outcome == 'too_many' then step = tonumber(ARGV[10]) end
    pen = math.min(ceiling, math.max(pen * tonumber(ARGV[8]), step, 2 * lat))
    redis.call('HSET', KEYS[1], 'penalty', pen, 'backoff_at', now)
  end
  local ra = tonumber(ARGV[4])
  if ra > 0 and now + ra > paused then
    paused = now + ra
    redis.call('HSET', KEYS[1], 'paused_until', paused)
  end
  local gap = math.max(tonumber(ARGV[12]) * math.max(floor, crawl),
                       math.min(ceiling, math.max(lat, pen)))
  if now + gap > next_at then redis.call('HSET', KEYS[1], 'next_at', now + gap) end
elseif outcome == 'http_error' or outcome == 'error' then
  redis.call('HINCRBY', KEYS[1], 'errors', 1)
end
release_next(KEYS[1], KEYS[3], KEYS[4], KEYS[5], now)
return 1
"""

# KEYS: host hash. ARGV: floor ms, ceiling ms, hard margin. core.pacing.confirm: returns the ms
# still to wait (0: go, recorded).
_CONFIRM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'last_sent', 'latency_gap', 'penalty', 'crawl_delay')
local sent, lat = tonumber(f[1]) or 0, tonumber(f[2]) or 0
local pen, crawl = tonumber(f[3]) or 0, tonumber(f[4]) or 0
local gap = math.max(tonumber(ARGV[3]) * math.max(tonumber(ARGV[1]), crawl),
                     math.min(tonumber(ARGV[2]), math.max(lat, pen)))
if now < sent + gap then return tostring(sent + gap - now) end
redis.call('HSET', KEYS[1], 'last_sent', now)
return '0'
"""

# KEYS: host hash. core.pacing.touch.
_TOUCH_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > (tonumber(redis.call('HGET', KEYS[1], 'last_sent')) or 0) then
  redis.call('HSET', KEYS[1], 'last_sent', now)
end
return 1
"""

# KEYS: host hash [, robots record, its claim]. ARGV: robots state, crawl delay ms, key ttl s,
# hard margin [, record ('': none), record ttl ms]. core.pacing.set_crawl_delay; with the robots
# keys also store_robots, in the same step.
_SET_ROBOTS_LUA = """
local f = redis.call('HMGET', KEYS[1], 'next_at', 'last_at')
local next_at, last_at = tonumber(f[1]) or 0, tonumber(f[2]) or 0
local crawl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'robots', ARGV[1], 'crawl_delay', crawl)
local after = last_at + crawl * tonumber(ARGV[4])
if after > next_at then redis.call('HSET', KEYS[1], 'next_at', after) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if KEYS[3] then
  if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6]) end
  redis.call('DEL', KEYS[3])
end
return 1
"""

#: HostPace fields kept in milliseconds in Redis (the others are counts)
_MS_FIELDS = ("next_at", "last_sent", "paused_until", "latency_gap", "penalty", "backoff_at",
              "crawl_delay", "last_at")


# KEYS: robots record, its claim. ARGV: claim ttl ms. The record, or (none stored) whether this
# caller now holds the claim: {record, 0} | {false, 1} | {false, 0}. A store sets the record and
# ends the claim in one transaction, so no store lands between this read and this claim.
_READ_OR_CLAIM_LUA = """
local record = redis.call('GET', KEYS[1])
if record then
  return {record, 0}
end
if redis.call('SET', KEYS[2], '1', 'PX', ARGV[1], 'NX') then
  return {false, 1}
end
return {false, 0}
"""


class RedisHostPacer:
    """``HostPacer`` in Redis, shared by everyone on the same Redis and queue name."""

    def __init__(self, redis: QueueRedis, settings: Settings):
        self.redis = redis
        self.rule = PacingRule.from_settings(settings)
        self.queue_name = settings.queue_name
        self.prefix = f"{settings.queue_name}:"
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._set_robots = redis.register_script(_SET_ROBOTS_LUA)
        self._confirm = redis.register_script(_CONFIRM_LUA)
        self._touch = redis.register_script(_TOUCH_LUA)
        self._read_or_claim = redis.register_script(_READ_OR_CLAIM_LUA)
        self._rides = Rides(redis, linger_s=RELEASE_LINGER_S, what="ends of requests to hosts")
        # a script, not HINCRBY: a count never makes a host hash without its expiry
        self._count = redis.register_script(
            "if redis.call('EXISTS', KEYS[1]) == 1 then "
            "redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) end"
        )

    def _host_keys(self, host: str) -> list[str]:
        key = f"{self.prefix}host:{host}"
        return [key, key + ":leases", self.prefix + "hosts"]

    def _robots_keys(self, origin: str) -> list[str]:
        """The origin's shared robots.txt record and the claim of its one loader."""
        key = f"{self.prefix}robots:{origin}"
        return [key, key + ":claim"]

    def _line_keys(self, host: str) -> list[str]:
        return line_keys(self.queue_name, host)

    async def acquire(
        self, host: str, *, max_wait_s: float | None, job: tuple[str, str] = ("", ""),
        robots_allowed: int = 0,
    ) -> Verdict:
        r = self.rule
        batch_id, job_id = job
        args: list[str | int | float] = [
            -1 if max_wait_s is None else int(max_wait_s * 1000), r.floor_s * 1000,
            r.ceiling_s * 1000, r.max_concurrency, int(r.lease_ttl_s * 1000),
            os.urandom(4).hex(), host, HOST_TTL_S, r.hard_margin, job_id, robots_allowed,
        ]
        keys = [*self._host_keys(host), *self._line_keys(host),
                waiting_key(self.queue_name, batch_id)]
        try:  # with the ends of requests waiting to be recorded, before it (release_soon)
            reply = await self._rides.call(self._acquire, keys, args)
        except (RedisError, OSError) as exc:
            raise QueueError(f"Redis refused to pace {host}: {exc}") from exc
        verdict = _text(reply[0])
        wait_s = max(0.0, float(_text(reply[1])) / 1000)
        lease = _text(reply[2]) if len(reply) > 2 else ""
        if verdict == "go":
            return ("go", wait_s, lease)
        return ("busy", wait_s, "") if verdict == "busy" else ("defer", wait_s, "")

    async def confirm(self, host: str) -> float:
        r = self.rule
        try:
            wait_ms = await self._confirm(
                keys=self._host_keys(host)[:1],
                args=[r.floor_s * 1000, r.ceiling_s * 1000, r.hard_margin],
            )
        except (RedisError, OSError) as exc:
            raise QueueError(f"Redis refused to confirm a turn of {host}: {exc}") from exc
        return max(0.0, float(_text(wait_ms)) / 1000)

    async def touch(self, host: str) -> None:
        try:
            await self._touch(keys=self._host_keys(host)[:1])
        except (RedisError, OSError) as exc:
            raise QueueError(f"Redis refused to record a request to {host}: {exc}") from exc

    def release_soon(
        self, host: str, lease: str, outcome: Outcome, *, latency_s: float, retry_after_s: float
    ) -> None:
        r = self.rule
        args: list[str | int | float] = [
            lease, outcome, latency_s * 1000, retry_after_s * 1000, r.target_concurrency,
            r.floor_s * 1000, r.ceiling_s * 1000, r.backoff_factor, r.recover_factor,
            r.too_many_step_s * 1000, r.overloaded_step_s * 1000, r.hard_margin,
        ]
        self._rides.add(self._release, self._host_keys(host)[:2] + self._line_keys(host), args)

    async def release(
        self, host: str, lease: str, outcome: Outcome, *, latency_s: float, retry_after_s: float
    ) -> None:
        self.release_soon(host, lease, outcome, latency_s=latency_s, retry_after_s=retry_after_s)
        await self.flush()

    async def flush(self) -> None:
        try:
            await self._rides.flush()
        except (RedisError, OSError) as exc:
            raise QueueError(f"Redis refused to record the end of a request: {exc}") from exc

    async def set_robots(
        self, host: str, *, state: str, crawl_delay_s: float,
        store: tuple[str, str, float] | None = None,
    ) -> None:
        keys = self._host_keys(host)[:1]
        args: list[str | int | float] = [
            state, crawl_delay_s * 1000, HOST_TTL_S, self.rule.hard_margin]
        if store is not None:
            origin, record, ttl_s = store
            keys += self._robots_keys(origin)
            args += [record, int(ttl_s * 1000)]
        try:
            await self._set_robots(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise QueueError(f"Redis refused to record robots.txt of {host}: {exc}") from exc

    async def count(self, host: str, field: str, n: int = 1) -> None:
        try:
            await self._count(keys=self._host_keys(host)[:1], args=[field, n])
        except (RedisError, OSError) as exc:
            raise QueueError(f"Redis refused to count a robots.txt check of {host}: {exc}") from exc

    async def robots_record(self, origin: str) -> str | None:
        raw = await self.redis.get(self._robots_keys(origin)[0])
        return None if raw is None else _text(raw)

    async def claim_robots(self, origin: str, ttl_s: float) -> bool:
        claim = self._robots_keys(origin)[1]
        return bool(await self.redis.set(claim, "1", px=int(ttl_s * 1000), nx=True))

    async def read_or_claim_robots(self, origin: str, ttl_s: float) -> tuple[str | None, bool]:
        try:
            raw, claimed = await self._read_or_claim(
                keys=self._robots_keys(origin), args=[int(ttl_s * 1000)]
            )
        except (RedisError, OSError) as exc:
            raise QueueError(f"Redis refused to read robots.txt of {origin}: {exc}") from exc
        return (None if raw is None else _text(raw)), bool(claimed)

    async def store_robots(self, origin: str, record: str, ttl_s: float) -> None:
        key, claim = self._robots_keys(origin)
        async with self.redis.pipeline(transaction=True) as pipe:
            if record:
                pipe.set(key, record, px=int(ttl_s * 1000))
            pipe.delete(claim)
            await pipe.execute()

    async def defer(
        self, batch_id: str, item_id: int, attempt: int, host: str, wait_s: float
    ) -> float:
        """Put a deferred item in its host's line (``queue/lines.py``) and count it as waiting;
        returns the delay of its job's fallback, in seconds."""
        fallback_s = await enter_line(
            self.redis, self.queue_name, host, job_id(self.queue_name, item_id, attempt), wait_s
        )
        await note_waiting(self.redis, self.queue_name, batch_id, item_id, host, fallback_s)
        return fallback_s


async def host_rows(
    redis: QueueRedis, settings: Settings, *, limit: int = 10_000
) -> list[dict[str, Any]]:
    """One dict per host that was fetched in the last 7 days, most recent first: its counts,
    current gap, Crawl-delay, robots state, pause, deferrals and items in line (``wb.hosts()``)."""
    prefix = f"{settings.queue_name}:"
    rule = PacingRule.from_settings(settings)
    now = time.time()
    try:
        await redis.zremrangebyscore(prefix + "hosts", "-inf", (now - HOST_TTL_S) * 1000)
        hosts = [_text(h) for h in await redis.zrevrange(prefix + "hosts", 0, limit - 1)]
        async with redis.pipeline(transaction=False) as pipe:
            for host in hosts:
                pipe.hgetall(f"{prefix}host:{host}")
                pipe.zcount(f"{prefix}host:{host}:leases", now * 1000, "+inf")
                pipe.llen(f"{prefix}host:{host}:line")
            replies = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to read the hosts: {exc}") from exc
    rows = []
    for host, raw, in_flight, in_line in zip(
        hosts, replies[::3], replies[1::3], replies[2::3], strict=True
    ):
        data = {_text(k): _text(v) for k, v in raw.items()}
        pace = _pace(data)
        rows.append(dict(
            host=host,
            requests=pace.requests,
            errors=pace.errors,
            throttled=pace.throttled,
            in_flight=int(in_flight),
            delay_s=round(gap_s(pace, rule), 3),
            response_gap_s=round(pace.latency_gap, 3),
            backoff_s=round(pace.penalty, 3),
            crawl_delay_s=pace.crawl_delay or None,
            robots=data.get("robots", ""),
            robots_allowed=int(data.get("robots_allowed", 0)),
            robots_disallowed=int(data.get("robots_disallowed", 0)),
            paused_until=pace.paused_until if pace.paused_until > now else None,
            deferred=pace.deferred,
            next_free_in_s=round(max(0.0, pace.next_at - now), 3),
            waiting=int(in_line),
            last_request_at=pace.last_at or None,
        ))
    return rows


def _pace(data: dict[str, str]) -> HostPace:
    """A host hash as ``HostPace`` in seconds (epoch seconds for times)."""
    values: dict[str, Any] = {}
    for f in fields(HostPace):
        if f.name == "leases" or f.name not in data:
            continue
        number = float(data[f.name])
        values[f.name] = number / 1000 if f.name in _MS_FIELDS else int(number)
    return HostPace(**values)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
