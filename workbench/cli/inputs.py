"""The CLI's other inputs and the WARC export: ``submit --input FILE --url-column COL``,
``submit --sitemap URL``, ``submit --feed URL``, ``submit --warc FILE...`` and
``warc BATCH -o FILE``.

Each goes through the ``Workbench`` client (``wb.submit(path, url_column=...)``,
``wb.sitemap_urls``, ``wb.feed_urls``, ``wb.submit_warc``, ``batch.export_warc``); the output
contract is ``submit``'s: the batch id alone on stdout, notes and summaries on stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.cli.batches import live_workers, run_submit, summary_lines
from workbench.cli.common import PROG, CliError, err, open_workbench

if TYPE_CHECKING:
    from workbench.client.batch import Batch
    from workbench.client.workbench import Workbench

#: the submit options that name an input other than a file of URL lines
INPUT_OPTIONS = ("input", "sitemap", "feed", "warc")


def add_input_options(s: argparse.ArgumentParser) -> None:
    """``submit``'s input options (one at most, instead of FILE)."""
    g = s.add_argument_group("other inputs (instead of FILE)")
    g.add_argument("--input", default=None, metavar="TABLE",
                   help="a .csv, .parquet or .jsonl table: one item per row, the other columns "
                   "carried with each item and returned beside the results")
    g.add_argument("--url-column", default="url", metavar="COL",
                   help="with --input: the column holding the URLs (default: url)")
    g.add_argument("--sitemap", default=None, metavar="URL",
                   help="the page URLs of a sitemap (or of a site root's robots.txt sitemaps)")
    g.add_argument("--feed", default=None, metavar="URL", help="the entries of an RSS/Atom feed")
    g.add_argument("--warc", nargs="+", default=None, metavar="FILE",
                   help="analyse the HTML responses archived in WARC/WARC.gz files, "
                   "with no network request")


def add_warc_command(sub: Any, common: argparse.ArgumentParser) -> None:
    w = sub.add_parser("warc", parents=[common],
                       help="write the pages a batch analysed as a WARC file",
                       description="Write the stored pages of a batch's done items as WARC/1.1 "
                       "(gzip per record), readable by warcio and by submit --warc.")
    w.add_argument("batch", metavar="BATCH")
    w.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the WARC file to write (e.g. batch.warc.gz)")
    w.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    w.set_defaults(handler=run_warc)


async def run_submit_any(args: argparse.Namespace) -> int:
    """``submit``: a file of URL lines (``batches.run_submit``) or one of ``INPUT_OPTIONS``."""
    given = [name for name in INPUT_OPTIONS if getattr(args, name, None)]
    if len(given) > 1 or (given and args.file):
        named = ", ".join(f"--{n}" for n in given) + (" and FILE" if args.file else "")
        raise CliError(f"submit takes one input: {named} were given", 2)
    if not given:
        if not args.file:
            raise CliError("submit needs FILE (or -), or --input, --sitemap, --feed or --warc", 2)
        return await run_submit(args)
    params = _params(args.params)
    async with open_workbench() as wb:
        common = dict(pipeline=args.pipeline, params=params, name=args.name, notify=args.notify)
        if args.warc:
            batch = await wb.submit_warc(args.warc, **common)
            for pos, url, reason in batch.invalid[:10]:
                err(f"skipped record {pos} {url}: {reason}")
            if len(batch.invalid) > 10:
                err(f"... and {len(batch.invalid) - 10} more skipped records")
        else:
            source: Any
            kw: dict[str, Any] = {}
            if args.input:
                source, kw["url_column"] = _readable(args.input), args.url_column
            elif args.sitemap:
                source = await wb.sitemap_urls(args.sitemap)
                err(f"{len(source)} URL(s) in the sitemap(s) of {args.sitemap}")
            else:
                source = await wb.feed_urls(args.feed)
                err(f"{len(source)} entries in the feed {args.feed}")
            batch = await wb.submit(
                source, **common, refresh=args.refresh,
                on_invalid="skip" if args.skip_invalid else "raise", **kw,
            )
            if batch.invalid:
                err(f"skipped {len(batch.invalid)} invalid row(s): " + "; ".join(
                    f"row {pos} {entry!r}: {reason}" for pos, entry, reason in batch.invalid[:10]
                ))
        print(batch.id, flush=True)
        return await _follow(wb, batch, args)


def _params(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--params is not valid JSON: {exc}", 2) from None
    if not isinstance(params, dict):
        raise CliError(f"--params must be a JSON object, got {type(params).__name__}", 2)
    return params


async def _follow(wb: Workbench, batch: Batch, args: argparse.Namespace) -> int:
    from workbench.core.errors import WaitTimeout
    from workbench.notify.summary import summarize_batch

    if not args.wait:
        err(f"submitted {batch.total} item(s) as batch {batch.id}; "
            f"follow it with: {PROG} status {batch.id}")
        return 0
    if not await live_workers(wb):
        err("no worker is running: start one (python -m workbench.worker) and this waits")
    try:
        await batch.wait(timeout=args.timeout, progress=not args.no_progress)
    except WaitTimeout:
        raise CliError(
            f"batch {batch.id} still running after {args.timeout:g}s; it goes on: "
            f"{PROG} status {batch.id}", 1
        ) from None
    for line in summary_lines(await summarize_batch(wb.ledger, batch.id)):
        err(line)
    return 0


async def run_warc(args: argparse.Namespace) -> int:
    """``warc BATCH -o FILE``: the number of pages written, on stderr."""
    out = _writable(args.output, force=args.force)
    async with open_workbench() as wb:
        batch = await wb.get_batch(args.batch)
        written = await batch.export_warc(out)
    err(f"wrote {written} page(s) of batch {batch.id} to {out}")
    return 0


def _readable(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.is_file():
        raise CliError(f"no such file: {name}", 2)
    return path


def _writable(name: str, *, force: bool) -> Path:
    out = Path(name).expanduser()
    if out.is_dir():
        raise CliError(f"{name} is a directory: name a file, e.g. {out / 'batch.warc.gz'}", 2)
    if out.exists() and not force:
        raise CliError(f"{name} exists: pass --force to overwrite it", 2)
    if not out.parent.is_dir():
        raise CliError(f"cannot write {name}: no such directory {out.parent}", 2)
    return out
