"""What goes in and out of the HTTP API: the request and response models (pydantic; FastAPI
draws the OpenAPI schema from them), path parameters, job ids (``"<item>:<attempt>"``) and the
422 body for our input errors, in FastAPI's validation-error shape. Shared by ``workbench.api.app``
(the error handlers), ``workbench.api.batches`` and ``workbench.api.seed`` (analyses, jobs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import HTTPException, Path
from pydantic import BaseModel, Field, field_validator

from workbench.client.export import jsonable
from workbench.core.errors import (
    EmptyBatchError,
    InvalidInputError,
    InvalidParamsError,
    InvalidURLError,
    UnknownPipelineError,
)

JOB_ID_PATTERN = r"^[0-9]{1,18}:[0-9]{1,9}$"
BATCH_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,40}$"
#: An item status as a query parameter: ``workbench.core.status.ITEM_STATUSES`` written out, so
#: the OpenAPI document shows an inline enum (a test checks the two agree).
ItemStatusName = Literal["queued", "running", "done", "failed", "cancelled"]


# ============================================================================ models
class Problem(BaseModel):
    detail: str


def _check_email(v: str | None) -> str | None:
    if v is not None and "@" not in v:
        raise ValueError("must be an email address")
    return v


class BatchIn(BaseModel):
    urls: list[str] = Field(..., min_length=1, description="http(s) URLs; duplicates folded")
    pipeline: str = Field("article", min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    name: str | None = Field(None, max_length=200)
    notify: str | None = Field(None, max_length=320, description="email when the batch completes")
    refresh: bool = False
    on_invalid: Literal["raise", "skip"] = "raise"

    _email = field_validator("notify")(_check_email)


class InvalidEntry(BaseModel):
    position: int
    entry: Any
    reason: str


class BatchCreated(BaseModel):
    batch_id: str
    items: int
    status: str
    cached: int
    invalid: list[InvalidEntry] = []


class BatchOut(BaseModel):
    batch_id: str
    name: str | None
    pipeline: str
    pipeline_version: str
    created_at: datetime
    total: int
    counts: dict[str, int]
    state: str
    first_started_at: datetime | None = None
    last_finished_at: datetime | None = None


class ErrorGroupOut(BaseModel):
    error_type: str
    count: int
    sample_url: str
    sample_message: str
    retryable: bool | None


class BatchDetail(BatchOut):
    params: dict[str, Any]
    duration_s: float | None
    top_errors: list[ErrorGroupOut]


class ItemOut(BaseModel):
    item_id: int
    job_id: str
    position: int
    url: str
    normalized_url: str
    status: str
    attempts: int
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    worker_id: str | None
    cached: bool
    error_type: str | None
    error_message: str | None
    retryable: bool | None


class ItemsPage(BaseModel):
    batch_id: str
    total: int
    limit: int
    offset: int
    items: list[ItemOut]


class Requeued(BaseModel):
    requeued: int


class Cancelled(BaseModel):
    cancelled: int


class AnalysisIn(BaseModel):
    url: str = Field(..., description="one http(s) URL")
    pipeline: str = Field("article", min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    refresh: bool = False
    notify: str | None = Field(None, max_length=320)

    _email = field_validator("notify")(_check_email)


class AnalysisCreated(BaseModel):
    analysis_id: str
    job_id: str
    status: Literal["pending"] = "pending"
    cached: bool = False


class Reprocessed(BaseModel):
    analysis_id: str
    job_id: str
    status: Literal["queued"] = "queued"
    reprocess_of: str | None = None


class JobError(BaseModel):
    type: str
    message: str | None = None
    retryable: bool | None = None


class JobStatus(BaseModel):
    job_id: str
    status: Literal["deferred", "queued", "in_progress", "complete", "not_found"]
    item_status: str
    analysis_id: str
    url: str
    attempts: int
    enqueue_time: datetime | None
    start_time: datetime | None
    finish_time: datetime | None
    success: bool | None
    result: dict[str, Any] | None
    error: JobError | None
    superseded: bool = False
    current_job_id: str


class JobCancelled(BaseModel):
    job_id: str
    cancelled: bool
    status: str
    item_status: str


# ============================================================================ path parameters
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "no such batch"}
}


def BatchId() -> Any:  # noqa: N802 - a fresh Path() per parameter (FastAPI mutates them)
    return Path(..., pattern=BATCH_ID_PATTERN, description="a batch id, e.g. b-20261129-...")


def JobId() -> Any:  # noqa: N802
    return Path(..., pattern=JOB_ID_PATTERN, description='"<item>:<attempt>"')


def format_job_id(item_id: int, attempt: int) -> str:
    """The job id of an item's attempt: ``"<item>:<attempt>"`` (ARQ's job id of it)."""
    return f"{item_id}:{attempt}"


def parse_job_id(job_id: str) -> tuple[int, int]:
    """``(item_id, attempt)`` of a job id that matched ``JOB_ID_PATTERN``."""
    item, _, attempt = job_id.partition(":")
    return int(item), int(attempt)


# ============================================================================ 422 for input errors
def unprocessable(loc: list[Any], msg: str, kind: str, value: Any = None) -> dict[str, Any]:
    """One entry of a 422 ``detail`` list, as FastAPI writes its own validation errors."""
    out: dict[str, Any] = {"loc": loc, "msg": msg, "type": kind}
    if value is not None:
        out["input"] = jsonable(value)
    return out


def input_error(exc: InvalidInputError, url_loc: list[Any], single: bool = False) -> HTTPException:
    """422 naming each invalid URL or field, in FastAPI's validation-error shape."""
    if isinstance(exc, InvalidURLError):
        detail = [
            unprocessable(url_loc if single else [*url_loc, pos], reason, "invalid_url", entry)
            for pos, entry, reason in exc.invalid
        ]
    elif isinstance(exc, UnknownPipelineError):
        detail = [unprocessable(["body", "pipeline"], str(exc), "unknown_pipeline")]
    elif isinstance(exc, InvalidParamsError):
        detail = [unprocessable(["body", "params"], str(exc), "invalid_params")]
    elif isinstance(exc, EmptyBatchError):
        detail = [unprocessable(url_loc, str(exc), "empty_batch")]
    else:
        detail = [unprocessable(["body"], str(exc), "invalid_input")]
    return HTTPException(status_code=422, detail=detail)
