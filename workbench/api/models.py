"""What goes in and out of the HTTP API: the request and response models (pydantic; FastAPI
draws the OpenAPI schema from them), path parameters, job ids (``"<item>:<attempt>"``) and the
422 body for our input errors, in FastAPI's validation-error shape. Shared by ``workbench.api.app``
(the error handlers), ``workbench.api.batches`` and ``workbench.api.seed`` (analyses, jobs).

Every text field refuses a lone surrogate (``"\ud800"``: valid in a JSON string, not text) with
a 422 naming the field, and ``notify`` is checked as strictly as the client checks it
(``workbench.notify.email.parse_recipients``). ``check_request`` holds what depends on the
server's settings: at most ``WORKBENCH_API_MAX_URLS`` URLs a request, and ``params.embed_model``
naming only a configured model (never a path of the caller's choosing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Path
from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from workbench.api.guards import echo, has_surrogate
from workbench.client.export import jsonable
from workbench.core.errors import (
    EmptyBatchError,
    InvalidInputError,
    InvalidParamsError,
    InvalidURLError,
    UnknownPipelineError,
)
from workbench.core.settings import Settings
from workbench.notify.email import normalize_notify

JOB_ID_PATTERN = r"^[0-9]{1,18}:[0-9]{1,9}$"
BATCH_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,40}$"
#: An item status as a query parameter: ``workbench.core.status.ITEM_STATUSES`` written out, so
#: the OpenAPI document shows an inline enum (a test checks the two agree).
ItemStatusName = Literal["queued", "running", "done", "failed", "cancelled"]


# ============================================================================ models
class Problem(BaseModel):
    detail: str


def _text(v: str) -> str:
    if has_surrogate(v):
        raise ValueError("contains a lone surrogate (such as \\ud800): not valid Unicode text")
    return v


#: a string that is valid text (no lone surrogate); the OpenAPI schema is that of ``str``
Text = Annotated[str, AfterValidator(_text)]


def _check_email(v: str | None) -> str | None:
    try:
        return normalize_notify(v)
    except ValueError as exc:
        raise ValueError(f"must be email addresses: {exc}") from None


def _check_params(v: dict[str, Any] | None) -> dict[str, Any] | None:
    _no_surrogate_in(v, "params")
    return v


def _check_rows(v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    _no_surrogate_in(v, "rows")
    return v


def _no_surrogate_in(v: Any, label: str) -> None:
    """A JSON value's strings and keys hold no lone surrogate (ValueError naming where)."""
    def walk(value: Any, path: str) -> None:
        if isinstance(value, str) and has_surrogate(value):
            raise ValueError(f"{path} contains a lone surrogate (such as \\ud800)")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(key, f"{path} key")
                walk(item, f"{path}[{echo(str(key))!r}]")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")

    walk(v, label)


class BatchIn(BaseModel):
    urls: list[Text] | None = Field(None, min_length=1,
                                    description="http(s) URLs; duplicates folded (without rows)")
    rows: list[dict[str, Any]] | None = Field(
        None, min_length=1,
        description="one object per item, never folded: its URL under url_column, every other "
        "key carried with the item and returned beside its results; with urls, rows[i] is "
        "carried with urls[i]")
    url_column: Text | None = Field(None, min_length=1, max_length=200,
                                    description="the key of each row holding its URL (default: "
                                    "url); only with rows and without urls")
    pipeline: Text = Field("article", min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    name: Text | None = Field(None, max_length=200)
    notify: Text | None = Field(None, max_length=320,
                                description="email when the batch completes")
    refresh: bool = False
    on_invalid: Literal["raise", "skip"] = "raise"

    _email = field_validator("notify")(_check_email)
    _params = field_validator("params")(_check_params)
    _rows = field_validator("rows")(_check_rows)

    @model_validator(mode="after")
    def _urls_or_rows(self) -> BatchIn:
        if self.urls is not None and self.rows is not None:
            if len(self.urls) != len(self.rows):
                raise ValueError(f"{len(self.rows)} rows for {len(self.urls)} urls: rows[i] is "
                                 "carried with urls[i]")
            if self.url_column is not None:
                raise ValueError("url_column names the URL key of rows given without urls")
        if self.url_column is not None and self.rows is None:
            raise ValueError("url_column goes with rows")
        return self

    @property
    def size(self) -> int:
        return len(self.urls if self.urls is not None else self.rows or [])


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
    url: Text = Field(..., description="one http(s) URL")
    pipeline: Text = Field("article", min_length=1, max_length=100)
    params: dict[str, Any] | None = None
    refresh: bool = False
    notify: Text | None = Field(None, max_length=320)

    _email = field_validator("notify")(_check_email)
    _params = field_validator("params")(_check_params)


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
        out["input"] = echo(jsonable(value))  # clipped: a 422 never repeats a huge input
    return out


def check_request(settings: Settings, *, urls: int, params: dict[str, Any] | None) -> None:
    """What the server's settings allow one request: 422 beyond ``api_max_urls`` URLs, or for
    an ``embed_model`` param that is not one of the configured models."""
    if urls > settings.api_max_urls:
        raise HTTPException(422, detail=[unprocessable(
            ["body", "urls"],
            f"{urls} URLs; at most {settings.api_max_urls} per request "
            "(WORKBENCH_API_MAX_URLS): send several requests, or submit a file with "
            "python -m workbench submit", "too_many_urls")])
    model = (params or {}).get("embed_model")
    if model is not None and model not in settings.allowed_embed_models:
        allowed = settings.allowed_embed_models
        raise HTTPException(422, detail=[unprocessable(
            ["body", "params", "embed_model"],
            "through the API, embed_model must name a configured model ("
            + (", ".join(repr(m) for m in allowed) if allowed
               else "none is: set WORKBENCH_EMBED_MODEL or WORKBENCH_EMBED_MODELS")
            + ")", "unknown_embed_model", model)])


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
        detail = [unprocessable(["body", "params", *([name] if name != "(params)" else [])],
                                msg, "invalid_params") for name, msg in exc.fields]
        detail = detail or [unprocessable(["body", "params"], str(exc), "invalid_params")]
    elif isinstance(exc, EmptyBatchError):
        detail = [unprocessable(url_loc, str(exc), "empty_batch")]
    else:
        detail = [unprocessable(["body"], str(exc), "invalid_input")]
    return HTTPException(status_code=422, detail=detail)
