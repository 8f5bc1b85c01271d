"""Workbench: batch analyses of web pages from a notebook.

>>> from workbench import Workbench
>>> wb = Workbench()
>>> batch = await wb.submit(["https://example.org/"], pipeline="article")
>>> await batch.wait()
"""

from __future__ import annotations

from workbench.client.batch import Batch
from workbench.client.workbench import SyncWorkbench, Workbench
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
