"""Several worker processes on one ledger, on both backends: four on one SQLite file (no
"database is locked"), three on PostgreSQL with Redis 7. Every item done once, none lost, every
process took a share."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from .conftest import report, tally, wait_settled

N = 1_000
PROCESSES = {"sqlite": 4, "postgresql": 3}


@pytest.mark.slow
async def test_many_workers_on_one_ledger(make_cluster, backend: str) -> None:
    cluster = await make_cluster.on(backend)
    processes = PROCESSES[backend]
    wb = cluster.client()
    batch = await wb.submit([f"http://example.org/m/{i}" for i in range(N)], pipeline="rel-sleep")
    worker = cluster.start_worker("--processes", str(processes), "--concurrency", "16",
                                  WORKBENCH_TEST_SLEEP_S="0.005")
    counts = await wait_settled(wb, batch.id, 240)
    assert worker.terminate() == 0
    t = await tally(wb, batch.id, N)
    async with wb.ledger.read_engine.connect() as conn:
        ran_by = (await conn.execute(text(
            "SELECT count(DISTINCT worker_id) FROM items WHERE batch_id = :b"),
            {"b": batch.id})).scalar_one()
        errors = (await conn.execute(text(
            "SELECT count(*) FROM items WHERE batch_id = :b AND error_type IS NOT NULL"),
            {"b": batch.id})).scalar_one()
    log = worker.log()
    locked = log.lower().count("database is locked")
    report(f"{processes} worker processes on one ledger", backend=cluster.label, lost=t.lost,
           duplicates=t.duplicates, recovery_s="n/a (no fault)", workers_used=ran_by,
           locked_errors=locked, counts=counts)
    assert t.lost == 0 and t.duplicates == 0 and t.results == N and counts["failed"] == 0
    assert locked == 0 and errors == 0, log[-3000:]
    assert ran_by == processes  # every process took a share
    assert "Traceback" not in log, log[-3000:]
