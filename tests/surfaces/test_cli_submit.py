"""``python -m workbench submit`` options and exit codes, in real subprocesses: ``--refresh``,
``--skip-invalid``, ``--notify``, ``--wait`` without a worker (the warning, ``--timeout`` exit 1,
Ctrl-C exit 130), and exit 1 when the ledger's database is down.

These are the command line's own behaviours, the same whatever the ledger: they run on SQLite
only (each ``python -m workbench`` call costs a process start); the submit path itself runs on
both backends in ``test_cli.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from workbench import Workbench

from .conftest import (
    CLI,
    PIPELINES,
    REPO,
    SmtpServer,
    assert_clean_error,
    cli_env,
    interrupt,
    run_cli,
)

ONE_BACKEND = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
NO_WORKER = "no worker is running: start one (python -m workbench.worker) and this waits"


@ONE_BACKEND
async def test_refresh_analyses_again(
    backend_settings: dict[str, Any], run_worker: Any, make_wb: Any
) -> None:
    env = cli_env(backend_settings)
    stdin = b"http://example.org/ok/1\nhttp://example.org/ok/2\n"
    rc, _, err = await run_cli("submit", "-", "--pipeline", "surf", env=env, stdin=stdin)
    assert rc == 0, err
    await run_worker(pipelines=PIPELINES)
    rc, again, err = await run_cli("submit", "-", "--pipeline", "surf", env=env, stdin=stdin)
    assert rc == 0 and "2 item(s) answered from earlier results (--refresh" in err, err
    rc, fresh, err = await run_cli("submit", "-", "--pipeline", "surf", "--refresh", env=env,
                                   stdin=stdin)
    assert rc == 0 and "answered from earlier results" not in err, err
    wb: Workbench = make_wb(pipelines=PIPELINES)
    assert (await (await wb.get_batch(again.strip())).counts())["done"] == 2
    refreshed = await wb.get_batch(fresh.strip())
    assert refreshed.cached == 0 and (await refreshed.counts())["queued"] == 2
    await run_worker(pipelines=PIPELINES)
    df = await refreshed.results()
    assert len(df) == 2 and not df["cached"].any()


@ONE_BACKEND
async def test_skip_invalid_keeps_the_valid_lines(
    backend_settings: dict[str, Any], make_wb: Any, tmp_path: Path
) -> None:
    env = cli_env(backend_settings)
    urls = tmp_path / "urls.txt"
    urls.write_text("http://example.org/ok/1\nftp://example.org/x\n\nnot a url\n"
                    "http://example.org/ok/2\n")
    rc, out, err = await run_cli("submit", str(urls), "--pipeline", "surf", env=env)
    assert rc == 2 and out == "" and "2 invalid URL(s)" in err and "--skip-invalid" in err, err
    rc, out, err = await run_cli("submit", str(urls), "--pipeline", "surf", "--skip-invalid",
                                 env=env)
    assert rc == 0 and out.startswith("b-"), err
    assert "skipped 2 invalid line(s): line 2 'ftp://example.org/x'" in err
    assert "line 4 'not a url'" in err and "submitted 2 item(s)" in err
    wb: Workbench = make_wb(pipelines=PIPELINES)
    status = await (await wb.get_batch(out.strip())).status()
    assert sorted(status["url"]) == ["http://example.org/ok/1", "http://example.org/ok/2"]


@ONE_BACKEND
async def test_notify_sends_the_email_when_the_batch_completes(
    backend_settings: dict[str, Any], run_worker: Any, smtp: SmtpServer
) -> None:
    env = cli_env(backend_settings)
    rc, out, err = await run_cli("submit", "-", "--pipeline", "surf", "--notify", "nope",
                                 env=env, stdin=b"http://example.org/ok/1\n")
    assert rc == 2 and "'nope'" in err and "email address" in err, err
    rc, out, err = await run_cli("submit", "-", "--pipeline", "surf", "--notify",
                                 "ana@example.org", "--name", "from the shell", env=env,
                                 stdin=b"http://example.org/ok/1\nhttp://example.org/bad/2\n")
    assert rc == 0, err
    await run_worker(pipelines=PIPELINES, smtp_url=smtp.url)  # waits for its pending send
    ((_, rcpts, msg),) = smtp.inbox.messages
    assert rcpts == ["ana@example.org"] and msg["X-Workbench-Batch"] == out.strip()
    assert msg["Subject"] == "[Workbench] batch from the shell finished: 1 done, 1 failed"


@ONE_BACKEND
async def test_wait_without_a_worker_warns_and_times_out_with_exit_1(
    backend_settings: dict[str, Any],
) -> None:
    env = cli_env(backend_settings)
    rc, out, err = await run_cli("submit", "-", "--pipeline", "surf", "--wait", "--timeout", "1",
                                 "--no-progress", env=env, stdin=b"http://example.org/ok/1\n")
    batch_id = out.strip()
    assert rc == 1 and batch_id.startswith("b-"), (rc, err)
    assert NO_WORKER in err
    assert f"batch {batch_id} still running after 1s; it goes on" in err
    assert "queued 1" in err  # the summary says where it stands
    assert "Traceback" not in err


@ONE_BACKEND
async def test_ctrl_c_while_waiting_exits_130(backend_settings: dict[str, Any]) -> None:
    env = cli_env(backend_settings)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "submit", "-", "--pipeline", "surf", "--wait",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=str(REPO),
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(b"http://example.org/ok/1\n")
    proc.stdin.close()
    try:
        batch_id = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert batch_id.startswith("b-")
        # it prints the warning just before it starts waiting: then it is waiting
        seen = b""
        while NO_WORKER.encode() not in seen:
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert line, seen.decode()
            seen += line
        _out, rest, code = await interrupt(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (seen + rest).decode()
    assert code == 130, err
    assert err.rstrip().endswith("workbench: interrupted") and "Traceback" not in err, err


async def test_database_down_exits_1_with_one_line(tmp_path: Path) -> None:
    down = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
    env = cli_env({"data_dir": tmp_path / "data", "database_url": down})
    calls = [("status",), ("submit", "-", "--pipeline", "surf")]
    done = await asyncio.gather(*(run_cli(*c, env=env, stdin=b"http://example.org/ok/1\n")
                                  for c in calls))
    for (rc, out, err), call in zip(done, calls, strict=True):
        assert rc == 1, (call, rc, err)
        assert_clean_error(err)
        assert out == "" and len(err.strip().splitlines()) == 1, (call, err)
        assert "127.0.0.1', 1" in err or "127.0.0.1:1" in err, err
