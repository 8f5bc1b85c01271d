"""Nothing in Redis can run code in a worker, and the embedded Redis is private to its user."""

from __future__ import annotations

import pickle
import stat
import time
from pathlib import Path

import psutil
import pytest
import redis
from arq.constants import job_key_prefix
from arq.jobs import JobStatus, serialize_job

from workbench.core.codec import job_dumps
from workbench.queue import jobs as queue
from workbench.queue.arq_adapter import arq_job

from .conftest import report, tally, wait_settled


class _OpensFile:
    """Unpickling this creates a file: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):  # type: ignore[override]
        return (open, (self.path, "w"))


def _evil_payload(marker: Path) -> bytes:
    return pickle.dumps({"t": 1, "f": queue.JOB_FUNCTION, "a": [1, 1], "k": {},
                         "et": int(time.time() * 1000), "x": _OpensFile(marker)})


def test_the_planted_payload_is_live(tmp_path: Path) -> None:
    """Control: with pickle, the payload really runs code."""
    control = tmp_path / "control"
    pickle.loads(_evil_payload(control))  # the point of the test
    assert control.exists()


async def test_pickle_payload_in_the_queue_is_never_executed(make_cluster, tmp_path: Path) -> None:
    cluster = make_cluster()
    wb = cluster.client()
    batch = await wb.submit([f"http://example.org/p/{i}" for i in range(20)], pipeline="rel-sleep")
    marker = tmp_path / "pwned"
    r = redis.Redis.from_url(cluster.embedded.url)  # type: ignore[union-attr]
    job = "999999:1"
    r.set(job_key_prefix + job, _evil_payload(marker))
    r.zadd(cluster.settings["queue_name"], {job: 0})  # first in line
    worker = cluster.start_worker("--processes", "1", "--burst", WORKBENCH_TEST_SLEEP_S="0.001")
    rc = worker.popen.wait(120)
    counts = await wait_settled(wb, batch.id, 30)
    t = await tally(wb, batch.id, 20)
    report("pickle payload planted in the queue", lost=t.lost, duplicates=t.duplicates,
           recovery_s="n/a", executed=marker.exists(), worker_exit=rc)
    assert not marker.exists(), "a pickle from Redis was executed"
    assert rc == 0 and counts["done"] == 20 and t.lost == 0  # the worker went on with real jobs
    assert "999999:1" in worker.log()  # the bad job was refused, and said so


async def test_jobs_are_queue_entries_that_arqs_job_api_reads(make_cluster) -> None:
    """An item job is its queue entry alone (no pickle, no payload at all in Redis): ARQ's Job
    API sees it queued, and the payload the worker implies from its id is ARQ's own JSON."""
    cluster = make_cluster()
    wb = cluster.client()
    batch = await wb.submit(["http://example.org/j/1"], pipeline="rel-sleep")
    item = int((await batch.status())["item_id"][0])
    name = cluster.settings["queue_name"]
    jid = queue.job_id(name, item, 1)
    r = redis.Redis.from_url(cluster.embedded.url)  # type: ignore[union-attr]
    assert r.get(job_key_prefix + jid) is None
    score = int(r.zscore(name, jid))
    assert queue.implied_payload(name)(jid, score) == serialize_job(
        queue.JOB_FUNCTION, (item, 1), {}, None, score, serializer=job_dumps)
    pool = await queue.connect(wb.settings)
    try:
        assert await arq_job(pool, jid, name).status() == JobStatus.queued
    finally:
        await pool.aclose()


async def test_embedded_redis_listens_on_no_tcp_port_and_is_private(make_cluster) -> None:
    cluster = make_cluster()
    wb = cluster.client()
    await wb.submit(["http://example.org/x/1"], pipeline="rel-sleep")  # starts it on demand
    server = cluster.embedded
    assert server is not None and server.pid
    proc = psutil.Process(server.pid)
    inet = proc.net_connections(kind="inet")
    unix = [c for c in proc.net_connections(kind="unix") if c.laddr]
    directory = cluster.data_dir / "redis"
    dir_mode = stat.S_IMODE(directory.stat().st_mode)
    sock_mode = stat.S_IMODE(server.socket_path.stat().st_mode)
    report("embedded Redis exposure", lost=0, duplicates=0, recovery_s="n/a",
           tcp_sockets=len(inet), dir_mode=oct(dir_mode), socket_mode=oct(sock_mode))
    assert inet == [], f"redis-server has TCP sockets: {inet}"
    assert any(c.laddr == str(server.socket_path) for c in unix)
    assert dir_mode == 0o700
    assert sock_mode & 0o077 == 0  # nobody but the owner can connect


@pytest.fixture(autouse=True)
def _no_stray_marker(tmp_path: Path):
    yield
    assert not (tmp_path / "pwned").exists()
