"""``wb.submit(df_or_path, url_column=...)``: one item per row, carried columns stored with each
item and returned beside ``url`` by status(), failures() and results(), on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select

from workbench import Workbench
from workbench.core.errors import InvalidTableError
from workbench.ledger.models import BatchRow, ItemRow


async def test_dataframe_rows_carried_through_a_real_worker(
    wb: Workbench, site: Any, run_worker: Any
) -> None:
    df = pd.DataFrame({
        "link": [site.url("/page/1"), site.url("/page/2"), site.url("/page/1"),
                 site.url("/status/404")],
        "label": ["a", "b", "c", "d"],
        "score": [1, 2, 3, 4],
        "status": ["x", "y", "z", "w"],  # clashes with a status() column: input_status
        "when": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]),
    })
    batch = await wb.submit(df, url_column="link")
    assert batch.total == 4  # one item per row: the repeated URL is kept
    assert [c.stored for c in batch.carried_columns] == ["label", "score", "input_status", "when"]
    await run_worker(burst=True)
    counts = await batch.wait(timeout=60)
    assert counts["done"] == 3 and counts["failed"] == 1

    status = await batch.status()
    assert list(status.columns[:7]) == ["item_id", "position", "url", "label", "score",
                                        "input_status", "when"]
    assert status["label"].tolist() == ["a", "b", "c", "d"]
    assert status["score"].dtype == "int64" and status["score"].tolist() == [1, 2, 3, 4]
    assert str(status["when"].dtype).startswith("datetime64")
    assert status["input_status"].tolist() == ["x", "y", "z", "w"]

    results = await batch.results()
    assert results["label"].tolist() == ["a", "b", "c"]
    assert list(results.columns[:3]) == ["item_id", "url", "label"]
    assert "title" in results.columns  # the pipeline's fields still follow

    failures = await batch.failures()
    assert failures["label"].tolist() == ["d"] and failures["error_type"].tolist() == ["http_404"]
    # the input rows join back on position
    joined = df.join(status.set_index("position")["status"].rename("item_status"))
    assert joined["item_status"].tolist() == ["done", "done", "done", "failed"]


async def test_csv_file_and_a_plain_batch_unchanged(
    wb: Workbench, site: Any, tmp_path: Path
) -> None:
    path = tmp_path / "input.csv"
    pd.DataFrame({"url": [site.url("/page/3"), "not a url", site.url("/page/4")],
                  "id": [10, 11, 12]}).to_csv(path, index=False)
    batch = await wb.submit(path, on_invalid="skip")
    assert batch.total == 2 and [p for p, _, _ in batch.invalid] == [1]
    status = await batch.status()
    assert status["id"].tolist() == [10, 12] and status["position"].tolist() == [0, 2]
    plain = await wb.submit([site.url("/page/5")])
    assert plain.carried_columns == []
    assert "id" not in (await plain.status()).columns


async def test_missing_url_column_records_nothing(wb: Workbench, site: Any) -> None:
    df = pd.DataFrame({"URL": [site.url("/page/1")], "label": ["a"]})
    with pytest.raises(InvalidTableError, match="URL"):
        await wb.submit(df, url_column="url")
    ledger = await wb.open_ledger()
    async with ledger.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(BatchRow))).scalar() == 0
        assert (await conn.execute(select(func.count()).select_from(ItemRow))).scalar() == 0
