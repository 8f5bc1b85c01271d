"""The event loop an entry point runs on: uvloop's when it is installed, else asyncio's own.

A worker's main process is mostly wake-ups (a fetch, a Redis call, a thread's or a process's
answer: ~35 rounds of the event loop per article page) more than computation, and asyncio's
loop is Python: uvloop runs the same rounds in C (libuv). ``WORKBENCH_EVENT_LOOP`` chooses:
``auto`` (uvloop when importable; it has no Windows build), ``uvloop`` (required: an error if it
is missing), ``asyncio``. Measured in ``benchmarks/NOTES.md`` (session 12).

Entry points only (``python -m workbench.worker``, the CLI, the HTTP server): ``run`` makes a
loop for one call through ``asyncio.Runner``'s ``loop_factory``; nothing sets a global event
loop policy, and a notebook's or an embedding application's loop is never replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

from workbench.core.errors import SettingsError

T = TypeVar("T")

#: the type of ``Settings.event_loop``; ``CHOICES`` are its values
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
CHOICES: tuple[str, ...] = get_args(EventLoopChoice)


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory of new loops for ``asyncio.Runner`` (None: asyncio's default loop)."""
    if choice not in CHOICES:
        raise SettingsError(f"event_loop must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SettingsError(
                "event_loop is 'uvloop' (WORKBENCH_EVENT_LOOP) but uvloop is not installed: "
                "pip install uvloop (Linux and macOS), or set it to 'auto' or 'asyncio'"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(choice: str = "auto") -> str:
    """'uvloop' or 'asyncio': what ``run`` with ``choice`` runs on."""
    return "asyncio" if loop_factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    try:
        factory = loop_factory(choice)
    except BaseException:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
