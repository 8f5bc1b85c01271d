"""Item jobs in Redis: the connection, bulk enqueue, drop, checks and sweeps; job ids.

One ARQ job per item attempt, id ``"<item>:<attempt>:<queue tag>"``. ARQ keeps every job's keys
(``arq:job:<id>``, ``arq:in-progress:<id>``) outside any queue, so the ids carry a tag of the
queue's name: two deployments on one Redis (two queue names, two ledgers whose item ids both
start at 1) never see each other's jobs as theirs.

An item job is its entry in the queue and nothing more: its id says all ARQ's payload would
(``run_item(item, attempt)``), so no ``arq:job:<id>`` key is written; the worker builds the
payload ARQ's ``run_job`` reads from the id (``implied_payload``, byte for byte what ARQ would
have stored). A job key with its payload and expiry was ~3/4 of the Redis server's work in an
enqueue (300k jobs on the embedded server: 3.2-3.6 s of its CPU with the keys, 0.75 s without),
and deleting it (with ARQ's retry key, which exists only while a job runs) was over two thirds of
a 1M cancel's removal (7.5 -> 2.3 s of the server's CPU); a queue entry is enough to run, check
and drop a job. Jobs
enqueued with a key (by earlier versions) still run from it. Enqueue, drop and the check of
missing jobs are one Lua call per few thousand jobs: 100k items are a handful of round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

from redis.exceptions import RedisError

from workbench.core.errors import QueueError
from workbench.core.settings import Settings
from workbench.queue.arq_adapter import (
    IN_PROGRESS_KEY_PREFIX,
    JOB_KEY_PREFIX,
    RETRY_KEY_PREFIX,
    QueueRedis,
    open_pool,
    payload_template,
)

JOB_FUNCTION = "run_item"
_PIPELINE_CHUNK = 5000
_ITEM_JOB = re.compile(r"^(\d+):(\d+)(?::([0-9a-f]{8}))?$")


def queue_tag(queue_name: str) -> str:
    """Eight hex digits naming the queue in its job ids (short: a million queued jobs hold each
    id three times in Redis)."""
    return hashlib.blake2s(queue_name.encode(), digest_size=4).hexdigest()


def job_id(queue_name: str, item_id: int, attempt: int) -> str:
    return f"{item_id}:{attempt}:{queue_tag(queue_name)}"


def parse_job_id(value: str, queue_name: str) -> tuple[int, int] | None:
    """``(item_id, attempt)`` of one of this queue's item jobs; None for other jobs (the cleanup
    cron job, another queue's items). An untagged ``"<item>:<attempt>"`` (written before ids were
    tagged) counts as this queue's."""
    m = _ITEM_JOB.match(value)
    if m is None or (m.group(3) is not None and m.group(3) != queue_tag(queue_name)):
        return None
    return int(m.group(1)), int(m.group(2))


async def redis_url_for(settings: Settings) -> str:
    """The Redis URL to use, starting the embedded server when none is configured."""
    if settings.redis_url:
        return settings.redis_url
    from workbench.queue.embedded import EmbeddedRedis

    server = EmbeddedRedis(settings.embedded_redis_dir, server=settings.redis_server)
    return await asyncio.to_thread(server.ensure_running)


async def connect(settings: Settings) -> QueueRedis:
    """A Redis pool for the queue, with the JSON job serializer (never pickle)."""
    url = await redis_url_for(settings)
    try:
        return await open_pool(url, settings.queue_name)
    except (RedisError, OSError) as exc:
        raise QueueError(f"cannot connect to Redis at {_safe(url)}: {exc}") from exc


def _safe(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# ZADD NX of each id, run inside Redis: redis-py's pure-Python command packing was most of a
# 100k-URL submit. A chunk's ids and scores travel as two newline-joined strings (ids hold no
# newline). Returns how many ids were added (those already queued are left as they are).
_ENQUEUE_LUA = """
local ids = string.gmatch(ARGV[1], "[^\\n]+")
local scores = string.gmatch(ARGV[2], "[^\\n]+")
local added, members = 0, {}
for id in ids do
  members[#members + 1] = scores()
  members[#members + 1] = id
  if #members >= 2000 then
    added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(members))
    members = {}
  end
end
if #members > 0 then
  added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(members))
end
return added
"""
# ARQ's payload for run_item(item, attempt), %-formatted with (item, attempt, enqueue time ms)
_PAYLOAD = payload_template(JOB_FUNCTION)


def implied_payload(queue_name: str) -> Callable[[str, int], bytes | None]:
    """For the worker: the ARQ payload of one of this queue's item jobs, from its id and its
    score in the queue (as enqueue time: when it became due), or None for any other job (it
    has a key of its own, or none: ARQ then drops it as expired)."""

    def payload(job_id: str, score: int) -> bytes | None:
        parsed = parse_job_id(job_id, queue_name)
        return None if parsed is None else _PAYLOAD % (*parsed, score)

    return payload


def _id_lines(jobs: Sequence[tuple[int, int]], tag: bytes) -> bytes:
    """The job ids of ``(item_id, attempt)`` jobs, one a line: how the scripts here take them
    (``job_id``'s format, built as bytes)."""
    return b"\n".join(b"%d:%d:%s" % (i, a, tag) for i, a in jobs)


async def enqueue(
    redis: QueueRedis,
    queue_name: str,
    jobs: Sequence[tuple[int, int]],
    *,
    defer_s: float | dict[int, float] = 0.0,
    front: bool = False,
) -> int:
    """Enqueue ``(item_id, attempt)`` jobs in chunks of one script call each; returns how many
    were added. A job already queued is left alone (ZADD NX), so reconcile and a racing
    submitter cannot duplicate it. ``front`` puts the jobs ahead of every waiting job (score 0:
    due since ever), for items a dead worker held, which must not wait behind the whole
    backlog."""
    if not jobs:
        return 0
    now_ms = int(time.time() * 1000)
    tag = queue_tag(queue_name).encode()
    script = redis.register_script(_ENQUEUE_LUA)
    written = 0
    try:
        for start in range(0, len(jobs), _PIPELINE_CHUNK):
            chunk = jobs[start : start + _PIPELINE_CHUNK]
            if isinstance(defer_s, dict):
                defers = [int(defer_s.get(item_id, 0.0) * 1000) for item_id, _ in chunk]
            else:
                defers = [int(defer_s * 1000)] * len(chunk)
            args = [
                _id_lines(chunk, tag),
                b"\n".join(b"0" if front else b"%d" % (now_ms + d) for d in defers),
            ]
            written += int(await script(keys=[queue_name], args=args))
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused the enqueue: {exc}") from exc
    return written


# ZREM of the ids, run inside Redis as _ENQUEUE_LUA is. Only the queue entry: item jobs have no
# job key (see the module's docstring), and ARQ's retry key exists only while a job runs (its
# worker deletes it) or after a paced job ran (it lapses in a day). The DELs of those keys that
# did not exist were half the server's work of a 1M-item cancel (~2.3 us a key).
_DROP_LUA = """
local ids = {}
for id in string.gmatch(ARGV[1], "[^\\n]+") do
  ids[#ids + 1] = id
  if #ids >= 2000 then
    redis.call('ZREM', KEYS[1], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return 0
"""


async def drop(redis: QueueRedis, queue_name: str, jobs: Sequence[tuple[int, int]]) -> None:
    """Remove queued jobs from the queue (cancel), one script call per few thousand jobs. A job
    already running finds its item cancelled and stops; a job key of an earlier version's job
    stays until the daily cleanup's sweep of orphaned keys (it is never run: not queued)."""
    tag = queue_tag(queue_name).encode()
    script = redis.register_script(_DROP_LUA)
    try:
        for start in range(0, len(jobs), _PIPELINE_CHUNK):
            chunk = jobs[start : start + _PIPELINE_CHUNK]
            await script(keys=[queue_name], args=[_id_lines(chunk, tag)])
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to drop jobs: {exc}") from exc


# The entries of one batch's jobs found by a walk through the queue instead of a list of jobs: a
# batch's item ids are consecutive (the ledger reserves them so), and its job ids say their item
# and queue tag. ARGV = first and last item id, tag, first rank, ranks to look at. ZREMs the item
# jobs of this queue in the span among the members at those ranks and returns {looked at,
# removed}; the next call starts at its rank plus the members it kept.
_DROP_SPAN_LUA = """
local lo, hi, tag = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local first, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local members = redis.call('ZRANGE', KEYS[1], first, first + count - 1)
local gone = {}
for _, m in ipairs(members) do
  local item, t = string.match(m, "^(%d+):%d+:(%x+)$")
  if item and t == tag then
    local i = tonumber(item)
    if i >= lo and i <= hi then gone[#gone + 1] = m end
  end
end
for i = 1, #gone, 2000 do
  redis.call('ZREM', KEYS[1], unpack(gone, i, math.min(i + 1999, #gone)))
end
return {#members, #gone}
"""
#: queue members a call of ``_DROP_SPAN_LUA`` looks at (each call holds the server ~10 ms)
SPAN_RANKS = 5000


async def drop_span(redis: QueueRedis, queue_name: str, first: int, last: int) -> int:
    """Remove the queued jobs of items ``first`` to ``last`` (one batch's ids) from the queue by
    a walk through it, a script call per ``SPAN_RANKS`` members; returns how many went. For a
    batch that is most of the queue: no list of its jobs is read or held. Ranks move while it
    walks (workers finish jobs ahead of it): a job it passes by stays queued, and the worker that
    takes it finds its item cancelled and skips it."""
    tag = queue_tag(queue_name)
    script = redis.register_script(_DROP_SPAN_LUA)
    rank = removed = 0
    try:
        while True:
            looked, gone = await script(keys=[queue_name],
                                        args=[first, last, tag, rank, SPAN_RANKS])
            removed += int(gone)
            rank += int(looked) - int(gone)
            if int(looked) < SPAN_RANKS:
                return removed
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to drop jobs: {exc}") from exc


# A cancel drops its jobs while the ledger's UPDATE runs (``client.cancelling``): for those
# seconds the ledger still says queued what Redis no longer holds, and a reconcile reading both
# then would enqueue the jobs again (each skipped later by a worker, as cancelled). So a cancel
# is announced here for as long as it runs: a sorted set of the cancels under way (member a
# token, score the time it is given up on, should its process die) and a count of the cancels
# ever begun. Reconcile leaves missing jobs for its next pass when a cancel was under way at the
# start of its pass, or is or began by its end (``cancels_state`` read before and after).
CANCEL_TTL_MS = 10 * 60 * 1000


def _cancel_keys(queue_name: str) -> tuple[str, str]:
    return f"{queue_name}:cancels", f"{queue_name}:cancels-begun"


async def cancel_begin(redis: QueueRedis, queue_name: str) -> str:
    """Announce a cancel under way; returns its token for ``cancel_end``."""
    under_way, begun = _cancel_keys(queue_name)
    token = uuid.uuid4().hex
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zadd(under_way, {token: int(time.time() * 1000) + CANCEL_TTL_MS})
            pipe.incr(begun)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to record a cancel: {exc}") from exc
    return token


async def cancel_end(redis: QueueRedis, queue_name: str, token: str) -> None:
    try:
        await redis.zrem(_cancel_keys(queue_name)[0], token)
    except (RedisError, OSError) as exc:  # it lapses by itself (CANCEL_TTL_MS)
        raise QueueError(f"Redis refused to record a cancel's end: {exc}") from exc


async def cancels_state(redis: QueueRedis, queue_name: str) -> tuple[int, int]:
    """(cancels ever begun, cancels under way now) of this queue."""
    under_way, begun = _cancel_keys(queue_name)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(under_way, "-inf", int(time.time() * 1000))
        pipe.zcard(under_way)
        pipe.get(begun)
        _, now, count = await pipe.execute()
    return int(count or 0), int(now)


async def remove(redis: QueueRedis, queue_name: str, job_ids: Sequence[str]) -> None:
    """Remove jobs by id: queue entry, job key and ARQ's retry key."""
    for start in range(0, len(job_ids), _PIPELINE_CHUNK):
        ids = job_ids[start : start + _PIPELINE_CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zrem(queue_name, *ids)
            pipe.delete(*[JOB_KEY_PREFIX + j for j in ids])
            pipe.delete(*[RETRY_KEY_PREFIX + j for j in ids])
            await pipe.execute()


async def not_running(redis: QueueRedis, job_ids: Sequence[str]) -> list[str]:
    """The jobs among ``job_ids`` no worker is running right now (no in-progress key)."""
    if not job_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for jid in job_ids:
            pipe.exists(IN_PROGRESS_KEY_PREFIX + jid)
        flags = await pipe.execute()
    return [j for j, running in zip(job_ids, flags, strict=True) if not running]


async def queued_ids(
    redis: QueueRedis, queue_name: str, *, count: int = 1000
) -> AsyncIterator[str]:
    """Every job id in the queue (item jobs and others, such as cron jobs), scanned."""
    async for member, _score in redis.zscan_iter(queue_name, count=count):
        yield member.decode() if isinstance(member, bytes) else str(member)


async def stored_ids(redis: QueueRedis, *, count: int = 1000) -> AsyncIterator[str]:
    """Every job id with a job key in this Redis, in any queue, scanned."""
    async for key in redis.scan_iter(match=JOB_KEY_PREFIX + "*", count=count):
        yield (key.decode() if isinstance(key, bytes) else str(key))[len(JOB_KEY_PREFIX):]


# ZSCORE of each id in the queue, inside Redis: a redis-py pipeline packing one command a job was
# most of a full reconcile (~22 s of CPU for a million queued items). A job is missing when it is
# not queued (a job key without a queue entry, as an earlier version could leave, never runs).
# Returns the 1-based positions of the ids not in the queue.
_MISSING_LUA = """
local out, n = {}, 0
for id in string.gmatch(ARGV[1], "[^\\n]+") do
  n = n + 1
  if not redis.call('ZSCORE', KEYS[1], id) then out[#out + 1] = n end
end
return out
"""


async def missing(
    redis: QueueRedis, queue_name: str, jobs: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The jobs not in the queue (flushed, lost with a restart)."""
    script = redis.register_script(_MISSING_LUA)
    tag = queue_tag(queue_name).encode()
    out: list[tuple[int, int]] = []
    try:
        for start in range(0, len(jobs), _PIPELINE_CHUNK):
            chunk = jobs[start : start + _PIPELINE_CHUNK]
            ids = _id_lines(chunk, tag)
            gone = await script(keys=[queue_name], args=[ids])
            out.extend(chunk[int(n) - 1] for n in gone)
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused the check of queued jobs: {exc}") from exc
    return out


async def queue_length(redis: QueueRedis, queue_name: str) -> int:
    return int(await redis.zcard(queue_name))


def defer_from(next_try_at: datetime | None) -> float:
    if next_try_at is None:
        return 0.0
    return max(0.0, (next_try_at - datetime.now(UTC)).total_seconds())
