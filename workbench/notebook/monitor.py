"""The live batch monitor for notebooks: ``batch.widget()``, or a ``Batch`` as a cell's last line.

``BatchMonitor`` is ipywidgets plumbing: it polls the ledger from an asyncio task on the kernel's
own loop (no threads) and draws with the pure functions of ``workbench.notebook.render``.

It watches any ``MonitoredBatch`` (``workbench.notebook.protocol``): the few reads and actions it
needs of a batch, which ``workbench.client.Batch`` provides; the client imports this module, never
the reverse.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from workbench.core.status import Counts
from workbench.notebook.protocol import MonitoredBatch
from workbench.notebook.render import (
    COLORS,
    FAILURE_HEADERS,
    GROUP_COLUMNS,
    FailureGroup,
    FailureGroups,
    Snapshot,
    Throughput,
    batch_html,
    failure_cells,
    failure_header_cells,
    failures_title_html,
    group_failures,
    messages_html,
    status_html,
    summary_html,
    summary_text,
)

__all__ = ["BatchMonitor", "display_batch"]


def _ipython() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return None
    return get_ipython()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def display_batch(batch: MonitoredBatch) -> None:
    """A ``Batch`` as a cell's last expression: the live monitor in a kernel whose loop runs,
    else the static summary."""
    if getattr(_ipython(), "kernel", None) is not None and _running_loop() is not None:
        BatchMonitor(batch).show()
        return
    from IPython.display import display

    display({"text/plain": repr(batch), "text/html": batch_html(batch)}, raw=True)


# ------------------------------------------------------------------ the widget
class BatchMonitor:
    """Live ipywidgets monitor of one batch (``batch.widget()``).

    Refreshes about once a second from a task on the running loop until the batch settles, and
    again after a Retry re-queues items. Button callbacks schedule coroutines on that loop; their
    failures show in the widget's message line, and ``messages`` keeps every note and error.
    """

    def __init__(self, batch: MonitoredBatch, *, interval: float = 1.0, window_s: float = 10.0,
                 max_groups: int = 12) -> None:
        import ipywidgets as w

        self.batch, self.interval, self.max_groups = batch, interval, max_groups
        self.snapshot: Snapshot | None = None
        self.messages: list[tuple[str, str]] = []  # (level, text): never truncated
        self.retry_buttons: dict[str, Any] = {}  # error type -> its Retry button
        self._w, self._meter = w, Throughput(window_s)
        self._groups: tuple[FailureGroup, ...] = ()
        self._groups_key: tuple[Any, ...] | None = None
        self._failed_seen, self._failures_at, self._stale = -1, float("-inf"), True
        self._failed = FailureGroups()  # the failures read so far
        self._failures_mark: Any = None  # None: the next read takes every failure
        self._run_start: datetime | None = None  # None: since the batch was created
        self._saw_running = False
        self._final_elapsed: float | None = None  # frozen once the batch settles
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._actions: set[Any] = set()  # running button actions (strong refs)
        self._busy, self._cancel_armed_until = 0, 0.0
        self._handles: list[Any] = []  # display handles of this monitor's outputs
        self._shown_in: int | None = None
        self._version = self._sent = 0  # pictures drawn / sent from a cell end
        self._hooked = False

        self._status = w.HTML(status_html(self._placeholder()))
        self._fail_title = w.HTML()
        self._grid = w.GridBox(layout=w.Layout(
            grid_template_columns="max-content max-content minmax(0, 1fr) max-content",
            grid_gap="0 14px", align_items="center"))
        self._failbox = w.VBox([self._fail_title, self._grid], layout=w.Layout(display="none"))
        auto = w.Layout(width="auto")
        self.retry_all_button = w.Button(description="Retry all failed", icon="redo", layout=auto,
                                         tooltip="re-queue every failed item", disabled=True)
        self.cancel_button = w.Button(description="Cancel batch", icon="stop", layout=auto,
                                      tooltip="cancel every queued and running item")
        self.retry_all_button.on_click(self._handler(self.retry_all))
        self.cancel_button.on_click(self._handler(self.cancel))
        self._notes = w.HTML()
        self.widget = w.VBox(
            [self._status, self._failbox,
             w.HBox([self.retry_all_button, self.cancel_button], layout=w.Layout(margin="6px 0 0")),
             self._notes],
            layout=w.Layout(border=f"1px solid {COLORS['queued']}", padding="6px 12px",
                            max_width="980px"))

    # -------------------------------------------------------------- lifecycle
    def show(self) -> BatchMonitor:
        """Display and start refreshing; with no running loop (a script), one snapshot."""
        if _running_loop() is None:
            self._refresh_blocking()
            self._display_static()
            return self
        self._display()
        self._shown_in = getattr(_ipython(), "execution_count", None)
        self.start()
        return self

    def start(self) -> asyncio.Task[None]:
        """Start the refresh task on the running loop, unless it already runs."""
        if self._task is None or self._task.done():
            self._loop = self._loop or asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name=f"monitor {self.batch.id}")
        return self._task

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def running(self) -> bool:
        """Whether the refresh task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def errors(self) -> list[str]:
        return [text for level, text in self.messages if level == "error"]

    async def _run(self) -> None:
        failed_refreshes = 0
        while True:
            try:
                snap = await self.refresh()
                failed_refreshes = 0
            except Exception as exc:
                if self.batch.workbench.closed:
                    self._note("info", "monitor stopped: the Workbench was closed")
                    if self._adopt_final_counts():
                        self._update_displays()
                    return
                failed_refreshes += 1
                self._note("error", f"refresh failed: {type(exc).__name__}: {exc}")
                if failed_refreshes >= 3:
                    self._note("error", "monitor stopped after 3 failed refreshes")
                    return
                await asyncio.sleep(2 * self.interval)
                continue
            if snap.settled:
                self._update_displays()
                return
            await self._pause(snap.counts)

    async def _pause(self, seen: Mapping[str, int]) -> None:
        """Sleep ``interval``, or less when other code read newer counts of the batch: when
        ``await batch.wait()`` sees the end first, the monitor draws its final picture at once,
        not after the notebook has moved on (and perhaps closed the Workbench)."""
        deadline = time.monotonic() + self.interval
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, self.interval))
            if self.batch.last_counts not in (None, seen):  # Batch keeps what counts() read
                return

    # -------------------------------------------------------------- reading the ledger
    async def refresh(self) -> Snapshot:
        """Read the counts (and the failures when they changed) once, and redraw."""
        counts = await self.batch.counts()
        groups = await self._read_failures(counts) if self._failures_due(counts) else None
        last = None
        if self._needs_last_finished(counts):
            last = _last_finished(await self.batch.workbench.batches(), self.batch.id)
        paced = await self.batch.paced() if counts.active else (0, 0)
        return self._apply(counts, groups, last, paced)

    async def _read_failures(self, counts: Counts) -> tuple[FailureGroup, ...]:
        """The groups, reading only the failures that finished since the last read (rereading
        10,000 failures of a 1M-item batch at each tick was most of its CPU). Every failure is
        read at first, after a retry from here, and when the failures known disagree with the
        total the same read saw (a failure left the batch's failed items, or was committed
        later than the read's overlap). The total comes from the read's own snapshot: compared
        with ``counts()`` instead, failures committed in between made every tick of a batch
        failing steadily reread them all (~150 ms for 10,000)."""
        full = self._stale or self._failures_mark is None or counts["failed"] < len(self._failed)
        while True:
            mark, rows, total = await self.batch._failures_since(
                None if full else self._failures_mark)
            known = FailureGroups() if full else self._failed
            groups = known.update(rows)
            if full or len(known) == total:
                break
            full = True
        self._failed, self._failures_mark = known, mark
        return tuple(groups)

    def _refresh_blocking(self) -> Snapshot:
        sync = self.batch.workbench.sync  # the facade scripts use, with its own loop
        batch = sync.get_batch(self.batch.id)
        counts = Counts(batch.counts())
        # the columns groups need: a million-item batch's tracebacks stay in the ledger
        groups = tuple(group_failures(batch.failures(columns=GROUP_COLUMNS))) \
            if self._failures_due(counts) else None
        self._failures_mark = None  # the loop's reads start again from every failure
        last = _last_finished(sync.batches(), self.batch.id) \
            if self._needs_last_finished(counts) else None
        paced = tuple(batch.paced()) if counts.active else (0, 0)
        return self._apply(counts, groups, last, paced)

    def _failures_due(self, counts: Counts) -> bool:
        failed = counts["failed"]
        if not failed or (failed == self._failed_seen and not self._stale):
            return False
        # while items fly, reading every failure (with tracebacks) each second is wasteful
        return counts.is_settled or time.monotonic() - self._failures_at >= 2 * self.interval

    def _needs_last_finished(self, counts: Counts) -> bool:
        # only a batch that settled before the monitor saw it run needs the ledger's clock
        return counts.is_settled and self._final_elapsed is None and not self._saw_running

    def _apply(self, counts: Counts, groups: tuple[FailureGroup, ...] | None,
               last: datetime | None, paced: tuple[int, int] = (0, 0)) -> Snapshot:
        now = time.monotonic()
        self._meter.add(now, counts.settled)
        if groups is not None:
            self._groups = groups
            self._failed_seen, self._failures_at, self._stale = counts["failed"], now, False
        elif not counts["failed"]:
            self._groups, self._failed_seen = (), 0
            self._failed, self._failures_mark = FailureGroups(), None
        start = self._run_start or self.batch.created_at
        if counts.active:
            self._saw_running, self._final_elapsed = True, None
            elapsed = _age_s(start)
        else:
            if self._final_elapsed is None:
                self._final_elapsed = _age_s(start, last)
            elapsed = self._final_elapsed
        b = self.batch
        self.snapshot = Snapshot(b.id, b.name, b.pipeline, b.pipeline_version, Counts(counts),
                                 self._groups, elapsed, self._meter.rate(),
                                 self._meter.idle_for(now),
                                 "the retry" if self._run_start else "submission", paced)
        self._version += 1
        self._render()
        return self.snapshot

    def _adopt_final_counts(self) -> bool:
        """Take final counts that other code read (``await batch.wait()`` sees the end before
        the next poll; the Workbench may close before it) as the final picture. No I/O."""
        counts, snap = self.batch.last_counts, self.snapshot
        if not counts or counts.active or (snap and snap.counts == counts):
            return False
        if counts["failed"] != sum(g.count for g in self._groups):
            self._groups = ()  # which items failed is unknown: better no table than a wrong one
        self._apply(counts, None, None)
        return True

    def _placeholder(self) -> Snapshot:
        b = self.batch
        return Snapshot(b.id, b.name, b.pipeline, b.pipeline_version,
                        b.last_counts or Counts({"queued": b.total}))

    # -------------------------------------------------------------- actions (button callbacks)
    def retry_group(self, error_type: str) -> Any:
        """Re-queue the failed items of one error type; returns the scheduled task."""
        group = next((g for g in self._groups if g.error_type == error_type), None)
        if group is None:
            raise LookupError(f"no failures of type {error_type!r} in this monitor")
        ids = list(group.item_ids)
        return self._spawn(f"retry of {error_type}", lambda: self._retry(ids, error_type))

    def retry_all(self) -> Any:
        """Re-queue every failed item; returns the scheduled task."""
        return self._spawn("retry of all failed items", lambda: self._retry(None, "all failed"))

    def cancel(self, *, confirm: bool = False) -> Any:
        """Cancel what has not finished. The button asks for a second click within 5 s."""
        now = time.monotonic()
        if not confirm and now >= self._cancel_armed_until:
            self._cancel_armed_until = now + 5.0
            self._render_buttons()
            return None
        self._cancel_armed_until = 0.0
        return self._spawn("cancel", self._cancel_now)

    async def _retry(self, item_ids: list[int] | None, label: str) -> None:
        n = await self.batch.retry(item_ids)
        self._note("info", f"re-queued {n} item(s): {label}")
        if n:  # the batch runs again: fresh throughput and clock, and polling restarts
            self._meter.reset()
            self._run_start = datetime.now(UTC)
            self._stale, self._final_elapsed = True, None
            self.start()  # before any await: ``running`` from the moment the items are queued
            await self.refresh()
            self._update_displays()

    async def _cancel_now(self) -> None:
        self._note("info", f"cancelled {await self.batch.cancel()} item(s)")
        await self.refresh()

    def _handler(self, fn: Callable[[], Any]) -> Callable[[Any], None]:
        def on_click(_button: Any) -> None:
            try:
                fn()
            except Exception as exc:
                self._note("error", f"{type(exc).__name__}: {exc}")
        return on_click

    def _spawn(self, what: str, make: Callable[[], Coroutine[Any, Any, None]]) -> Any:
        async def run() -> None:
            self._busy += 1
            self._render_buttons()
            try:
                await make()
            except Exception as exc:
                self._note("error", f"{what} failed: {type(exc).__name__}: {exc}")
            finally:
                self._busy -= 1
                self._render_buttons()

        loop = self._loop or _running_loop()
        if loop is None:
            raise RuntimeError(f"{what}: no running event loop (the monitor needs Jupyter)")
        # callbacks run on the kernel's loop; from any other thread, hand over thread-safely
        fut: Any = (loop.create_task(run()) if _running_loop() is loop
                    else asyncio.run_coroutine_threadsafe(run(), loop))
        self._actions.add(fut)
        fut.add_done_callback(self._actions.discard)
        return fut

    def _note(self, level: str, text: str) -> None:
        self.messages.append((level, f"{datetime.now():%H:%M:%S} {text}"))
        self._notes.value = messages_html(self.messages)
        self._version += 1

    # -------------------------------------------------------------- drawing
    def _render(self) -> None:
        snap = self.snapshot
        assert snap is not None
        self._status.value = status_html(snap)
        shown = snap.groups[: self.max_groups]
        key = tuple((g.error_type, g.item_ids, g.sample_url, g.sample_message) for g in shown)
        if key != self._groups_key:  # rebuild rows only when they change: no flicker, no leaks
            self._groups_key = key
            self._rebuild_grid(shown)
        self._fail_title.value = failures_title_html(snap.groups, self.max_groups)
        self._failbox.layout.display = None if snap.groups else "none"
        self._render_buttons()

    def _rebuild_grid(self, groups: Sequence[FailureGroup]) -> None:
        w, old = self._w, self._grid.children
        cells: list[Any] = [w.HTML(c) for c in failure_header_cells((*FAILURE_HEADERS, ""))]
        self.retry_buttons = {}
        for g in groups:
            button = w.Button(description=f"Retry {g.count}", icon="redo", layout=w.Layout(
                width="auto"), tooltip=f"re-queue the {g.count} item(s) that failed with "
                f"{g.error_type}")
            button.on_click(self._handler(functools.partial(self.retry_group, g.error_type)))
            self.retry_buttons[g.error_type] = button
            cells += [*(w.HTML(c) for c in failure_cells(g)), button]
        self._grid.children = cells
        for child in old:  # free the front-end models of the old rows
            child.close()

    def _render_buttons(self) -> None:
        snap, busy = self.snapshot, self._busy > 0
        failed = snap.counts.get("failed", 0) if snap else 0
        self.retry_all_button.description = f"Retry all failed ({failed})" if failed else \
            "Retry all failed"
        self.retry_all_button.disabled = busy or not failed
        for button in self.retry_buttons.values():
            button.disabled = busy
        armed = time.monotonic() < self._cancel_armed_until
        self.cancel_button.description = (f"Click again to cancel {snap.active if snap else ''} "
                                          "item(s)" if armed else "Cancel batch")
        self.cancel_button.button_style = "danger" if armed else ""
        self.cancel_button.disabled = busy or (snap is not None and snap.settled)

    # -------------------------------------------------------------- displaying
    def _bundle(self) -> dict[str, Any]:
        data = self.widget._repr_mimebundle_()
        snap = self.snapshot or self._placeholder()
        # shown instead of the live widget by nbconvert, GitHub and untrusted notebooks
        data["text/html"] = summary_html(snap, self.messages)
        data["text/plain"] = summary_text(snap)
        return data

    def _display(self) -> None:
        from IPython.display import display

        self._loop = self._loop or _running_loop()
        self._handles.append(display(self._bundle(), raw=True, display_id=True))
        self._hook()

    def _display_static(self) -> None:
        snap = self.snapshot or self._placeholder()
        if _ipython() is None:
            print(summary_text(snap))
            return
        from IPython.display import display

        display({"text/plain": summary_text(snap), "text/html": summary_html(snap, self.messages)},
                raw=True)

    def _update_displays(self) -> None:
        """Put the current picture into every output of this monitor (a saved notebook keeps
        the last one); ``_after_cell`` sends it again where headless runners record it."""
        for handle in self._handles:
            handle.update(self._bundle(), raw=True)
        self._hook()

    def _hook(self) -> None:
        ip = _ipython()
        if ip is not None and self._handles and not self._hooked:
            ip.events.register("post_run_cell", self._after_cell)
            self._hooked = True

    def _after_cell(self, *_: Any) -> None:
        """After each cell: headless runners (nbclient, nbval) record only messages of the cell
        they run, never this monitor's own later updates, so changes are re-sent from here."""
        self._adopt_final_counts()
        if self._version != self._sent:
            self._sent = self._version
            for handle in self._handles:
                handle.update(self._bundle(), raw=True)
        if not self.running and self.snapshot is not None and self.snapshot.settled:
            _ipython().events.unregister("post_run_cell", self._after_cell)
            self._hooked = False

    def _ipython_display_(self) -> None:
        if self._shown_in is not None and self._shown_in == getattr(_ipython(), "execution_count",
                                                                    None):
            return  # show() displayed it in this very cell (``batch.widget()`` as the last line)
        if _running_loop() is None:
            self._display_static()
            return
        self._display()
        self.start()

    def __repr__(self) -> str:
        state = self.snapshot.state if self.snapshot else "not read yet"
        return f"<BatchMonitor {self.batch.id} {state}{', refreshing' if self.running else ''}>"


# ------------------------------------------------------------------ the batch's clock
def _age_s(start: Any, now: datetime | None = None) -> float | None:
    """Seconds from ``start`` (a ledger time) to ``now``; ``None`` when there is no start."""
    if not isinstance(start, datetime):
        return None
    if start.tzinfo is None:  # the ledger keeps UTC
        start = start.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - start).total_seconds()


def _last_finished(batches: Any, batch_id: str) -> datetime | None:
    """``last_finished_at`` of one batch in a ``wb.batches()`` frame."""
    rows = batches[batches["batch_id"] == batch_id]
    value = None if rows.empty else rows.iloc[0]["last_finished_at"]
    return None if value is None or value != value else value.to_pydatetime()
