"""The batch commands of ``python -m workbench``: ``submit``, ``status``, ``results``,
``failures``, ``retry`` and ``cancel`` (DESIGN.md §5, §8).

Each goes through the ``Workbench`` client; none reimplements submit, retry or cancel. ``submit``
prints the batch id alone on stdout; progress, notes and summaries go to stderr. Counts and the
batch state come from ``workbench.core.status``, durations and cells from ``workbench.core.text``,
the export formats from ``workbench.client.export``.

``submit`` reads only a regular file (or stdin), at most ``SUBMIT_MAX_BYTES`` with lines of at
most ``SUBMIT_MAX_LINE_CHARS``: ``submit /dev/zero`` is an error, not 11 GB of memory.
``results -o FILE`` never overwrites without ``--force``, takes its format from a known suffix
(or ``--format``), and writes 0600 inside the data dir (``workbench.cli.common.open_output``).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from workbench.cli.common import PROG, CliError, check_output, err, open_output, open_workbench
from workbench.client.export import frame_records, iter_csv, iter_jsonl, jsonable
from workbench.core.status import ITEM_STATUSES, BatchState, Counts
from workbench.core.text import clip, format_duration, table, when, yes_no

if TYPE_CHECKING:
    from workbench.client.workbench import Workbench

RESULT_FORMATS = ("csv", "parquet", "jsonl")
#: what ``-o`` suffixes mean (anything else needs ``--format``)
OUTPUT_SUFFIXES = {"csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl",
                   "parquet": "parquet", "pq": "parquet"}
#: a file of URLs: 512 MiB (millions of URLs; split a larger one), lines of 64 KiB at most
SUBMIT_MAX_BYTES = 512 * 1024 * 1024
SUBMIT_MAX_LINE_CHARS = 64 * 1024


# ============================================================================ shared
async def live_workers(wb: Workbench) -> int:
    """Workers whose heartbeat is recent and that have not stopped."""
    from datetime import UTC, timedelta

    cutoff = datetime.now(UTC) - timedelta(seconds=wb.settings.heartbeat_timeout_s)
    workers = await wb.ledger.workers()
    return sum(1 for w in workers if w["stopped_at"] is None and w["heartbeat_at"] >= cutoff)


def summary_lines(summary: Any, *, retry_hint: bool = True) -> list[str]:
    """A batch summary (``workbench.notify.summary.BatchSummary``) as lines for stderr."""
    c = Counts(summary.counts)
    head = (
        f"batch {summary.batch_id} {summary.state}"
        + (f" in {format_duration(summary.duration_s)}"
           if summary.state == BatchState.COMPLETED else "")
        + f": {summary.total} item(s) — done {c['done']}, failed {c['failed']}, "
        f"cancelled {c['cancelled']}"
        + (f", queued {c['queued']}, running {c['running']}"
           if summary.state == BatchState.RUNNING else "")
    )
    lines = [head]
    if summary.top_errors:
        lines.append("failures by error type:")
        width = max(len(g.error_type) for g in summary.top_errors)
        for g in summary.top_errors:
            lines.append(f"  {g.error_type:<{width}}  {g.count:>5}  e.g. {g.sample_url}  "
                         f"({clip(g.sample_message, 80)})")
        if retry_hint:
            lines.append(f"see them:  {PROG} failures {summary.batch_id}")
            lines.append(f"retry:     {PROG} retry {summary.batch_id}")
    return lines


# ============================================================================ submit
def read_url_lines(source: str) -> tuple[list[tuple[int, str]], str]:
    """``(line number, url)`` of each URL line of FILE or ``-`` (stdin); blank lines and lines
    starting with ``#`` are skipped."""
    label = "stdin" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(SUBMIT_MAX_BYTES + 1)
        else:
            _check_regular(source, os.stat(source))  # before open: a FIFO's open would block
            with open(source, "rb") as fh:
                st = os.fstat(fh.fileno())
                _check_regular(source, st)
                if st.st_size > SUBMIT_MAX_BYTES:  # not read: its size says enough
                    raise CliError(_too_big(label), 2)
                data = fh.read(SUBMIT_MAX_BYTES + 1)
    except FileNotFoundError:
        raise CliError(f"no such file: {source}", 2) from None
    except IsADirectoryError:
        raise CliError(f"{source} is a directory, not a file of URLs", 2) from None
    except OSError as exc:
        raise CliError(f"cannot read {label}: {exc.strerror or exc}", 2) from None
    if len(data) > SUBMIT_MAX_BYTES:
        raise CliError(_too_big(label), 2)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{label} is not UTF-8 text (byte {exc.start}): expected one URL a line", 2
        ) from None
    if "\x00" in text:
        raise CliError(f"{label} looks binary: expected one URL a line", 2)
    lines = []
    for n, line in enumerate(text.splitlines(), start=1):
        if len(line) > SUBMIT_MAX_LINE_CHARS:
            raise CliError(f"line {n} of {label} is over {SUBMIT_MAX_LINE_CHARS} characters: "
                           "expected one URL a line", 2)
        s = line.strip()
        if s and not s.startswith("#"):
            lines.append((n, s))
    return lines, label


def _check_regular(source: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise CliError(f"{source} is {kind}: expected a file of URLs", 2)


def _too_big(label: str) -> str:
    return (f"{label} is over {SUBMIT_MAX_BYTES // 2**20} MiB: split it into several files of "
            "URLs (one batch each)")


async def run_submit(args: argparse.Namespace) -> int:
    """``submit FILE|-``: the batch id on stdout; with ``--wait``, a progress bar and a summary."""
    from workbench.core.errors import InvalidURLError, WaitTimeout
    from workbench.notify.summary import summarize_batch

    entries, label = read_url_lines(args.file)
    if not entries:
        raise CliError(f"no URLs in {label} (one URL a line; blank and # lines are ignored)", 2)
    params = None
    if args.params is not None:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as exc:
            raise CliError(f"--params is not valid JSON: {exc}", 2) from None
        if not isinstance(params, dict):
            raise CliError(f"--params must be a JSON object, got {type(params).__name__}", 2)
    async with open_workbench() as wb:
        try:
            batch = await wb.submit(
                [u for _, u in entries], pipeline=args.pipeline, params=params, name=args.name,
                refresh=args.refresh, notify=args.notify,
                on_invalid="skip" if args.skip_invalid else "raise",
            )
        except InvalidURLError as exc:
            raise CliError(_invalid_lines(exc.invalid, entries, label), 2) from None
        print(batch.id, flush=True)
        if batch.invalid:
            err(f"skipped {len(batch.invalid)} invalid line(s): "
                + _invalid_detail(batch.invalid, entries))
        if batch.cached:
            err(f"{batch.cached} item(s) answered from earlier results "
                "(--refresh analyses them again)")
        if not args.wait:
            err(f"submitted {batch.total} item(s) as batch {batch.id}; "
                f"follow it with: {PROG} status {batch.id}")
            return 0
        if not await live_workers(wb):
            err("no worker is running: start one (python -m workbench.worker) and this waits")
        try:
            await batch.wait(timeout=args.timeout, progress=not args.no_progress)
        except WaitTimeout:
            for line in summary_lines(await summarize_batch(wb.ledger, batch.id),
                                      retry_hint=False):
                err(line)
            raise CliError(
                f"batch {batch.id} still running after {args.timeout:g}s; it goes on: "
                f"{PROG} status {batch.id}", 1
            ) from None
        for line in summary_lines(await summarize_batch(wb.ledger, batch.id)):
            err(line)
    return 0


def _invalid_detail(invalid: Sequence[tuple[int, object, str]],
                    entries: Sequence[tuple[int, str]]) -> str:
    shown = "; ".join(f"line {entries[pos][0]} {entry!r}: {reason}"
                      for pos, entry, reason in invalid[:10])
    return shown + (f" (and {len(invalid) - 10} more)" if len(invalid) > 10 else "")


def _invalid_lines(invalid: Sequence[tuple[int, object, str]],
                   entries: Sequence[tuple[int, str]], label: str) -> str:
    return (f"{len(invalid)} invalid URL(s) in {label}: {_invalid_detail(invalid, entries)} "
            "(fix them, or pass --skip-invalid)")


# ============================================================================ status
async def run_status(args: argparse.Namespace) -> int:
    """``status [BATCH]``: every batch as a table, or one batch with its top error types."""
    from workbench.notify.summary import summarize_batch

    async with open_workbench() as wb:
        if args.batch:
            await wb.get_batch(args.batch)  # opens the ledger; an unknown id exits 2
            s = await summarize_batch(wb.ledger, args.batch, top=args.top)
            if args.json:
                print(json.dumps(jsonable({
                    "batch_id": s.batch_id, "name": s.name, "pipeline": s.pipeline,
                    "pipeline_version": s.pipeline_version, "created_at": s.created_at,
                    "state": s.state, "total": s.total, "counts": s.counts,
                    "duration_s": s.duration_s,
                    "top_errors": [vars(g) for g in s.top_errors],
                }), indent=2))
                return 0
            c = s.counts
            rows = [
                ("batch", s.batch_id),
                ("name", s.name or "-"),
                ("pipeline", f"{s.pipeline} v{s.pipeline_version}"),
                ("created", when(s.created_at) + " UTC"),
                ("state", s.state),
                ("items", f"{s.total}: " + ", ".join(f"{k} {v}" for k, v in c.items())),
                ("duration", format_duration(s.duration_s)),
            ]
            print("\n".join(f"{k:<9} {v}" for k, v in rows))
            if s.top_errors:
                print("top errors:")
                print(table(
                    ["  error_type", "count", "retryable", "sample url", "message"],
                    [("  " + g.error_type, g.count, yes_no(g.retryable),
                      g.sample_url, clip(g.sample_message, 70)) for g in s.top_errors],
                ))
                rest = c["failed"] - sum(g.count for g in s.top_errors)
                if rest:
                    print(f"  … and {rest} more failed item(s) of other types: "
                          f"{PROG} failures {s.batch_id}")
            return 0
        df = await wb.batches()
        if args.json:
            print(json.dumps(list(frame_records(df)), indent=2))
            return 0
        err(await queue_server(wb))
        if df.empty:
            err(f"no batches yet; submit one with: {PROG} submit urls.txt")
            return 0
        cols = ["batch_id", "name", "pipeline", "created_at", "total", *ITEM_STATUSES, "state"]
        print(table(
            [c.replace("_at", "") for c in cols],
            [[when(r[c]) if c == "created_at" else (clip(r[c], 30) if c == "name" else r[c])
              for c in cols] for r in df.to_dict("records")],
        ))
    return 0


async def queue_server(wb: Workbench) -> str:
    """``queue: ...``: the Redis in use; for the embedded one, which server and version."""
    import asyncio

    from workbench.queue.embedded import EmbeddedRedis

    s = wb.settings
    if not s.uses_embedded_redis:
        return f"queue: Redis at {s.describe()['redis_url']}"
    server = EmbeddedRedis(s.embedded_redis_dir, server=s.redis_server)
    return f"queue: embedded server, {await asyncio.to_thread(server.describe)}"


# ============================================================================ results, failures
def _result_format(args: argparse.Namespace) -> str:
    """The format: ``--format``, else ``-o``'s suffix (an unknown one is refused), else csv."""
    if not args.output:
        return str(args.format or "csv")
    suffix = Path(args.output).suffix.lower().lstrip(".")
    implied = OUTPUT_SUFFIXES.get(suffix)
    if args.format:
        if implied and implied != args.format:
            raise CliError(f"-o {args.output} looks like {implied}, not --format {args.format}: "
                           "make the name and the format agree", 2)
        return str(args.format)
    if implied is None:
        raise CliError(f"cannot tell the format of {args.output!r} from its name: use a .csv, "
                       ".jsonl or .parquet name, or --format csv|jsonl|parquet", 2)
    return implied


def _write_text(chunks: Iterable[str], output: str | None, *, force: bool = False,
                data_dir: Path | None = None) -> None:
    if output:
        with open_output(output, force=force, data_dir=data_dir) as fh:
            for chunk in chunks:
                fh.write(chunk.encode("utf-8"))
    else:
        out: IO[str] = sys.stdout
        for chunk in chunks:
            out.write(chunk)
        out.flush()


async def _write_text_stream(pieces: AsyncIterator[str], output: str | None, *,
                             force: bool = False, data_dir: Path | None = None) -> None:
    if output:
        with open_output(output, force=force, data_dir=data_dir) as fh:
            async for piece in pieces:
                fh.write(piece.encode("utf-8"))
    else:
        out: IO[str] = sys.stdout
        async for piece in pieces:
            out.write(piece)
        out.flush()


def _columns(value: str | None) -> list[str] | None:
    """``--columns a,b`` as a list of names (None: every field)."""
    if value is None:
        return None
    names = [c.strip() for c in value.split(",") if c.strip()]
    if not names:
        raise CliError("--columns needs field names, comma-separated (e.g. --columns title,"
                       "word_count)", 2)
    return names


async def run_results(args: argparse.Namespace) -> int:
    """``results BATCH``: the done items' results as CSV, JSONL or Parquet, to stdout or -o,
    streamed: the batch is read a chunk at a time while the file is written (memory follows
    the chunk, not the batch); ``--columns`` reads only those fields of the results."""
    from workbench.core.errors import InvalidInputError

    force = bool(getattr(args, "force", False))
    if args.output:
        check_output(args.output, force=force)  # before reading a batch, not after
    fmt = _result_format(args)
    columns = _columns(getattr(args, "columns", None))
    if fmt == "parquet" and not args.output and sys.stdout.isatty():
        raise CliError("parquet is binary and stdout is a terminal: write it to a file with "
                       "-o FILE.parquet (or redirect stdout)", 2)
    async with open_workbench() as wb:
        batch = await wb.get_batch(args.batch)
        data_dir = wb.settings.resolved_data_dir
        try:
            if fmt == "parquet" and args.output:
                with open_output(args.output, force=force, data_dir=data_dir) as fh:
                    rows: int | None = await batch.to_parquet(fh, columns)
            elif fmt == "parquet":
                rows = await batch.to_parquet(sys.stdout.buffer, columns)
                sys.stdout.buffer.flush()
            else:
                rows = None
                await _write_text_stream(batch.export_text(fmt, columns), args.output,
                                         force=force, data_dir=data_dir)
        except InvalidInputError as exc:
            raise CliError(str(exc), 2) from None
        counts = Counts(await batch.counts())
    note = f"{counts['done'] if rows is None else rows} result(s) of batch {args.batch}"
    if counts.active:
        note += f" ({counts.active} item(s) still queued or running)"
    if counts["failed"]:
        note += f"; {counts['failed']} failed: {PROG} failures {args.batch}"
    err(note + (f"; written to {args.output}" if args.output else ""))
    return 0


async def run_failures(args: argparse.Namespace) -> int:
    """``failures BATCH``: the failed items as a table (or CSV, JSONL); counts by type on stderr."""
    async with open_workbench() as wb:
        batch = await wb.get_batch(args.batch)
        df = await batch.failures()
    if args.format == "jsonl":
        _write_text(iter_jsonl(df.drop(columns=["traceback"])), None)
    elif args.format == "csv":
        _write_text(iter_csv(df.drop(columns=["traceback"])), None)
    elif not df.empty:
        print(table(
            ["item", "error_type", "retryable", "attempts", "url", "message"],
            [(r["item_id"], r["error_type"], yes_no(r["retryable"]), r["attempts"], r["url"],
              clip(r["error_message"], 70)) for r in df.to_dict("records")],
        ))
    if df.empty:
        err(f"batch {args.batch} has no failed items")
    else:
        by_type = Counter(df["error_type"])
        err(f"{len(df)} failed item(s): "
            + ", ".join(f"{t} {n}" for t, n in by_type.most_common())
            + f"; retry them with: {PROG} retry {args.batch}")
    return 0


# ============================================================================ retry, cancel
async def run_retry(args: argparse.Namespace) -> int:
    """``retry BATCH``: re-queue the failed items."""
    async with open_workbench() as wb:
        batch = await wb.get_batch(args.batch)
        n = await batch.retry()
        print(f"requeued {n} failed item(s) of batch {batch.id}")
        if n and not await live_workers(wb):
            err("no worker is running: start one with python -m workbench.worker")
    return 0


async def run_cancel(args: argparse.Namespace) -> int:
    """``cancel BATCH``: cancel what has not finished."""
    async with open_workbench() as wb:
        batch = await wb.get_batch(args.batch)
        n = await batch.cancel()
        print(f"cancelled {n} item(s) of batch {batch.id}")
    return 0
