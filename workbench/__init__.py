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
from workbench.core.page import Document, Page
from workbench.core.settings import Settings
from workbench.core.version import __version__
from workbench.pipeline.context import Context
from workbench.pipeline.registry import pipeline

if typing.TYPE_CHECKING:
    from workbench.client.batch import Batch
    from workbench.client.workbench import SyncWorkbench, Workbench

# The client (pandas, pyarrow, the readers and writers) is imported on first use, not with the
# package: a worker process and its CPU pool's fork server import ``workbench`` but never the
# client, and importing it cost each of them ~1 s of CPU at start (benchmarks/NOTES.md).
_CLIENT = {
    "Batch": "workbench.client.batch",
    "SyncWorkbench": "workbench.client.workbench",
    "Workbench": "workbench.client.workbench",
}


def __getattr__(name: str) -> typing.Any:
    module = _CLIENT.get(name)
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
    return sorted({*globals(), *_CLIENT})
