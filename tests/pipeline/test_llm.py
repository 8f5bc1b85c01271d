"""LLMClient against an OpenAI-compatible test server on loopback.

The server implements ``POST /v1/chat/completions`` and answers from a script: it checks the
protocol (request shape, usage, retries, errors, pacing), not a model. A real LLM is what cannot
run here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from workbench.core.errors import LLMError, LLMTransientError, PermanentError
from workbench.core.settings import load_settings
from workbench.pipeline.llm import LLMClient, LLMReply, RateLimiter, prompt_fields, render_prompt


@dataclass
class FakeLLM:
    """Answers scripted responses in order; after the script, a normal completion."""

    script: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.times.append(time.monotonic())
        self.headers.append(dict(request.headers))
        body = await request.json()
        self.requests.append(body)
        if self.script:
            status, payload, headers = self.script.pop(0)
            if isinstance(payload, str):
                return web.Response(status=status, text=payload, headers=headers)
            return web.json_response(payload, status=status, headers=headers)
        prompt = body["messages"][-1]["content"]
        return web.json_response(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body.get("model", "fake-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"echo: {prompt}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": 3,
                    "total_tokens": len(prompt.split()) + 3,
                },
            }
        )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeLLM, str]]:
    llm = FakeLLM()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", llm.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield llm, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


def client_for(url: str, **kw: Any) -> LLMClient:
    settings_kw = {k: kw.pop(k) for k in list(kw) if k.startswith("llm_")}
    settings = load_settings(
        llm_url=url, llm_model="test-model", llm_api_key="sekret",
        llm_requests_per_minute=settings_kw.pop("llm_requests_per_minute", 6000), **settings_kw,
    )  # fmt: skip
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return LLMClient(settings, **kw)


async def test_success_records_usage(fake: tuple[FakeLLM, str]) -> None:
    llm, url = fake
    async with client_for(url) as client:
        reply = await client.complete("Summarise this page", system="Be brief.", max_tokens=20)
    assert isinstance(reply, LLMReply)
    assert reply.text == "echo: Summarise this page"
    assert reply.model == "test-model" and reply.finish_reason == "stop"
    assert reply.usage == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert reply.latency_s > 0 and reply.attempts == 1
    sent = llm.requests[0]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise this page"},
    ]
    assert sent["model"] == "test-model" and sent["max_tokens"] == 20 and sent["temperature"] == 0.0
    assert llm.headers[0]["Authorization"] == "Bearer sekret"
    assert reply.to_dict()["usage"]["total_tokens"] == 6


async def test_defaults_from_settings(fake: tuple[FakeLLM, str]) -> None:
    llm, url = fake
    async with client_for(url, llm_max_tokens=77) as client:
        await client.complete("hi", model="other-model")
    assert llm.requests[0]["max_tokens"] == 77 and llm.requests[0]["model"] == "other-model"


async def test_429_then_success_honours_retry_after(fake: tuple[FakeLLM, str]) -> None:
    llm, url = fake
    llm.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.4"})]
    async with client_for(url) as client:
        reply = await client.complete("again")
    assert reply.text == "echo: again" and reply.attempts == 2
    assert llm.times[1] - llm.times[0] >= 0.38  # waited as told, not the 0.01 s backoff


async def test_5xx_exhausted_is_transient(fake: tuple[FakeLLM, str]) -> None:
    llm, url = fake
    llm.script = [(500, "oops", {}), (502, "bad gateway", {}), (503, "busy", {})]
    async with client_for(url, max_attempts=3) as client:
        with pytest.raises(LLMTransientError, match=r"HTTP 503.*3 attempt") as info:
            await client.complete("x")
    assert info.value.retryable and info.value.error_type == "llm_unavailable"
    assert len(llm.requests) == 3


async def test_long_retry_after_defers_to_the_queue(fake: tuple[FakeLLM, str]) -> None:
    llm, url = fake
    llm.script = [(503, "maintenance", {"Retry-After": "600"})]
    async with client_for(url, retry_after_max_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(LLMTransientError) as info:
            await client.complete("x")
    assert time.monotonic() - started < 1.0 and len(llm.requests) == 1
    assert info.value.retry_after_s == 600


async def test_400_is_permanent(fake: tuple[FakeLLM, str]) -> None:
    llm, url = fake
    llm.script = [(400, {"error": {"message": "max_tokens is too large"}}, {})]
    async with client_for(url) as client:
        with pytest.raises(LLMError, match="HTTP 400: max_tokens is too large") as info:
            await client.complete("x")
    assert not info.value.retryable and len(llm.requests) == 1


@pytest.mark.parametrize(
    "payload",
    ["{not json", {"choices": []}, {"choices": [{"message": {"content": None}}]}, {"object": "x"}],
    ids=["bad-json", "no-choices", "null-content", "no-choices-key"],
)
async def test_malformed_answer_is_llm_error(fake: tuple[FakeLLM, str], payload: Any) -> None:
    llm, url = fake
    headers = {"Content-Type": "application/json"} if isinstance(payload, str) else {}
    llm.script = [(200, payload, headers)]
    async with client_for(url) as client:
        with pytest.raises(LLMError):
            await client.complete("x")
    assert len(llm.requests) == 1


async def test_unreachable_endpoint_is_transient() -> None:
    async with client_for("http://127.0.0.1:9/v1", max_attempts=2) as client:
        with pytest.raises(LLMTransientError, match="unreachable"):
            await client.complete("x")


async def test_rate_limit_spaces_requests(fake: tuple[FakeLLM, str]) -> None:
    import asyncio

    llm, url = fake
    async with client_for(url, llm_requests_per_minute=600) as client:  # one per 0.1 s
        await asyncio.gather(*(client.complete(f"q{i}") for i in range(4)))
    gaps = [b - a for a, b in zip(llm.times, llm.times[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.08  # arrival times jitter on a busy machine


async def test_rate_limiter_burst() -> None:
    """A burst of 3 goes at once (the acquisitions never suspend); the 4th waits its slot. One a
    second: no clock reading on a loaded machine comes near that."""

    def at_once(acquire: Any) -> bool:
        try:
            acquire.send(None)
        except StopIteration:
            return True
        acquire.close()  # it suspended: it would have slept
        return False

    limiter = RateLimiter(60, burst=3)
    assert [at_once(limiter.acquire()) for _ in range(4)] == [True, True, True, False]
    plain = RateLimiter(60)  # no burst: the first at once, the next a second later
    assert [at_once(plain.acquire()) for _ in range(2)] == [True, False]


def test_not_configured() -> None:
    with pytest.raises(PermanentError, match="LLM step is not configured: set WORKBENCH_LLM_URL"):
        LLMClient(load_settings(llm_url=None))


def test_render_prompt() -> None:
    template = "Title: {title}\nWords: {words:,}\nSummarise in {{three}} lines."
    assert render_prompt(template, title="Depot", words=1200) == (
        "Title: Depot\nWords: 1,200\nSummarise in {three} lines."
    )
    assert prompt_fields(template) == ["title", "words"]
    with pytest.raises(PermanentError, match=r"needs field 'words'.*given: title"):
        render_prompt(template, title="Depot")
    with pytest.raises(PermanentError, match="malformed prompt template"):
        render_prompt("Unclosed {title", title="x")
