"""A process pool for CPU-bound pipeline work (extraction, analysis, embedding).

The worker's event loop keeps fetching and heart-beating while trafilatura runs in child processes.

- Children start with the ``forkserver`` method, never ``fork``: the parent runs an asyncio loop and
  threads, and forking those can deadlock a child. The fork server pre-imports the extraction stack
  once, so a (re)started child is ready in milliseconds instead of re-importing trafilatura. The
  pool names those modules (``forkserver.PRELOAD_MODULES``) but never imports them itself: what
  warms a child lives in ``cpu_preload``, beside the work it warms up for.
- The children are started in a thread, never on the event loop: starting the first child waits
  for the fork server to import the extraction stack, 2 s on an idle machine and 6-17 s on a
  loaded one, and a worker whose loop stops that long stops heart-beating; its running items look
  lost, are re-queued by reconcile and fetched twice (seen in tests/queue/test_host_lines.py).
- Each child has its own Unix socket pair, and the event loop itself writes a call to an idle
  child and reads the answer (``cpu_child`` has the protocol). ``ProcessPoolExecutor`` did the
  same through two threads of its own (a manager and a queue feeder) and a cross-thread wake-up
  per call: ~10 % of the worker's CPU samples on the article corpus, and its parent's CPU per
  170 KB call was 2-3 times this pool's (benchmarks/NOTES.md, session 14).
- At most ``processes`` calls are in flight; further callers wait on a semaphore. This also makes
  ``timeout_s`` measure running time, not queueing time.
- A call owns its child while it runs, so a child that dies (segfault, OOM kill, ``os._exit``)
  fails that call alone: it is re-run once in a fresh child (the kill may have come from outside,
  say the OOM killer choosing the biggest process); if that child dies too, the call is the
  culprit and raises ``ExtractionFailed``. A call past ``timeout_s``, or abandoned (cancelled),
  has its child killed; the others run on. The worker itself never dies with its children.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing.util  # its exit handler joins children: ours, registered later, runs first
import pickle
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from workbench.core.errors import ExtractionFailed
from workbench.core.logs import get_logger
from workbench.pipeline.cpu_child import (
    HEADER,
    KEEP_BYTES,
    RECV_BYTES,
    RemoteTraceback,
    child_main,
    frame,
)
from workbench.pipeline.forkserver import PRELOAD_MODULES, mp_context

log = get_logger("workbench.pipeline.cpu")

T = TypeVar("T")

#: Send and receive buffer asked for each child's socket: a page (~170 KB on the article corpus)
#: then goes out in one write. Linux caps it (``net.core.wmem_max``, 208 KB by default, doubled
#: by the kernel); a larger page is written in pieces as the child reads.
SOCKET_BYTES = 1 << 20

#: How long ``close(wait=True)`` waits for an idle child to exit before killing it.
EXIT_WAIT_S = 5.0


def _noop() -> None:
    return None


class _ChildGone(Exception):
    """The child's end of the socket closed mid-call: the child died."""


class _Child:
    """A started child process and the pool's (non-blocking) end of its socket."""

    __slots__ = ("buf", "process", "sock")

    def __init__(self, process: Any, sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.buf = bytearray(RECV_BYTES)

    def kill(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.process.kill()
        self.sock.close()


def _spawn(ctx: multiprocessing.context.BaseContext, preload: tuple[str, ...]) -> _Child:
    """Start one child (blocking: ``start`` waits for the fork server)."""
    ours, theirs = socket.socketpair()
    try:
        for sock in (ours, theirs):
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BYTES)
        process = ctx.Process(  # type: ignore[attr-defined]
            target=child_main, args=(theirs, preload), name="workbench-cpu"
        )
        process.start()
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the child has its copy: the pool's end must see EOF when it dies
    ours.setblocking(False)
    return _Child(process, ours)


async def _send(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: memoryview) -> None:
    try:
        sent = sock.send(data)  # a call fits the socket's buffer: no wait, no reader
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise _ChildGone from exc
    if sent < len(data):
        try:
            await loop.sock_sendall(sock, data[sent:])
        except OSError as exc:
            raise _ChildGone from exc


async def _receive(loop: asyncio.AbstractEventLoop, child: _Child) -> Any:
    """Read one framed answer and unpickle it."""
    sock, buf, n = child.sock, child.buf, 0
    try:
        with memoryview(buf) as view:
            while n < HEADER.size:
                got = await loop.sock_recv_into(sock, view[n:])
                if not got:
                    raise _ChildGone
                n += got
        total = HEADER.size + HEADER.unpack_from(buf)[0]
        if total > len(buf):
            buf = buf[:n] + bytearray(total - n)
            if total <= KEEP_BYTES:  # the next answers will likely be as big; a rare huge one
                child.buf = buf  # is not kept for the child's lifetime
        with memoryview(buf) as view:
            while n < total:
                got = await loop.sock_recv_into(sock, view[n:total])
                if not got:
                    raise _ChildGone
                n += got
            with view[HEADER.size:total] as payload:
                try:
                    return pickle.loads(payload)
                except Exception as exc:  # e.g. an exception class whose __init__ wants more
                    error = RuntimeError(f"an answer from the CPU pool could not be read: {exc!r}")
                    return False, error, None
    except OSError as exc:  # ECONNRESET and the like: the child died
        raise _ChildGone from exc


class CpuPool:
    """Runs picklable top-level functions in child processes, off the event loop.

    ``processes`` defaults to 1. ``timeout_s`` bounds one call's running time: a call past it has
    its process killed (a stuck child cannot be interrupted any other way) and raises
    ``ExtractionFailed``. ``warm_up`` imports ``PRELOAD_MODULES`` in each child.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        timeout_s: float | None = 120.0,
        warm_up: bool = True,
    ) -> None:
        self.processes = max(1, int(processes or 1))
        self.timeout_s = timeout_s
        self._preload = PRELOAD_MODULES if warm_up else ()
        self._ctx = mp_context()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._start_lock: asyncio.Lock | None = None
        self._started = False
        self._closed = False
        #: how many children were given up (and so replaced) after dying, timing out or being
        #: abandoned by a cancelled call
        self.restarts = 0
        _POOLS.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started else "idle")
        return f"CpuPool(processes={self.processes}, timeout_s={self.timeout_s}, {state})"

    # -- public API --

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a child process and return its result.

        Exceptions raised by ``fn`` propagate unchanged (their ``__cause__`` holds the child's
        traceback). A child that dies twice on the call, or a call past ``timeout_s``, raises
        ``ExtractionFailed``; the pool replaces the child, ready for the next call.
        """
        if self._closed:
            raise RuntimeError("CpuPool is closed")
        try:
            request = frame((fn, args))
        except Exception as exc:
            raise TypeError(
                f"{_name(fn)} and its arguments must pickle to run in the CPU pool (a top-level "
                f"function, plain data): {exc}"
            ) from exc
        async with self._primitives():
            await self._start()
            for attempt in (1, 2):
                if self._closed:  # closed while this call waited for a slot or its child
                    raise RuntimeError("CpuPool is closed")
                child = self._idle.pop() if self._idle else await self._spawn()
                try:
                    ok, value, tb = await self._call(child, request, fn)
                except _ChildGone:
                    self._discard(child)
                    if self._closed:
                        raise RuntimeError("CpuPool is closed") from None
                    if attempt == 1:
                        log.warning("cpu_child_died", fn=_name(fn), action="rerun_in_new_child")
                        continue
                    raise ExtractionFailed(
                        f"the process running {_name(fn)} died (crash, out of memory or "
                        "killed), twice; it was replaced"
                    ) from None
                except BaseException:  # timed out, cancelled: the child may still be at it
                    self._discard(child)
                    raise
                self._release(child)
                if ok:
                    return value
                if tb is not None:
                    value.__cause__ = RemoteTraceback(tb)
                raise value
        raise AssertionError("unreachable")  # pragma: no cover

    async def warm_up(self) -> None:
        """Start every child process now and wait until each answers, so the first real calls
        are not slowed by start-up."""
        if self._closed:
            raise RuntimeError("CpuPool is closed")
        try:
            await asyncio.gather(*(self.run(_noop) for _ in range(self.processes)))
        except ExtractionFailed as exc:
            raise RuntimeError(
                "CPU pool processes could not start (a script that starts a pool needs an "
                "`if __name__ == '__main__':` guard)"
            ) from exc

    def close(self, *, wait: bool = True) -> None:
        """Stop the child processes. Calls still waiting for a slot raise ``RuntimeError``; a
        call running finishes, and its child then exits. ``wait``: until the idle children
        have exited (killed past ``EXIT_WAIT_S``)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for child in idle:
            child.sock.close()  # the child reads EOF and exits
        for child in idle:
            if wait:
                child.process.join(EXIT_WAIT_S)
            if child.process.exitcode is None:
                child.kill()

    async def __aenter__(self) -> CpuPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- internals --

    def _primitives(self) -> asyncio.Semaphore:
        # asyncio primitives belong to one loop; notebooks and tests may use the pool from several.
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.processes)
            self._start_lock = asyncio.Lock()
        return self._slots

    async def _start(self) -> None:
        """Start all the children at once, in a thread (module docstring: a child's start blocks
        its caller until the fork server is warm)."""
        if self._started:
            return
        assert self._start_lock is not None
        async with self._start_lock:
            if self._started:
                return
            missing = self.processes - len(self._idle) - len(self._busy)
            children = await asyncio.to_thread(self._spawn_many, missing)
            if self._closed:
                for child in children:
                    child.kill()
                return
            self._idle.extend(children)
            self._started = True

    def _spawn_many(self, n: int) -> list[_Child]:
        children: list[_Child] = []
        try:
            for _ in range(n):
                children.append(_spawn(self._ctx, self._preload))
        except BaseException:
            for child in children:
                child.kill()
            raise
        return children

    async def _spawn(self) -> _Child:
        """A fresh child for a caller whose slot has none idle (its child was replaced)."""
        return await asyncio.to_thread(_spawn, self._ctx, self._preload)

    async def _call(self, child: _Child, request: memoryview, fn: Callable[..., Any]) -> Any:
        """One exchange with ``child``; past ``timeout_s``: ExtractionFailed (the caller kills
        the child)."""
        loop = asyncio.get_running_loop()
        self._busy.add(child)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                await _send(loop, child.sock, request)
                return await _receive(loop, child)
        except TimeoutError:
            elapsed = time.monotonic() - started
            raise ExtractionFailed(
                f"{_name(fn)} ran for {elapsed:.0f} s, past the {self.timeout_s:g} s limit; "
                "its process was killed"
            ) from None
        finally:
            self._busy.discard(child)

    def _release(self, child: _Child) -> None:
        if self._closed:
            child.sock.close()  # it exits
        else:
            self._idle.append(child)

    def _discard(self, child: _Child) -> None:
        self.restarts += 1
        child.kill()
        with contextlib.suppress(Exception):
            child.process.join(0)  # reaped now if it is already gone; else by the next start

    def _stop_now(self) -> None:
        """At interpreter exit: no child outlives its pool (they would block ``multiprocessing``'s
        own exit handler, which joins every child)."""
        self.close(wait=False)
        for child in list(self._busy):
            child.kill()


_POOLS: weakref.WeakSet[CpuPool] = weakref.WeakSet()


@atexit.register
def _stop_pools() -> None:
    for pool in list(_POOLS):
        pool._stop_now()


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
