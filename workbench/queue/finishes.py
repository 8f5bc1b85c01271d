"""A job's finish as one script call: ``FINISH_LUA``.

Used by ``arq_adapter`` alone (``QueueWorker.finish_job``), which knows ARQ's keys and passes
them in; nothing here imports ARQ. ARQ finishes each job with its own MULTI/EXEC pipeline, a sixth
of a no-op worker's CPU; here a finish is one ``FINISH_LUA`` call, sent with the worker's next
start call in one round trip (``queue/rides.py``).
"""

from __future__ import annotations

__all__ = ["FINISHED", "FINISH_LUA", "requeued"]

# KEYS[1] = queue, KEYS[2] = ARQ's abort set; ARGV = in-progress, retry and job key prefixes, then
# (id, op) pairs: op FINISHED ('') finishes the job (ARQ's finish_job with finish=True and no
# result kept: out of the abort set and the queue, its in-progress, retry and job keys deleted);
# any other op leaves the job queued, its score raised by op (ARQ's incr_score; '0': unchanged),
# and deletes its in-progress key. Each job's writes are ARQ's, and atomic as ARQ's MULTI/EXEC
# was. Keys are built from prefixes in the script: like ARQ, this needs one server, not a cluster.
FINISH_LUA = """
local ip, rp, jp = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  local id, op = ARGV[i], ARGV[i + 1]
  if op == '' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', ip .. id, rp .. id, jp .. id)
  else
    if op ~= '0' then redis.call('ZINCRBY', KEYS[1], op, id) end
    redis.call('DEL', ip .. id)
  end
end
return 0
"""

#: the op of a job finished for good
FINISHED = ""


def requeued(incr_score: int | None) -> str:
    """The op of a job left queued (ARQ's ``finish=False``), its score raised by ``incr_score``."""
    return str(int(incr_score or 0))
