"""Pure formatting for the batch monitor: throughput and ETA math, failure grouping, and the
HTML and text pictures of a batch. No I/O and no widgets, so it is unit tested without a kernel;
``workbench.notebook.monitor`` draws with it. Counts, states and durations come from
``workbench.core`` (``Counts``, ``format_duration``): the monitor says what the CLI and email say.
"""

from __future__ import annotations

import html
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workbench.core.status import ITEM_STATUSES, Counts
from workbench.core.text import clip, format_duration
from workbench.notebook.protocol import BatchView

COLORS = {"queued": "#cfd8dc", "running": "#42a5f5", "done": "#43a047", "failed": "#e53935",
          "cancelled": "#8d6e63"}
MUTED = "var(--jp-ui-font-color2, #616161)"  # secondary text, in JupyterLab's theme colours
_LINK = "var(--jp-content-link-color, #1565c0)"
_BOX = ("font-family:var(--jp-ui-font-family, system-ui, sans-serif);font-size:13px;"
        "line-height:1.45;color:var(--jp-ui-font-color1, #212121)")


# ------------------------------------------------------------------ pure: numbers
def duration(seconds: float | None) -> str:
    """``core.text.format_duration`` (the one format users see), ``—`` when unknown."""
    return format_duration(seconds, missing="—")


def format_rate(per_s: float | None) -> str:
    """Items per second, or per minute when slower than one a second."""
    if per_s is None:
        return "—"
    if per_s >= 10:
        return f"{per_s:.0f} items/s"
    return f"{per_s:.1f} items/s" if per_s >= 1 or per_s == 0 else f"{per_s * 60:.1f} items/min"


class Throughput:
    """Finished items per second over a sliding window of ``(time, finished)`` samples."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()
        self._last_progress: float | None = None

    def add(self, t: float, finished: int) -> None:
        if self._samples and finished < self._samples[-1][1]:
            self._samples.clear()  # a retry moved items back to queued: old samples mislead
        if not self._samples or finished > self._samples[-1][1]:
            self._last_progress = t
        self._samples.append((t, finished))
        # keep one sample at or before the window's start, so the span covers the whole window
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Items per second; ``None`` until two samples half a second apart exist."""
        if len(self._samples) < 2:
            return None
        (t0, f0), (t1, f1) = self._samples[0], self._samples[-1]
        return (f1 - f0) / (t1 - t0) if t1 - t0 >= 0.5 else None

    def idle_for(self, t: float) -> float:
        """Seconds since the finished count last grew (0 before any sample)."""
        return 0.0 if self._last_progress is None else t - self._last_progress

    def reset(self) -> None:
        self._samples.clear()
        self._last_progress = None


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds until ``remaining`` items finish at ``rate``: 0 when none remain, ``None`` when
    the rate is unknown or zero."""
    if remaining <= 0:
        return 0.0
    return remaining / rate if rate else None


# ------------------------------------------------------------------ pure: failures, snapshot
@dataclass(frozen=True)
class FailureGroup:
    error_type: str
    item_ids: tuple[int, ...]
    sample_url: str
    sample_message: str

    @property
    def count(self) -> int:
        return len(self.item_ids)


#: the columns of ``batch.failures()`` that ``group_failures`` needs (no tracebacks)
GROUP_COLUMNS = ("url", "error_type", "error_message")


def group_failures(rows: Any) -> list[FailureGroup]:
    """Failed items (a ``batch.failures()`` DataFrame, or dicts with ``item_id``, ``url``,
    ``error_type``, ``error_message``) by error type, largest group first. A frame is read
    column by column: 10,000 failures of a 1M-item batch group in a few ms."""
    if hasattr(rows, "columns"):
        records: Any = zip(rows["item_id"].tolist(), rows["url"].tolist(),
                           rows["error_type"].tolist(), rows["error_message"].tolist(),
                           strict=True)
    else:
        records = ((r["item_id"], r["url"], r.get("error_type"), r.get("error_message"))
                   for r in rows)
    groups: dict[str, list[tuple[int, Any, Any]]] = {}
    for item_id, url, error_type, message in sorted(records, key=lambda r: int(r[0])):
        groups.setdefault(_text(error_type) or "unknown", []).append((int(item_id), url, message))
    out = [FailureGroup(kind, tuple(r[0] for r in rs), str(rs[0][1]), _text(rs[0][2]))
           for kind, rs in groups.items()]
    return sorted(out, key=lambda g: (-g.count, g.error_type))


class FailureGroups:
    """``group_failures`` kept up to date by ``update``: reading 50 new failures of a batch
    that has 10,000 regroups only the error types they touch (regrouping every failure at each
    refresh of the monitor took ~15 ms of CPU at 10,000)."""

    def __init__(self) -> None:
        self._kind: dict[int, str] = {}  # item -> its error type
        self._members: dict[str, dict[int, tuple[Any, Any]]] = {}  # type -> item -> url, message
        self._groups: dict[str, FailureGroup] = {}

    def __len__(self) -> int:
        """How many failed items."""
        return len(self._kind)

    def update(self, records: Iterable[tuple[Any, ...]]) -> list[FailureGroup]:
        """Add or replace ``(item_id, url, error_type, error_message)`` records; the groups."""
        touched: set[str] = set()
        for item_id, url, error_type, message in records:
            item, kind = int(item_id), _text(error_type) or "unknown"
            old = self._kind.get(item)
            if old is not None and old != kind:
                del self._members[old][item]
                touched.add(old)
            self._kind[item] = kind
            self._members.setdefault(kind, {})[item] = (url, message)
            touched.add(kind)
        for kind in touched:
            members = self._members[kind]
            if not members:
                del self._members[kind]
                self._groups.pop(kind, None)
                continue
            ids = tuple(sorted(members))
            url, message = members[ids[0]]
            self._groups[kind] = FailureGroup(kind, ids, str(url), _text(message))
        return sorted(self._groups.values(), key=lambda g: (-g.count, g.error_type))


def _text(value: Any) -> str:
    # a DataFrame gives NaN, a dict None, for a missing error type or message
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Snapshot:
    """What a monitor knows at one moment."""

    batch_id: str
    name: str | None
    pipeline: str
    version: str
    counts: Counts  # a plain mapping is taken too, and made a ``Counts``
    groups: tuple[FailureGroup, ...] = ()
    elapsed_s: float | None = None
    rate: float | None = None
    idle_s: float = 0.0
    since: str = ""  # what the clock counts from when not the batch's creation
    paced: tuple[int, int] = (0, 0)  # (items, hosts) waiting for their paced hosts' turn

    def __post_init__(self) -> None:
        if not isinstance(self.counts, Counts):
            object.__setattr__(self, "counts", Counts(self.counts))

    total = property(lambda self: self.counts.total)
    finished = property(lambda self: self.counts.settled)
    active = property(lambda self: self.counts.active)
    settled = property(lambda self: self.counts.is_settled)
    state = property(lambda self: self.counts.state)
    eta_s = property(lambda self: eta_seconds(self.active, self.rate))


# ------------------------------------------------------------------ pure: HTML and text
def _esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def div_html(body: str, style: str = "") -> str:
    """``body`` in a ``<div>`` with the monitor's font, size and colour (plus ``style``)."""
    return f"<div style='{_BOX};{style}'>{body}</div>"


def progress_bar_html(counts: Mapping[str, int]) -> str:
    """One bar, one coloured segment per status, finished ones first."""
    total = sum(counts.values()) or 1
    segs = "".join(f"<div title='{s}: {counts[s]}' style='width:{100 * counts[s] / total:.3f}%;"
                   f"background:{COLORS[s]}'></div>"
                   for s in ("done", "failed", "cancelled", "running") if counts.get(s))
    return (f"<div style='display:flex;height:14px;border-radius:7px;overflow:hidden;"
            f"background:{COLORS['queued']};margin:6px 0'>{segs}</div>")


def counts_html(counts: Mapping[str, int]) -> str:
    """A chip per status, all five always present (empty ones faded)."""
    return "".join(
        f"<span style='display:inline-block;margin:0 6px 2px 0;padding:0 9px;border-radius:10px;"
        f"border:1px solid {COLORS[s]};{'' if counts.get(s) else 'opacity:.45'}'>"
        f"<span style='color:{COLORS[s]}'>●</span> {s} <b>{counts.get(s, 0)}</b></span>"
        for s in ITEM_STATUSES)


def status_html(snap: Snapshot) -> str:
    """Title, progress bar, counts and the timing line."""
    pct = 100 * snap.finished / snap.total if snap.total else 100.0
    badge = COLORS["done" if snap.settled else "running"]
    since = snap.since and (snap.settled or snap.since != "submission")
    timing = [f"{'took' if snap.settled else 'elapsed'} <b>{duration(snap.elapsed_s)}</b>"
              + (f" since {_esc(snap.since)}" if since else "")]
    if not snap.settled:
        rate = f"throughput <b>{format_rate(snap.rate)}</b>"
        timing += [rate + (" over the last 10 s" if snap.rate is not None else ""),
                   f"ETA <b>{duration(snap.eta_s)}</b>"]
        if snap.paced[0]:  # why a batch is slow: its hosts ask for time between requests
            items, hosts = snap.paced
            timing.append(f"<span title='per host: await wb.hosts()'><b>{items}</b> item"
                          f"{'s' * (items != 1)} waiting on <b>{hosts}</b> paced host"
                          f"{'s' * (hosts != 1)}</span>")
        elif not snap.counts.get("running") and snap.idle_s >= 30:
            timing.append("<span style='color:#ef6c00'>nothing finished for a while: items wait "
                          "for a retry delay, or no worker runs (<code>await wb.start_worker()"
                          "</code> or <code>python -m workbench.worker</code>)</span>")
    return div_html(
        f"<div>{'<b>' + _esc(snap.name) + '</b> ' if snap.name else ''}"
        f"<code>{_esc(snap.batch_id)}</code> <span style='color:{MUTED}'>· {_esc(snap.pipeline)}"
        f" v{_esc(snap.version)}</span> <span style='background:{badge};color:white;"
        f"border-radius:4px;padding:0 6px;font-size:11px'>{snap.state}</span></div>"
        f"{progress_bar_html(snap.counts)}<div style='margin-bottom:3px'><b>{snap.finished}</b> "
        f"of <b>{snap.total}</b> finished ({pct:.0f}%)</div><div>{counts_html(snap.counts)}</div>"
        f"<div style='color:{MUTED}'>{' · '.join(timing)}</div>")


FAILURE_HEADERS = ("error type", "items", "sample URL and message")


def failure_header_cells(headers: Sequence[str] = FAILURE_HEADERS) -> list[str]:
    """The column heads of a failure table, as HTML (muted)."""
    return [div_html(f"<span style='color:{MUTED}'>{h}</span>") for h in headers]


def failure_cells(g: FailureGroup) -> tuple[str, str, str]:
    """(error type, count, sample URL and message) of one failure group, as HTML."""
    return (
        div_html(f"<code style='color:{COLORS['failed']}'>{_esc(g.error_type)}</code>"),
        div_html(f"<b>{g.count}</b>"),
        div_html(f"<a href='{_esc(g.sample_url)}' target='_blank' style='color:{_LINK}' "
                 f"title='{_esc(g.sample_url)}'>{_esc(clip(g.sample_url, 80))}</a><br>"
                 f"<span style='color:{MUTED}' title='{_esc(g.sample_message)}'>"
                 f"{_esc(clip(g.sample_message, 150))}</span>",
                 "min-width:0;overflow-wrap:anywhere"),
    )


def failures_title_html(groups: Sequence[FailureGroup], limit: int) -> str:
    rest = groups[limit:]
    more = (f" <span style='color:{MUTED}'>(top {limit} shown; {len(rest)} more types, "
            f"{sum(g.count for g in rest)} items)</span>" if rest else "")
    return div_html(f"<b>Failures by error type</b>{more}", "margin-top:8px")


def failures_html(groups: Sequence[FailureGroup], limit: int = 12) -> str:
    """The failure groups as a static table (the saved picture of the Retry grid)."""
    if not groups:
        return ""
    td = "<td style='padding:2px 12px 2px 0;vertical-align:top;text-align:left'>"
    head = "".join(f"{td}<span style='color:{MUTED}'>{h}</span></td>"
                   for h in FAILURE_HEADERS)
    rows = "".join("<tr>" + "".join(f"{td}{c}</td>" for c in failure_cells(g)) + "</tr>"
                   for g in groups[:limit])
    return (failures_title_html(groups, limit)
            + f"<table style='border-collapse:collapse;font-size:13px'>{head}{rows}</table>")


def messages_html(messages: Sequence[tuple[str, str]], limit: int = 4) -> str:
    """The latest notes and errors of button actions, errors in red."""
    if not messages:
        return ""
    more = f"<div style='color:{MUTED}'>({len(messages) - limit} earlier)</div>" \
        if len(messages) > limit else ""
    lines = "".join(f"<div style='color:{COLORS['failed'] if level == 'error' else MUTED}'>"
                    f"{'⚠ ' if level == 'error' else ''}{_esc(text)}</div>"
                    for level, text in messages[-limit:])
    return div_html(more + lines, "margin-top:4px")


def summary_html(snap: Snapshot, messages: Sequence[tuple[str, str]] = ()) -> str:
    """The whole monitor as static HTML: what nbconvert and saved notebooks show."""
    return (f"<div style='border:1px solid {COLORS['queued']};border-radius:6px;"
            f"padding:8px 12px;max-width:960px'>{status_html(snap)}{failures_html(snap.groups)}"
            f"{messages_html(messages)}</div>")


def summary_text(snap: Snapshot) -> str:
    """Plain text for terminals and ``text/plain``."""
    counts = " ".join(f"{s}={snap.counts.get(s, 0)}" for s in ITEM_STATUSES)
    return "\n".join(
        [f"Batch {snap.batch_id}{' ' + repr(snap.name) if snap.name else ''} ({snap.pipeline} "
         f"v{snap.version}): {snap.state}, {snap.finished}/{snap.total} finished, {counts}, "
         f"{'took' if snap.settled else 'elapsed'} {duration(snap.elapsed_s)}"
         f"{' since ' + snap.since if snap.since else ''}"]
        + ([f"  {snap.paced[0]} item(s) waiting on {snap.paced[1]} paced host(s)"]
           if snap.paced[0] and not snap.settled else [])
        + [f"  {g.error_type}: {g.count}, e.g. {g.sample_url}" for g in snap.groups])


def batch_html(batch: BatchView) -> str:
    """``Batch._repr_html_``: identity and the counts last read (a repr does no I/O)."""
    counts = batch.last_counts
    head = (f"<b>Batch</b> {'<b>' + _esc(batch.name) + '</b> ' if batch.name else ''}"
            f"<code>{_esc(batch.id)}</code> <span style='color:{MUTED}'>· {_esc(batch.pipeline)}"
            f" v{_esc(batch.pipeline_version)} · {batch.total} items")
    if counts is None:
        return div_html(f"{head} · counts not read yet: <code>await batch.counts()</code>, or "
                        "<code>batch.widget()</code> for a live monitor</span>")
    state = Counts(counts).state
    return div_html(f"{head} · {state}</span>{progress_bar_html(counts)}{counts_html(counts)}")

