"""Issue 14, row 12: the worker on a full disk (Redis's AOF cannot be written: MISCONF).

Needs a small tmpfs (``mount -t tmpfs``, root); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from workbench import Workbench

from .conftest import PIPELINES


# ---------------------------------------------------------------- row 12: a full disk
@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()[:200]}): the "
                    "full-disk test needs one (root, outside a restricted container)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def redis_on(small_tmpfs: Path, tmp_path: Path) -> Iterator[str]:
    """A redis-server whose AOF lives on the small tmpfs; its unix socket URL."""
    from workbench.queue.server_binary import find_server_binary

    sock = tmp_path / "full.sock"
    proc = subprocess.Popen(
        [str(find_server_binary().path), "--port", "0", "--unixsocket", str(sock),
         "--dir", str(small_tmpfs), "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(timeout=10)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


async def test_worker_rides_out_a_full_disk(
    make_wb: Callable[..., Workbench], run_worker: Any, redis_on: str, small_tmpfs: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis's AOF disk fills while a worker runs: Redis refuses writes (MISCONF). The worker
    logs it once, keeps running, hands back the jobs Redis would not let start or finish, and
    finishes every item once the disk has room again."""
    from redis.exceptions import ResponseError

    wb = make_wb(redis_url=redis_on, pipelines=PIPELINES)
    task = await run_worker(burst=False, concurrency=1, redis_url=redis_on, pipelines=PIPELINES)
    try:
        batch = await wb.submit([f"http://example.org/slow/{i}" for i in range(6)],
                                pipeline="surf", params={"sleep": 0.5})
        while (await batch.counts())["done"] < 1:
            await asyncio.sleep(0.05)
        filler = _fill(small_tmpfs)
        redis = await wb.open_queue()
        for _ in range(100):  # the first write after the disk filled fails its AOF flush
            try:
                await redis.set("wbtest:probe", "x")
            except ResponseError as exc:
                assert str(exc).startswith("MISCONF")
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("Redis kept taking writes on a full disk")
        await asyncio.sleep(3)  # jobs end, slots free, their bookkeeping meets MISCONF
        assert not task.done(), task  # the worker did not die
        assert (await batch.counts())["done"] < 6
        filler.unlink()  # room again: Redis retries its AOF each second
        await batch.wait(timeout=60)
        assert (await batch.counts())["done"] == 6 and not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await wb.close()
    refusals = [r for r in caplog.records if "refuses writes" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
