"""A new ledger file is switched to WAL by whichever connection opens it first, even while another
holds a write lock on it in rollback mode: SQLite refuses that switch at once (no busy wait), which
crashed a worker that started beside a client opening the same new ledger (seen in a loaded run:
``ledger error while migrating the ledger: database is locked``)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from workbench.ledger.engine import make_engine
from workbench.ledger.wal import ensure_wal


def _locked_in_rollback_mode(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # a write lock, as a migration or a group commit holds
    holder.execute("INSERT INTO t VALUES (1)")
    return holder


def _mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_plain_switch_is_refused_at_once_while_a_writer_holds_the_file(tmp_path: Path) -> None:
    """What this module is for: SQLite's own behaviour, so the test below is not vacuous."""
    path = tmp_path / "l.db"
    holder = _locked_in_rollback_mode(path)
    other = sqlite3.connect(path, timeout=5, isolation_level=None)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("PRAGMA journal_mode=WAL")
    assert time.monotonic() - started < 1  # no busy wait
    holder.execute("COMMIT")


def test_ensure_wal_waits_for_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    holder = _locked_in_rollback_mode(path)
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    other = sqlite3.connect(path, timeout=5, isolation_level=None)
    ensure_wal(other, timeout_ms=10_000)
    assert _mode(path) == "wal"


def test_ensure_wal_gives_up_at_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    holder = _locked_in_rollback_mode(path)
    other = sqlite3.connect(path, timeout=5, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        ensure_wal(other, timeout_ms=200)
    holder.execute("COMMIT")


async def test_the_ledger_engine_opens_a_file_another_is_writing(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    holder = _locked_in_rollback_mode(path)
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, holder.execute, "COMMIT")
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    finally:
        await engine.dispose()
