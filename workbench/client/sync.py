"""A synchronous facade derived from the async API (never written out twice by hand).

``SyncProxy`` wraps a ``Workbench`` or ``Batch``: every coroutine method becomes a blocking call,
and returned ``Batch`` objects are wrapped too. With no running event loop (a script), calls run on
a private loop kept for the proxy's lifetime, so connections stay bound to one loop. Inside a
running loop (a Jupyter widget callback), nest-asyncio lets the call complete on that loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Coroutine
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
    """Blocking view of an async object; attribute access passes through."""

    def __init__(self, target: Any, runner: SyncRunner):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    def _wrap(self, value: Any) -> Any:
        from workbench.client.workbench import Batch, Workbench

        if isinstance(value, (Batch, Workbench)):
            return SyncProxy(value, self._runner)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):

            @functools.wraps(attr)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._wrap(self._runner.run(attr(*args, **kwargs)))

            return call
        if name == "sync":
            return self
        return self._wrap(attr) if not callable(attr) else attr

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
        from workbench.client.workbench import Workbench

        if isinstance(self._target, Workbench):
            self._runner.run(self._target.close())
            self._runner.close()


def SyncWorkbench(**settings: Any) -> SyncProxy:  # noqa: N802 - reads like a class to users
    """``with SyncWorkbench() as wb: batch = wb.submit(urls); batch.wait()`` for plain scripts."""
    from workbench.client.workbench import Workbench

    return SyncProxy(Workbench(**settings), SyncRunner())
