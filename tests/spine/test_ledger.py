"""The ledger on both backends: migrations, attempt guards, group commit, reconcile."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import text

from workbench import Workbench
from workbench.core.errors import LedgerError
from workbench.ledger.engine import make_engine, migrate
from workbench.ledger.store import Ledger


async def _items(wb: Workbench, n: int, pipeline: str = "noop"):
    batch = await wb.submit([f"http://example.org/l/{i}" for i in range(n)], pipeline=pipeline)
    rows = await wb.ledger.item_rows(batch.id)
    return batch, [(r["id"], r["attempts"]) for r in rows]


async def test_migrations_idempotent_and_versioned(wb: Workbench) -> None:
    await wb.batches()  # opens and migrates
    await migrate(wb.ledger.engine)  # a second process starting: a no-op
    async with wb.ledger.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    assert version == _head()


def test_schema_head_constant_is_alembics_head() -> None:
    # a ledger at SCHEMA_HEAD starts without alembic: a new migration must move it too
    from workbench.ledger.engine import SCHEMA_HEAD

    assert _head() == SCHEMA_HEAD, "a migration was added: set engine.SCHEMA_HEAD to its revision"


async def test_a_ledger_at_head_opens_without_alembic(wb: Workbench) -> None:
    import subprocess
    import sys

    await wb.batches()  # migrated to head
    code = (
        "import asyncio, sys\n"
        "from workbench.ledger.store import Ledger\n"
        "async def main():\n"
        f"    ledger = Ledger({wb.settings.effective_database_url!r})\n"
        "    await ledger.start()\n"
        "    await ledger.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


async def test_database_from_a_newer_version_is_refused(tmp_path) -> None:
    db = tmp_path / "new.db"
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    await migrate(engine)
    await engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    ledger = Ledger(f"sqlite+aiosqlite:///{db}")
    with pytest.raises(LedgerError, match="newer version of workbench"):
        await ledger.start()
    await ledger.close()


async def test_stale_attempt_never_overwrites(wb: Workbench) -> None:
    batch, [(item, attempt)] = await _items(wb, 1)
    ledger = wb.ledger
    assert (await ledger.claim(item, attempt, "w1")) is not None
    assert await ledger.claim(item, attempt, "w2") is None  # already running
    new = await ledger.retry_later(item, attempt, {"error_type": "blip"}, 0)
    assert new == attempt + 1
    # the old attempt comes back late: every write is refused
    assert not await ledger.complete(item, attempt, _result(batch.id))
    assert not await ledger.fail(item, attempt, {"error_type": "x"})
    claim = await ledger.claim(item, new, "w2")
    assert claim is not None and claim.tries == 2
    assert await ledger.complete(item, new, _result(batch.id))
    assert not await ledger.complete(item, new, _result(batch.id))  # no second result
    df = await batch.results()
    assert len(df) == 1


async def test_cancel_while_running_discards_result(wb: Workbench) -> None:
    batch, [(item, attempt)] = await _items(wb, 1)
    assert await wb.ledger.claim(item, attempt, "w1")
    assert await batch.cancel() == 1
    assert not await wb.ledger.complete(item, attempt, _result(batch.id))
    assert (await batch.counts())["cancelled"] == 1 and (await batch.results()).empty


async def test_group_commit_shares_transactions(wb: Workbench) -> None:
    batch, jobs = await _items(wb, 300)
    ledger = wb.ledger
    before = ledger.committer.commits
    claims = await asyncio.gather(*(ledger.claim(i, a, "w") for i, a in jobs))
    assert all(claims)
    done = await asyncio.gather(*(ledger.complete(i, a, _result(batch.id)) for i, a in jobs))
    assert all(done)
    commits = ledger.committer.commits - before
    assert commits < len(jobs) // 5, commits  # 600 writes in far fewer transactions
    assert (await batch.counts())["done"] == 300


async def test_requeue_lost_items(wb: Workbench) -> None:
    """A lapsed worker's items: with tries left, queued again under the next attempt (the lost
    attempt can no longer write); without, failed as ``worker_lost``. Reconcile enqueuing their
    new jobs: tests/queue/test_reconcile.py."""
    batch, jobs = await _items(wb, 3)
    ledger = wb.ledger
    await ledger.register_worker("dead", hostname="h", pid=1, concurrency=1, pipelines=[])
    for i, a in jobs:
        assert await ledger.claim(i, a, "dead")
    (last, _), *tried_once = jobs
    async with ledger.engine.begin() as conn:  # the worker's last heartbeat was long ago
        await conn.execute(text(
            "UPDATE workers SET heartbeat_at = '2000-01-01 00:00:00' WHERE id = 'dead'"))
        await conn.execute(text("UPDATE items SET started_at = '2000-01-01 00:00:00'"))
        await conn.execute(text(f"UPDATE items SET tries = 2 WHERE id = {last}"))
    requeued, failed = await ledger.requeue_lost(heartbeat_timeout_s=30, max_tries=2)
    assert sorted(requeued) == sorted((i, a + 1) for i, a in tried_once) and failed == 1
    rows = {r["id"]: r for r in await ledger.item_rows(batch.id)}
    for i, a in tried_once:
        assert (rows[i]["status"], rows[i]["attempts"], rows[i]["worker_id"]) == (
            "queued", a + 1, None)
        assert not await ledger.complete(i, a, _result(batch.id))  # the lost attempt, late
    f = await batch.failures()
    assert list(f["item_id"]) == [last] and set(f["error_type"]) == {"worker_lost"}
    assert f["retryable"].all()
    assert await ledger.requeue_lost(heartbeat_timeout_s=30, max_tries=2) == ([], 0)


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from workbench.ledger.engine import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def _result(batch_id: str) -> dict:
    return dict(
        batch_id=batch_id, normalized_url="http://example.org/", pipeline="noop",
        pipeline_version="1", params_hash="x", workbench_version="0", data="{}",
        cached=False, from_stored_page=False, timings={},
    )


def test_bulk_rows_reach_sqlite3_with_no_datetime_left_to_its_adapter() -> None:
    # sqlite3's default datetime adapter is deprecated since Python 3.12 (a warning per bulk
    # insert on 3.13): timestamps reach the driver as the very text it gave, per row and shared
    from datetime import UTC, datetime

    from sqlalchemy.dialects import sqlite

    from workbench.ledger.bulk import BulkInserter
    from workbench.ledger.models import SnapshotRow
    from workbench.ledger.sql import table_of

    when = datetime(2026, 12, 3, 6, 0, 1, 250_000, tzinfo=UTC)
    columns = ("normalized_url", "url", "final_url", "http_status", "content_type", "encoding",
               "headers", "sha256")
    plan = BulkInserter().plan(sqlite.dialect(), table_of(SnapshotRow), (*columns, "fetched_at"),
                               {})
    row = ("http://e.org/", "http://e.org/", "http://e.org/", 200, "text/html", "utf-8", {},
           "0" * 64, when)
    (params,) = plan.params([row], {})
    assert not any(isinstance(v, datetime) for v in params)
    assert "2026-12-03 06:00:01.250000" in params


async def test_a_cancelled_caller_still_lands_its_write(wb: Workbench) -> None:
    """A caller cancelled while its write waits for the group commit (a job's timeout, a worker
    stopping): the write lands all the same, and the writes beside it get their results."""
    batch, jobs = await _items(wb, 40)
    ledger = wb.ledger
    assert all(await asyncio.gather(*(ledger.claim(i, a, "w") for i, a in jobs)))
    tasks = [asyncio.create_task(ledger.complete(i, a, _result(batch.id))) for i, a in jobs]
    await asyncio.sleep(0)  # every write queued, none committed yet
    for task in tasks[::2]:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes[::2])
    assert all(o is True for o in outcomes[1::2])
    assert (await batch.counts())["done"] == 40  # the cancelled callers' writes landed too
