"""Imported once by the CPU pool's fork server (see ``cpu.PRELOAD_MODULES``), never by the worker.

Importing it loads trafilatura, the py3langid model and yake and runs one tiny extraction, so every
child forked from the server starts warm (milliseconds) instead of spending ~1 s on its first page.
"""

from __future__ import annotations

from workbench.pipeline.cpu import warm_up_child

warm_up_child()
