"""A process pool for CPU-bound pipeline work (extraction, analysis, embedding).

The worker's event loop keeps fetching and heart-beating while trafilatura runs in child processes.

- Children start with the ``forkserver`` method, never ``fork``: the parent runs an asyncio loop and
  threads, and forking those can deadlock a child. The fork server pre-imports the extraction stack
  once, so a (re)started child is ready in milliseconds instead of re-importing trafilatura. The
  pool names those modules (``PRELOAD_MODULES``) but never imports them itself: what warms a child
  lives in ``cpu_preload``, beside the work it warms up for.
- The children are started in a thread, never on the event loop: starting the first child waits
  for the fork server to import the extraction stack, 2 s on an idle machine and 6-17 s on a
  loaded one, and a worker whose loop stops that long stops heart-beating; its running items look
  lost, are re-queued by reconcile and fetched twice (seen in tests/queue/test_host_lines.py).
- At most ``processes`` calls are in flight; further callers wait on a semaphore instead of piling
  futures into the executor. This also makes ``timeout_s`` measure running time, not queueing time.
- A child that dies (segfault, OOM kill, ``os._exit``) breaks a ``ProcessPoolExecutor`` for every
  call in flight. The pool is replaced and each affected call is re-run alone in a one-process
  "quarantine" pool: innocent pages succeed there, the page that kills its process again is the
  culprit and gets ``ExtractionFailed``. The worker itself never dies with its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from workbench.core.errors import ExtractionFailed
from workbench.core.logs import get_logger

log = get_logger("workbench.pipeline.cpu")

T = TypeVar("T")

#: Imported by name once in the fork server and in each child's initializer, so children start
#: warm (importing ``cpu_preload`` runs the warm-up).
PRELOAD_MODULES = ("workbench.pipeline.cpu_preload",)

_START_METHOD = "forkserver"

#: Capacity asked for the executor's call and result pipes. A page (~170 KB on the article
#: corpus) goes to a child through the call pipe; at Linux's default 64 KB the executor's feeder
#: thread writes it in pieces, each waiting for the child to read the last: ~0.2-0.4 ms more of
#: the worker's CPU per page on the 2-core VM, where each wake-up is dear (benchmarks/NOTES.md,
#: session 11). 1 MiB is Linux's default limit for an unprivileged process.
PIPE_BYTES = 1 << 20


def _mp_context() -> multiprocessing.context.BaseContext:
    try:
        ctx = multiprocessing.get_context(_START_METHOD)
    except ValueError:  # platforms without forkserver (Windows)
        return multiprocessing.get_context("spawn")
    # Only takes effect if the (process-wide) fork server has not started yet; harmless otherwise.
    ctx.set_forkserver_preload(list(PRELOAD_MODULES))
    return ctx


def start_fork_server() -> None:
    """Start the process-wide fork server now, without waiting for it: it imports and warms the
    extraction stack (``PRELOAD_MODULES``, ~1 s) while the caller imports and connects, instead
    of after. Entry points only (``python -m workbench.worker`` and its processes), before their
    own heavy imports: the first page of a cold worker came ~0.35 s sooner (benchmarks/NOTES.md,
    session 13). A pool created later uses this server; nothing happens without a fork server
    (Windows) or when one is running."""
    ctx = _mp_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _limit_blas_threads() -> None:
    """One BLAS thread in a child: the pool already runs one process per core it is given, so a
    BLAS library's own threads only oversubscribe the cores. OpenBLAS (numpy's) starts one
    thread per core and spins them after each product: on the article corpus, where language
    detection runs one small matrix product per page, the extraction processes' CPU per page
    fell by ~10 % with one thread (benchmarks/NOTES.md). Best effort: a child runs without it."""
    try:
        import numpy  # noqa: F401 - loads its BLAS, so that there is one to limit
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    except Exception:
        log.debug("blas_thread_limit_failed", exc_info=True)


def _init_child(warm_up: bool) -> None:
    """Each child's initializer: (``warm_up``) import ``PRELOAD_MODULES`` (a no-op where the fork
    server did), then one BLAS thread."""
    if warm_up:
        _preload_child()
    _limit_blas_threads()


def _preload_child() -> None:
    for name in PRELOAD_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # warm-up is best effort; a real call will report real errors
            log.debug("cpu_preload_failed", module=name, exc_info=True)


def _noop() -> None:
    return None


class CpuPool:
    """Runs picklable top-level functions in child processes, off the event loop.

    ``processes`` defaults to 1. ``timeout_s`` bounds one call's running time: a call past it has
    its pool's processes killed (a stuck child cannot be interrupted any other way) and raises
    ``ExtractionFailed``; other calls that were running are re-run in quarantine.
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
        self._warm_up = warm_up
        self._ctx = _mp_context()
        self._executor: ProcessPoolExecutor | None = None
        self._quarantine: ProcessPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._quarantine_lock: asyncio.Lock | None = None
        self._start_lock: asyncio.Lock | None = None
        self._started: ProcessPoolExecutor | None = None  # the executor whose children run
        self._closed = False
        #: how many times a broken pool was replaced (for logs and tests)
        self.restarts = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._executor else "idle")
        return f"CpuPool(processes={self.processes}, timeout_s={self.timeout_s}, {state})"

    # -- public API --

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a child process and return its result.

        Exceptions raised by ``fn`` propagate unchanged. A child that dies or a call past
        ``timeout_s`` raises ``ExtractionFailed``; the pool is then replaced, ready for the next
        call.
        """
        if self._closed:
            raise RuntimeError("CpuPool is closed")
        slots, _ = self._primitives()
        async with slots:
            await self._start()
            if self._closed:  # closed while this call waited for a slot
                raise RuntimeError("CpuPool is closed")
            executor, fut = self._submit(fn, args)
            try:
                return await self._wait(executor, fut, fn)
            except BrokenProcessPool:
                self._replace(executor)
                log.warning("cpu_child_died", fn=_name(fn), action="rerun_in_quarantine")
            return await self._run_quarantined(fn, args)

    async def warm_up(self) -> None:
        """Start every child process now, so the first real calls are not slowed by start-up."""
        if self._closed:
            raise RuntimeError("CpuPool is closed")
        executor = self._get_executor()
        try:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in await self._start()))
        except BrokenProcessPool as exc:
            self._replace(executor)
            raise RuntimeError(
                "CPU pool processes could not start (a script that starts a pool needs an "
                "`if __name__ == '__main__':` guard)"
            ) from exc

    def close(self, *, wait: bool = True) -> None:
        """Stop the child processes. Calls still waiting for a slot raise ``RuntimeError``."""
        self._closed = True
        for executor in (self._executor, self._quarantine):
            if executor is not None:
                executor.shutdown(wait=wait, cancel_futures=True)
        self._executor = self._quarantine = None

    async def __aenter__(self) -> CpuPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- internals --

    def _primitives(self) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        # asyncio primitives belong to one loop; notebooks and tests may use the pool from several.
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None or self._quarantine_lock is None:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.processes)
            self._quarantine_lock = asyncio.Lock()
            self._start_lock = asyncio.Lock()
        return self._slots, self._quarantine_lock

    async def _start(self) -> list[Future[None]]:
        """Start the current executor's children in a thread, once (module docstring: a child's
        start blocks its caller until the fork server is warm). Returns the start-up calls'
        futures (none if the children were already started)."""
        self._primitives()
        assert self._start_lock is not None
        async with self._start_lock:
            executor = self._get_executor()
            if self._started is executor:
                return []

            def start() -> list[Future[None]]:
                # a submit while no child is idle starts one: one call per child starts them all
                return [executor.submit(_noop) for _ in range(self.processes)]

            try:
                futures = await asyncio.to_thread(start)
            except BrokenProcessPool:
                return []  # the call that submits next sees it, and replaces the executor
            self._started = executor
            return futures

    def _new_executor(self, workers: int) -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=self._ctx,
            initializer=_init_child,
            initargs=(self._warm_up,),
        )
        widen_pipes(executor)
        return executor

    def _get_executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = self._new_executor(self.processes)
        return self._executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        # Several callers see the same breakage; only the first one replaces the executor.
        if self._executor is broken:
            self._executor = None
            self.restarts += 1
        _kill(broken)
        broken.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[..., T], args: tuple) -> tuple[ProcessPoolExecutor, Future[T]]:
        executor = self._get_executor()
        try:
            return executor, executor.submit(fn, *args)
        except BrokenProcessPool:
            # Broken by an earlier call that has not replaced it yet: this call is innocent.
            self._replace(executor)
            executor = self._get_executor()
            return executor, executor.submit(fn, *args)

    async def _wait(
        self, executor: ProcessPoolExecutor, fut: Future[T], fn: Callable[..., Any]
    ) -> T:
        """Await one call; past ``timeout_s``, kill ``executor``'s children: ExtractionFailed."""
        started = time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.timeout_s)
        except TimeoutError:
            elapsed = time.monotonic() - started
            if executor is self._quarantine:
                self._quarantine = None
                _kill(executor)
                executor.shutdown(wait=False, cancel_futures=True)
            else:
                self._replace(executor)
            raise ExtractionFailed(
                f"{_name(fn)} ran for {elapsed:.0f} s, past the {self.timeout_s:g} s limit; "
                "its process was killed"
            ) from None

    async def _run_quarantined(self, fn: Callable[..., T], args: tuple) -> T:
        """Re-run a call alone in a one-process pool: if its process dies again, it is the culprit.
        """
        _, lock = self._primitives()
        async with lock:
            if self._quarantine is None:
                self._quarantine = self._new_executor(1)
            executor = self._quarantine
            try:
                return await self._wait(executor, executor.submit(fn, *args), fn)
            except BrokenProcessPool as exc:
                if self._quarantine is executor:
                    self._quarantine = None
                executor.shutdown(wait=False, cancel_futures=True)
                raise ExtractionFailed(
                    f"the process running {_name(fn)} died (crash, out of memory or killed), "
                    "twice; the pool was restarted"
                ) from exc


def widen_pipes(executor: ProcessPoolExecutor, size: int = PIPE_BYTES) -> None:
    """Ask for ``size`` bytes of capacity on ``executor``'s call and result pipes (Linux; a
    smaller size where the system caps it). Best effort: the executor works either way, and its
    queues are private attributes another Python may lay out differently."""
    import fcntl

    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:  # not Linux
        return
    for name in ("_call_queue", "_result_queue"):
        writer = getattr(getattr(executor, name, None), "_writer", None)
        if writer is None:
            log.debug("cpu_pipe_not_found", queue=name)
            continue
        for capacity in (size, size // 4):  # EPERM past /proc/sys/fs/pipe-max-size
            with contextlib.suppress(OSError, ValueError):
                fcntl.fcntl(writer.fileno(), setsize, capacity)
                break


def _kill(executor: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor has no public way to stop a running child before Python 3.14.
    processes = getattr(executor, "_processes", None) or {}
    for proc in list(processes.values()):
        try:
            proc.kill()
        except Exception:  # already gone
            pass


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
