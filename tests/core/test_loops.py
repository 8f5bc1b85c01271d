"""The entry points' event loop (``core.loops``): uvloop when installed, asyncio's on request,
a clear error for a bad choice or a missing uvloop; never a global policy."""

from __future__ import annotations

import asyncio
import sys

import pytest

from workbench.core import loops
from workbench.core.errors import SettingsError

uvloop = pytest.importorskip("uvloop")  # a dependency wherever it has a build (not Windows)


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"),
                                                  ("asyncio", "asyncio")])
def test_run_on_the_chosen_loop(choice: str, expected: str) -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert loops.run(which(), choice) == expected
    assert loops.loop_name(choice) == expected


def test_no_global_policy_is_set() -> None:
    before = asyncio.get_event_loop_policy()

    async def nothing() -> None:
        return None

    loops.run(nothing(), "uvloop")
    assert asyncio.get_event_loop_policy() is before
    assert not isinstance(before, uvloop.EventLoopPolicy)


def test_a_bad_choice_is_named() -> None:
    async def never() -> None:
        raise AssertionError("must not run")

    coro = never()
    with pytest.raises(SettingsError, match="'libuv'"):
        loops.run(coro, "libuv")
    assert coro.cr_frame is None  # closed: no "never awaited" warning


def test_uvloop_asked_for_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed
    assert loops.loop_factory("auto") is None
    assert loops.loop_name("auto") == "asyncio"
    with pytest.raises(SettingsError, match="pip install uvloop"):
        loops.loop_factory("uvloop")


def test_the_setting_refuses_other_values() -> None:
    from workbench.core.settings import load_settings

    assert load_settings().event_loop == "auto"
    assert load_settings(event_loop="asyncio").event_loop == "asyncio"
    with pytest.raises(SettingsError, match="event_loop"):
        load_settings(event_loop="libuv")
