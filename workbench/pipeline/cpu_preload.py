"""Warms the CPU pool's children: imported by name (``cpu.PRELOAD_MODULES``), never by the worker.

The fork server imports it once, which loads trafilatura, the py3langid model and the stopword
lists and runs one tiny extraction, so every child forked from the server starts warm
(milliseconds) instead of spending ~1 s on its first page. Each child's initializer imports it too,
in case the process-wide fork server was started by someone else without our preload (or the
platform has no fork server): a no-op in a child that inherited it, the warm-up otherwise.

It lives apart from ``cpu`` so the generic pool knows nothing of what its children run.
"""

from __future__ import annotations

from workbench.core.logs import get_logger
from workbench.pipeline.text.article import warm_up


def warm_up_child() -> None:
    """Load the lazy parts once; best effort (a real call reports real errors)."""
    try:
        warm_up()
    except Exception:
        get_logger("workbench.pipeline.cpu").debug("cpu_warm_up_failed", exc_info=True)


warm_up_child()
