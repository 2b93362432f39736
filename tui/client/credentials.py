"""The signed-in user's tokens, in a 0600 file in the user's config dir.

``onsembl-tui login EMAIL`` writes it; the TUI reads it, refreshes the access token (15 min) with the
rotating refresh token (7 days) before it runs out, and writes the new pair back, still 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ValidationError

from shared.api import TokenPair

#: Refresh this long before the access token expires.
REFRESH_MARGIN_S = 60.0


def default_path() -> Path:
    override = os.environ.get("ONSEMBL_CREDENTIALS_FILE")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir("onsembl")) / "credentials.json"


class Credentials(BaseModel):
    server_url: str
    email: str
    access_token: str
    refresh_token: str | None = None
    #: Unix time at which the access token expires.
    expires_at: float = 0.0

    @classmethod
    def from_pair(cls, server_url: str, pair: TokenPair) -> Credentials:
        return cls(
            server_url=server_url,
            email=pair.email,
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_at=time.time() + pair.expires_in,
        )

    def needs_refresh(self, now: float | None = None) -> bool:
        if not self.refresh_token or not self.expires_at:
            return False
        return (now or time.time()) >= self.expires_at - REFRESH_MARGIN_S


class CredentialsError(Exception):
    pass


def load(path: Path | None = None) -> Credentials | None:
    path = path or default_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc}") from exc
    try:
        return Credentials.model_validate_json(text)
    except ValidationError as exc:
        raise CredentialsError(
            f"{path} is not a credentials file; sign in again ({exc.error_count()} errors)"
        ) from exc


def save(credentials: Credentials, path: Path | None = None) -> Path:
    """Write atomically with mode 0600 from the start: the token is never readable by others."""
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(credentials.model_dump(), indent=2))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path
