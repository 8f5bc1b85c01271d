"""ARQ glue: the Redis connection, JSON job payloads, bulk enqueue, job ids and reconcile.

One ARQ job per item attempt, id ``"<item>:<attempt>"``. Jobs are written in ARQ's own format
(so ``arq.jobs.Job`` can read them) but through one Redis pipeline per few thousand jobs: 100k
items are a handful of round trips, not 100k.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix, retry_key_prefix
from arq.jobs import Job
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from workbench.core.codec import job_dumps, job_loads
from workbench.core.errors import QueueError
from workbench.core.settings import Settings

JOB_FUNCTION = "run_item"
# Jobs outlive a long queue; the ledger re-enqueues anything that expires anyway.
JOB_EXPIRES_MS = 7 * 24 * 3600 * 1000
_PIPELINE_CHUNK = 5000

log = structlog.get_logger("workbench.queue.jobs")


def job_id(item_id: int, attempt: int) -> str:
    return f"{item_id}:{attempt}"


def parse_job_id(value: str) -> tuple[int, int]:
    item, _, attempt = value.partition(":")
    return int(item), int(attempt)


async def redis_url_for(settings: Settings) -> str:
    """The Redis URL to use, starting the embedded server when none is configured."""
    if settings.redis_url:
        return settings.redis_url
    from workbench.queue.embedded import EmbeddedRedis

    server = EmbeddedRedis(settings.embedded_redis_dir)
    return await asyncio.to_thread(server.ensure_running)


def redis_settings(url: str) -> RedisSettings:
    rs = RedisSettings.from_dsn(url)
    rs.conn_timeout = 5
    rs.conn_retries = 3
    # After a Redis restart every pooled connection is dead: reconnect and retry the command
    # instead of failing once per pooled connection.
    rs.retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
    rs.retry_on_error = [RedisConnectionError]
    return rs


async def connect(settings: Settings) -> ArqRedis:
    """An ArqRedis pool with the JSON serializer (never pickle)."""
    url = await redis_url_for(settings)
    rs = redis_settings(url)
    try:
        from arq.connections import create_pool

        return await create_pool(
            rs,
            job_serializer=job_dumps,
            job_deserializer=job_loads,
            default_queue_name=settings.queue_name,
        )
    except (RedisError, OSError) as exc:
        raise QueueError(f"cannot connect to Redis at {_safe(url)}: {exc}") from exc


def _safe(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# SET NX PX of each job key and ZADD NX of its id, run inside Redis: redis-py's pure-Python command
# packing of two commands per job was most of a 100k-URL submit. A chunk's ids, payloads, scores
# and expiries travel as four newline-joined strings (ids and JSON payloads hold no newline).
# Job keys are built from ARQ's prefix inside the script, not passed as KEYS: like ARQ itself,
# this needs a single Redis server, not a cluster. Returns how many job keys were written.
_ENQUEUE_LUA = """
local ids = string.gmatch(ARGV[1], "[^\\n]+")
local payloads = string.gmatch(ARGV[2], "[^\\n]+")
local scores = string.gmatch(ARGV[3], "[^\\n]+")
local expiries = string.gmatch(ARGV[4], "[^\\n]+")
local prefix = ARGV[5]
local written, members = 0, {}
for id in ids do
  local payload, score, px = payloads(), scores(), expiries()
  if redis.call('SET', prefix .. id, payload, 'PX', px, 'NX') then
    written = written + 1
  end
  members[#members + 1] = score
  members[#members + 1] = id
  if #members >= 2000 then
    redis.call('ZADD', KEYS[1], 'NX', unpack(members))
    members = {}
  end
end
if #members > 0 then
  redis.call('ZADD', KEYS[1], 'NX', unpack(members))
end
return written
"""
# What arq.jobs.serialize_job(JOB_FUNCTION, (item, attempt), {}, None, et, serializer=job_dumps)
# returns, byte for byte (tests/reliability checks it), at a fraction of the cost.
_PAYLOAD = b'{"t":null,"f":"' + JOB_FUNCTION.encode() + b'","a":[%d,%d],"k":{},"et":%d}'


def job_payload(item_id: int, attempt: int, enqueue_time_ms: int) -> bytes:
    """The JSON job payload ARQ's ``Job`` API reads for an item's job."""
    return _PAYLOAD % (item_id, attempt, enqueue_time_ms)


async def enqueue(
    redis: ArqRedis,
    queue_name: str,
    jobs: Sequence[tuple[int, int]],
    *,
    defer_s: float | dict[int, float] = 0.0,
    front: bool = False,
) -> int:
    """Enqueue ``(item_id, attempt)`` jobs in chunks of one script call each. A job whose key
    already exists is left alone (SET NX), so reconcile and a racing submitter cannot duplicate
    it. ``front`` puts the jobs ahead of every waiting job (score 0: due since ever), for items
    a dead worker held, which must not wait behind the whole backlog."""
    if not jobs:
        return 0
    now_ms = int(time.time() * 1000)
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
                b"\n".join(b"%d:%d" % (i, a) for i, a in chunk),
                b"\n".join(_PAYLOAD % (i, a, now_ms) for i, a in chunk),
                b"\n".join(b"0" if front else b"%d" % (now_ms + d) for d in defers),
                b"\n".join(b"%d" % (JOB_EXPIRES_MS + d) for d in defers),
                job_key_prefix,
            ]
            written += int(await script(keys=[queue_name], args=args))
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused the enqueue: {exc}") from exc
    return written


async def drop(redis: ArqRedis, queue_name: str, jobs: Sequence[tuple[int, int]]) -> None:
    """Remove queued jobs (cancel). A job already running finds its item cancelled and stops."""
    try:
        for start in range(0, len(jobs), _PIPELINE_CHUNK):
            ids = [job_id(i, a) for i, a in jobs[start : start + _PIPELINE_CHUNK]]
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zrem(queue_name, *ids)
                pipe.delete(*[job_key_prefix + j for j in ids])
                pipe.delete(*[retry_key_prefix + j for j in ids])
                await pipe.execute()
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to drop jobs: {exc}") from exc


async def missing(redis: ArqRedis, jobs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The jobs whose key is gone from Redis (flushed, expired, lost with a restart)."""
    out: list[tuple[int, int]] = []
    for start in range(0, len(jobs), _PIPELINE_CHUNK):
        chunk = jobs[start : start + _PIPELINE_CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for item_id, attempt in chunk:
                pipe.exists(job_key_prefix + job_id(item_id, attempt))
            flags = await pipe.execute()
        out.extend(job for job, flag in zip(chunk, flags, strict=True) if not flag)
    return out


async def queue_length(redis: ArqRedis, queue_name: str) -> int:
    return int(await redis.zcard(queue_name))


def arq_job(redis: ArqRedis, item_id: int, attempt: int, queue_name: str) -> Job:
    """ARQ's own view of an item's job (status, info), readable because payloads are ARQ's."""
    return Job(job_id(item_id, attempt), redis, _queue_name=queue_name, _deserializer=job_loads)


def defer_from(next_try_at: datetime | None) -> float:
    if next_try_at is None:
        return 0.0
    return max(0.0, (next_try_at - datetime.now(UTC)).total_seconds())
