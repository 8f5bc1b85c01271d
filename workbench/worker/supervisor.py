"""Several worker processes under one command: start N children, forward signals, restart a
child that dies unexpectedly (a hostile page must not take capacity down for good)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

from workbench.core.logs import get_logger

log = get_logger("workbench.supervisor")

_RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


def _child(options: dict[str, Any], overrides: dict[str, Any]) -> None:
    from workbench.pipeline.forkserver import start_fork_server

    start_fork_server()  # its ~1 s of imports beside this process's own
    from workbench.worker.process import run_in_this_process

    raise SystemExit(run_in_this_process(options, overrides))


def supervise(processes: int, options: dict[str, Any], overrides: dict[str, Any]) -> int:
    ctx = mp.get_context("spawn")  # a clean interpreter each: no inherited loops, locks or sockets
    children: dict[int, mp.process.BaseProcess] = {}
    restarts: dict[int, int] = {}
    stopping = False

    def start(slot: int) -> None:
        proc = ctx.Process(
            target=_child, args=(options, overrides), name=f"workbench-worker-{slot}"
        )
        proc.start()
        children[slot] = proc
        log.info("worker process started", slot=slot, pid=proc.pid)

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if stopping and signum == signal.SIGINT:
            for p in children.values():
                if p.is_alive():
                    p.kill()
            return
        stopping = True
        log.info("stopping worker processes", signal=signal.Signals(signum).name)
        for p in children.values():
            if p.is_alive() and p.pid:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(processes):
        start(slot)

    exit_code = 0
    while children:
        time.sleep(0.2)
        for slot, proc in list(children.items()):
            if proc.is_alive():
                continue
            proc.join()
            del children[slot]
            code = proc.exitcode or 0
            if stopping or (options.get("burst") and code == 0):
                exit_code = max(exit_code, 1 if code not in (0, -signal.SIGTERM) else 0)
                continue
            n = restarts.get(slot, 0)
            restarts[slot] = n + 1
            wait = _RESTART_BACKOFF_S[min(n, len(_RESTART_BACKOFF_S) - 1)]
            log.warning("worker process died; restarting", slot=slot, exitcode=code, in_s=wait)
            time.sleep(wait)
            if not stopping:
                start(slot)
    return exit_code
