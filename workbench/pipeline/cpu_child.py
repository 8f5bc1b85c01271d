"""One child process of the CPU pool (``cpu.CpuPool``): its call loop, and the framing both ends
of its socket share.

A child owns one end of a Unix socket pair; the pool writes a call, the child answers it, one at
a time. A message is an 8-byte big-endian length and a pickle: the call ``(fn, args)``, the
answer ``(True, result, None)`` or ``(False, exception, traceback text)``. The pool's end reads
with the event loop's non-blocking socket calls and frames its reads itself: a page is larger
than one socket buffer, and ``multiprocessing.connection.Connection`` raises
``BlockingIOError`` on a message still arriving on a non-blocking descriptor.

The child ignores SIGINT and SIGTERM: Ctrl-C in a terminal, ``kill -TERM -<group>`` and a
service manager's stop reach every process of the worker at once, and the worker's graceful
stop finishes its running items, extractions included, before it closes the pool. The child
exits when the pool's end closes: the pool closed, or the worker died, even by ``kill -9``.
"""

from __future__ import annotations

import importlib
import io
import pickle
import signal
import socket
import struct
import traceback
from collections.abc import Sequence
from typing import Any

from workbench.core.logs import get_logger

log = get_logger("workbench.pipeline.cpu")

HEADER = struct.Struct("!Q")

#: Each end's receive buffer to start with; it grows to the largest message seen, up to
#: ``KEEP_BYTES`` (a larger message gets a buffer of its own).
RECV_BYTES = 256 * 1024
KEEP_BYTES = 4 << 20

_PICKLE = pickle.HIGHEST_PROTOCOL


def frame(obj: Any) -> memoryview:
    """``obj`` pickled after its length header, in one buffer (one write, no copy)."""
    out = io.BytesIO()
    out.write(bytes(HEADER.size))
    pickle.dump(obj, out, _PICKLE)
    view = out.getbuffer()
    HEADER.pack_into(view, 0, len(view) - HEADER.size)
    return view


class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception raised in a child: its traceback there, as text."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def answer(ok: bool, value: Any, tb: str | None) -> memoryview:
    """The framed answer to a call. A result or exception that cannot be pickled becomes a
    ``RuntimeError`` naming it, so the caller learns why and the child lives on."""
    try:
        return frame((ok, value, tb))
    except Exception as exc:
        what = "result" if ok else f"exception {type(value).__name__}: {value}"
        error = RuntimeError(f"the {what} could not be sent back from the CPU pool: {exc!r}")
        return frame((False, error, tb))


def _call(payload: memoryview) -> memoryview:
    try:
        fn, args = pickle.loads(payload)
        return answer(True, fn(*args), None)
    except BaseException as exc:  # a SystemExit from the call is the caller's too
        return answer(False, exc, traceback.format_exc())


def _read(sock: socket.socket, buf: bytearray) -> tuple[bytearray, memoryview]:
    """One message, blocking: ``(buffer, payload view)``; EOFError when the pool's end closed."""
    n = 0
    with memoryview(buf) as view:
        while n < HEADER.size:
            got = sock.recv_into(view[n:])
            if not got:
                raise EOFError
            n += got
    total = HEADER.size + HEADER.unpack_from(buf)[0]
    if total > len(buf):
        buf = buf[:n] + bytearray(total - n)
    view = memoryview(buf)
    while n < total:
        got = sock.recv_into(view[n:total])
        if not got:
            raise EOFError
        n += got
    return buf, view[HEADER.size:total]


def child_main(sock: socket.socket, preload: Sequence[str]) -> None:
    """A child's life: warm up, then answer calls until the pool's end of ``sock`` closes."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    for name in preload:  # a no-op where the fork server imported them
        try:
            importlib.import_module(name)
        except Exception:  # warm-up is best effort; a real call will report real errors
            log.debug("cpu_preload_failed", module=name, exc_info=True)
    limit_blas_threads()
    sock.setblocking(True)
    buf = bytearray(RECV_BYTES)
    while True:
        try:
            grown, payload = _read(sock, buf)
        except (EOFError, OSError):
            return
        if len(grown) <= KEEP_BYTES:
            buf = grown
        with payload:
            reply = _call(payload)
        try:
            with reply:
                sock.sendall(reply)
        except OSError:  # the pool is gone
            return


def limit_blas_threads() -> None:
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
