"""SQLite's WAL mode, switched on by whichever connection opens a ledger file first.

The mode is stored in the file: once it says ``wal``, later connections only read it, which
takes no lock. Switching takes the file to itself, and while another connection holds a write
lock on a file still in rollback mode (a client and a worker opening a new ledger together, one
of them already migrating), SQLite answers ``database is locked`` at once: its busy handler is
not asked. So the switch is retried here until the mode reads ``wal`` or the busy timeout ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["ensure_wal"]


def ensure_wal(conn: Any, *, timeout_ms: int, sleep: Callable[[float], None] = time.sleep) -> None:
    """Put ``conn``'s file in WAL mode. ``conn`` is a DB-API connection (``sqlite3`` or
    SQLAlchemy's aiosqlite adapter); ``sleep`` waits between tries (the adapter passes one that
    yields to its event loop)."""
    deadline = time.monotonic() + timeout_ms / 1000
    delay = 0.005
    while True:
        cur = conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode")
            if str(cur.fetchone()[0]).lower() == "wal":
                return
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.fetchall()
            except Exception as exc:  # the driver's OperationalError, whichever driver
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
        finally:
            cur.close()
        sleep(delay)
        delay = min(delay * 2, 0.25)
