"""Logging: structlog, human-readable on a terminal, JSON lines otherwise.

Two callers, two scopes. Entry points (``python -m workbench``, ``python -m workbench.worker``)
own their process and call ``configure_logging``: structlog and the root logger. Library code
(``Workbench.start_worker`` in a user's notebook) must leave the root logger, its handlers and
its level alone; it calls ``configure_workbench_logger``, which touches only the ``workbench``
logger (and fills in structlog's configuration only when nobody has configured structlog).
"""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_OWN_HANDLER = "workbench-default"


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """For entry points only: configure structlog and the root logger (and route the stdlib
    loggers of arq/aiohttp through the same look)."""
    lvl = _LEVELS.get(level, logging.INFO)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # arq logs every job start and end at INFO: far too much for 100k items
    logging.getLogger("arq").setLevel(logging.DEBUG if lvl == logging.DEBUG else logging.WARNING)


def configure_workbench_logger(level: str = "warning") -> None:
    """For library code: Workbench's own log lines at ``level`` and above, nothing else touched.

    Sets the level of the stdlib ``workbench`` logger. When structlog is not configured yet (a
    plain notebook), it is set up to hand each event to the stdlib logger of its name
    (``structlog.get_logger("workbench.worker")`` -> ``logging.getLogger("workbench.worker")``),
    so that level applies and the user's own logging configuration decides where lines go;
    unconfigured structlog would print every event, info included, into the cell output. When
    the root logger has no handler, a stderr handler is added to the ``workbench`` logger (once),
    so lines below WARNING still show when asked for. The root logger is never touched.
    """
    logger = logging.getLogger("workbench")
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=False,
        )
    own = any(h.get_name() == _OWN_HANDLER for h in logger.handlers)
    if not own and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_OWN_HANDLER)
        logger.addHandler(handler)
