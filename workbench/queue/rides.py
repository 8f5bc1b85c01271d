"""Script calls that need not reach Redis at once, sent with the next call that must: ``Rides``.

Two writes per article page need not be waited for, and each was a round trip of its own (a
write to the server's socket that wakes it, and the client's packing and parsing: ~75 us of the
worker's CPU here, ~4 of them a page; benchmarks/NOTES.md, session 17):

- a fetch's end (``RedisHostPacer.release``: its host's lease freed, the response time learnt):
  the page goes on to be extracted. It rides with the pacer's next ``acquire`` (the next fetch,
  ~15 ms later in a busy worker), before it, so that one already sees the lease freed;
- a job's finish (``QueueWorker.finish_job``): the outcome is in the ledger. It rides with the
  start call that the job's freed slot brings about at once, before it, so the start script
  reads the queue without it.

Each waits for the next call that must go now and goes in the same pipeline, in order: one
round trip for both. With no such call within ``linger_s``, it goes alone. Nothing is lost by
waiting: a lease a process never freed expires (its TTL), a job never finished is handed back
and its next run finds its outcome in the ledger.

A ride's failure is logged, not raised (no caller waits for it); ``flush`` sends what is waiting
and raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from workbench.core.logs import get_logger

__all__ = ["Rides"]

log = get_logger("workbench.queue")

#: what is told when a call sent later failed (it is logged besides)
OnError = Callable[[BaseException], None]
_Call = tuple[AsyncScript, list[Any], list[Any], OnError | None]


class Rides:
    """Calls waiting to ride with the next call through ``call``, or to go alone after
    ``linger_s``; ``what`` names them in the log."""

    def __init__(self, redis: Redis, *, linger_s: float, what: str):
        self._redis = redis
        self._linger_s = linger_s
        self._what = what
        self._waiting: list[_Call] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[list[Any]]] = set()
        self._loaded: set[str] = set()  # the scripts this process loaded into the server
        #: calls sent with another one, and alone (after the linger, or by ``flush``)
        self.rode = 0
        self.went_alone = 0

    def add(
        self, script: AsyncScript, keys: list[Any], args: list[Any], on_error: OnError | None = None
    ) -> None:
        """Send ``script(keys, args)`` with the next ``call``, or alone within ``linger_s``;
        ``on_error`` is told if it fails."""
        self._waiting.append((script, keys, args, on_error))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._go_alone)

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """``script(keys, args)``'s reply, the waiting calls sent before it in one round trip.
        Cancelling the caller does not cancel the send: the calls riding with it still land."""
        waiting = self._take()
        if not waiting:
            return await script(keys=keys, args=args)
        sent = self._launch([*waiting, (script, keys, args, None)], rides=len(waiting))
        reply = (await asyncio.shield(sent))[-1]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def flush(self) -> None:
        """Until every call added so far went; raises the first error sending them met."""
        waiting = self._take()
        if waiting:
            replies = await asyncio.shield(self._launch(waiting, rides=len(waiting), alone=True))
            errors = [r for r in replies if isinstance(r, Exception)]
            if errors:
                raise errors[0]
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _take(self) -> list[_Call]:
        waiting, self._waiting = self._waiting, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiting

    def _go_alone(self) -> None:
        self._timer = None
        waiting = self._take()
        if waiting:
            self._launch(waiting, rides=len(waiting), alone=True)

    def _launch(
        self, calls: list[_Call], *, rides: int, alone: bool = False
    ) -> asyncio.Task[list[Any]]:
        """``_send(calls)`` in a task of its own, kept until it ends; the first ``rides`` calls
        are rides: counted, and their failures logged and told (``_sent``)."""
        task = asyncio.get_running_loop().create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(lambda done: self._sent(done, calls[:rides], alone))
        return task

    def _sent(self, task: asyncio.Task[list[Any]], rides: list[_Call], alone: bool) -> None:
        self._sending.discard(task)
        failure = asyncio.CancelledError() if task.cancelled() else task.exception()
        if failure is not None:  # none of them went, or it is not known which did
            self._failed(rides, failure)
            return
        if alone:
            self.went_alone += len(rides)
        else:
            self.rode += len(rides)
        for call, reply in zip(rides, task.result(), strict=False):
            if isinstance(reply, Exception):
                self._failed([call], reply)

    async def _send(self, calls: list[_Call]) -> list[Any]:
        """One pipeline of EVALSHAs (not the scripts' own calls: redis-py's pipeline would first
        ask whether they are loaded, a round trip more each time). Each script is loaded first,
        once: a ride the server did not know would run after the call it must precede. One the
        server lost since (a restart, a SCRIPT FLUSH) is loaded and run again on its own, after
        the calls behind it (an ``acquire`` may then find a lease not yet freed: "busy", and
        it asks again). Each reply, or the error it met."""
        for script in {script for script, *_ in calls}:
            if script.sha not in self._loaded:
                await self._redis.script_load(script.script)
                self._loaded.add(script.sha)
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = list(await pipe.execute(raise_on_error=False))
        for i, (reply, (script, keys, args, _)) in enumerate(zip(replies, calls, strict=True)):
            if isinstance(reply, NoScriptError):
                try:
                    replies[i] = await script(keys=keys, args=args)  # loads it
                except (RedisError, OSError) as exc:
                    replies[i] = exc
        return replies

    def _failed(self, calls: list[_Call], exc: BaseException) -> None:
        log.warning("calls sent later failed", calls=len(calls), what=self._what,
                    error=f"{type(exc).__name__}: {exc}"[:300])
        for *_, on_error in calls:
            if on_error is not None:
                on_error(exc)
