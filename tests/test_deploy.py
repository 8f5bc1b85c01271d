"""deploy/: compose.yaml and the Dockerfile name only real commands, flags and settings.

No Docker engine here: the files are parsed and checked against DESIGN.md §3/§5/§8 and the code.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from workbench.core.settings import Settings  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# DESIGN.md §5 (contract)
SUBCOMMANDS = {"submit", "status", "results", "failures", "retry", "cancel", "demo", "serve", "cleanup"}
WORKER_FLAGS = {"--processes": True, "--concurrency": True, "--burst": False, "--pipelines": True}
SERVE_FLAGS = {"--host": True, "--port": True}
VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as if only required ones were set."""
    return VAR.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "set-by-operator", value)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def check_flags(args: list[str], allowed: dict[str, bool]) -> dict[str, str | None]:
    seen: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        assert flag in allowed, f"{flag} is not a documented flag ({sorted(allowed)})"
        if allowed[flag] and not value:
            i += 1
            value = args[i]
        seen[flag] = value or None
        i += 1
    return seen


def check_workbench_command(args: list[str]) -> None:
    assert args[:2] == ["python", "-m"], args
    if args[2] == "workbench.worker":
        check_flags(args[3:], WORKER_FLAGS)
        from workbench.worker.__main__ import parse_args

        parse_args(args[3:])  # the real parser accepts them too
    else:
        assert args[2] == "workbench" and args[3] in SUBCOMMANDS, args
        if args[3] == "serve":
            check_flags(args[4:], SERVE_FLAGS)


def test_five_roles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in argv(services["redis"]["command"])
    assert argv(services["redis"]["command"])[argv(services["redis"]["command"]).index("--appendonly") + 1] == "yes"
    assert services["postgres"]["image"].startswith("postgres:16")
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name
        assert any(v.endswith(("/data", "/var/lib/postgresql/data")) for v in services[name]["volumes"])
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert {d: deps[d]["condition"] for d in deps} == {"redis": "service_healthy", "postgres": "service_healthy"}
        build = services[name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert (context / "pyproject.toml").is_file() and (context / build["dockerfile"]).is_file()


def test_commands_are_real(compose: dict[str, Any], dockerfile: list[tuple[str, str]]) -> None:
    services = compose["services"]
    assert argv(services["api"]["command"])[:4] == ["python", "-m", "workbench", "serve"]
    assert argv(services["worker"]["command"])[:3] == ["python", "-m", "workbench.worker"]
    for service in services.values():
        if "build" in service:
            check_workbench_command(argv(service["command"]))
    cmd = [args for instr, args in dockerfile if instr == "CMD"][-1]
    check_workbench_command(json.loads(cmd))
    assert json.loads(cmd) == ["python", "-m", "workbench.worker"]


def test_every_workbench_variable_is_a_setting(compose: dict[str, Any]) -> None:
    texts = [(DEPLOY / n).read_text() for n in ("compose.yaml", "Dockerfile", "README.md")]
    used = set(re.findall(r"\bWORKBENCH_[A-Z0-9_]+", "\n".join(texts)))
    assert "WORKBENCH_API_TOKEN" in used and "WORKBENCH_DATABASE_URL" in used
    unknown = {v for v in used if v[len("WORKBENCH_"):].lower() not in Settings.model_fields}
    assert not unknown, f"not fields of workbench.core.settings.Settings: {sorted(unknown)}"


def test_service_settings_validate(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in [v for v in os.environ if v.startswith("WORKBENCH_")]:
        monkeypatch.delenv(var)
    for name in ("api", "worker"):
        env = {k: interpolate(v) for k, v in env_of(compose["services"][name]).items()}
        fields = {k[len("WORKBENCH_"):].lower(): v for k, v in env.items() if k.startswith("WORKBENCH_")}
        settings = Settings(**fields)
        assert settings.database_url == "postgresql+asyncpg://workbench:workbench@postgres:5432/workbench"
        assert settings.redis_url == "redis://redis:6379/0"
        assert str(settings.data_dir) == "/data"


def test_api_on_all_interfaces_requires_a_token(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        args = argv(service.get("command") or [])
        if args[2:4] != ["workbench", "serve"]:
            continue
        host = check_flags(args[4:], SERVE_FLAGS).get("--host") or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1"):
            token = env_of(service).get("WORKBENCH_API_TOKEN", "")
            m = VAR.fullmatch(token)
            assert m and m.group(2) == ":?", f"{name} binds {host}: WORKBENCH_API_TOKEN must be required"
    assert "8000:8000" in [str(p) for p in compose["services"]["api"]["ports"]]


def test_dockerfile(dockerfile: list[tuple[str, str]]) -> None:
    instr = dict(dockerfile)  # last of each kind
    assert [a for i, a in dockerfile if i == "FROM"] == ["python:3.11-slim"]
    assert any(i == "RUN" and re.search(r"pip install [\"']?\.\[api\]", a) for i, a in dockerfile)
    assert instr["USER"] not in ("root", "0")
    env = " ".join(a for i, a in dockerfile if i == "ENV")
    assert "WORKBENCH_DATA_DIR=/data" in env
    assert json.loads(instr["VOLUME"]) == ["/data"]
