"""Migration 0002 on a ledger that already holds results: upgraded in place, nothing lost, and
the downgrade joins the parts again (both backends)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import insert, text
from sqlalchemy.engine import Connection

from workbench import Workbench
from workbench.core import codec
from workbench.ledger.engine import MIGRATIONS_DIR, make_engine
from workbench.ledger.models import BatchRow, ItemRow, ResultRow
from workbench.ledger.shapes import BULKY_CHARS
from workbench.ledger.sql import table_of

from .conftest import article


def _head() -> str:
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def _alembic(connection: Connection, verb: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    getattr(command, verb)(cfg, revision)


async def _at_0001_with_results(url: str, datas: list[Any]) -> str:
    engine = make_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "upgrade", "0001")
        await conn.execute(insert(table_of(BatchRow)), [dict(
            id="b-old", name="old", pipeline="noop", pipeline_version="1", params={},
            params_hash="p", created_at=now, total=len(datas), duplicates=0, invalid=0,
            use_stored_pages=False)])
        await conn.execute(insert(table_of(ItemRow)), [dict(
            id=i + 1, batch_id="b-old", position=i, url=f"http://example.org/{i}",
            normalized_url=f"http://example.org/{i}", status="done", attempts=1, tries=1,
            submitted_at=now, finished_at=now, duration_s=0.5, cached=False)
            for i in range(len(datas))])
        results = table_of(ResultRow)
        await conn.execute(insert(results), [dict(
                item_id=i + 1, batch_id="b-old", normalized_url=f"http://example.org/{i}",
                pipeline="noop", pipeline_version="1", params_hash="p", workbench_version="0",
                data=codec.dumps(d), final_url=f"http://example.org/{i}", http_status=200,
                cached=False, from_stored_page=False, timings={"total": 0.1}, created_at=now)
                for i, d in enumerate(datas)])
    await engine.dispose()
    return "b-old"


async def test_upgrade_keeps_results_and_downgrade_joins_them(
    make_wb: Callable[..., Workbench],
) -> None:
    datas: list[Any] = [article(i, text_chars=BULKY_CHARS * 2) for i in range(30)]
    datas[3] = {"small": 1}
    datas[4] = [1, 2]  # not a dict: shown as one field, "value"
    wb = make_wb()
    url = wb.settings.effective_database_url
    batch_id = await _at_0001_with_results(url, datas)

    batch = await wb.get_batch(batch_id)  # opens the ledger: migrates to head
    async with wb.ledger.engine.connect() as conn:
        assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() \
            == _head()  # 0002, and whatever came after it
        bulky = (await conn.execute(text("SELECT count(*) FROM result_bulk"))).scalar()
        shapes = (await conn.execute(text("SELECT count(*) FROM result_shapes"))).scalar()
    assert bulky == 28 and shapes == 4  # with and without an author, the small one, the list
    df = await batch.results()
    assert df["text"].tolist()[:3] == [d["text"] for d in datas[:3]]
    assert df["small"].tolist()[3] == 1 and df["value"].tolist()[4] == [1, 2]
    projected = await batch.results(columns=["title"])
    assert projected["title"].tolist()[:3] == ["Article 0", "Article 1", "Article 2"]
    await wb.close()

    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", "0001")
        rows = (await conn.execute(text("SELECT data FROM results ORDER BY item_id"))).all()
    await engine.dispose()
    assert [json.loads(r.data) for r in rows] == [json.loads(codec.dumps(d)) for d in datas]


async def test_migrated_schema_matches_the_models(wb: Workbench) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from workbench.ledger.models import Base

    await wb.batches()  # migrates

    def diff(connection: Connection) -> list[Any]:
        ctx = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)

    async with wb.ledger.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_upgrade_counts_the_items_there_are(make_wb: Callable[..., Workbench]) -> None:
    """0005 fills the batch counters from the items a ledger already holds; after it the
    trigger keeps them (both backends)."""
    wb = make_wb()
    url = wb.settings.effective_database_url
    engine = make_engine(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    statuses = ["done"] * 5 + ["failed"] * 3 + ["queued"] * 2 + ["running"]
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "upgrade", "0004")
        for b in ("b-one", "b-two"):
            await conn.execute(insert(table_of(BatchRow)), [dict(
                id=b, name=b, pipeline="noop", pipeline_version="1", params={},
                params_hash="p", created_at=now, total=len(statuses), duplicates=0, invalid=0,
                use_stored_pages=False)])
            await conn.execute(insert(table_of(ItemRow)), [dict(
                batch_id=b, position=i, url=f"http://example.org/{b}/{i}",
                normalized_url=f"http://example.org/{b}/{i}", status=s, attempts=1, tries=1,
                submitted_at=now, cached=False) for i, s in enumerate(statuses)])
    await engine.dispose()

    batch = await wb.get_batch("b-one")  # migrates to head
    assert await batch.counts() == {"queued": 2, "running": 1, "done": 5, "failed": 3,
                                    "cancelled": 0}
    await batch.retry()
    assert await batch.counts() == {"queued": 5, "running": 1, "done": 5, "failed": 0,
                                    "cancelled": 0}
    assert (await (await wb.get_batch("b-two")).counts())["failed"] == 3
