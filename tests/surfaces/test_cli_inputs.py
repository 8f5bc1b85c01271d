"""``python -m workbench submit --input/--warc`` and ``warc BATCH -o FILE`` in real
subprocesses: the batch id alone on stdout, carried columns in the export, clean errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from warcio.archiveiterator import ArchiveIterator

from tests.conftest import article_html
from tests.inputs.warc_fixtures import Builder

from .conftest import PIPELINES, assert_clean_error, cli_env, run_cli


async def test_submit_a_table_with_carried_columns(
    backend_settings: dict[str, Any], run_worker: Any, tmp_path: Path
) -> None:
    env = cli_env(backend_settings)
    table = tmp_path / "input.csv"
    pd.DataFrame({"link": ["http://example.org/ok/1", "http://example.org/ok/2"],
                  "label": ["first", "second"]}).to_csv(table, index=False)
    rc, out, err = await run_cli("submit", "--input", str(table), "--url-column", "link",
                                 "--pipeline", "surf", env=env)
    assert rc == 0, err
    assert len(out.splitlines()) == 1 and out.startswith("b-")
    batch_id = out.strip()
    await run_worker(pipelines=PIPELINES)
    rc, out, err = await run_cli("results", batch_id, "--format", "jsonl", env=env)
    assert rc == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["label"] for r in records] == ["first", "second"]

    rc, _, err = await run_cli("submit", "--input", str(table), env=env)  # no "url" column
    assert rc == 2 and "link" in err
    assert_clean_error(err)
    rc, _, err = await run_cli("submit", str(table), "--input", str(table), env=env)
    assert rc == 2 and "one input" in err


async def test_submit_warc_then_export_it(
    backend_settings: dict[str, Any], run_worker: Any, tmp_path: Path
) -> None:
    env = cli_env(backend_settings)
    archive = (Builder().warcinfo()
               .response("http://archived.test/a", article_html(1).encode())
               .response("http://archived.test/b", article_html(2).encode())
               .save(tmp_path / "in.warc.gz"))
    rc, out, err = await run_cli("submit", "--warc", str(archive), env=env)
    assert rc == 0, err
    batch_id = out.strip()
    await run_worker()
    out_file = tmp_path / "out.warc.gz"
    rc, _, err = await run_cli("warc", batch_id, "-o", str(out_file), env=env)
    assert rc == 0, err
    assert "wrote 2 page(s)" in err
    with out_file.open("rb") as f:
        uris = [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(f)
                if r.rec_type == "response"]
    assert sorted(uris) == ["http://archived.test/a", "http://archived.test/b"]
    rc, _, err = await run_cli("warc", batch_id, "-o", str(out_file), env=env)
    assert rc == 2 and "--force" in err

    bad = tmp_path / "bad.warc"
    bad.write_text("not a warc\n" * 10)
    rc, _, err = await run_cli("submit", "--warc", str(bad), env=env)
    assert rc == 2 and "bad.warc" in err
    assert_clean_error(err)
