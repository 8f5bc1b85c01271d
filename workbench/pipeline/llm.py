"""A small client for any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama,
OpenAI itself...).

Off unless ``WORKBENCH_LLM_URL`` is set. Requests are spaced by a per-client rate limiter
(``llm_requests_per_minute``; use one client per worker process). 408/429/5xx, timeouts and
connection errors are retried with the shared backoff (``core.backoff``: exponential, jittered,
a ``Retry-After`` as its floor); when the tries run out the item gets ``LLMTransientError`` so the
queue retries it later. Other 4xx and
malformed answers are ``LLMError`` (permanent).
"""

from __future__ import annotations

import asyncio
import json
import string
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from workbench.core.backoff import backoff_s, parse_retry_after
from workbench.core.errors import LLMError, LLMTransientError, PermanentError

_RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class LLMReply:
    """One completion: the text, the model that answered, token usage and wall time."""

    text: str
    model: str | None
    usage: dict[str, int | None] = field(default_factory=dict)
    latency_s: float = 0.0
    finish_reason: str | None = None
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_prompt(template: str, **fields: Any) -> str:
    """``template.format_map(fields)``, with an error that names a missing field."""
    try:
        return template.format_map(fields)
    except KeyError as exc:
        name = exc.args[0] if exc.args else "?"
        raise PermanentError(
            f"prompt template needs field {name!r}, which was not given "
            f"(given: {', '.join(sorted(fields)) or 'none'})",
            error_type="prompt_field_missing",
        ) from None
    except (IndexError, ValueError) as exc:
        raise PermanentError(
            f"malformed prompt template ({exc}); use named fields like {{title}} and write a "
            "literal brace as {{ or }}",
            error_type="prompt_template_invalid",
        ) from None


def prompt_fields(template: str) -> list[str]:
    """The named fields a template uses, in order of first use."""
    names: list[str] = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            root = name.split(".", 1)[0].split("[", 1)[0]
            if root not in names:
                names.append(root)
    return names


class RateLimiter:
    """Spaces acquisitions ``60 / per_minute`` seconds apart, allowing a burst of ``burst``.

    A generic cell-rate algorithm: each caller reserves the next free slot without a lock, which is
    safe because the event loop runs one coroutine at a time.
    """

    def __init__(self, per_minute: float, *, burst: int = 1) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.interval_s = 60.0 / per_minute
        self.burst = max(1, burst)
        self._next = float("-inf")

    async def acquire(self) -> None:
        now = time.monotonic()
        slot = max(now - (self.burst - 1) * self.interval_s, self._next)
        self._next = slot + self.interval_s
        if slot > now:
            await asyncio.sleep(slot - now)


class LLMClient:
    """Chat completions against ``settings.llm_url`` (a base URL such as ``http://host:8000/v1``).

    The aiohttp session is created on first use and owned by the client: ``await close()``.
    """

    def __init__(
        self,
        settings: Any,
        *,
        max_attempts: int = 4,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 30.0,
    ) -> None:
        url = getattr(settings, "llm_url", None)
        if not url:
            raise PermanentError(
                "LLM step is not configured: set WORKBENCH_LLM_URL "
                "(an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1)",
                error_type="llm_not_configured",
            )
        url = url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model: str | None = getattr(settings, "llm_model", None)
        self.max_tokens: int = int(getattr(settings, "llm_max_tokens", 512))
        self.timeout_s: float = float(getattr(settings, "llm_timeout_s", 60.0))
        key: Any = getattr(settings, "llm_api_key", None)  # a SecretStr in Settings
        self._api_key: str | None = (
            key.get_secret_value() if hasattr(key, "get_secret_value") else key
        )
        self.limiter = RateLimiter(float(getattr(settings, "llm_requests_per_minute", 60.0)))
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        # A longer Retry-After than this is not slept through: the item is deferred by the queue.
        self.retry_after_max_s = retry_after_max_s
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"LLMClient({self.endpoint!r}, model={self.model!r})"

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def complete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.0,
    ) -> LLMReply:
        """One chat completion of ``prompt`` (with an optional system message)."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        payload: dict[str, Any] = {
            "messages": messages,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": temperature,
        }
        if model or self.model:
            payload["model"] = model or self.model  # some servers serve one model and need none

        started = time.monotonic()
        last: LLMTransientError | None = None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self._delay(attempt - 1, last))
            await self.limiter.acquire()
            try:
                data = await self._post(payload)
            except LLMTransientError as exc:
                last = exc
                if exc.retry_after_s is not None and exc.retry_after_s > self.retry_after_max_s:
                    break  # the server wants a long pause: let the queue defer the item
                continue
            return _parse_reply(data, payload.get("model"), time.monotonic() - started, attempt)
        assert last is not None
        err = LLMTransientError(
            f"{last} (gave up after {attempt} attempt(s) in {time.monotonic() - started:.1f} s)"
        )
        err.retry_after_s = last.retry_after_s  # the queue defers the item's retry accordingly
        raise err from last

    # -- internals --

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    async def _post(self, payload: dict[str, Any]) -> Any:
        """One request. Raises LLMTransientError (retry) or LLMError (give up)."""
        session = self._get_session()
        try:
            async with session.post(self.endpoint, json=payload) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise LLMTransientError(f"LLM endpoint timed out after {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise LLMTransientError(
                f"LLM endpoint unreachable: {type(exc).__name__}: {exc}"
            ) from exc

        if status in _RETRY_STATUSES or status >= 500:
            err = LLMTransientError(f"LLM endpoint answered HTTP {status}: {_snippet(body)}")
            err.retry_after_s = retry_after
            raise err
        if status >= 400:
            raise LLMError(f"LLM endpoint refused the request: HTTP {status}: {_snippet(body)}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise LLMError(f"LLM endpoint answered malformed JSON: {_snippet(body)}") from exc

    def _delay(self, retry: int, last: LLMTransientError | None) -> float:
        # Jitter spreads many workers' retries; a Retry-After is a floor (capped, see __init__).
        return backoff_s(
            retry,
            self.backoff_base_s,
            self.backoff_max_s,
            retry_after_s=last.retry_after_s if last is not None else None,
            retry_after_max_s=self.retry_after_max_s,
        )


def _parse_reply(
    data: Any, requested_model: str | None, latency_s: float, attempts: int
) -> LLMReply:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}, not a string")
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMError(
            f"LLM answer is not a chat completion ({type(exc).__name__}: {exc}): "
            f"{_snippet(json.dumps(data).encode())}"
        ) from None
    raw_usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    usage: dict[str, int | None] = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = raw_usage.get(key)
        usage[key] = int(value) if isinstance(value, (int, float)) else None
    prompt_tokens, completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    if usage["total_tokens"] is None and None not in (prompt_tokens, completion_tokens):
        usage["total_tokens"] = (prompt_tokens or 0) + (completion_tokens or 0)
    model = data.get("model") if isinstance(data.get("model"), str) else requested_model
    return LLMReply(
        text=text,
        model=model,
        usage=usage,
        latency_s=round(latency_s, 4),
        finish_reason=choice.get("finish_reason") if isinstance(choice, dict) else None,
        attempts=attempts,
    )


def _snippet(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:  # OpenAI-style {"error": {"message": ...}}
        err = json.loads(text).get("error")
        if isinstance(err, dict) and err.get("message"):
            text = str(err["message"])
        elif isinstance(err, str):
            text = err
    except (ValueError, AttributeError):
        pass
    return (text[:limit] + "…") if len(text) > limit else (text or "(empty body)")
