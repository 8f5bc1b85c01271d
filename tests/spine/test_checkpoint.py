"""Bulk writes on a SQLite ledger commit without the WAL checkpoint, which runs after, off the
caller's path (``ledger.checkpoint``). What SQLite did is read from its WAL index (the ``-shm``
file): the frames written and the frames copied back into the database file."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from workbench.ledger.checkpoint import (
    AUTOCHECKPOINT_PAGES,
    DEFER_ROWS,
    WalCheckpointer,
    bulk_transaction,
)
from workbench.ledger.store import Ledger, NewBatch


def _wal_frames(db: Path) -> tuple[int, int]:
    """``(frames in the WAL, frames checkpointed)`` from the WAL index header: ``mxFrame`` at
    byte 16 of the header, ``nBackfill`` first in the checkpoint info at byte 96 (native order,
    sqlite's wal.c)."""
    shm = db.with_name(db.name + "-shm").read_bytes()
    (mx_frame,) = struct.unpack_from("=I", shm, 16)
    (backfill,) = struct.unpack_from("=I", shm, 96)
    return mx_frame, backfill


def _spec() -> NewBatch:
    return NewBatch(pipeline="noop", pipeline_version="1", params={}, params_hash="h")


def _entries(n: int) -> list[tuple[int, str, str]]:
    return [(i, f"http://example.org/c/{i}", f"http://example.org/c/{i}") for i in range(n)]


@pytest.fixture
async def ledger(tmp_path: Path):
    led = Ledger(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}")
    await led.start()
    try:
        yield led
    finally:
        await led.close()


async def _autocheckpoint(ledger: Ledger) -> int:
    async with ledger.engine.connect() as conn:
        return int((await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one())


async def test_a_big_submit_returns_before_its_checkpoint_which_follows(
    ledger: Ledger, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    assert ledger.checkpointer is not None
    runs = ledger.checkpointer.runs
    out = await ledger.create_batch(_spec(), _entries(40_000))
    frames, copied = _wal_frames(db)
    # well past the automatic threshold, and not copied back by the commit: before this module,
    # SQLite's commit ran the checkpoint itself (frames == copied here)
    assert frames > AUTOCHECKPOINT_PAGES and copied < frames
    await ledger.checkpointer.wait()
    assert ledger.checkpointer.runs == runs + 1
    frames_after, copied_after = _wal_frames(db)
    assert copied_after == frames_after >= frames
    assert len(out.queued) == 40_000 and (await ledger.counts(out.batch_id))["queued"] == 40_000
    # the connection went back to the pool with SQLite's automatic checkpoint on again
    assert await _autocheckpoint(ledger) == AUTOCHECKPOINT_PAGES


async def test_a_small_submit_commits_as_any_write(ledger: Ledger) -> None:
    assert ledger.checkpointer is not None
    runs = ledger.checkpointer.runs
    await ledger.create_batch(_spec(), _entries(DEFER_ROWS - 1))
    await ledger.checkpointer.wait()
    assert ledger.checkpointer.runs == runs


async def test_cancel_and_retry_of_many_items_leave_the_checkpoint_behind_too(
    ledger: Ledger, tmp_path: Path
) -> None:
    assert ledger.checkpointer is not None
    out = await ledger.create_batch(_spec(), _entries(20_000))
    await ledger.checkpointer.wait()
    runs = ledger.checkpointer.runs
    cancelled = await ledger.cancel(out.batch_id)
    assert len(cancelled) == 20_000
    frames, copied = _wal_frames(tmp_path / "l.db")
    assert copied < frames
    await ledger.checkpointer.wait()
    assert len(await ledger.retry(out.batch_id, [i for i, _ in cancelled])) == 20_000
    await ledger.checkpointer.wait()
    assert ledger.checkpointer.runs == runs + 2
    assert (await ledger.counts(out.batch_id))["queued"] == 20_000


async def test_a_failed_bulk_write_rolls_back_restores_the_connection_and_checkpoints_nothing(
    ledger: Ledger,
) -> None:
    assert ledger.checkpointer is not None
    runs = ledger.checkpointer.runs
    with pytest.raises(RuntimeError, match="midway"):
        async with bulk_transaction(ledger.engine, ledger.checkpointer) as conn:
            await conn.exec_driver_sql("CREATE TABLE scratch (x)")
            raise RuntimeError("midway")
    await ledger.checkpointer.wait()
    assert ledger.checkpointer.runs == runs
    assert await _autocheckpoint(ledger) == AUTOCHECKPOINT_PAGES
    async with ledger.engine.connect() as conn:
        tables = (await conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE name = 'scratch'")).scalar_one()
    assert tables == 0


async def test_a_checkpoint_that_cannot_run_fails_nobody(tmp_path: Path) -> None:
    """The pages stay in the WAL, readable, for the next checkpoint: a failure is logged only."""
    checkpointer = WalCheckpointer(str(tmp_path / "gone" / "l.db"), busy_timeout_ms=100)
    checkpointer.soon()
    checkpointer.soon()  # asked again while it runs: once more after
    await checkpointer.wait()
    assert checkpointer.runs == 0


class _SlowCheckpointer(WalCheckpointer):
    """The real checkpoint, a while after it was asked for (as a big one takes): when it ended
    is kept."""

    ended: float | None = None

    def _checkpoint(self) -> tuple[int, int, int]:
        time.sleep(0.3)
        out = super()._checkpoint()
        self.ended = time.monotonic()
        return out


async def test_a_bulk_write_waits_for_the_checkpoint_under_way(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A cancel right after a big submit does not write onto the submit's checkpoint: the WAL
    could not start over and would grow past the frames not yet copied."""
    slow = _SlowCheckpointer(str(tmp_path / "l.db"), busy_timeout_ms=5_000)
    ledger.checkpointer = slow
    out = await ledger.create_batch(_spec(), _entries(5_000))
    assert slow.ended is None  # asked for, not run yet
    async with bulk_transaction(ledger.engine, slow) as conn:
        began = time.monotonic()
        await conn.exec_driver_sql("UPDATE items SET tries = 1 WHERE batch_id = ?",
                                   (out.batch_id,))
    assert slow.ended is not None and began >= slow.ended
    await slow.wait()
    frames, copied = _wal_frames(tmp_path / "l.db")
    assert slow.runs == 2 and copied == frames
