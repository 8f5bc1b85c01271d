"""The library leaves the root logger alone: a user's notebook keeps its handlers and level.

Only entry points (``python -m workbench``, ``python -m workbench.worker``) configure logging;
``Workbench.start_worker`` sets the level of Workbench's own ``workbench`` logger, nothing more.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from workbench import Workbench
from workbench.core.logs import get_logger


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    """structlog as a fresh notebook has it (other tests may have configured it)."""
    was_configured, config = structlog.is_configured(), structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    if was_configured:
        structlog.configure(**config)


async def test_start_worker_leaves_root_handlers_and_level_alone(
    make_wb: Callable[..., Workbench], unconfigured_structlog: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, ours = logging.getLogger(), logging.getLogger("workbench")
    saved = root.level, ours.level
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root.addHandler(handler)
    root.setLevel(17)  # the user's own choice, however odd
    try:
        handlers = list(root.handlers)
        wb = make_wb()
        await wb.start_worker()
        await wb.close()
        assert root.handlers == handlers
        assert root.level == 17
        # Workbench's own lines: warnings reach the user's handler, info is held back
        log = get_logger("workbench.test")
        log.info("quiet please")
        log.warning("worth a look")
        assert "worth a look" in out.getvalue() and "quiet please" not in out.getvalue()
        # the user's own structlog loggers print as unconfigured structlog does
        structlog.get_logger("my.notebook").info("still mine")
        assert "still mine" in capsys.readouterr().out and "still mine" not in out.getvalue()
        assert not structlog.is_configured()  # structlog's global configuration untouched
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])


async def test_start_worker_with_log_level_none_touches_no_logger(
    make_wb: Callable[..., Workbench], unconfigured_structlog: Any
) -> None:
    ours = logging.getLogger("workbench")
    before = ours.level, list(ours.handlers), structlog.is_configured()
    wb = make_wb()
    await wb.start_worker(log_level=None)
    await wb.close()
    assert (ours.level, list(ours.handlers), structlog.is_configured()) == before
