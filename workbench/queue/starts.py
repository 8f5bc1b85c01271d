"""A worker's job starts: which jobs start (one script call for every free slot) and what ARQ
reads when each one starts, read by the same call.

Used by ``arq_adapter`` alone (``QueueWorker.start_jobs``), which knows ARQ's keys and passes
them in; nothing here imports ARQ. ARQ's ``run_job`` opens every job with a MULTI/EXEC of its
own (GET the payload, INCR and EXPIRE the try counter): one round trip per job, a fifth of a
no-op worker's event loop. ``START_LUA`` does those three commands for each job it starts, in
the same atomic call that marks it, and ``StartRead`` hands their replies to ``run_job`` through
a stand-in for its pipeline (``StartedPool``), so ARQ's code runs unchanged on the same values.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CURRENT_START", "RETRY_KEY_TTL_S", "STARTED", "START_LUA", "StartRead", "StartedPool",
           "started_jobs"]

#: ARQ's expiry of a job's try counter (``run_job``'s ``pipe.expire(retry_key, 88400)``)
RETRY_KEY_TTL_S = 88400

# KEYS[1] = queue, KEYS[2] = its released paced jobs; ARGV = now ms, in-progress ttl ms,
# in-progress, job and retry key prefixes, most to start, this call's token, how many ids to read
# from the queue itself (0: none), ids. The ids read (the first due ones, by score: ARQ's own read,
# ZRANGEBYSCORE up to now) come before the ids given; reading them here saves the worker a round
# trip per start (a read and a start call were two). Starts (in order) each job still queued, due
# and not in progress (here or elsewhere: the jobs a worker runs stay in the queue with its mark):
# the checks of ARQ's start_jobs, atomic. Released paced jobs go first, due by Redis' clock whatever
# their fallback score (see ``arq_adapter.paced_key``). For each job started, what ARQ's run_job
# would read at its start: the payload (false: gone) and the try count, counted here (INCR, EXPIRE)
# as ARQ counts it. Returns id, score, payload, tries, ... Keys are built from ARQ's prefixes in the
# script: like ARQ, this needs one Redis server, not a cluster. The in-progress mark holds the
# call's token (ARQ writes '1' and only ever tests that the key exists): redis-py sends the same
# call again after a lost connection, and a mark holding the token was set by this very call, whose
# answer never arrived, so the job is started, not taken for another worker's (which held it for
# job_timeout + 10 s), and its try is not counted twice.
START_LUA = """
local now, ttl, iprefix, jprefix, rprefix, most, token =
  tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local started, seen = {}, {}
local function start(id, released)
  if seen[id] then return false end
  local score = redis.call('ZSCORE', KEYS[1], id)
  if not score then return true end  -- gone from the queue (done, cancelled): nothing to start
  local mark = redis.call('GET', iprefix .. id)
  if mark == token or (not mark and (released or tonumber(score) <= now)) then
    redis.call('PSETEX', iprefix .. id, ttl, token)
    local tries
    if mark == token then
      tries = tonumber(redis.call('GET', rprefix .. id))
    end
    if not tries then tries = redis.call('INCR', rprefix .. id) end
    redis.call('EXPIRE', rprefix .. id, """ + str(RETRY_KEY_TTL_S) + """)
    seen[id] = true
    started[#started + 1] = id
    started[#started + 1] = score
    started[#started + 1] = redis.call('GET', jprefix .. id)
    started[#started + 1] = tries
    return true
  end
  return false
end
local t = redis.call('TIME')
local rnow = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = 4 * most
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', rnow, 'LIMIT', 0, most)) do
  if #started >= limit then break end
  if start(id, true) then redis.call('ZREM', KEYS[2], id) end
end
local read = tonumber(ARGV[8])
if read > 0 and #started < limit then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, read)) do
    if #started >= limit then break end
    start(id, false)
  end
end
for i = 9, #ARGV do
  if #started >= limit then break end
  start(ARGV[i], false)
end
return started
"""

#: values per job in ``START_LUA``'s reply
STARTED = 4


@dataclass
class StartRead:
    """What the start script read for one job: ARQ's ``run_job`` start pipeline's replies."""

    job_key: str
    retry_key: str
    payload: bytes | None
    tries: int
    taken: bool = field(default=False)

    def replies(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies to ``commands`` if they are the ones read already (else a clear error:
        an ARQ whose ``run_job`` starts differently, which tests/queue/test_arq_adapter.py
        would have caught)."""
        expected = [("GET", self.job_key), ("INCR", self.retry_key),
                    ("EXPIRE", self.retry_key, RETRY_KEY_TTL_S)]
        if commands != expected:
            raise RuntimeError(f"ARQ's run_job began with {commands}, not {expected}: "
                               "the start script no longer reads what it needs")
        return [self.payload, self.tries, True]


#: the job a ``run_job`` task is starting (set in the task's own context by ``start_jobs``)
CURRENT_START: ContextVar[StartRead | None] = ContextVar("workbench_current_start", default=None)


def started_jobs(
    reply: list[Any], job_prefix: str, retry_prefix: str
) -> list[tuple[str, int, StartRead]]:
    """``(job id, score, what was read)`` for each job of the start script's reply."""
    out = []
    for i in range(0, len(reply), STARTED):
        raw_id, score, payload, tries = reply[i : i + STARTED]
        job_id = raw_id.decode()
        out.append((job_id, int(float(score)),
                    StartRead(job_prefix + job_id, retry_prefix + job_id, payload, int(tries))))
    return out


class _ReadPipeline:
    """ARQ's ``async with pool.pipeline(transaction=True) as pipe: pipe.get(...);
    pipe.incr(...); pipe.expire(...); await pipe.execute()``, answered from a ``StartRead``."""

    def __init__(self, read: StartRead):
        self._read = read
        self._commands: list[tuple[Any, ...]] = []

    async def __aenter__(self) -> _ReadPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def get(self, key: str) -> _ReadPipeline:
        self._commands.append(("GET", key))
        return self

    def incr(self, key: str) -> _ReadPipeline:
        self._commands.append(("INCR", key))
        return self

    def expire(self, key: str, seconds: int) -> _ReadPipeline:
        self._commands.append(("EXPIRE", key, seconds))
        return self

    async def execute(self) -> list[Any]:
        return self._read.replies(self._commands)


class StartedPool:
    """The worker's Redis pool as a starting job's ``run_job`` sees it: its first
    ``pipeline()`` is answered from the start script's read; everything else is the pool's."""

    def __init__(self, pool: Any, read: StartRead):
        self._pool = pool
        self._read = read

    def pipeline(self, transaction: bool = True) -> Any:
        if self._read.taken:
            return self._pool.pipeline(transaction=transaction)
        self._read.taken = True
        return _ReadPipeline(self._read)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)
