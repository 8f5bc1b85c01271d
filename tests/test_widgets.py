"""The batch monitor: pure formatting and ETA math, then the widget driven on an asyncio loop
against a real Workbench and worker (no kernel: button clicks call the real callbacks)."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from workbench import Workbench, pipeline
from workbench.core.errors import PermanentError
from workbench.core.status import Counts
from workbench.notebook.monitor import BatchMonitor, display_batch
from workbench.notebook.render import (
    FailureGroup,
    FailureGroups,
    Snapshot,
    Throughput,
    batch_html,
    counts_html,
    duration,
    eta_seconds,
    failures_html,
    format_rate,
    group_failures,
    messages_html,
    progress_bar_html,
    status_html,
    summary_html,
    summary_text,
)

# ---------------------------------------------------------------- pure formatting and math


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "—"), (math.nan, "—"), (-3, "0.0s"), (0, "0.0s"), (7.46, "7.5s"), (9.96, "10s"),
    (42.4, "42s"), (59.6, "1m 00s"), (185, "3m 05s"), (7440, "2h 04m"),
    (3 * 86400 + 3600 + 59, "3d 01h"),
])
def test_duration_is_the_one_format(seconds: float | None, text: str) -> None:
    """The monitor shows ``core.text.format_duration`` (as the CLI and email do), ``—`` unknown."""
    assert duration(seconds) == text


@pytest.mark.parametrize(("rate", "text"), [
    (None, "—"), (0, "0.0 items/s"), (0.5, "30.0 items/min"), (2.345, "2.3 items/s"),
    (12.6, "13 items/s"),
])
def test_format_rate(rate: float | None, text: str) -> None:
    assert format_rate(rate) == text


def test_throughput_uses_the_last_window_only() -> None:
    meter = Throughput(window_s=10)
    assert meter.rate() is None
    done = 0
    for t in range(31):  # 1 item/s for 15 s, then 5 items/s
        done += 1 if t <= 15 else 5
        meter.add(float(t), done)
    assert meter.rate() == pytest.approx(5.0)
    meter.add(30.2, done)  # too close to tell a rate
    assert meter.rate() == pytest.approx(5.0 * 10 / 10.2)
    assert meter.idle_for(40.0) == pytest.approx(10.0)


def test_throughput_restarts_when_items_go_back_to_queued() -> None:
    meter = Throughput(window_s=10)
    for t, done in [(0, 0), (1, 4), (2, 8)]:
        meter.add(float(t), done)
    assert meter.rate() == pytest.approx(4.0)
    meter.add(3.0, 5)  # a retry re-queued three failed items
    assert meter.rate() is None
    meter.add(4.0, 7)
    assert meter.rate() == pytest.approx(2.0)


def test_throughput_needs_half_a_second_of_span() -> None:
    meter = Throughput()
    meter.add(0.0, 0)
    meter.add(0.2, 5)
    assert meter.rate() is None


@pytest.mark.parametrize(("remaining", "rate", "eta"), [
    (0, None, 0.0), (10, None, None), (10, 0.0, None), (10, 2.0, 5.0), (3, 0.5, 6.0),
])
def test_eta(remaining: int, rate: float | None, eta: float | None) -> None:
    assert eta_seconds(remaining, rate) == eta


def test_group_failures_largest_first_with_the_first_item_as_sample() -> None:
    rows = pd.DataFrame([
        {"item_id": 9, "url": "u9", "error_type": "http_404", "error_message": "m9"},
        {"item_id": 4, "url": "u4", "error_type": "timeout", "error_message": "m4"},
        {"item_id": 2, "url": "u2", "error_type": "http_404", "error_message": "m2"},
        {"item_id": 7, "url": "u7", "error_type": None, "error_message": None},
        {"item_id": 3, "url": "u3", "error_type": "bad", "error_message": "m3"},
    ])
    groups = group_failures(rows)
    assert [(g.error_type, g.item_ids) for g in groups] == [
        ("http_404", (2, 9)), ("bad", (3,)), ("timeout", (4,)), ("unknown", (7,))]
    assert (groups[0].sample_url, groups[0].sample_message, groups[0].count) == ("u2", "m2", 2)
    assert groups[3].sample_message == ""
    assert group_failures([]) == []



def test_failure_groups_updated_row_by_row_match_group_failures() -> None:
    """The monitor's incremental grouping: new failures, an item failing again with another
    type (its old group shrinks, an emptied group goes), always what group_failures gives."""
    import random

    rng, groups, state = random.Random(7), FailureGroups(), {}
    for _ in range(150):
        records = [(rng.randrange(200), f"u{rng.randrange(9)}", rng.choice(["a", "b", None]),
                    rng.choice(["m", None])) for _ in range(rng.randrange(1, 25))]
        out = groups.update(records)
        state.update((r[0], r) for r in records)
        assert out == group_failures([dict(zip(("item_id", "url", "error_type", "error_message"),
                                                r, strict=True)) for r in state.values()])
        assert len(groups) == len(state)
    single = FailureGroups()
    single.update([(1, "u", "a", "m")])
    assert single.update([(1, "u", "b", "m")]) == [FailureGroup("b", (1,), "u", "m")]

def _snap(**kw: Any) -> Snapshot:
    counts = {"queued": 2, "running": 3, "done": 10, "failed": 4, "cancelled": 1}
    base: dict[str, Any] = dict(batch_id="b-1", name="crawl <1>", pipeline="article", version="1",
                                counts=counts, elapsed_s=12.0, rate=2.5)
    return Snapshot(**{**base, **kw})


def test_snapshot_numbers() -> None:
    s = _snap()
    assert (s.total, s.finished, s.active, s.settled, s.state) == (20, 15, 5, False, "running")
    assert s.eta_s == pytest.approx(2.0)
    done = _snap(counts={"queued": 0, "running": 0, "done": 3, "failed": 0, "cancelled": 0})
    assert (done.settled, done.state, done.eta_s) == (True, "completed", 0.0)
    partial = _snap(counts={"done": 5, "failed": 1})  # the status model fills in the rest
    assert isinstance(partial.counts, Counts) and partial.counts["queued"] == 0


def test_counts_and_progress_bar_html() -> None:
    counts = {"queued": 2, "running": 3, "done": 10, "failed": 4, "cancelled": 1}
    chips = counts_html(counts)
    for status, n in counts.items():
        assert f"{status} <b>{n}</b>" in chips
    assert "cancelled <b>0</b>" in counts_html({"done": 1})  # every status, even absent ones
    widths = [float(w) for w in re.findall(r"width:([\d.]+)%", progress_bar_html(counts))]
    assert widths == pytest.approx([50.0, 20.0, 5.0, 15.0])  # done, failed, cancelled, running


def test_status_html_running_and_settled() -> None:
    running = status_html(_snap())
    assert "15</b> of <b>20</b> finished (75%)" in running
    assert "<b>2.5 items/s</b> over the last 10 s" in running and "ETA <b>2.0s</b>" in running
    assert "since" not in running
    assert "throughput <b>—</b> · ETA <b>—</b>" in status_html(_snap(rate=None))
    assert "crawl &lt;1&gt;" in running and "<1>" not in running  # names are escaped
    settled = status_html(_snap(counts={"done": 5, "failed": 1}, elapsed_s=75, since="the retry"))
    assert "took <b>1m 15s</b> since the retry" in settled and "ETA" not in settled
    assert "completed" in settled


def test_status_html_hints_when_nothing_moves() -> None:
    idle = {"queued": 5, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
    assert "wb.start_worker()" in status_html(_snap(counts=idle, idle_s=31, rate=0.0))
    assert "wb.start_worker()" not in status_html(_snap(counts=idle, idle_s=5, rate=0.0))
    busy = {**idle, "running": 1}
    assert "wb.start_worker()" not in status_html(_snap(counts=busy, idle_s=60, rate=0.0))


def test_failures_html_escapes_and_limits() -> None:
    groups = [FailureGroup(f"type_{i}", tuple(range(10 - i)), f"http://x/{i}?a=<b>",
                           f"message <script>{i}</script>") for i in range(5)]
    out = failures_html(groups, limit=3)
    assert "<script>" not in out and "&lt;script&gt;0&lt;/script&gt;" in out
    assert "type_2" in out and "type_3" not in out
    assert "2 more types, 13 items" in out
    assert failures_html([]) == ""


def test_messages_summary_and_batch_html() -> None:
    msgs = [("info", f"note {i}") for i in range(5)] + [("error", "boom <x>")]
    out = messages_html(msgs, limit=3)
    assert "(3 earlier)" in out and "note 1" not in out and "⚠ boom &lt;x&gt;" in out
    snap = _snap(groups=(FailureGroup("http_404", (1, 2), "http://x/1", "gone"),))
    page = summary_html(snap, msgs)
    assert "Failures by error type" in page and "http_404" in page and "boom" in page
    text = summary_text(snap)
    assert text.startswith("Batch b-1 'crawl <1>' (article v1): running, 15/20 finished")
    assert "http_404: 2, e.g. http://x/1" in text

    class FakeBatch:
        id, name, pipeline, pipeline_version, total = "b-2", None, "article", "1", 7
        last_counts: dict[str, int] | None = None

    assert "await batch.counts()" in batch_html(FakeBatch())
    FakeBatch.last_counts = {"queued": 0, "running": 0, "done": 7, "failed": 0, "cancelled": 0}
    assert "completed" in batch_html(FakeBatch()) and "done <b>7</b>" in batch_html(FakeBatch())


# ---------------------------------------------------------------- the monitor, for real

FIXED: set[str] = set()  # URLs whose failure the test has "fixed"


@pipeline("widget-test", version="1")
async def widget_test(url: str, ctx: Any) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    if url not in FIXED:
        for kind in ("bad_a", "bad_b"):
            if f"/{kind}/" in url:
                raise PermanentError(f"{kind} at {url}", error_type=kind)
    return {"n": int(url.rsplit("/", 1)[1])}


def _urls(tag: str, ok: int = 5, bad_a: int = 3, bad_b: int = 2) -> list[str]:
    base = f"http://example.org/{tag}"
    return ([f"{base}/ok/{i}" for i in range(ok)] + [f"{base}/bad_a/{i}" for i in range(bad_a)]
            + [f"{base}/bad_b/{i}" for i in range(bad_b)])


async def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def _settled_monitor(wb: Workbench, tag: str, **kw: Any) -> BatchMonitor:
    batch = await wb.submit(_urls(tag, **kw), pipeline="widget-test", name=tag)
    monitor = BatchMonitor(batch, interval=0.1)
    try:  # the refresh task ends once the batch settles
        await asyncio.wait_for(monitor.start(), 60)
    except TimeoutError:
        raise AssertionError(f"not settled: {await batch.counts()}; {monitor.messages}") from None
    return monitor


async def test_monitor_reaches_final_counts_and_stops(wb: Workbench, run_worker) -> None:
    await run_worker(burst=False)
    monitor = await _settled_monitor(wb, "final")
    snap = monitor.snapshot
    assert snap is not None and not monitor.running
    assert snap.counts == {"queued": 0, "running": 0, "done": 5, "failed": 5, "cancelled": 0}
    assert [(g.error_type, g.count) for g in snap.groups] == [("bad_a", 3), ("bad_b", 2)]
    assert snap.elapsed_s is not None and 0 < snap.elapsed_s < 60
    assert "10</b> of <b>10</b> finished (100%)" in monitor._status.value
    assert set(monitor.retry_buttons) == {"bad_a", "bad_b"}
    assert monitor.retry_buttons["bad_a"].description == "Retry 3"
    assert monitor.retry_all_button.description == "Retry all failed (5)"
    assert not monitor.retry_all_button.disabled and monitor.cancel_button.disabled
    # what a saved notebook keeps: the final picture next to the live widget
    bundle = monitor._bundle()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "completed" in bundle["text/html"] and "bad_a" in bundle["text/html"]


@pytest.fixture(autouse=True)
def _forget_fixes() -> Any:
    yield
    FIXED.clear()


async def test_retry_button_requeues_its_group(wb: Workbench, run_worker, backend: str) -> None:
    await run_worker(burst=False)
    tag = f"retry-{backend}"
    monitor = await _settled_monitor(wb, tag)
    batch = monitor.batch
    bad_a = {u for u in _urls(tag) if "/bad_a/" in u}
    FIXED.update(bad_a)
    monitor.retry_buttons["bad_a"].click()  # the real on_click callback, synchronous
    assert monitor.running or monitor._actions, "the click scheduled nothing"
    await eventually(lambda: monitor.snapshot is not None and monitor.snapshot.counts["done"] == 8
                     and not monitor.running, what="the retried group to finish")
    assert await batch.counts() == {"queued": 0, "running": 0, "done": 8, "failed": 2,
                                    "cancelled": 0}
    assert [(g.error_type, g.count) for g in monitor.snapshot.groups] == [("bad_b", 2)]
    assert set(monitor.retry_buttons) == {"bad_b"}
    assert any("re-queued 3 item(s): bad_a" in m for _, m in monitor.messages)
    assert monitor.errors == []
    status = await batch.status()
    retried = status[status["url"].isin(bad_a)]
    assert (retried["attempts"] == 2).all() and (retried["status"] == "done").all()
    assert monitor.snapshot.since == "the retry"


async def test_retry_all_and_errors_from_callbacks_show_in_the_widget(
    wb: Workbench, run_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_worker(burst=False)
    monitor = await _settled_monitor(wb, "errors")

    async def broken_retry(item_ids: Any = None) -> int:
        raise RuntimeError("ledger on fire")

    monkeypatch.setattr(monitor.batch, "retry", broken_retry)
    monitor.retry_all_button.click()
    await eventually(lambda: bool(monitor.errors), what="the error to be reported")
    assert "retry of all failed items failed: RuntimeError: ledger on fire" in monitor.errors[0]
    assert "⚠" in monitor._notes.value and "ledger on fire" in monitor._notes.value
    await eventually(lambda: not monitor.retry_all_button.disabled, what="buttons re-enabled")

    # A synchronous error in a callback is caught too: the group's button outlived its group.
    button = monitor.retry_buttons["bad_b"]
    monitor._groups = ()
    button.click()
    assert "LookupError: no failures of type 'bad_b' in this monitor" in monitor.errors[-1]

    monkeypatch.undo()
    monitor.retry_all_button.click()
    await eventually(lambda: any("re-queued 5 item(s)" in m for _, m in monitor.messages))
    await eventually(lambda: not monitor.running and monitor.snapshot.counts["failed"] == 5,
                     what="the retried items to fail again")
    assert (await monitor.batch.counts())["failed"] == 5


async def test_two_monitors_at_once_without_blocking_the_loop(wb: Workbench, run_worker) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    tick_task = asyncio.create_task(ticker())
    a = await wb.submit(_urls("two-a", ok=6, bad_a=1, bad_b=0), pipeline="widget-test")
    b = await wb.submit(_urls("two-b", ok=2, bad_a=0, bad_b=4), pipeline="widget-test")
    monitors = [BatchMonitor(a, interval=0.1), BatchMonitor(b, interval=0.1),
                BatchMonitor(a, interval=0.2)]  # two on the same batch
    tasks = [m.start() for m in monitors]
    await asyncio.sleep(0.3)
    assert all(m.running for m in monitors)  # nothing runs yet: all wait for a worker
    started = time.monotonic()
    await run_worker(burst=False)
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    except TimeoutError:
        raise AssertionError(f"not settled: {[m.snapshot for m in monitors]}") from None
    elapsed = time.monotonic() - started
    tick_task.cancel()
    assert [m.snapshot.counts["done"] for m in monitors] == [6, 2, 6]
    assert [m.snapshot.counts["failed"] for m in monitors] == [1, 4, 1]
    assert [[g.error_type for g in m.snapshot.groups] for m in monitors] == [
        ["bad_a"], ["bad_b"], ["bad_a"]]
    # The loop kept turning while three monitors refreshed: never held for a second (a monitor
    # blocking on a read would hold it for the whole read), and the 10 ms ticker ran at least
    # every 100 ms on average. Margins a loaded 2-core machine does not eat (the tick rate alone,
    # asked for 30 % of 100/s, was not: the ticker itself waits for the CPU).
    during = [t for t in ticks if t >= started]
    gaps = [b - a for a, b in itertools.pairwise([started, *during])]
    assert max(gaps) < 1.0, f"the event loop stalled for {max(gaps):.2f} s"
    assert len(during) > elapsed / 0.1, "the monitors starved the event loop"


async def test_monitor_draws_the_end_as_soon_as_wait_sees_it(wb: Workbench, run_worker) -> None:
    """A notebook's ``await batch.wait()`` may see the end first: the monitor must not lag a
    whole interval behind (the next cell may close the Workbench)."""
    batch = await wb.submit(_urls("lag", ok=3, bad_a=0, bad_b=0), pipeline="widget-test")
    monitor = BatchMonitor(batch, interval=30)
    task = monitor.start()
    await eventually(lambda: monitor.snapshot is not None)
    await run_worker()
    await batch.wait(timeout=10)
    await asyncio.wait_for(task, 2)
    assert monitor.snapshot.counts["done"] == 3 and monitor.snapshot.settled


async def test_cancel_asks_for_a_second_click(wb: Workbench) -> None:
    batch = await wb.submit(_urls("cancel"), pipeline="widget-test")  # no worker: stays queued
    monitor = BatchMonitor(batch, interval=0.1)
    task = monitor.start()
    await eventually(lambda: monitor.snapshot is not None)
    monitor.cancel_button.click()
    assert monitor.cancel_button.description == "Click again to cancel 10 item(s)"
    assert monitor.cancel_button.button_style == "danger"
    assert (await batch.counts())["queued"] == 10
    monitor.cancel_button.click()
    await asyncio.wait_for(task, 30)
    assert monitor.snapshot.counts["cancelled"] == 10 and monitor.snapshot.settled
    assert monitor.cancel_button.disabled and monitor.cancel_button.description == "Cancel batch"
    assert any("cancelled 10 item(s)" in m for _, m in monitor.messages)


async def test_monitor_stops_when_the_workbench_closes(make_wb, run_worker) -> None:
    wb = make_wb()
    batch = await wb.submit(_urls("closing", ok=2, bad_a=2, bad_b=0), pipeline="widget-test")
    monitor = BatchMonitor(batch, interval=0.05)
    task = monitor.start()
    await eventually(lambda: monitor.snapshot is not None and monitor.snapshot.groups == ())
    monitor.interval = 30  # from now on it only wakes for counts read elsewhere
    await run_worker()
    # a notebook's last cells: wait, then close before the monitor's next read
    final = await batch.wait(timeout=10)
    await wb.close()
    await asyncio.wait_for(task, 10)
    assert "the Workbench was closed" in monitor.messages[-1][1]
    # the counts wait() read are final: they become the monitor's final picture; which items
    # failed was never read, so no failure table rather than a wrong one
    assert monitor.snapshot.counts == final and monitor.snapshot.settled
    assert monitor.snapshot.groups == () and final["failed"] == 2
    assert "4</b> of <b>4</b> finished" in monitor._status.value


class _Shell:
    """Just enough of an IPython kernel shell for the display plumbing."""

    def __init__(self) -> None:
        from IPython.core.events import EventManager, available_events

        self.kernel = object()
        self.execution_count = 7
        self.events = EventManager(self, available_events)


class _Handle:
    def __init__(self, shown: list[dict[str, Any]], data: dict[str, Any]) -> None:
        self.updates: list[dict[str, Any]] = []
        shown.append(data)

    def update(self, data: dict[str, Any], raw: bool = False) -> None:
        self.updates.append(data)


async def test_batch_as_last_expression_shows_the_monitor_and_keeps_its_final_picture(
    wb: Workbench, run_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import IPython.display

    import workbench.notebook.monitor as widgets

    shell, shown, handles = _Shell(), [], []

    def fake_display(data: dict[str, Any], raw: bool = False, display_id: bool = False) -> Any:
        handles.append(_Handle(shown, data))
        return handles[-1] if display_id else None

    monkeypatch.setattr(widgets, "_ipython", lambda: shell)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    batch = await wb.submit(_urls("display", ok=2, bad_a=1, bad_b=0), pipeline="widget-test",
                           name="display")
    assert repr(batch).startswith(f"<Batch {batch.id} 'display' pipeline=widget-test v1 items=3")
    batch._ipython_display_()  # what IPython calls for a Batch as a cell's last expression
    assert len(shown) == 1 and "application/vnd.jupyter.widget-view+json" in shown[0]
    assert "running" in shown[0]["text/html"]
    await run_worker()  # burst: the whole batch, then return
    await eventually(lambda: bool(handles[0].updates), what="the final display update")
    final = handles[0].updates[-1]
    assert "completed" in final["text/html"] and "3</b> of <b>3</b> finished" in final["text/html"]
    assert "done=2 failed=1" in final["text/plain"]
    # headless runners only see the next cell's messages: the picture is sent again after it
    shell.events.trigger("post_run_cell", None)
    assert len(handles[0].updates) == 2
    assert handles[0].updates[-1]["text/html"] == final["text/html"]
    shell.events.trigger("post_run_cell", None)
    assert len(handles[0].updates) == 2  # once only
    assert "done <b>2</b>" in batch._repr_html_()  # the monitor's reads refresh the reprs

    # batch.widget() as a cell's last line: shown once, not again by IPython's display hook
    monitor = batch.widget()
    monitor._ipython_display_()
    assert len(shown) == 2
    await asyncio.wait_for(monitor.start(), 10)

    # outside a kernel the Batch shows its static summary
    monkeypatch.setattr(widgets, "_ipython", lambda: None)
    display_batch(batch)
    assert set(shown[-1]) == {"text/plain", "text/html"} and "completed" in shown[-1]["text/html"]


def test_show_without_a_running_loop_prints_one_snapshot(
    backend_settings: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain script: no loop runs, so show() reads once through the sync facade and prints."""
    failure: list[BaseException] = []

    def script() -> None:
        try:
            wb = Workbench(**backend_settings)
            batch = wb.sync.submit(_urls("script", ok=2, bad_a=0, bad_b=0), pipeline="widget-test",
                                   name="script")
            monitor = batch.widget()
            assert monitor.snapshot.counts["queued"] == 2 and not monitor.running
            wb.sync.close()
        except BaseException as exc:
            failure.append(exc)

    # run in a thread so that no event loop is running there (the test's own may be)
    thread = threading.Thread(target=script)
    thread.start()
    thread.join(60)
    if failure:
        raise failure[0]
    out = capsys.readouterr().out
    assert "'script' (widget-test v1): running, 0/2 finished, queued=2" in out
