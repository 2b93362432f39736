"""``onsembl doctor``: each check against real things (the bundled redis-server, SQLite files in tmp
dirs, sockets, programs on PATH), and the command's output, JSON and exit code."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from server import doctor
from server.db.session import upgrade
from server.doctor import Check, Status
from server.redis_embedded import EmbeddedRedis
from shared.config import Settings
from tests.harness import BIN, HubProcess, free_port, timeout

NAMES = ["python", "settings", "data dir", "secret", "redis", "database", "port", "claude", "gemini", "codex"]


def fake_program(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def doctor_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a first run: nothing set but the data dir, no config file, and a PATH with
    a fake ``claude`` that prints a version (and no gemini or codex)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
    fakes = tmp_path / "bin"
    fake_program(fakes, "claude", 'echo "2.1.71 (Claude Code)"')
    env.update(
        ONSEMBL_DATA_DIR=str(tmp_path / "data"),
        ONSEMBL_PORT=str(free_port()),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        # Only the fakes: a real gemini or codex (npm puts them in /usr/local/bin) would change the
        # statuses, and nothing else needs PATH (the scripts' shebangs and redis-server are absolute).
        PATH=str(fakes),
    )
    env.update(overrides)
    return env


def run_doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "onsembl"), "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(60),
    )


def parse(done: subprocess.CompletedProcess[str]) -> tuple[bool, dict[str, Check]]:
    body: dict[str, Any] = json.loads(done.stdout)
    checks = [Check.model_validate(c) for c in body["checks"]]
    assert [c.name for c in checks] == NAMES, done.stdout
    for c in checks:
        assert bool(c.fix) == (c.status is not Status.OK), c
    return body["ok"], by_name(checks)


# ---- the command ----------------------------------------------------------------------------------


def test_a_fresh_machine_passes_and_nothing_is_changed(tmp_path: Path) -> None:
    env = doctor_env(tmp_path)
    done = run_doctor(env, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    passed, checks = parse(done)
    assert passed
    for name in ("python", "settings", "data dir", "secret", "redis", "database", "port", "claude"):
        assert checks[name].status is Status.OK, checks[name]
    assert "does not exist yet" in checks["data dir"].detail
    assert "generated into" in checks["secret"].detail
    assert "bundled redis-server 6." in checks["redis"].detail
    assert "does not exist yet" in checks["database"].detail
    assert "2.1.71 (Claude Code)" in checks["claude"].detail
    assert checks["gemini"].status is Status.WARN
    assert "npm install -g @google/gemini-cli" in checks["gemini"].fix
    assert "npm install -g @openai/codex" in checks["codex"].fix
    # It only looked: no data dir, no secret, no database, no redis-server left running.
    assert not (tmp_path / "data").exists()
    assert not [p for p in psutil.Process().children(recursive=True) if "redis" in p.name()]

    text = run_doctor(env)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].startswith("OK    python")
    warned = [i for i, line in enumerate(lines) if line.startswith("WARN  gemini")]
    assert warned and lines[warned[0] + 1].strip().startswith("fix: install it: npm install -g")
    assert lines[-1] == "8 OK, 2 WARN, 0 FAIL"


def test_a_placeholder_secret_fails_and_the_other_checks_still_run(tmp_path: Path) -> None:
    done = run_doctor(doctor_env(tmp_path, ONSEMBL_JWT_SECRET="changeme"), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    passed, checks = parse(done)
    assert not passed
    assert checks["secret"].status is Status.FAIL
    assert "placeholder" in checks["secret"].detail
    assert "export ONSEMBL_JWT_SECRET=" in checks["secret"].fix
    assert "changeme" not in done.stdout
    assert checks["settings"].status is Status.OK  # reported once, by the secret check
    assert checks["redis"].status is Status.OK
    assert checks["database"].status is Status.OK

    text = run_doctor(doctor_env(tmp_path, ONSEMBL_JWT_SECRET="too-short"))
    assert text.returncode == 1
    assert "FAIL  secret    ONSEMBL_JWT_SECRET must be at least 32 bytes" in text.stdout


def test_invalid_settings_are_named_and_the_defaults_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in doctor_env(tmp_path, ONSEMBL_PORT="eighty", ONSEMBL_REDIS_URL="http://x").items():
        monkeypatch.setenv(key, value)
    checks = by_name(doctor.run_checks())
    assert checks["settings"].status is Status.FAIL
    assert "ONSEMBL_PORT" in checks["settings"].detail
    assert "ONSEMBL_PORT" in checks["settings"].fix
    assert checks["redis"].status is Status.FAIL
    assert "ONSEMBL_REDIS_URL must start with redis://" in checks["redis"].detail
    assert ":8700" in checks["port"].detail  # the default, not "eighty"

    monkeypatch.delenv("ONSEMBL_PORT")
    monkeypatch.delenv("ONSEMBL_REDIS_URL")
    config = tmp_path / "broken.toml"
    config.write_text("port = [\n")
    monkeypatch.setenv("ONSEMBL_CONFIG", str(config))
    checks = by_name(doctor.run_checks())
    assert checks["settings"].status is Status.FAIL
    assert str(config) in checks["settings"].detail and "unset ONSEMBL_CONFIG" in checks["settings"].fix


@pytest.fixture
def running_hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub", workers=1).start()
    yield process
    process.stop()
    process.shutdown_redis()


def test_against_a_running_hub(running_hub: HubProcess, tmp_path: Path) -> None:
    """With the hub's settings: its Redis answers, its database is at the head revision, its port is
    taken by a hub (OK, with a note)."""
    running_hub.user_token()  # the secret is generated on first use
    env = doctor_env(tmp_path, **{k: v for k, v in running_hub.env.items() if k.startswith("ONSEMBL_")})
    env["ONSEMBL_PORT"] = str(running_hub.port)
    done = run_doctor(env, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    _, checks = parse(done)
    assert "already running" in checks["redis"].detail
    assert checks["database"].status is Status.OK
    assert "latest revision" in checks["database"].detail
    assert checks["port"].status is Status.OK
    assert "running Onsembl hub" in checks["port"].detail
    assert "generated secret in" in checks["secret"].detail


# ---- one check at a time --------------------------------------------------------------------------


def test_python_version() -> None:
    assert doctor.check_python().status is Status.OK
    old = doctor.check_python((3, 10, 12), "/usr/bin/python3.10")
    assert old.status is Status.FAIL
    assert "3.10.12" in old.detail and "3.11" in old.fix
    assert doctor.check_python((3, 11, 0), "/x").status is Status.OK


def test_data_dir(tmp_path: Path) -> None:
    assert doctor.check_data_dir(tmp_path).status is Status.OK
    assert "is writable" in doctor.check_data_dir(tmp_path).detail
    assert not list(tmp_path.iterdir())  # the probe file is gone
    assert "does not exist yet" in doctor.check_data_dir(tmp_path / "a" / "b").detail

    blocker = tmp_path / "file"
    blocker.write_text("x")
    for path in (blocker, blocker / "data"):
        result = doctor.check_data_dir(path)
        assert result.status is Status.FAIL, result
        assert "ONSEMBL_DATA_DIR" in result.fix

    low = doctor.check_data_dir(tmp_path, warn_below=1 << 62)
    assert low.status is Status.WARN and "free" in low.detail
    assert doctor.check_data_dir(tmp_path, warn_below=1 << 62, fail_below=1 << 61).status is Status.FAIL


def test_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert "generated into" in doctor.check_secret(settings).detail
    settings.secret()  # as the hub does on first start
    assert doctor.check_secret(settings).status is Status.OK
    settings.secret_file.chmod(0o644)
    loose = doctor.check_secret(settings)
    assert loose.status is Status.WARN and loose.fix == f"chmod 600 {settings.secret_file}"
    settings.secret_file.write_text("short")
    short = doctor.check_secret(settings)
    assert short.status is Status.WARN and "shorter than 32 bytes" in short.detail

    configured = Settings(data_dir=tmp_path, jwt_secret="k" * 40)
    assert doctor.check_secret(configured).detail == "ONSEMBL_JWT_SECRET is set (40 bytes)"
    _, problems = doctor.load_settings(data_dir=tmp_path, jwt_secret="your-256-bit-secret")
    refused = doctor.check_secret(Settings(data_dir=tmp_path), problems["jwt_secret"])
    assert refused.status is Status.FAIL and "placeholder" in refused.detail


def test_redis_url_on_a_closed_port_fails_fast() -> None:
    port = free_port()
    started = time.monotonic()
    result = doctor.check_redis_url(f"redis://:hunter2@127.0.0.1:{port}/0", timeout=1)
    assert time.monotonic() - started < timeout(3)
    assert result.status is Status.FAIL
    assert "cannot reach Redis" in result.detail and f":{port}" in result.detail
    assert "hunter2" not in result.detail
    assert "ONSEMBL_REDIS_URL" in result.fix


def test_redis_url_and_embedded_server(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", tmp_path / "redis" / "r.sock")
    server.ensure()
    try:
        result = doctor.check_redis_url(server.url)
        assert result.status is Status.OK, result
        assert result.detail.startswith("Redis 6.")
        running = doctor.check_embedded_redis(server.socket)
        assert running.status is Status.OK and "already running" in running.detail
    finally:
        server.stop()
    # The socket is gone: the check starts the bundled server itself, and stops it.
    fresh = doctor.check_embedded_redis(server.socket)
    assert fresh.status is Status.OK and "starts" in fresh.detail, fresh
    assert not [p for p in psutil.Process().children(recursive=True) if "redis" in p.name()]


def test_database_revisions(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert "does not exist yet" in doctor.check_database(settings).detail
    assert not (tmp_path / "onsembl.db").exists()

    upgrade(settings.sqlalchemy_url, "0001")
    behind = doctor.check_database(settings)
    assert behind.status is Status.WARN, behind
    assert "revision 0001" in behind.detail and "SQLite 3." in behind.detail
    assert "onsembl db upgrade" in behind.fix

    upgrade(settings.sqlalchemy_url)
    current = doctor.check_database(settings)
    assert current.status is Status.OK and "latest revision" in current.detail

    with sqlite3.connect(tmp_path / "onsembl.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    ahead = doctor.check_database(settings)
    assert ahead.status is Status.FAIL and "does not know" in ahead.detail

    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database" * 100)
    broken = doctor.check_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{garbage}"))
    assert broken.status is Status.FAIL and "not a database" in broken.detail

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    bare = doctor.check_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{empty}"))
    assert bare.status is Status.WARN and "no schema yet" in bare.detail


def test_postgres_unreachable(tmp_path: Path) -> None:
    url = f"postgresql://onsembl:secretpw@127.0.0.1:{free_port()}/onsembl"
    result = doctor.check_database(Settings(data_dir=tmp_path, database_url=url), timeout=3)
    assert result.status is Status.FAIL, result
    assert "secretpw" not in result.detail
    assert "ONSEMBL_DATABASE_URL" in result.fix


@pytest.mark.postgres
def test_postgres(postgres_database: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=postgres_database)
    empty = doctor.check_database(settings)
    assert empty.status is Status.WARN and "PostgreSQL" in empty.detail, empty
    upgrade(settings.sqlalchemy_url)
    assert doctor.check_database(settings).status is Status.OK


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = doctor.check_port("127.0.0.1", port, timeout=1)
    assert result.status is Status.FAIL, result
    assert "in use by another program" in result.detail
    assert f"ONSEMBL_PORT={port + 1}" in result.fix
    assert doctor.check_port("127.0.0.1", port).status is Status.OK  # closed again
    assert doctor.check_port("127.0.0.1", 0).status is Status.OK
    elsewhere = doctor.check_port("192.0.2.1", free_port())  # TEST-NET-1: not this machine
    assert elsewhere.status is Status.FAIL and "ONSEMBL_HOST" in elsewhere.fix


def test_agent_clis(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "claude", 'echo "2.1.71 (Claude Code)"')
    fake_program(bin_dir, "gemini", 'echo "needs a sign-in first" >&2; exit 3')
    fake_program(bin_dir, "codex", "sleep 30; echo never")
    path = str(bin_dir)

    claude = doctor.check_agent_cli("claude", path=path)
    assert claude.status is Status.OK
    assert claude.detail == f"2.1.71 (Claude Code) ({bin_dir / 'claude'})"

    gemini = doctor.check_agent_cli("gemini", path=path)
    assert gemini.status is Status.WARN
    assert "exited with 3: needs a sign-in first" in gemini.detail

    started = time.monotonic()
    codex = doctor.check_agent_cli("codex", path=path, timeout=0.5)
    assert time.monotonic() - started < timeout(4)  # the sleeping child did not hold it
    assert codex.status is Status.WARN and "did not answer within 0.5 s" in codex.detail

    missing = doctor.check_agent_cli("claude", path=str(tmp_path / "nothing-here"))
    assert missing.status is Status.WARN
    assert missing.fix.startswith("install it: npm install -g @anthropic-ai/claude-code")
