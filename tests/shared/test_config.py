from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import Settings


def test_placeholder_and_short_secrets_are_refused(tmp_path: Path) -> None:
    for bad in ("changeme", "secret", "your-256-bit-secret", "short"):
        with pytest.raises(ValidationError, match="ONSEMBL_JWT_SECRET"):
            Settings(data_dir=tmp_path, jwt_secret=bad)


def test_generated_secret_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).secret()
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path).secret() == first
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_env_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONSEMBL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ONSEMBL_PORT", "9100")
    monkeypatch.setenv("ONSEMBL_DATABASE_URL", "postgresql://u:p@db/onsembl")
    settings = Settings()
    assert settings.port == 9100
    assert settings.sqlalchemy_url == "postgresql+asyncpg://u:p@db/onsembl"
    monkeypatch.setenv("ONSEMBL_REDIS_URL", "http://nope")
    with pytest.raises(ValidationError, match="ONSEMBL_REDIS_URL"):
        Settings()


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "onsembl.toml"
    config.write_text(f'data_dir = "{tmp_path}"\nport = 8123\n')
    monkeypatch.setenv("ONSEMBL_CONFIG", str(config))
    assert Settings().port == 8123
    monkeypatch.setenv("ONSEMBL_PORT", "8124")  # the environment wins over the file
    assert Settings().port == 8124
