"""``python -m workbench`` in real subprocesses: output contract, exit codes, clean errors."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from workbench.queue.embedded import EmbeddedRedis
from workbench.samplesite import BROKEN_ROUTES, SampleSite, sample_site_dir

from .conftest import PIPELINES, assert_clean_error, cli_env, run_cli

URLS_FILE = """\
# six good pages, two bad ones, a duplicate, comments and blank lines
http://example.org/ok/1
http://example.org/ok/2

http://example.org/bad/3
   http://example.org/ok/4
# http://example.org/ok/99 is commented out
http://example.org/ok/5
http://example.org/gone/6
http://example.org/ok/7
http://example.org/ok/8
http://example.org/ok/1
"""


async def test_submit_then_status_results_failures_retry_cancel(
    backend_settings: dict[str, Any], run_worker: Any, tmp_path: Path
) -> None:
    env = cli_env(backend_settings)
    urls = tmp_path / "urls.txt"
    urls.write_text(URLS_FILE)
    rc, out, err = await run_cli(
        "submit", str(urls), "--pipeline", "surf", "--name", "cli test", "--params",
        '{"tag": "x"}', env=env,
    )
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("b-"), out  # the id alone on stdout
    batch_id = lines[0]
    assert "Traceback" not in err

    await run_worker(pipelines=PIPELINES)

    parquet = tmp_path / "out.parquet"
    calls = [
        ("status",),
        ("status", batch_id),
        ("results", batch_id, "--format", "jsonl"),
        ("results", batch_id),  # csv by default
        ("results", batch_id, "-o", str(parquet)),  # format from the suffix
        ("results", batch_id, "--format", "parquet"),  # stdout is a pipe: binary-safe
        ("failures", batch_id),
    ]
    done = await asyncio.gather(*(run_cli(*c, env=env) for c in calls))
    for (rc, _out, err), call in zip(done, calls, strict=True):
        assert rc == 0, (call, err)
        assert "Traceback" not in err
    table, one, jsonl, csv_text, written, piped, failures = (d[1] for d in done)

    assert batch_id in table and "cli test" in table and "completed" in table
    assert "done 6" in one and "failed 2" in one and "bad_page" in one and "gone_page" in one

    records = [json.loads(line) for line in jsonl.splitlines()]
    assert sorted(r["n"] for r in records) == [1, 2, 4, 5, 7, 8]
    assert all(r["tag"] == "x" and r["vec"] == [0.0, 1.0, 2.0] for r in records)
    assert records[0]["meta"] == {"k": records[0]["n"]} and records[0]["tags"] == ["a", "b"]

    csv_lines = csv_text.splitlines()
    assert csv_lines[0].startswith("item_id,url,n,words,tag") and len(csv_lines) == 7

    assert written == "" and "written to" in done[4][2]
    table_pq = pq.read_table(parquet)
    assert table_pq.num_rows == 6 and {"n", "words", "tags", "url"} <= set(table_pq.column_names)

    assert piped.startswith("PAR1") and piped.rstrip().endswith("PAR1")
    assert "bad_page" in failures and "http://example.org/gone/6" in failures

    rc, out, err = await run_cli("retry", batch_id, env=env)
    assert rc == 0 and out.strip() == f"requeued 2 failed item(s) of batch {batch_id}", err
    rc, out, err = await run_cli("cancel", batch_id, env=env)
    assert rc == 0 and out.strip() == f"cancelled 2 item(s) of batch {batch_id}", err
    rc, out, _ = await run_cli("status", batch_id, "--json", env=env)
    counts = json.loads(out)["counts"]
    assert counts == {"queued": 0, "running": 0, "done": 6, "failed": 0, "cancelled": 2}


async def test_submit_wait_shows_progress_and_a_summary(
    backend_settings: dict[str, Any], run_worker: Any
) -> None:
    """--wait: a progress bar and a summary on stderr, only the id on stdout; a batch that
    completed with failures exits 0."""
    env = cli_env(backend_settings)
    await run_worker(burst=False, pipelines=PIPELINES)
    stdin = b"http://example.org/ok/1\nhttp://example.org/ok/2\nhttp://example.org/bad/3\n"
    rc, out, err = await run_cli("submit", "-", "--pipeline", "surf", "--wait", "--timeout", "60",
                                 env=env, stdin=stdin)
    assert rc == 0, err
    assert out.splitlines() == [out.strip()] and out.startswith("b-")
    assert "3/3" in err  # the tqdm bar
    assert "done 2, failed 1" in err and "bad_page" in err
    assert f"python -m workbench retry {out.strip()}" in err


async def test_bad_input_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    env = cli_env({"data_dir": tmp_path / "data"})
    good = tmp_path / "good.txt"
    good.write_text("http://example.org/ok/1\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("# header\nhttp://example.org/ok/1\n\nftp://example.org/x\nnot a url\n")
    cases: list[tuple[tuple[str, ...], str]] = [
        (("submit", str(tmp_path / "missing.txt")), "no such file"),
        (("submit", str(bad)), "line 4 'ftp://example.org/x'"),
        (("submit", str(good), "--pipeline", "no-such-pipeline"), "unknown pipeline"),
        (("submit", str(good), "--params", "{not json"), "--params is not valid JSON"),
        (("status", "b-00000000-000000-000000"), "no batch with id"),
        (("serve", "--host", "0.0.0.0", "--port", "8999"), "refusing to serve on 0.0.0.0"),
    ]
    done = await asyncio.gather(*(run_cli(*args, env=env) for args, _ in cases))
    for (rc, out, err), (args, expected) in zip(done, cases, strict=True):
        assert rc == 2, (args, rc, err)
        assert_clean_error(err)
        assert expected in err, (args, err)
        assert out == "", (args, out)
        assert len(err.strip().splitlines()) == 1, (args, err)
    assert "line 5 'not a url'" in done[1][2]  # every bad line is named

    usage = await asyncio.gather(
        run_cli(env=env),  # no command: the help, on stderr
        run_cli("status", env={**env, "WORKBENCH_MAX_TRIES": "many"}),  # a malformed setting
        run_cli("results", "b-x", "--format", "xml", env=env),  # argparse, in one line too
    )
    for rc, _out, err in usage:
        assert rc == 2 and "Traceback" not in err, err
    assert "WORKBENCH_MAX_TRIES" in usage[1][2]
    (line,) = usage[2][2].splitlines()
    assert line.startswith("workbench: error: argument --format: invalid choice")
    assert line.endswith("(see: python -m workbench results --help)")


def test_url_file_reading(tmp_path: Path) -> None:
    from workbench.cli.batches import read_url_lines
    from workbench.cli.common import CliError

    f = tmp_path / "u.txt"
    f.write_text("\ufeff# c\n\n  http://a.org/1  \n#http://b.org\nhttp://a.org/2\n")
    assert read_url_lines(str(f)) == ([(3, "http://a.org/1"), (5, "http://a.org/2")], str(f))
    for content, message in ((b"\xff\xfe\x00garbage", "not UTF-8"), (b"a\x00b", "binary")):
        f.write_bytes(content)
        with pytest.raises(CliError, match=message) as info:
            read_url_lines(str(f))
        assert info.value.code == 2
    with pytest.raises(CliError, match="is a directory"):
        read_url_lines(str(tmp_path))


async def test_demo_runs_end_to_end_and_stops_what_it_started(tmp_path: Path) -> None:
    """The README's main job: sample site, worker with a process pool, summary, clean stop."""
    data = tmp_path / "data"
    env = cli_env({"data_dir": data})  # nothing else: the embedded defaults
    env.pop("WORKBENCH_PIPELINES")
    rc, out, err = await run_cli("demo", "--no-progress", env=env, timeout=120, cwd=tmp_path)
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err
    assert "items      44: 37 done, 7 failed" in out, out
    # every article's language as its page declares it (en, de, fr, es), plus the page the
    # flaky route serves once it works: 37 pages in all
    declared = Counter(a.lang for a in SampleSite(sample_site_dir()).articles())
    (langs_line,) = [line for line in out.splitlines() if line.startswith("  languages  ")]
    langs = {k: int(v) for k, v in (
        part.rsplit(" ", 1) for part in langs_line.split("  languages  ")[1].split(", "))}
    assert set(langs) == set(declared) == {"en", "de", "fr", "es"}, langs_line
    assert all(langs[k] >= n for k, n in declared.items()) and sum(langs.values()) == 37, langs
    assert "words      per page" in out and "keywords" in out
    # every failure kind of the sample site, each with its count, each one expected
    kinds = {m["type"]: int(m["n"]) for m in re.finditer(
        r"^ {15}(?P<type>[a-z_0-9]+) +(?P<n>\d+)  as expected, e\.g\. broken/", out, re.M)}
    assert kinds == Counter(BROKEN_ROUTES.values()), out
    assert "unexpected" not in out
    assert "succeeded at attempt 3" in out  # the flaky route, retried automatically
    assert str(data / "workbench.db") in out and "(stopped again)" in out
    assert "python -m workbench results b-" in out and "await batch.results()" in out
    assert not EmbeddedRedis(data / "redis").is_running()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_jsonable_export_of_awkward_values(fmt: str) -> None:
    import numpy as np
    import pandas as pd

    from workbench.client.export import iter_csv, iter_jsonl, parquet_bytes

    df = pd.DataFrame({
        "item_id": [1, 2],
        "vec": [np.arange(2, dtype=np.float32), None],
        "meta": [{"a": 1}, {"b": [1, 2]}],
        "score": [float("nan"), 1.5],
        "when": pd.to_datetime(["2026-01-01T00:00:00Z", None], utc=True),
    })
    text = "".join(iter_csv(df) if fmt == "csv" else iter_jsonl(df))
    if fmt == "jsonl":
        first, second = (json.loads(x) for x in text.splitlines())
        assert first == {"item_id": 1, "vec": [0.0, 1.0], "meta": {"a": 1}, "score": None,
                         "when": "2026-01-01T00:00:00+00:00"}
        assert second["vec"] is None and second["when"] is None
    else:
        assert text.splitlines()[1] == '1,"[0.0, 1.0]","{""a"": 1}",,2026-01-01T00:00:00+00:00'
    assert pq.read_table(io.BytesIO(parquet_bytes(df))).num_rows == 2
