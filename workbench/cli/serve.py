"""``python -m workbench serve [--host H] [--port P]``: the HTTP API under uvicorn (DESIGN.md §8).

Serves ``workbench.api:create_app()``. Refuses a non-loopback host without
``WORKBENCH_API_TOKEN`` (anyone who can reach it could make the workers fetch URLs), and loads
the pipeline modules first so that a bad ``WORKBENCH_PIPELINES`` exits 2 here, not in the
lifespan. uvicorn and FastAPI come with the ``api`` extra and are imported on use.
"""

from __future__ import annotations

import argparse
import ipaddress

from workbench.cli.common import CliError, err


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (IPv4 or IPv6, brackets allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    """The ``serve`` command: blocks until Ctrl-C."""
    from workbench.core.loops import loop_name
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

        from workbench.api import create_app
    except ImportError as exc:
        raise CliError(
            f"the HTTP API needs the 'api' extra ({exc.name} is missing): "
            "pip install 'workbench[api]'", 1
        ) from None
    auth = ("bearer token required" if settings.api_token
            else "no token: loopback only, Host must be localhost, 127.0.0.1 or [::1]")
    err(f"serving the Workbench API on http://{args.host}:{args.port} ({auth}); "
        "docs at /docs; Ctrl-C stops")
    err("anyone who can call it can make the workers fetch URLs and read every batch's results "
        "(README: Security)")
    uvicorn.run(create_app(), host=args.host, port=args.port, loop=loop_name(settings.event_loop),
                log_level="warning" if not args.verbose else "info", access_log=args.verbose)
    return 0
