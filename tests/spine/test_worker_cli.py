"""``python -m workbench.worker`` as a user runs it: zero setup, several processes, bad flags."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import Workbench
from workbench.queue.embedded import EmbeddedRedis

PIPELINE_MODULE = '''
import gc
from workbench import pipeline

@pipeline("cli-square", version="1")
async def square(url, ctx):
    n = int(url.rsplit("/", 1)[1])
    return {"square": n * n, "frozen": gc.get_freeze_count()}
'''


@pytest.fixture
def data_dir(tmp_path: Path):
    d = tmp_path / "data"
    yield d
    EmbeddedRedis(d / "redis").stop()  # no orphaned servers


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_DATA_DIR=str(data_dir), WORKBENCH_LOG_FORMAT="json", **extra)
    return env


async def test_zero_setup_worker_processes(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "clipipes.py").write_text(PIPELINE_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        wb = Workbench(data_dir=str(data_dir), pipelines="clipipes")
        batch = await wb.submit([f"http://example.org/n/{i}" for i in range(40)],
                                pipeline="cli-square")
        # the embedded Redis was started on demand: a unix socket in a private directory
        server = EmbeddedRedis(data_dir / "redis")
        assert server.is_running() and oct((data_dir / "redis").stat().st_mode)[-3:] == "700"
        env = _env(data_dir, PYTHONPATH=str(tmp_path))
        proc = subprocess.run(
            [sys.executable, "-m", "workbench.worker", "--burst", "--processes", "2",
             "--pipelines", "clipipes", "--concurrency", "8"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (await batch.wait(timeout=5))["done"] == 40
        df = await batch.results()
        assert sorted(df["square"]) == sorted(i * i for i in range(40))
        # each worker process took its start-up objects out of the collector's walks
        assert df["frozen"].min() > 10_000
        workers = {r["id"]: r for r in await wb.ledger.workers()}
        assert len(workers) == 2 and all(w["stopped_at"] for w in workers.values())
        assert '"event": "worker started"' in proc.stderr  # structured JSON logs off a terminal
        assert '"event_loop": "uvloop"' in proc.stderr  # uvloop where installed (core/loops.py)
        await wb.close()
        assert server.is_running()  # the server outlives a Workbench: others may share it
        await Workbench(data_dir=str(data_dir)).close(stop_redis=True)
        assert not server.is_running()
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--processes", "0"], "must be at least 1"),
        (["--concurrency", "x"], "is not an integer"),
        (["--pipelines", "no_such_pipeline_module"], "no_such_pipeline_module"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_usage_exits_2(data_dir: Path, args: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "workbench.worker", *args],
                          env=_env(data_dir), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_worker_on_asyncio_s_own_loop(data_dir: Path) -> None:
    # WORKBENCH_EVENT_LOOP=asyncio: the opt-out from uvloop (and the Windows path)
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.worker", "--burst", "--processes", "1"],
        env=_env(data_dir, WORKBENCH_EVENT_LOOP="asyncio"), capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"event_loop": "asyncio"' in proc.stderr


@pytest.mark.parametrize("value", ["libuv", ""])
def test_a_bad_event_loop_setting_exits_2(data_dir: Path, value: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "workbench.worker", "--burst"],
                          env=_env(data_dir, WORKBENCH_EVENT_LOOP=value),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "WORKBENCH_EVENT_LOOP" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_setting_exits_2(data_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "workbench.worker", "--burst"],
                          env=_env(data_dir, WORKBENCH_MAX_TRIES="lots"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "WORKBENCH_MAX_TRIES" in proc.stderr


def test_a_worker_process_starts_its_extraction_processes_with_it(data_dir: Path) -> None:
    # A cold `python -m workbench.worker` starts its CPU pool at once, beside its own start:
    # its first pages waited for the fork server to import the extraction stack (issue 13).
    # No job is needed for it. The fork server starts before the worker's own imports; the
    # extraction processes forked from it (same command line) once the worker runs.
    import time

    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.worker", "--processes", "1"], env=_env(data_dir),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        me = psutil.Process(proc.pid)
        deadline = time.monotonic() + 90
        found = 0
        while found < 2 and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                found = sum("forkserver" in " ".join(c.cmdline())
                            for c in me.children(recursive=True))
            time.sleep(0.1)
        assert found >= 2, "no fork server and extraction process while the queue stayed empty"
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def test_default_processes_one_per_two_cpus() -> None:
    """The default measured on two cores (benchmarks/NOTES.md): one worker process feeding two
    extraction processes, and never none."""
    from workbench.worker.__main__ import default_processes

    assert [default_processes(n) for n in (1, 2, 3, 4, 8, 16)] == [1, 1, 1, 2, 4, 8]
