"""Logging: structlog events carried by the stdlib loggers named ``workbench...``.

Two callers, two scopes:

- Library code logs through ``get_logger(name)``: a structlog logger bound to the stdlib logger
  of that name with its own processors, so it never depends on (nor changes) structlog's global
  configuration. The stdlib ``workbench`` logger's level and handlers decide what shows and where,
  like any well-behaved library's.
- Entry points (``python -m workbench``, ``python -m workbench.worker``) own their process and
  call ``configure_logging``: one root handler rendering every record (ours, arq's, aiohttp's)
  human-readable on a terminal, JSON lines otherwise.

``Workbench.start_worker`` in a user's notebook calls ``configure_workbench_logger``, which
touches only the ``workbench`` logger: never the root logger, its handlers or its level, and
never structlog's global configuration.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_OWN_HANDLER = "workbench-default"

# What every Workbench event carries before a handler's formatter renders it.
_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.filter_by_level,
    structlog.processors.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
]


def get_logger(name: str, **initial: Any) -> Any:
    """A structlog logger (``log.info("event", key=value)``) for the stdlib logger ``name``."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        **initial,
    )


def _formatter(console: bool) -> logging.Formatter:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=console and sys.stderr.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    tail: list[structlog.typing.Processor] = (
        [renderer] if console else [structlog.processors.format_exc_info, renderer]
    )
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        # records of other libraries (arq, aiohttp) get the same fields before rendering
        foreign_pre_chain=[
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """For entry points only: one root handler for every logger of the process."""
    lvl = _LEVELS.get(level, logging.INFO)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(console))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    logging.getLogger("workbench").setLevel(lvl)
    # arq logs every job start and end at INFO: far too much for 100k items
    logging.getLogger("arq").setLevel(logging.DEBUG if lvl == logging.DEBUG else logging.WARNING)


def configure_workbench_logger(level: str = "warning") -> None:
    """For library code: Workbench's own log lines at ``level`` and above, nothing else touched.

    Sets the level of the stdlib ``workbench`` logger. When the root logger has no handler (a
    fresh notebook), a stderr handler is added to the ``workbench`` logger (once), so its lines
    show readably; otherwise they go wherever the user's logging setup sends them.
    """
    logger = logging.getLogger("workbench")
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    own = any(h.get_name() == _OWN_HANDLER for h in logger.handlers)
    if not own and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_OWN_HANDLER)
        handler.setFormatter(_formatter(console=True))
        logger.addHandler(handler)
