"""``python -m workbench results``: streamed CSV, JSONL and Parquet, to a file or stdout, with
``--columns`` (both backends)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.surfaces.conftest import cli_env, run_cli
from workbench import Workbench
from workbench.client.export import iter_csv, iter_jsonl

from .conftest import article, fill


async def test_results_export_streams_every_format(
    wb: Workbench, backend_settings: dict[str, Any], tmp_path: Path
) -> None:
    batch = await fill(wb, 23, article, failed=2)
    whole = await batch.results()
    env = cli_env(backend_settings)

    rc, out, err = await run_cli("results", batch.id, env=env)
    assert rc == 0, err
    assert out == "".join(iter_csv(whole))
    assert "21 result(s)" in err and "2 failed" in err

    path = tmp_path / "out.jsonl"
    rc, _, err = await run_cli("results", batch.id, "-o", str(path), env=env)
    assert rc == 0, err
    assert path.read_text() == "".join(iter_jsonl(whole))

    path = tmp_path / "out.parquet"
    rc, _, err = await run_cli("results", batch.id, "-o", str(path), "--columns",
                               "title, word_count", env=env)
    assert rc == 0, err
    table = pq.read_table(path)
    assert table.num_rows == 21 and table.column_names[:4] == [
        "item_id", "url", "title", "word_count"] and "text" not in table.column_names
    assert table.column("title").to_pylist() == whole["title"].tolist()


async def test_results_export_to_a_pipe_and_bad_columns(
    wb: Workbench, backend_settings: dict[str, Any]
) -> None:
    import asyncio
    import sys

    batch = await fill(wb, 5, article)
    env = cli_env(backend_settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workbench", "results", batch.id, "--format", "parquet", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[2]))
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    assert pq.read_table(io.BytesIO(out)).num_rows == 5

    rc, _, err = await run_cli("results", batch.id, "--columns", "title,nope", env=env)
    assert rc == 2 and "no field 'nope'" in err and "Traceback" not in err
    rc, out, err = await run_cli("results", batch.id, "--format", "jsonl", "--columns", "title",
                                 env=env)
    assert rc == 0, err
    assert [json.loads(line)["title"] for line in out.splitlines()] == [
        f"Article {i}" for i in range(5)]
