"""The line of items waiting for a paced host, and when each is woken.

A fetch that would wait more than a second for its host gives its worker slot back
(``pipeline/fetch/politeness.py``): the worker hands the item back and calls ``enter_line``. Its
host's line (a Redis list, ``<queue>:host:<host>:line``) keeps the order, and the head of the line
is *released* just in time: put in the queue's paced set (``arq_adapter.paced_key``) due half a
second before the host's next free start, which the worker's start script takes first. A line
moves whenever a request to its host is granted or finishes (``queue/hosts.py``'s scripts call
``release_next``), so a host's turns are used as they come, whatever its gap does meanwhile.

Why not a due time per item, fixed when it is deferred: gaps change (a worker's response-time
estimate swings while it starts up; Crawl-delay arrives with robots.txt; back-offs), and an item
a little late for its turn pushes everyone behind it. Measured with 40 items of two paced hosts
(2 s answers; Crawl-delay 2) beside 960 items of 48 other hosts: fixed due times left the two
hosts idle for minutes and took 298-376 s; the line takes ~the hosts' own pace.

- A released item that comes back and is still too early or too late for a turn (another took
  it) goes back to the front of the line, not the end.
- One item per host is released at a time; if it does not come for its turn within a grace
  (cancelled, its worker died), the next is released.
- The item's ARQ job is deferred too, as a fallback only (``enter_line``'s estimate of its turn,
  plus a grace): if the line ever stalls, the job runs anyway and takes its place again.
- Items that left the queue meanwhile (cancelled, done) are skipped when their turn comes.
"""

from __future__ import annotations

import time

from redis.exceptions import RedisError

from workbench.core.errors import QueueError
from workbench.queue.arq_adapter import QueueRedis, paced_key

__all__ = [
    "RELEASE_NEXT_LUA",
    "enter_line",
    "line_keys",
    "note_waiting",
    "waiting_key",
    "waiting_on_hosts",
]

LEAD_MS = 500  # a released item is due this long before its turn (pick-up and claim take time)
GRACE_MS = 5000  # ... and has this long after its turn to take it, before the next is released
LINE_TTL_S = 7 * 24 * 3600
_WAITING_GRACE_MS = 2000

# release_next(host hash, line, paced set, queue, now ms): if no released item is pending, the
# first item of the line still in the queue is released, due LEAD_MS before the host's next free
# start. Prepended to the scripts that call it (queue/hosts.py).
RELEASE_NEXT_LUA = f"""
local function release_next(host, line, paced, queue, now)
  if (tonumber(redis.call('HGET', host, 'released_until')) or 0) > now then return end
  redis.call('HDEL', host, 'released', 'released_until')
  while true do
    local head = redis.call('LPOP', line)
    if not head then return end
    if redis.call('ZSCORE', queue, head) then
      local f = redis.call('HMGET', host, 'next_at', 'paused_until')
      local turn = math.max(now, tonumber(f[1]) or 0, tonumber(f[2]) or 0)
      local due = math.max(now, turn - {LEAD_MS})
      redis.call('ZADD', paced, due, head)
      redis.call('HSET', host, 'released', head, 'released_until', turn + {GRACE_MS})
      return
    end
  end
end
"""

# KEYS: host hash, line, paced set, queue. ARGV: job id, wait ms, key ttl s. Returns the fallback
# delay in ms: the job's estimated turn (its place in line times the host's last gap) plus a grace.
_ENTER_LUA = RELEASE_NEXT_LUA + f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job = ARGV[1]
if redis.call('HGET', KEYS[1], 'released') == job then  -- its turn went to another: front
  redis.call('HDEL', KEYS[1], 'released', 'released_until')
  redis.call('LPUSH', KEYS[2], job)
elseif not redis.call('LPOS', KEYS[2], job) then
  redis.call('RPUSH', KEYS[2], job)
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
release_next(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now)
local f = redis.call('HMGET', KEYS[1], 'next_at', 'last_at')
local gap = math.max(1, (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0))
local place = redis.call('LPOS', KEYS[2], job)
place = place and place + 2 or 1
return tostring(math.max(tonumber(ARGV[2]), place * gap) + {GRACE_MS})
"""


def waiting_key(queue_name: str, batch_id: str) -> str:
    """The sorted set of a batch's items waiting for their hosts' turn (``host item``, scored by
    when the count should forget them: their fallback). A grant removes the item."""
    return f"{queue_name}:waiting:{batch_id}"


def line_keys(queue_name: str, host: str) -> list[str]:
    """The keys ``release_next`` needs after the host hash: line, paced set, queue."""
    return [f"{queue_name}:host:{host}:line", paced_key(queue_name), queue_name]


async def enter_line(
    redis: QueueRedis, queue_name: str, host: str, job_id: str, wait_s: float
) -> float:
    """Put a deferred job in its host's line (or back at its front); returns the delay of its
    ARQ fallback, in seconds."""
    script = redis.register_script(_ENTER_LUA)
    try:
        fallback_ms = await script(
            keys=[f"{queue_name}:host:{host}", *line_keys(queue_name, host)],
            args=[job_id, int(wait_s * 1000), LINE_TTL_S],
        )
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to put {job_id} in line for {host}: {exc}") from exc
    return float(fallback_ms) / 1000


async def note_waiting(
    redis: QueueRedis, queue_name: str, batch_id: str, item_id: int, host: str, wait_s: float
) -> None:
    """Count an item of ``batch_id`` as waiting ``wait_s`` for its paced ``host`` (the monitor's
    "312 items waiting on 3 paced hosts"; ``waiting_on_hosts``)."""
    key = waiting_key(queue_name, batch_id)
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {f"{host} {item_id}": now_ms + int(wait_s * 1000) + _WAITING_GRACE_MS})
        pipe.zremrangebyscore(key, "-inf", now_ms)
        pipe.expire(key, LINE_TTL_S)
        await pipe.execute()


async def waiting_on_hosts(
    redis: QueueRedis, queue_name: str, batch_id: str, *, limit: int = 10_000
) -> tuple[int, int]:
    """(items, hosts) of a batch waiting for paced hosts right now (hosts among the first
    ``limit`` items)."""
    key = waiting_key(queue_name, batch_id)
    now_ms = int(time.time() * 1000)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcount(key, now_ms, "+inf")
            pipe.zrangebyscore(key, now_ms, "+inf", start=0, num=limit)
            items, members = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to read the paced items: {exc}") from exc
    hosts = {(m.decode() if isinstance(m, bytes) else str(m)).split(" ", 1)[0] for m in members}
    return int(items), len(hosts)
