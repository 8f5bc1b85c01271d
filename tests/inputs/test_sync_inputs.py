"""The sync facade gets the inputs for free (it derives from the async API): a script submits
a DataFrame and a WARC, runs a worker, and reads the carried columns back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import article_html
from tests.inputs.warc_fixtures import Builder
from workbench import SyncWorkbench


def test_sync_submit_warc_and_dataframe(backend_settings: dict[str, Any], tmp_path: Path) -> None:
    if backend_settings.get("database_url"):
        pytest.skip("the ledger paths are covered on both backends by the async tests")
    archive = (Builder().response("http://archived.test/a", article_html(1).encode())
               .save(tmp_path / "a.warc.gz"))
    with SyncWorkbench(**backend_settings) as wb:
        wb.start_worker(concurrency=4, cpu_processes=1)
        batch = wb.submit_warc(archive)
        assert batch.wait(timeout=60)["done"] == 1
        results = batch.results()
        assert results["title"].tolist() == ["River study 1"]
        assert results["warc_file"].tolist() == [str(archive)]
        assert batch.export_warc(tmp_path / "out.warc.gz") == 1

        table = wb.submit(pd.DataFrame({"url": ["http://archived.test/a"], "tag": ["t"]}),
                          on_invalid="raise")
        assert table.status()["tag"].tolist() == ["t"]
        table.cancel()
