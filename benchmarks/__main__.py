"""Run every benchmark and write ``benchmarks/RESULTS.md``.

    .venv/bin/python -m benchmarks --corpus ../shared/corpus/article-extraction-benchmark
    .venv/bin/python -m benchmarks --corpus ... --quick          # smaller sizes, a smoke run
    .venv/bin/python -m benchmarks --corpus ... --only queue     # queue|article|cache|scale|hosts
    .venv/bin/python -m benchmarks scale [--quick] [--fill]      # research scale alone (no corpus)
    .venv/bin/python -m benchmarks hosts [--corpus ...]          # politeness alone (bench_hosts.py)

The research-scale figures (a million-item batch, ``bench_scale.py``) and the politeness figures
(``bench_hosts.py``) have their own sections of ``RESULTS.md``, each replaced by the runs that
include it and kept by the others.

Each figure is a ratio measured side by side in the same run, or an absolute time where the
target is one. Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from . import bench_article, bench_cache, bench_hosts, bench_queue, bench_scale
from .common import Figure, bench_env, log, machine

HERE = Path(__file__).resolve().parent

SIZES = {
    # name: (submit/counts/results/memory batch, round size, rounds, corpus copies, resubmit)
    "full": (100_000, 20_000, 3, 5, 10_000),
    "quick": (10_000, 3_000, 2, 1, 1_000),
}
SCALE_SIZES = {"full": 1_000_000, "quick": 100_000}
SCALE_START = "<!-- scale: written by python -m benchmarks scale -->"
SCALE_END = "<!-- /scale -->"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="?", choices=["scale", "hosts"],
                   help="scale: only the research-scale benchmark (needs no corpus); hosts: only "
                   "the politeness benchmark (its corpus half with --corpus)")
    p.add_argument("--corpus", type=Path,
                   help="the article-extraction-benchmark directory (html/ + ground-truth.json)")
    p.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    p.add_argument("--only", choices=["queue", "article", "cache", "scale", "hosts"],
                   action="append",
                   help="run only these benchmarks (repeatable)")
    p.add_argument("--output", type=Path, default=HERE / "RESULTS.md",
                   help="where to write the results (default benchmarks/RESULTS.md)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dirs")
    p.add_argument("--fill", action="store_true",
                   help="scale: complete its batches by the ledger's write statements, not a "
                   "worker (the read side at a million items in minutes; no worker figure)")
    args = p.parse_args(argv)
    wanted = ([args.which] if args.which
              else args.only or ["queue", "article", "cache", "scale", "hosts"])
    corpus = Path()
    if set(wanted) - {"scale", "queue", "hosts"}:
        if args.corpus is None:
            p.error("--corpus is required (the article and cache benchmarks serve it)")
        corpus = args.corpus.expanduser().resolve()
        if not (corpus / "ground-truth.json").is_file() or not (corpus / "html").is_dir():
            p.error(f"{corpus} has no ground-truth.json and html/ (the corpus directory)")
    mode = "quick" if args.quick else "full"
    n, round_n, rounds, copies, resubmit = SIZES[mode]

    from workbench.core.logs import configure_logging

    configure_logging("console", "warning")  # the client's own info lines would drown the output
    started = time.monotonic()
    figures: list[Figure] = []
    if "queue" in wanted:
        with bench_env(keep=args.keep) as env:
            figures += bench_queue.run(env, n, round_n, rounds)
    if "article" in wanted:
        with bench_env(keep=args.keep) as env:
            figures += bench_article.run(env, corpus, copies)
    if "cache" in wanted:
        with bench_env(keep=args.keep) as env:
            figures += bench_cache.run(env, corpus, resubmit)
    scale: list[Figure] = []
    scale_started = time.monotonic()
    if "scale" in wanted:
        with bench_env(keep=args.keep) as env:
            scale = bench_scale.run(env, SCALE_SIZES[mode], fill=args.fill)
    scale_s = time.monotonic() - scale_started
    hosts: list[Figure] = []
    hosts_started = time.monotonic()
    if "hosts" in wanted:
        hosts_corpus = args.corpus.expanduser().resolve() if args.corpus else None
        hosts = bench_hosts.run(hosts_corpus, rounds=1 if mode == "quick" else 3)
    hosts_s = time.monotonic() - hosts_started
    elapsed = time.monotonic() - started

    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    old = args.output.read_text() if args.output.exists() else ""
    text = render(figures, mode, command, elapsed) if figures else old or render([], mode, "", 0)
    section = (render_scale(scale, mode, command, scale_s) if scale
               else _between(old, SCALE_START, SCALE_END))
    # a run without them keeps the sections of the runs that had them
    hosts_section = (bench_hosts.render_section(hosts, command, hosts_s) if hosts
                     else _between(old, bench_hosts.SECTION_START, bench_hosts.SECTION_END))
    args.output.write_text(bench_hosts.with_section(with_scale(text, section), hosts_section))
    figures += scale + hosts
    print()
    for f in figures:
        print(f.line())
    print(f"\n{len([f for f in figures if f.passed])}/{len(figures)} targets met in "
          f"{elapsed / 60:.1f} min; wrote {args.output}")
    log("done")
    return 0 if all(f.passed for f in figures) else 1


def render(figures: list[Figure], mode: str, command: str, elapsed_s: float) -> str:
    m = machine()
    lines = [
        "# Benchmark results",
        "",
        (f"Written by `{command}` ({mode} sizes) on "
         f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; the run took {elapsed_s / 60:.1f} min."),
        "Every comparison ran side by side in the same run, on the same machine and Redis.",
        "",
        "| benchmark | compared with | target | figure | met |",
        "|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(f"| {f.benchmark} | {f.compared_with} | {f.target} | {f.figure} | "
                     f"{'yes' if f.passed else '**no**'} |")
    lines += ["", "## What was measured", ""]
    lines += [f"- **{f.benchmark}**: {f.detail}" for f in figures]
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in m.items()]
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    return "\n".join(lines) + "\n"


def render_scale(figures: list[Figure], mode: str, command: str, elapsed_s: float) -> str:
    lines = [
        SCALE_START,
        "## Research scale",
        "",
        (f"Written by `{command}` ({mode} size: {SCALE_SIZES[mode]:,} items) on "
         f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; the run took {elapsed_s / 60:.1f} min. "
         "How each figure is measured: the docstring of `benchmarks/bench_scale.py`; "
         "\"today\" is the issue's figure before this work."),
        "",
        "| benchmark | compared with | target | figure | met |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {f.benchmark} | {f.compared_with} | {f.target} | {f.figure} | "
              f"{'yes' if f.passed else '**no**'} |" for f in figures]
    lines += ["", *[f"- **{f.benchmark}**: {f.detail}" for f in figures], SCALE_END]
    return "\n".join(lines)


def _between(text: str, start: str, end: str) -> str:
    if start in text and end in text:
        return text[text.index(start) : text.index(end) + len(end)]
    return ""


def with_scale(text: str, section: str) -> str:
    """``text`` with its research-scale section replaced by ``section`` (before the machine)."""
    old = _between(text, SCALE_START, SCALE_END)
    if old:
        return text.replace(old, section)
    if not section:
        return text
    head, sep, tail = text.partition("## Machine")
    return f"{head}{section}\n\n{sep}{tail}" if sep else f"{text}\n{section}\n"


if __name__ == "__main__":
    raise SystemExit(main())
