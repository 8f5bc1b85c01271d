"""Logging: structlog, human-readable on a terminal, JSON lines otherwise.

Two callers, two scopes. Entry points (``python -m workbench``, ``python -m workbench.worker``)
own their process and call ``configure_logging``: structlog and the root logger. Library code
(``Workbench.start_worker`` in a user's notebook) must leave the root logger, its handlers and
its level alone; it calls ``configure_workbench_logger``, which touches only the ``workbench``
logger (and, when nobody has configured structlog, sends only ``workbench...`` events through
the stdlib logger of their name, so that logger's level applies to them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

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

    Sets the level of the stdlib ``workbench`` logger. Unconfigured structlog would print every
    event, info included, into the cell output, so when nobody has configured structlog yet it
    gets its default configuration back with one change: loggers named ``workbench...`` are the
    stdlib loggers of that name (dropping events below their level), so the user's logging setup
    decides where Workbench's lines go; every other structlog logger prints as before. When the
    root logger has no handler, a stderr handler is added to the ``workbench`` logger (once), so
    lines below WARNING still show when asked for. The root logger is never touched.
    """
    logger = logging.getLogger("workbench")
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    if not structlog.is_configured():
        defaults = structlog.get_config()
        structlog.configure(
            processors=[_drop_below_stdlib_level, *defaults["processors"]],
            logger_factory=_WorkbenchToStdlib(defaults["logger_factory"]),
        )
    own = any(h.get_name() == _OWN_HANDLER for h in logger.handlers)
    if not own and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_OWN_HANDLER)
        logger.addHandler(handler)


class _WorkbenchToStdlib:
    """A structlog logger factory: ``workbench...`` names -> stdlib loggers, others -> fallback."""

    def __init__(self, fallback: Callable[..., Any]):
        self.fallback = fallback

    def __call__(self, *args: Any) -> Any:
        name = args[0] if args and isinstance(args[0], str) else ""
        if name == "workbench" or name.startswith("workbench."):
            return logging.getLogger(name)
        return self.fallback(*args)


def _drop_below_stdlib_level(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    if isinstance(logger, logging.Logger):
        level = logging.getLevelName(method_name.upper().replace("EXCEPTION", "ERROR"))
        if isinstance(level, int) and not logger.isEnabledFor(level):
            raise structlog.DropEvent
    return event_dict
