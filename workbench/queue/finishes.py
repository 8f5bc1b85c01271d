"""The jobs a worker finishes together, written to Redis in one script call.

Used by ``arq_adapter`` alone (``QueueWorker.finish_job``), which knows ARQ's keys and passes
them in; nothing here imports ARQ. ARQ finishes each job with its own MULTI/EXEC pipeline, a sixth
of a no-op worker's CPU; here the finishes that arrive in the same turn of the event loop, or
while the previous call is in flight, go in one call of ``FINISH_LUA``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["FINISHED", "FINISH_LUA", "FinishBatcher", "requeued"]

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


class FinishBatcher:
    """Gathers finishes and runs ``call(["id", "op", "id", "op", ...])`` for each gathered lot,
    one call at a time. Every ``finish`` returns once its call did, or raises what the call
    raised (each job of a failed call sees the failure, as with its own pipeline)."""

    def __init__(self, call: Callable[[list[str]], Awaitable[object]]) -> None:
        self._call = call
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def finish(self, job_id: str, op: str) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._pending.append((job_id, op, waiter))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        await waiter

    async def _run(self) -> None:
        await asyncio.sleep(0)  # the jobs ending in this turn of the loop join the first call
        while self._pending:
            lot, self._pending = self._pending, []
            try:
                await self._call([x for job_id, op, _ in lot for x in (job_id, op)])
            except asyncio.CancelledError:  # the loop is closing: no finish waits forever
                for *_, waiter in lot + self._pending:
                    waiter.cancel()
                self._pending = []
                raise
            except Exception as exc:
                for *_, waiter in lot:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for *_, waiter in lot:
                    if not waiter.done():
                        waiter.set_result(None)
