"""``python -m workbench`` (also the ``workbench`` script): the command line (DESIGN.md §5, §8).

::

    submit FILE|- [--pipeline NAME] [--name NAME] [--params JSON] [--notify EMAIL] [--refresh]
                  [--skip-invalid] [--wait [--timeout S]]
    status [BATCH] [--json]
    results BATCH [--format csv|parquet|jsonl] [-o FILE]
    failures BATCH [--format table|csv|jsonl]
    retry BATCH | cancel BATCH
    cleanup [--json]
    serve [--host H] [--port P]
    demo

Output contract: ``submit`` prints the batch id alone on stdout (its only stdout line); progress,
logs and summaries go to stderr. Exit status 0 when the command did what was asked (a batch that
completed with failed items included), 2 for bad usage or bad input (an invalid URL file, an
unknown pipeline, bad JSON params, an unknown batch id, a malformed setting), 1 otherwise.
Errors are one line on stderr, never a traceback. Every command goes through the ``Workbench``
client; none reimplements submit, retry or cancel.

The ``demo`` command lives in ``workbench.cli.demo``, the export formats in ``workbench.client.export`` and
the text formatting in ``workbench.core.text``; the parser, exit codes and errors are here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from workbench.client.export import frame_records, iter_csv, iter_jsonl, jsonable, parquet_bytes
from workbench.core.text import clip, table, when, yes_no

if TYPE_CHECKING:
    from workbench.client.workbench import Workbench

PROG = "python -m workbench"
RESULT_FORMATS = ("csv", "parquet", "jsonl")


class CliError(Exception):
    """A clear, one-line error with its exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ============================================================================ plumbing
def _run(coro: Any) -> int:
    return asyncio.run(coro)


def _open_wb(**kw: Any) -> Workbench:
    from workbench.client.workbench import Workbench

    return Workbench(**kw)


async def _get_batch(wb: Workbench, batch_id: str) -> Any:
    return await wb.get_batch(batch_id)


async def _live_workers(wb: Workbench) -> int:
    from datetime import UTC, timedelta

    cutoff = datetime.now(UTC) - timedelta(seconds=wb.settings.heartbeat_timeout_s)
    workers = await wb.ledger.workers()
    return sum(1 for w in workers if w["stopped_at"] is None and w["heartbeat_at"] >= cutoff)


def _summary_lines(summary: Any, *, retry_hint: bool = True) -> list[str]:
    from workbench.notify.summary import format_duration

    c = summary.counts
    head = (
        f"batch {summary.batch_id} {summary.state}"
        + (f" in {format_duration(summary.duration_s)}" if summary.state == "completed" else "")
        + f": {summary.total} item(s) — done {c['done']}, failed {c['failed']}, "
        f"cancelled {c['cancelled']}"
        + (f", queued {c['queued']}, running {c['running']}" if summary.state == "running" else "")
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
            data = sys.stdin.buffer.read()
        else:
            data = Path(source).read_bytes()
    except FileNotFoundError:
        raise CliError(f"no such file: {source}", 2) from None
    except IsADirectoryError:
        raise CliError(f"{source} is a directory, not a file of URLs", 2) from None
    except OSError as exc:
        raise CliError(f"cannot read {label}: {exc.strerror or exc}", 2) from None
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
        s = line.strip()
        if s and not s.startswith("#"):
            lines.append((n, s))
    return lines, label


async def _submit(args: argparse.Namespace) -> int:
    from workbench.core.errors import InvalidURLError, WaitTimeout

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
    async with _open_wb() as wb:
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
            _err(f"skipped {len(batch.invalid)} invalid line(s): "
                 + _invalid_detail(batch.invalid, entries))
        if batch.cached:
            _err(f"{batch.cached} item(s) answered from earlier results "
                 "(--refresh analyses them again)")
        if not args.wait:
            _err(f"submitted {batch.total} item(s) as batch {batch.id}; "
                 f"follow it with: {PROG} status {batch.id}")
            return 0
        if not await _live_workers(wb):
            _err("no worker is running: start one (python -m workbench.worker) and this waits")
        try:
            await batch.wait(timeout=args.timeout, progress=not args.no_progress)
        except WaitTimeout:
            from workbench.notify.summary import summarize_batch

            for line in _summary_lines(await summarize_batch(wb.ledger, batch.id), retry_hint=False):
                _err(line)
            raise CliError(
                f"batch {batch.id} still running after {args.timeout:g}s; it goes on: "
                f"{PROG} status {batch.id}", 1
            ) from None
        from workbench.notify.summary import summarize_batch

        for line in _summary_lines(await summarize_batch(wb.ledger, batch.id)):
            _err(line)
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
async def _status(args: argparse.Namespace) -> int:
    from workbench.notify.summary import format_duration, summarize_batch

    async with _open_wb() as wb:
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
                    [("  " + g.error_type, g.count,
                      "-" if g.retryable is None else ("yes" if g.retryable else "no"),
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
        if df.empty:
            _err(f"no batches yet; submit one with: {PROG} submit urls.txt")
            return 0
        cols = ["batch_id", "name", "pipeline", "created_at", "total", "queued", "running",
                "done", "failed", "cancelled", "state"]
        print(table(
            [c.replace("_at", "") for c in cols],
            [[when(r[c]) if c == "created_at" else (clip(r[c], 30) if c == "name" else r[c])
              for c in cols] for r in df.to_dict("records")],
        ))
    return 0


# ============================================================================ results, failures
def _result_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.output:
        suffix = Path(args.output).suffix.lower().lstrip(".")
        if suffix in RESULT_FORMATS:
            return suffix
        if suffix in ("ndjson", "json"):
            return "jsonl"
        if suffix == "pq":
            return "parquet"
    return "csv"


def _write_text(chunks: Iterable[str], output: str | None) -> None:
    if output:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            for chunk in chunks:
                fh.write(chunk)
    else:
        out: IO[str] = sys.stdout
        for chunk in chunks:
            out.write(chunk)
        out.flush()


async def _results(args: argparse.Namespace) -> int:
    fmt = _result_format(args)
    if fmt == "parquet" and not args.output and sys.stdout.isatty():
        raise CliError("parquet is binary and stdout is a terminal: write it to a file with "
                       "-o FILE.parquet (or redirect stdout)", 2)
    async with _open_wb() as wb:
        batch = await _get_batch(wb, args.batch)
        df = await batch.results()
        counts = await batch.counts()
    if fmt == "parquet":
        data = parquet_bytes(df)
        if args.output:
            Path(args.output).write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
    else:
        _write_text(iter_jsonl(df) if fmt == "jsonl" else iter_csv(df), args.output)
    note = f"{len(df)} result(s) of batch {args.batch}"
    if counts["queued"] + counts["running"]:
        note += f" ({counts['queued'] + counts['running']} item(s) still queued or running)"
    if counts["failed"]:
        note += f"; {counts['failed']} failed: {PROG} failures {args.batch}"
    _err(note + (f"; written to {args.output}" if args.output else ""))
    return 0


async def _failures(args: argparse.Namespace) -> int:
    async with _open_wb() as wb:
        batch = await _get_batch(wb, args.batch)
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
        _err(f"batch {args.batch} has no failed items")
    else:
        by_type = Counter(df["error_type"])
        _err(f"{len(df)} failed item(s): "
             + ", ".join(f"{t} {n}" for t, n in by_type.most_common())
             + f"; retry them with: {PROG} retry {args.batch}")
    return 0


# ============================================================================ retry, cancel
async def _retry(args: argparse.Namespace) -> int:
    async with _open_wb() as wb:
        batch = await _get_batch(wb, args.batch)
        n = await batch.retry()
        print(f"requeued {n} failed item(s) of batch {batch.id}")
        if n and not await _live_workers(wb):
            _err("no worker is running: start one with python -m workbench.worker")
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    async with _open_wb() as wb:
        batch = await _get_batch(wb, args.batch)
        n = await batch.cancel()
        print(f"cancelled {n} item(s) of batch {batch.id}")
    return 0


# ============================================================================ cleanup
async def _cleanup(args: argparse.Namespace) -> int:
    from workbench.cleanup import run_cleanup
    from workbench.core.settings import load_settings

    report = await run_cleanup(load_settings())
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    if not report.ok:
        raise CliError("cleanup finished with errors (see above)", 1)
    return 0


# ============================================================================ serve
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from workbench.core.settings import load_settings

    settings = load_settings()
    from workbench.pipeline.registry import load_pipeline_modules

    load_pipeline_modules(settings.pipeline_modules)  # fail here (exit 2), not in the lifespan
    if not is_loopback(args.host) and not settings.api_token:
        raise CliError(
            f"refusing to serve on {args.host} without WORKBENCH_API_TOKEN: anyone who can reach "
            "it could make the workers fetch URLs. Set a token, or serve on --host 127.0.0.1", 2
        )
    try:
        import uvicorn

        from workbench.api.app import create_app
    except ImportError as exc:
        raise CliError(
            f"the HTTP API needs the 'api' extra ({exc.name} is missing): "
            "pip install 'workbench[api]'", 1
        ) from None
    auth = "bearer token required" if settings.api_token else "no token (loopback only)"
    _err(f"serving the Workbench API on http://{args.host}:{args.port} ({auth}); "
         "docs at /docs; Ctrl-C stops")
    uvicorn.run(create_app(), host=args.host, port=args.port,
                log_level="warning" if not args.verbose else "info", access_log=args.verbose)
    return 0


# ============================================================================ demo
async def _demo(args: argparse.Namespace) -> int:
    from workbench.cli.demo import run_demo  # on use: the sample site and an in-process worker

    return await run_demo(args)


# ============================================================================ parser
class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (exit 2)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"workbench: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log at info level")

    p = _Parser(
        prog=PROG,
        description="Workbench: batch analyses of web pages. Submit URLs, follow batches, "
        "export results. Workers run with: python -m workbench.worker",
        epilog="Settings come from WORKBENCH_* environment variables (see the README).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("submit", parents=[common], help="submit a file of URLs as a batch",
                       description="Submit one URL a line (blank lines and # comments are "
                       "ignored). Prints the batch id on stdout.")
    s.add_argument("file", metavar="FILE|-", help="file of URLs, or - for stdin")
    s.add_argument("--pipeline", default="article", help="pipeline name (default: article)")
    s.add_argument("--name", default=None, help="a name for the batch")
    s.add_argument("--params", default=None, metavar="JSON", help="pipeline params, a JSON object")
    s.add_argument("--notify", default=None, metavar="EMAIL",
                   help="email a summary when the batch completes (needs WORKBENCH_SMTP_URL "
                   "on the workers)")
    s.add_argument("--refresh", action="store_true",
                   help="analyse again even if earlier results exist")
    s.add_argument("--skip-invalid", action="store_true",
                   help="leave invalid lines out (reported on stderr) instead of failing")
    s.add_argument("--wait", action="store_true",
                   help="wait for the batch, with a progress bar on stderr and a summary")
    s.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                   help="with --wait: give up waiting after S seconds (exit 1)")
    s.add_argument("--no-progress", action="store_true", help="with --wait: no progress bar")
    s.set_defaults(handler=_submit)

    st = sub.add_parser("status", parents=[common], help="list batches, or show one batch")
    st.add_argument("batch", nargs="?", metavar="BATCH")
    st.add_argument("--top", type=int, default=5, help="error types to show (default 5)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=_status)

    r = sub.add_parser("results", parents=[common], help="export a batch's results")
    r.add_argument("batch", metavar="BATCH")
    r.add_argument("--format", choices=RESULT_FORMATS, default=None,
                   help="csv (default), jsonl or parquet; inferred from -o's suffix")
    r.add_argument("-o", "--output", default=None, metavar="FILE", help="write here, not stdout")
    r.set_defaults(handler=_results)

    f = sub.add_parser("failures", parents=[common], help="list a batch's failed items")
    f.add_argument("batch", metavar="BATCH")
    f.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
    f.set_defaults(handler=_failures)

    rt = sub.add_parser("retry", parents=[common], help="re-queue a batch's failed items")
    rt.add_argument("batch", metavar="BATCH")
    rt.set_defaults(handler=_retry)

    c = sub.add_parser("cancel", parents=[common], help="cancel what has not finished")
    c.add_argument("batch", metavar="BATCH")
    c.set_defaults(handler=_cancel)

    cl = sub.add_parser("cleanup", parents=[common],
                        help="delete old raw pages, sweep stale queue keys and worker records")
    cl.add_argument("--json", action="store_true", help="machine-readable report")
    cl.set_defaults(handler=_cleanup)

    sv = sub.add_parser("serve", parents=[common], help="serve the HTTP API (extra 'api')")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    sv.set_defaults(handler=_serve)

    d = sub.add_parser("demo", parents=[common],
                       help="serve the sample site, analyse it, print a summary")
    d.add_argument("--timeout", type=_seconds, default=120.0, metavar="S",
                   help="give up after S seconds (default 120)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(handler=_demo)
    return p


def _seconds(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not v >= 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return v


def _port(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {v}")
    return v


def _configure(verbose: bool) -> None:
    from workbench.core.logs import configure_logging

    level = "info" if verbose else os.environ.get("WORKBENCH_LOG_LEVEL", "warning")
    fmt = os.environ.get("WORKBENCH_LOG_FORMAT", "console")
    configure_logging(fmt if fmt in ("auto", "console", "json") else "console",
                      level if level in ("debug", "info", "warning", "error") else "warning")

    def one_line(message: Any, category: Any, *_a: Any, **_k: Any) -> None:
        _err(f"workbench: warning: {message}")

    warnings.showwarning = one_line


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    from workbench.core.errors import (
        BatchNotFoundError,
        InvalidInputError,
        SettingsError,
        WorkbenchError,
    )

    try:
        _configure(args.verbose)
        handler = args.handler
        if asyncio.iscoroutinefunction(handler):
            return _run(handler(args))
        return handler(args)
    except CliError as exc:
        _err(f"workbench: error: {exc}")
        return exc.code
    except (InvalidInputError, BatchNotFoundError, SettingsError) as exc:
        _err(f"workbench: error: {exc}")
        return 2
    except WorkbenchError as exc:
        _err(f"workbench: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _err("workbench: interrupted")
        return 130
    except BrokenPipeError:
        # the reader went away (| head): not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except Exception as exc:
        _err(f"workbench: error: unexpected {type(exc).__name__}: {clip(exc, 500)} "
             "(run with -v, or WORKBENCH_LOG_LEVEL=debug, for details)")
        if args.verbose:
            import traceback

            traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
