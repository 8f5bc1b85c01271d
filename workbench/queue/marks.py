"""In-progress marks left by a worker that died between starting a job and claiming its item.

A worker marks the jobs it starts in progress (``arq:in-progress:<id>``, kept job_timeout + 70 s)
and then claims their items in the ledger. Killed in between (``kill -9``, a crash, a lost
machine), it leaves items the ledger calls ``queued`` whose jobs no other worker may start until
the marks expire: six minutes at the defaults, while the rest of the batch flows. The start script
writes its worker's ledger id into each mark (``QueueWorker.own_marks``), so reconcile can tell
a dead worker's marks from a live one's and delete them; the jobs are then started as usual. A
mark still held by a live worker, by a worker the ledger does not know, or written by ARQ itself
(``'1'``, cron jobs) is left alone; each deletion re-checks the mark's value inside Redis, so a
mark re-written meanwhile stays. Should a dead worker's job have run after all, the ledger's
attempt guard records one outcome.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import RedisError

from workbench.core.errors import QueueError
from workbench.queue.arq_adapter import IN_PROGRESS_KEY_PREFIX, MARK_SEPARATOR, QueueRedis

#: how many of the queue's first due jobs are looked at: a job stays in the queue while it runs,
#: and workers start jobs in queue order, so running and stranded jobs lead the queue
LOOK_AT = 2_000

# KEYS[1] = queue; ARGV = in-progress prefix, now ms, most. The first ``most`` due jobs and the
# value of each one's in-progress mark: id, mark, id, mark, ...
_MARKED_LUA = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0,
                               tonumber(ARGV[3]))) do
  local mark = redis.call('GET', ARGV[1] .. id)
  if mark then
    out[#out + 1] = id
    out[#out + 1] = mark
  end
end
return out
"""

# ARGV = in-progress prefix, then id, mark, id, mark, ...: delete each mark still holding that
# value. Returns how many were deleted.
_UNMARK_LUA = """
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('GET', ARGV[1] .. ARGV[i]) == ARGV[i + 1] then
    redis.call('DEL', ARGV[1] .. ARGV[i])
    n = n + 1
  end
end
return n
"""


def owner_of(mark: str) -> str | None:
    """The ledger id of the worker that wrote ``mark``; None for a mark of ARQ's own."""
    owner, sep, _call = mark.rpartition(MARK_SEPARATOR)
    return owner if sep and owner else None


async def marked(redis: QueueRedis, queue_name: str, now_ms: int) -> list[tuple[str, str]]:
    """``(job id, mark)`` of the queue's first due jobs that are marked in progress."""
    try:
        out = await redis.register_script(_MARKED_LUA)(
            keys=[queue_name], args=[IN_PROGRESS_KEY_PREFIX, now_ms, LOOK_AT])
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to list in-progress marks: {exc}") from exc
    return [(j.decode(), m.decode(errors="replace")) for j, m in zip(out[::2], out[1::2],
                                                                     strict=True)]


async def unmark(redis: QueueRedis, marks: Sequence[tuple[str, str]]) -> int:
    """Delete these ``(job id, mark)`` marks, each only if it still holds that value."""
    if not marks:
        return 0
    args: list[str] = [IN_PROGRESS_KEY_PREFIX]
    for job, mark in marks:
        args += [job, mark]
    try:
        return int(await redis.register_script(_UNMARK_LUA)(args=args))
    except (RedisError, OSError) as exc:
        raise QueueError(f"Redis refused to delete in-progress marks: {exc}") from exc
