"""One exception tree for Workbench.

Callers catch these types, never aiohttp's, redis' or SQLAlchemy's: errors from the libraries
underneath are translated at the boundary (``raise FetchTimeout(...) from exc``).

::

    WorkbenchError
    ├── SettingsError                 a setting is unknown or malformed (names the setting)
    ├── InvalidInputError (ValueError) bad input to a public entry point
    │   ├── InvalidURLError           one or more URLs are invalid (``.invalid``: [(entry, reason)])
    │   ├── UnknownPipelineError      no pipeline registered under that name
    │   ├── InvalidParamsError        params are not a JSON object
    │   ├── EmptyBatchError           nothing to submit
    │   ├── InvalidTableError         a DataFrame or CSV/Parquet/JSONL input without its URL column
    │   ├── InvalidSitemapError       not a sitemap (an HTML page, broken XML), or none found
    │   ├── InvalidFeedError          not an RSS or Atom feed (an HTML page, broken XML)
    │   ├── InvalidWARCError          not a WARC file, or one that breaks off (file, offset)
    │   └── InputTooLarge             a sitemap, feed or WARC record past a cap (``.limit``)
    ├── BatchNotFoundError (LookupError)
    ├── WaitTimeout (TimeoutError)    ``batch.wait(timeout=...)`` ran out (``.counts`` at that time)
    ├── ServiceError                  a backing service is unavailable or misbehaves
    │   ├── EmbeddedRedisError        the embedded redis-server could not be started or reached
    │   ├── QueueError                Redis refused a queue operation
    │   └── LedgerError               the SQL ledger refused an operation
    └── PipelineError                 an item failed; carries ``error_type`` and ``retryable``
        ├── TransientError            retried with backoff (retryable=True)
        │   ├── FetchTimeout          connect/read/total timeout
        │   ├── FetchConnectionError  refused, reset, DNS failure
        │   ├── TransientHTTPError    HTTP 408, 425, 429, 5xx (``status``, ``retry_after_s``)
        │   ├── RobotsUnavailable     robots.txt answered 5xx: nothing is fetched until it answers
        │   └── LLMTransientError     the LLM endpoint said 429/5xx or timed out
        └── PermanentError            failed on the first attempt (retryable=False)
            ├── HTTPStatusError       other 4xx (``status``)
            ├── ResponseTooLarge      body past the size cap
            ├── UnsupportedContent    images, binaries, other non-text types
            ├── EmptyResponse         a body with no bytes
            ├── TooManyRedirects      redirect loop or chain past the limit
            ├── BlockedAddress        a private/loopback address while the guard is on
            ├── TLSCertificateError   the site's certificate failed verification (self-signed,
            │                         expired, unknown CA, another host's); says which
            ├── TLSHandshakeError     no TLS could be agreed (old protocol, no shared cipher)
            ├── RobotsDisallowed      robots.txt forbids the URL (names the rule; on by default)
            ├── InvalidPageURL        a URL the fetcher cannot request
            ├── NoMainContent         extraction found no main text
            ├── ExtractionFailed      the extractor crashed on the page
            ├── PageNotStored         a rerun needs a stored page that is gone
            ├── LLMError              the LLM endpoint refused the request (4xx, bad answer)
            └── PipelineNotAvailable  the worker does not have the batch's pipeline
"""

from __future__ import annotations

from collections.abc import Sequence


class WorkbenchError(Exception):
    """Root of every error Workbench raises on purpose."""


class SettingsError(WorkbenchError, ValueError):
    """A setting is unknown or malformed. The message names the setting."""


class InvalidInputError(WorkbenchError, ValueError):
    """Bad input to a public entry point."""


class InvalidURLError(InvalidInputError):
    """One or more submitted URLs are invalid.

    ``invalid`` lists ``(position, entry, reason)`` for every bad entry, so nothing is silently
    dropped.
    """

    def __init__(self, invalid: Sequence[tuple[int, object, str]]):
        self.invalid = list(invalid)
        shown = "; ".join(f"#{pos} {entry!r}: {reason}" for pos, entry, reason in self.invalid[:20])
        more = f" (and {len(self.invalid) - 20} more)" if len(self.invalid) > 20 else ""
        super().__init__(f"{len(self.invalid)} invalid URL(s): {shown}{more}")


class UnknownPipelineError(InvalidInputError):
    """No pipeline is registered under the requested name."""


class InvalidParamsError(InvalidInputError):
    """Pipeline params are not a JSON object, or not what the pipeline declares.

    ``fields`` lists ``(param, reason)`` for each param the pipeline's declaration refused.
    """

    def __init__(self, message: str, fields: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.fields = list(fields)


class EmptyBatchError(InvalidInputError):
    """A batch with no URLs (after removing invalid entries) was submitted."""


class InvalidTableError(InvalidInputError):
    """A table given as input cannot be used: no such URL column (the message names the columns
    present), an unknown file format, or a file that cannot be read."""


class InvalidSitemapError(InvalidInputError):
    """A document given or linked as a sitemap is not one (an HTML page, broken XML), or a site
    has no sitemap to be found."""


class InvalidFeedError(InvalidInputError):
    """A document given as a feed is neither RSS nor Atom (an HTML page, broken XML)."""


class InvalidWARCError(InvalidInputError):
    """A file given as a WARC is not one, or breaks off; the message names the file and offset."""


class InputTooLarge(InvalidInputError):
    """A sitemap, feed or WARC record is past a cap. ``limit`` names the parameter that sets it
    (``max_bytes``, ``max_payload_bytes``) and ``value`` its value, so the message says what to
    raise."""

    def __init__(self, message: str, *, limit: str, value: int):
        super().__init__(message)
        self.limit = limit
        self.value = value


class BatchNotFoundError(WorkbenchError, LookupError):
    """No batch has the given id."""


class WaitTimeout(WorkbenchError, TimeoutError):
    """``Batch.wait`` timed out; ``counts`` holds the counts at that moment."""

    def __init__(self, message: str, counts: dict[str, int]):
        super().__init__(message)
        self.counts = counts


class ServiceError(WorkbenchError):
    """A backing service (Redis, the SQL database) is unavailable or misbehaves."""


class EmbeddedRedisError(ServiceError):
    """The embedded redis-server could not be started or reached."""


class QueueError(ServiceError):
    """Redis refused a queue operation."""


class LedgerError(ServiceError):
    """The SQL ledger refused an operation."""


class PipelineError(WorkbenchError):
    """An item failed. ``error_type`` is short and stable: it lands in the ledger and groups
    failures in DataFrames and the monitor."""

    error_type: str = "pipeline_error"
    retryable: bool = False

    def __init__(
        self, message: str = "", *, error_type: str | None = None, retryable: bool | None = None
    ):
        super().__init__(message)
        if error_type is not None:
            self.error_type = error_type
        if retryable is not None:
            self.retryable = retryable

    #: seconds the server asked us to wait (Retry-After), if any
    retry_after_s: float | None = None


class TransientError(PipelineError):
    """A failure worth retrying later (with backoff)."""

    error_type = "transient"
    retryable = True


class PermanentError(PipelineError):
    """A failure that another attempt would not fix."""

    error_type = "permanent"
    retryable = False


class FetchTimeout(TransientError):
    error_type = "timeout"


class FetchConnectionError(TransientError):
    error_type = "connection_error"


class TransientHTTPError(TransientError):
    def __init__(self, status: int, message: str = "", *, retry_after_s: float | None = None):
        super().__init__(message or f"HTTP {status}", error_type=f"http_{status}")
        self.status = status
        self.retry_after_s = retry_after_s


class RobotsUnavailable(TransientError):
    """A site's robots.txt answered with a server error. RFC 9309 says to assume a complete
    disallow then; the item is retried (``retry_after_s``: when robots.txt is asked again)."""

    error_type = "robots_unavailable"

    def __init__(self, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LLMTransientError(TransientError):
    error_type = "llm_unavailable"


class HTTPStatusError(PermanentError):
    def __init__(self, status: int, message: str = ""):
        super().__init__(message or f"HTTP {status}", error_type=f"http_{status}")
        self.status = status


class ResponseTooLarge(PermanentError):
    error_type = "too_large"


class UnsupportedContent(PermanentError):
    error_type = "unsupported_content"


class EmptyResponse(PermanentError):
    error_type = "empty_response"


class TooManyRedirects(PermanentError):
    error_type = "too_many_redirects"


class BlockedAddress(PermanentError):
    error_type = "blocked_address"


class TLSCertificateError(PermanentError):
    """Verification is always on: a bad certificate will not heal between retries."""

    error_type = "tls_certificate"


class TLSHandshakeError(PermanentError):
    """The server and Workbench could not agree on TLS (a handshake cut off by the network is a
    ``FetchConnectionError`` instead: a retry can help there)."""

    error_type = "tls_handshake"


class RobotsDisallowed(PermanentError):
    """robots.txt disallows the URL for Workbench's user agent; the message names the rule."""

    error_type = "robots_disallowed"


class InvalidPageURL(PermanentError):
    error_type = "invalid_url"


class NoMainContent(PermanentError):
    error_type = "no_main_content"


class ExtractionFailed(PermanentError):
    error_type = "extraction_failed"


class PageNotStored(PermanentError):
    error_type = "page_not_stored"


class LLMError(PermanentError):
    error_type = "llm_error"


class PipelineNotAvailable(PermanentError):
    error_type = "pipeline_not_available"


def error_type_of(exc: BaseException) -> str:
    """The stable error type recorded for any exception (a pipeline's own bug included)."""
    if isinstance(exc, PipelineError):
        return exc.error_type
    return type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, PipelineError) and exc.retryable
