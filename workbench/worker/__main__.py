"""``python -m workbench.worker [--processes N] [--concurrency N] [--burst] [--pipelines MOD,...]``

One process runs the worker itself (``process.run_in_this_process``); more are started and
watched by ``supervisor``. The settings are checked before anything starts, the pipeline modules
before the worker does (a bad one exits 2; the CPU pool's fork server, started beside their
loading, goes with the process).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from workbench.core.errors import WorkbenchError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m workbench.worker",
        description="Run Workbench workers: take items from the queue, run their pipeline, "
        "record results in the ledger.",
    )
    p.add_argument("--processes", type=_positive, default=None,
                   help="worker processes (default: one per two CPUs, at least one; "
                   "WORKBENCH_WORKER_PROCESSES)")
    p.add_argument("--concurrency", type=_positive, default=None,
                   help="items in flight per process (default WORKBENCH_WORKER_CONCURRENCY=32)")
    p.add_argument("--burst", action="store_true",
                   help="exit once the queue is empty instead of waiting for more work")
    p.add_argument("--pipelines", default=None,
                   help="comma-separated modules defining extra @pipeline functions")
    return p.parse_args(argv)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


#: CPUs per worker process by default: each worker process runs its extraction (the CPU pool)
#: in this many processes of its own. One event loop costs ~5-7 ms of CPU per article page
#: against ~38 ms in an extraction process, so it keeps two busy with room to spare. On the
#: 2-core machine, one worker process with two extraction processes against two with one each
#: (905 corpus URLs, cold start to the last page, 4 alternating pairs): 7 % less wall time in
#: every pair, the first page 1.3 s sooner (one interpreter and one fork server to start, not
#: two of each), 1-2 ms less of the worker's CPU per page (benchmarks/NOTES.md, session 10).
CPUS_PER_PROCESS = 2


def default_processes(cpus: int) -> int:
    """Worker processes when neither ``--processes`` nor the setting names a number."""
    return max(1, cpus // CPUS_PER_PROCESS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from workbench.core.settings import load_settings

    overrides: dict[str, Any] = {}
    if args.pipelines is not None:
        overrides["pipelines"] = args.pipelines
    try:
        settings = load_settings(**overrides)  # fail fast, before forking anything
    except WorkbenchError as exc:
        return _error(exc, 2)
    cpus = os.cpu_count() or 1
    processes = args.processes or settings.worker_processes or default_processes(cpus)
    if processes == 1:
        from workbench.pipeline.forkserver import start_fork_server

        # Its imports (trafilatura, the language model) beside this process's own, the pipeline
        # modules' included; each process of a supervisor starts its own (supervisor._child).
        start_fork_server()
    try:
        from workbench.pipeline.registry import load_pipeline_modules

        load_pipeline_modules(settings.pipeline_modules)
    except WorkbenchError as exc:
        return _error(exc, 2)
    options = {
        "burst": args.burst,
        "concurrency": args.concurrency,
        "cpu_processes": settings.extract_processes or max(1, cpus // processes),
    }
    try:
        if processes == 1:
            from workbench.worker.process import run_in_this_process

            return run_in_this_process(options, overrides)
        from workbench.worker.supervisor import supervise

        return supervise(processes, options, overrides)
    except WorkbenchError as exc:
        return _error(exc, 1)


def _error(exc: WorkbenchError, code: int) -> int:
    """One line on stderr naming what is wrong; ``code`` is the exit status (2: bad settings or
    pipeline modules, 1: the worker could not run)."""
    print(f"workbench.worker: error: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
