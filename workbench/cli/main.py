"""``python -m workbench`` (also the ``workbench`` script): the command line (DESIGN.md §5, §8).

::

    submit FILE|- [--pipeline NAME] [--name NAME] [--params JSON] [--notify EMAIL] [--refresh]
                  [--skip-invalid] [--wait [--timeout S]]
    submit --input TABLE [--url-column COL] | --sitemap URL | --feed URL | --warc FILE... [...]
    warc BATCH -o FILE [--force]
    status [BATCH] [--json]
    results BATCH [--format csv|parquet|jsonl] [-o FILE [--force]] [--columns A,B]
    failures BATCH [--format table|csv|jsonl]
    retry BATCH | cancel BATCH
    hosts [--json]
    cleanup [--json]
    serve [--host H] [--port P]
    demo

Output contract: ``submit`` prints the batch id alone on stdout (its only stdout line); progress,
logs and summaries go to stderr. Exit status 0 when the command did what was asked (a batch that
completed with failed items included), 2 for bad usage or bad input (an invalid URL file, an
unknown pipeline, bad JSON params, an unknown batch id, a malformed setting), 1 otherwise.
Errors are one line on stderr, never a traceback. Every command goes through the ``Workbench``
client; none reimplements submit, retry or cancel.

The parser, the exit codes and the last-resort error handling are here; the commands are in
``workbench.cli.batches`` (submit, status, results, failures, retry, cancel),
``workbench.cli.inputs`` (submit's other inputs, warc), ``workbench.cli.hosts``,
``workbench.cli.serve``, ``workbench.cli.cleanup`` and ``workbench.cli.demo``, what they share
(``CliError``, stderr, opening the ``Workbench``) in ``workbench.cli.common``. The export formats
are ``workbench.client.export``'s and the text formatting ``workbench.core.text``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from workbench.cli.batches import (
    RESULT_FORMATS,
    run_cancel,
    run_failures,
    run_results,
    run_retry,
    run_status,
)
from workbench.cli.cleanup import run_cleanup
from workbench.cli.common import PROG, CliError, err
from workbench.cli.demo import run_demo
from workbench.cli.hosts import run_hosts
from workbench.cli.inputs import add_input_options, add_warc_command, run_submit_any
from workbench.cli.serve import run_serve
from workbench.core.text import clip


# ============================================================================ parser
class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"workbench: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
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
    s.add_argument("file", metavar="FILE|-", nargs="?", default=None,
                   help="file of URLs, or - for stdin (or one of the other inputs below)")
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
    add_input_options(s)
    s.set_defaults(handler=run_submit_any)

    add_warc_command(sub, common)

    st = sub.add_parser("status", parents=[common], help="list batches, or show one batch")
    st.add_argument("batch", nargs="?", metavar="BATCH")
    st.add_argument("--top", type=int, default=5, help="error types to show (default 5)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=run_status)

    r = sub.add_parser("results", parents=[common], help="export a batch's results")
    r.add_argument("batch", metavar="BATCH")
    r.add_argument("--format", choices=RESULT_FORMATS, default=None,
                   help="csv (default), jsonl or parquet; inferred from -o's suffix")
    r.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write here, not stdout (.csv, .jsonl or .parquet)")
    r.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    r.add_argument("--columns", default=None, metavar="A,B",
                   help="only these fields of the results, comma-separated (item_id, url and "
                        "provenance come always)")
    r.set_defaults(handler=run_results)

    f = sub.add_parser("failures", parents=[common], help="list a batch's failed items")
    f.add_argument("batch", metavar="BATCH")
    f.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
    f.set_defaults(handler=run_failures)

    rt = sub.add_parser("retry", parents=[common], help="re-queue a batch's failed items")
    rt.add_argument("batch", metavar="BATCH")
    rt.set_defaults(handler=run_retry)

    c = sub.add_parser("cancel", parents=[common], help="cancel what has not finished")
    c.add_argument("batch", metavar="BATCH")
    c.set_defaults(handler=run_cancel)

    h = sub.add_parser("hosts", parents=[common],
                       help="per-host politeness: requests, errors, delay, robots.txt, pauses")
    h.add_argument("--json", action="store_true", help="one JSON object per host and line")
    h.set_defaults(handler=run_hosts)

    cl = sub.add_parser("cleanup", parents=[common],
                        help="delete old raw pages, sweep stale queue keys and worker records")
    cl.add_argument("--json", action="store_true", help="machine-readable report")
    cl.set_defaults(handler=run_cleanup)

    sv = sub.add_parser("serve", parents=[common], help="serve the HTTP API (extra 'api')")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    sv.set_defaults(handler=run_serve)

    d = sub.add_parser("demo", parents=[common],
                       help="serve the sample site, analyse it, print a summary")
    d.add_argument("--timeout", type=_seconds, default=120.0, metavar="S",
                   help="give up after S seconds (default 120)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(handler=run_demo)
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
        err(f"workbench: warning: {message}")

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
            from workbench.core import loops
            from workbench.core.settings import load_settings

            return int(loops.run(handler(args), load_settings().event_loop))
        return handler(args)
    except CliError as exc:
        err(f"workbench: error: {exc}")
        return exc.code
    except (InvalidInputError, BatchNotFoundError, SettingsError) as exc:
        err(f"workbench: error: {exc}")
        return 2
    except WorkbenchError as exc:
        err(f"workbench: error: {exc}")
        return 1
    except KeyboardInterrupt:
        err("workbench: interrupted")
        return 130
    except BrokenPipeError:
        # the reader went away (| head): not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0
    except Exception as exc:
        err(f"workbench: error: unexpected {type(exc).__name__}: {clip(exc, 500)} "
            "(run with -v, or WORKBENCH_LOG_LEVEL=debug, for details)")
        if args.verbose:
            import traceback

            traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
