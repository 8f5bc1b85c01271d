"""``python -m workbench cleanup [--json]``: the worker's daily clean-up, on demand (DESIGN.md §8).

Deletes stored raw pages older than ``WORKBENCH_RETENTION_DAYS`` and sweeps stale queue keys and
worker records (``workbench.cleanup``); results and the ledger are research data and stay. Exit 1
when any step failed, after the report.
"""

from __future__ import annotations

import argparse
import json

from workbench.cli.common import CliError


async def run_cleanup(args: argparse.Namespace) -> int:
    """The ``cleanup`` command: the report on stdout (text, or JSON with ``--json``)."""
    from workbench.cleanup import run_cleanup as clean_up
    from workbench.core.settings import load_settings

    report = await clean_up(load_settings())
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    if not report.ok:
        raise CliError("cleanup finished with errors (see above)", 1)
    return 0
