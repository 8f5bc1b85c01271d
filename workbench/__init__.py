"""Workbench: batch analyses of web pages from a notebook.

>>> from workbench import Workbench
>>> wb = Workbench()
>>> batch = await wb.submit(["https://example.org/"], pipeline="article")
>>> await batch.wait()
"""

from __future__ import annotations

import importlib
import typing

from workbench.core.errors import (
    BatchNotFoundError,
    EmptyBatchError,
    InvalidInputError,
    InvalidParamsError,
    InvalidURLError,
    PermanentError,
    PipelineError,
    SettingsError,
    TransientError,
    UnknownPipelineError,
    WaitTimeout,
    WorkbenchError,
)
from workbench.core.version import __version__

# Bound here, not lazily: the first import of a ``workbench.pipeline.*`` module sets this package's
# ``pipeline`` attribute to the subpackage, and this import puts the decorator back after it.
from workbench.pipeline.registry import pipeline

if typing.TYPE_CHECKING:
    from workbench.client.batch import Batch
    from workbench.client.workbench import SyncWorkbench, Workbench
    from workbench.core.page import Document, Page
    from workbench.core.settings import Settings
    from workbench.pipeline.context import Context

# Imported on first use, not with the package: every process imports ``workbench`` first, and
# most need little of it. The client (pandas, pyarrow, the readers and writers) cost a worker
# process and its CPU pool's fork server ~1 s of CPU at start; the settings (pydantic-settings)
# and ``Context`` (structlog) ~0.1 s more of the fork server's start, which every extraction
# waits for (benchmarks/NOTES.md, session 16).
_LAZY = {
    "Batch": "workbench.client.batch",
    "Context": "workbench.pipeline.context",
    "Document": "workbench.core.page",
    "Page": "workbench.core.page",
    "Settings": "workbench.core.settings",
    "SyncWorkbench": "workbench.client.workbench",
    "Workbench": "workbench.client.workbench",
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Batch",
    "BatchNotFoundError",
    "Context",
    "Document",
    "EmptyBatchError",
    "InvalidInputError",
    "InvalidParamsError",
    "InvalidURLError",
    "Page",
    "PermanentError",
    "PipelineError",
    "Settings",
    "SettingsError",
    "SyncWorkbench",
    "TransientError",
    "UnknownPipelineError",
    "WaitTimeout",
    "Workbench",
    "WorkbenchError",
    "__version__",
    "pipeline",
]


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
