"""Settings: env + keywords, validated at start-up, errors name the setting."""

from __future__ import annotations

import pytest

from workbench import Workbench
from workbench.core.errors import SettingsError
from workbench.core.settings import load_settings


def test_defaults_and_derived(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.resolved_data_dir == tmp_path / "data"
    assert s.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'workbench.db'}"
    assert s.uses_embedded_redis and s.embedded_redis_dir == tmp_path / "data" / "redis"


def test_env_and_keywords(monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_MAX_TRIES", "7")
    monkeypatch.setenv("WORKBENCH_PIPELINES", " json , os.path ,")
    s = load_settings(max_tries=9)
    assert s.max_tries == 9  # keywords win
    assert s.pipeline_modules == ["json", "os.path"]
    assert load_settings(database_url="postgresql://u@h/db").database_url == (
        "postgresql+asyncpg://u@h/db"
    )


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("WORKBENCH_MAX_TRIES", "many", "WORKBENCH_MAX_TRIES"),
        ("WORKBENCH_MAX_TRIES", "0", "WORKBENCH_MAX_TRIES"),
        ("WORKBENCH_DATABASE_URL", "mysql://x/y", "sqlite+aiosqlite"),
        ("WORKBENCH_REDIS_URL", "http://x", "redis://"),
        ("WORKBENCH_PIPELINES", "my-module", "not an importable module name"),
        ("WORKBENCH_SMTP_URL", "mail.example.org", "smtp://"),
        ("WORKBENCH_OBEY_ROBOTS", "perhaps", "WORKBENCH_OBEY_ROBOTS"),
    ],
)
def test_malformed_env_names_the_setting(monkeypatch, env, value, needle) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert needle in str(err.value)


def test_unknown_settings_fail_loudly(monkeypatch) -> None:
    monkeypatch.setenv("WORKBENCH_MAX_TRYS", "3")
    with pytest.raises(SettingsError, match="WORKBENCH_MAX_TRYS"):
        load_settings()
    monkeypatch.delenv("WORKBENCH_MAX_TRYS")
    with pytest.raises(SettingsError, match="max_trys"):
        Workbench(max_trys=3)


def test_missing_pipeline_module_is_a_settings_error(tmp_path) -> None:
    with pytest.raises(SettingsError, match="no_such_module_here"):
        Workbench(data_dir=str(tmp_path), pipelines="no_such_module_here")


def test_secrets_masked() -> None:
    s = load_settings(api_token="t0ken", redis_url="redis://:pw@127.0.0.1:6379/0")
    d = s.describe()
    assert d["api_token"] == "***" and "pw" not in d["redis_url"]
