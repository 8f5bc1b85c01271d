"""Fixtures of the surface tests: the CLI in subprocesses, a loopback SMTP server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import pipelines  # noqa: F401 - registers "surf" in this process

REPO = Path(__file__).resolve().parents[2]
# "tests.surfaces.pipelines" (or "surfaces.pipelines" without tests/__init__.py), importable in
# subprocesses from IMPORT_ROOT
PIPELINES = f"{__package__}.pipelines"
IMPORT_ROOT = Path(__file__).resolve().parents[len(__package__.split("."))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(settings: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m workbench`` subprocess on the test's backend."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    for key, value in (settings or {}).items():
        env[f"WORKBENCH_{key.upper()}"] = str(value)
    env["WORKBENCH_PIPELINES"] = PIPELINES
    env["PYTHONPATH"] = os.pathsep.join([str(IMPORT_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["COLUMNS"] = "200"
    # a CLI that hangs is killed with SIGABRT by ``interrupt``: faulthandler then writes every
    # thread's stack to its stderr, so the failure says where it hung
    env["PYTHONFAULTHANDLER"] = "1"
    env.update(extra)
    return env


#: ``python -m workbench`` as a terminal starts it, for the tests that press Ctrl-C: SIGINT
#: raises KeyboardInterrupt. A suite started in the background by a non-interactive shell
#: (``pytest ... &`` in a script) runs with SIGINT ignored, every child inherits that, and Python
#: keeps an inherited SIG_IGN: such a CLI never saw the test's Ctrl-C and hung (loaded runs
#: started so, last session and this one; /proc/<pid>/status SigIgn showed it).
CLI = (sys.executable, "-c",
       "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "runpy.run_module('workbench', run_name='__main__', alter_sys=True)")


async def interrupt(
    proc: asyncio.subprocess.Process, timeout: float = 60
) -> tuple[bytes, bytes, int]:
    """Ctrl-C (SIGINT) to a CLI subprocess started with pipes (and with ``CLI``, so that it
    takes the signal whatever started the suite): ``(stdout, stderr, exit code)`` once it
    exits. One still running after ``timeout`` seconds fails the test with the stack of
    each of its threads (SIGABRT to faulthandler, see ``cli_env``), not a bare TimeoutError."""
    proc.send_signal(signal.SIGINT)
    done = asyncio.ensure_future(proc.communicate())
    try:
        out, err = await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = await asyncio.wait_for(done, 30)
        finally:
            if proc.returncode is None:
                proc.kill()
        raise AssertionError(f"still running {timeout:g}s after Ctrl-C; its threads "
                             f"(faulthandler) and stderr:\n{err.decode(errors='replace')[-6000:]}"
                             ) from None
    assert proc.returncode is not None
    return out, err, proc.returncode


async def run_cli(
    *args: str, env: dict[str, str], stdin: bytes | None = None, timeout: float = 90,
    cwd: Path | None = None,
) -> tuple[int, str, str]:
    """Run ``python -m workbench ARGS``; returns (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workbench", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        cwd=str(cwd or REPO),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="surrogateescape"), err.decode()


def assert_clean_error(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "error:" in stderr, stderr


class Inbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes
        from email.policy import default

        msg = message_from_bytes(envelope.content, policy=default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


class SmtpServer:
    """A real SMTP server on loopback (aiosmtpd), startable on a fixed port, stoppable."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.inbox = Inbox()
        self._controller: Any = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()
