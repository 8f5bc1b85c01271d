"""Workbench: batch analyses of web pages from a notebook.

>>> from workbench import Workbench
>>> wb = Workbench()
>>> batch = await wb.submit(["https://example.org/"], pipeline="article")
>>> await batch.wait()
"""

from __future__ import annotations

__version__ = "0.1.0"

from .client import Batch, Workbench
from .errors import (
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
from .pipeline.context import Context
from .pipeline.page import Document, Page
from .pipeline.registry import pipeline
from .settings import Settings
from .sync import SyncWorkbench

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
