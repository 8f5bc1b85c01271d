"""Email on completion against a real SMTP server on loopback (aiosmtpd), on every backend."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from workbench import Workbench
from workbench.cleanup import run_cleanup
from workbench.ledger.models import BatchRow
from workbench.notify.email import PermanentSmtpError, compose_email, parse_smtp_url, send_email
from workbench.notify.notifier import Notifier
from workbench.notify.summary import summarize_batch

from .conftest import PIPELINES, REPO, SmtpServer, cli_env, free_port

OK = [f"http://example.org/ok/{i}" for i in range(1, 18)]
BAD = [f"http://example.org/bad/{i}" for i in range(20, 23)]


async def _until(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _until_async(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def _eq(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def _batch_row(wb: Workbench, batch_id: str) -> Any:
    async with wb.ledger.read_engine.connect() as conn:
        return (await conn.execute(select(BatchRow.__table__).where(BatchRow.id == batch_id))).one()


async def _worker_process(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """``python -m workbench.worker`` in one process of its own (no supervisor)."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workbench.worker", "--processes", "1", "--concurrency", "3",
            env=env, cwd=str(REPO), stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def _live_workers(wb: Workbench) -> int:
    return sum(1 for w in await wb.ledger.workers() if w["stopped_at"] is None)


async def test_exactly_one_email_from_two_worker_processes(
    backend_settings: dict[str, Any], make_wb: Callable[..., Workbench], smtp: SmtpServer,
    tmp_path: Path,
) -> None:
    """Two worker processes share the batch and race to claim its email; one email goes out."""
    mail = dict(smtp_url=smtp.url, smtp_from="Workbench <wb@example.org>")
    wb = make_wb(**mail, pipelines=PIPELINES)
    await wb.batches()  # the ledger exists before the workers start
    env = cli_env({**backend_settings, **mail})
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = [await _worker_process(env, log) for log in logs]
    try:
        await _until_async(lambda: _eq(_live_workers(wb), 2), timeout=60)
        # items that take a moment: both processes are busy at once and each finishes some
        slow = [f"http://example.org/slow/{i}" for i in range(1, 18)]
        batch = await wb.submit(slow + BAD, pipeline="surf", params={"sleep": 0.2},
                                name="two workers", notify="ana@example.org")
        assert (await batch.wait(timeout=60))["done"] == 17
        await _until(lambda: smtp.inbox.messages)
        assert (await _batch_row(wb, batch.id)).notified_at is not None  # claimed
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    # Both stopped: each waited for its pending sends first, so a second email would be here now.
    output = "\n".join(log.read_text(errors="replace") for log in logs)
    assert codes == [0, 0] and "Traceback" not in output, output[-3000:]
    status = await batch.status()
    assert status["worker_id"].nunique() == 2, "both processes should have finished items"
    assert len(smtp.inbox.messages) == 1
    assert (await _batch_row(wb, batch.id)).notified_at is not None
    sender, rcpts, msg = smtp.inbox.messages[0]
    assert sender == "wb@example.org" and rcpts == ["ana@example.org"]
    assert msg["Subject"] == "[Workbench] batch two workers finished: 17 done, 3 failed"
    assert msg["X-Workbench-Batch"] == batch.id
    body = msg.get_content()
    assert "Items:     20 — done 17, failed 3, cancelled 0" in body
    assert "took " in body  # the duration
    assert "bad_page: 3 item(s)" in body
    assert "e.g. http://example.org/bad/20" in body and "page 20 is bad" in body  # a sample
    assert f"python -m workbench retry {batch.id}" in body
    assert f'batch = await wb.get_batch("{batch.id}")' in body and "await batch.retry()" in body


async def test_racing_notifiers_claim_a_settled_batch_once(
    make_wb: Callable[..., Workbench], run_worker: Any, smtp: SmtpServer
) -> None:
    mail = dict(smtp_url=smtp.url, smtp_from="Workbench <wb@example.org>", pipelines=PIPELINES)
    wb = make_wb(**mail)
    batch = await wb.submit(OK[:2], pipeline="surf", notify="bo@example.org")
    await run_worker(**{**mail, "smtp_url": None})  # a worker without SMTP: no email, no claim
    assert (await _batch_row(wb, batch.id)).notified_at is None
    info = await wb.ledger.batch_info(batch.id)
    notifiers = [Notifier(wb.settings, wb.ledger) for _ in range(4)]
    await asyncio.gather(*(n(info) for n in notifiers for _ in range(3)))
    for n in notifiers:
        await n.close()  # waits for the pending send
    assert sum(len(n.outcomes) for n in notifiers) == 1
    assert len(smtp.inbox.messages) == 1
    assert smtp.inbox.messages[0][1] == ["bo@example.org"]
    assert "No item failed." in smtp.inbox.messages[0][2].get_content()


async def test_manual_retry_rearms_the_email(
    make_wb: Callable[..., Workbench], run_worker: Any, smtp: SmtpServer
) -> None:
    mail = dict(smtp_url=smtp.url, smtp_from="wb@example.org", pipelines=PIPELINES)
    wb = make_wb(**mail)
    batch = await wb.submit(OK[:2] + BAD[:1], pipeline="surf", notify="ana@example.org")
    await run_worker(**mail)  # a burst worker waits for its pending send before it returns
    assert len(smtp.inbox.messages) == 1
    first = (await _batch_row(wb, batch.id)).notified_at
    assert await batch.retry() == 1
    row = await _batch_row(wb, batch.id)
    assert row.notified_at is None and row.settled_at is None  # armed again
    await run_worker(**mail)  # the page is still bad: fails again, the batch settles again
    assert (await batch.counts())["failed"] == 1
    assert len(smtp.inbox.messages) == 2
    assert [m[2]["X-Workbench-Batch"] for m in smtp.inbox.messages] == [batch.id, batch.id]
    assert "2 done, 1 failed" in smtp.inbox.messages[1][2]["Subject"]
    assert (await _batch_row(wb, batch.id)).notified_at > first


async def test_claim_given_back_when_the_worker_stops_mid_send(
    make_wb: Callable[..., Workbench], smtp: SmtpServer
) -> None:
    """An SMTP server that accepts and never answers: the worker stops during the send, gives
    the claim back, and the cleanup sweep sends the email later."""
    connected = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await reader.read()  # say nothing until the client hangs up
        writer.close()

    mute_server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = mute_server.sockets[0].getsockname()[1]
    wb = make_wb(smtp_url=f"smtp://127.0.0.1:{port}", smtp_timeout_s=60, shutdown_grace_s=0.5,
                 pipelines=PIPELINES)
    try:
        runtime = await wb.start_worker(concurrency=4)
        try:
            batch = await wb.submit(OK[:2], pipeline="surf", notify="ana@example.org")
            assert (await batch.wait(timeout=20))["done"] == 2
            await asyncio.wait_for(connected.wait(), 20)  # the send is under way
            assert (await _batch_row(wb, batch.id)).notified_at is not None
            notifier = runtime.notifier
            assert notifier is not None and notifier.tasks
        finally:
            await wb.stop_workers()
    finally:
        mute_server.close()
    row = await _batch_row(wb, batch.id)
    assert row.notified_at is None and row.settled_at is not None  # owed, not forgotten
    report = await run_cleanup(wb.settings.model_copy(update={"smtp_url": smtp.url}))
    assert report.notifications_sent == 1 and len(smtp.inbox.messages) == 1


async def test_smtp_down_then_up_is_retried_and_delivered(
    make_wb: Callable[..., Workbench],
) -> None:
    server = SmtpServer(free_port())  # not listening yet
    wb = make_wb(smtp_url=server.url, smtp_backoff_s=0.3, smtp_max_tries=6, pipelines=PIPELINES)
    runtime = await wb.start_worker(concurrency=4)
    try:
        batch = await wb.submit(OK[:3], pipeline="surf", notify="ana@example.org")
        assert (await batch.wait(timeout=20))["done"] == 3
        notifier = runtime.notifier
        assert notifier is not None
        await _until(lambda: notifier.failed_attempts >= 1)  # refused: SMTP is down
        server.start()
        await _until(lambda: notifier.outcomes, timeout=30)
        assert notifier.outcomes == [(batch.id, "sent")]
        assert len(server.inbox.messages) == 1
        assert (await _batch_row(wb, batch.id)).notified_at is not None
    finally:
        await wb.stop_workers()
        server.stop()


async def test_smtp_permanently_down_batch_completes_email_sent_by_cleanup_later(
    make_wb: Callable[..., Workbench],
) -> None:
    server = SmtpServer(free_port())
    wb = make_wb(smtp_url=server.url, smtp_backoff_s=0.05, smtp_max_tries=3, pipelines=PIPELINES)
    runtime = await wb.start_worker(concurrency=4)
    try:
        batch = await wb.submit(OK[:2] + BAD[:1], pipeline="surf", notify="ana@example.org")
        counts = await batch.wait(timeout=20)
        assert counts["done"] == 2 and counts["failed"] == 1  # the batch completes regardless
        notifier = runtime.notifier
        assert notifier is not None
        await _until(lambda: notifier.outcomes)
        assert notifier.outcomes == [(batch.id, "unclaimed")] and notifier.failed_attempts == 3
    finally:
        await wb.stop_workers()
    row = await _batch_row(wb, batch.id)
    assert row.notified_at is None and row.settled_at is not None  # owed, not forgotten

    server.start()
    try:
        report = await run_cleanup(wb.settings)
        assert report.notifications_sent == 1 and report.ok
        assert len(server.inbox.messages) == 1
        assert "1 failed" in server.inbox.messages[0][2]["Subject"]
        assert (await _batch_row(wb, batch.id)).notified_at is not None
        assert (await run_cleanup(wb.settings)).notifications_sent == 0  # sent once only
    finally:
        server.stop()


async def test_permanent_refusal_is_not_retried(make_wb: Callable[..., Workbench]) -> None:
    class Refuse:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                              address: str, rcpt_options: Any) -> str:
            return "550 5.1.1 no such user here"

    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(Refuse(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        wb = make_wb()
        batch = await wb.submit(OK[:1], pipeline="surf", notify="nobody@example.org")
        summary = await summarize_batch(wb.ledger, batch.id)
        msg = compose_email(summary, sender="wb@example.org", recipients=["nobody@example.org"])
        failures: list[BaseException] = []
        with pytest.raises(PermanentSmtpError, match="550"):
            await send_email(msg, parse_smtp_url(f"smtp://127.0.0.1:{port}"), tries=4,
                             backoff_s=0.01, on_failure=failures.append)
        assert len(failures) == 1  # no retry of a 5xx
    finally:
        controller.stop()


def test_smtp_url_forms() -> None:
    plain = parse_smtp_url("smtp://mail.example.org")
    assert (plain.hostname, plain.port, plain.use_tls, plain.start_tls) == (
        "mail.example.org", 25, False, False)
    tls = parse_smtp_url("smtps://mail.example.org")
    assert tls.port == 465 and tls.use_tls
    st = parse_smtp_url("smtp+starttls://ana%40lab:p%3Ass@mail.example.org:2587")
    assert (st.port, st.start_tls, st.username, st.password) == (2587, True, "ana@lab", "p:ss")
    assert "p:ss" not in repr(st)
    with pytest.raises(ValueError):
        parse_smtp_url("http://mail.example.org")


async def test_cleanup_sends_the_email_of_a_batch_settled_by_cancel(
    make_wb: Callable[..., Workbench], smtp: SmtpServer
) -> None:
    """No item finished on a worker, so no hook fired: the daily sweep sends it."""
    wb = make_wb(smtp_url=smtp.url)
    running = await wb.submit(OK[:1], pipeline="surf", notify="ana@example.org")
    batch = await wb.submit(OK[:2], pipeline="surf", name="line1\nline2", notify="ana@example.org")
    assert await batch.cancel() == 2
    report = await run_cleanup(wb.settings)
    assert report.notifications_sent == 1 and report.ok  # not the one still queued
    (_, _, msg), = smtp.inbox.messages
    assert msg["Subject"] == "[Workbench] batch line1 line2 finished: 0 done, 0 failed, 2 cancelled"
    assert (await _batch_row(wb, running.id)).notified_at is None
    assert (await run_cleanup(wb.settings)).notifications_sent == 0
