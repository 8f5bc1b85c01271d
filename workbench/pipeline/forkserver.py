"""The process-wide fork server the CPU pool's children are started from, and what it preloads.

Apart from ``cpu`` so that an entry point can start the server before its own heavy imports: this
module loads only ``multiprocessing``, and the server's ~0.5-1 s of imports (trafilatura, the
language model) then run beside the entry point's instead of after them.
"""

from __future__ import annotations

import multiprocessing

#: Imported by name once in the fork server and again (a no-op there) in each child, so children
#: start warm (importing ``cpu_preload`` runs the warm-up).
PRELOAD_MODULES = ("workbench.pipeline.cpu_preload",)

_START_METHOD = "forkserver"


def mp_context() -> multiprocessing.context.BaseContext:
    """The context the CPU pool starts its children with: ``forkserver`` with our preload, or
    ``spawn`` where there is no fork server (Windows)."""
    try:
        ctx = multiprocessing.get_context(_START_METHOD)
    except ValueError:  # platforms without forkserver (Windows)
        return multiprocessing.get_context("spawn")
    # Only takes effect if the (process-wide) fork server has not started yet; harmless otherwise.
    ctx.set_forkserver_preload(list(PRELOAD_MODULES))
    return ctx


def start_fork_server() -> None:
    """Start the process-wide fork server now, without waiting for it: it imports and warms the
    extraction stack (``PRELOAD_MODULES``) while the caller imports and connects, instead of
    after. Entry points only (``python -m workbench.worker`` and its processes), before their
    own heavy imports: the first page of a cold worker came ~0.35 s sooner (benchmarks/NOTES.md,
    session 13). A pool created later uses this server; nothing happens without a fork server
    (Windows) or when one is running."""
    ctx = mp_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
