"""A synchronous facade derived from the async API (never written out twice by hand).

``SyncProxy`` wraps an async object: every coroutine method becomes a blocking call, every async
generator method (``batch.iter_results``) a plain generator, and returned values of the types it
is told to wrap are wrapped too (the client passes ``Workbench`` and ``Batch``, so this module
imports nothing of the client). With no running event loop (a script),
calls run on a private loop kept for the proxy's lifetime, so connections stay bound to one loop.
Inside a running loop (a Jupyter widget callback), nest-asyncio lets the call complete on that loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class SyncRunner:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            import nest_asyncio

            nest_asyncio.apply(loop)
            return loop.run_until_complete(coro)
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()


class SyncProxy:
    """Blocking view of an async object; attribute access passes through. Values of the types in
    ``wraps`` (returned by a call or read as an attribute) come back as proxies too."""

    def __init__(self, target: Any, runner: SyncRunner, wraps: tuple[type, ...] = ()):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)
        object.__setattr__(self, "_wraps", wraps)

    def _wrap(self, value: Any) -> Any:
        if self._wraps and isinstance(value, self._wraps):
            return SyncProxy(value, self._runner, self._wraps)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.isasyncgenfunction(attr):

            @functools.wraps(attr)
            def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return self._iterate(attr(*args, **kwargs))

            return iterate
        if inspect.iscoroutinefunction(attr):

            @functools.wraps(attr)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._wrap(self._runner.run(attr(*args, **kwargs)))

            return call
        if name == "sync":
            return self
        return self._wrap(attr) if not callable(attr) else attr

    def _iterate(self, agen: AsyncGenerator[Any, None]) -> Iterator[Any]:
        """An async generator (``iter_results``) as a blocking one, a step per item."""

        async def step() -> Any:
            return await agen.__anext__()

        try:
            while True:
                try:
                    item = self._runner.run(step())
                except StopAsyncIteration:
                    return
                yield self._wrap(item)
        finally:
            self._runner.run(agen.aclose())

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"

    def _repr_html_(self) -> str | None:
        fn = getattr(self._target, "_repr_html_", None)
        return fn() if fn else None

    def __enter__(self) -> SyncProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the target if it can be closed (a Workbench: not a Batch), then the loop."""
        close = getattr(self._target, "close", None)
        if inspect.iscoroutinefunction(close):
            self._runner.run(close())
            self._runner.close()
