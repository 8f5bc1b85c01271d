"""Measure the 1M figures of ``bench_scale`` again without building the batch each time, and
against other code (a ``git worktree`` of an earlier commit) side by side.

    python -m benchmarks.scale_again queued DIR N            # DIR: N queued items, server stopped
    python -m benchmarks.scale_again filled DIR N            # DIR: N items completed by scale_fill
    python -m benchmarks.scale_again cancel DIR [--src PATH] # cancel() on a copy of a queued DIR
    python -m benchmarks.scale_again status DIR [--src PATH] # status() of a filled DIR's batch
    python -m benchmarks.scale_again iter DIR [--src PATH]   # iter_results() of it (drop loop)

``--src`` is the tree whose ``workbench`` the measuring process imports (default: this one):
run the commands in turn for each tree to alternate them. Each figure is measured in a fresh
process (``_child``): wall seconds, this process's CPU seconds (all its
threads), its RSS at the start and its peak (sampled every 5 ms), and for ``cancel`` the
embedded server's CPU over the call. ``cancel`` runs on a copy of DIR (its SQLite ledger and its
embedded server's AOF): the copy is removed afterwards and its server stopped. Prints one JSON
line a run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent
#: the measuring process runs this file as a script, so that ``workbench`` comes from ``--src``
#: (``-m`` would put the current directory first on its path)
HERE = Path(__file__).resolve()


def _env(data: Path, queue_name: str, src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_DATA_DIR=str(data / "data"), WORKBENCH_QUEUE_NAME=queue_name,
               WORKBENCH_LOG_LEVEL="warning", WORKBENCH_LOG_FORMAT="json",
               PYTHONPATH=f"{src}{os.pathsep}{REPO}")  # the benchmarks from this tree
    return env


def _run(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _stop_server(data: Path) -> None:
    from workbench.queue.embedded import EmbeddedRedis

    EmbeddedRedis(data / "data" / "redis").stop()


def prepare(kind: str, data: Path, n: int) -> None:
    data.mkdir(parents=True)
    queue_name = f"bench:{os.urandom(4).hex()}"
    env = _env(data, queue_name, REPO)
    try:
        sub = _run([PYTHON, "-m", "benchmarks.scale_submit", str(n), kind], env)
        if kind == "filled":
            _run([PYTHON, "-m", "benchmarks.scale_fill", sub["batch_id"]], env)
    finally:
        _stop_server(data)
    info = {"batch_id": sub["batch_id"], "queue_name": queue_name, "n": n, "kind": kind,
            "submit_s": round(sub["seconds"], 2)}
    (data / "bench.json").write_text(json.dumps(info))
    print(json.dumps(info))


def measure(what: str, data: Path, src: Path) -> None:
    info = json.loads((data / "bench.json").read_text())
    work = data
    if what == "cancel":  # on a copy: the cancel changes the ledger and the queue
        work = Path(tempfile.mkdtemp(prefix="wb-again-"))
        shutil.rmtree(work)
        shutil.copytree(data, work)
        from workbench.queue.embedded import EmbeddedRedis

        # loading a million jobs from the AOF takes longer than a client waits on a busy machine
        EmbeddedRedis(work / "data" / "redis").ensure_running(timeout_s=600)
    try:
        got = _run([PYTHON, str(HERE), "_child", what, info["batch_id"]],
                   _env(work, info["queue_name"], src))
    finally:
        if work != data:
            _stop_server(work)
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"what": what, "src": str(src), **got,
                      "load": round(os.getloadavg()[0], 1)}))


async def _child(what: str, batch_id: str) -> None:
    import psutil
    import redis as sync_redis

    from workbench import Workbench
    from workbench.queue.jobs import redis_url_for

    proc = psutil.Process()
    wb = Workbench()
    try:
        batch = await wb.get_batch(batch_id)
        await batch.counts()
        server = None
        if what == "cancel":
            await wb.open_queue()
            server = sync_redis.Redis.from_url(await redis_url_for(wb.settings))

        def server_cpu() -> float:
            if server is None:
                return 0.0
            cpu = server.info("cpu")
            return float(cpu["used_cpu_user"] + cpu["used_cpu_sys"])

        gc.collect()
        start = peak = proc.memory_info().rss / 2**20
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, proc.memory_info().rss / 2**20)
                time.sleep(0.005)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        s0, t0, c0 = server_cpu(), time.perf_counter(), time.process_time()
        out: dict[str, Any] = {}
        if what == "cancel":
            out["cancelled"] = await batch.cancel()
        elif what == "status":
            df = await batch.status()
            out["rows"] = len(df)
            del df
        else:
            rows = 0
            async for chunk in batch.iter_results():
                rows += len(chunk)
                del chunk
            out["rows"] = rows
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        server_s = server_cpu() - s0
        stop.set()
        thread.join()
        if what == "cancel":
            out["queue_left"] = int(server.zcard(wb.settings.queue_name)) if server else -1
            out["server_cpu"] = round(server_s, 2)
    finally:
        await wb.close()
    print(json.dumps({**out, "seconds": round(seconds, 2), "cpu": round(cpu, 2),
                      "start_mb": round(start), "peak_mb": round(peak),
                      "grew_mb": round(peak - start)}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        asyncio.run(_child(sys.argv[2], sys.argv[3]))
        return
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_again", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["queued", "filled", "cancel", "status", "iter"])
    p.add_argument("dir", type=Path)
    p.add_argument("n", type=int, nargs="?", default=1_000_000)
    p.add_argument("--src", type=Path, default=REPO)
    args = p.parse_args()
    if args.what in ("queued", "filled"):
        prepare(args.what, args.dir.resolve(), args.n)
    else:
        measure(args.what, args.dir.resolve(), args.src.resolve())


if __name__ == "__main__":
    main()
